//! Rate caps (`--max-upload-rate`, `--max-download-rate`, `peerctl limits`,
//! `peerctl fetch --max-rate`), against real daemons. The upload cap is
//! measured second by second while three requesters share it; the
//! figures are printed as `FIGURE RATE: ...` lines on stderr
//! (docs/PERFORMANCE.md, "Rate caps"). Asserted only what cannot flake:
//! totals over several seconds within [0.8, 1.1] of the cap, and shares.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    download::{self, fetch_with},
    *,
};
use hive::pb::{
    control::{FetchRequest, SetLimitsRequest},
    peer::{GetChunkRequest, peer_client::PeerClient},
};

const MIB: u64 = 1 << 20;

/// Fetches chunks of `name` one after another for ever, adding the bytes
/// to `got` as they arrive.
async fn requester(peer: SocketAddr, chunks: u32, got: Arc<AtomicU64>) {
    let mut client = PeerClient::new(channel(peer).await);
    for n in (1..=chunks).cycle() {
        let req = GetChunkRequest {
            name: "big".into(),
            chunk: n,
            ..Default::default()
        };
        let Ok(answer) = client.get_chunk(req).await else {
            continue;
        };
        let mut stream = answer.into_inner();
        while let Ok(Some(msg)) = stream.message().await {
            got.fetch_add(msg.data.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Samples `peer`'s bytes served once a second for `secs` seconds; the
/// bytes of each second.
async fn per_second(peer: &TestPeer, secs: usize) -> Vec<u64> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = download::bytes_served(peer).await;
    let mut out = Vec::new();
    for _ in 0..secs {
        tick.tick().await;
        let now = download::bytes_served(peer).await;
        out.push(now - last);
        last = now;
    }
    out
}

/// min / median / max of `seconds` as ratios to `rate`.
fn ratios(seconds: &[u64], rate: u64) -> (f64, f64, f64) {
    let mut r: Vec<f64> = seconds.iter().map(|&b| b as f64 / rate as f64).collect();
    r.sort_by(f64::total_cmp);
    (r[0], r[r.len() / 2], r[r.len() - 1])
}

fn within_cap(seconds: &[u64], rate: u64) -> bool {
    let total: u64 = seconds.iter().sum();
    let t = seconds.len() as f64 * rate as f64;
    (0.8 * t..=1.1 * t).contains(&(total as f64))
}

/// A seeder capped at 4 MiB/s with three requesters: each second's upload
/// is near the cap, and the three share it about equally. Lowered to
/// 1 MiB/s through SetLimits, it follows at once; `peerctl limits` lifts
/// it, and a cap under 1 KiB/s is refused with INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_seeder_holds_its_rate_and_shares_it() {
    within(120, async {
        let rate = 4 * MIB;
        let tracker = TestTracker::start().await;
        let file = data(16 << 20, 51);
        let args = ["--chunk-size", "256KiB", "--max-upload-rate", "4MiB"];
        let seeder = TestPeer::start_with(&tracker.url(), &[("big", &file)], &args).await;
        let got: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
        let tasks: Vec<_> = got
            .iter()
            .map(|g| tokio::spawn(requester(seeder.listen, 64, g.clone())))
            .collect();
        // One second to get going, then six measured.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before: Vec<u64> = got.iter().map(|g| g.load(Ordering::Relaxed)).collect();
        let seconds = per_second(&seeder, 6).await;
        let shares: Vec<u64> = got
            .iter()
            .zip(&before)
            .map(|(g, b)| g.load(Ordering::Relaxed) - b)
            .collect();
        let (min, median, max) = ratios(&seconds, rate);
        let sum: u64 = shares.iter().sum();
        let share: Vec<String> = shares
            .iter()
            .map(|s| format!("{:.3}", *s as f64 / sum as f64))
            .collect();
        eprintln!(
            "FIGURE RATE: cap 4 MiB/s, 3 requesters, 6 one-second windows: sent / cap \
             min {min:.3} median {median:.3} max {max:.3}; shares {share:?}"
        );
        assert!(within_cap(&seconds, rate), "{seconds:?}");
        for s in &shares {
            assert!(*s as f64 >= 0.2 * sum as f64, "unfair shares {shares:?}");
        }

        // Lowered while the uploads run.
        let mut control = seeder.control_client().await;
        let set = control
            .set_limits(SetLimitsRequest {
                max_upload_rate: Some(MIB),
                max_download_rate: None,
            })
            .await
            .expect("SetLimits")
            .into_inner();
        assert_eq!((set.max_upload_rate, set.max_download_rate), (MIB, 0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let slower = per_second(&seeder, 4).await;
        let (min, median, max) = ratios(&slower, MIB);
        eprintln!(
            "FIGURE RATE: lowered to 1 MiB/s through SetLimits, 4 windows: sent / cap \
             min {min:.3} median {median:.3} max {max:.3}"
        );
        assert!(within_cap(&slower, MIB), "{slower:?}");
        let status = download::status(seeder.control).await;
        assert_eq!(status.max_upload_rate, MIB);

        // Bad input: the right code, nothing changed.
        let refused = control
            .set_limits(SetLimitsRequest {
                max_upload_rate: Some(10),
                max_download_rate: None,
            })
            .await
            .expect_err("10 bytes a second");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(download::status(seeder.control).await.max_upload_rate, MIB);
        let out = seeder
            .peerctl(&["limits", "--up", "0", "--down", "50Mbit"])
            .await;
        assert!(out.status.success(), "{out:?}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("upload cap none"), "{said}");
        let status = download::status(seeder.control).await;
        assert_eq!(
            (status.max_upload_rate, status.max_download_rate),
            (0, 6_250_000)
        );
        tasks.iter().for_each(|t| t.abort());
    })
    .await;
}

/// A download under the global cap and under its own (`--max-rate`) takes
/// at least size / cap, and completes with no holder struck: time spent
/// waiting on a cap does not count against the holders' chunk timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_downloads_take_their_time_and_complete() {
    within(120, async {
        let tracker = TestTracker::start().await;
        let (a, b) = (data(6 << 20, 52), data(3 << 20, 53));
        let args = ["--chunk-size", "1MiB"];
        let _seeder = TestPeer::start_with(&tracker.url(), &[("a", &a), ("b", &b)], &args).await;
        // A chunk timeout well under the capped time of a chunk in flight
        // alongside the others.
        let leecher_args = ["--max-download-rate", "2MiB", "--chunk-timeout", "2s"];
        let leecher = TestPeer::start_with(&tracker.url(), &[], &leecher_args).await;
        let mut figures = Vec::new();
        for (name, file, max_rate, cap) in [("a", &a, 0, 2 * MIB), ("b", &b, MIB, MIB)] {
            let req = FetchRequest {
                name: name.into(),
                max_rate,
                ..Default::default()
            };
            let started = Instant::now();
            let done = fetch_with(leecher.control, req)
                .await
                .expect("fetch")
                .done()
                .await
                .expect("the capped download completes");
            let took = started.elapsed();
            let want = download::manifest_of(name, file, Some(1 << 20)).digest();
            assert_eq!(done.digest.as_ref(), want.as_bytes(), "{name}: digest");
            assert_eq!(done.holders_banned, 0);
            let least = Duration::from_secs_f64(0.9 * file.len() as f64 / cap as f64);
            assert!(took >= least, "{name}: {took:?} under a {cap} B/s cap");
            figures.push(format!(
                "{name}: {} MiB at cap {} MiB/s in {:.2} s ({:.2} MiB/s)",
                file.len() >> 20,
                cap as f64 / MIB as f64,
                took.as_secs_f64(),
                file.len() as f64 / MIB as f64 / took.as_secs_f64()
            ));
        }
        let status = download::status(leecher.control).await;
        assert_eq!(status.max_download_rate, 2 * MIB);
        eprintln!("FIGURE RATE-DOWN: {}", figures.join("; "));
    })
    .await;
}
