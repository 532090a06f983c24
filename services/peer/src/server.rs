//! The public Peer service: GetChunk, seed message 5 on the serving side.
//!
//! Uploads are capped: a request beyond the cap gets RESOURCE_EXHAUSTED at
//! once, never a queue. The permit moves into the response stream and is
//! released only when the stream is dropped. A producer task reads the chunk
//! a segment (1 MiB) at a time and feeds it through a small channel; if the
//! reader stops taking data for the send timeout, the producer gives up and
//! closes the reader's connection (see [`Upload::send`]), so a slow or
//! stalled reader costs a bounded amount of memory, and holds its permit
//! for that long at most.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use hive::{
    pb::peer::{self as pb, peer_server::Peer},
    wire,
};
use hive_runtime::grpc::STREAM_MESSAGE_BYTES;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, instrument, warn};

use crate::{
    error::PeerError,
    holdings::{ChunkSource, Holdings, ReadError},
    metrics::Counters,
};

/// Stream messages buffered ahead of the reader.
const AHEAD: usize = 2;
/// An upload reads its chunk this much at a time, so even 16 MiB chunks
/// cost an upload about this much memory.
const SEGMENT: u64 = 1 << 20;

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChunkData, Status>> + Send>>;

pub struct ChunkServer {
    pub holdings: Holdings,
    pub uploads: Arc<Semaphore>,
    pub send_timeout: Duration,
    /// Cancelled when running uploads must end (after the shutdown grace).
    pub stop: CancellationToken,
    pub counters: Arc<Counters>,
}

#[tonic::async_trait]
impl Peer for ChunkServer {
    type GetChunkStream = ChunkStream;

