//! The evil-peer harness (docs/RELIABILITY.md §B): an in-process holder that speaks
//! `hive.peer.v1.Peer` on 127.0.0.1:0, registers itself with the tracker
//! through the raw Tracker API (and heartbeats with its session token), and
//! serves one file with a chosen [`Fault`], or honestly.
//!
//! - It records every request and every response it finished sending, so a
//!   test can count what a downloader asked of it, before and after a ban.
//! - Its answers can wait behind a [`Gate`] that the test opens a chunk at a
//!   time: how far a download gets is then decided by the test, not by
//!   timing. A downloader that gives up on a held request costs no permit.
//! - [`Builder::link`] puts it behind a slow link: a latency before each
//!   answer and a byte rate shared by all its streams (docs/RELIABILITY.md: CP-6
//!   without netem).
//! - [`EvilPeer::leave`] makes it go like a peer shutting down: Leave at the
//!   tracker, held requests answered UNAVAILABLE, no new connections.

use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::RangeInclusive,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hive::pb::{
    peer::{
        ChunkData, GetChunkRequest,
        peer_server::{Peer, PeerServer},
    },
    tracker::{HeartbeatRequest, LeaveRequest, RegisterRequest, SharedFile},
    types::ChunkRange,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{TestTracker, with_token};

/// How the holder misbehaves on every chunk it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serves the right bytes.
    Honest,
    /// Flips one bit of each chunk (a different bit for each chunk,
    /// including the first and the last byte).
    FlipBit,
    /// Leaves out the chunk's last byte, then ends the stream with OK.
    Truncate,
    /// Sends the chunk, then 100 more bytes in one extra message.
    Pad,
    /// Sends only the first stream message of the chunk (the first half of
    /// a chunk that fits in one message), then ends with OK.
    EndEarly,
    /// Sends half the chunk, then fails the stream with UNAVAILABLE, as a
    /// connection cut mid-stream looks to the reader.
    Cut,
    /// Sends one 16 MiB message.
    Oversized,
    /// Never sends anything; keeps the stream open until the reader leaves
    /// (slow-loris).
    Stall,
    /// Advertises chunks it does not have: every GetChunk is NOT_FOUND.
    Lacks,
}

impl Fault {
    /// Whether a response with this fault is bad data that only the
    /// downloader's checks (digest, size, message limit) can catch.
    pub fn is_bad_data(self) -> bool {
        matches!(
            self,
            Fault::FlipBit | Fault::Truncate | Fault::Pad | Fault::EndEarly | Fault::Oversized
        )
    }
}

/// Answers held until the test lets them go, one permit per chunk.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    fn closed() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    /// Lets `n` more answers through.
    pub fn release(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Lets every answer through from now on.
    pub fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

/// One request as the holder saw it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub chunk: u32,
    pub at: Instant,
}

#[derive(Default)]
struct Record {
    requests: Vec<Seen>,
    /// Chunk -> responses sent in full (faulty ones included).
    completed: HashMap<u32, u32>,
    /// Chunk -> requests the reader abandoned before the answer was out.
    abandoned: HashMap<u32, u32>,
    bytes_sent: u64,
}

struct Shared {
    data: Vec<u8>,
    chunk_size: u64,
    chunks: u32,
    claims: Vec<RangeInclusive<u32>>,
    fault: Fault,
    gate: Option<Gate>,
    link: Option<Link>,
    gone: CancellationToken,
    record: Mutex<Record>,
}

/// A slow link: every answer waits `latency`, give or take a quarter of it
/// (different for each chunk), and all streams together send at most
/// `bytes_per_sec`.
struct Link {
    latency: Duration,
    bytes_per_sec: u64,
    /// When the link is free for the next message.
    free_at: Mutex<tokio::time::Instant>,
}

impl Link {
    /// Reserves the link for `len` bytes; returns when they may go.
    fn reserve(&self, len: u64) -> tokio::time::Instant {
        let mut free_at = self.free_at.lock().unwrap_or_else(PoisonError::into_inner);
        let start = (*free_at).max(tokio::time::Instant::now());
        *free_at = start + Duration::from_micros(len * 1_000_000 / self.bytes_per_sec);
        *free_at
    }
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // Every update is a single push or increment; poison cannot tear it.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claims(&self, chunk: u32) -> bool {
        self.claims.iter().any(|r| r.contains(&chunk))
    }

    fn chunk(&self, n: u32) -> &[u8] {
        let start = (u64::from(n) - 1) * self.chunk_size;
        let end = (start + self.chunk_size).min(self.data.len() as u64);
        &self.data[start as usize..end as usize]
    }
}

/// How to build an [`EvilPeer`].
pub struct Builder {
    name: String,
    data: Vec<u8>,
    chunk_size: Option<u32>,
    claims: Option<Vec<RangeInclusive<u32>>>,
    fault: Fault,
    gated: bool,
    link: Option<(Duration, u64)>,
}

