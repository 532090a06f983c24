//! Peers and peerctl given several tracker replicas (`--tracker A,B`):
//! a replica killed mid-download is failed over without losing the session
//! (replicas on one Redis), a dead first replica is passed over from the
//! start, and independent embedded trackers are failed over by registering
//! again.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::{
    process::Output,
    time::{Duration, Instant},
};

use common::{
    TestPeer, TestTracker, bin, data,
    download::{self, fetch, fetch_whole, manifest_of, status},
    evil::EvilPeer,
    within,
};
use redis_server::RedisServer;
use tokio::process::Command;

const CHUNK: u32 = 64 << 10;
/// 4 MiB in 64 chunks.
const CHUNKS: u32 = 64;

/// A tracker replica on `store`.
async fn replica(store: &str) -> TestTracker {
    TestTracker::start_with(&[
        "--store",
        store,
        "--ttl",
        "3s",
        "--heartbeat-interval",
        "1s",
    ])
    .await
}

/// `a,b` for --tracker.
fn both(a: &TestTracker, b: &TestTracker) -> String {
    format!("{},{}", a.url(), b.url())
}

/// Runs peerctl with exactly `args` and `env` (HIVE_TRACKER and HIVE_PEER
/// only from `env`).
async fn peerctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin("peerctl"));
    cmd.args(args)
        .env_remove("HIVE_TRACKER")
        .env_remove("HIVE_PEER")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    within(60, cmd.output()).await.expect("run peerctl")
}

fn said(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", said(out));
    serde_json::from_slice(&out.stdout).expect("peerctl --json")
}