    #[instrument(skip_all, fields(name = %request.get_ref().name, chunk = request.get_ref().chunk))]
    async fn get_chunk(
        &self,
        request: Request<pb::GetChunkRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        // The connection, so that a stalled upload can close it.
        let conn = request.local_addr().zip(request.remote_addr());
        let req = request.into_inner();
        let name = wire::file_name("name", req.name).map_err(PeerError::from)?;
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            PeerError::Busy("too many uploads in progress; ask another holder".into())
        })?;
        // Deleted or replaced since it was hashed: retired, never served
        // from the descriptor still open.
        let present = {
            let (holdings, name) = (self.holdings.clone(), name.clone());
            tokio::task::spawn_blocking(move || holdings.check(&name))
                .await
                .map_err(|e| PeerError::Internal(format!("check task failed: {e}")))?
        };
        if !present {
            return Err(PeerError::NotFound(format!(
                "{name:?} is not served here any more (deleted or replaced on disk)"
            ))
            .into());
        }
        let source = Arc::new(self.holdings.source(&name, req.chunk)?);
        let chunk = source.chunk;
        // The first segment is read before answering, so a file that is gone
        // or changed gets a status, not a broken stream. A changed file has
        // its whole chunk read and verified first.
        let first = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || {
                let r = source.range();
                if source.changed()? {
                    source
                        .read_verified(STREAM_MESSAGE_BYTES)
                        .map(|f| (f, r.end))
                } else {
                    let end = r.end.min(r.start + SEGMENT);
                    source
                        .read(r.start..end, STREAM_MESSAGE_BYTES)
                        .map(|f| (f, end))
                }
            })
            .await
            .map_err(|e| PeerError::Internal(format!("read task failed: {e}")))?
        };
        let (frames, next) = match first {
            Ok(read) => read,
            Err(ReadError::Changed) => {
                warn!(file = %name, %chunk, "chunk no longer matches its digest on disk; withdrawn");
                // The tracker hears of it through the holdings.
                // Unless the entry was replaced since it was read.
                self.holdings.withdraw_if(&name, &source.manifest, chunk);
                return Err(PeerError::DataLoss(format!(
                    "chunk {chunk} of {name:?} changed on disk; withdrawn"
                ))
                .into());
            }
            Err(ReadError::Io(e)) => {
                warn!(file = %name, %chunk, error = %e, "cannot read chunk");
                return Err(Status::internal("cannot read the chunk"));
            }
        };
        let (tx, rx) = mpsc::channel(AHEAD);
        let (timeout, stop, counters) =
            (self.send_timeout, self.stop.clone(), self.counters.clone());
        let upload = Upload {
            source,
            frames,
            next,
            tx,
            timeout,
            stop,
            counters: counters.clone(),
            conn,
        };
        hive_runtime::task::spawn("upload", upload.run());
        let guard = counters.upload();
        let stream = ReceiverStream::new(rx).map(move |item| {
            // Held until the stream is dropped.
            let _ = (&permit, &guard);
            item
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One chunk on its way out: the frames in hand, and where to read next.
struct Upload {
    source: Arc<ChunkSource>,
    frames: Vec<bytes::Bytes>,
    next: u64,
    tx: mpsc::Sender<Result<pb::ChunkData, Status>>,
    timeout: Duration,
    stop: CancellationToken,
    counters: Arc<Counters>,
    /// The connection's local and remote address.
    conn: Option<(SocketAddr, SocketAddr)>,
}

impl Upload {
    /// Feeds the chunk to the stream a segment at a time; stops when the
    /// reader goes away, stalls past the timeout, or the daemon stops
    /// serving.
    async fn run(mut self) -> Result<(), PeerError> {
        let end = self.source.range().end;
        loop {
            for data in std::mem::take(&mut self.frames) {
                if !self.send(data).await {
                    return Ok(());
                }
            }
            if self.next >= end {
                return Ok(());
            }
            let (source, at) = (self.source.clone(), self.next);
            let to = end.min(at + SEGMENT);
            let read =
                tokio::task::spawn_blocking(move || source.read(at..to, STREAM_MESSAGE_BYTES))
                    .await;
            match read {
                Ok(Ok(frames)) => (self.frames, self.next) = (frames, to),
                _ => {
                    warn!(chunk = %self.source.chunk, "cannot read the rest of the chunk");
                    // Waited for, not tried: a full queue must not turn the
                    // error into a short stream that ends OK.
                    let error = Err(Status::internal("cannot read the chunk"));
                    let _ = tokio::time::timeout(self.timeout, self.tx.send(error)).await;
                    return Ok(());
                }
            }
        }
    }

    /// Sends one message; false if the upload should stop.
    ///
    /// A reader that stalls has stopped opening its flow-control window,
    /// and hyper polls a response body only while that window has room: the
    /// stream can then be neither ended nor reset from here, and would keep
    /// its upload permit and buffered messages until its connection closes
    /// (up to the maximum connection age). So a stall closes the connection,
    /// which ends the stream and frees both. hive's own downloads give up on
    /// a chunk before the send timeout (`--chunk-timeout`), so this cuts
    /// only readers that stopped.
    async fn send(&self, data: bytes::Bytes) -> bool {
        let len = data.len() as u64;
        tokio::select! {
            sent = tokio::time::timeout(self.timeout, self.tx.send(Ok(pb::ChunkData { data }))) => match sent {
                Ok(Ok(())) => {
                    self.counters.add_served(len);
                    true
                }
                Ok(Err(_)) => {
                    debug!("the reader went away");
                    false
                }
                Err(_) => {
                    warn!(timeout = ?self.timeout, "the reader stopped taking data; upload abandoned, connection closed");
                    if let Some((local, remote)) = self.conn {
                        hive_runtime::grpc::abort_connection(local, remote);
                    }
                    false
                }
            },
            _ = self.stop.cancelled() => {
                let _ = self.tx.try_send(Err(Status::unavailable("the peer is shutting down")));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use hive::{
        ChunkIndex, ChunkSet, ChunkSize, FileName, Manifest,
        pb::peer::{GetChunkRequest, peer_client::PeerClient, peer_server::PeerServer},
    };
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::Code;

    use super::*;
    use crate::fetch::partfile::PartFile;

    /// Chunk `n` of `name` through a real Peer service; its bytes or status.
    async fn get_chunk(
        client: &mut PeerClient<tonic::transport::Channel>,
        n: u32,
    ) -> Result<Vec<u8>, Status> {
        let req = GetChunkRequest {
            name: "f".into(),
            chunk: n,
        };
        let mut stream = client.get_chunk(req).await?.into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.message().await? {
            out.extend_from_slice(&msg.data);
        }
        Ok(out)
    }

    /// A partial holder's part file has zeros where its missing chunks go:
    /// GetChunk must refuse them, not send the zeros.
    #[tokio::test]
    async fn a_partial_holder_serves_only_the_chunks_it_holds() {
        let run = async {
            // Four 1 KiB chunks; each byte is its chunk's number.
            let data: Vec<u8> = (1..=4u8).flat_map(|n| [n; 1024]).collect();
            let dir = tempfile::tempdir().unwrap();
            let mut tmp = tempfile::tempfile().unwrap();
            tmp.write_all(&data).unwrap();
            let name = FileName::new("f").unwrap();
            let size = Some(ChunkSize::new(1024).unwrap());
            let m = Arc::new(Manifest::from_file(&tmp, 4096, name, size).unwrap());
            let (part, _) = PartFile::open(dir.path(), &m).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&*part.file, &data[1024..2048], 1024).unwrap();
            let mut have = ChunkSet::empty(4);
            have.insert(ChunkIndex::new(2).unwrap());
            let holdings = Holdings::default();
            holdings.insert_partial(m, &part, have);

            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let service = PeerServer::new(ChunkServer {
                holdings,
                uploads: Arc::new(Semaphore::new(4)),
                send_timeout: Duration::from_secs(5),
                stop: CancellationToken::new(),
                counters: Arc::default(),
            });
            let server = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener));
            tokio::spawn(server);
            let channel = hive_runtime::grpc::endpoint(&format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = PeerClient::new(channel);

            assert_eq!(get_chunk(&mut client, 2).await.unwrap(), &data[1024..2048]);
            for n in [1, 3, 4] {
                let err = get_chunk(&mut client, n).await.unwrap_err();
                assert_eq!(err.code(), Code::NotFound, "chunk {n}: {}", err.message());
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("timed out");
    }
}
