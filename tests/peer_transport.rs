//! The peer's transport bounds under attack (docs/RELIABILITY.md RE-10): its
//! public port runs through the same runtime layer as the tracker's (stream
//! caps, connections per address, answer budget, send deadline), tested here
//! on a real peer process with a raw HTTP/2 client that never reads. Prints
//! a `FIGURE RE-10: ...` line on stderr.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use common::{
    download::{self, fetch_whole},
    procfs, rawh2, *,
};
use hive::pb::peer::GetChunkRequest;
use tokio::task::JoinSet;

const GET_CHUNK: &str = "/hive.peer.v1.Peer/GetChunk";
const MIB: usize = 1 << 20;
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A 32 MiB file in 8 chunks of 4 MiB.
const FILE_BYTES: usize = 32 * MIB;
const CHUNK_BYTES: usize = 4 * MIB;
/// Connections from the attacker, each opening this many GetChunk streams
/// with windows of 0.
const CONNS: usize = 4;
const STREAMS: usize = 64;
/// The send deadline of the attacked peer, shorter than its drain window
/// (10 s) and send timeout (20 s), so that a connection ended within it was
/// ended by the deadline.
const SEND_DEADLINE: Duration = Duration::from_secs(3);
/// The attacked peer's resident memory stays under this: its answer budget
/// (64 MiB, the default) and what a debug build needs to serve (about 30
/// MiB), with room to spare; the attack asks for 1 GiB of chunks.
const RSS_BOUND_KIB: u64 = 160 * 1024;

/// How the attacker's calls ended.
#[derive(Debug, Default)]
struct Attack {
    /// Answered (a stream of chunk data that is never read).
    stalled: usize,
    /// Refused with RESOURCE_EXHAUSTED.
    refused: usize,
    /// Not started within 300 ms: the connection's stream cap.
    capped: usize,
}

/// An answered stream, its body never read.
type Unread = (h2::RecvStream, h2::SendStream<bytes::Bytes>);

/// A connection of the attacker holding answered streams: when it opened,
/// and (awaited) when the peer closed it.
struct Stalling {
    opened: Instant,
    closed: tokio::task::JoinHandle<Instant>,
    /// Its answered streams and the connection's handle, held unread.
    _held: (Vec<Unread>, h2::client::SendRequest<bytes::Bytes>),
}

/// `CONNS` connections from the attacker with windows of 0, one after
/// another, each asking for `STREAMS` chunks and reading nothing.
async fn zero_window_attack(peer: std::net::SocketAddr) -> (Attack, Vec<Stalling>) {
    let mut stalling = Vec::new();
    let mut out = Attack::default();
    for _ in 0..CONNS {
        let opened = Instant::now();
        let mut h2 = rawh2::connect_from(peer, ATTACKER, 0).await;
        let mut calls = JoinSet::new();
        for i in 0..STREAMS {
            let msg = rawh2::grpc_message(&GetChunkRequest {
                name: "big".into(),
                chunk: 1 + (i % (FILE_BYTES / CHUNK_BYTES)) as u32,
                ..Default::default()
            });
            let started = tokio::time::timeout(Duration::from_millis(300), h2.call(GET_CHUNK, msg));
            match started.await {
                Ok(Ok(call)) => {
                    calls.spawn(async move {
                        let response = rawh2::headers(call.response).await;
                        (response, call.stream)
                    });
                }
                _ => {
                    out.capped += STREAMS - i;
                    break;
                }
            }
        }
        let mut bodies = Vec::new();
        while let Some(answer) = calls.join_next().await {
            let (response, stream) = answer.expect("call task");
            let response = response.expect("response headers");
            match response.headers().get("grpc-status").map(|v| v.as_bytes()) {
                None => bodies.push((response.into_body(), stream)),
                Some(b"8") => out.refused += 1,
                Some(other) => panic!("unexpected grpc-status {other:?}"),
            }
        }
        out.stalled += bodies.len();
        if !bodies.is_empty() {
            let rawh2::H2 { send, driver, .. } = h2;
            let closed = tokio::spawn(async move {
                let _ = driver.await;
                Instant::now()
            });
            stalling.push(Stalling {
                opened,
                closed,
                _held: (bodies, send),
            });
        }
    }
    (out, stalling)
}

