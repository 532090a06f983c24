//! Whole-file downloads from a swarm (issue 3): many holders at once, files
//! at chunk boundaries, a holder whose disk rotted, and the last holder
//! going away mid-download, and a holder behind a slow link (docs/RELIABILITY.md: MP-1
//! with a real peer, CP-5, CP-6).
//!
//! "Mid-download" is made deterministic, never left to timing: the holders
//! that must not finish a download yet are in-process holders from
//! `common::evil` whose answers wait behind a gate the test opens.

mod common;

use std::time::{Duration, Instant};

use common::{
    download::{self, fetch, fetch_whole, status},
    evil::EvilPeer,
    *,
};
use tonic::Code;

/// Sizes around the chunk size C = 1 KiB, and one file of 1,025 chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_at_chunk_boundaries_come_from_every_holder() {
    within(120, async {
        const C: usize = 1024;
        let tracker = TestTracker::start().await;
        let files: Vec<(String, Vec<u8>)> = [0, 1, C - 1, C, C + 1, 1024 * C + 5]
            .iter()
            .enumerate()
            .map(|(i, &len)| (format!("size-{len}"), data(len, 100 + i as u64)))
            .collect();
        let shared: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let mut seeders = Vec::new();
        for _ in 0..3 {
            seeders.push(TestPeer::start_with(&tracker.url(), &shared, &["--chunk-size", "1KiB"]).await);
        }
        let leecher = TestPeer::start(&tracker, &[]).await;

        for (name, bytes) in &files {
            let before: Vec<u64> = futures_served(&seeders).await;
            let started = Instant::now();
            let done = fetch_whole(leecher.control, name)
                .await
                .unwrap_or_else(|e| panic!("fetch {name}: {e}"));
            let elapsed = started.elapsed();
            let got = std::fs::read(leecher.dir.join(name)).expect("the downloaded file");
            assert!(got == *bytes, "{name}: the bytes differ");
            assert_eq!(hex(&done.digest), blake3::hash(bytes).to_hex().as_str());
            let chunks = bytes.len().div_ceil(C) as u32;
            assert_eq!(done.chunks_fetched, chunks, "{name}");
            assert!(done.bytes_received >= bytes.len() as u64, "{name}");
            let after = futures_served(&seeders).await;
            let served: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            assert!(
                served.iter().sum::<u64>() >= bytes.len() as u64,
                "{name}: {served:?}"
            );
            if chunks >= 100 {
                assert!(
                    served.iter().all(|&s| s > 0),
                    "every holder served part of {name}: {served:?}"
                );
                eprintln!(
                    "FIGURE swarm: {name} ({chunks} chunks of 1 KiB) from 3 holders in {elapsed:?}, bytes served per holder {served:?}, received {} (duplicates {})",
                    done.bytes_received,
                    done.bytes_received - bytes.len() as u64
                );
            }
        }
        // The leecher now serves what it fetched.
        let (name, bytes) = &files[5];
        assert_eq!(
            get_chunk(leecher.listen, name, 1025).await.unwrap(),
            &bytes[1024 * C..]
        );
    })
    .await;
}

async fn futures_served(peers: &[TestPeer]) -> Vec<u64> {
    let mut out = Vec::new();
    for p in peers {
        out.push(download::bytes_served(p).await);
    }
    out
}

