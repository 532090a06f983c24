//! The catalog's contract, run against both backends: the embedded one
//! (registry, journal in memory) and the shared one on a `redis-server` of
//! the test's own. Each case is written once, as a function of the catalog,
//! and [`both!`] makes one test per backend of it.
//!
//! Calls go through the [`Catalog`] trait, and refusals are checked as the
//! gRPC status codes the service sends for them. The embedded catalog reads
//! the system clock (its registry's expiry rules are tested with a time of
//! their own in the tracker's unit tests), and Redis its own clock, so the
//! TTL cases use a short real TTL on both.

#[path = "common/redis.rs"]
mod redis_server;

use std::{future::Future, io::Write, time::Duration};

use hive::{ChunkSet, ChunkSize, FileName, Manifest};
use hive_tracker::{
    Config, SharedCatalog,
    auth::{Member, Token},
    error::ServiceError,
    redis_catalog::{Audit, RedisCatalog},
    registry::{Caller, Credentials, Offer, Registered},
};
use redis_server::{RedisCluster, RedisServer};
use tonic::Code;

/// The TTL of the expiry cases: long enough for the calls of a case on a
/// busy machine, short enough to wait for.
const TTL: Duration = Duration::from_millis(1500);

/// A catalog under test, with the server it needs.
struct Backend {
    catalog: SharedCatalog,
    redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
    config: Config,
}

impl Backend {
    /// A command run on the store itself, by `redis-cli`.
    fn raw(&self, args: &[&str]) -> String {
        match (&self.redis, &self._cluster) {
            (Some(r), _) => r.cli(args),
            (_, Some(c)) => c.cli(args),
            _ => panic!("the embedded catalog has no store to ask"),
        }
    }

    /// Another replica on the same store (the shared backend only).
    async fn replica(&self) -> SharedCatalog {
        hive_tracker::connect(&self.config)
            .await
            .expect("connect a replica")
    }
}

fn config() -> Config {
    Config {
        in_memory: true,
        ttl: TTL,
        heartbeat_interval: Duration::from_millis(500),
        max_files_per_peer: 5,
        max_files: 20,
        forget_after: Duration::from_millis(300),
        ..Config::default()
    }
}

async fn embedded(config: Config) -> Option<Backend> {
    let catalog = hive_tracker::connect(&config).await.expect("embedded");
    Some(Backend {
        catalog,
        redis: None,
        _cluster: None,
        config,
    })
}

async fn shared(mut config: Config) -> Option<Backend> {
    let redis = RedisServer::start()?;
    config.store = Some(redis.url());
    let catalog = hive_tracker::connect(&config).await.expect("connect redis");
    Some(Backend {
        catalog,
        redis: Some(redis),
        _cluster: None,
        config,
    })
}

async fn clustered(mut config: Config) -> Option<Backend> {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("start the cluster")?;
    config.store = Some(cluster.url());
    let catalog = hive_tracker::connect(&config)
        .await
        .expect("connect the cluster");
    Some(Backend {
        catalog,
        redis: None,
        _cluster: Some(cluster),
        config,
    })
}

/// Runs `fut` under a timeout.
async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s"))
}

/// One test per backend of `case(backend)`, in a module per backend; the
/// cases run with `config()`, or with the configuration given after `with`
/// (its function's name is then a module around them).
macro_rules! both {
    (with $config:ident: $($case:ident),* $(,)?) => {
        mod $config {
            use super::*;
            both!(@backends $config; $($case),*);
        }
    };
    (@backends $config:ident; $($case:ident),*) => {
        mod embedded_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::embedded(super::$config()).await {
                        super::within(60, super::$case(b)).await;
                    }
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::shared(super::$config()).await {
                        super::within(60, super::$case(b)).await;
                    }
                }
            )*
        }
        mod redis_cluster_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::clustered(super::$config()).await {
                        super::within(90, super::$case(b)).await;
                    }
                }
            )*
        }
    };
    ($($case:ident),* $(,)?) => {
        both!(@backends config; $($case),*);
    };
}

both!(
    refusals_have_their_codes_and_change_nothing,
    a_register_with_one_conflicting_file_registers_none,
    registering_again_is_idempotent_and_a_new_session_replaces_the_old,
    register_chunks_adds_removes_and_drops,
    locate_counts_are_exact_over_live_holders,
    a_silent_peer_is_gone_within_one_ttl,
    leave_drops_every_holding_at_once,
    withdraw_drops_one_holding_and_keeps_the_session,
    list_files_pages_in_name_order,
    peers_and_holders_page_in_id_order_over_live_sessions,
    quotas_are_refused_whole,
    orphaned_files_are_forgotten,
);

// ---- helpers ----------------------------------------------------------

fn name(n: &str) -> FileName {
    FileName::new(n).expect("file name")
}

/// A manifest of `len` bytes of content `seed`, in 1 KiB chunks.
fn manifest(n: &str, len: usize, seed: u8) -> Manifest {
    let mut f = tempfile::tempfile().expect("tempfile");
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    f.write_all(&data).expect("write");
    Manifest::from_file(&f, len as u64, name(n), Some(ChunkSize::MIN)).expect("hash")
}

/// The chunks `held` (in order) of `m`, as the runs a client would send.
fn chunks(m: &Manifest, held: &[u32]) -> ChunkSet {
    let mut runs: Vec<std::ops::RangeInclusive<u32>> = Vec::new();
    for &c in held {
        match runs.last_mut() {
            Some(r) if *r.end() + 1 == c => *r = *r.start()..=c,
            _ => runs.push(c..=c),
        }
    }
    ChunkSet::from_ranges(m.chunk_count(), runs).expect("chunks")
}

fn full(m: &Manifest) -> Offer {
    Offer {
        manifest: m.clone(),
        chunks: ChunkSet::full(m.chunk_count()),
    }
}

fn offer(m: &Manifest, held: &[u32]) -> Offer {
    Offer {
        manifest: m.clone(),
        chunks: chunks(m, held),
    }
}

/// A peer's session.
struct Session {
    reg: Registered,
    token: Token,
}

impl Session {
    fn cred(&self) -> Credentials {
        Credentials {
            peer: self.reg.peer,
            token: self.token.hash(),
        }
    }
}

async fn join(c: &SharedCatalog, port: u16, offers: Vec<Offer>) -> Session {
    let caller = Caller::New {
        addr: format!("10.0.0.1:{port}"),
        member: None,
    };
    let reg = c.register(caller, offers).await.expect("register");
    let token = reg.token.clone().expect("a new session has a token");
    Session { reg, token }
}

fn code<T: std::fmt::Debug>(r: Result<T, ServiceError>) -> Code {
    tonic::Status::from(r.expect_err("refused")).code()
}

/// Everything the catalog tells: each file, its live holders and counts.
async fn snapshot(c: &SharedCatalog) -> String {
    let page = c.list(None, 1000).await.expect("list");
    let mut out = String::new();
    for f in page.files {
        let found = c.locate(f.manifest.name(), 1000).await.expect("locate");
        let mut holders: Vec<String> = found
            .holders
            .iter()
            .map(|h| format!("{}@{}:{:?}", h.peer, h.addr, h.chunks.to_bitmap()))
            .collect();
        holders.sort();
        out += &format!(
            "{} {} {holders:?} {:?}\n",
            f.manifest.name(),
            f.manifest.digest(),
            found.chunk_holders
        );
    }
    out
}

