//! Malicious holders (docs/RELIABILITY.md §B, MP-1 to MP-5, and a slow-loris holder),
//! played by the in-process evil peer of `common::evil` against a real
//! downloading daemon.
//!
//! Every bad chunk must be caught by its digest (or size, or message
//! limit), never written to the part file as valid, never served and never
//! announced; the holder is struck and dropped (at once when someone else
//! has the chunk, after three strikes when it is the only source), and the
//! download still ends with the right file. The leechers here ask each
//! holder for one chunk at a time (`--per-holder 1`) where a count of
//! requests must be exact; the honest holder is gated where the test must
//! look at the leecher before any good data reaches it.

mod common;

use std::time::{Duration, Instant};

use common::{
    download::{
        fetch, fetch_fail_fast, fetch_whole, listed_chunks, part_file, peak_rss_kib, until_logged,
    },
    evil::{EvilPeer, Fault},
    *,
};
use tonic::Code;

const STRUCK: &str = "bad chunk from holder";
const BANNED: &str = "holder banned from this download";

/// A leecher asking each holder for one chunk at a time, with a deadline
/// long enough that only the test decides when a held answer comes.
async fn one_at_a_time(tracker: &TestTracker) -> TestPeer {
    TestPeer::start_with(
        &tracker.url(),
        &[],
        &["--per-holder", "1", "--chunk-timeout", "60s"],
    )
    .await
}

fn all_zero(path: &std::path::Path) -> bool {
    std::fs::read(path)
        .expect("read the part file")
        .iter()
        .all(|&b| b == 0)
}