/// A real seeder whose file rotted on disk without its size, mtime or
/// inode changing (so it does not re-verify before serving): it serves bad
/// chunks, the leecher catches them, drops it, and finishes from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_serving_rotten_bytes_is_struck_and_dropped() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(256 * 1024, 7);
        let good_a = TestPeer::start(&tracker, &[("f", &f)]).await;
        let good_b = TestPeer::start(&tracker, &[("f", &f)]).await;
        let rotten = TestPeer::start(&tracker, &[("f", &f)]).await;
        rot(&rotten.dir.join("f"), 1024);

        let leecher = TestPeer::start(&tracker, &[]).await;
        let done = fetch_whole(leecher.control, "f").await.expect("fetch");
        let got = std::fs::read(leecher.dir.join("f")).unwrap();
        assert!(got == f, "the file is right despite the rotten holder");
        assert_eq!(done.holders_banned, 1);
        let struck = leecher.daemon.log().matches("bad chunk from holder").count();
        assert!(struck >= 1);
        let bad_served = download::bytes_served(&rotten).await;
        // At most what was in flight to it (2 requests to a new holder; 4
        // allowed) when the first bad chunk came back; nothing after the ban.
        assert!(bad_served <= 4 * 1024, "{bad_served} bytes from the banned holder");
        let good = download::bytes_served(&good_a).await + download::bytes_served(&good_b).await;
        assert!(good >= f.len() as u64);
        eprintln!(
            "FIGURE MP-1 (real holder, rotten disk): {} bad chunks served, {struck} caught, kept 0 (file correct); holder banned, then asked nothing more; extra bytes {}",
            bad_served / 1024,
            done.bytes_received - f.len() as u64
        );
    })
    .await;
}

/// Flips a bit in every `chunk`-byte chunk of `path` in place, then puts
/// the modification time back: size, inode and mtime all look unchanged.
fn rot(path: &std::path::Path, chunk: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mtime = file.metadata().unwrap().modified().unwrap();
    let len = file.metadata().unwrap().len() as usize;
    for at in (0..len).step_by(chunk) {
        let mut b = [0u8];
        file.read_exact_at(&mut b, (at + 17) as u64).unwrap();
        b[0] ^= 0x10;
        file.write_all_at(&b, (at + 17) as u64).unwrap();
    }
    file.sync_all().unwrap();
    file.set_modified(mtime).unwrap();
}

/// CP-5 mid-download: the only holder leaves after 20 of 64 chunks. The
/// download ends UNAVAILABLE without hanging, the verified chunks stay
/// (kept, served, resumable), and once a holder is back a new fetch moves
/// only the missing bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_holder_leaving_keeps_the_part_for_a_later_fetch() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(64 * 1024, 8);
        let only = EvilPeer::builder("f", &f).gated().start(&tracker).await;
        let leecher = TestPeer::start(&tracker, &[]).await;
        let mut run = download::fetch_fail_fast(leecher.control, "f")
            .await
            .expect("fetch");
        only.gate().release(20);
        run.until_chunks(20).await.expect("20 chunks");

        only.leave().await;
        let left = Instant::now();
        let err = within(30, run.done()).await.unwrap_err();
        let time_to_error = left.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
        assert!(!leecher.dir.join("f").exists(), "no final file");
        assert!(download::part_file(&leecher.dir, "f").is_some(), "part kept");
        let st = status(leecher.control).await;
        let file = st.files.iter().find(|x| x.name == "f").expect("listed");
        assert_eq!(file.chunks_held, 20);
        assert_eq!(
            file.state,
            hive::pb::control::FileState::Partial as i32,
            "kept as a partial file, not downloading"
        );
        let held = only.requests().into_iter().find(|s| only.completed_of(s.chunk) == 1);
        let held = held.expect("a chunk it sent").chunk;
        assert_eq!(
            get_chunk(leecher.listen, "f", held).await.unwrap(),
            &f[(held as usize - 1) * 1024..held as usize * 1024],
            "verified chunks are still served"
        );

        let seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let mut again = fetch(leecher.control, "f").await.expect("fetch again");
        let done = within(60, again.done()).await.expect("completes");
        let (_, started) = again.started.clone().expect("started");
        assert_eq!(started.chunks_present, 20, "the kept chunks count");
        assert_eq!(done.chunks_fetched, 44);
        assert_eq!(done.bytes_received, 44 * 1024, "only the missing bytes move");
        assert_eq!(download::bytes_served(&seeder).await, 44 * 1024);
        assert!(std::fs::read(leecher.dir.join("f")).unwrap() == f);
        eprintln!(
            "FIGURE CP-5: last holder left at 20/64 chunks: UNAVAILABLE after {time_to_error:?}, part kept (20 chunks, still served); resumed with another holder: {} of {} bytes fetched",
            done.bytes_received,
            f.len()
        );
    })
    .await;
}