/// Waits until `tracker` lists `peer_id` holding all of `name`.
async fn until_listed_whole(tracker: &TestTracker, name: &str, peer_id: &str) {
    loop {
        let found = tracker.locate(name).await;
        let whole = found
            .holders
            .iter()
            .any(|h| h.peer_id == peer_id && h.chunk_count == CHUNKS);
        if whole {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The replica in use is killed while a 4 MiB fetch runs. The leecher keeps
/// its session (same peer id) and goes on through the other replica: the
/// holder it needs for the rest is one it can only learn of there, and its
/// chunks are then listed there under its old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_download_is_failed_over_keeping_the_session() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    within(150, async {
        let (mut a, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
        let f = data((CHUNK * CHUNKS) as usize, 16);
        // The first holder lets 20 chunks through, then holds the rest back.
        let gated = EvilPeer::builder("f", &f)
            .chunk_size(CHUNK)
            .gated()
            .start(&b)
            .await;
        let seeder = TestPeer::start_with(&both(&a, &b), &[], &[]).await;
        let leecher = TestPeer::start_with(
            &both(&a, &b),
            &[],
            &["--relocate-interval", "300ms", "--chunk-timeout", "2s"],
        )
        .await;
        let before = status(leecher.control).await;
        assert_eq!(before.tracker, a.url(), "the first replica is used first");
        assert_eq!(before.trackers, [a.url(), b.url()]);

        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        gated.gate().release(20);
        run.until_chunks(20).await.expect("20 chunks");
        a.daemon.kill().await;
        let killed = Instant::now();

        // The rest comes from a holder that shares it only now, through
        // the seeder's own failover (a Register).
        let path = seeder.dir.join("f");
        std::fs::write(&path, &f).unwrap();
        let path = path.display().to_string();
        let control = seeder.control.to_string();
        let shared = peerctl(
            &["--control", &control, "share", "--chunk-size", "64KiB", &path],
            &[],
        )
        .await;
        assert!(shared.status.success(), "{}", said(&shared));

        let done = within(60, run.done())
            .await
            .expect("the download completes");
        let want = manifest_of("f", &f, Some(CHUNK));
        assert_eq!(done.digest.as_ref(), want.digest().as_bytes());
        assert!(std::fs::read(leecher.dir.join("f")).unwrap() == f);
        assert!(download::bytes_served(&seeder).await > 0, "found through b");
        eprintln!(
            "FIGURE replicas: replica in use killed at 20/{CHUNKS} chunks; share through the other and the fetch done {:?} after the kill",
            killed.elapsed()
        );

        let after = status(leecher.control).await;
        assert_eq!(after.tracker, b.url(), "now on the other replica");
        assert_eq!(after.peer_id, before.peer_id, "the same session");
        within(30, until_listed_whole(&b, "f", &before.peer_id)).await;
    })
    .await;
}

/// With the first replica dead from the start, the peer registers through
/// the second, and peerctl reaches it whether it was given both replicas,
/// HIVE_TRACKER, or the daemon's list; the first alone is UNAVAILABLE
/// naming --tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_replica_is_passed_over_from_the_start() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    within(120, async {
        let (mut dead, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
        dead.daemon.kill().await;
        let trackers = both(&dead, &b);
        let content = data(300_000, 5);
        let seeder = TestPeer::start_with(&trackers, &[("f.bin", &content)], &[]).await;
        let st = status(seeder.control).await;
        assert_eq!(st.tracker, b.url());
        assert_eq!(b.locate("f.bin").await.holder_count, 1);

        let control = seeder.control.to_string();
        let located = peerctl(&["--tracker", &trackers, "--json", "locate", "f.bin"], &[]).await;
        assert_eq!(json(&located)["holder_count"], 1, "{}", said(&located));
        let env = [("HIVE_TRACKER", trackers.as_str())];
        let listed = peerctl(&["--json", "files"], &env).await;
        assert_eq!(json(&listed)["files"][0]["name"], "f.bin");
        // No --tracker: the daemon's replicas.
        let listed = peerctl(&["--control", &control, "--json", "files"], &[]).await;
        assert_eq!(json(&listed)["files"][0]["name"], "f.bin");
        let shown = peerctl(&["--control", &control, "status"], &[]).await;
        assert!(
            said(&shown).contains("(replica 2 of 2)"),
            "{}",
            said(&shown)
        );

        let only_dead = peerctl(&["--tracker", &dead.url(), "files"], &[]).await;
        assert_eq!(
            only_dead.status.code(),
            Some(64 + 14),
            "{}",
            said(&only_dead)
        );
        assert!(
            said(&only_dead).contains("--tracker"),
            "{}",
            said(&only_dead)
        );

        let leecher = TestPeer::start_with(&trackers, &[], &[]).await;
        fetch_whole(leecher.control, "f.bin").await.expect("fetch");
        assert!(std::fs::read(leecher.dir.join("f.bin")).unwrap() == content);
    })
    .await;
}

/// Two independent embedded trackers: the second does not know the
/// session, so failing over registers again (a new peer id) with what is
/// held, and the file is shared through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_trackers_are_failed_over_by_registering_again() {
    within(120, async {
        let flags = ["--in-memory", "--ttl", "3s", "--heartbeat-interval", "1s"];
        let mut a = TestTracker::start_with(&flags).await;
        let b = TestTracker::start_with(&flags).await;
        let content = data(200_000, 9);
        let seeder = TestPeer::start_with(&both(&a, &b), &[("f.bin", &content)], &[]).await;
        let first = status(seeder.control).await;
        assert_eq!(first.tracker, a.url());

        a.daemon.kill().await;
        // The next heartbeat finds b, which answers NOT_FOUND.
        let mut client = b.client().await;
        loop {
            let found = client.locate(hive::pb::tracker::LocateRequest {
                name: "f.bin".into(),
                ..Default::default()
            });
            if found.await.is_ok_and(|f| f.get_ref().holder_count == 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let again = status(seeder.control).await;
        assert_eq!(again.tracker, b.url());
        assert!(!again.peer_id.is_empty());
        assert_ne!(again.peer_id, first.peer_id, "a new session on b");

        let leecher = TestPeer::start(&b, &[]).await;
        fetch_whole(leecher.control, "f.bin").await.expect("fetch");
        assert!(std::fs::read(leecher.dir.join("f.bin")).unwrap() == content);
    })
    .await;
}
