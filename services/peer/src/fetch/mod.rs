//! Downloads: whole files through the swarm engine, single chunks directly.
//!
//! Each whole-file download is one task, keyed by file name; a second Fetch
//! of the same name follows the running one. Callers watch its progress on a
//! `watch` channel. When the last caller goes away the download stops (its
//! verified chunks stay, served and resumable), unless the daemon started it
//! itself, resuming after a restart.
//!
//! - `whole`: a whole-file download, from Locate to the file in place.
//! - `single`: one chunk, fetched directly.
//! - `resume`: the part file a download writes into, and the downloads
//!   saved before a restart.
//! - [`engine`]: the swarm engine, behind the small [`traits`] (the daemon's
//!   adapters are in [`live`]); [`request`]: one chunk from one holder;
//!   [`partfile`]: the file being written and its resume state.

pub mod engine;
pub mod live;
pub mod partfile;
pub mod request;
mod resume;
mod single;
pub mod traits;
mod whole;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use hive::{Digest, FileName, Manifest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::resume::load_saved;
use self::{engine::Progress, live::PartSink, partfile::PartFile};
use crate::{
    Config,
    error::PeerError,
    holdings::{Holdings, Stamp},
    metrics::Counters,
    pool::Pool,
    scan::HashCache,
    throttle::Throttle,
    tracker_link::TrackerLink,
};

/// What downloads share.
pub struct Ctx {
    pub holdings: Holdings,
    pub link: TrackerLink,
    pub pool: Pool,
    pub config: Config,
    pub counters: Arc<Counters>,
    /// Where finished downloads land (the share directory).
    pub dir: PathBuf,
    /// `.hive` inside it.
    pub state_dir: PathBuf,
    pub cache: Arc<Mutex<HashCache>>,
    /// The global download cap (`--max-download-rate`).
    pub download_cap: Arc<Throttle>,
}

/// A download as its callers see it.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub started: Option<StartInfo>,
    pub progress: Progress,
    pub finished: Option<Result<DoneInfo, PeerError>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfo {
    pub manifest: Arc<Manifest>,
    pub holders: u32,
    pub chunks_present: u32,
    pub bytes_wanted: u64,
    pub chunks_wanted: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneInfo {
    pub path: PathBuf,
    pub digest: Digest,
    pub bytes_received: u64,
    pub chunks_fetched: u32,
    pub elapsed: Duration,
    pub source: String,
    pub already_present: bool,
    pub holders_banned: u32,
}

/// The download manager: a cheap, shared handle.
#[derive(Clone)]
pub struct Fetcher {
    ctx: Arc<Ctx>,
    running: Arc<Mutex<HashMap<FileName, Running>>>,
    /// Cancelled when the daemon stops: downloads stop without pausing.
    stop: CancellationToken,
}

struct Running {
    phase: watch::Receiver<Phase>,
    cancel: CancellationToken,
    watchers: usize,
    detached: bool,
    /// This download's own cap, besides the global one.
    cap: Arc<Throttle>,
}

/// A caller following a download; dropping it may stop the download.
pub struct Subscription {
    pub phase: watch::Receiver<Phase>,
    _guard: WatchGuard,
}

struct WatchGuard {
    fetcher: Fetcher,
    name: FileName,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut running = self.fetcher.lock();
        if let Some(r) = running.get_mut(&self.name) {
            r.watchers = r.watchers.saturating_sub(1);
            if r.watchers == 0 && !r.detached {
                info!(file = %self.name, "the caller went away; stopping the download");
                r.cancel.cancel();
            }
        }
    }
}

impl Fetcher {
    pub fn new(ctx: Arc<Ctx>, stop: CancellationToken) -> Self {
        Self {
            ctx,
            running: Arc::default(),
            stop,
        }
    }

    /// Downloads running now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// Starts a whole-file download of `name`, or follows the running one.
    pub fn whole(&self, name: FileName, force: bool, only: Option<String>) -> Subscription {
        let phase = self.launch(name.clone(), force, only, false);
        Subscription {
            phase,
            _guard: WatchGuard {
                fetcher: self.clone(),
                name,
            },
        }
    }

    /// Caps the running download of `name` at `rate` bytes a second (0:
    /// only the global cap applies); false if none is running.
    pub fn limit(&self, name: &FileName, rate: u64) -> bool {
        match self.lock().get(name) {
            Some(r) => {
                r.cap.set_rate(rate);
                true
            }
            None => false,
        }
    }

    /// Starts a whole-file download that nobody watches (resuming after a
    /// restart); it runs until done or the daemon stops.
    pub fn detached(&self, name: FileName) {
        self.launch(name, false, None, true);
    }

    fn launch(
        &self,
        name: FileName,
        force: bool,
        only: Option<String>,
        detached: bool,
    ) -> watch::Receiver<Phase> {
        let mut running = self.lock();
        if let Some(r) = running.get_mut(&name) {
            if !detached {
                r.watchers += 1;
            }
            return r.phase.clone();
        }
        let (tx, rx) = watch::channel(Phase::default());
        let cancel = self.stop.child_token();
        let cap = Arc::new(Throttle::default());
        running.insert(
            name.clone(),
            Running {
                phase: rx.clone(),
                cancel: cancel.clone(),
                watchers: usize::from(!detached),
                detached,
                cap: cap.clone(),
            },
        );
        let this = self.clone();
        hive_runtime::task::spawn("download", async move {
            let _active = this.ctx.counters.download();
            let result = this.download(&name, (force, only), cap, &tx, &cancel).await;
            if let Err(e) = &result {
                info!(file = %name, error = %e, "download stopped");
            }
            this.lock().remove(&name);
            tx.send_modify(|p| p.finished = Some(result));
            Ok::<(), PeerError>(())
        });
        rx
    }

    /// Where `part`'s verified chunks go.
    fn sink(&self, part: &Arc<PartFile>, manifest: &Arc<Manifest>) -> PartSink {
        PartSink {
            part: part.clone(),
            manifest: manifest.clone(),
            holdings: self.ctx.holdings.clone(),
        }
    }

    fn remember(&self, path: &std::path::Path, stamp: Stamp, manifest: &Manifest) {
        let mut cache = self
            .ctx
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.store(path, stamp, manifest);
        if let Err(e) = cache.save() {
            warn!(error = %e, "cannot save the hash cache");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FileName, Running>> {
        // Entries are inserted and removed whole; poison cannot tear one.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DoneInfo {
    fn present(path: PathBuf, manifest: &Manifest) -> Self {
        Self {
            path,
            digest: manifest.digest(),
            bytes_received: 0,
            chunks_fetched: 0,
            elapsed: Duration::ZERO,
            source: String::new(),
            already_present: true,
            holders_banned: 0,
        }
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PeerError> + Send + 'static,
) -> Result<T, PeerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PeerError::Internal(format!("file task failed: {e}")))?
}