/// A file downloaded in a layout other than this peer's default (the swarm
/// chose 16 KiB chunks) is shared in that layout after a restart, and the
/// tracker refuses the same content offered in other chunks, leaving
/// itself unchanged (it used to store the offered chunk set against the
/// registered layout and panic indexing past the file's chunk counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_downloader_seeds_in_the_swarms_layout() {
    within(60, async {
        use hive::pb::tracker::{RegisterRequest, SharedFile};
        use hive::pb::types::ChunkRange;
        let tracker = TestTracker::start().await;
        let f = data(64 * 1024, 9);
        let _holder = EvilPeer::builder("f", &f)
            .chunk_size(16 * 1024)
            .start(&tracker)
            .await;
        let before = snapshot(&tracker).await;
        for chunks in [1..=64, 60..=64] {
            let err = tracker
                .client()
                .await
                .register(RegisterRequest {
                    files: vec![SharedFile {
                        manifest: Some(manifest_with("f", &f, Some(1024))),
                        chunks: vec![ChunkRange {
                            first: *chunks.start(),
                            last: *chunks.end(),
                        }],
                    }],
                    port: 4000,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        }
        // A new name offered twice in one call, cut two ways.
        let g = data(8 * 1024, 10);
        let twice = |chunk_size: u32| SharedFile {
            manifest: Some(manifest_with("g", &g, Some(chunk_size))),
            chunks: vec![ChunkRange {
                first: 1,
                last: 8 * 1024 / chunk_size,
            }],
        };
        let err = tracker
            .client()
            .await
            .register(RegisterRequest {
                files: vec![twice(1024), twice(4096)],
                port: 4000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert_eq!(snapshot(&tracker).await, before, "nothing changed");

        let leecher = TestPeer::start(&tracker, &[]).await;
        fetch_whole(leecher.control, "f").await.expect("fetch");
        assert_eq!(
            download::listed_chunks(&tracker, "f", leecher.listen).await,
            4
        );
        let leecher = leecher.restart_hard(&[]).await;
        leecher.registered().await;
        assert_eq!(
            download::listed_chunks(&tracker, "f", leecher.listen).await,
            4,
            "registered again in the swarm's 4 chunks of 16 KiB"
        );
        assert_eq!(
            get_chunk(leecher.listen, "f", 4).await.unwrap(),
            &f[48 * 1024..]
        );
    })
    .await;
}

/// A copy of a file hashed in another chunk size than the swarm's (shared
/// with other flags, or after its hash cache was lost) is recognised by its
/// whole-file digest, hashed again in the swarm's chunk size, and seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_hashed_in_another_chunk_size_joins_the_swarm() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(100_000, 21);
        // The first registration fixes 4 KiB chunks (25 of them)...
        let _first =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--chunk-size", "4KiB"]).await;
        // ...the second peer hashes its copy in the adaptive 1 KiB.
        let second = TestPeer::start(&tracker, &[("f", &f)]).await;
        let adopted = Instant::now();
        loop {
            let found = tracker
                .client()
                .await
                .locate(hive::pb::tracker::LocateRequest {
                    name: "f".into(),
                    ..Default::default()
                })
                .await
                .expect("locate")
                .into_inner();
            if found.holders.len() == 2 && found.holders.iter().all(|h| h.chunk_count == 25) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            get_chunk(second.listen, "f", 25).await.unwrap(),
            &f[24 * 4096..]
        );
        assert!(
            second
                .daemon
                .log()
                .contains("shared in the swarm's chunk size")
        );
        eprintln!(
            "FIGURE swarm: a copy in another chunk size seeds {:?} after start",
            adopted.elapsed()
        );
    })
    .await;
}