/// RE-10: a reader with HTTP/2 windows of 0 opens 4 x 64 GetChunk streams
/// for 4 MiB chunks against the only holder of a file. The holder's memory
/// stays bounded, the streams past its upload slots get RESOURCE_EXHAUSTED,
/// every stalled connection is ended by the send deadline, and a fresh peer
/// downloads the file from the same holder meanwhile, right digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re10_a_reader_that_never_reads_cannot_pin_a_peers_memory_or_slots() {
    within(180, async {
        let tracker = TestTracker::start().await;
        let file = data(FILE_BYTES, 91);
        let deadline = format!("{}s", SEND_DEADLINE.as_secs());
        let seeder = TestPeer::start_with(
            &tracker.url(),
            &[("big", &file)],
            &["--chunk-size", "4MiB", "--send-deadline", &deadline],
        )
        .await;
        let pid = seeder.daemon.pid();
        let rss_before = procfs::rss_kib(pid);

        let started = Instant::now();
        let attack = tokio::spawn(zero_window_attack(seeder.listen));
        // A legitimate download from the attacked holder, meanwhile.
        let leecher = TestPeer::start(&tracker, &[]).await;
        let fetched = fetch_whole(leecher.control, "big").await;
        let fetch_took = started.elapsed();
        let (attack, stalling) = attack.await.expect("attack task");
        let stalling_conns = stalling.len();
        let attack_took = started.elapsed();
        let rss_attack = procfs::rss_kib(pid);

        // Every connection holding stalled streams is ended by the deadline:
        // how long after it opened.
        let mut closed_after = Vec::new();
        for conn in stalling {
            let waited = tokio::time::timeout(SEND_DEADLINE + Duration::from_secs(10), conn.closed);
            if let Ok(closed) = waited.await {
                closed_after.push(closed.expect("watch task") - conn.opened);
            }
        }
        let peak = procfs::peak_rss_kib(pid);
        // The holder serves again once the attacker's streams are gone.
        let after = get_chunk(seeder.listen, "big", 1).await;

        let want = download::manifest_of("big", &file, Some(CHUNK_BYTES as u32)).digest();
        let right = fetched
            .as_ref()
            .is_ok_and(|done| done.digest.as_ref() == want.as_bytes());
        let (first_close, last_close) = (
            closed_after.iter().min().copied().unwrap_or_default(),
            closed_after.iter().max().copied().unwrap_or_default(),
        );
        eprintln!(
            "FIGURE RE-10: {CONNS} zero-window connections x {STREAMS} GetChunk streams of 4 MiB \
             chunks ({} MiB asked for) in {:.2} s: {} answered and left unread, {} \
             RESOURCE_EXHAUSTED, {} not started (stream cap); peer RSS before {} MiB, after the \
             attack {} MiB, peak {} MiB (bound {} MiB); 32 MiB download from the attacked peer \
             {} in {:.2} s, digest {}; connections holding stalled streams closed by the peer \
             {}/{}, {:.2}-{:.2} s after they opened (send deadline {:.0} s); GetChunk after: {}",
            CONNS * STREAMS * CHUNK_BYTES / MIB,
            attack_took.as_secs_f64(),
            attack.stalled,
            attack.refused,
            attack.capped,
            rss_before / 1024,
            rss_attack / 1024,
            peak / 1024,
            RSS_BOUND_KIB / 1024,
            if fetched.is_ok() { "done" } else { "FAILED" },
            fetch_took.as_secs_f64(),
            if right { "right" } else { "WRONG" },
            closed_after.len(),
            stalling_conns,
            first_close.as_secs_f64(),
            last_close.as_secs_f64(),
            SEND_DEADLINE.as_secs_f64(),
            match &after {
                Ok(_) => "OK",
                Err(s) => hive_runtime::grpc::code_name(s.code()),
            },
        );
        assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
        assert!(attack.stalled > 0, "the attack got streams: {attack:?}");
        assert!(
            attack.refused > 0,
            "the streams past the slots were refused: {attack:?}"
        );
        fetched.expect("the download completes under attack");
        assert!(right, "the download's digest");
        assert_eq!(
            closed_after.len(),
            stalling_conns,
            "every connection holding stalled streams ended"
        );
        // Ended by the deadline, before the drain rule (10 s) or the send
        // timeout (20 s) could have.
        assert!(
            first_close >= SEND_DEADLINE && last_close < SEND_DEADLINE + Duration::from_secs(4),
            "closed {first_close:?}-{last_close:?} after they opened"
        );
        let chunk = after.expect("GetChunk after the attack");
        assert!(chunk == file[..CHUNK_BYTES], "chunk 1 came back wrong");
        assert!(procfs::alive(pid));
    })
    .await;
}
