//! Leaving and expiring: Leave (seed message 6) drops a peer's holdings at
//! once, SIGTERM leaves gracefully, and a silent peer disappears after the
//! TTL, then re-registers everything once it speaks again.

mod common;

use std::time::{Duration, Instant};

use common::*;
async fn holders(tracker: &TestTracker, name: &str) -> Vec<String> {
    let found = tracker.locate(name).await;
    found.holders.into_iter().map(|h| h.addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_removes_holdings_and_stops_the_daemon() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(5000, 1);
        let mut a = TestPeer::start(&tracker, &[("f", &f)]).await;
        let b = TestPeer::start(&tracker, &[("f", &f)]).await;
        assert_eq!(holders(&tracker, "f").await.len(), 2);

        let out = a.peerctl(&["leave"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            holders(&tracker, "f").await,
            vec![b.listen.to_string()],
            "gone at once"
        );
        let status = within(20, a.daemon.wait()).await;
        assert!(
            status.success(),
            "the daemon stops cleanly after leave: {status}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_gracefully() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(5000, 2);
        let mut a = TestPeer::start(&tracker, &[("f", &f)]).await;
        a.daemon.signal("TERM");
        let status = within(20, a.daemon.wait()).await;
        assert!(status.success(), "{status}");
        assert!(holders(&tracker, "f").await.is_empty());
        assert!(a.daemon.log().contains("left the tracker"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_expires_after_ttl_and_comes_back() {
    within(60, async {
        let ttl = Duration::from_millis(600);
        let tracker = TestTracker::start_with(&[
            "--in-memory",
            "--heartbeat-interval",
            "150ms",
            "--ttl",
            "600ms",
        ])
        .await;
        let f = data(5000, 3);
        let a = TestPeer::start(&tracker, &[("f", &f)]).await;
        assert_eq!(holders(&tracker, "f").await.len(), 1);

        // Freeze the peer: no heartbeat, no Leave.
        a.daemon.signal("STOP");
        let frozen = Instant::now();
        while !holders(&tracker, "f").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expired = frozen.elapsed();
        eprintln!("FIGURE CP-2: silent peer gone from Locate {expired:?} after it froze (TTL {ttl:?}, heartbeat 150ms)");
        assert!(
            expired >= ttl - Duration::from_millis(150),
            "expired too early: {expired:?}"
        );
        assert!(
            expired <= ttl + Duration::from_secs(1),
            "expired too late: {expired:?}"
        );

        // Thawed, its heartbeat is answered NOT_FOUND and it registers again.
        a.daemon.signal("CONT");
        a.registered().await;
        while holders(&tracker, "f").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(holders(&tracker, "f").await, vec![a.listen.to_string()]);
    })
    .await;
}
