//! The operator's surface: Prometheus metrics that follow real traffic,
//! JSON logs, and shell completions.

mod common;

use std::time::Duration;

use common::{
    metrics::{sample, scrape},
    *,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_traffic() {
    within(60, async {
        let tracker = TestTracker::start_with(&["--in-memory", "--metrics", "127.0.0.1:0"]).await;
        let f = data(300_000, 1);
        let seeder =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--metrics", "127.0.0.1:0"]).await;
        let leecher =
            TestPeer::start_with(&tracker.url(), &[], &["--metrics", "127.0.0.1:0"]).await;
        let out = leecher.peerctl(&["fetch", "f"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = leecher.peerctl(&["locate", "missing"]).await;
        assert!(!out.status.success());

        let t = scrape(tracker.daemon.metrics_addr()).await;
        assert!(
            sample(
                &t,
                r#"hive_tracker_rpc_calls_total{method="Register",code="OK"}"#
            )
            .unwrap_or(0.0)
                >= 2.0,
            "{t}"
        );
        assert_eq!(
            sample(
                &t,
                r#"hive_tracker_rpc_calls_total{method="Locate",code="NOT_FOUND"}"#
            ),
            Some(1.0),
            "{t}"
        );
        assert!(
            sample(&t, r#"hive_tracker_rpc_seconds_count{method="Locate"}"#).unwrap_or(0.0) >= 2.0,
            "{t}"
        );
        // The catalog gauges are refreshed by the sweeper (at least once a second).
        let mut t = t;
        for _ in 0..100 {
            if sample(&t, "hive_tracker_holdings") == Some(2.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            t = scrape(tracker.daemon.metrics_addr()).await;
        }
        assert_eq!(sample(&t, "hive_tracker_peers"), Some(2.0), "{t}");
        assert_eq!(sample(&t, "hive_tracker_files"), Some(1.0), "{t}");
        assert_eq!(sample(&t, "hive_tracker_holdings"), Some(2.0), "{t}");
        assert!(
            sample(&t, "hive_tracker_catalog_bytes").is_some_and(|b| b > 0.0),
            "{t}"
        );

        let s = scrape(seeder.daemon.metrics_addr()).await;
        let l = scrape(leecher.daemon.metrics_addr()).await;
        assert_eq!(
            sample(&s, "hive_peer_served_bytes_total"),
            Some(300_000.0),
            "{s}"
        );
        assert_eq!(
            sample(&l, "hive_peer_fetched_bytes_total"),
            Some(300_000.0),
            "{l}"
        );
        assert_eq!(sample(&l, "hive_peer_strikes_total"), Some(0.0));
        assert_eq!(sample(&s, "hive_peer_uploads_active"), Some(0.0));
        assert!(
            sample(
                &s,
                r#"hive_peer_rpc_calls_total{method="GetChunk",code="OK"}"#
            )
            .unwrap_or(0.0)
                >= 1.0,
            "{s}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_completions() {
    within(60, async {
        let tracker = TestTracker::start_with(&["--in-memory", "--log-format", "json"]).await;
        let _peer = TestPeer::start_with(
            &tracker.url(),
            &[("f", b"hello")],
            &["--log-format", "json"],
        )
        .await;
        let log = tracker.daemon.log();
        let first = log.lines().next().expect("the tracker logged something");
        let parsed: serde_json::Value = serde_json::from_str(first).expect("a JSON log line");
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{first}"
        );
        assert!(
            log.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );

        let out = peerctl(&tracker.url(), "127.0.0.1:9", &["completions", "bash"]).await;
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("peerctl") && script.contains("fetch") && script.contains("--chunk")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_peerctl_detaches_and_pause_keeps_the_chunks() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(2 << 20, 9);
        // A holder whose answers the test lets go one by one: the fetch is
        // surely still running when Ctrl-C comes, with exactly 5 chunks in.
        let seeder = common::evil::EvilPeer::builder("f", &f)
            .chunk_size(16 << 10)
            .gated()
            .start(&tracker)
            .await;
        let leecher = TestPeer::start(&tracker, &[]).await;

        let mut fetch = tokio::process::Command::new(bin("peerctl"))
            .args([
                "--tracker",
                &tracker.url(),
                "--control",
                &leecher.control.to_string(),
                "--json",
                "fetch",
                "f",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start peerctl");
        let mut events = BufReader::new(fetch.stdout.take().unwrap()).lines();
        seeder.gate().release(5);
        loop {
            let line = events
                .next_line()
                .await
                .unwrap()
                .expect("peerctl ended early");
            let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
            if ev["event"] == "progress" && ev["chunks_done"].as_u64() == Some(5) {
                break;
            }
        }
        let status = std::process::Command::new("kill")
            .args(["-INT", &fetch.id().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = fetch.wait().await.unwrap();
        // Ctrl-C only stops following (exit 130, as an interrupted command):
        // the transfer goes on in the daemon until paused.
        assert_eq!(exit.code(), Some(130));
        let out = leecher.peerctl(&["--json", "transfers"]).await;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list["transfers"][0]["state"], "running", "{list}");
        let out = leecher.peerctl(&["pause", "f"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Paused: the daemon stops the download and keeps what it verified.
        let held = loop {
            let out = leecher.peerctl(&["--json", "status"]).await;
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if s["downloads_active"] == 0 {
                let f = &s["files"][0];
                assert_eq!(f["name"], "f");
                assert_eq!(f["state"], "partial");
                break f["chunks_held"].as_u64().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(held, 5, "chunks kept of 128");
        assert!(!leecher.dir.join("f").exists());

        // The next fetch carries on from there.
        seeder.gate().open();
        let out = leecher.peerctl(&["--json", "fetch", "f"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let started: serde_json::Value =
            serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(started["chunks_present"].as_u64(), Some(held));
        assert_eq!(std::fs::read(leecher.dir.join("f")).unwrap(), f);
    })
    .await;
}
