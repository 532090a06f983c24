//! The local Control service that peerctl drives: Share, Fetch, Status,
//! Leave. It listens on loopback only.

use std::{
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use hive::{
    ChunkSize, FileName,
    pb::control::{self as pb, control_server::Control, fetch_event::Event},
    wire,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::{
    error::PeerError,
    fetch::{DoneInfo, Fetcher, Phase, StartInfo, Subscription},
    holdings::{FileView, Kind},
    scan::{self, Found, HashCache},
};

pub type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchEvent, Status>> + Send>>;

pub struct ControlService {
    pub fetcher: Fetcher,
    pub cache: Arc<Mutex<HashCache>>,
    /// The Peer service's bound address.
    pub listen: String,
    /// Cancelled to stop the daemon (after Leave).
    pub shutdown: CancellationToken,
}

#[tonic::async_trait]
impl Control for ControlService {
    #[instrument(skip_all, fields(paths = request.get_ref().paths.len()))]
    async fn share(
        &self,
        request: Request<pb::ShareRequest>,
    ) -> Result<Response<pb::ShareResponse>, Status> {
        let req = request.into_inner();
        let chunk_size = match req.chunk_size {
            0 => None,
            n => Some(ChunkSize::new(u64::from(n)).map_err(|e| PeerError::Invalid(e.to_string()))?),
        };
        if req.paths.is_empty() {
            return Err(PeerError::Invalid("no paths to share".into()).into());
        }
        let cache = self.cache.clone();
        let found = tokio::task::spawn_blocking(move || hash_all(&req.paths, chunk_size, &cache))
            .await
            .map_err(|e| PeerError::Internal(format!("hashing task failed: {e}")))??;
        let holdings = &self.fetcher.ctx().holdings;
        let files: Vec<pb::LocalFile> = found
            .iter()
            .map(|f| {
                local_file(&FileView {
                    manifest: f.manifest.clone(),
                    have: hive::ChunkSet::full(f.manifest.chunk_count()),
                    kind: Kind::Complete,
                    path: f.path.clone(),
                    downloading: false,
                })
            })
            .collect();
        for f in &found {
            if let Some((m, _, _)) = holdings.holding(f.manifest.name())
                && m.digest() != f.manifest.digest()
            {
                return Err(PeerError::Exists(format!(
                    "{:?} is already shared here with other content",
                    f.manifest.name()
                ))
                .into());
            }
        }
        self.fetcher.ctx().link.share(found).await?;
        info!(files = files.len(), "shared");
        Ok(Response::new(pb::ShareResponse { files }))
    }

    type FetchStream = FetchStream;

    #[instrument(skip_all, fields(name = %request.get_ref().name, chunk = request.get_ref().chunk))]
    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        let req = request.into_inner();
        let name = wire::file_name("name", req.name).map_err(PeerError::from)?;
        let from = match req.from.as_str() {
            "" => None,
            addr => Some(holder_addr(addr)?),
        };
        let (tx, rx) = mpsc::channel(16);
        if req.chunk != 0 {
            let fetcher = self.fetcher.clone();
            hive_runtime::task::spawn("fetch-chunk", async move {
                let result = fetcher.chunk(&name, req.chunk, from).await;
                let _ = tx.send(done(result)).await;
                Ok::<(), PeerError>(())
            });
        } else {
            let sub = self.fetcher.whole(name, req.force, from);
            hive_runtime::task::spawn("fetch-progress", forward(sub, tx));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ctx = self.fetcher.ctx();
        let session = ctx.link.session().unwrap_or_default();
        let counters = ctx.counters.snapshot();
        Ok(Response::new(pb::StatusResponse {
            peer_id: session.peer_id,
            tracker: ctx.config.tracker.clone(),
            addr: session.addr,
            files: ctx.holdings.list().iter().map(local_file).collect(),
            bytes_served: counters.bytes_served,
            bytes_fetched: counters.bytes_fetched,
            uploads_active: counters.uploads_active as u32,
            downloads_active: self.fetcher.active() as u32,
            listen: self.listen.clone(),
        }))
    }

    #[instrument(skip_all)]
    async fn leave(
        &self,
        _: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let result = self.fetcher.ctx().link.leave().await;
        // Stop either way: the user asked this peer to go.
        self.shutdown.cancel();
        result?;
        Ok(Response::new(pb::LeaveResponse {}))
    }
}

/// Hashes every path, or fails on the first that cannot be shared.
fn hash_all(
    paths: &[String],
    chunk_size: Option<ChunkSize>,
    cache: &Mutex<HashCache>,
) -> Result<Vec<Found>, PeerError> {
    // Hashing holds the cache lock: shares are rare, and this keeps one
    // consistent cache file.
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let mut found: Vec<Found> = Vec::new();
    for raw in paths {
        let path = Path::new(raw)
            .canonicalize()
            .map_err(|e| PeerError::io(raw, &e))?;
        let name = file_name_of(&path)?;
        if found.iter().any(|f| f.manifest.name() == &name) {
            return Err(PeerError::Invalid(format!("two paths named {name:?}")));
        }
        let f = scan::hash_path(&path, name, chunk_size, &mut cache).map_err(|e| match e {
            scan::ScanError::NotRegular(p) => {
                PeerError::Invalid(format!("{}: not a regular file", p.display()))
            }
            scan::ScanError::BadName { reason, .. } => PeerError::Invalid(reason),
            scan::ScanError::Io { path, source } => PeerError::io(path.display(), &source),
        })?;
        found.push(f);
    }
    if let Err(e) = cache.save() {
        tracing::warn!(error = %e, "cannot save the hash cache");
    }
    Ok(found)
}

fn file_name_of(path: &Path) -> Result<FileName, PeerError> {
    let raw = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PeerError::Invalid(format!("{}: no usable file name", path.display())))?;
    FileName::new(raw).map_err(|e| PeerError::Invalid(format!("{}: {e}", path.display())))
}

/// A `host:port` the user named as the holder to ask.
fn holder_addr(addr: &str) -> Result<String, PeerError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(addr.to_owned())
    } else {
        Err(PeerError::Invalid(format!(
            "--from {addr:?}: expected HOST:PORT"
        )))
    }
}

