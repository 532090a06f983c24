//! TESTPLAN AU-4, a member's address: on a TLS tracker a member's live
//! session holds its advertised address against every other member
//! (PERMISSION_DENIED, nothing changed), on the embedded catalog and on
//! Redis, across a tracker restart, until the session leaves or expires;
//! the same member (a restarted peer) takes it back.

mod common;
#[path = "common/redis.rs"]
mod redis_server;
#[path = "common/tls.rs"]
mod swarm;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{with_token, within};
use hive::pb::tracker::{self as trk, tracker_client::TrackerClient};
use redis_server::RedisServer;
use swarm::*;
use tonic::Code;

/// AU-4 on one backend: a member's live session holds its address. Another
/// member's Register there (a certificate of the same name is another
/// member) is PERMISSION_DENIED and changes nothing; the holder restarted
/// (a new connection, the same certificate) takes it back; once it left,
/// another member may take it.
async fn an_address_is_held_by_its_member(tracker: SocketAddr, swarm: &Swarm) {
    let a_cert = swarm.client("a");
    let mut a = TrackerClient::new(tls_channel(tracker, a_cert.clone()));
    let mut b = TrackerClient::new(tls_channel(tracker, swarm.client("a")));
    let held = a
        .register(register("a.bin", b"a's file", ""))
        .await
        .expect("a registers")
        .into_inner();
    let before = common::snapshot_via(&mut a).await;

    let e = b
        .register(register("b.bin", b"b's file", ""))
        .await
        .expect_err("b takes a's address");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains(&held.addr) && e.message().contains("--listen"),
        "{e:?}"
    );
    assert_eq!(
        common::snapshot_via(&mut a).await,
        before,
        "nothing changed"
    );
    let hb = |peer_id: &str| trk::HeartbeatRequest {
        peer_id: peer_id.into(),
    };
    a.heartbeat(with_token(hb(&held.peer_id), &held.token))
        .await
        .expect("a's session goes on");
    let found = a
        .locate(trk::LocateRequest {
            name: "a.bin".into(),
            ..Default::default()
        })
        .await
        .expect("locate")
        .into_inner();
    let holders: Vec<_> = found
        .holders
        .iter()
        .map(|h| (&*h.peer_id, &*h.addr))
        .collect();
    assert_eq!(holders, [(&*held.peer_id, &*held.addr)]);

    // a restarted: its address back, its old session gone.
    let mut restarted = TrackerClient::new(tls_channel(tracker, a_cert));
    let again = restarted
        .register(register("a.bin", b"a's file", ""))
        .await
        .expect("a registers again at its address")
        .into_inner();
    assert_eq!(again.addr, held.addr);
    let e = a
        .heartbeat(with_token(hb(&held.peer_id), &held.token))
        .await
        .expect_err("the old session");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // a left: the address is free.
    let leave = trk::LeaveRequest {
        peer_id: again.peer_id.clone(),
    };
    restarted
        .leave(with_token(leave, &again.token))
        .await
        .expect("a leaves");
    let taken = b
        .register(register("b.bin", b"b's file", ""))
        .await
        .expect("b takes the address a left")
        .into_inner();
    assert_eq!(taken.addr, held.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_live_address_is_refused_to_another_member() {
    within(60, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--in-memory"]).await;
        an_address_is_held_by_its_member(tracker.addr, &swarm).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_live_address_is_refused_on_the_shared_catalog_too() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    within(60, async {
        let swarm = Swarm::new();
        let tracker = tls_tracker(&swarm, &["--store", &redis.url()]).await;
        an_address_is_held_by_its_member(tracker.addr, &swarm).await;
    })
    .await;
}

/// The member holding an address is durable with its session: after a
/// tracker killed and started again (the journal replayed), another
/// member is still refused, and the holder's session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_address_is_held_across_a_tracker_restart() {
    within(90, async {
        let swarm = Swarm::new();
        let mut tracker = tls_tracker(&swarm, &[]).await;
        let a_cert = swarm.client("a");
        let mut a = TrackerClient::new(tls_channel(tracker.addr, a_cert.clone()));
        let held = a
            .register(register("a.bin", b"a's file", ""))
            .await
            .expect("a registers")
            .into_inner();

        tracker.restart_hard().await;
        let mut b = TrackerClient::new(tls_channel(tracker.addr, swarm.client("b")));
        let e = b
            .register(register("b.bin", b"b's file", ""))
            .await
            .expect_err("b takes a's restored address");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let mut a = TrackerClient::new(tls_channel(tracker.addr, a_cert));
        let hb = trk::HeartbeatRequest {
            peer_id: held.peer_id.clone(),
        };
        a.heartbeat(with_token(hb, &held.token))
            .await
            .expect("a's restored session goes on");
        assert_eq!(names(tracker.addr, &swarm).await, ["a.bin"]);
    })
    .await;
}

/// A session that went silent frees its address one TTL after its last
/// word, on both backends: another member is refused until then and gets
/// in after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_free_again_once_its_session_expires() {
    let redis = RedisServer::start();
    within(90, async {
        let ttl = Duration::from_secs(2);
        let mut stores = vec!["--in-memory".to_owned()];
        stores.extend(redis.as_ref().map(|r| format!("--store={}", r.url())));
        for store in stores {
            let swarm = Swarm::new();
            let flags = [
                store.as_str(),
                "--ttl",
                "2s",
                "--heartbeat-interval",
                "500ms",
            ];
            let tracker = tls_tracker(&swarm, &flags).await;
            let mut a = TrackerClient::new(tls_channel(tracker.addr, swarm.client("a")));
            let mut b = TrackerClient::new(tls_channel(tracker.addr, swarm.client("b")));
            b.list_files(list()).await.expect("b connected");
            let registered = Instant::now();
            a.register(register("a.bin", b"a's file", ""))
                .await
                .expect("a registers");
            let e = b
                .register(register("b.bin", b"b's", ""))
                .await
                .expect_err("held");
            assert_eq!(e.code(), Code::PermissionDenied, "{store}: {e:?}");
            // a is silent from now on.
            loop {
                match b.register(register("b.bin", b"b's", "")).await {
                    Ok(_) => break,
                    Err(e) => assert_eq!(e.code(), Code::PermissionDenied, "{store}: {e:?}"),
                }
                assert!(registered.elapsed() < ttl * 4, "{store}: still held");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let freed = registered.elapsed();
            assert!(freed >= ttl, "{store}: freed after {freed:?}");
            let backend = match store.as_str() {
                "--in-memory" => "embedded",
                _ => "Redis",
            };
            eprintln!(
                "FIGURE AU-4: {backend}: a silent session's address taken by another member \
                 {freed:.2?} after its last word (TTL {ttl:?}, tried every 100 ms, refused before)"
            );
        }
    })
    .await;
}