/// CP-6 without netem (this kernel has no `sch_netem`): two in-process
/// holders behind emulated links, a fast one (20 ms, 64 Mbit/s) and a slow
/// one (200 ms +- 50 ms, 1 Mbit/s, shared by all its streams). The
/// scheduler must not wait for the slow holder: it gets a small share, and
/// the end-game re-asks the fast one for the chunks still coming slowly.
/// Each round times a fetch from both against one from the fast holder
/// alone, back to back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_holder_gets_little_and_costs_little() {
    use hive::pb::control::FetchRequest;
    within(120, async {
        const KIB: usize = 1 << 10;
        const ROUNDS: usize = 3;
        let tracker = TestTracker::start().await;
        let f = data(8 << 20, 31);
        let holder = |latency_ms, bits| {
            EvilPeer::builder("f", &f)
                .chunk_size(64 * KIB as u32)
                .link(Duration::from_millis(latency_ms), bits)
        };
        let fast = holder(20, 64_000_000).start(&tracker).await;
        let slow = holder(200, 1_000_000).start(&tracker).await;

        let (mut alone, mut both) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let leecher = TestPeer::start(&tracker, &[]).await;
            let req = FetchRequest {
                name: "f".into(),
                from: fast.addr.to_string(),
                ..Default::default()
            };
            let started = Instant::now();
            let mut run = download::fetch_with(leecher.control, req).await.expect("fetch");
            run.done().await.expect("from the fast holder alone");
            alone.push(started.elapsed());
            // Gone from the swarm, so that only the two links serve.
            assert!(leecher.peerctl(&["leave"]).await.status.success());

            let leecher = TestPeer::start(&tracker, &[]).await;
            let started = Instant::now();
            let done = fetch_whole(leecher.control, "f").await.expect("fetch");
            both.push(started.elapsed());
            assert_eq!(std::fs::read(leecher.dir.join("f")).unwrap(), f);
            assert_eq!(done.holders_banned, 0, "slowness is not malice");
            assert!(leecher.peerctl(&["leave"]).await.status.success());
        }
        let total = (ROUNDS * f.len()) as u64;
        let share = slow.bytes_sent() as f64 / total as f64;
        assert!(share < 0.10, "{:.1}% came over the slow link", share * 100.0);
        let (alone_p50, both_p50) = (
            download::percentile(&mut alone, 50),
            download::percentile(&mut both, 50),
        );
        // One 64 KiB chunk over the slow link takes 0.7 s: waiting for the
        // slow holder at the end would show.
        assert!(
            both_p50 < alone_p50 + Duration::from_millis(400),
            "{both_p50:?} with the slow holder vs {alone_p50:?} without it"
        );
        eprintln!(
            "FIGURE CP-6 (emulated links, no netem: fast 20 ms 64 Mbit/s, slow 200 +- 50 ms 1 Mbit/s): share of bytes from the slow holder {:.2}% ({} of {total}); {} requests to it, {} answered in full, {} abandoned by the leecher; fetch p50 {both_p50:?} with both vs {alone_p50:?} from the fast holder alone ({ROUNDS} rounds, interleaved)",
            share * 100.0,
            slow.bytes_sent(),
            slow.request_count(),
            slow.completed(),
            slow.abandoned(),
        );
    })
    .await;
}

/// A part file left from a download in another chunk size (the tracker has
/// since come to know the file in 4 KiB chunks; this peer had fetched 1 KiB
/// ones) is counted again in the swarm's chunk size, never taken at its old
/// chunk numbers: the verified bytes are kept, the rest fetched, and the
/// file is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_file_from_another_chunk_size_is_counted_again() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(100_000, 22);
        let _seeder =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--chunk-size", "4KiB"]).await;
        // 1 KiB chunks 1-40 hold the first 40 KiB: 4 KiB chunks 1-10.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("share");
        std::fs::create_dir_all(&dir).unwrap();
        let old = download::manifest_of("f", &f, Some(1024));
        download::write_partial(
            &dir,
            &old,
            &f,
            &[1..=40],
            hive_peer::fetch::partfile::Mode::Whole,
            &[1..=40],
        );
        let leecher = TestPeer::spawn(&tracker.url(), tmp, dir, &[]).await;
        leecher.registered().await;

        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        let done = run.done().await.expect("the download completes");
        assert_eq!(std::fs::read(leecher.dir.join("f")).unwrap(), f);
        let (_, started) = run.started.expect("started");
        assert_eq!(started.chunk_count, 25, "the swarm's 4 KiB chunks");
        assert_eq!(
            started.chunks_present, 10,
            "40 KiB verified again in 4 KiB chunks"
        );
        assert_eq!(done.chunks_fetched, 15);
    })
    .await;
}
