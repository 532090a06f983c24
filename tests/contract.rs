//! The status-code contract (docs/ARCHITECTURE.md, "Status codes"): every refusal has
//! its code, and leaves the tracker exactly as it was.

mod common;

use common::*;
use hive::pb::{
    control::FetchRequest,
    tracker::{
        HeartbeatRequest, LeaveRequest, ListFilesRequest, LocateRequest, RegisterChunkRequest,
        RegisterRequest, RegisterResponse, SharedFile,
    },
    types::{ChunkRange, Manifest},
};
use tonic::Code;

fn full(m: &Manifest) -> SharedFile {
    let n = digest_count(m) as u32;
    SharedFile {
        manifest: Some(m.clone()),
        chunks: if n == 0 {
            vec![]
        } else {
            vec![ChunkRange { first: 1, last: n }]
        },
    }
}

fn register_req(files: Vec<SharedFile>, port: u32) -> RegisterRequest {
    RegisterRequest {
        files,
        port,
        advertise_host: String::new(),
        peer_id: String::new(),
    }
}

async fn register(tracker: &TestTracker, files: Vec<SharedFile>, port: u32) -> RegisterResponse {
    tracker
        .client()
        .await
        .register(register_req(files, port))
        .await
        .expect("register")
        .into_inner()
}