/// The stored counts of `n` against its holder records (the shared
/// backend only).
async fn audit(b: &Backend, n: &str) -> Audit {
    let url = b.config.store.clone().expect("a store");
    let catalog = RedisCatalog::connect(&url, b.config.limits())
        .await
        .expect("connect");
    catalog
        .audit(&name(n))
        .await
        .expect("audit")
        .expect("a known file")
}

async fn holder_count(c: &SharedCatalog, n: &str) -> u32 {
    c.locate(&name(n), 0).await.expect("locate").holder_count
}

// ---- cases -------------------------------------------------------------

async fn refusals_have_their_codes_and_change_nothing(b: Backend) {
    let c = &b.catalog;
    let x = manifest("x", 5000, 1);
    let a = join(c, 4001, vec![full(&x)]).await;
    let other = join(c, 4002, vec![full(&manifest("y", 3000, 2))]).await;
    let before = snapshot(c).await;

    // Other content under a registered name; the same content in other chunks.
    let r = c
        .register(
            Caller::New {
                addr: "10.0.0.9:1".into(),
                member: None,
            },
            vec![full(&manifest("x", 5000, 9))],
        )
        .await;
    assert_eq!(code(r), Code::AlreadyExists);
    let x_other_layout = {
        let mut t = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..5000usize)
            .map(|i| (i as u8).wrapping_mul(31) ^ 1)
            .collect();
        t.write_all(&data).unwrap();
        Manifest::from_file(&t, 5000, name("x"), ChunkSize::new(2048).ok()).unwrap()
    };
    assert_eq!(x_other_layout.digest(), x.digest(), "same content");
    let r = c
        .register(Caller::Session(a.cred()), vec![full(&x_other_layout)])
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // Credentials: a wrong token, another session's token, an unknown peer.
    let wrong = Credentials {
        peer: a.reg.peer,
        token: blake3::hash(b"wrong"),
    };
    assert_eq!(code(c.heartbeat(wrong).await), Code::Unauthenticated);
    let theirs = Credentials {
        peer: a.reg.peer,
        token: other.token.hash(),
    };
    assert_eq!(code(c.heartbeat(theirs).await), Code::PermissionDenied);
    assert_eq!(code(c.leave(theirs).await), Code::PermissionDenied);
    let unknown = Credentials {
        peer: hive_tracker::auth::PeerId::from_u64(0x1234_5678),
        token: blake3::hash(b"nobody"),
    };
    assert_eq!(code(c.heartbeat(unknown).await), Code::NotFound);
    assert_eq!(
        code(c.register(Caller::Session(unknown), vec![]).await),
        Code::NotFound
    );

    // RegisterChunk: unknown file, chunks past the end, bad credentials.
    let r = c
        .register_chunks(a.cred(), &name("nope"), &[1..=1], &[])
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .register_chunks(a.cred(), &name("x"), &[1..=99], &[])
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let r = c.register_chunks(a.cred(), &name("y"), &[0..=1], &[]).await;
    assert_eq!(code(r), Code::InvalidArgument);
    let r = c.register_chunks(theirs, &name("x"), &[1..=1], &[]).await;
    assert_eq!(code(r), Code::PermissionDenied);
    let r = c.register_chunks(unknown, &name("x"), &[1..=1], &[]).await;
    assert_eq!(code(r), Code::NotFound);
    assert_eq!(code(c.locate(&name("nope"), 0).await), Code::NotFound);

    assert_eq!(snapshot(c).await, before, "a refusal changed the catalog");
    // The sessions still work.
    c.heartbeat(a.cred()).await.expect("a's session");
    c.heartbeat(other.cred()).await.expect("other's session");
}

async fn a_register_with_one_conflicting_file_registers_none(b: Backend) {
    let c = &b.catalog;
    let taken = manifest("taken", 2000, 1);
    join(c, 4001, vec![full(&taken)]).await;
    let before = snapshot(c).await;
    let fresh = manifest("fresh", 2000, 2);
    let clash = manifest("taken", 2000, 3);
    let r = c
        .register(
            Caller::New {
                addr: "10.0.0.2:1".into(),
                member: None,
            },
            vec![full(&fresh), full(&clash)],
        )
        .await;
    assert_eq!(code(r), Code::AlreadyExists);
    assert_eq!(code(c.locate(&name("fresh"), 0).await), Code::NotFound);
    assert_eq!(snapshot(c).await, before);
}

async fn registering_again_is_idempotent_and_a_new_session_replaces_the_old(b: Backend) {
    let c = &b.catalog;
    let m = manifest("m", 4096, 1);
    let s = join(c, 4001, vec![offer(&m, &[1, 2])]).await;
    let once = snapshot(c).await;
    for _ in 0..2 {
        let again = c
            .register(Caller::Session(s.cred()), vec![offer(&m, &[1, 2])])
            .await
            .expect("again");
        assert_eq!(again.peer, s.reg.peer);
        assert!(again.token.is_none(), "an existing session keeps its token");
        assert_eq!(again.addr, s.reg.addr);
    }
    assert_eq!(
        snapshot(c).await,
        once,
        "registering again changed the catalog"
    );

    // The same address starts a new session: the old one is gone at once.
    let s2 = join(c, 4001, vec![offer(&m, &[3])]).await;
    assert_ne!(s2.reg.peer, s.reg.peer);
    let found = c.locate(&name("m"), 0).await.unwrap();
    assert_eq!(found.holder_count, 1);
    assert_eq!(found.holders[0].peer, s2.reg.peer);
    assert_eq!(found.chunk_holders, [0, 0, 1, 0]);
    assert_eq!(code(c.heartbeat(s.cred()).await), Code::NotFound);
    c.heartbeat(s2.cred()).await.expect("new session");
}

async fn register_chunks_adds_removes_and_drops(b: Backend) {
    let c = &b.catalog;
    let m = manifest("m", 8 * 1024, 1);
    let s = join(c, 4001, vec![offer(&m, &[1])]).await;
    let n = name("m");
    assert_eq!(
        c.register_chunks(s.cred(), &n, &[2..=4], &[])
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        c.register_chunks(s.cred(), &n, &[8..=8], &[1..=2])
            .await
            .unwrap(),
        3
    );
    let found = c.locate(&n, 0).await.unwrap();
    assert_eq!(found.chunk_holders, [0, 0, 1, 1, 0, 0, 0, 1]);
    // Removing every chunk drops the holding.
    let held = c
        .register_chunks(s.cred(), &n, &[], &[1..=8])
        .await
        .unwrap();
    assert_eq!(held, 0);
    let found = c.locate(&n, 0).await.unwrap();
    assert_eq!((found.holder_count, found.holders.len()), (0, 0));
    assert_eq!(found.chunk_holders, [0; 8]);
    // And adding again brings it back.
    assert_eq!(
        c.register_chunks(s.cred(), &n, &[5..=5], &[])
            .await
            .unwrap(),
        1
    );
    assert_eq!(holder_count(c, "m").await, 1);
}

