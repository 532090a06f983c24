//! A tracker that lies (docs/RELIABILITY.md: FS-2): the downloader validates everything
//! the tracker says again, and never writes outside its directory.

mod common;

use common::*;
use hive::pb::{
    tracker::{
        self as pb,
        tracker_server::{Tracker, TrackerServer},
    },
    types::ChunkRange,
};
use tonic::{Code, Request, Response, Status};

/// Answers Register and Heartbeat like a tracker, and Locate with `manifest`
/// and `holders`, whatever name is asked for.
struct Liar {
    manifest: hive::pb::types::Manifest,
    holders: Vec<pb::Holder>,
}

#[tonic::async_trait]
impl Tracker for Liar {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(pb::RegisterResponse {
            peer_id: "00000000000000ab".into(),
            token: "0123456789abcdef0123456789abcdef".into(),
            addr: "127.0.0.1:1".into(),
            heartbeat_interval_ms: 1000,
            ttl_ms: 3000,
        }))
    }
    async fn list_files(
        &self,
        _: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        Err(Status::unimplemented("liar"))
    }
    async fn locate(
        &self,
        _: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        Ok(Response::new(pb::LocateResponse {
            chunk_holders: vec![1; digest_count(&self.manifest)].into(),
            holder_count: self.holders.len() as u32,
            holders: self.holders.clone(),
            manifest: Some(self.manifest.clone()),
        }))
    }
    async fn register_chunk(
        &self,
        _: Request<pb::RegisterChunkRequest>,
    ) -> Result<Response<pb::RegisterChunkResponse>, Status> {
        Ok(Response::new(pb::RegisterChunkResponse { chunks_held: 1 }))
    }
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval_ms: 1000,
            ttl_ms: 3000,
        }))
    }
    async fn leave(
        &self,
        _: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        Ok(Response::new(pb::LeaveResponse {}))
    }
    async fn withdraw(
        &self,
        _: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WithdrawResponse>, Status> {
        Ok(Response::new(pb::WithdrawResponse {}))
    }
}

/// Serves a lying tracker on port 0; returns its URL.
async fn serve_liar(liar: Liar) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TrackerServer::new(liar))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn holder(addr: &str) -> pb::Holder {
    pb::Holder {
        peer_id: "00000000000000cd".into(),
        addr: addr.into(),
        chunks: vec![ChunkRange { first: 1, last: 2 }],
        chunk_count: 2,
        confirmed: true,
        chunk_bitmap: Default::default(),
    }
}

/// Every path under `dir`, and the names beside it.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        out.push(format!(
            "share/{}",
            entry.unwrap().file_name().to_string_lossy()
        ));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_tracker_cannot_make_the_downloader_escape_or_misfile() {
    within(60, async {
        // A real holder of the bytes, so only the tracker's word is wrong.
        let real = TestTracker::start().await;
        let content = data(1822, 2);
        let holder_peer = TestPeer::start(&real, &[("x", &content)]).await;
        let holders = vec![
            holder(&holder_peer.listen.to_string()),
            holder("not an address"),
            holder("127.0.0.1:0"),
        ];

        type Spoil = fn(&mut hive::pb::types::Manifest);
        let lies: &[(&str, Spoil, Code)] = &[
            (
                "a path for a name",
                |m| m.name = "../escape".into(),
                Code::InvalidArgument,
            ),
            (
                "an absolute path",
                |m| m.name = "/tmp/escape".into(),
                Code::InvalidArgument,
            ),
            (
                "another file's name",
                |m| m.name = "y".into(),
                Code::InvalidArgument,
            ),
            (
                "digests that do not combine",
                |m| swap_digests(m, 0, 1),
                Code::InvalidArgument,
            ),
        ];
        for (lie, spoil, code) in lies {
            let mut manifest = manifest("x", &content);
            spoil(&mut manifest);
            let url = serve_liar(Liar {
                manifest,
                holders: holders.clone(),
            })
            .await;
            let peer = TestPeer::start_with(&url, &[], &[]).await;
            let before = listing(&peer.dir);
            let out = peer.peerctl(&["fetch", "x"]).await;
            assert_eq!(
                out.status.code(),
                Some(64 + *code as i32),
                "{lie}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = peer.peerctl(&["fetch", "x", "--chunk", "1"]).await;
            assert_eq!(
                out.status.code(),
                Some(64 + *code as i32),
                "{lie} (one chunk)"
            );
            assert_eq!(listing(&peer.dir), before, "{lie}: nothing was written");
        }

        // The truth, with junk holder addresses beside the real one: the
        // junk is skipped and the file arrives.
        let url = serve_liar(Liar {
            manifest: manifest("x", &content),
            holders,
        })
        .await;
        let peer = TestPeer::start_with(&url, &[], &[]).await;
        let out = peer.peerctl(&["fetch", "x"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(peer.dir.join("x")).unwrap(), content);
        eprintln!(
            "FIGURE FS-2: {} lies refused with INVALID_ARGUMENT, writes outside the directory 0",
            lies.len()
        );
    })
    .await;
}