fn check_file(peer: &TestPeer, name: &str, want: &[u8]) {
    let got = std::fs::read(peer.dir.join(name)).expect("the downloaded file");
    assert!(got == want, "{name}: the downloaded bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bits_are_caught_never_kept_served_or_announced() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(64 * 1024 + 100, 1);
        let honest = EvilPeer::builder("f", &f).gated().start(&tracker).await;
        let mut flippers = Vec::new();
        for _ in 0..3 {
            flippers.push(
                EvilPeer::builder("f", &f)
                    .fault(Fault::FlipBit)
                    .start(&tracker)
                    .await,
            );
        }
        let leecher = one_at_a_time(&tracker).await;
        let mut run = fetch(leecher.control, "f").await.expect("fetch");

        // Every flipping holder answers its one request; the leecher catches
        // each, while the honest holder still holds its answer back.
        for e in &flippers {
            within(30, e.until_completed(1)).await;
        }
        within(30, until_logged(&leecher.daemon, STRUCK, 3)).await;
        let part = part_file(&leecher.dir, "f").expect("a part file");
        assert!(all_zero(&part), "nothing unverified reaches the part file");
        for e in &flippers {
            let chunk = e.requests()[0].chunk;
            let err = get_chunk(leecher.listen, "f", chunk).await.unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "chunk {chunk} is not served");
        }
        assert_eq!(
            listed_chunks(&tracker, "f", leecher.listen).await,
            0,
            "nothing is announced before it is verified"
        );

        honest.gate().open();
        let done = within(60, run.done()).await.expect("the download completes");
        check_file(&leecher, "f", &f);
        assert_eq!(done.holders_banned, 3);
        for e in &flippers {
            assert_eq!(e.request_count(), 1, "no request after the ban");
        }
        let swarm_injected: u32 = flippers.iter().map(EvilPeer::completed).sum();
        let swarm_detected = leecher.daemon.log().matches(STRUCK).count() as u32;
        let extra = done.bytes_received - f.len() as u64;

        // One chunk at a time from a flipping holder: refused, not stored.
        let single = TestPeer::start(&tracker, &[]).await;
        let from = flippers[0].addr.to_string();
        let before = flippers[0].completed();
        let mut refused = 0;
        for chunk in [1, 2, 3, 10, 64, 65] {
            let chunk = chunk.to_string();
            let out = single
                .peerctl(&["fetch", "f", "--chunk", &chunk, "--from", &from])
                .await;
            assert_eq!(
                out.status.code(),
                Some(64 + Code::Unavailable as i32),
                "chunk {chunk}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            refused += 1;
        }
        let single_injected = flippers[0].completed() - before;
        assert_eq!(single_injected, refused);
        assert!(all_zero(&part_file(&single.dir, "f").expect("part file")));
        assert_eq!(listed_chunks(&tracker, "f", single.listen).await, 0);

        let injected = swarm_injected + single_injected;
        let detected = swarm_detected + refused;
        assert_eq!(injected, detected);
        eprintln!(
            "FIGURE MP-1: injected {injected} ({swarm_injected} in a swarm download, {single_injected} single-chunk), detected {detected} ({}%), extra bytes {extra} of {}, holders banned {}, requests after a ban 0, bad bytes written/served/announced 0",
            100 * detected / injected,
            f.len(),
            done.holders_banned
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_are_failures_and_nothing_partial_is_kept() {
    within(120, async {
        // 512 KiB chunks: two stream messages each, and a short last chunk.
        let f = data(2 * 1024 * 1024 + 1000, 2);
        let mut report = Vec::new();
        for fault in [Fault::Truncate, Fault::Pad, Fault::EndEarly, Fault::Cut] {
            let tracker = TestTracker::start().await;
            let honest = EvilPeer::builder("f", &f)
                .chunk_size(512 * 1024)
                .gated()
                .start(&tracker)
                .await;
            let evil = EvilPeer::builder("f", &f)
                .chunk_size(512 * 1024)
                .fault(fault)
                .start(&tracker)
                .await;
            let leecher = one_at_a_time(&tracker).await;
            let mut run = fetch(leecher.control, "f").await.expect("fetch");

            within(30, evil.until_completed(1)).await;
            if fault.is_bad_data() {
                within(30, until_logged(&leecher.daemon, STRUCK, 1)).await;
            } else {
                // Not a strike: the holder is asked again after a backoff,
                // which shows the leecher has dealt with the first answer.
                within(30, evil.until_requests(2)).await;
            }
            let part = part_file(&leecher.dir, "f").expect("a part file");
            assert!(all_zero(&part), "{fault:?}: no partial chunk is kept");
            let chunk = evil.requests()[0].chunk;
            let err = get_chunk(leecher.listen, "f", chunk).await.unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{fault:?}");
            assert_eq!(listed_chunks(&tracker, "f", leecher.listen).await, 0);

            honest.gate().open();
            let done = within(60, run.done())
                .await
                .expect("the download completes");
            check_file(&leecher, "f", &f);
            if fault.is_bad_data() {
                // Struck and dropped at once: the honest holder has every chunk.
                assert_eq!(done.holders_banned, 1, "{fault:?}");
                assert_eq!(
                    evil.request_count(),
                    1,
                    "{fault:?}: no request after the ban"
                );
                assert_eq!(leecher.daemon.log().matches(STRUCK).count(), 1);
            } else {
                // A cut stream is a failed request, not proof of malice.
                assert_eq!(done.holders_banned, 0, "{fault:?}");
            }
            let extra = done.bytes_received - f.len() as u64;
            report.push(if fault.is_bad_data() {
                format!(
                    "{fault:?}: injected {}, detected {}, extra bytes {extra}",
                    evil.completed(),
                    leecher.daemon.log().matches(STRUCK).count(),
                )
            } else {
                format!(
                    "{fault:?}: {} streams cut, none kept, no strike, extra bytes {extra}",
                    evil.completed()
                )
            });
        }
        eprintln!("FIGURE MP-2: {}", report.join("; "));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_offender_is_banned_after_one_strike_or_three_if_sole_source() {
    within(90, async {
        let f = data(32 * 1024, 3);

        // Someone else has every chunk: one bad chunk is enough.
        let tracker = TestTracker::start().await;
        let _honest = EvilPeer::builder("f", &f).start(&tracker).await;
        let evil = EvilPeer::builder("f", &f)
            .fault(Fault::FlipBit)
            .start(&tracker)
            .await;
        let leecher = one_at_a_time(&tracker).await;
        let done = fetch_whole(leecher.control, "f").await.expect("fetch");
        check_file(&leecher, "f", &f);
        assert_eq!(done.holders_banned, 1);
        assert_eq!(evil.request_count(), 1, "nothing asked of it after the ban");
        assert_eq!(leecher.daemon.log().matches(BANNED).count(), 1);
        let with_others = evil.request_count();

        // The only source: three strikes, then the download fails cleanly.
        let tracker = TestTracker::start().await;
        let evil = EvilPeer::builder("f", &f)
            .fault(Fault::FlipBit)
            .start(&tracker)
            .await;
        let leecher = one_at_a_time(&tracker).await;
        let started = Instant::now();
        let err = fetch_fail_fast(leecher.control, "f")
            .await
            .expect("fetch")
            .done()
            .await
            .unwrap_err();
        let failed_after = started.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
        assert_eq!(evil.request_count(), 3, "three strikes, then no more requests");
        assert_eq!(evil.completed(), 3);
        let log = leecher.daemon.log();
        assert_eq!(log.matches(STRUCK).count(), 3);
        assert_eq!(log.matches(BANNED).count(), 1);
        let seen = evil.requests();
        let to_ban = seen[2].at - seen[0].at;
        assert!(!leecher.dir.join("f").exists(), "no final file");
        assert!(part_file(&leecher.dir, "f").is_some(), "the part file is kept");
        eprintln!(
            "FIGURE MP-3: bad chunks before ban {with_others} with another holder, 3 as sole source (then UNAVAILABLE after {failed_after:?}); first to third bad chunk {to_ban:?}; requests after a ban 0"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_advertising_chunks_it_lacks_is_struck() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(256 * 1024, 4);
        let _honest = EvilPeer::builder("f", &f).start(&tracker).await;

        let baseline = TestPeer::start(&tracker, &[]).await;
        let started = Instant::now();
        fetch_whole(baseline.control, "f").await.expect("baseline fetch");
        let baseline_time = started.elapsed();
        // The baseline leecher now holds the file too; it leaves again.
        baseline.peerctl(&["leave"]).await;

        let liar = EvilPeer::builder("f", &f)
            .fault(Fault::Lacks)
            .start(&tracker)
            .await;
        let leecher = TestPeer::start(&tracker, &[]).await;
        let started = Instant::now();
        let done = fetch_whole(leecher.control, "f").await.expect("fetch");
        let time = started.elapsed();
        check_file(&leecher, "f", &f);
        assert_eq!(done.holders_banned, 1);
        let wasted = liar.request_count();
        // Only what was in flight when the first NOT_FOUND came back: a
        // holder whose pace is not yet measured gets 2 requests.
        assert!(
            (1..=2).contains(&wasted),
            "{wasted} requests to the liar (2 in flight to a new holder)"
        );
        eprintln!(
            "FIGURE MP-4: wasted requests {wasted} (all before the ban; 2 in flight to a new holder), completion {time:?} vs baseline {baseline_time:?}"
        );
    })
    .await;
}

/// The client refuses the message from its 5-byte length prefix; what it
/// holds meanwhile is bounded by the HTTP/2 flow-control window (one
/// 8 MiB frame, then tonic's copy of it), not by the message size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_without_buffering_it() {
    within(90, async {
        const MIB: u64 = 1024;
        let window = u64::from(hive_runtime::grpc::STREAM_WINDOW) / 1024;
        let tracker = TestTracker::start().await;
        let f = data(4 * 1024 * 1024, 5);
        let _honest = EvilPeer::builder("f", &f).start(&tracker).await;

        let control = TestPeer::start(&tracker, &[]).await;
        fetch_whole(control.control, "f").await.expect("control fetch");
        let control_peak = peak_rss_kib(control.daemon.pid());
        control.peerctl(&["leave"]).await;

        let evil = EvilPeer::builder("f", &f)
            .fault(Fault::Oversized)
            .start(&tracker)
            .await;
        let mut peaks = Vec::new();
        for per_holder in ["1", "4"] {
            let before = evil.request_count();
            let leecher =
                TestPeer::start_with(&tracker.url(), &[], &["--per-holder", per_holder]).await;
            let done = fetch_whole(leecher.control, "f").await.expect("fetch");
            check_file(&leecher, "f", &f);
            assert_eq!(done.holders_banned, 1, "struck and dropped");
            let asked = evil.request_count() - before;
            assert!(
                asked <= per_holder.parse().unwrap(),
                "{asked} requests: no request after the ban"
            );
            assert!(
                leecher.daemon.log().contains("decoded message length too large"),
                "refused by the message size limit (OUT_OF_RANGE)"
            );
            peaks.push(peak_rss_kib(leecher.daemon.pid()));
            leecher.peerctl(&["leave"]).await;
        }
        eprintln!(
            "FIGURE MP-5: 16 MiB message refused (OUT_OF_RANGE), struck, failed over; client peak RSS {} MiB with 1 request in flight to the evil holder, {} MiB with 4, vs {} MiB without it",
            peaks[0] / MIB,
            peaks[1] / MIB,
            control_peak / MIB
        );
        assert!(
            peaks[0] < control_peak + 2 * window + 4 * MIB,
            "more than one window buffered: {} KiB vs {control_peak} KiB",
            peaks[0]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_holder_is_abandoned_and_its_streams_released() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(256 * 1024, 6);
        let _honest = EvilPeer::builder("f", &f).start(&tracker).await;
        let staller = EvilPeer::builder("f", &f)
            .fault(Fault::Stall)
            .start(&tracker)
            .await;
        let leecher =
            TestPeer::start_with(&tracker.url(), &[], &["--chunk-timeout", "1s"]).await;
        let started = Instant::now();
        let done = fetch_whole(leecher.control, "f").await.expect("fetch");
        let time = started.elapsed();
        check_file(&leecher, "f", &f);
        assert_eq!(done.holders_banned, 0, "stalling is slowness, not malice");
        let stalled = staller.request_count();
        assert!(stalled >= 1);
        // The leecher lets go of every stalled stream.
        within(10, async {
            while staller.abandoned() < staller.request_count() as u32 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        eprintln!(
            "FIGURE CP-4 (slow-loris holder): download done in {time:?} with {stalled} requests stalled (chunk-timeout 1s; end-game re-asks the honest holder), all {} released by the reader",
            staller.abandoned()
        );
    })
    .await;
}