async fn locate_counts_are_exact_over_live_holders(b: Backend) {
    let c = &b.catalog;
    let m = manifest("m", 4 * 1024, 1);
    let a = join(c, 4001, vec![offer(&m, &[1, 2])]).await;
    let bb = join(c, 4002, vec![offer(&m, &[2, 3])]).await;
    let silent = join(c, 4003, vec![full(&m)]).await;
    let found = c.locate(&name("m"), 0).await.unwrap();
    assert_eq!(found.chunk_holders, [2, 3, 2, 1]);
    assert_eq!(found.holder_count, 3);
    // Only `silent` stops heartbeating: once it is past its TTL the counts
    // are over the two live holders, swept or not.
    let half = TTL / 2;
    for _ in 0..3 {
        tokio::time::sleep(half).await;
        c.heartbeat(a.cred()).await.unwrap();
        c.heartbeat(bb.cred()).await.unwrap();
    }
    let found = c.locate(&name("m"), 0).await.unwrap();
    assert_eq!(found.chunk_holders, [1, 2, 1, 0]);
    assert_eq!(found.holder_count, 2);
    assert!(found.holders.iter().all(|h| h.peer != silent.reg.peer));
    let one = c.locate(&name("m"), 1).await.unwrap();
    assert_eq!((one.holders.len(), one.holder_count), (1, 2));
}