/// Relays a download's phases to one caller until it finishes or the caller
/// goes away (which may stop the download: see [`Fetcher::whole`]).
async fn forward(
    mut sub: Subscription,
    tx: mpsc::Sender<Result<pb::FetchEvent, Status>>,
) -> Result<(), PeerError> {
    let mut started = false;
    let mut last = None;
    loop {
        let phase: Phase = sub.phase.borrow_and_update().clone();
        if !started && let Some(s) = &phase.started {
            started = true;
            if tx.send(Ok(event(Event::Started(start(s))))).await.is_err() {
                return Ok(());
            }
        }
        if let Some(result) = phase.finished {
            let _ = tx.send(done(result)).await;
            return Ok(());
        }
        if started && last.as_ref() != Some(&phase.progress) {
            let s = phase.started.as_ref().expect("started above");
            let p = &phase.progress;
            let progress = pb::Progress {
                bytes_done: p
                    .bytes_done
                    .saturating_sub(s.manifest.size() - s.bytes_wanted),
                bytes_wanted: s.bytes_wanted,
                chunks_done: p.chunks_done.saturating_sub(s.chunks_present),
                chunks_wanted: s.chunks_wanted,
                holders_active: p.holders_active,
            };
            if tx.send(Ok(event(Event::Progress(progress)))).await.is_err() {
                return Ok(());
            }
            last = Some(phase.progress.clone());
        }
        tokio::select! {
            changed = sub.phase.changed() => if changed.is_err() { return Ok(()) },
            _ = tx.closed() => return Ok(()),
        }
    }
}

fn event(e: Event) -> pb::FetchEvent {
    pb::FetchEvent { event: Some(e) }
}

fn start(s: &StartInfo) -> pb::Started {
    pb::Started {
        name: s.manifest.name().to_string(),
        size: s.manifest.size(),
        chunk_count: s.manifest.chunk_count(),
        digest: s.manifest.digest().as_bytes().to_vec().into(),
        holders: s.holders,
        chunks_present: s.chunks_present,
        bytes_wanted: s.bytes_wanted,
    }
}

fn done(result: Result<DoneInfo, PeerError>) -> Result<pb::FetchEvent, Status> {
    let d = result?;
    Ok(event(Event::Done(pb::Done {
        path: d.path.display().to_string(),
        digest: d.digest.as_bytes().to_vec().into(),
        bytes_received: d.bytes_received,
        chunks_fetched: d.chunks_fetched,
        elapsed_us: d.elapsed.as_micros().try_into().unwrap_or(u64::MAX),
        source: d.source,
        already_present: d.already_present,
        holders_banned: d.holders_banned,
    })))
}

fn local_file(f: &FileView) -> pb::LocalFile {
    let state = match (f.kind, f.downloading) {
        (Kind::Complete, _) => pb::FileState::Seeding,
        (Kind::Partial, true) => pb::FileState::Downloading,
        (Kind::Partial, false) => pb::FileState::Partial,
    };
    pb::LocalFile {
        name: f.manifest.name().to_string(),
        size: f.manifest.size(),
        chunk_count: f.manifest.chunk_count(),
        chunks_held: f.have.len(),
        digest: f.manifest.digest().as_bytes().to_vec().into(),
        path: f.path.display().to_string(),
        state: state as i32,
    }
}
