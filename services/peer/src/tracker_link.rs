//! The peer's session with the tracker, owned by one task.
//!
//! The task registers everything the peer holds (seed message 1), heartbeats,
//! and registers chunks as they are verified (message 4), in batches: chunk
//! updates are queued, merged per file and sent together a moment later, so
//! a 1,024-chunk download costs a handful of calls, not 1,024. Queued updates
//! survive a tracker outage. When the tracker has forgotten the peer (a
//! heartbeat answered NOT_FOUND: restarted, or the peer was silent past the
//! TTL), the task registers again with every chunk it holds, and nothing is
//! lost. On shutdown it leaves (message 6).
//!
//! This module is the client side of the wire boundary: everything it hands
//! out (a located file, its holders) is validated domain data.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hive::{
    ChunkIndex, ChunkSet, FileName, Manifest,
    pb::tracker::{self as pb, tracker_client::TrackerClient},
    wire,
};
use hive_runtime::grpc::TOKEN_METADATA;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use tracing::{debug, info, warn};

use crate::{
    error::PeerError,
    scan::{self, Found, HashCache},
    shares::{Kind, Shares},
};

/// Chunk updates wait this long for company before they are sent.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// ...unless this many are queued.
const BATCH_CHUNKS: u32 = 256;
/// A Register request stays under this size; more files go in later calls.
const REGISTER_BYTES: usize = 512 * 1024;
/// Deadline of every call to the tracker.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a flush waits for the tracker before its caller goes on (the
/// updates stay queued): a download never hangs on a tracker that is down.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Where this peer serves, as the tracker should hear it.
#[derive(Debug, Clone)]
pub struct Announce {
    pub port: u16,
    /// Only used by trackers that trust advertised hosts.
    pub host: String,
}

/// The session as others may see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub peer_id: String,
    /// The address the tracker gives other peers for us.
    pub addr: String,
}