impl Builder {
    /// A chunk size other than the adaptive one (the manifest it registers
    /// uses it, so it must match every other holder's).
    pub fn chunk_size(mut self, bytes: u32) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// Claims (and serves) only these chunks instead of all of them.
    pub fn claims(mut self, ranges: &[RangeInclusive<u32>]) -> Self {
        self.claims = Some(ranges.to_vec());
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Serves over a link with this latency and rate (in bits per second).
    pub fn link(mut self, latency: Duration, bits_per_sec: u64) -> Self {
        self.link = Some((latency, bits_per_sec));
        self
    }

    /// Holds every answer until the test releases it through [`EvilPeer::gate`].
    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }

    /// Serves on 127.0.0.1:0 and registers with `tracker`.
    pub async fn start(self, tracker: &TestTracker) -> EvilPeer {
        let manifest = super::manifest_with(&self.name, &self.data, self.chunk_size);
        let chunks = manifest.chunk_digests.len() as u32 / 32;
        let claims = self.claims.unwrap_or_else(|| vec![1..=chunks]);
        let shared = Arc::new(Shared {
            chunk_size: u64::from(manifest.chunk_size),
            data: self.data,
            chunks,
            claims: claims.clone(),
            fault: self.fault,
            gate: self.gated.then(Gate::closed),
            link: self.link.map(|(latency, bits)| Link {
                latency,
                bytes_per_sec: bits / 8,
                free_at: Mutex::new(tokio::time::Instant::now()),
            }),
            gone: CancellationToken::new(),
            record: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the evil peer");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let service = PeerServer::new(Service(shared.clone())).max_encoding_message_size(64 << 20);
        let server = hive_runtime::grpc::server()
            .add_service(service)
            .serve_with_incoming_shutdown(
                hive_runtime::grpc::incoming(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("evil peer server stopped: {e}");
            }
        });

        let mut client = tracker.client().await;
        let registered = client
            .register(RegisterRequest {
                files: vec![SharedFile {
                    manifest: Some(manifest),
                    chunks: claims
                        .iter()
                        .map(|r| ChunkRange {
                            first: *r.start(),
                            last: *r.end(),
                        })
                        .collect(),
                }],
                port: u32::from(addr.port()),
                ..Default::default()
            })
            .await
            .expect("the evil peer registers")
            .into_inner();
        let (peer_id, token) = (registered.peer_id, registered.token);
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(10));
        let heartbeat = {
            let (mut client, peer_id, token, stop) =
                (client.clone(), peer_id.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let req = with_token(
                        HeartbeatRequest {
                            peer_id: peer_id.clone(),
                        },
                        &token,
                    );
                    if let Err(e) = client.heartbeat(req).await {
                        eprintln!("evil peer heartbeat: {e}");
                    }
                }
            })
        };
        EvilPeer {
            addr,
            peer_id,
            token,
            shared,
            stop,
            heartbeat,
            tracker: client,
        }
    }
}

/// A running in-process holder; stops serving when dropped.
pub struct EvilPeer {
    pub addr: SocketAddr,
    pub peer_id: String,
    token: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
    heartbeat: tokio::task::JoinHandle<()>,
    tracker: hive::pb::tracker::tracker_client::TrackerClient<tonic::transport::Channel>,
}

impl EvilPeer {
    /// A holder of `data` under `name`, honest and ungated unless told.
    pub fn builder(name: &str, data: &[u8]) -> Builder {
        Builder {
            name: name.to_owned(),
            data: data.to_vec(),
            chunk_size: None,
            claims: None,
            fault: Fault::Honest,
            gated: false,
            link: None,
        }
    }

    /// The gate its answers wait behind (built with [`Builder::gated`]).
    pub fn gate(&self) -> &Gate {
        self.shared.gate.as_ref().expect("built with .gated()")
    }

    pub fn chunk_count(&self) -> u32 {
        self.shared.chunks
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.record().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.record().requests.len()
    }

    /// Responses sent in full, faulty ones included.
    pub fn completed(&self) -> u32 {
        self.shared.record().completed.values().sum()
    }

    /// How many times chunk `n` was sent in full.
    pub fn completed_of(&self, n: u32) -> u32 {
        self.shared.record().completed.get(&n).copied().unwrap_or(0)
    }

    /// Chunk -> times sent in full.
    pub fn completed_by_chunk(&self) -> HashMap<u32, u32> {
        self.shared.record().completed.clone()
    }

    /// Requests whose reader went away before the answer was out.
    pub fn abandoned(&self) -> u32 {
        self.shared.record().abandoned.values().sum()
    }

