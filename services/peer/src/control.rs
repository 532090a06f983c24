//! The local Control service that peerctl drives: Share, Fetch, Status,
//! Leave, Unshare, SetLimits, and the transfers' RPCs
//! (`control/transfers.rs`). Who may call it is decided where it listens
//! ([`crate::access`]).

mod transfers;

pub use self::transfers::name as file_name;

use std::{path::PathBuf, pin::Pin};

use hive::{
    ChunkSize, FileName,
    pb::control::{self as pb, control_server::Control, fetch_event::Event},
    wire,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::{
    error::PeerError,
    fetch::{DoneInfo, Fetcher, Phase, Spec, StartInfo},
    holdings::{FileView, Kind},
    share::Sharing,
    status::{Overview, Snapshot},
    throttle::check_rate,
    tracker_link::TrackerLink,
    transfers::Transfers,
};

pub type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchEvent, Status>> + Send>>;

pub struct ControlService {
    pub sharing: Sharing,
    pub fetcher: Fetcher,
    pub transfers: Transfers,
    pub overview: Overview,
    pub link: TrackerLink,
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
        let chunk_size = chunk_size(req.chunk_size)?;
        let paths = req.paths.into_iter().map(PathBuf::from).collect();
        let files = self.sharing.share(paths, chunk_size).await?;
        info!(files = files.len(), "shared");
        Ok(Response::new(pb::ShareResponse {
            files: files.iter().map(local_file).collect(),
        }))
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
            let chunk = one_chunk(self.fetcher.clone(), name, req.chunk, from, tx);
            hive_runtime::task::spawn("fetch-chunk", chunk);
        } else {
            let max_rate = check_rate("--max-rate", req.max_rate)?;
            let spec = Spec {
                force: req.force,
                only: from,
                fail_fast: req.fail_fast,
                max_rate,
            };
            let phase = self.transfers.fetch(name.clone(), spec).await?;
            if max_rate > 0 {
                // The table keeps the new cap for later runs; a run already
                // going gets it here.
                self.fetcher.limit(&name, max_rate);
            }
            if !req.detach {
                let fail_fast = req.fail_fast;
                hive_runtime::task::spawn("fetch-progress", forward(phase, fail_fast, tx));
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(status(self.overview.snapshot())))
    }

    #[instrument(skip_all)]
    async fn leave(
        &self,
        _: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let result = self.link.leave().await;
        // Stop either way: the user asked this peer to go.
        self.shutdown.cancel();
        result?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn list_transfers(
        &self,
        _: Request<pb::ListTransfersRequest>,
    ) -> Result<Response<pb::ListTransfersResponse>, Status> {
        let list = self.transfers.list().await?;
        let transfers = list.iter().map(transfers::transfer).collect();
        Ok(Response::new(pb::ListTransfersResponse { transfers }))
    }

    type WatchTransferStream = transfers::WatchStream;

    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn watch_transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<Self::WatchTransferStream>, Status> {
        let name = transfers::name(request.into_inner().name)?;
        Ok(Response::new(
            transfers::watch(&self.transfers, name).await?,
        ))
    }

    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn pause_transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let name = transfers::name(request.into_inner().name)?;
        let info = self.transfers.pause(name).await?;
        Ok(Response::new(transfers::transfer(&info)))
    }

    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn resume_transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let name = transfers::name(request.into_inner().name)?;
        let info = self.transfers.resume(name).await?;
        Ok(Response::new(transfers::transfer(&info)))
    }

    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn cancel_transfer(
        &self,
        request: Request<pb::CancelTransferRequest>,
    ) -> Result<Response<pb::Transfer>, Status> {
        let req = request.into_inner();
        let name = transfers::name(req.name)?;
        let info = self.transfers.cancel(name.clone(), req.remove).await?;
        self.fetcher.forget_origins(&name);
        Ok(Response::new(transfers::transfer(&info)))
    }

    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn unshare(
        &self,
        request: Request<pb::UnshareRequest>,
    ) -> Result<Response<pb::UnshareResponse>, Status> {
        let name = wire::file_name("name", request.into_inner().name).map_err(PeerError::from)?;
        self.sharing.unshare(&name).await?;
        self.fetcher.forget_origins(&name);
        Ok(Response::new(pb::UnshareResponse {}))
    }

    #[instrument(skip_all)]
    async fn set_limits(
        &self,
        request: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::SetLimitsResponse>, Status> {
        let req = request.into_inner();
        let up = req
            .max_upload_rate
            .map(|r| check_rate("--up", r))
            .transpose()?;
        let down = req
            .max_download_rate
            .map(|r| check_rate("--down", r))
            .transpose()?;
        let limits = &self.overview.limits;
        limits.set(up, down);
        let (up, down) = (limits.upload.rate(), limits.download.rate());
        info!(
            max_upload_rate = up,
            max_download_rate = down,
            "rate caps set"
        );
        Ok(Response::new(pb::SetLimitsResponse {
            max_upload_rate: up,
            max_download_rate: down,
        }))
    }
}

