//! TLS with a swarm CA (TESTPLAN AU-2, AU-4): only members reach the
//! tracker and the peers; a stranger, a certificate from another CA or an
//! expired one fails the handshake (UNAVAILABLE, nothing registered); a
//! session token is good only over the connection of the member that
//! registered it, and a member's live session holds its address against
//! other members; plaintext and TLS never meet silently; members download
//! as before. Certificates are made at run time in a temporary directory.

mod common;
#[path = "common/redis.rs"]
mod redis_server;
#[path = "common/tls.rs"]
mod swarm;

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use common::{TestPeer, TestTracker, download::fetch_whole, manifest, peerctl, with_token, within};
use hive::pb::{
    peer::{GetChunkRequest, peer_client::PeerClient},
    tracker::{self as trk, tracker_client::TrackerClient},
    types::ChunkRange,
};
use hive_runtime::tls::{Tls, certs::Validity};
use redis_server::RedisServer;
use tonic::{Code, transport::ClientTlsConfig};

use swarm::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_download_over_tls_with_the_right_digest() {
    within(120, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory"]).await;
        let data = common::data(3 << 20, 20);
        let seed_flags = swarm.flags("seed");
        let seed = TestPeer::start_with(
            &https(tracker.addr),
            &[("f.bin", &data)],
            &strs(&seed_flags),
        )
        .await;
        let leech_flags = swarm.flags("leech");
        let leech = TestPeer::start_with(&https(tracker.addr), &[], &strs(&leech_flags)).await;

        let done = fetch_whole(leech.control, "f.bin").await.expect("fetched");
        assert_eq!(done.digest, manifest("f.bin", &data).digest);
        let got = std::fs::read(&done.path).expect("downloaded");
        assert_eq!(blake3::hash(&got), blake3::hash(&data));

        // A member's own client reads a chunk from the seed too; the tracker
        // lists the file with both holders.
        let mut client = PeerClient::new(tls_channel(seed.listen, swarm.client("reader")));
        let chunk = client
            .get_chunk(GetChunkRequest {
                name: "f.bin".into(),
                chunk: 1,
                ..Default::default()
            })
            .await;
        assert!(chunk.is_ok(), "{:?}", chunk.err());
        assert_eq!(names(tracker.addr, &swarm).await, ["f.bin"]);
    })
    .await;
}