    /// Bytes of chunk data handed to gRPC, padding and all.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.record().bytes_sent
    }

    /// Waits until `n` responses were sent in full.
    pub async fn until_completed(&self, n: u32) {
        while self.completed() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `n` requests have arrived.
    pub async fn until_requests(&self, n: usize) {
        while self.request_count() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Goes like a peer shutting down: Leave at the tracker, held and later
    /// requests answered UNAVAILABLE, the server stopped.
    pub async fn leave(&self) {
        self.shared.gone.cancel();
        self.stop.cancel();
        self.heartbeat.abort();
        self.tracker
            .clone()
            .leave(with_token(
                LeaveRequest {
                    peer_id: self.peer_id.clone(),
                },
                &self.token,
            ))
            .await
            .expect("the evil peer leaves");
    }
}

impl Drop for EvilPeer {
    fn drop(&mut self) {
        self.shared.gone.cancel();
        self.stop.cancel();
        self.heartbeat.abort();
    }
}

struct Service(Arc<Shared>);

type ChunkStream = ReceiverStream<Result<ChunkData, Status>>;

#[tonic::async_trait]
impl Peer for Service {
    type GetChunkStream = ChunkStream;

    async fn get_chunk(
        &self,
        request: Request<GetChunkRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let n = request.into_inner().chunk;
        let s = &self.0;
        s.record().requests.push(Seen {
            chunk: n,
            at: Instant::now(),
        });
        if s.gone.is_cancelled() {
            return Err(Status::unavailable("the peer is shutting down"));
        }
        if n == 0 || n > s.chunks {
            return Err(Status::invalid_argument("no such chunk"));
        }
        if s.fault == Fault::Lacks || !s.claims(n) {
            return Err(Status::not_found("chunk not held here"));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(answer(s.clone(), n, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The messages (or final error) of one faulty or honest answer.
fn messages(s: &Shared, n: u32) -> (Vec<Bytes>, Option<Status>) {
    const MESSAGE: usize = hive_runtime::grpc::STREAM_MESSAGE_BYTES;
    let chunk = s.chunk(n);
    let split = |bytes: &[u8]| -> Vec<Bytes> {
        bytes.chunks(MESSAGE).map(Bytes::copy_from_slice).collect()
    };
    match s.fault {
        Fault::Honest | Fault::Stall | Fault::Lacks => (split(chunk), None),
        Fault::FlipBit => {
            let mut bad = chunk.to_vec();
            let bits = bad.len() * 8;
            let bit = match n % 3 {
                0 => 0,
                1 => bits - 1,
                _ => (n as usize * 7919) % bits,
            };
            bad[bit / 8] ^= 1 << (bit % 8);
            (split(&bad), None)
        }
        Fault::Truncate => (split(&chunk[..chunk.len() - 1]), None),
        Fault::Pad => {
            let mut out = split(chunk);
            out.push(Bytes::from(vec![0x5a; 100]));
            (out, None)
        }
        Fault::EndEarly => {
            let first = if chunk.len() > MESSAGE {
                &chunk[..MESSAGE]
            } else {
                &chunk[..chunk.len() / 2]
            };
            (vec![Bytes::copy_from_slice(first)], None)
        }
        Fault::Cut => (
            split(&chunk[..chunk.len() / 2]),
            Some(Status::unavailable("connection cut")),
        ),
        Fault::Oversized => (vec![Bytes::from(vec![0u8; 16 << 20])], None),
    }
}

/// Waits for the gate, then sends the answer; gives up when the reader goes.
async fn answer(s: Arc<Shared>, n: u32, tx: mpsc::Sender<Result<ChunkData, Status>>) {
    let abandoned = |s: &Shared| *s.record().abandoned.entry(n).or_default() += 1;
    if let Some(gate) = &s.gate {
        tokio::select! {
            // Each permit lets one answer through, for good.
            permit = gate.0.acquire() => permit.expect("the gate is never closed").forget(),
            _ = tx.closed() => return abandoned(&s),
            _ = s.gone.cancelled() => {
                let _ = tx.send(Err(Status::unavailable("the peer is shutting down"))).await;
                return;
            }
        }
    }
    if s.fault == Fault::Stall {
        tx.closed().await;
        return abandoned(&s);
    }
    if let Some(link) = &s.link {
        let jitter = 0.75 + f64::from(n * 37 % 101) / 200.0;
        tokio::select! {
            _ = tokio::time::sleep(link.latency.mul_f64(jitter)) => {}
            _ = tx.closed() => return abandoned(&s),
        }
    }
    let (frames, end) = messages(&s, n);
    // Over a slow link, small messages keep the pace smooth.
    let frames: Vec<Bytes> = match &s.link {
        Some(_) => frames
            .iter()
            .flat_map(|f| {
                (0..f.len())
                    .step_by(16 << 10)
                    .map(|i| f.slice(i..f.len().min(i + (16 << 10))))
            })
            .collect(),
        None => frames,
    };
    for data in frames {
        let len = data.len() as u64;
        if let Some(link) = &s.link {
            tokio::select! {
                _ = tokio::time::sleep_until(link.reserve(len)) => {}
                _ = tx.closed() => return abandoned(&s),
            }
        }
        if tx.send(Ok(ChunkData { data, chunk: 0 })).await.is_err() {
            return abandoned(&s);
        }
        s.record().bytes_sent += len;
    }
    if let Some(status) = end
        && tx.send(Err(status)).await.is_err()
    {
        return abandoned(&s);
    }
    *s.record().completed.entry(n).or_default() += 1;
}
