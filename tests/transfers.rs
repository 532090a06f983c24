//! Transfers the daemon owns: they outlive the peerctl that started them
//! (SIGHUP, SIGKILL), pause, resume and cancel, queue behind
//! --max-active-transfers, survive a daemon restart in their states, and
//! wait (stalled) for a holder rather than fail.

mod common;

use std::{process::Stdio, time::Duration};

use common::{download::part_file, evil::EvilPeer, *};
use hive::pb::control::{ListTransfersRequest, Transfer, TransferState};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::Code;

/// The transfer of `name` as the daemon lists it, if it does.
async fn transfer(peer: &TestPeer, name: &str) -> Option<Transfer> {
    let list = peer
        .control_client()
        .await
        .list_transfers(ListTransfersRequest {})
        .await
        .expect("ListTransfers")
        .into_inner();
    list.transfers.into_iter().find(|t| t.name == name)
}

/// Waits until `name` is listed in `state` (checked every 20 ms).
async fn until_state(peer: &TestPeer, name: &str, state: TransferState) -> Transfer {
    loop {
        if let Some(t) = transfer(peer, name).await
            && t.state() == state
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `name` is listed and `ready` says so of it.
async fn until(peer: &TestPeer, name: &str, ready: impl Fn(&Transfer) -> bool) -> Transfer {
    loop {
        if let Some(t) = transfer(peer, name).await
            && ready(&t)
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `peerctl ARGS` against `peer`, asserting it succeeds.
async fn ok(peer: &TestPeer, args: &[&str]) -> String {
    let out = peer.peerctl(args).await;
    assert!(
        out.status.success(),
        "peerctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `peerctl --json fetch NAME` following in the background, and its events.
fn follow(tracker: &TestTracker, peer: &TestPeer, name: &str) -> Child {
    Command::new(bin("peerctl"))
        .args([
            "--tracker",
            &tracker.url(),
            "--control",
            &peer.control.to_string(),
        ])
        .args(["--json", "fetch", name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start peerctl")
}

/// Reads `child`'s JSON events until one named `event`.
async fn until_event(child: &mut Child, event: &str) {
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .expect("read")
            .expect("peerctl ended early");
        let ev: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        if ev["event"] == event {
            return;
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn assert_file(peer: &TestPeer, name: &str, want: &[u8]) {
    let got = std::fs::read(peer.dir.join(name)).expect("the downloaded file");
    assert_eq!(blake3::hash(&got), blake3::hash(want), "{name}: digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_outlives_peerctl_hung_up_or_killed() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(1 << 20, 21);
        let seeder = EvilPeer::builder("f", &f)
            .chunk_size(16 << 10)
            .gated()
            .start(&tracker)
            .await;
        let leecher = TestPeer::start(&tracker, &[]).await;

        // The terminal goes away (what closing an SSH session does).
        let mut first = follow(&tracker, &leecher, "f");
        seeder.gate().release(3);
        until_event(&mut first, "progress").await;
        signal(&first, "HUP");
        first.wait().await.expect("peerctl exits");
        // A second peerctl re-attaches, and is killed outright.
        let mut second = follow(&tracker, &leecher, "f");
        until_event(&mut second, "started").await;
        second.kill().await.expect("SIGKILL");

        // Nobody follows it now; it goes on.
        seeder.gate().release(2);
        let t = until(&leecher, "f", |t| t.chunks_done >= 5).await;
        assert_eq!(t.state(), TransferState::Running, "{t:?}");
        seeder.gate().open();
        let watched = ok(&leecher, &["watch", "f"]).await;
        assert!(watched.contains("done"), "{watched}");
        assert_file(&leecher, "f", &f);
        let t = until_state(&leecher, "f", TransferState::Done).await;
        assert_eq!(t.path, leecher.dir.join("f").display().to_string());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(1 << 20, 22);
        let seeder = EvilPeer::builder("f", &f)
            .chunk_size(16 << 10)
            .gated()
            .start(&tracker)
            .await;
        let leecher = TestPeer::start(&tracker, &[]).await;
        ok(&leecher, &["fetch", "--detach", "f"]).await;
        seeder.gate().release(4);
        seeder.until_completed(4).await;

        let out = ok(&leecher, &["pause", "f"]).await;
        assert!(out.contains("paused"), "{out}");
        until_state(&leecher, "f", TransferState::Paused).await;
        while download::status(leecher.control).await.downloads_active != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let asked = seeder.request_count();
        seeder.gate().release(4);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seeder.request_count(), asked, "nothing asked while paused");

        ok(&leecher, &["resume", "f"]).await;
        let t = until_state(&leecher, "f", TransferState::Running).await;
        assert!(t.chunks_done >= 4, "verified chunks kept: {t:?}");

        // Cancel keeps the verified chunks, served, for a later fetch.
        ok(&leecher, &["cancel", "f"]).await;
        assert!(transfer(&leecher, "f").await.is_none(), "no longer listed");
        assert!(part_file(&leecher.dir, "f").is_some(), "chunks kept");
        // ...unless --remove.
        ok(&leecher, &["fetch", "--detach", "f"]).await;
        ok(&leecher, &["cancel", "--remove", "f"]).await;
        while part_file(&leecher.dir, "f").is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let out = leecher.peerctl(&["pause", "f"]).await;
        assert_eq!(out.status.code(), Some(64 + Code::NotFound as i32));
        let out = leecher.peerctl(&["--json", "transfers"]).await;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(list["transfers"], serde_json::json!([]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_active_transfer_the_second_waits_queued() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let (f, g) = (data(256 << 10, 23), data(256 << 10, 24));
        let fs = EvilPeer::builder("f", &f).gated().start(&tracker).await;
        let gs = EvilPeer::builder("g", &g).gated().start(&tracker).await;
        let flags = ["--max-active-transfers", "1"];
        let leecher = TestPeer::start_with(&tracker.url(), &[], &flags).await;
        ok(&leecher, &["fetch", "--detach", "f"]).await;
        ok(&leecher, &["fetch", "--detach", "g"]).await;
        until_state(&leecher, "f", TransferState::Running).await;
        let listed = ok(&leecher, &["transfers"]).await;
        assert!(listed.contains("queued"), "{listed}");
        assert_eq!(
            transfer(&leecher, "g").await.map(|t| t.state()),
            Some(TransferState::Queued)
        );
        assert_eq!(gs.request_count(), 0, "nothing asked for g while queued");
        fs.gate().open();
        until_state(&leecher, "f", TransferState::Done).await;
        // f's slot goes to g.
        gs.gate().open();
        until_state(&leecher, "g", TransferState::Done).await;
        assert_file(&leecher, "f", &f);
        assert_file(&leecher, "g", &g);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_a_paused_and_a_running_transfer() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let (f, g) = (data(512 << 10, 25), data(512 << 10, 26));
        let fs = EvilPeer::builder("f", &f)
            .chunk_size(16 << 10)
            .gated()
            .start(&tracker)
            .await;
        let gs = EvilPeer::builder("g", &g)
            .chunk_size(16 << 10)
            .gated()
            .start(&tracker)
            .await;
        let leecher = TestPeer::start(&tracker, &[]).await;
        ok(&leecher, &["fetch", "--detach", "f"]).await;
        ok(&leecher, &["fetch", "--detach", "g"]).await;
        fs.gate().release(2);
        gs.gate().release(2);
        fs.until_completed(2).await;
        gs.until_completed(2).await;
        ok(&leecher, &["pause", "f"]).await;
        until_state(&leecher, "f", TransferState::Paused).await;

        let leecher = leecher.restart_hard(&[]).await;
        leecher.registered().await;
        until_state(&leecher, "g", TransferState::Running).await;
        assert_eq!(
            transfer(&leecher, "f").await.map(|t| t.state()),
            Some(TransferState::Paused)
        );
        fs.gate().open();
        gs.gate().open();
        until_state(&leecher, "g", TransferState::Done).await;
        assert_file(&leecher, "g", &g);
        let f_now = transfer(&leecher, "f").await.expect("listed");
        assert_eq!(f_now.state(), TransferState::Paused, "paused stays paused");
        assert!(!leecher.dir.join("f").exists());
        ok(&leecher, &["resume", "f"]).await;
        until_state(&leecher, "f", TransferState::Done).await;
        assert_file(&leecher, "f", &f);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_completes_when_a_seeder_appears() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(256 << 10, 27);
        let mut seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        seeder.daemon.signal("TERM");
        seeder.daemon.wait().await;
        let flags = ["--relocate-interval", "200ms"];
        let leecher = TestPeer::start_with(&tracker.url(), &[], &flags).await;

        // Scripts keep today's answer.
        let out = leecher.peerctl(&["fetch", "--fail-fast", "f"]).await;
        assert_eq!(out.status.code(), Some(64 + Code::Unavailable as i32));
        assert_eq!(
            transfer(&leecher, "f").await.map(|t| t.state()),
            Some(TransferState::Failed)
        );

        let mut following = follow(&tracker, &leecher, "f");
        until_state(&leecher, "f", TransferState::Stalled).await;
        let listed = ok(&leecher, &["transfers"]).await;
        assert!(listed.contains("stalled"), "{listed}");
        // A script's fetch of the stalled transfer is not left waiting.
        let out = leecher.peerctl(&["fetch", "--fail-fast", "f"]).await;
        assert_eq!(out.status.code(), Some(64 + Code::Unavailable as i32));
        assert_eq!(
            transfer(&leecher, "f").await.map(|t| t.state()),
            Some(TransferState::Stalled),
            "the transfer waits on"
        );

        let again = TestPeer::start(&tracker, &[("f", &f)]).await;
        until_state(&leecher, "f", TransferState::Done).await;
        assert_file(&leecher, "f", &f);
        let exit = following.wait().await.expect("peerctl ends");
        assert!(exit.success(), "the follower saw it done: {exit}");
        drop(again);
    })
    .await;
}

/// `--on-complete CMD` runs CMD with the file's path and name; its exit
/// status is shown with the done transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_complete_runs_the_hook_with_the_path_and_name() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(64 << 10, 28);
        let _seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let tmp = tempfile::tempdir().expect("tempdir");
        let hook = tmp.path().join("hook.sh");
        let out = tmp.path().join("hook.out");
        let script = format!(
            "#!/bin/sh\necho \"$1 $2 $HIVE_FILE_NAME\" > {}\nexit 3\n",
            out.display()
        );
        std::fs::write(&hook, script).expect("hook written");
        let status = std::process::Command::new("chmod")
            .args(["+x"])
            .arg(&hook)
            .status();
        assert!(status.expect("chmod").success());
        let hook = hook.display().to_string();
        let leecher = TestPeer::start_with(&tracker.url(), &[], &["--on-complete", &hook]).await;
        ok(&leecher, &["fetch", "f"]).await;
        let t = loop {
            let t = until_state(&leecher, "f", TransferState::Done).await;
            if !t.hook.is_empty() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(t.hook.contains('3'), "the exit status is shown: {}", t.hook);
        let path = leecher.dir.join("f");
        let said = std::fs::read_to_string(&out).expect("the hook ran");
        assert_eq!(said.trim(), format!("{} f f", path.display()));
    })
    .await;
}
