//! Tracker replicas on one shared store, as processes: the `tracker` binary
//! started with `--store` on a `redis-server` of the test's own, and real
//! peers talking to different replicas.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use common::{TestPeer, TestTracker, data, download::fetch_whole, within};
use std::time::{Duration, Instant};

use hive::pb::tracker::{HeartbeatRequest, LeaveRequest, LocateRequest};
use redis_server::{RedisCluster, RedisServer};
use tonic::Code;

/// A tracker replica on `store`.
async fn replica(store: &str) -> TestTracker {
    TestTracker::start_with(&[
        "--store",
        store,
        "--ttl",
        "3s",
        "--heartbeat-interval",
        "1s",
    ])
    .await
}

/// A file shared through one replica is found and downloaded through the
/// other, and the session lives in the store: the other replica takes its
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_shared_through_one_replica_downloads_through_the_other() {
    if let Some(redis) = RedisServer::start() {
        shared_through_one_downloaded_through_the_other(&redis.url()).await;
    }
}

/// The same with the replicas on a 3-primary Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_file_shared_through_one_replica_downloads_through_the_other() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("start the cluster");
    if let Some(cluster) = cluster {
        shared_through_one_downloaded_through_the_other(&cluster.url()).await;
    }
}

async fn shared_through_one_downloaded_through_the_other(store: &str) {
    within(120, async {
        let (a, b) = (replica(store).await, replica(store).await);
        let content = data(300_000, 7);
        let seeder = TestPeer::start(&a, &[("f.bin", &content)]).await;
        let found = b.locate("f.bin").await;
        assert_eq!(found.holder_count, 1);
        assert!(found.chunk_holders.iter().all(|&n| n == 1));

        let leecher = TestPeer::start(&b, &[]).await;
        fetch_whole(leecher.control, "f.bin")
            .await
            .expect("download through the other replica");
        assert_eq!(
            std::fs::read(leecher.dir.join("f.bin")).expect("downloaded"),
            content
        );
        // The downloader, registered through b, is listed through a.
        let found = a.locate("f.bin").await;
        assert_eq!(found.holder_count, 2, "{found:?}");
        drop(seeder);
    })
    .await;
}

/// The status codes come through the gRPC layer unchanged: a token one
/// replica minted is checked by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_checked_by_every_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    within(60, async {
        let (a, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
        let reg = a
            .client()
            .await
            .register(hive::pb::tracker::RegisterRequest {
                port: 4001,
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner();
        let heartbeat = |token: &str| {
            common::with_token(
                HeartbeatRequest {
                    peer_id: reg.peer_id.clone(),
                },
                token,
            )
        };
        let mut bc = b.client().await;
        bc.heartbeat(heartbeat(&reg.token))
            .await
            .expect("b accepts a's token");
        let wrong = "A".repeat(reg.token.len());
        let status = bc
            .heartbeat(heartbeat(&wrong))
            .await
            .expect_err("wrong token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        bc.leave(common::with_token(
            LeaveRequest {
                peer_id: reg.peer_id.clone(),
            },
            &reg.token,
        ))
        .await
        .expect("leave through b");
        let status = a
            .client()
            .await
            .heartbeat(heartbeat(&reg.token))
            .await
            .expect_err("gone");
        assert_eq!(status.code(), Code::NotFound);
    })
    .await;
}

/// Redis restarted empty (no persistence): every live peer is back in
/// Locate within one heartbeat interval and a margin, by registering again
/// when its heartbeat is answered NOT_FOUND, through a tracker that
/// reconnected by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_register_again_after_redis_restarts_empty() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    within(120, async {
        // Without the Locate answer cache: an answer read just before the
        // restart could be served for up to its period (100 ms), and this
        // test is about what the store holds after it.
        let tracker = TestTracker::start_with(&[
            "--store",
            &redis.url(),
            "--ttl",
            "3s",
            "--heartbeat-interval",
            "1s",
            "--locate-cache",
            "0s",
        ])
        .await;
        let content = data(100_000, 3);
        let _seeder = TestPeer::start(&tracker, &[("f.bin", &content)]).await;
        assert_eq!(tracker.locate("f.bin").await.holder_count, 1);

        redis.restart_empty();
        let restarted = Instant::now();
        let mut client = tracker.client().await;
        let locate = || LocateRequest {
            name: "f.bin".into(),
            ..Default::default()
        };
        // Gone with the data at first (or unavailable while reconnecting).
        let first = client.locate(locate()).await;
        assert!(
            first
                .as_ref()
                .is_err_and(|s| matches!(s.code(), Code::NotFound | Code::Unavailable)),
            "{first:?}"
        );
        loop {
            if let Ok(found) = client.locate(locate()).await
                && found.get_ref().holder_count == 1
            {
                // The counts came back with the registration, exact: the
                // seeder holds every chunk.
                let counts = &found.get_ref().chunk_holders;
                assert!(
                    !counts.is_empty() && counts.iter().all(|&c| c == 1),
                    "{counts:?}"
                );
                break;
            }
            // Heartbeat interval 1 s, plus the margin of a busy machine.
            assert!(
                restarted.elapsed() < Duration::from_secs(5),
                "not back in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("back in Locate {:?} after the restart", restarted.elapsed());
    })
    .await;
}