/// The chunk size asked for; 0 means the daemon's default.
fn chunk_size(raw: u32) -> Result<Option<ChunkSize>, PeerError> {
    match raw {
        0 => Ok(None),
        n => ChunkSize::new(u64::from(n))
            .map(Some)
            .map_err(|e| PeerError::Invalid(e.to_string())),
    }
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

/// Fetches one chunk and sends the caller its outcome.
async fn one_chunk(
    fetcher: Fetcher,
    name: FileName,
    chunk: u32,
    from: Option<String>,
    tx: mpsc::Sender<Result<pb::FetchEvent, Status>>,
) -> Result<(), PeerError> {
    let result = fetcher.chunk(&name, chunk, from).await;
    let _ = tx.send(done(result)).await;
    Ok(())
}

/// Relays a transfer's phases to one caller until it finishes or the caller
/// goes away (which leaves the transfer running). With `fail_fast`, a
/// transfer found stalled (one started earlier, without it) ends the
/// caller's stream with UNAVAILABLE; the transfer waits on.
async fn forward(
    mut phase_rx: watch::Receiver<Phase>,
    fail_fast: bool,
    tx: mpsc::Sender<Result<pb::FetchEvent, Status>>,
) -> Result<(), PeerError> {
    let mut started = false;
    let mut last = None;
    loop {
        let phase: Phase = phase_rx.borrow_and_update().clone();
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
        if fail_fast && phase.progress.stalled {
            let why = "no live holder can supply the missing chunks; the transfer waits in the daemon (`peerctl cancel` drops it)";
            let _ = tx.send(Err(Status::unavailable(why))).await;
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
            changed = phase_rx.changed() => if changed.is_err() { return Ok(()) },
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

fn status(s: Snapshot) -> pb::StatusResponse {
    pb::StatusResponse {
        peer_id: s.session.peer_id,
        tracker: s.tracker,
        trackers: s.trackers,
        addr: s.session.addr,
        files: s.files.iter().map(local_file).collect(),
        bytes_served: s.counters.bytes_served,
        bytes_fetched: s.counters.bytes_fetched,
        uploads_active: s.counters.uploads_active as u32,
        downloads_active: s.downloads_active as u32,
        listen: s.listen,
        max_upload_rate: s.limits.0,
        max_download_rate: s.limits.1,
        uploads_queued: s.uploads_queued as u32,
        uploads_cut: s.counters.uploads_cut,
        uploads_refused: s.counters.uploads_refused,
        web_url: s.web_url.unwrap_or_default(),
    }
}

fn local_file(f: &FileView) -> pb::LocalFile {
    let state = match (&f.retired, f.kind, f.downloading) {
        (Some(r), _, _) if r.refused => pb::FileState::Refused,
        (Some(_), _, _) => pb::FileState::Gone,
        (None, Kind::Complete, _) => pb::FileState::Seeding,
        (None, Kind::Partial, true) => pb::FileState::Downloading,
        (None, Kind::Partial, false) => pb::FileState::Partial,
    };
    pb::LocalFile {
        name: f.manifest.name().to_string(),
        size: f.manifest.size(),
        chunk_count: f.manifest.chunk_count(),
        chunks_held: f.have.len(),
        digest: f.manifest.digest().as_bytes().to_vec().into(),
        path: f.path.display().to_string(),
        state: state as i32,
        reason: f
            .retired
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
    }
}