/// A file as the tracker located it, validated.
#[derive(Debug, Clone)]
pub struct Located {
    pub manifest: Manifest,
    pub holders: Vec<Holder>,
    /// Live holders of each chunk (the tracker caps them at 255); position 0
    /// is chunk 1.
    pub chunk_holders: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Holder {
    pub peer_id: String,
    pub addr: String,
    pub chunks: ChunkSet,
}

enum Command {
    Share {
        files: Vec<Found>,
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
    Update {
        name: FileName,
        universe: u32,
        chunk: ChunkIndex,
        held: bool,
    },
    Flush {
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
    Leave {
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
    /// Registers again a file whose layout was changed to the swarm's.
    Reshare(Arc<Manifest>),
}

/// A cheap handle to the session task, and a client for read-only calls.
#[derive(Clone)]
pub struct TrackerLink {
    tx: mpsc::UnboundedSender<Command>,
    session: watch::Receiver<Option<SessionInfo>>,
    client: TrackerClient<Channel>,
    /// Most holders a Locate asks for.
    locate_holders: u32,
}

impl TrackerLink {
    /// Starts the session task for the tracker at `url`. It registers what
    /// `shares` holds as soon as the tracker answers. Its Locates ask for
    /// `locate_holders` holders at most.
    pub fn start(
        url: &str,
        locate_holders: u32,
        announce: Announce,
        shares: Shares,
        cache: Arc<Mutex<HashCache>>,
    ) -> Result<Self, PeerError> {
        let channel = hive_runtime::grpc::endpoint(&hive_runtime::grpc::uri_of(url))
            .map_err(|e| PeerError::Invalid(format!("bad tracker URL {url:?}: {e}")))?
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let client = TrackerClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel();
        let (session_tx, session) = watch::channel(None);
        let actor = Actor {
            client: client.clone(),
            announce,
            shares,
            cache,
            me: tx.downgrade(),
            session: None,
            published: session_tx,
            pending: HashMap::new(),
            flush_at: None,
            waiters: Vec::new(),
            retry: RETRY_MIN,
            retry_at: Instant::now(),
            unreachable: false,
            left: false,
        };
        hive_runtime::task::spawn("tracker-link", actor.run(rx));
        Ok(Self {
            tx,
            session,
            client,
            locate_holders,
        })
    }

    /// The current session, if the tracker has accepted this peer.
    pub fn session(&self) -> Option<SessionInfo> {
        self.session.borrow().clone()
    }

    /// Resolves once the tracker has accepted this peer (again).
    pub fn sessions(&self) -> watch::Receiver<Option<SessionInfo>> {
        self.session.clone()
    }

    /// Registers new complete files; once the tracker accepts them they are
    /// added to the share index. All or nothing.
    pub async fn share(&self, files: Vec<Found>) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Share { files, ack })?;
        done.await.map_err(|_| stopped())?
    }

    /// Queues "this peer now holds `chunk`" (batched).
    pub fn held(&self, name: &FileName, universe: u32, chunk: ChunkIndex) {
        let _ = self.send(Command::Update {
            name: name.clone(),
            universe,
            chunk,
            held: true,
        });
    }

    /// Queues "this peer no longer holds `chunk`" (batched).
    pub fn withdrawn(&self, name: &FileName, universe: u32, chunk: ChunkIndex) {
        let _ = self.send(Command::Update {
            name: name.clone(),
            universe,
            chunk,
            held: false,
        });
    }

    /// Sends every queued chunk update now; resolves when the tracker has
    /// them, or with an error when it cannot be reached: at once if its last
    /// call failed, else after [`FLUSH_WAIT`]. Updates that were not sent
    /// stay queued and go out once the tracker answers.
    pub async fn flush(&self) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Flush { ack })?;
        match tokio::time::timeout(FLUSH_WAIT, done).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => Err(PeerError::Unavailable(format!(
                "the tracker has not answered in {FLUSH_WAIT:?}; chunk updates stay queued"
            ))),
        }
    }

    /// Leaves the tracker (message 6) after a last flush; the session is not
    /// renewed afterwards.
    pub async fn leave(&self) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Leave { ack })?;
        done.await.map_err(|_| stopped())?
    }

    /// Seed message 3: where `name` is, validated. Holders are returned as
    /// the tracker lists them; a holder with a malformed entry is skipped.
    pub async fn locate(&self, name: &FileName) -> Result<Located, PeerError> {
        locate(&self.client, name, None, self.locate_holders).await
    }

    /// Asks again where a file is, for a download that has its manifest:
    /// the tracker leaves the manifest out unless the content changed.
    pub async fn relocate(&self, known: &Manifest) -> Result<Located, PeerError> {
        locate(&self.client, known.name(), Some(known), self.locate_holders).await
    }

    fn send(&self, cmd: Command) -> Result<(), PeerError> {
        self.tx.send(cmd).map_err(|_| stopped())
    }
}

/// Seed message 3 over `client`: where `name` is, validated. Holders are
/// returned as the tracker lists them; a holder with a malformed entry is
/// skipped.
async fn locate(
    client: &TrackerClient<Channel>,
    name: &FileName,
    known: Option<&Manifest>,
    max_holders: u32,
) -> Result<Located, PeerError> {
    let found = client
        .clone()
        .locate(pb::LocateRequest {
            name: name.to_string(),
            known_digest: known
                .map(|m| bytes::Bytes::copy_from_slice(m.digest().as_bytes()))
                .unwrap_or_default(),
            max_holders,
        })
        .await
        .map_err(|s| match s.code() {
            Code::NotFound => PeerError::NotFound(format!("the tracker does not know {name:?}")),
            _ => PeerError::tracker(&s),
        })?
        .into_inner();
    let manifest = match (found.manifest, known) {
        (Some(m), _) => Manifest::try_from(m)
            .map_err(|e| PeerError::Invalid(format!("the tracker sent a bad manifest: {e}")))?,
        // Left out: the one the caller has is still the file's.
        (None, Some(known)) => known.clone(),
        (None, None) => return Err(PeerError::Internal("the tracker sent no manifest".into())),
    };
    if manifest.name() != name {
        return Err(PeerError::Invalid(format!(
            "asked for {name:?}, the tracker answered for {:?}",
            manifest.name()
        )));
    }
    let universe = manifest.chunk_count();
    let holders = found
        .holders
        .into_iter()
        .filter_map(|h| {
            let chunks = wire::holder_chunks(universe, &h.chunks, &h.chunk_bitmap).ok()?;
            valid_addr(&h.addr).then_some(Holder {
                peer_id: h.peer_id,
                addr: h.addr,
                chunks,
            })
        })
        .collect();
    let mut chunk_holders: Vec<u32> = found.chunk_holders.iter().map(|&c| c.into()).collect();
    chunk_holders.resize(universe as usize, 0);
    Ok(Located {
        manifest,
        holders,
        chunk_holders,
    })
}