fn chunk_req(peer: &str, name: &str, first: u32, last: u32) -> RegisterChunkRequest {
    RegisterChunkRequest {
        peer_id: peer.into(),
        name: name.into(),
        chunks: vec![ChunkRange { first, last }],
        withdrawn: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_refusals_leave_state_unchanged() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let mut client = tracker.client().await;
        let empty = client
            .list_files(ListFilesRequest::default())
            .await
            .expect("empty list is OK");
        assert!(empty.into_inner().files.is_empty());

        let x = manifest("x", &data(5000, 1));
        let a = register(&tracker, vec![full(&x)], 4001).await;
        let b = register(&tracker, vec![full(&manifest("y", &data(3000, 2)))], 4002).await;
        let before = snapshot(&tracker).await;
        let mut tried = 0;
        let mut expect = |code: Code, result: Result<(), tonic::Status>, what: &str| {
            let status = result.err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            tried += 1;
        };

        // BI-1: hostile names.
        for name in [
            "",
            "../x",
            "a/../../b",
            "/abs",
            "C:x",
            "..\\x",
            "a\0b",
            ".",
            "..",
            &"n".repeat(256),
            &"x".repeat(4096),
        ] {
            let mut m = manifest("ok", &data(100, 3));
            m.name = name.into();
            let r = client
                .register(register_req(vec![full(&m)], 4003))
                .await
                .map(|_| ());
            expect(Code::InvalidArgument, r, &format!("register name {name:?}"));
            let r = client
                .locate(LocateRequest { name: name.into(), ..Default::default() })
                .await
                .map(|_| ());
            expect(Code::InvalidArgument, r, &format!("locate name {name:?}"));
        }
        // BI-2: inconsistent manifests.
        type Spoil = fn(&mut Manifest);
        let spoils: &[(&str, Spoil)] = &[
            ("size 0 with chunks", |m| m.size = 0),
            ("one digest short", |m| m.chunk_digests = m.chunk_digests.slice(32..)),
            ("a digest one byte short", |m| m.chunk_digests = m.chunk_digests.slice(1..)),
            ("chunk size 0", |m| m.chunk_size = 0),
            ("chunk size 3", |m| m.chunk_size = 3),
            ("chunk size 2^31", |m| m.chunk_size = 1 << 31),
            ("size u64::MAX", |m| m.size = u64::MAX),
            ("digests do not combine", |m| swap_digests(m, 0, 1)),
            ("file digest wrong", |m| {
                m.digest = bytes::Bytes::from_static(&[0; 32])
            }),
        ];
        for (what, spoil) in spoils {
            let mut m = manifest("z", &data(5000, 4));
            spoil(&mut m);
            let r = client
                .register(register_req(vec![full(&m)], 4003))
                .await
                .map(|_| ());
            expect(Code::InvalidArgument, r, what);
        }
        let r = client
            .register(register_req(vec![full(&manifest("z", &data(10, 5)))], 0))
            .await
            .map(|_| ());
        expect(Code::InvalidArgument, r, "port 0");
        let r = client
            .register(register_req(
                vec![full(&manifest("z", &data(10, 5)))],
                70000,
            ))
            .await
            .map(|_| ());
        expect(Code::InvalidArgument, r, "port 70000");

        // BI-3: same name, other content; the existing digest is named.
        let other = manifest("x", &data(5000, 99));
        let status = client
            .register(register_req(vec![full(&other)], 4003))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(
            status.message().contains(&hex(&x.digest)),
            "{}",
            status.message()
        );

        // BI-5 / BI-6: unknown targets and chunk numbers out of range.
        let r = client
            .locate(LocateRequest {
                name: "nope".into(),
                ..Default::default()
            })
            .await
            .map(|_| ());
        expect(Code::NotFound, r, "locate unknown");
        let r = client
            .register_chunk(with_token(chunk_req(&a.peer_id, "nope", 1, 1), &a.token))
            .await
            .map(|_| ());
        expect(Code::NotFound, r, "register chunk of unknown file");
        for (first, last) in [(0, 0), (6, 6), (1, 6)] {
            let r = client
                .register_chunk(with_token(
                    chunk_req(&a.peer_id, "x", first, last),
                    &a.token,
                ))
                .await
                .map(|_| ());
            expect(
                Code::InvalidArgument,
                r,
                &format!("chunks {first}-{last} of a 5-chunk file"),
            );
        }

        // AU-1: no, malformed or wrong token.
        let r = client
            .register_chunk(chunk_req(&a.peer_id, "x", 1, 1))
            .await
            .map(|_| ());
        expect(Code::Unauthenticated, r, "no token");
        let r = client
            .register_chunk(with_token(chunk_req(&a.peer_id, "x", 1, 1), "not-a-token"))
            .await
            .map(|_| ());
        expect(Code::Unauthenticated, r, "malformed token");
        let wrong = "0123456789abcdef0123456789abcdef";
        let r = client
            .register_chunk(with_token(chunk_req(&a.peer_id, "x", 1, 1), wrong))
            .await
            .map(|_| ());
        expect(Code::Unauthenticated, r, "wrong token");
        let r = client
            .leave(LeaveRequest {
                peer_id: a.peer_id.clone(),
            })
            .await
            .map(|_| ());
        expect(Code::Unauthenticated, r, "leave without token");
        let mut extend = register_req(vec![full(&manifest("w", &data(10, 6)))], 4001);
        extend.peer_id = a.peer_id.clone();
        let r = client.register(extend.clone()).await.map(|_| ());
        expect(
            Code::Unauthenticated,
            r,
            "extend a session without its token",
        );

        // MP-6: A acting for B.
        let r = client
            .leave(with_token(
                LeaveRequest {
                    peer_id: b.peer_id.clone(),
                },
                &a.token,
            ))
            .await
            .map(|_| ());
        expect(Code::PermissionDenied, r, "A leaves for B");
        let r = client
            .register_chunk(with_token(chunk_req(&b.peer_id, "x", 1, 1), &a.token))
            .await
            .map(|_| ());
        expect(Code::PermissionDenied, r, "A registers chunks for B");
        let r = client
            .heartbeat(with_token(
                HeartbeatRequest {
                    peer_id: b.peer_id.clone(),
                },
                &a.token,
            ))
            .await
            .map(|_| ());
        expect(Code::PermissionDenied, r, "A heartbeats for B");

        // An id the tracker never issued: register again.
        let r = client
            .heartbeat(with_token(
                HeartbeatRequest {
                    peer_id: "00000000000000aa".into(),
                },
                wrong,
            ))
            .await
            .map(|_| ());
        expect(Code::NotFound, r, "heartbeat of an unknown peer");
        let r = client
            .heartbeat(with_token(
                HeartbeatRequest {
                    peer_id: "zz".into(),
                },
                wrong,
            ))
            .await
            .map(|_| ());
        expect(Code::InvalidArgument, r, "malformed peer id");

        assert_eq!(
            snapshot(&tracker).await,
            before,
            "a refusal changed the tracker"
        );
        eprintln!("FIGURE BI-1/BI-2/BI-5/BI-6/AU-1/MP-6: {tried} refusals, each with its code; mutations 0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_registration_is_idempotent_and_addresses_are_observed() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let x = manifest("x", &data(5000, 1));
        // BI-4: the same Register a hundred times is one holder.
        for _ in 0..100 {
            register(&tracker, vec![full(&x)], 4100).await;
        }
        let found = tracker.locate("x").await;
        assert_eq!(found.holder_count, 1);
        assert_eq!(found.chunk_holders, vec![1; 5]);

        // MP-7: an advertised victim host is ignored; the source address wins.
        let mut req = register_req(vec![full(&x)], 4200);
        req.advertise_host = "10.9.9.9".into();
        let resp = tracker
            .client()
            .await
            .register(req)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.addr, "127.0.0.1:4200");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_refusals() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f23 = data(69630, 23);
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"not for sharing").unwrap();
        // The share directory holds a link out of itself (FS-1), and one
        // that stays inside, before the peer scans it.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("share");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("23"), &f23).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.join("23"), dir.join("alias")).unwrap();
        let peer = TestPeer::spawn(&tracker.url(), tmp, dir, &[]).await;
        peer.registered().await;

        let code = |r: Result<Vec<u8>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
        assert_eq!(
            code(get_chunk(peer.listen, "23", 0).await),
            Code::InvalidArgument,
            "chunk 0"
        );
        assert_eq!(
            code(get_chunk(peer.listen, "23", 69).await),
            Code::InvalidArgument,
            "chunk 69 of 68"
        );
        assert_eq!(
            code(get_chunk(peer.listen, "nope", 1).await),
            Code::NotFound
        );
        for hostile in ["../../etc/passwd", "/etc/passwd", "..", "a/b"] {
            assert_eq!(
                code(get_chunk(peer.listen, hostile, 1).await),
                Code::InvalidArgument,
                "{hostile}"
            );
        }
        for absent in ["%2e%2e%2fetc%2fpasswd", "link", "secret", ".hive"] {
            assert_eq!(
                code(get_chunk(peer.listen, absent, 1).await),
                Code::NotFound,
                "{absent}"
            );
        }
        assert_eq!(
            get_chunk(peer.listen, "23", 68).await.unwrap(),
            chunk_of(&f23, 68)
        );
        assert_eq!(
            get_chunk(peer.listen, "alias", 1).await.unwrap(),
            chunk_of(&f23, 1),
            "a link inside is fine"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_destination_is_not_overwritten_without_force() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(20_000, 8);
        let _seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let mine = b"my own, different file called f".to_vec();
        let peer = TestPeer::start(&tracker, &[("f", &mine)]).await;

        // FS-4: refused, and the bytes on disk are untouched.
        let out = peer.peerctl(&["fetch", "f"]).await;
        assert_eq!(
            out.status.code(),
            Some(64 + Code::AlreadyExists as i32),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(peer.dir.join("f")).unwrap(), mine);

        let out = peer.peerctl(&["fetch", "f", "--force"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(peer.dir.join("f")).unwrap(), f);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_when_the_tracker_or_every_holder_is_gone() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(50_000, 9);
        let mut seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let peer = TestPeer::start(&tracker, &[]).await;

        // CP-5: the last holder leaves; the download ends UNAVAILABLE at once.
        seeder.daemon.signal("TERM");
        within(20, seeder.daemon.wait()).await;
        let started = std::time::Instant::now();
        let mut ctl = peer.control_client().await;
        let status = async {
            let mut stream = ctl
                .fetch(FetchRequest {
                    name: "f".into(),
                    fail_fast: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        }
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        eprintln!(
            "FIGURE CP-5 (before any chunk): no holders -> UNAVAILABLE after {:?}",
            started.elapsed()
        );
        assert!(!peer.dir.join("f").exists(), "no final file without data");

        // The tracker itself gone: UNAVAILABLE too.
        drop(tracker);
        let out = peer.peerctl(&["fetch", "f"]).await;
        assert_eq!(
            out.status.code(),
            Some(64 + Code::Unavailable as i32),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_shared_file_is_data_loss_and_withdrawn() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let f = data(8192, 10);
        // Serve-time detection alone: the watcher would retire the whole
        // edited file (tests/control_plane.rs covers that).
        let peer =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--watch-interval", "0s"]).await;
        assert_eq!(
            get_chunk(peer.listen, "f", 3).await.unwrap(),
            chunk_of(&f, 3)
        );

        // FS-5: edit chunk 3 in place.
        let mut edited = f.clone();
        edited[2 * 1024 + 5] ^= 0xff;
        std::fs::write(peer.dir.join("f"), &edited).unwrap();
        let started = std::time::Instant::now();
        let err = get_chunk(peer.listen, "f", 3).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss);
        // Untouched chunks are still served; the damaged one is withdrawn.
        assert_eq!(
            get_chunk(peer.listen, "f", 4).await.unwrap(),
            chunk_of(&f, 4)
        );
        assert_eq!(
            get_chunk(peer.listen, "f", 3).await.unwrap_err().code(),
            Code::NotFound
        );
        loop {
            let found = tracker.locate("f").await;
            if found.chunk_holders[2] == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        eprintln!(
            "FIGURE FS-5: DATA_LOSS on the first read of the edited chunk; withdrawal visible at the tracker after {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunks_are_served_in_segments() {
    within(60, async {
        let tracker = TestTracker::start().await;
        // Three chunks of 4 MiB, the last one short: each is read and sent
        // a segment at a time.
        let f = data((9 << 20) + 5, 11);
        let seeder =
            TestPeer::start_with(&tracker.url(), &[("f", &f)], &["--chunk-size", "4MiB"]).await;
        let got = get_chunk(seeder.listen, "f", 2).await.unwrap();
        assert_eq!(got, &f[4 << 20..8 << 20]);
        assert_eq!(
            get_chunk(seeder.listen, "f", 3).await.unwrap(),
            &f[8 << 20..]
        );
        let leecher = TestPeer::start(&tracker, &[]).await;
        let out = leecher.peerctl(&["fetch", "f"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(leecher.dir.join("f")).unwrap(), f);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_lists_no_more_holders_than_asked() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let x = manifest("x", &data(5000, 1));
        for port in [4801, 4802, 4803] {
            register(&tracker, vec![full(&x)], port).await;
        }
        let mut client = tracker.client().await;
        for (max_holders, listed) in [(0, 3), (1, 1), (2, 2), (3, 3), (u32::MAX, 3)] {
            let found = client
                .locate(LocateRequest {
                    name: "x".into(),
                    max_holders,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(found.holders.len(), listed, "max_holders {max_holders}");
            assert_eq!(
                (found.holder_count, found.chunk_holders.to_vec()),
                (3, vec![3; 5]),
                "counts cover every holder"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_leaves_out_a_manifest_the_caller_already_has() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let x = manifest("x", &data(5000, 1));
        register(&tracker, vec![full(&x)], 4800).await;
        let mut client = tracker.client().await;
        let ask = |known: &[u8]| LocateRequest {
            name: "x".into(),
            known_digest: bytes::Bytes::copy_from_slice(known),
            ..Default::default()
        };
        let first = client.locate(ask(&[])).await.unwrap().into_inner();
        assert_eq!(first.manifest.as_ref(), Some(&x));
        let again = client.locate(ask(&x.digest)).await.unwrap().into_inner();
        assert_eq!(again.manifest, None, "the caller has it");
        assert_eq!(
            (again.holder_count, again.chunk_holders.to_vec()),
            (1, vec![1; 5])
        );
        let stale = client.locate(ask(&[9; 32])).await.unwrap().into_inner();
        assert_eq!(
            stale.manifest.as_ref(),
            Some(&x),
            "other content: the manifest is sent"
        );
        let bad = client.locate(ask(&[9; 31])).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_drops_every_holding_of_the_peer_at_once() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let x = manifest("x", &data(5000, 1));
        let y = manifest("y", &data(3000, 2));
        let a = register(&tracker, vec![full(&x), full(&y)], 4901).await;
        let part = SharedFile {
            manifest: Some(x.clone()),
            chunks: vec![ChunkRange { first: 1, last: 2 }],
        };
        let b = register(&tracker, vec![part], 4902).await;
        let counts = |found: &hive::pb::tracker::LocateResponse| {
            let ids: Vec<&str> = found.holders.iter().map(|h| h.peer_id.as_str()).collect();
            (
                found.holder_count,
                ids.join(","),
                found.chunk_holders.to_vec(),
            )
        };
        let mut client = tracker.client().await;
        let leave = |who: &RegisterResponse| {
            with_token(
                LeaveRequest {
                    peer_id: who.peer_id.clone(),
                },
                &who.token,
            )
        };

        // A's holdings go at once, B's stay.
        client.leave(leave(&a)).await.expect("A leaves");
        let (found_x, found_y) = (tracker.locate("x").await, tracker.locate("y").await);
        assert_eq!(
            counts(&found_x),
            (1, b.peer_id.clone(), vec![1, 1, 0, 0, 0])
        );
        assert_eq!(counts(&found_y), (0, String::new(), vec![0; 3]));

        // The last holder leaves: no holder, every chunk's count 0.
        client.leave(leave(&b)).await.expect("B leaves");
        let found_x = tracker.locate("x").await;
        assert_eq!(counts(&found_x), (0, String::new(), vec![0; 5]));

        // The session is over: its token is good for nothing.
        let r = client
            .heartbeat(with_token(
                HeartbeatRequest {
                    peer_id: a.peer_id.clone(),
                },
                &a.token,
            ))
            .await
            .expect_err("a heartbeat after leave is accepted");
        assert_eq!(r.code(), Code::NotFound, "heartbeat after leave");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_with_one_conflicting_file_registers_none_of_them() {
    within(60, async {
        let tracker = TestTracker::start().await;
        let x = manifest("x", &data(5000, 1));
        let a = register(&tracker, vec![full(&x)], 5001).await;
        let before = snapshot(&tracker).await;
        let mut client = tracker.client().await;
        let fresh = manifest("fresh", &data(3000, 2));
        let conflicting = manifest("x", &data(5000, 99));

        // A new session, and A's own session extended: the fresh file comes
        // first, the conflict second.
        let new = register_req(vec![full(&fresh), full(&conflicting)], 5002);
        let mut extend = register_req(vec![full(&fresh), full(&conflicting)], 5001);
        extend.peer_id = a.peer_id.clone();
        for (what, req) in [
            ("new session", tonic::Request::new(new)),
            ("extended session", with_token(extend, &a.token)),
        ] {
            let status = client.register(req).await.expect_err(what);
            assert_eq!(status.code(), Code::AlreadyExists, "{what}: {status}");
            let missing = client
                .locate(LocateRequest {
                    name: "fresh".into(),
                    ..Default::default()
                })
                .await
                .expect_err("the file before the conflict was registered");
            assert_eq!(missing.code(), Code::NotFound, "{what}: the first file");
            let listed = client
                .list_files(ListFilesRequest::default())
                .await
                .unwrap()
                .into_inner();
            let names: Vec<&str> = listed.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["x"], "{what}");
            assert_eq!(snapshot(&tracker).await, before, "{what}");
        }
    })
    .await;
}