async fn a_silent_peer_is_gone_within_one_ttl(b: Backend) {
    let c = &b.catalog;
    let m = manifest("m", 2048, 1);
    // Its TTL starts between these two instants.
    let before = std::time::Instant::now();
    let s = join(c, 4001, vec![full(&m)]).await;
    let after = std::time::Instant::now();
    assert_eq!(holder_count(c, "m").await, 1);
    // Poll until it is gone; it must go within one TTL (and a margin for a
    // busy machine), not before.
    while holder_count(c, "m").await == 1 {
        assert!(
            after.elapsed() < TTL + Duration::from_secs(1),
            "still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little slack: Redis expires keys by its own clock.
    assert!(
        before.elapsed() >= TTL - Duration::from_millis(50),
        "gone early"
    );
    assert_eq!(code(c.heartbeat(s.cred()).await), Code::NotFound);
    assert_eq!(c.locate(&name("m"), 0).await.unwrap().chunk_holders, [0, 0]);
    // The sweep then drops the session for good.
    let mut gone = 0;
    for _ in 0..5 {
        gone += c.sweep().await.expect("sweep");
    }
    assert_eq!(gone, 1);
    assert_eq!(c.stats().await.unwrap().peers, 0);
}

async fn leave_drops_every_holding_at_once(b: Backend) {
    let c = &b.catalog;
    let (m1, m2) = (manifest("a", 2048, 1), manifest("b", 3072, 2));
    let s = join(c, 4001, vec![full(&m1), full(&m2)]).await;
    let stay = join(c, 4002, vec![offer(&m2, &[1])]).await;
    c.leave(s.cred()).await.expect("leave");
    assert_eq!(holder_count(c, "a").await, 0);
    let b2 = c.locate(&name("b"), 0).await.unwrap();
    assert_eq!(
        (b2.holder_count, b2.chunk_holders.clone()),
        (1, vec![1, 0, 0])
    );
    assert_eq!(code(c.heartbeat(s.cred()).await), Code::NotFound);
    assert_eq!(code(c.leave(s.cred()).await), Code::NotFound);
    c.heartbeat(stay.cred())
        .await
        .expect("the other session stays");
    assert_eq!(c.stats().await.unwrap().peers, 1);
}

async fn withdraw_drops_one_holding_and_keeps_the_session(b: Backend) {
    let c = &b.catalog;
    let (m1, m2) = (manifest("a", 2048, 1), manifest("b", 3072, 2));
    let empty = manifest("e", 0, 3);
    let s = join(c, 4001, vec![full(&m1), full(&m2), full(&empty)]).await;
    let stay = join(c, 4002, vec![offer(&m1, &[1])]).await;

    // Refusals change nothing: an unknown file, another session's token.
    let before = snapshot(c).await;
    assert_eq!(
        code(c.withdraw(s.cred(), &name("zzz")).await),
        Code::NotFound
    );
    let stolen = Credentials {
        peer: s.reg.peer,
        token: stay.token.hash(),
    };
    assert_eq!(
        code(c.withdraw(stolen, &name("a")).await),
        Code::PermissionDenied
    );
    assert_eq!(snapshot(c).await, before);

    c.withdraw(s.cred(), &name("a")).await.expect("withdraw");
    let a = c.locate(&name("a"), 0).await.unwrap();
    assert_eq!((a.holder_count, a.chunk_holders.clone()), (1, vec![1, 0]));
    // Again: harmless. A file of no chunks goes the same way.
    c.withdraw(s.cred(), &name("a"))
        .await
        .expect("withdraw again");
    c.withdraw(s.cred(), &name("e"))
        .await
        .expect("withdraw empty");
    assert_eq!(holder_count(c, "e").await, 0);
    // The rest of the session stays, and may hold the file again.
    c.heartbeat(s.cred()).await.expect("the session stays");
    assert_eq!(holder_count(c, "b").await, 1);
    let held = c
        .register_chunks(s.cred(), &name("a"), &[1..=2], &[])
        .await
        .expect("hold it again");
    assert_eq!((held, holder_count(c, "a").await), (2, 2));
}

async fn list_files_pages_in_name_order(b: Backend) {
    let c = &b.catalog;
    let names = ["e", "a", "d", "b", "c"];
    let offers = names
        .iter()
        .enumerate()
        .map(|(i, n)| full(&manifest(n, 1024, i as u8)))
        .collect();
    join(c, 4001, offers).await;
    let mut seen = Vec::new();
    let mut after: Option<FileName> = None;
    let mut pages = 0;
    loop {
        let page = c.list(after.as_ref(), 2).await.expect("list");
        pages += 1;
        assert!(page.files.len() <= 2);
        for f in &page.files {
            assert_eq!(f.holder_count, 1);
            seen.push(f.manifest.name().to_string());
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let last = c.list(Some(&name("e")), 2).await.unwrap();
    assert!(last.files.is_empty() && last.next.is_none());
}

async fn peers_and_holders_page_in_id_order_over_live_sessions(b: Backend) {
    let c = &b.catalog;
    // x: 5 chunks; y: 3 chunks. Three sessions hold parts of them.
    let (x, y) = (manifest("x", 5 * 1024, 1), manifest("y", 3 * 1024, 2));
    let s1 = join(c, 4001, vec![offer(&x, &[1, 2]), full(&y)]).await;
    let s2 = join(c, 4002, vec![full(&x)]).await;
    let s3 = join(c, 4003, vec![offer(&x, &[5])]).await;
    let mut ids = [s1.reg.peer, s2.reg.peer, s3.reg.peer];
    ids.sort();

    // Peers: two pages of two, in id order, each with its holdings.
    let first = c.peers(None, 2, 10).await.expect("peers");
    let got: Vec<_> = first.peers.iter().map(|p| p.peer).collect();
    assert_eq!(got, ids[..2]);
    assert_eq!(first.next, Some(ids[1]));
    let second = c.peers(first.next, 2, 10).await.expect("peers");
    let got: Vec<_> = second.peers.iter().map(|p| p.peer).collect();
    assert_eq!((got, second.next), (vec![ids[2]], None));
    let all = c.peers(None, 10, 10).await.expect("peers");
    let one = all
        .peers
        .iter()
        .find(|p| p.peer == s1.reg.peer)
        .expect("s1 listed");
    assert_eq!(one.addr, s1.reg.addr);
    assert_eq!(one.file_count, 2);
    let held: Vec<_> = one
        .files
        .iter()
        .map(|f| (f.name.to_string(), f.chunks, f.chunk_count))
        .collect();
    assert_eq!(held, [("x".into(), 2, 5), ("y".into(), 3, 3)]);
    assert!(one.since_heartbeat < TTL);
    // Only the first files in name order, however many it holds.
    let capped = c.peers(None, 10, 1).await.unwrap();
    let one = capped.peers.iter().find(|p| p.peer == s1.reg.peer).unwrap();
    assert_eq!((one.file_count, one.files.len()), (2, 1));
    assert_eq!(one.files[0].name.as_str(), "x");

    // Holders of x: pages of two in id order; the count covers them all.
    let page = c.holders(&name("x"), None, 2).await.expect("holders");
    assert_eq!(page.holder_count, 3);
    let got: Vec<_> = page.holders.iter().map(|h| h.peer).collect();
    assert_eq!(got, ids[..2]);
    let rest = c.holders(&name("x"), page.next, 2).await.expect("holders");
    let got: Vec<_> = rest.holders.iter().map(|h| h.peer).collect();
    assert_eq!((got, rest.next), (vec![ids[2]], None));
    // Each holder's chunks are exactly what it registered.
    let all = c.holders(&name("x"), None, 10).await.unwrap();
    for h in &all.holders {
        let expect = match h.peer {
            p if p == s1.reg.peer => chunks(&x, &[1, 2]),
            p if p == s2.reg.peer => ChunkSet::full(5),
            _ => chunks(&x, &[5]),
        };
        assert_eq!(*h.chunks, expect);
    }
    assert_eq!(
        code(c.holders(&name("nope"), None, 2).await),
        Code::NotFound
    );

    // A session that left is in neither list from the next answer on.
    c.leave(s2.cred()).await.expect("leave");
    let after: Vec<_> = c.peers(None, 10, 10).await.unwrap().peers;
    assert!(after.iter().all(|p| p.peer != s2.reg.peer));
    assert_eq!(after.len(), 2);
    let page = c.holders(&name("x"), None, 10).await.unwrap();
    assert_eq!(page.holder_count, 2);
    assert!(page.holders.iter().all(|h| h.peer != s2.reg.peer));
}

async fn quotas_are_refused_whole(b: Backend) {
    let c = &b.catalog;
    // Five files per peer: a sixth is refused, whole.
    let ms: Vec<Manifest> = (0..6)
        .map(|i| manifest(&format!("f{i}"), 1024, i))
        .collect();
    let s = join(c, 4001, ms[..4].iter().map(full).collect()).await;
    let before = snapshot(c).await;
    let r = c
        .register(Caller::Session(s.cred()), vec![full(&ms[4]), full(&ms[5])])
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    assert_eq!(snapshot(c).await, before);
    // One more fits; then RegisterChunk of a sixth is refused too.
    c.register(Caller::Session(s.cred()), vec![full(&ms[4])])
        .await
        .expect("a fifth file");
    let other = join(c, 4002, vec![full(&ms[5])]).await;
    let before = snapshot(c).await;
    let r = c
        .register_chunks(s.cred(), &name("f5"), &[1..=1], &[])
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    assert_eq!(snapshot(c).await, before);
    // Dropping one frees a place.
    c.register_chunks(s.cred(), &name("f0"), &[], &[1..=1])
        .await
        .unwrap();
    c.register_chunks(s.cred(), &name("f5"), &[1..=1], &[])
        .await
        .unwrap();
    assert_eq!(holder_count(c, "f5").await, 2);
    drop(other);
}

async fn orphaned_files_are_forgotten(b: Backend) {
    let c = &b.catalog;
    let m = manifest("m", 1024, 1);
    let s = join(c, 4001, vec![full(&m)]).await;
    c.leave(s.cred()).await.unwrap();
    // Listed (with no holder) until forget_after has passed and a sweep ran.
    assert_eq!(c.list(None, 10).await.unwrap().files.len(), 1);
    let started = std::time::Instant::now();
    loop {
        c.sweep().await.expect("sweep");
        if c.list(None, 10).await.unwrap().files.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code(c.locate(&name("m"), 0).await), Code::NotFound);
    // The name is free for other content.
    join(c, 4002, vec![full(&manifest("m", 2048, 7))]).await;
    assert_eq!(c.locate(&name("m"), 0).await.unwrap().manifest.size(), 2048);
}

// ---- RE-9: one address cannot fill the catalog ---------------------------

/// Quotas small enough to fill in a test: three names and 1 MiB of
/// manifests per address, names released 300 ms after their last holder.
fn quota_config() -> Config {
    Config {
        max_files_per_peer: 100,
        max_files_per_address: 3,
        max_catalog_mib_per_address: 1,
        ..config()
    }
}

both!(with quota_config: catalog_filling_attack, fake_manifests);

async fn new_session(
    c: &SharedCatalog,
    addr: &str,
    offers: Vec<Offer>,
) -> Result<Session, ServiceError> {
    let reg = c
        .register(
            Caller::New {
                addr: addr.into(),
                member: None,
            },
            offers,
        )
        .await?;
    let token = reg.token.clone().expect("a new session has a token");
    Ok(Session { reg, token })
}

fn refusal<T>(r: Result<T, ServiceError>) -> tonic::Status {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => tonic::Status::from(e),
    }
}

/// The attacker registers from many ports of one address until refused;
/// the refusal names the quota, changes nothing, and locks out nobody
/// else; once its sessions expired and the grace passed, its names are
/// free again.
async fn catalog_filling_attack(b: Backend) {
    let c = &b.catalog;
    let ms: Vec<Manifest> = (0..8)
        .map(|i| manifest(&format!("bait{i}"), 1024, i))
        .collect();
    let mut registered = 0;
    let refused = loop {
        let port = 5000 + registered;
        match new_session(
            c,
            &format!("10.6.6.6:{port}"),
            vec![full(&ms[registered as usize])],
        )
        .await
        {
            Ok(_) => registered += 1,
            Err(e) => break tonic::Status::from(e),
        }
        assert!(registered <= 3, "the quota did not hold");
    };
    println!("RE-9: the attacker's address registered {registered} names, then: {refused:?}");
    assert_eq!(registered, 3);
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-files-per-address"),
        "{refused:?}"
    );
    let before = snapshot(c).await;
    assert_eq!(
        refusal(new_session(c, "10.6.6.6:6000", vec![full(&ms[4])]).await).code(),
        Code::ResourceExhausted
    );
    assert_eq!(snapshot(c).await, before, "a refusal changes nothing");
    // Anyone else still registers new names.
    let victim = new_session(c, "10.0.0.7:4000", vec![full(&ms[5])])
        .await
        .expect("another address is not locked out");

    // The attacker goes silent; the victim keeps heartbeating. Its names
    // are released within TTL + grace (+ a sweep).
    let started = std::time::Instant::now();
    loop {
        c.heartbeat(victim.cred()).await.expect("the victim stays");
        c.sweep().await.expect("sweep");
        let page = c.list(None, 100).await.expect("list");
        if page.files.len() == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "RE-9: the attacker's names were free {:?} after its last call (TTL {:?}, grace {:?})",
        started.elapsed(),
        b.config.ttl,
        b.config.forget_after
    );
    for i in 0..3 {
        new_session(
            c,
            &format!("10.6.6.6:{}", 7000 + i),
            vec![full(&ms[i as usize])],
        )
        .await
        .expect("its quota is back");
    }
}

/// A valid-looking manifest of a 256 GiB file (16,384 chunks of 16 MiB)
/// whose data exists nowhere: 590 KiB of catalog for nothing.
fn fake_manifest(n: &str, seed: u8) -> Manifest {
    let layout = hive::Layout::new(256 << 30, ChunkSize::MAX).expect("layout");
    let digests: Vec<hive::Digest> = (0..layout.count())
        .map(|i| hive::Digest::of(&[seed, (i >> 8) as u8, i as u8]))
        .collect();
    let digest = hive::digest::file_digest(&layout, &digests).expect("digest");
    Manifest::new(name(n), layout, digests, digest).expect("manifest")
}

async fn fake_manifests(b: Backend) {
    let c = &b.catalog;
    let (one, two) = (fake_manifest("huge1", 1), fake_manifest("huge2", 2));
    new_session(c, "10.6.6.6:5000", vec![full(&one)])
        .await
        .expect("one fits in 1 MiB");
    let before = snapshot(c).await;
    let refused = refusal(new_session(c, "10.6.6.6:5001", vec![full(&two)]).await);
    println!("RE-9: a second 256 GiB manifest from one address: {refused:?}");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-catalog-mib-per-address"),
        "{refused:?}"
    );
    assert_eq!(snapshot(c).await, before);
    new_session(c, "10.0.0.7:4000", vec![full(&two)])
        .await
        .expect("another address still registers");
}

// ---- the shared backend only --------------------------------------------

/// Two replicas on one Redis are one catalog: a file registered through one
/// is located through the other, and either accepts the session's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_catalog() {
    if let Some(b) = shared(config()).await {
        two_replicas(b).await;
    }
}