fn stopped() -> PeerError {
    PeerError::Unavailable("the tracker session has stopped".into())
}

/// Whether `addr` looks like `host:port`, with a usable port.
fn valid_addr(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

struct Session {
    peer_id: String,
    token: MetadataValue<tonic::metadata::Ascii>,
    heartbeat_at: Instant,
    interval: Duration,
}

/// Queued chunk updates for one file.
struct Update {
    add: ChunkSet,
    remove: ChunkSet,
}

struct Actor {
    client: TrackerClient<Channel>,
    announce: Announce,
    shares: Shares,
    cache: Arc<Mutex<HashCache>>,
    /// For background work to report back; does not keep the actor alive.
    me: mpsc::WeakUnboundedSender<Command>,
    session: Option<Session>,
    published: watch::Sender<Option<SessionInfo>>,
    pending: HashMap<FileName, Update>,
    flush_at: Option<Instant>,
    waiters: Vec<oneshot::Sender<Result<(), PeerError>>>,
    retry: Duration,
    retry_at: Instant,
    /// The last call to the tracker failed for want of an answer.
    unreachable: bool,
    left: bool,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) -> Result<(), PeerError> {
        loop {
            if self.session.is_none() && !self.left && Instant::now() >= self.retry_at {
                self.register_all().await;
            }
            let wake = self.next_wake();
            tokio::select! {
                // Commands first: a flush waits on no overdue heartbeat.
                biased;
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if self.flush_at.is_some_and(|at| now >= at) {
                self.flush().await;
            }
            if self.session.as_ref().is_some_and(|s| now >= s.heartbeat_at) {
                self.heartbeat().await;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let register = (self.session.is_none() && !self.left).then_some(self.retry_at);
        let heartbeat = self.session.as_ref().map(|s| s.heartbeat_at);
        [register, heartbeat, self.flush_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Share { files, ack } => {
                let result = self.share(files).await;
                let _ = ack.send(result);
            }
            Command::Update {
                name,
                universe,
                chunk,
                held,
            } => {
                let u = self.pending.entry(name).or_insert_with(|| Update {
                    add: ChunkSet::empty(universe),
                    remove: ChunkSet::empty(universe),
                });
                if held {
                    u.add.insert(chunk);
                    u.remove.remove(chunk);
                } else {
                    u.remove.insert(chunk);
                    u.add.remove(chunk);
                }
                let queued: u32 = self
                    .pending
                    .values()
                    .map(|u| u.add.len() + u.remove.len())
                    .sum();
                let at = if queued >= BATCH_CHUNKS {
                    Instant::now()
                } else {
                    Instant::now() + BATCH_WINDOW
                };
                self.flush_at = Some(self.flush_at.map_or(at, |t| t.min(at)));
            }
            Command::Flush { ack } if self.unreachable && self.session.is_some() => {
                // Known to be down: answer now; the retry schedule stands.
                let _ = ack.send(Err(PeerError::Unavailable(
                    "tracker unreachable; chunk updates stay queued".into(),
                )));
            }
            Command::Flush { ack } => {
                self.waiters.push(ack);
                self.flush().await;
            }
            Command::Leave { ack } => {
                let result = self.leave().await;
                let _ = ack.send(result);
            }
            Command::Reshare(m) => {
                let file = shared_file(&m, &ChunkSet::full(m.chunk_count()));
                match self.call_register(vec![file], self.session.as_ref()).await {
                    Ok(_) => {
                        info!(file = %m.name(), chunk_size = %m.layout().chunk_size(), "shared in the swarm's chunk size")
                    }
                    Err(s) => {
                        warn!(file = %m.name(), error = %s.message(), "the tracker still refused this file")
                    }
                }
            }
        }
    }

    /// Registers a new session holding everything in the share index.
    async fn register_all(&mut self) {
        if self.left {
            // Gone for good: a late flush or share must not start a session.
            for w in self.waiters.drain(..) {
                let _ = w.send(Err(PeerError::Unavailable(
                    "this peer has left the tracker".into(),
                )));
            }
            self.pending.clear();
            self.flush_at = None;
            return;
        }
        let holdings = self.shares.holdings();
        let files: Vec<pb::SharedFile> = holdings
            .iter()
            .map(|(m, chunks)| shared_file(m, chunks))
            .collect();
        let result = self.register_batches(files).await;
        self.unreachable = result.as_ref().is_err_and(no_answer);
        match result {
            Ok(()) => {
                self.retry = RETRY_MIN;
                // Everything queued was just sent in full.
                self.pending.clear();
                self.flush_at = None;
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(status) => {
                let err = PeerError::tracker(&status);
                warn!(error = %err, retry_in = ?self.retry, "cannot register with the tracker");
                for w in self.waiters.drain(..) {
                    let _ = w.send(Err(err.clone()));
                }
                self.session = None;
                self.retry_at = Instant::now() + self.retry;
                self.retry = (self.retry * 2).min(RETRY_MAX);
            }
        }
    }

    /// A new session, then its files in requests of bounded size. A file the
    /// tracker refuses (its name now taken by other content) is skipped,
    /// with a warning, rather than keeping the rest of the peer offline.
    async fn register_batches(&mut self, files: Vec<pb::SharedFile>) -> Result<(), Status> {
        let mut batches = batches(files);
        let first = if batches.is_empty() {
            Vec::new()
        } else {
            batches.remove(0)
        };
        let first = match self.call_register(first.clone(), None).await {
            Err(s) if refusal(&s) => {
                batches.insert(0, first);
                self.call_register(Vec::new(), None).await?
            }
            other => other?,
        };
        let interval =
            Duration::from_millis(first.heartbeat_interval_ms).max(Duration::from_millis(10));
        let token = first
            .token
            .parse()
            .map_err(|_| Status::internal("the tracker sent an unusable token"))?;
        self.session = Some(Session {
            peer_id: first.peer_id.clone(),
            token,
            heartbeat_at: Instant::now() + interval,
            interval,
        });
        for batch in batches {
            match self
                .call_register(batch.clone(), self.session.as_ref())
                .await
            {
                Err(s) if refusal(&s) => {
                    for file in batch {
                        let name = file
                            .manifest
                            .as_ref()
                            .map(|m| m.name.clone())
                            .unwrap_or_default();
                        if let Err(s) = self.call_register(vec![file], self.session.as_ref()).await
                        {
                            if !refusal(&s) {
                                return Err(s);
                            }
                            warn!(file = %name, error = %s.message(), "the tracker refused this file; not shared");
                            if s.code() == Code::InvalidArgument
                                && let Ok(name) = FileName::new(name)
                            {
                                self.adopt(name);
                            }
                        }
                    }
                }
                other => {
                    other?;
                }
            }
        }
        info!(peer = %first.peer_id, addr = %first.addr, "registered with the tracker");
        self.published.send_replace(Some(SessionInfo {
            peer_id: first.peer_id,
            addr: first.addr,
        }));
        Ok(())
    }

    async fn call_register(
        &self,
        files: Vec<pb::SharedFile>,
        session: Option<&Session>,
    ) -> Result<pb::RegisterResponse, Status> {
        let mut req = Request::new(pb::RegisterRequest {
            files,
            port: u32::from(self.announce.port),
            advertise_host: self.announce.host.clone(),
            peer_id: session.map(|s| s.peer_id.clone()).unwrap_or_default(),
        });
        if let Some(s) = session {
            req.metadata_mut().insert(TOKEN_METADATA, s.token.clone());
        }
        Ok(self.client.clone().register(req).await?.into_inner())
    }

    /// Shares new files: extends the session (starting one if needed) and
    /// adds them to the index once the tracker has accepted them.
    async fn share(&mut self, files: Vec<Found>) -> Result<(), PeerError> {
        if self.session.is_none() {
            self.register_all().await;
        }
        if self.session.is_none() {
            return Err(PeerError::Unavailable("cannot reach the tracker".into()));
        }
        let wire: Vec<pb::SharedFile> = files
            .iter()
            .map(|f| shared_file(&f.manifest, &ChunkSet::full(f.manifest.chunk_count())))
            .collect();
        for batch in batches(wire) {
            if let Err(s) = self.call_register(batch, self.session.as_ref()).await {
                self.on_session_error(&s);
                return Err(match s.code() {
                    Code::AlreadyExists => PeerError::Exists(s.message().to_owned()),
                    _ => PeerError::tracker(&s),
                });
            }
        }
        for f in files {
            self.shares
                .insert_complete(f.manifest, f.path, f.file, f.stamp)?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.heartbeat_at = Instant::now() + s.interval;
        let mut req = Request::new(pb::HeartbeatRequest {
            peer_id: s.peer_id.clone(),
        });
        req.metadata_mut().insert(TOKEN_METADATA, s.token.clone());
        let result = self.client.clone().heartbeat(req).await;
        self.unreachable = result.as_ref().is_err_and(no_answer);
        match result {
            Ok(resp) => {
                let interval = Duration::from_millis(resp.into_inner().heartbeat_interval_ms);
                if let Some(s) = self.session.as_mut()
                    && !interval.is_zero()
                {
                    s.interval = interval;
                }
            }
            Err(status) => self.on_session_error(&status),
        }
    }

    /// Sends queued chunk updates, one call per file.
    async fn flush(&mut self) {
        self.flush_at = None;
        if self.session.is_none() {
            // Registering again sends everything held, queued updates included.
            self.register_all().await;
            return;
        }
        let names: Vec<FileName> = self.pending.keys().cloned().collect();
        for name in names {
            let Some(u) = self.pending.remove(&name) else {
                continue;
            };
            let Some(s) = self.session.as_ref() else {
                self.pending.insert(name, u);
                break;
            };
            let mut req = Request::new(pb::RegisterChunkRequest {
                peer_id: s.peer_id.clone(),
                name: name.to_string(),
                chunks: wire::ranges(&u.add),
                withdrawn: wire::ranges(&u.remove),
            });
            req.metadata_mut().insert(TOKEN_METADATA, s.token.clone());
            let result = self.client.clone().register_chunk(req).await;
            self.unreachable = result.as_ref().is_err_and(no_answer);
            match result {
                Ok(_) => {
                    debug!(file = %name, chunks = u.add.len(), withdrawn = u.remove.len(), "chunks registered")
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    warn!(file = %name, error = %status.message(), "the tracker refused a chunk update; dropped");
                }
                Err(status) => {
                    self.pending.insert(name, u);
                    self.on_session_error(&status);
                    if self.session.is_some() {
                        // The tracker is unreachable: keep the queue, try later.
                        self.flush_at = Some(Instant::now() + RETRY_MAX.min(self.retry * 4));
                    }
                    let err = PeerError::tracker(&status);
                    for w in self.waiters.drain(..) {
                        let _ = w.send(Err(err.clone()));
                    }
                    return;
                }
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
    }

    async fn leave(&mut self) -> Result<(), PeerError> {
        self.flush().await;
        self.left = true;
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        self.published.send_replace(None);
        let mut req = Request::new(pb::LeaveRequest {
            peer_id: s.peer_id.clone(),
        });
        req.metadata_mut().insert(TOKEN_METADATA, s.token.clone());
        match self.client.clone().leave(req).await {
            Ok(_) => {
                info!(peer = %s.peer_id, "left the tracker");
                Ok(())
            }
            // Already forgotten: as good as gone.
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(PeerError::tracker(&status)),
        }
    }

    /// In the background: if the tracker knows `name` as the same content in
    /// another chunk size (the whole-file digest does not depend on it),
    /// hashes the file again in that size and registers it, so the copy
    /// joins the swarm instead of standing aside.
    fn adopt(&self, name: FileName) {
        let (client, shares, cache, me) = (
            self.client.clone(),
            self.shares.clone(),
            self.cache.clone(),
            self.me.clone(),
        );
        hive_runtime::task::spawn("adopt-layout", async move {
            let Some((ours, _, Kind::Complete)) = shares.holding(&name) else {
                return Ok(());
            };
            // Only the manifest is needed.
            let theirs = locate(&client, &name, None, 1).await?.manifest;
            if theirs.digest() != ours.digest()
                || theirs.size() != ours.size()
                || theirs.layout() == ours.layout()
            {
                return Ok(());
            }
            let Some((_, path)) = shares.file(&name) else {
                return Ok(());
            };
            let chunk_size = theirs.layout().chunk_size();
            let found = tokio::task::spawn_blocking(move || {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                let found = scan::hash_path(&path, name, Some(chunk_size), &mut cache);
                if let Err(e) = cache.save() {
                    warn!(error = %e, "cannot save the hash cache");
                }
                found
            })
            .await
            .map_err(|e| PeerError::Internal(format!("hashing task failed: {e}")))?
            .map_err(|e| PeerError::Internal(e.to_string()))?;
            if *found.manifest != theirs {
                warn!(file = %theirs.name(), "the file changed on disk; not shared");
                return Ok(());
            }
            let manifest = found.manifest.clone();
            shares.insert_complete(found.manifest, found.path, found.file, found.stamp)?;
            if let Some(me) = me.upgrade() {
                let _ = me.send(Command::Reshare(manifest));
            }
            Ok::<(), PeerError>(())
        });
    }

    /// Forgets the session if the tracker no longer knows it, so the next
    /// turn of the loop registers everything again.
    fn on_session_error(&mut self, status: &Status) {
        match status.code() {
            Code::NotFound | Code::Unauthenticated | Code::PermissionDenied => {
                info!(error = %status.message(), "the tracker lost this session; registering again");
                self.session = None;
                self.published.send_replace(None);
                self.retry_at = Instant::now();
            }
            _ => debug!(error = %status.message(), "tracker call failed"),
        }
    }
}

/// A call that failed because the tracker did not answer, as opposed to
/// an answer refusing it.
fn no_answer(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// A refusal of some files' content, as opposed to a failure of the call.
fn refusal(status: &Status) -> bool {
    matches!(status.code(), Code::AlreadyExists | Code::InvalidArgument)
}

fn shared_file(m: &Arc<Manifest>, chunks: &ChunkSet) -> pb::SharedFile {
    pb::SharedFile {
        manifest: Some(m.as_ref().into()),
        chunks: wire::ranges(chunks),
    }
}

/// Files grouped into requests of at most [`REGISTER_BYTES`] each.
fn batches(files: Vec<pb::SharedFile>) -> Vec<Vec<pb::SharedFile>> {
    use prost::Message;
    let mut out: Vec<Vec<pb::SharedFile>> = Vec::new();
    let mut size = 0;
    for f in files {
        let len = f.encoded_len() + 8;
        if out.is_empty() || size + len > REGISTER_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("pushed above").push(f);
    }
    out
}
