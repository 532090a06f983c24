//! Crashes and restarts (docs/RELIABILITY.md §C: CR-1, CR-2, CR-4, CR-5, CR-6, and
//! CP-4's stalled holder): a download survives its own daemon's SIGKILL
//! without fetching a verified chunk twice, a holder dying with requests in
//! flight costs only a reassignment, finishing a file can be interrupted at
//! any step without ever leaving a torn final file, garbage state costs
//! time but never correctness, and SIGTERM leaves, drains and resumes.
//!
//! "Mid-download" is built, not timed: the real seeders hold only part of
//! the file (a part file written by the peer's own code, as if fetched a
//! chunk at a time), and the rest is held by an in-process holder whose
//! answers wait behind a gate the test opens. A download therefore stops
//! exactly where the test wants it and cannot finish before it is let go.
//!
//! `HIVE_LONG_TESTS=1` runs more random SIGKILLs around completion (CR-4).

mod common;

use std::{
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use common::{
    download::{
        self, bytes_in, fetch, fetch_whole, manifest_of, part_file, partial_peer, saved_states,
        status, write_partial,
    },
    evil::EvilPeer,
    *,
};
use hive_peer::fetch::partfile::Mode;

/// 64 chunks of 16 KiB.
const CHUNK: u32 = 16 * 1024;
const CHUNKS: u32 = 64;

fn file(seed: u64) -> Vec<u8> {
    data((CHUNK * CHUNKS) as usize, seed)
}

/// Two real peers holding `shared`, and a gated in-process holder of the
/// rest, which the download cannot do without.
async fn split_swarm(
    tracker: &TestTracker,
    f: &[u8],
    shared: RangeInclusive<u32>,
) -> (TestPeer, TestPeer, EvilPeer) {
    let a = partial_peer(
        tracker,
        "f",
        f,
        Some(CHUNK),
        std::slice::from_ref(&shared),
        &[],
    )
    .await;
    let b = partial_peer(
        tracker,
        "f",
        f,
        Some(CHUNK),
        std::slice::from_ref(&shared),
        &[],
    )
    .await;
    let rest = EvilPeer::builder("f", f)
        .chunk_size(CHUNK)
        .claims(&[*shared.end() + 1..=CHUNKS])
        .gated()
        .start(tracker)
        .await;
    (a, b, rest)
}

fn assert_file(peer: &TestPeer, name: &str, want: &[u8]) {
    let got = std::fs::read(peer.dir.join(name)).expect("the downloaded file");
    assert!(got == want, "{name}: the bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr1_a_killed_downloader_resumes_without_refetching() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let f = file(11);
        let m = manifest_of("f", &f, Some(CHUNK));
        let half = 1..=CHUNKS / 2;
        let (a, b, rest) = split_swarm(&tracker, &f, half.clone()).await;
        let mut leecher = TestPeer::start(&tracker, &[]).await;

        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        run.until_chunks(CHUNKS / 2).await.expect("half the chunks");
        let half_bytes = bytes_in(&m, &[half]);
        let served = download::bytes_served(&a).await + download::bytes_served(&b).await;
        assert_eq!(served, half_bytes, "each chunk fetched once so far");

        leecher.daemon.kill().await;
        drop(run);
        assert!(!leecher.dir.join("f").exists(), "no final file before completion");
        assert!(part_file(&leecher.dir, "f").is_some());

        // The daemon resumes by itself; the held-back holder sees it ask.
        let asked_before = rest.request_count();
        let restarted = Instant::now();
        leecher = leecher.restart_hard(&[]).await;
        within(30, rest.until_requests(asked_before + 1)).await;
        let resume_time = rest.requests()[asked_before].at - restarted;

        rest.gate().open();
        let mut follow = fetch(leecher.control, "f").await.expect("follow");
        let done = within(60, follow.done()).await.expect("completes");
        assert_file(&leecher, "f", &f);
        let (_, started) = follow.started.expect("started");
        assert_eq!(started.chunks_present, CHUNKS / 2, "the verified half was kept");
        assert_eq!(done.bytes_received, f.len() as u64 - half_bytes);
        let served_after = download::bytes_served(&a).await + download::bytes_served(&b).await;
        let again_from_rest: u32 = rest
            .completed_by_chunk()
            .values()
            .map(|n| n.saturating_sub(1))
            .sum();
        let refetched = served_after - half_bytes + u64::from(again_from_rest * CHUNK);
        assert_eq!(refetched, 0, "no verified chunk fetched twice");
        eprintln!(
            "FIGURE CR-1: SIGKILL at {}/{CHUNKS} chunks (50%); bytes re-downloaded {refetched} / {} total; resume time {resume_time:?} (restart -> first request of the resumed download)",
            CHUNKS / 2,
            f.len()
        );
    })
    .await;
}

