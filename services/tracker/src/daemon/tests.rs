//! The tracker's answer path against a failing disk: a Register or
//! RegisterChunk whose journal write (or, with `--fsync always`, fsync)
//! fails is refused UNAVAILABLE, never acknowledged; the tracker stops; and
//! after a restart from its data directory the refused change is nowhere.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use hive::{
    FileName, Manifest,
    pb::{
        tracker::{
            ListFilesRequest, LocateRequest, RegisterChunkRequest, RegisterRequest,
            RegisterResponse, SharedFile, tracker_client::TrackerClient,
        },
        types::{self, ChunkRange},
    },
};
use hive_runtime::grpc::{TOKEN_METADATA, endpoint};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

use super::{ServeError, open, serve};
use crate::{Config, Tracker, journal::Fsync};

const WAIT: Duration = Duration::from_secs(10);

/// A tracker serving on a port of its own, as the `tracker` bin runs it.
struct Running {
    tracker: Tracker,
    client: TrackerClient<Channel>,
    served: JoinHandle<Result<(), ServeError>>,
    stop: CancellationToken,
}

async fn start(dir: &Path, fsync: Fsync) -> Running {
    let config = Config {
        data_dir: dir.to_owned(),
        fsync,
        ..Config::default()
    };
    let tracker = open(&config).expect("open the catalog");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn({
        let (tracker, stop) = (tracker.clone(), stop.clone());
        async move {
            serve(
                listener,
                Arc::new(tracker),
                &config,
                None,
                stop.cancelled_owned(),
            )
            .await
        }
    });
    let channel = endpoint(&format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let client = TrackerClient::new(channel);
    Running {
        tracker,
        client,
        served,
        stop,
    }
}

/// `x`: 5,000 bytes in five chunks of 1 KiB.
fn manifest() -> types::Manifest {
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let mut tmp = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut tmp, &bytes).unwrap();
    let m = Manifest::from_file(&tmp, 5000, FileName::new("x").unwrap(), None).unwrap();
    assert_eq!(m.chunk_count(), 5);
    types::Manifest::from(&m)
}

/// Registers `x` holding chunk 1 only.
fn register_request() -> RegisterRequest {
    RegisterRequest {
        files: vec![SharedFile {
            manifest: Some(manifest()),
            chunks: vec![ChunkRange { first: 1, last: 1 }],
        }],
        port: 4001,
        ..Default::default()
    }
}

/// Adds chunk 2 of `x` to the session `who`.
fn chunk_request(who: &RegisterResponse) -> tonic::Request<RegisterChunkRequest> {
    let mut req = tonic::Request::new(RegisterChunkRequest {
        peer_id: who.peer_id.clone(),
        name: "x".into(),
        chunks: vec![ChunkRange { first: 2, last: 2 }],
        withdrawn: vec![],
    });
    let token = who.token.parse().unwrap();
    req.metadata_mut().insert(TOKEN_METADATA, token);
    req
}

/// The tracker stops by itself once its journal is broken, with an error.
async fn stops_broken(running: Running) {
    let served = tokio::time::timeout(WAIT, running.served)
        .await
        .expect("the tracker stops by itself")
        .unwrap();
    assert!(
        matches!(served, Err(ServeError::Store(_))),
        "stopped with {served:?}"
    );
}

/// Each way the disk fails under the journal: a write (ENOSPC), or with
/// `--fsync always` the fsync (EINVAL on /dev/null).
const FAULTS: [(Fsync, &str); 2] = [(Fsync::Periodic, "/dev/full"), (Fsync::Always, "/dev/null")];

#[tokio::test]
async fn a_register_chunk_the_journal_cannot_store_is_refused_and_not_kept() {
    for (fsync, device) in FAULTS {
        tokio::time::timeout(WAIT * 3, async {
            let dir = tempfile::tempdir().unwrap();
            let mut running = start(dir.path(), fsync).await;
            let who = running
                .client
                .register(register_request())
                .await
                .expect("register")
                .into_inner();

            running.tracker.journal().fail_log_with(device);
            let refused = running
                .client
                .register_chunk(chunk_request(&who))
                .await
                .expect_err("a RegisterChunk that is not stored is acknowledged");
            assert_eq!(refused.code(), Code::Unavailable, "{fsync:?}: {refused}");
            stops_broken(running).await;

            // What was acknowledged is back; the refused chunk is not.
            let mut running = start(dir.path(), fsync).await;
            let found = running
                .client
                .locate(LocateRequest {
                    name: "x".into(),
                    ..Default::default()
                })
                .await
                .expect("locate")
                .into_inner();
            assert_eq!(found.holder_count, 1, "{fsync:?}");
            assert_eq!(found.holders[0].chunk_count, 1, "{fsync:?}");
            assert_eq!(found.chunk_holders.to_vec(), [1, 0, 0, 0, 0], "{fsync:?}");
            running.stop.cancel();
            running.served.await.unwrap().expect("a clean stop");
        })
        .await
        .expect("within the time limit");
    }
}

#[tokio::test]
async fn a_register_the_journal_cannot_store_is_refused_and_not_kept() {
    for (fsync, device) in FAULTS {
        tokio::time::timeout(WAIT * 3, async {
            let dir = tempfile::tempdir().unwrap();
            let mut running = start(dir.path(), fsync).await;
            running.tracker.journal().fail_log_with(device);
            let refused = running
                .client
                .register(register_request())
                .await
                .expect_err("a Register that is not stored is acknowledged");
            assert_eq!(refused.code(), Code::Unavailable, "{fsync:?}: {refused}");
            stops_broken(running).await;

            let mut running = start(dir.path(), fsync).await;
            let missing = running
                .client
                .locate(LocateRequest {
                    name: "x".into(),
                    ..Default::default()
                })
                .await
                .expect_err("the refused file is back after a restart");
            assert_eq!(missing.code(), Code::NotFound, "{fsync:?}");
            let listed = running
                .client
                .list_files(ListFilesRequest::default())
                .await
                .expect("list")
                .into_inner();
            assert!(listed.files.is_empty(), "{fsync:?}: {listed:?}");
            running.stop.cancel();
            running.served.await.unwrap().expect("a clean stop");
        })
        .await
        .expect("within the time limit");
    }
}