/// The same on a 3-primary Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_cluster() {
    if let Some(b) = clustered(config()).await {
        two_replicas(b).await;
    }
}

async fn two_replicas(b: Backend) {
    within(60, async {
        let other = b.replica().await;
        let m = manifest("m", 4096, 1);
        let s = join(&b.catalog, 4001, vec![offer(&m, &[1, 4])]).await;
        let found = other
            .locate(&name("m"), 0)
            .await
            .expect("through the other");
        assert_eq!(found.holders[0].peer, s.reg.peer);
        assert_eq!(found.chunk_holders, [1, 0, 0, 1]);
        other
            .heartbeat(s.cred())
            .await
            .expect("the token works on both");
        other
            .register_chunks(s.cred(), &name("m"), &[2..=2], &[])
            .await
            .unwrap();
        assert_eq!(
            b.catalog.locate(&name("m"), 0).await.unwrap().chunk_holders,
            [1, 1, 0, 1]
        );
        other.leave(s.cred()).await.unwrap();
        // A change through another replica shows within --locate-cache.
        let left = tokio::time::Instant::now();
        while holder_count(&b.catalog, "m").await != 0 {
            assert!(
                left.elapsed() < b.config.locate_cache + Duration::from_millis(500),
                "the other replica still lists a holder that left"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A replica reuses a file's Locate answer for --locate-cache: holders it
/// adds or drops show at once, a holder's chunks changing and any change
/// through another replica within that period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locate_cache_shows_own_changes_at_once_and_others_within_its_period() {
    let keep = Duration::from_millis(400);
    let config = Config {
        locate_cache: keep,
        ..config()
    };
    let Some(b) = shared(config).await else {
        return;
    };
    within(60, async {
        let (one, two) = (&b.catalog, &b.replica().await);
        let n = name("m");
        let m = manifest("m", 4096, 1);
        let a = join(one, 4001, vec![full(&m)]).await;
        let c = join(one, 4002, vec![offer(&m, &[1])]).await;
        let read = tokio::time::Instant::now();
        assert_eq!(two.locate(&n, 0).await.unwrap().chunk_holders, [2, 1, 1, 1]);
        assert_eq!(one.locate(&n, 0).await.unwrap().chunk_holders, [2, 1, 1, 1]);
        // Through `one`: a holder's chunks change (shown within the
        // period), then a holder leaves (shown at once, with the chunks).
        one.register_chunks(c.cred(), &n, &[2..=2], &[1..=1])
            .await
            .unwrap();
        one.leave(a.cred()).await.unwrap();
        let after = one.locate(&n, 0).await.unwrap();
        assert_eq!(
            (after.holder_count, after.chunk_holders),
            (1, vec![0, 1, 0, 0])
        );
        // `two` answers from its kept answer while that is younger than
        // the period (checked only when this machine was quick enough)...
        let kept = two.locate(&n, 0).await.unwrap();
        if read.elapsed() < keep {
            assert_eq!(
                (kept.holder_count, kept.chunk_holders),
                (2, vec![2, 1, 1, 1])
            );
        }
        // ...and sees the changes once it is past.
        while two.locate(&n, 0).await.unwrap().holder_count != 1 {
            assert!(
                read.elapsed() < keep + Duration::from_millis(500),
                "stale past the period"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(two.locate(&n, 0).await.unwrap().chunk_holders, [0, 1, 0, 0]);
        // A holder's new chunks show within the period on its own replica.
        let changed = tokio::time::Instant::now();
        two.register_chunks(c.cred(), &n, &[3..=4], &[])
            .await
            .unwrap();
        while two.locate(&n, 0).await.unwrap().chunk_holders != [0, 1, 1, 1] {
            assert!(
                changed.elapsed() < keep + Duration::from_millis(500),
                "stale past the period"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A Leave through it shows at once.
        two.leave(c.cred()).await.unwrap();
        assert_eq!(two.locate(&n, 0).await.unwrap().holder_count, 0);
    })
    .await;
}

/// Tokens are stored hashed: no key or value in Redis holds the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_hashed() {
    let Some(b) = shared(config()).await else {
        return;
    };
    within(60, async {
        let s = join(&b.catalog, 4001, vec![full(&manifest("m", 1024, 1))]).await;
        let redis = b.redis.as_ref().unwrap();
        let dump = redis.cli(&["--no-raw", "EVAL", DUMP_ALL, "0"]);
        assert!(!dump.is_empty());
        assert!(
            !dump.contains(s.token.reveal()),
            "the token is stored in the clear"
        );
        let hash: String = s
            .token
            .hash()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            dump.contains(&hash),
            "the token's hash indexes the session: {dump}"
        );
    })
    .await;
}

/// Every key and every string value in the database.
const DUMP_ALL: &str = r#"
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  out[#out + 1] = k
  local t = redis.call('TYPE', k).ok
  if t == 'string' then out[#out + 1] = redis.call('GET', k)
  elseif t == 'hash' then for _, v in ipairs(redis.call('HGETALL', k)) do out[#out + 1] = v end
  elseif t == 'set' then for _, v in ipairs(redis.call('SMEMBERS', k)) do out[#out + 1] = v end
  elseif t == 'zset' then for _, v in ipairs(redis.call('ZRANGE', k, 0, -1)) do out[#out + 1] = v end
  end
end
return out
"#;

/// The promise the shared backend weakens: Registers racing for one new
/// name with different content. Exactly one content wins, and each file
/// stays whole by itself (its holders all hold its one manifest); a loser
/// may have registered its other, earlier files (one Register is atomic per
/// file, not per request). The embedded catalog would register none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registers_stay_whole_per_file() {
    if let Some(b) = shared(config()).await {
        racing_registers(b).await;
    }
}

/// The same on a 3-primary Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registers_stay_whole_per_file_on_a_cluster() {
    if let Some(b) = clustered(config()).await {
        racing_registers(b).await;
    }
}

async fn racing_registers(b: Backend) {
    within(60, async {
        let replica = b.replica().await;
        let common = manifest("common", 2048, 1);
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let c = if i % 2 == 0 {
                b.catalog.clone()
            } else {
                replica.clone()
            };
            let offers = vec![full(&common), full(&manifest("race", 2048, 10 + i))];
            tasks.push(tokio::spawn(async move {
                let caller = Caller::New {
                    addr: format!("10.0.1.{i}:1"),
                    member: None,
                };
                (i, c.register(caller, offers).await)
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            match r {
                Ok(reg) => won.push((i, reg.peer)),
                Err(e) => assert_eq!(tonic::Status::from(e).code(), Code::AlreadyExists),
            }
        }
        assert!(!won.is_empty(), "someone registers the name");
        let race = b.catalog.locate(&name("race"), 100).await.unwrap();
        let winner_digest = race.manifest.digest();
        let winners: Vec<u8> = won
            .iter()
            .filter(|(i, _)| manifest("race", 2048, 10 + i).digest() == winner_digest)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(
            winners.len(),
            won.len(),
            "every success holds the one content"
        );
        assert_eq!(race.holder_count as usize, won.len());
        assert!(race.chunk_holders.iter().all(|&n| n as usize == won.len()));
        // "common" is whole too: its counts match its holders.
        let common = b.catalog.locate(&name("common"), 100).await.unwrap();
        assert!(common.holder_count as usize >= won.len());
        assert!(
            common
                .chunk_holders
                .iter()
                .all(|&n| n as u32 == common.holder_count)
        );
    })
    .await;
}

/// Members racing for one address on a TLS tracker (AU-4), through two
/// replicas: exactly one gets it, every other is PERMISSION_DENIED, and no
/// refused Register leaves a session behind (the address index and the
/// session are on different slots, so this is the compare-and-set's case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_racing_for_one_address_leave_one_session() {
    if let Some(b) = shared(config()).await {
        members_racing_for_one_address(b).await;
    }
}

/// The same on a 3-primary Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_racing_for_one_address_leave_one_session_on_a_cluster() {
    if let Some(b) = clustered(config()).await {
        members_racing_for_one_address(b).await;
    }
}

async fn members_racing_for_one_address(b: Backend) {
    within(60, async {
        let replica = b.replica().await;
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let c = if i % 2 == 0 {
                b.catalog.clone()
            } else {
                replica.clone()
            };
            let offers = vec![full(&manifest(&format!("m{i}"), 2048, i))];
            tasks.push(tokio::spawn(async move {
                let caller = Caller::New {
                    addr: "10.0.2.1:1".into(),
                    member: Some(Member::of_cert(&[i; 8])),
                };
                c.register(caller, offers).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => assert_eq!(tonic::Status::from(e).code(), Code::PermissionDenied),
            }
        }
        assert_eq!(won, 1, "one member holds the address");
        assert_eq!(
            b.catalog.stats().await.unwrap().peers,
            1,
            "no refused session left"
        );
    })
    .await;
}

/// Expiry sweeps by several replicas at once: each silent session is
/// claimed by exactly one of them (the counts of peers gone add up), and
/// the holder records left are exactly the live sessions' (counted from the
/// records in Redis, not through Locate, which filters by liveness anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_never_double_count_or_lose_a_holding() {
    if let Some(b) = shared(config()).await {
        concurrent_sweeps(b).await;
    }
}

/// The same on a 3-primary Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_on_a_cluster_never_double_count_or_lose_a_holding() {
    if let Some(b) = clustered(config()).await {
        concurrent_sweeps(b).await;
    }
}

async fn concurrent_sweeps(b: Backend) {
    within(60, async {
        let replicas = [b.catalog.clone(), b.replica().await, b.replica().await];
        let m = manifest("m", 8 * 1024, 1);
        let (mut live, mut silent) = (Vec::new(), Vec::new());
        let mut want = [0u8; 8];
        for i in 0..24u32 {
            let held = [i % 8 + 1, (i + 3) % 8 + 1];
            let s = join(
                &replicas[i as usize % 3],
                5000 + i as u16,
                vec![offer(&m, &held)],
            )
            .await;
            if i % 2 == 0 {
                for c in held {
                    want[c as usize - 1] += 1;
                }
                live.push(s);
            } else {
                silent.push(s);
            }
        }
        // The live half heartbeats past the TTL; the silent half expires.
        let until = std::time::Instant::now() + TTL + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            for s in &live {
                b.catalog.heartbeat(s.cred()).await.expect("heartbeat");
            }
            tokio::time::sleep(TTL / 5).await;
        }
        let mut gone = 0;
        for _ in 0..3 {
            let (x, y, z) = tokio::join!(
                replicas[0].sweep(),
                replicas[1].sweep(),
                replicas[2].sweep()
            );
            gone += x.unwrap() + y.unwrap() + z.unwrap();
        }
        assert_eq!(
            gone,
            silent.len(),
            "each silent session claimed exactly once"
        );
        assert_eq!(b.catalog.stats().await.unwrap().peers, live.len());

        // The records in Redis: exactly the live sessions', no other, and
        // the stored counts exactly theirs, recounted from the records.
        let audit = audit(&b, "m").await;
        let mut ids = audit.holders.clone();
        ids.sort();
        let mut want_ids: Vec<_> = live.iter().map(|s| s.reg.peer).collect();
        want_ids.sort();
        assert_eq!(ids, want_ids);
        assert_eq!(audit.stored, audit.recounted);
        let want_u32: Vec<u32> = want.iter().map(|&c| c.into()).collect();
        assert_eq!(audit.stored, want_u32);
        let found = b.catalog.locate(&name("m"), 100).await.unwrap();
        assert_eq!(found.chunk_holders, want);
        for s in &silent {
            assert_eq!(code(b.catalog.heartbeat(s.cred()).await), Code::NotFound);
        }
    })
    .await;
}

/// The stored counts under churn: sessions on three replicas add and
/// withdraw random chunks at once, some leave, withdraw or go silent, while
/// every replica sweeps. Afterwards the count planes equal a recount from
/// the holder records and the counts of the sessions' own final holdings,
/// also as Locate reads them through a window of two records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_counts_stay_exact_under_churn_and_sweeps() {
    if let Some(b) = shared(config()).await {
        churn_and_sweeps(b).await;
    }
}

/// The same on a 3-primary Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_counts_stay_exact_under_churn_and_sweeps_on_a_cluster() {
    if let Some(b) = clustered(config()).await {
        churn_and_sweeps(b).await;
    }
}

async fn churn_and_sweeps(b: Backend) {
    const CHUNKS: u32 = 16;
    within(90, async {
        let replicas = [b.catalog.clone(), b.replica().await, b.replica().await];
        let m = manifest("m", CHUNKS as usize * 1024, 1);
        let mut sessions = Vec::new();
        for i in 0..12u16 {
            let held: Vec<u32> = (1..=CHUNKS)
                .filter(|c| (c + u32::from(i)) % 3 == 0)
                .collect();
            let s = join(&replicas[i as usize % 3], 6000 + i, vec![offer(&m, &held)]).await;
            sessions.push((s, chunks(&m, &held)));
        }
        // Sessions 9..12 go silent now; the rest churn, each on its own
        // replica, heartbeating, while the replicas sweep.
        let stop = std::time::Instant::now() + TTL + Duration::from_millis(400);
        let churn = sessions[..9].iter().enumerate().map(|(i, (s, start))| {
            let c = replicas[i % 3].clone();
            let (cred, m) = (s.cred(), m.clone());
            let mut held = start.clone();
            let mut rng = fastrand::Rng::with_seed(i as u64);
            let n = name("m");
            async move {
                while std::time::Instant::now() < stop {
                    let a = rng.u32(1..=CHUNKS);
                    let z = rng.u32(a..=CHUNKS.min(a + 3));
                    let range = [a..=z];
                    let (add, remove): (&[_], &[_]) = match rng.bool() {
                        true => (&range, &[]),
                        false => (&[], &range),
                    };
                    let got = c.register_chunks(cred, &n, add, remove).await;
                    let change = chunks(&m, &(a..=z).collect::<Vec<_>>());
                    match add.is_empty() {
                        true => held.subtract(&change),
                        false => held.union_with(&change),
                    }
                    assert_eq!(got.expect("register chunks"), held.len());
                    c.heartbeat(cred).await.expect("heartbeat");
                }
                held
            }
        });
        let sweeps = async {
            let mut gone = 0;
            while std::time::Instant::now() < stop + Duration::from_millis(300) {
                let (x, y, z) = tokio::join!(
                    replicas[0].sweep(),
                    replicas[1].sweep(),
                    replicas[2].sweep()
                );
                gone += x.unwrap() + y.unwrap() + z.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            gone
        };
        let (held, gone) = tokio::join!(futures_join_all(churn), sweeps);
        assert_eq!(gone, 3, "each silent session claimed exactly once");
        // Then: one leaves, one withdraws the file, the rest stay.
        b.catalog.leave(sessions[0].0.cred()).await.expect("leave");
        b.catalog
            .withdraw(sessions[1].0.cred(), &name("m"))
            .await
            .expect("withdraw");
        let mut want = vec![0u32; CHUNKS as usize];
        let mut holders = 0;
        for h in &held[2..] {
            h.add_to_counts(&mut want);
            holders += u32::from(!h.is_empty());
        }
        let audit = audit(&b, "m").await;
        assert_eq!(audit.stored, audit.recounted, "planes against records");
        assert_eq!(audit.stored, want);
        assert_eq!(audit.holders.len() as u32, holders);
        let found = b.catalog.locate(&name("m"), 1).await.unwrap();
        let want_u8: Vec<u8> = want.iter().map(|&c| c.min(255) as u8).collect();
        assert_eq!(
            (found.chunk_holders, found.holder_count),
            (want_u8, holders)
        );
    })
    .await;
}

/// `futures::future::join_all` without the crate: the futures one after
/// another would serialise the churn, so each runs as a task.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// A holder record whose session no longer exists (what a sweeper that
/// died between its claim and its cleanup leaves) is never listed, and the
/// scrub drops it, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_drops_records_of_ended_sessions_only() {
    let Some(b) = shared(config()).await else {
        return;
    };
    within(60, async {
        let m = manifest("m", 2048, 1);
        let s = join(&b.catalog, 4001, vec![full(&m)]).await;
        // A second holder whose session a sweeper claimed and then died:
        // its session keys are gone, its holder record is not.
        let gone = join(&b.catalog, 4002, vec![full(&m)]).await;
        let id = gone.reg.peer.to_hex();
        let bucket = format!("hv:p:{{{:02x}}}:", gone.reg.peer.as_u64() % 64);
        for k in ["s:", "l:", "f:"] {
            b.raw(&["DEL", &format!("{bucket}{k}{id}")]);
        }
        b.raw(&["ZREM", &format!("{bucket}d"), &id]);
        let found = b.catalog.locate(&name("m"), 0).await.unwrap();
        assert_eq!((found.holder_count, found.chunk_holders), (1, vec![1, 1]));
        // With a window of two records, one of them dead, as well.
        let found = b.catalog.locate(&name("m"), 1).await.unwrap();
        assert_eq!((found.holder_count, found.chunk_holders), (1, vec![1, 1]));
        assert_eq!(audit(&b, "m").await.stored, vec![2, 2]);

        let url = b.config.store.clone().unwrap();
        let catalog = RedisCatalog::connect(&url, b.config.limits())
            .await
            .unwrap();
        assert_eq!(catalog.scrub().await.unwrap(), 1);
        let after = audit(&b, "m").await;
        assert_eq!(after.holders, vec![s.reg.peer]);
        assert_eq!((after.stored, after.recounted), (vec![1, 1], vec![1, 1]));
        assert_eq!(catalog.scrub().await.unwrap(), 0);
    })
    .await;
}

/// A Redis primary killed (kill -9) with a replica: Locate answers again
/// once the replica is promoted, with the file and its holder, within two
/// node timeouts (2 s each here) and a margin for a busy machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_answers_again_after_a_primary_fails_over() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start_with(3, 1))
        .await
        .expect("start the cluster");
    let Some(mut cluster) = cluster else {
        return;
    };
    within(90, async {
        let mut config = config();
        config.ttl = Duration::from_secs(60);
        config.store = Some(cluster.url());
        let c = hive_tracker::connect(&config).await.expect("connect");
        let m = manifest("m", 2048, 1);
        let s = join(&c, 4001, vec![full(&m)]).await;
        cluster.wait_replicated();
        let tag: String = blake3::hash(b"m").as_bytes()[..8]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        let killed = cluster.kill_primary_of(&format!("hv:f:{{{tag}}}:m"));
        let started = std::time::Instant::now();
        let found = loop {
            match c.locate(&name("m"), 0).await {
                Ok(found) => break found,
                Err(e) => {
                    let status = tonic::Status::from(e);
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no failover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let took = started.elapsed();
        eprintln!("primary {killed} killed: Locate answered again after {took:?}");
        // Where the time went: Redis's own failover (the node timeout, the
        // failure reports, the election's delay), then the client's.
        let now = log_clock(&clock_now()).expect("now");
        for step in [
            "as failing (quorum reached)",
            "Starting a failover election",
            "Failover election won",
        ] {
            // The first node to log it.
            let at = cluster
                .log_lines(step)
                .iter()
                .filter_map(|line| log_clock(line.split_whitespace().nth(4)?))
                .min()
                .map(|at| took.as_secs_f64() - (now - at) as f64 / 1000.0);
            match at {
                Some(at) => eprintln!("  {at:.3} s after the kill: {step}"),
                None => eprintln!("  not in the nodes' logs: {step}"),
            }
        }
        assert_eq!(found.holder_count, 1);
        assert_eq!(found.holders[0].peer, s.reg.peer);
        assert!(took < Duration::from_secs(12), "failover took {took:?}");
        c.heartbeat(s.cred()).await.expect("the session survived");
    })
    .await;
}

/// Milliseconds since midnight of a Redis log's `HH:MM:SS.mmm`.
fn log_clock(t: &str) -> Option<i64> {
    let (hms, ms) = t.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?)
}

/// Now as a Redis log writes it (UTC, as the nodes run here).
fn clock_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        % 86_400_000;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// The two backends side by side: one random sequence of calls (new and
/// extended sessions, conflicting and dropped offers, chunk changes in and
/// out of range, quotas, Leave, calls with ended sessions) gets the same
/// answers, codes and catalog from the embedded catalog and from Redis.
/// Peers are compared by address, as each backend mints its own ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_a_random_workload_alike() {
    let mut cfg = config();
    cfg.ttl = Duration::from_secs(60);
    cfg.max_files_per_peer = 3;
    let (Some(one), Some(two)) = (embedded(cfg.clone()).await, shared(cfg).await) else {
        return;
    };
    within(120, async {
        for seed in 0..3 {
            differential(&one.catalog, &two.catalog, seed).await;
        }
    })
    .await;
}

/// What a call answered, comparable across backends.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok(String),
    Refused(Code),
}

fn answer<T>(r: Result<T, ServiceError>, show: impl Fn(T) -> String) -> Answer {
    match r {
        Ok(v) => Answer::Ok(show(v)),
        Err(e) => Answer::Refused(tonic::Status::from(e).code()),
    }
}

/// The catalog as seen through ListFiles and Locate, peers by address.
async fn view_by_addr(c: &SharedCatalog) -> String {
    let page = c.list(None, 1000).await.expect("list");
    let mut out = String::new();
    for f in page.files {
        let found = c.locate(f.manifest.name(), 1000).await.expect("locate");
        let mut holders: Vec<String> = found
            .holders
            .iter()
            .map(|h| format!("{}:{:?}", h.addr, h.chunks.to_bitmap()))
            .collect();
        holders.sort();
        out += &format!(
            "{} {} {} {holders:?} {:?}\n",
            f.manifest.name(),
            f.manifest.digest(),
            found.holder_count,
            found.chunk_holders
        );
    }
    out
}

async fn differential(one: &SharedCatalog, two: &SharedCatalog, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let files: Vec<Manifest> = names
        .iter()
        .enumerate()
        .map(|(i, n)| manifest(n, 1024 * (1 + i % 4) + 100, i as u8))
        .collect();
    let other = |i: usize| manifest(names[i], 3000, 99);
    // Per address: each backend's session, if any.
    let mut sessions: Vec<Option<(Credentials, Credentials)>> = vec![None; 6];
    let offer_of = |rng: &mut fastrand::Rng| -> Offer {
        let i = rng.usize(..files.len());
        let m = match rng.u8(..10) {
            0 => other(i),
            _ => files[i].clone(),
        };
        let n = m.chunk_count();
        let held: Vec<u32> = (1..=n).filter(|_| rng.bool()).collect();
        offer(&m, &held)
    };
    let mut seen: std::collections::HashMap<Code, usize> = Default::default();
    for step in 0..200 {
        let k = rng.usize(..sessions.len());
        let addr = format!("10.0.0.{k}:7000");
        let what = rng.u8(..10);
        let (a, b, label) = match (what, sessions[k]) {
            (0..=2, _) | (_, None) => {
                let offers: Vec<Offer> = (0..rng.usize(0..3)).map(|_| offer_of(&mut rng)).collect();
                let caller = || Caller::New {
                    addr: addr.clone(),
                    member: None,
                };
                let ra = one.register(caller(), offers.clone()).await;
                let rb = two.register(caller(), offers).await;
                if let (Ok(x), Ok(y)) = (&ra, &rb) {
                    let cred = |r: &Registered| Credentials {
                        peer: r.peer,
                        token: r.token.as_ref().expect("new").hash(),
                    };
                    sessions[k] = Some((cred(x), cred(y)));
                }
                let show = |r: Registered| r.addr;
                (answer(ra, show), answer(rb, show), "register new")
            }
            (3..=4, Some((ca, cb))) => {
                let offers: Vec<Offer> = (0..rng.usize(1..3)).map(|_| offer_of(&mut rng)).collect();
                let ra = one.register(Caller::Session(ca), offers.clone()).await;
                let rb = two.register(Caller::Session(cb), offers).await;
                let show = |r: Registered| r.addr;
                (answer(ra, show), answer(rb, show), "register again")
            }
            (5..=7, Some((ca, cb))) => {
                let i = rng.usize(..files.len());
                let n = files[i].chunk_count() + 1;
                let first = rng.u32(0..=n);
                let add = [first..=rng.u32(first..=n)];
                let first = rng.u32(1..=n);
                let remove = match rng.bool() {
                    true => vec![first..=first],
                    false => vec![],
                };
                let name = files[i].name();
                let ra = one.register_chunks(ca, name, &add, &remove).await;
                let rb = two.register_chunks(cb, name, &add, &remove).await;
                (
                    answer(ra, |h| h.to_string()),
                    answer(rb, |h| h.to_string()),
                    "chunks",
                )
            }
            (8, Some((ca, cb))) => {
                let ra = one.leave(ca).await;
                let rb = two.leave(cb).await;
                (
                    answer(ra, |_| "left".into()),
                    answer(rb, |_| "left".into()),
                    "leave",
                )
            }
            (_, Some((ca, cb))) => {
                let ra = one.heartbeat(ca).await;
                let rb = two.heartbeat(cb).await;
                (
                    answer(ra, |_| "".into()),
                    answer(rb, |_| "".into()),
                    "heartbeat",
                )
            }
        };
        assert_eq!(a, b, "seed {seed} step {step}: {label} for {addr}");
        let code = match a {
            Answer::Ok(_) => Code::Ok,
            Answer::Refused(code) => code,
        };
        *seen.entry(code).or_default() += 1;
        if step % 10 == 9 {
            assert_eq!(
                view_by_addr(one).await,
                view_by_addr(two).await,
                "seed {seed} step {step}"
            );
        }
    }
    assert_eq!(
        view_by_addr(one).await,
        view_by_addr(two).await,
        "seed {seed}"
    );
    // The workload reaches every kind of answer.
    for code in [
        Code::Ok,
        Code::AlreadyExists,
        Code::InvalidArgument,
        Code::NotFound,
        Code::ResourceExhausted,
    ] {
        assert!(
            seen.contains_key(&code),
            "seed {seed}: no {code:?} in {seen:?}"
        );
    }
    // Clean up for the next seed: everyone leaves, everything is forgotten.
    for (ca, cb) in sessions.into_iter().flatten() {
        let _ = one.leave(ca).await;
        let _ = two.leave(cb).await;
    }
}
