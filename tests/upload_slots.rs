//! Upload slots under attack (docs/RELIABILITY.md RE-7): one address holds
//! GetChunk streams that never drain, or drain a trickle, and reopens every
//! one that is cut; a legitimate downloader on another address still gets
//! its chunks, and a fresh peer downloads the file whose only holder is
//! under attack. Prints a `FIGURE RE-7: ...` line on stderr.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    download::{self, fetch_whole},
    rawh2, *,
};
use hive::pb::peer::GetChunkRequest;
use tokio::task::JoinSet;

const GET_CHUNK: &str = "/hive.peer.v1.Peer/GetChunk";
const MIB: usize = 1 << 20;
/// The attacker's source address; the legitimate side is 127.0.0.1.
const ATTACKER: [u8; 4] = [127, 0, 0, 2];
/// Streams that never open their window, and streams that open 256 KiB
/// every 5 s (51 KiB/s, under the seeder's 64 KiB/s drain rule).
const STALLED: usize = 32;
const TRICKLING: usize = 8;
const TRICKLE: u32 = 256 << 10;
const TRICKLE_EVERY: Duration = Duration::from_secs(5);
/// The seeder: the default 32 slots (a quarter per address), a drain rule
/// measured over 3 s so the test sees it act.
const SEEDER: &[&str] = &[
    "--chunk-size",
    "256KiB",
    "--min-upload-rate",
    "64KiB",
    "--drain-window",
    "3s",
];

/// What the attacker's streams met.
#[derive(Default)]
struct Tally {
    served: AtomicU64,
    refused: AtomicU64,
    ended: AtomicU64,
}

/// One attacking stream, reopened whenever it ends: a connection of its
/// own from the attacker's address (a cut closes the connection), a
/// GetChunk, then reading `trickle` bytes every `TRICKLE_EVERY` (0: none).
async fn attack(peer: SocketAddr, chunk: u32, trickle: u32, tally: Arc<Tally>) {
    let msg = rawh2::grpc_message(&GetChunkRequest {
        name: "big".into(),
        chunk,
        ..Default::default()
    });
    loop {
        let mut h2 = rawh2::connect_from(peer, IpAddr::from(ATTACKER), trickle).await;
        let Ok(call) = h2.call(GET_CHUNK, msg.clone()).await else {
            continue;
        };
        let Ok(response) = rawh2::headers(call.response).await else {
            tally.ended.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if response.headers().get("grpc-status").is_some() {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            // Bounded load: a refused lane pauses before asking again.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tally.served.fetch_add(1, Ordering::Relaxed);
        let _keep = call.stream;
        let mut body = response.into_body();
        let mut held = 0;
        while let Some(Ok(data)) = body.data().await {
            held += data.len() as u32;
            if trickle > 0 && held >= trickle {
                tokio::time::sleep(TRICKLE_EVERY).await;
                let _ = body.flow_control().release_capacity(held as usize);
                held = 0;
            }
        }
        tally.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// RE-7: 32 stalled and 8 trickling GetChunk streams from one address,
/// each reopened as soon as it ends, against the only holder of an 8 MiB
/// file. From another address, single GetChunk calls keep succeeding
/// (≥ 90 %) and a fresh peer downloads the whole file, right digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re7_one_address_cannot_hold_the_upload_slots() {
    within(180, async {
        let tracker = TestTracker::start().await;
        let file = data(8 * MIB, 77);
        let seeder = TestPeer::start_with(&tracker.url(), &[("big", &file)], SEEDER).await;
        let tally = Arc::new(Tally::default());
        let mut attackers = JoinSet::new();
        for lane in 0..STALLED + TRICKLING {
            let trickle = if lane < STALLED { 0 } else { TRICKLE };
            let chunk = 1 + (lane % 32) as u32;
            attackers.spawn(attack(seeder.listen, chunk, trickle, tally.clone()));
        }
        // Let the attack take what it can before anyone else asks.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let leecher = TestPeer::start(&tracker, &[]).await;
        let started = Instant::now();
        let download = tokio::spawn(async move {
            let done = fetch_whole(leecher.control, "big").await;
            (done, started.elapsed(), leecher)
        });
        // Single calls from the legitimate address, one after another,
        // while the attack runs (at least 12 s: the drain window 4 times).
        let (mut ok, mut calls) = (0u32, 0u32);
        while started.elapsed() < Duration::from_secs(12) || !download.is_finished() {
            let n = 1 + calls % 32;
            calls += 1;
            match get_chunk(seeder.listen, "big", n).await {
                Ok(chunk) if chunk == file[(n as usize - 1) << 18..(n as usize) << 18] => ok += 1,
                Ok(_) => panic!("chunk {n} came back wrong"),
                Err(s) => eprintln!("legitimate GetChunk {n}: {:?} {}", s.code(), s.message()),
            }
        }
        let (done, took, _leecher) = download.await.expect("download task");
        let done = done.expect("the download completes under attack");
        let want = download::manifest_of("big", &file, Some(256 << 10)).digest();
        attackers.abort_all();
        let success = f64::from(ok) / f64::from(calls);
        eprintln!(
            "FIGURE RE-7: {STALLED} stalled + {TRICKLING} trickling streams from one address, \
             reopened when cut: attacker streams served {}, cut {}, refused {}; legitimate \
             GetChunk {ok}/{calls} ({:.1} %); 8 MiB download from the attacked holder done in \
             {:.2} s, digest {}",
            tally.served.load(Ordering::Relaxed),
            tally.ended.load(Ordering::Relaxed),
            tally.refused.load(Ordering::Relaxed),
            success * 100.0,
            took.as_secs_f64(),
            if done.digest.as_ref() == want.as_bytes() {
                "right"
            } else {
                "WRONG"
            },
        );
        assert_eq!(done.digest.as_ref(), want.as_bytes(), "digest");
        assert!(success >= 0.9, "legitimate GetChunk success {ok}/{calls}");
        assert!(
            tally.ended.load(Ordering::Relaxed) > 0,
            "the drain rule cut no attacking stream"
        );
    })
    .await;
}