/// The stuck holder `a` gets two requests it can never answer; the other
/// holder serves everything else it can. Returns once that is so.
async fn stuck_on(
    run: &mut download::Fetching,
    other: &TestPeer,
    shared: u32,
    stuck: u32,
) -> Instant {
    run.until_chunks(shared - stuck).await.expect("progress");
    let served = download::bytes_served(other).await;
    assert_eq!(
        served,
        u64::from((shared - stuck) * CHUNK),
        "the frozen holder's chunks are still waiting on it"
    );
    Instant::now()
}

/// Waits until `peer` has served `bytes`.
async fn until_served(peer: &TestPeer, bytes: u64) -> Instant {
    loop {
        if download::bytes_served(peer).await >= bytes {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr2_a_holder_killed_with_requests_in_flight_is_failed_over() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = file(12);
        let shared = 48;
        let (mut dying, other, rest) = split_swarm(&tracker, &f, 1..=shared).await;
        let leecher = TestPeer::start_with(
            &tracker.url(),
            &[],
            &["--per-holder", "2", "--chunk-timeout", "60s"],
        )
        .await;

        // Frozen, the holder takes two requests and answers neither; the
        // other holder cannot take them over while chunks are still pending.
        dying.daemon.signal("STOP");
        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        stuck_on(&mut run, &other, shared, 2).await;

        dying.daemon.kill().await;
        let killed = Instant::now();
        let failed_over = until_served(&other, u64::from(shared * CHUNK)).await;
        run.until_chunks(shared).await.expect("the two chunks");
        let by_progress = run.progress.last().expect("progress").0;

        rest.gate().open();
        let done = within(60, run.done()).await.expect("completes");
        assert_file(&leecher, "f", &f);
        assert_eq!(done.holders_banned, 0, "a crash is not a strike");
        eprintln!(
            "FIGURE CR-2: holder SIGKILLed with 2 requests in flight; both served by another holder {:?} after the kill ({:?} by the 100 ms progress events)",
            failed_over - killed,
            by_progress.saturating_duration_since(killed)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp4_a_frozen_holder_is_abandoned_after_the_chunk_deadline() {
    within(90, async {
        let deadline = Duration::from_millis(1500);
        let tracker = TestTracker::start().await;
        let f = file(13);
        let shared = 48;
        let (frozen, other, rest) = split_swarm(&tracker, &f, 1..=shared).await;
        let leecher = TestPeer::start_with(
            &tracker.url(),
            &[],
            &["--per-holder", "2", "--chunk-timeout", "1500ms"],
        )
        .await;

        frozen.daemon.signal("STOP");
        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        let sent = run.sent;
        let failed_over = until_served(&other, u64::from(shared * CHUNK)).await - sent;
        assert!(
            failed_over >= deadline,
            "re-asked after {failed_over:?}, before the {deadline:?} deadline"
        );
        assert!(
            failed_over < deadline + Duration::from_secs(3),
            "re-asked only after {failed_over:?}"
        );
        rest.gate().open();
        within(60, run.done()).await.expect("completes");
        assert_file(&leecher, "f", &f);
        frozen.daemon.signal("CONT");
        eprintln!(
            "FIGURE CP-4 (frozen holder, SIGSTOP): its 2 chunks re-fetched elsewhere {failed_over:?} after the fetch began (chunk-timeout {deadline:?})"
        );
    })
    .await;
}

/// The steps of finishing a download, as hive takes them: every chunk
/// written (and verified on arrival); the hash cache told the file's
/// digests; fsync; rename into place; fsync the directory; the resume
/// state removed; the tracker told. Each variant is what the share
/// directory holds if the daemon dies at that step.
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    /// Chunks being written: half the file, the next chunk torn, the
    /// resume state claiming the torn one too.
    WritePart,
    /// Every chunk written and remembered, the fsync not done.
    Fsync,
    /// Renamed into place; the directory not fsynced, the state still there.
    Rename,
    /// The state removed; the tracker not yet told.
    Register,
}

fn leave_on_disk(point: CrashPoint, dir: &std::path::Path, f: &[u8]) {
    let m = manifest_of("f", f, Some(CHUNK));
    let all = [1..=CHUNKS];
    if let CrashPoint::WritePart = point {
        let half = [1..=CHUNKS / 2];
        let part = write_partial(dir, &m, f, &half, Mode::Whole, &[1..=CHUNKS / 2 + 1]);
        use std::os::unix::fs::FileExt;
        let torn = (CHUNKS / 2 * CHUNK) as usize;
        let file = std::fs::OpenOptions::new().write(true).open(part).unwrap();
        file.write_all_at(&f[torn..torn + CHUNK as usize / 2], torn as u64)
            .unwrap();
        return;
    }
    let part = write_partial(dir, &m, f, &all, Mode::Whole, &all);
    let dest = dir.canonicalize().unwrap().join("f");
    let stamp = hive_peer::holdings::Stamp::of(&std::fs::metadata(&part).unwrap());
    let mut cache = hive_peer::scan::HashCache::load(&download::state_dir(dir));
    cache.store(&dest, stamp, &m);
    cache.save().unwrap();
    if let CrashPoint::Fsync = point {
        return;
    }
    std::fs::rename(&part, &dest).unwrap();
    if let CrashPoint::Register = point {
        std::fs::remove_file(part.with_extension("state")).unwrap();
    }
}

/// A final file, if there is one, must be the whole verified file.
fn never_torn(dir: &std::path::Path, f: &[u8]) -> bool {
    match std::fs::read(dir.join("f")) {
        Ok(got) => {
            assert!(got == f, "a torn final file");
            true
        }
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr4_restarting_at_each_step_of_finishing_never_shows_a_torn_file() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let f = file(14);
        let seeder =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--chunk-size", "16KiB"]).await;
        let points = [
            CrashPoint::WritePart,
            CrashPoint::Fsync,
            CrashPoint::Rename,
            CrashPoint::Register,
        ];
        for point in points {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("share");
            std::fs::create_dir_all(&dir).unwrap();
            leave_on_disk(point, &dir, &f);
            let served_before = download::bytes_served(&seeder).await;
            let peer = TestPeer::spawn(&tracker.url(), tmp, dir.clone(), &[]).await;
            peer.registered().await;
            never_torn(&dir, &f);
            let done = within(60, fetch_whole(peer.control, "f"))
                .await
                .unwrap_or_else(|e| panic!("{point:?}: {e}"));
            assert!(never_torn(&dir, &f), "{point:?}: complete in the end");
            let moved = download::bytes_served(&seeder).await - served_before;
            match point {
                // The torn chunk and the missing half are fetched again.
                CrashPoint::WritePart => assert_eq!(moved, u64::from(CHUNKS / 2 * CHUNK)),
                // Complete on disk: finished without the network.
                _ => assert_eq!(moved, 0, "{point:?}: {done:?}"),
            }
            if matches!(point, CrashPoint::Rename | CrashPoint::Register) {
                assert!(done.already_present, "{point:?}: seeding, not downloading");
            }
            assert!(saved_states(&dir).is_empty(), "{point:?}: no stale state");
            assert!(part_file(&dir, "f").is_none(), "{point:?}: no stale part");
            assert_eq!(
                download::listed_chunks(&tracker, "f", peer.listen).await,
                CHUNKS,
                "{point:?}: registered in full, in the swarm's chunks"
            );
        }
        eprintln!(
            "FIGURE CR-4 (recreated): {} crash points (write part, fsync, rename/fsync dir, register) x 1 restart: torn files 0, each resumed or seeding in full",
            points.len()
        );
    })
    .await;
}

/// Real downloads SIGKILLed at random moments around completion: the last
/// chunk is held back until everything else is verified, then let go, and
/// the daemon is killed a random few milliseconds later, landing anywhere
/// from before the last write to after the tracker was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr4_sigkill_around_completion_never_leaves_a_torn_file() {
    within(300, async {
        let runs: u32 = if std::env::var_os("HIVE_LONG_TESTS").is_some() {
            100
        } else {
            16
        };
        let tracker = TestTracker::start().await;
        let f = file(17);
        let mut landed = std::collections::BTreeMap::<&str, u32>::new();
        let mut window = Duration::from_millis(15);
        let mut torn = 0;
        for run in 0..runs {
            let source = EvilPeer::builder("f", &f)
                .chunk_size(CHUNK)
                .gated()
                .start(&tracker)
                .await;
            // Every other run re-reads the file before the rename.
            let flags: &[&str] = if run % 2 == 1 {
                &["--verify-on-finish"]
            } else {
                &[]
            };
            let mut peer = TestPeer::start_with(&tracker.url(), &[], flags).await;
            let mut run_ = fetch(peer.control, "f").await.expect("fetch");
            source.gate().release(CHUNKS as usize - 1);
            run_.until_chunks(CHUNKS - 1).await.expect("all but one");
            source.gate().release(1);
            let let_go = Instant::now();
            if run == 0 {
                // Calibrate: how long the last chunk and the finish take.
                within(30, run_.done()).await.expect("done");
                window = let_go.elapsed().mul_f64(1.5).max(Duration::from_millis(2));
            } else {
                tokio::time::sleep(window.mul_f64(f64::from(run) / f64::from(runs))).await;
                peer.daemon.kill().await;
            }
            drop(run_);
            let dir = peer.dir.clone();
            let final_file = never_torn(&dir, &f);
            let part = part_file(&dir, "f").is_some();
            let state = !saved_states(&dir).is_empty();
            let spot = match (final_file, part, state) {
                (false, _, _) => "before the rename",
                (true, _, true) => "after the rename, state not yet removed",
                (true, _, false) => "after finishing",
            };
            *landed.entry(spot).or_default() += 1;
            source.gate().open();
            peer = peer.restart_hard(flags).await;
            peer.registered().await;
            within(60, fetch_whole(peer.control, "f"))
                .await
                .unwrap_or_else(|e| panic!("run {run}, killed {spot}: {e}"));
            if !never_torn(&peer.dir, &f) {
                torn += 1;
            }
            assert_eq!(
                download::listed_chunks(&tracker, "f", peer.listen).await,
                CHUNKS,
                "run {run}, killed {spot}: seeding in full in the swarm's chunks"
            );
            // Out of the next run's swarm.
            peer.peerctl(&["leave"]).await;
            source.leave().await;
        }
        assert_eq!(torn, 0);
        eprintln!(
            "FIGURE CR-4 (SIGKILL): {runs} downloads killed 0-{window:?} after their last chunk was let go (half with --verify-on-finish); landed: {landed:?}; torn files 0"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr5_garbage_state_and_random_part_are_reverified() {
    within(180, async {
        let tracker = TestTracker::start().await;
        // 32 MiB in 32 KiB chunks, so re-verifying takes measurable time.
        let chunk = 32 * 1024;
        let f = data(32 << 20, 15);
        let m = manifest_of("f", &f, Some(chunk));
        let seeder =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--chunk-size", "32KiB"]).await;
        let mut report = Vec::new();

        type Spoil = fn(&std::path::Path, &std::path::Path);
        let cases: &[(&str, Spoil)] = &[
            ("garbage state", |state, _| {
                std::fs::write(state, data(300, 1)).unwrap()
            }),
            ("truncated state, short part", |state, part| {
                let text = std::fs::read(state).unwrap();
                std::fs::write(state, &text[..text.len() / 2]).unwrap();
                let len = std::fs::metadata(part).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(part)
                    .unwrap()
                    .set_len(len / 3)
                    .unwrap();
            }),
            ("state claiming every chunk", |state, _| {
                let mut s: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
                let n = s["chunk_digests"].as_array().unwrap().len();
                s["written"] = serde_json::json!([[1, n]]);
                std::fs::write(state, serde_json::to_vec(&s).unwrap()).unwrap();
            }),
            ("state with a forged manifest", |state, _| {
                let mut s: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
                s["chunk_digests"][0] = serde_json::json!("00".repeat(32));
                std::fs::write(state, serde_json::to_vec(&s).unwrap()).unwrap();
            }),
        ];
        for (what, spoil) in cases {
            // A part file of random bytes where every third chunk is right.
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("share");
            std::fs::create_dir_all(&dir).unwrap();
            let part = write_partial(&dir, &m, &f, &[], Mode::Whole, &[]);
            std::fs::write(&part, data(f.len(), 99)).unwrap();
            let good: Vec<RangeInclusive<u32>> =
                (1..=m.chunk_count()).filter(|n| n % 3 == 0).map(|n| n..=n).collect();
            {
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
                for r in &good {
                    let n = *r.start();
                    let at = u64::from(n - 1) * u64::from(chunk);
                    file.write_all_at(download::chunk_bytes(&m, &f, n), at).unwrap();
                }
            }
            let state = part.with_extension("state");
            spoil(&state, &part);
            let truncated_part = what.contains("short part");
            let intact = if truncated_part {
                // Only the good chunks within the first third survive.
                let keep = f.len() as u64 / 3;
                good.iter()
                    .filter(|r| u64::from(*r.start()) * u64::from(chunk) <= keep)
                    .cloned()
                    .collect::<Vec<_>>()
            } else {
                good.clone()
            };

            let served_before = download::bytes_served(&seeder).await;
            let spawned = Instant::now();
            let peer = TestPeer::spawn(&tracker.url(), tmp, dir.clone(), &[]).await;
            peer.registered().await;
            let start_up = spawned.elapsed();
            let mut run = fetch(peer.control, "f").await.expect("fetch");
            within(120, run.done()).await.expect("completes");
            assert_file(&peer, "f", &f);
            let kept = bytes_in(&m, &intact);
            let refetched = download::bytes_served(&seeder).await - served_before;
            assert_eq!(
                refetched,
                f.len() as u64 - kept,
                "{what}: exactly the bad chunks are fetched again"
            );
            // A usable state resumes the download at start-up (re-verified
            // then); any other is ignored and the fetch re-verifies.
            let resumed = *what == "state claiming every chunk";
            let verify_time = if resumed {
                start_up
            } else {
                let (started_at, started) = run.started.clone().expect("started");
                assert_eq!(started.chunks_present as usize, intact.len(), "{what}");
                started_at - run.sent
            };
            report.push(format!(
                "{what}: {}, kept {}/{} chunks, re-fetched the other {}, re-verified {} MiB at {:.0} MB/s",
                if resumed { "resumed at start" } else { "state ignored" },
                intact.len(),
                m.chunk_count(),
                m.chunk_count() as usize - intact.len(),
                f.len() >> 20,
                f.len() as f64 / 1e6 / verify_time.as_secs_f64()
            ));
        }
        eprintln!("FIGURE CR-5: {}", report.join("; "));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr6_sigterm_leaves_drains_and_the_download_resumes() {
    within(90, async {
        let tracker = TestTracker::start().await;
        // 1 MiB chunks: four stream messages each, more than a reader that
        // does not read lets through.
        let chunk = 1 << 20;
        let f = data(8 << 20, 16);
        let rest = EvilPeer::builder("f", &f)
            .chunk_size(chunk)
            .gated()
            .start(&tracker)
            .await;
        let grace = Duration::from_secs(1);
        let mut leecher = TestPeer::start_with(&tracker.url(), &[], &["--grace", "1s"]).await;
        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        rest.gate().release(3);
        run.until_chunks(3).await.expect("three chunks");

        // Someone downloads a chunk from the leecher and stops reading.
        let held = rest.requests().into_iter().find(|s| rest.completed_of(s.chunk) == 1);
        let held = held.expect("a chunk it sent").chunk;
        let reader = tonic::transport::Endpoint::from_shared(format!("http://{}", leecher.listen))
            .unwrap()
            .initial_stream_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let _stalled = hive::pb::peer::peer_client::PeerClient::new(reader)
            .get_chunk(hive::pb::peer::GetChunkRequest {
                name: "f".into(),
                chunk: held,
                ..Default::default()
            })
            .await
            .expect("the upload starts")
            .into_inner();
        while status(leecher.control).await.uploads_active == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        leecher.daemon.signal("TERM");
        let termed = Instant::now();
        let exit = within(20, leecher.daemon.wait()).await;
        let shutdown = termed.elapsed();
        assert!(exit.success(), "{exit}");
        // The grace period; then the connections still carrying uploads are
        // closed and the daemon exits (slack for a loaded machine).
        assert!(
            shutdown < grace + Duration::from_secs(1),
            "stopped after {shutdown:?} (grace {grace:?})"
        );
        assert!(leecher.daemon.log().contains("left the tracker"));
        assert!(
            !download::is_listed(&tracker, "f", leecher.listen).await,
            "Leave reached the tracker"
        );
        let states = saved_states(&leecher.dir);
        assert_eq!(states.len(), 1);
        assert!(!states[0].paused, "stopped by the daemon: resumes on restart");
        assert_eq!(states[0].written.iter().map(|(a, b)| b - a + 1).sum::<u32>(), 3);
        drop(_stalled);

        leecher = leecher.restart_hard(&[]).await;
        rest.gate().open();
        let mut follow = fetch(leecher.control, "f").await.expect("follow");
        let done = within(60, follow.done()).await.expect("completes");
        assert_file(&leecher, "f", &f);
        assert_eq!(follow.started.expect("started").1.chunks_present, 3);
        assert_eq!(done.bytes_received, 5 * u64::from(chunk));
        assert!(
            rest.completed_by_chunk().values().all(|&n| n == 1),
            "no chunk fetched twice"
        );
        eprintln!(
            "FIGURE CR-6: SIGTERM while serving (1 stalled upload) and fetching (3/8 chunks): Leave observed, exit 0 after {shutdown:?} (grace {grace:?}), resume state flushed, resumed with 5/8 chunks to fetch"
        );
    })
    .await;
}
