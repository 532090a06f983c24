//! The public Peer service: GetChunk, seed message 5 on the serving side.
//!
//! Uploads take a slot ([`slots`]): at most `--max-uploads` at once, at
//! most `--max-uploads-per-address` of them for one source address, and a
//! request that finds none waits its turn for up to `--upload-queue-wait`
//! (round robin over the addresses waiting) before RESOURCE_EXHAUSTED. The
//! slot moves into the response stream and is given back only when the
//! stream is dropped. A producer task ([`upload`]) reads the chunk a segment
//! (1 MiB) at a time and feeds it through a small channel, within the
//! upload cap (`--max-upload-rate`); a reader that takes no data for the
//! send timeout, or less than `--min-upload-rate` over a drain window, has
//! its connection closed, so a slow or stalled reader costs a bounded
//! amount of memory and holds its slot for a bounded time.

mod slots;
mod tally;
mod upload;

use std::{
    net::{IpAddr, Ipv4Addr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use hive::{
    pb::peer::{self as pb, peer_server::Peer},
    wire,
};
use hive_runtime::grpc::STREAM_MESSAGE_BYTES;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{instrument, warn};

use self::upload::Upload;
pub use self::{
    slots::{Refused, Slot, Slots, Usage},
    tally::{Ask, Tally, Verdict},
    upload::DrainRule,
};
use crate::{
    error::PeerError,
    holdings::{Holdings, ReadError},
    metrics::Counters,
    throttle::Throttle,
};

/// Stream messages buffered ahead of the reader.
const AHEAD: usize = 2;
/// An upload reads its chunk this much at a time, so even 16 MiB chunks
/// cost an upload about this much memory.
const SEGMENT: u64 = 1 << 20;

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ChunkData, Status>> + Send>>;

pub struct ChunkServer {
    pub holdings: Holdings,
    pub slots: Slots,
    /// How long a request may wait for a slot.
    pub queue_wait: Duration,
    pub send_timeout: Duration,
    pub drain: DrainRule,
    /// The upload cap, shared by every upload.
    pub cap: Arc<Throttle>,
    /// Cancelled when running uploads must end (after the shutdown grace).
    pub stop: CancellationToken,
    pub counters: Arc<Counters>,
    /// How often each chunk of each complete file was sent (super-seeding).
    pub tally: Tally,
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
        let from = conn.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |(_, r)| r.ip());
        let req = request.into_inner();
        let name = wire::file_name("name", req.name).map_err(PeerError::from)?;
        // Checked first: a chunk not held is NOT_FOUND at once, never queued.
        let held = self.holdings.source(&name, req.chunk)?;
        let instead =
            wire::instead(held.manifest.layout(), &req.instead).map_err(PeerError::from)?;
        let ask = Ask {
            chunk: held.chunk,
            instead: &instead,
            may_decline: req.may_decline,
        };
        // The chunk to send: the one asked for unless super-seeding swaps it.
        let counted = self.super_seed(&name, &held, ask)?;
        let chunk = counted.unwrap_or(held.chunk);
        let permit = match self.slot(from).await {
            Ok(permit) => permit,
            Err(e) => {
                if counted.is_some() {
                    self.tally.uncount(&name, chunk);
                }
                return Err(e.into());
            }
        };
        // Then, with the slot held (the wait may be long): a file deleted or
        // replaced since it was hashed is retired, never served from the
        // descriptor still open; the descriptor is taken only after that.
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
        let source = Arc::new(self.holdings.source(&name, chunk.get())?);
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
        // Dropped with the stream: tells the producer the stream has ended.
        let (ended_tx, ended) = oneshot::channel::<()>();
        let counters = self.counters.clone();
        let upload = Upload {
            source,
            frames,
            next,
            tx,
            timeout: self.send_timeout,
            drain: self.drain,
            cap: self.cap.clone(),
            stop: self.stop.clone(),
            counters: counters.clone(),
            conn,
            ended,
            label: chunk.get().into(),
        };
        hive_runtime::task::spawn("upload", upload.run());
        let guard = counters.upload();
        let stream = ReceiverStream::new(rx).map(move |item| {
            // Held until the stream is dropped.
            let _ = (&permit, &guard, &ended_tx);
            item
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

impl ChunkServer {
    /// Super-seeding ([`tally`]): of the chunk asked for and its
    /// alternatives, the one of a file held whole sent least is counted as
    /// sent and returned (to be sent, or its count taken back if the request
    /// gets no slot); declined if every one of them was sent more often
    /// than others and the requester may take another one. None for a file
    /// this peer does not super-seed (not held whole, or downloaded here:
    /// [`Holdings::super_seeds`]): the chunk asked for is sent, uncounted.
    fn super_seed(
        &self,
        name: &hive::FileName,
        held: &crate::holdings::ChunkSource,
        ask: Ask<'_>,
    ) -> Result<Option<hive::ChunkIndex>, Status> {
        if !self.holdings.super_seeds(name) {
            self.tally.forget(name);
            return Ok(None);
        }
        let m = &held.manifest;
        let verdict = self.tally.decide(
            name,
            (m.digest(), m.chunk_count()),
            ask,
            tokio::time::Instant::now(),
        );
        match verdict {
            Verdict::Serve(chunk) => {
                if chunk != held.chunk {
                    self.counters.add_upload_swapped();
                }
                Ok(Some(chunk))
            }
            Verdict::Decline {
                least_sent,
                least_count,
            } => {
                self.counters.add_upload_declined();
                let details = prost::Message::encode_to_vec(&pb::Declined {
                    least_sent,
                    least_count,
                });
                Err(Status::with_details(
                    tonic::Code::FailedPrecondition,
                    format!(
                        "chunk {} was sent already while others were not: ask for one of those (details), or without may_decline",
                        held.chunk
                    ),
                    details.into(),
                ))
            }
        }
    }

    /// An upload slot for a request from `from`, waited for in turn.
    async fn slot(&self, from: IpAddr) -> Result<Slot, PeerError> {
        self.slots
            .acquire(from, self.queue_wait)
            .await
            .map_err(|why| {
                self.counters.add_upload_refused();
                PeerError::Busy(match why {
                    Refused::Full => {
                        "too many uploads in progress or waiting; ask another holder".into()
                    }
                    Refused::Waited => format!(
                        "no upload slot came free within {:?}; ask another holder",
                        self.queue_wait
                    ),
                })
            })
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
            ..Default::default()
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
                slots: Slots::new(4, 4),
                queue_wait: Duration::ZERO,
                send_timeout: Duration::from_secs(5),
                drain: DrainRule {
                    min_rate: 0,
                    window: Duration::ZERO,
                },
                cap: Arc::default(),
                stop: CancellationToken::new(),
                counters: Arc::default(),
                tally: Tally::default(),
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