/// Each way in without a good certificate, and what it is.
fn outsiders(swarm: &Swarm) -> Vec<(&'static str, ClientTlsConfig)> {
    let other = Swarm::new();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let expired = Validity {
        not_before: now - 3 * day,
        not_after: now - day,
    };
    // Another CA's member, who trusts this swarm's CA (so the server is the
    // one to refuse it).
    let foreign = {
        let m = other.ca.member("foreign", &[], Validity::days(1)).unwrap();
        Tls::from_pem(
            m.cert_pem.as_bytes(),
            m.key_pem.as_bytes(),
            swarm.ca.cert_pem().as_bytes(),
        )
        .unwrap()
        .client()
    };
    vec![
        ("no client certificate", swarm.stranger()),
        ("a certificate from another CA", foreign),
        ("an expired certificate", swarm.client_with("late", expired)),
        // AU-2: a client trusting another CA refuses the server.
        ("a client trusting another CA", other.client("lost")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_are_refused_by_the_tracker_and_by_peers() {
    within(120, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory"]).await;
        let data = common::data(64 << 10, 21);
        let peer_flags = swarm.flags("seed");
        let peer = TestPeer::start_with(
            &https(tracker.addr),
            &[("f.bin", &data)],
            &strs(&peer_flags),
        )
        .await;
        for (who, tls) in outsiders(&swarm) {
            let mut t = TrackerClient::new(tls_channel(tracker.addr, tls.clone()));
            let e = t.list_files(list()).await.expect_err(who);
            assert!(refused_in_transport(&e), "{who}: {e:?}");
            let e = t
                .register(register("theirs.bin", b"theirs", ""))
                .await
                .expect_err(who);
            assert!(refused_in_transport(&e), "{who}: {e:?}");
            let mut p = PeerClient::new(tls_channel(peer.listen, tls));
            let e = p
                .get_chunk(GetChunkRequest {
                    name: "f.bin".into(),
                    chunk: 1,
                    ..Default::default()
                })
                .await
                .expect_err(who);
            assert!(refused_in_transport(&e), "{who}: {e:?}");
        }
        // Nothing of theirs got in.
        assert_eq!(names(tracker.addr, &swarm).await, ["f.bin"]);
    })
    .await;
}

/// A peer daemon whose certificate is not the swarm's never registers: the
/// tracker refuses its handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_daemon_from_another_swarm_cannot_register() {
    within(120, async {
        let swarm = Swarm::new();
        let other = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory"]).await;
        // Its own CA's certificate, trusting the swarm's CA for the server.
        let mut flags = other.flags("intruder");
        flags[5] = swarm.dir.path().join("ca-copy.pem").display().to_string();
        std::fs::write(&flags[5], swarm.ca.cert_pem()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("share");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.bin"), b"intruder's file").unwrap();
        let intruder = TestPeer::spawn(&https(tracker.addr), tmp, dir, &strs(&flags)).await;
        // Its Register is retried and refused; a member sees nothing of it.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            assert!(names(tracker.addr, &swarm).await.is_empty());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(intruder);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_never_meet() {
    within(60, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory"]).await;
        let plain = TestTracker::start().await;

        // A plaintext client on the TLS port: refused at once.
        let started = Instant::now();
        let e = TrackerClient::new(plain_channel(tracker.addr))
            .list_files(list())
            .await
            .expect_err("plaintext on a TLS port");
        assert!(refused_in_transport(&e), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        // A member's TLS client on a plaintext port: refused at once too.
        let started = Instant::now();
        let e = TrackerClient::new(tls_channel(plain.addr, swarm.client("m")))
            .list_files(list())
            .await
            .expect_err("TLS on a plaintext port");
        assert!(refused_in_transport(&e), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        // peerctl says so, and how to fix it.
        let out = peerctl(&tracker.url(), "/nonexistent.sock", &["files"]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64 + Code::Unavailable as i32),
            "{err}"
        );
        assert!(
            err.contains("https://") && err.contains("--tls-ca"),
            "{err}"
        );

        // A daemon with TLS refuses a plaintext URL; https:// without TLS is
        // refused too. Both name the fix.
        let flags = swarm.flags("p");
        let mut with_tls = vec!["--tracker".to_owned(), tracker.url()];
        with_tls.extend(flags.iter().cloned());
        with_tls.push("files".into());
        let out = run_peerctl(&strs(&with_tls)).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("give https://"), "{err}");
        let out = run_peerctl(&["--tracker", &https(tracker.addr), "files"]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("--tls-cert"), "{err}");

        // With the member's flags, peerctl lists over TLS.
        let mut ok = vec!["--tracker".to_owned(), https(tracker.addr)];
        ok.extend(flags);
        ok.push("files".into());
        let out = run_peerctl(&strs(&ok)).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

/// AU-4 on one backend: a token used over another member's connection is
/// PERMISSION_DENIED and changes nothing; its owner goes on.
async fn stolen_token_is_useless(tracker: SocketAddr, swarm: &Swarm) {
    let mut owner = TrackerClient::new(tls_channel(tracker, swarm.client("owner")));
    let mut thief = TrackerClient::new(tls_channel(tracker, swarm.client("thief")));
    let reg = owner
        .register(register("owned.bin", b"the owner's file", ""))
        .await
        .expect("owner registers")
        .into_inner();
    let (id, token) = (reg.peer_id.clone(), reg.token.clone());
    let before = common::snapshot_via(&mut owner).await;

    let denied = |r: Result<_, tonic::Status>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
    };
    let hb = trk::HeartbeatRequest {
        peer_id: id.clone(),
    };
    denied(
        thief
            .heartbeat(with_token(hb.clone(), &token))
            .await
            .map(drop),
        "heartbeat",
    );
    let chunk = trk::RegisterChunkRequest {
        peer_id: id.clone(),
        name: "owned.bin".into(),
        withdrawn: vec![ChunkRange { first: 1, last: 1 }],
        ..Default::default()
    };
    denied(
        thief
            .register_chunk(with_token(chunk, &token))
            .await
            .map(drop),
        "register_chunk",
    );
    let mut again = register("thiefs.bin", b"the thief's file", "");
    again.peer_id = id.clone();
    denied(
        thief.register(with_token(again, &token)).await.map(drop),
        "register",
    );
    let withdraw = trk::WithdrawRequest {
        peer_id: id.clone(),
        name: "owned.bin".into(),
    };
    denied(
        thief.withdraw(with_token(withdraw, &token)).await.map(drop),
        "withdraw",
    );
    let leave = trk::LeaveRequest {
        peer_id: id.clone(),
    };
    denied(
        thief.leave(with_token(leave, &token)).await.map(drop),
        "leave",
    );

    assert_eq!(
        common::snapshot_via(&mut owner).await,
        before,
        "nothing changed"
    );
    owner
        .heartbeat(with_token(hb, &token))
        .await
        .expect("the owner's token still works for the owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_token_is_refused_over_another_members_connection() {
    within(60, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory"]).await;
        stolen_token_is_useless(tracker.addr, &swarm).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_token_is_refused_on_the_shared_catalog_too() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    within(60, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--store", &redis.url()]).await;
        stolen_token_is_useless(tracker.addr, &swarm).await;
    })
    .await;
}

/// The address rule: a member may hold only an address on a host its
/// certificate names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_host_must_be_named_by_the_members_certificate() {
    within(60, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory", "--trust-advertise"]).await;
        let mut a = TrackerClient::new(tls_channel(tracker.addr, swarm.client("a.example")));
        let mut b = TrackerClient::new(tls_channel(tracker.addr, swarm.client("b.example")));
        let e = b
            .register(register("b.bin", b"b's", "a.example"))
            .await
            .expect_err("b claims a's host");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("--host a.example"), "{e:?}");
        assert!(names(tracker.addr, &swarm).await.is_empty());
        let reg = a
            .register(register("a.bin", b"a's", "a.example"))
            .await
            .expect("a's own host")
            .into_inner();
        assert_eq!(reg.addr, "a.example:4000");
    })
    .await;
}

/// AU-2's figure: the median time to a first answer on a new connection,
/// TLS (mutual) and plaintext, in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_p50() {
    within(120, async {
        let swarm = Swarm::new();
        let tls = tls_tracker(&swarm, &["--in-memory"]).await;
        let plain = TestTracker::start().await;
        let config = swarm.client("timer");
        let mut tls_ms = Vec::new();
        let mut plain_ms = Vec::new();
        for _ in 0..25 {
            for (addr, out, secure) in [
                (tls.addr, &mut tls_ms, true),
                (plain.addr, &mut plain_ms, false),
            ] {
                let started = Instant::now();
                let channel = match secure {
                    true => tls_channel(addr, config.clone()),
                    false => plain_channel(addr),
                };
                TrackerClient::new(channel)
                    .list_files(list())
                    .await
                    .expect("answered");
                out.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let p50 = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (t, p) = (p50(&mut tls_ms), p50(&mut plain_ms));
        eprintln!("first answer on a new connection, p50: TLS {t:.2} ms, plaintext {p:.2} ms");
        assert!(t < 250.0, "TLS handshake p50 {t:.2} ms");
    })
    .await;
}

/// Runs `peerctl` with just `args` (no HIVE_* from the environment).
async fn run_peerctl(args: &[&str]) -> std::process::Output {
    let mut cmd = common::clean_command("peerctl");
    within(
        30,
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run peerctl")
}
