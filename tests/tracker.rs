//! The tracker under restarts, floods and quotas (docs/RELIABILITY.md: CR-3, BI-4, RE-3,
//! RE-5, AU-1): nothing acknowledged is lost to `kill -9`, a forgotten swarm
//! re-registers by itself, and limits refuse with RESOURCE_EXHAUSTED without
//! changing anything.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hive::pb::tracker::{
    HeartbeatRequest, LocateRequest, LocateResponse, RegisterRequest, SharedFile,
    tracker_client::TrackerClient,
};
use hive::pb::types::ChunkRange;
use tonic::Code;

fn seeding(m: &hive::pb::types::Manifest) -> SharedFile {
    SharedFile {
        chunks: vec![ChunkRange {
            first: 1,
            last: digest_count(m) as u32,
        }],
        manifest: Some(m.clone()),
    }
}

fn register_req(files: Vec<SharedFile>, port: u32) -> RegisterRequest {
    RegisterRequest {
        files,
        port,
        ..Default::default()
    }
}

/// Holders as `addr:chunks`, sorted.
fn holders(found: &LocateResponse) -> Vec<String> {
    let mut out: Vec<String> = found
        .holders
        .iter()
        .map(|h| format!("{}:{:?}", h.addr, h.chunks))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_registration() {
    // Checkpoints are kept out of the way: what was acknowledged is only in
    // the journal when the tracker dies, written, or also fsynced.
    for flags in [
        &["--checkpoint-interval", "1h"][..],
        &["--checkpoint-interval", "1h", "--fsync", "always"],
    ] {
        kill_9_with(flags).await;
    }
}

async fn kill_9_with(flags: &[&str]) {
    within(90, async {
        let mut tracker = TestTracker::start_with(flags).await;
        let f = data(70_000, 1);
        let a = TestPeer::start(&tracker, &[("f", &f)]).await;
        let b = TestPeer::start(&tracker, &[]).await;
        let out = b.peerctl(&["fetch", "f", "--chunk", "3"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = snapshot(&tracker).await;

        tracker.restart_hard().await;
        let started = Instant::now();
        let found = tracker.locate("f").await;
        eprintln!(
            "FIGURE CR-3: tracker ({flags:?}) restarted from disk, answering after {:?}",
            started.elapsed()
        );
        assert_eq!(
            snapshot(&tracker).await,
            before,
            "Locate answers as before the crash"
        );
        assert!(
            found.holders.iter().all(|h| !h.confirmed),
            "restored holders are unconfirmed"
        );

        // Each peer's next heartbeat confirms it again.
        loop {
            let found = tracker.locate("f").await;
            if found.holders.iter().all(|h| h.confirmed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop((a, b));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_checkpoints_the_journal() {
    within(60, async {
        let mut tracker = TestTracker::start_with(&["--checkpoint-interval", "1h"]).await;
        for (i, name) in ["x", "y", "z"].into_iter().enumerate() {
            let m = manifest(name, &data(5000 * (i + 1), i as u64));
            tracker
                .client()
                .await
                .register(register_req(vec![seeding(&m)], 4300 + i as u32))
                .await
                .expect("register");
        }
        let before = snapshot(&tracker).await;
        let journal_bytes = |tracker: &TestTracker| -> u64 {
            std::fs::read_dir(tracker.data.path().join("catalog"))
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        };
        assert!(journal_bytes(&tracker) > 0, "not checkpointed yet");

        tracker.daemon.signal("TERM");
        assert!(tracker.daemon.wait().await.success());
        assert_eq!(journal_bytes(&tracker), 0, "nothing left to replay");
        tracker.restart_hard().await;
        assert_eq!(snapshot(&tracker).await, before, "all of it in the store");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_register_after_restart_is_still_one_holder() {
    within(60, async {
        let mut tracker = TestTracker::start_with(&[]).await;
        let m = manifest("x", &data(5000, 2));
        for round in 0..2 {
            for _ in 0..50 {
                tracker
                    .client()
                    .await
                    .register(register_req(vec![seeding(&m)], 4300))
                    .await
                    .expect("register");
            }
            let found = tracker.locate("x").await;
            assert_eq!(found.holder_count, 1, "round {round}");
            assert_eq!(found.chunk_holders, vec![1; 5]);
            tracker.restart_hard().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_swarm_registers_again() {
    within(90, async {
        let mut tracker =
            TestTracker::start_with(&["--in-memory", "--heartbeat-interval", "200ms", "--ttl", "1s"]).await;
        let f = data(300_000, 3);
        let g = data(10_000, 4);
        let a = TestPeer::start(&tracker, &[("f", &f), ("g", &g)]).await;
        let b = TestPeer::start(&tracker, &[]).await;
        let out = b.peerctl(&["fetch", "f", "--chunk", "2"]).await;
        assert!(out.status.success());
        let out = b.peerctl(&["fetch", "f", "--chunk", "7"]).await;
        assert!(out.status.success());
        let before = (holders(&tracker.locate("f").await), holders(&tracker.locate("g").await));

        // An empty tracker: the peers' heartbeats get NOT_FOUND and they
        // register again with every chunk they hold.
        tracker.restart_hard().await;
        let restarted = Instant::now();
        loop {
            let mut client = tracker.client().await;
            let f_now = client.locate(LocateRequest { name: "f".into(), ..Default::default() }).await;
            let g_now = client.locate(LocateRequest { name: "g".into(), ..Default::default() }).await;
            if let (Ok(f_now), Ok(g_now)) = (f_now, g_now)
                && (holders(f_now.get_ref()), holders(g_now.get_ref())) == before
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "FIGURE CR-3: empty tracker reconverged (2 peers, 2 files, partial chunk sets) in {:?} with a 200ms heartbeat",
            restarted.elapsed()
        );
        drop((a, b));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_continue_while_the_tracker_is_down() {
    within(90, async {
        let mut tracker = TestTracker::start_with(&[
            "--in-memory",
            "--heartbeat-interval",
            "200ms",
            "--ttl",
            "1s",
        ])
        .await;
        let f = data(4 << 20, 5);
        let seeder = TestPeer::start_with(
            &tracker.url(),
            &[("f", &f)],
            &["--chunk-size", "16KiB", "--max-uploads", "1"],
        )
        .await;
        let leecher = TestPeer::start_with(&tracker.url(), &[], &["--per-holder", "1"]).await;
        let mut ctl = leecher.control_client().await;
        let mut stream = ctl
            .fetch(hive::pb::control::FetchRequest {
                name: "f".into(),
                ..Default::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        // Once bytes flow, take the tracker away; the download goes on.
        loop {
            let ev = stream.message().await.expect("event").expect("stream open");
            if let Some(hive::pb::control::fetch_event::Event::Progress(p)) = ev.event
                && p.bytes_done > 0
            {
                break;
            }
        }
        tracker.daemon.kill().await;
        let done = loop {
            let ev = stream
                .message()
                .await
                .expect("fetch keeps going without the tracker");
            match ev.and_then(|e| e.event) {
                Some(hive::pb::control::fetch_event::Event::Done(d)) => break d,
                Some(_) => {}
                None => panic!("stream ended without a result"),
            }
        };
        assert_eq!(done.digest.as_ref(), blake3::hash(&f).as_bytes());
        assert_eq!(std::fs::read(leecher.dir.join("f")).unwrap(), f);

        // Back up empty: the leecher re-registers as a full holder.
        tracker.restart_hard().await;
        loop {
            if let Ok(found) = tracker
                .client()
                .await
                .locate(LocateRequest {
                    name: "f".into(),
                    ..Default::default()
                })
                .await
            {
                let found = found.into_inner();
                if found
                    .holders
                    .iter()
                    .any(|h| h.addr == leecher.listen.to_string() && h.chunk_count == 256)
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(seeder);
    })
    .await;
}

/// A tracker client whose requests come from another loopback address.
async fn client_from(tracker: &TestTracker, ip: &str) -> TrackerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(tracker.url())
        .unwrap()
        .local_address(Some(ip.parse().unwrap()))
        .connect()
        .await
        .expect("connect");
    TrackerClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_refused_and_others_are_served() {
    within(60, async {
        let tracker = TestTracker::start_with(&["--in-memory", "--ip-rate", "200", "--ip-burst", "200"]).await;
        register(&tracker, "x", 4400).await;
        let flooder = client_from(&tracker, "127.0.0.1").await;
        let mut polite = client_from(&tracker, "127.0.0.2").await;
        let before = snapshot_via(&mut polite).await;

        // RE-3: one address floods Locate for two seconds, 64 calls at a time.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let mut c = flooder.clone();
            flood.spawn(async move {
                let (mut ok, mut refused) = (0u64, 0u64);
                while Instant::now() < deadline {
                    match c.locate(LocateRequest { name: "x".into(), ..Default::default() }).await {
                        Ok(_) => ok += 1,
                        Err(s) if s.code() == Code::ResourceExhausted => refused += 1,
                        Err(s) => panic!("unexpected {s:?}"),
                    }
                }
                (ok, refused)
            });
        }
        let mut latencies = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            polite.locate(LocateRequest { name: "x".into(), ..Default::default() }).await.expect("the polite client is served");
            latencies.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = flood.join_next().await {
            let (o, r) = r.unwrap();
            ok += o;
            refused += r;
        }
        latencies.sort();
        let p99 = latencies[latencies.len() * 99 / 100];
        eprintln!(
            "FIGURE RE-3: flood accepted {} req/s, refused {refused} of {} ({:.0}%); other client's p99 {p99:?} over {} calls",
            ok / 2,
            ok + refused,
            refused as f64 * 100.0 / (ok + refused) as f64,
            latencies.len()
        );
        assert!(refused > 0, "the flood was never refused");
        assert!(ok <= 200 + 2 * 200 + 50, "more accepted ({ok}) than burst + rate allow");
        assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
        assert_eq!(snapshot_via(&mut polite).await, before);
    })
    .await;
}

async fn register(
    tracker: &TestTracker,
    name: &str,
    port: u32,
) -> hive::pb::tracker::RegisterResponse {
    let m = manifest(name, &data(5000, u64::from(port)));
    tracker
        .client()
        .await
        .register(register_req(vec![seeding(&m)], port))
        .await
        .expect("register")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_caps() {
    within(60, async {
        let tracker = TestTracker::start_with(&["--in-memory", "--max-files-per-peer", "20", "--peer-rate", "5", "--peer-burst", "5"]).await;
        let mut client = tracker.client().await;
        let files: Vec<_> = (0..21).map(|i| manifest(&format!("f{i:02}"), &data(100, i))).collect();
        let before = snapshot(&tracker).await;

        // RE-5: one peer, more files than its quota, in one request.
        let status = client
            .register(register_req(files.iter().map(seeding).collect(), 4500))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
        assert_eq!(snapshot(&tracker).await, before, "nothing half-registered");

        // At the quota, then one more by RegisterChunk.
        let out = client
            .register(register_req(files[..20].iter().map(seeding).collect(), 4500))
            .await
            .unwrap()
            .into_inner();
        let other = register(&tracker, "f20", 4501).await;
        let before = snapshot(&tracker).await;
        let req = with_token(
            hive::pb::tracker::RegisterChunkRequest {
                peer_id: out.peer_id.clone(),
                name: "f20".into(),
                chunks: vec![ChunkRange { first: 1, last: 1 }],
                withdrawn: vec![],
            },
            &out.token,
        );
        let status = client.register_chunk(req).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(snapshot(&tracker).await, before);

        // A session's request rate is limited too (burst 5 here; the
        // RegisterChunk above spent one).
        let mut refused = 0;
        for _ in 0..10 {
            let req = with_token(HeartbeatRequest { peer_id: other.peer_id.clone() }, &other.token);
            match client.heartbeat(req).await {
                Ok(_) => {}
                Err(s) if s.code() == Code::ResourceExhausted => refused += 1,
                Err(s) => panic!("{s:?}"),
            }
        }
        assert!(refused >= 4, "only {refused} of 10 heartbeats refused");
        eprintln!("FIGURE RE-5: quota 20 files/peer enforced on Register and RegisterChunk; session burst 5: {refused}/10 refused");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_stops_growing_at_its_memory_budget() {
    within(60, async {
        // 1 MiB: 27 files of 1,024 chunks, each 36 KiB of digests and counts
        // plus a holding; the 28th would pass it. (A new holder of a known
        // file, a few hundred bytes, is refused the same way: unit tests.)
        let tracker = TestTracker::start_with(&["--in-memory", "--max-catalog-mib", "1"]).await;
        let mut client = tracker.client().await;
        let files: Vec<_> = (0..28)
            .map(|i| manifest(&format!("f{i:02}"), &data(1 << 20, i)))
            .collect();
        assert!(files.iter().all(|m| digest_count(m) == 1024));
        for (i, m) in files[..27].iter().enumerate() {
            client
                .register(register_req(vec![seeding(m)], 4600 + i as u32))
                .await
                .unwrap_or_else(|s| panic!("file {i}: {s:?}"));
        }
        let before = snapshot(&tracker).await;
        let status = client
            .register(register_req(vec![seeding(&files[27])], 4627))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{}",
            status.message()
        );
        assert!(status.message().contains("catalog"), "{}", status.message());
        assert_eq!(snapshot(&tracker).await, before, "nothing half-registered");
        assert_eq!(tracker.locate("f00").await.holder_count, 1);
    })
    .await;
}

/// Registers one seeder of `m` per port in `ports`, each a session of its own.
async fn seeders(
    tracker: &TestTracker,
    m: &hive::pb::types::Manifest,
    ports: std::ops::Range<u32>,
) {
    for port in ports {
        tracker
            .client()
            .await
            .register(register_req(vec![seeding(m)], port))
            .await
            .expect("register");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_caps_holders_and_counts_them_all() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let m = manifest("x", &data(5000, 7));
        seeders(&tracker, &m, 5000..5060).await;
        let found = tracker.locate("x").await;
        assert_eq!(found.holders.len(), 50, "Locate lists at most 50 holders");
        assert_eq!(found.holder_count, 60);
        assert_eq!(found.chunk_holders, vec![60; 5]);
    })
    .await;
}

/// h2 writes a DATA frame of 1,024 bytes or more (256 on connections with
/// vectored writes) to the socket on its own before it takes the next
/// frame, so the tracker sends its answers in smaller frames, which answers
/// ready together share (hive_runtime::grpc::frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_arrive_in_frames_h2_can_batch() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let m = manifest("x", &data(5000, 7));
        seeders(&tracker, &m, 5000..5050).await;
        let request = common::rawh2::grpc_message(&LocateRequest {
            name: "x".into(),
            ..Default::default()
        });
        let mut h2 = common::rawh2::connect(tracker.addr, 1 << 20).await;
        let call = h2
            .call("/hive.tracker.v1.Tracker/Locate", request)
            .await
            .expect("locate");
        let (frames, code) = common::rawh2::frames(call.response).await.expect("answer");
        assert_eq!(code, Some(0), "OK");
        let sizes: Vec<usize> = frames.iter().map(|f| f.len()).collect();
        assert!(sizes.len() > 2, "one answer, several frames: {sizes:?}");
        assert!(sizes.iter().all(|&n| n < 1024), "{sizes:?}");
        // Put back together, the frames are the answer tonic clients read.
        let body: Vec<u8> = frames.concat();
        assert_eq!(body[0], 0, "not compressed");
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert_eq!(body.len(), 5 + len);
        let found = <LocateResponse as prost::Message>::decode(&body[5..]).expect("decodes");
        assert_eq!(found.holder_count, 50);
        assert_eq!(found.holders.len(), 50);
        assert_eq!(found.manifest, Some(m));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_files_pages_through_everything() {
    within(60, async {
        let tracker =
            TestTracker::start_with(&["--in-memory", "--max-files-per-peer", "1000"]).await;
        let files: Vec<_> = (0..250)
            .map(|i| seeding(&manifest(&format!("f{i:03}"), &data(10, i))))
            .collect();
        tracker
            .client()
            .await
            .register(register_req(files, 4700))
            .await
            .expect("register");
        let mut client = tracker.client().await;
        let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let page = client
                .list_files(hive::pb::tracker::ListFilesRequest {
                    page_size: 100,
                    page_token: token,
                })
                .await
                .expect("list")
                .into_inner();
            pages += 1;
            assert!(page.files.len() <= 100);
            seen.extend(page.files.into_iter().map(|f| f.name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let want: Vec<String> = (0..250).map(|i| format!("f{i:03}")).collect();
        assert_eq!((seen, pages), (want, 3));
        let bad = client
            .list_files(hive::pb::tracker::ListFilesRequest {
                page_size: 10,
                page_token: "../x".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_never_reach_the_logs() {
    within(60, async {
        let tracker = TestTracker::start_with(&["--in-memory"]).await;
        let out = register(&tracker, "x", 4600).await;
        let mut client = tracker.client().await;
        client
            .heartbeat(with_token(
                HeartbeatRequest {
                    peer_id: out.peer_id.clone(),
                },
                &out.token,
            ))
            .await
            .expect("heartbeat");
        let wrong = with_token(
            HeartbeatRequest {
                peer_id: out.peer_id.clone(),
            },
            &"f".repeat(32),
        );
        assert_eq!(
            client.heartbeat(wrong).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        let log = tracker.daemon.log();
        assert!(log.contains(&out.peer_id), "the log names the peer");
        assert!(
            !log.contains(&out.token),
            "the log must not contain the token"
        );
        assert!(!log.contains(&"f".repeat(32)), "nor a presented one");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_tracker_stops_no_transfer_and_registrations_catch_up() {
    use hive::pb::control::{FetchRequest, fetch_event::Event};
    within(90, async {
        let ttl = Duration::from_secs(1);
        let tracker = TestTracker::start_with(&["--in-memory", "--heartbeat-interval", "200ms", "--ttl", "1s"]).await;
        let f = data(2 << 20, 12);
        let seeder = TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--chunk-size", "16KiB", "--max-uploads", "1"]).await;
        let leecher = TestPeer::start_with(&tracker.url(), &[], &["--per-holder", "1", "--relocate-interval", "300ms"]).await;
        let mut ctl = leecher.control_client().await;
        let mut stream = ctl
            .fetch(FetchRequest { name: "f".into(), ..Default::default() })
            .await
            .expect("fetch")
            .into_inner();
        let progress = |ev: &Option<Event>| match ev {
            Some(Event::Progress(p)) => p.chunks_done,
            _ => 0,
        };
        while progress(&stream.message().await.expect("event").expect("open").event) == 0 {}

        // CP-3: the tracker goes silent (frozen: no RST, no answers) for
        // longer than its TTL. Peer-to-peer transfers carry on.
        tracker.daemon.signal("STOP");
        let frozen = Instant::now();
        let finished = loop {
            match stream.message().await.expect("the fetch goes on without the tracker").and_then(|e| e.event) {
                Some(Event::Done(d)) => break d,
                Some(_) => {}
                None => panic!("stream ended without a result"),
            }
        };
        let done_in = frozen.elapsed();
        let log = leecher.daemon.log();
        let transfer_ms = log
            .split("transfer_ms=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        assert_eq!(finished.digest.as_ref(), blake3::hash(&f).as_bytes());
        // The last chunk registrations wait at most the link's 2 s flush
        // bound for a tracker that does not answer, then stay queued.
        assert!(done_in < Duration::from_secs(10), "the fetch waited {done_in:?} on a silent tracker");
        // The partition lasts past the TTL, so the tracker expires everyone.
        if let Some(rest) = (ttl * 2).checked_sub(frozen.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let partition = frozen.elapsed();
        tracker.daemon.signal("CONT");
        let healed = Instant::now();

        // On heal: heartbeats get NOT_FOUND, both peers register again with
        // everything they hold, and the queued chunk registrations are moot.
        loop {
            if let Ok(found) = tracker.client().await.locate(LocateRequest { name: "f".into(), ..Default::default() }).await {
                let found = found.into_inner();
                let full = |addr: String| found.holders.iter().any(|h| h.addr == addr && h.chunk_count == 128);
                if full(leecher.listen.to_string()) && full(seeder.listen.to_string()) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "FIGURE CP-3: whole transfer {} ms (the daemon's log), fetch done {done_in:?} into the tracker partition (the last registrations queued after the 2 s flush bound); partition {partition:?} (TTL {ttl:?}); registry whole again {:?} after heal",
            transfer_ms,
            healed.elapsed()
        );
    })
    .await;
}
