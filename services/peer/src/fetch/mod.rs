//! Downloads: whole files through the swarm engine, single chunks directly.
//!
//! A whole-file download runs for [`crate::transfers`], which owns it (and
//! decides when it runs, pauses or stops); its progress goes out on a
//! `watch` channel that any number of callers follow. Nobody following it
//! never stops it.
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
pub mod origins;
pub mod partfile;
pub mod request;
mod resume;
mod single;
pub mod traits;
mod whole;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hive::{Digest, FileName, Manifest};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::resume::load_saved;
use self::{engine::Progress, live::PartSink, origins::Origins, partfile::PartFile};
use crate::{
    Config,
    error::PeerError,
    holdings::{self, Holdings, Stamp},
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
    /// Where each chunk fetched in this run came from.
    pub origins: Origins,
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

/// How a whole-file download is to run, as the user asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Replace an existing file of that name.
    pub force: bool,
    /// Ask only this holder (`host:port`).
    pub only: Option<String>,
    /// Fail with UNAVAILABLE when no live holder has a missing chunk, rather
    /// than wait (stalled) for one to appear.
    pub fail_fast: bool,
    /// This download's own cap in bytes a second, under the global
    /// --max-download-rate; 0 sets none.
    #[serde(default)]
    pub max_rate: u64,
}

/// The download manager: a cheap, shared handle. It runs downloads; which
/// ones run, and when, is decided by [`crate::transfers`].
#[derive(Clone)]
pub struct Fetcher {
    ctx: Arc<Ctx>,
    active: Arc<AtomicUsize>,
    /// The own cap of each running download, so a rate change reaches it.
    caps: Arc<Mutex<HashMap<FileName, Arc<Throttle>>>>,
    /// Cancelled when the daemon stops: downloads stop without pausing.
    stop: CancellationToken,
}

impl Fetcher {
    pub fn new(ctx: Arc<Ctx>, stop: CancellationToken) -> Self {
        Self {
            ctx,
            active: Arc::default(),
            caps: Arc::default(),
            stop,
        }
    }

    /// Downloads running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// A token that stops one download, and is cancelled when the daemon stops.
    pub fn token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Whether the daemon is stopping (a cancelled download then stays
    /// resumable rather than paused).
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Caps the running download of `name` at `rate` bytes a second (0:
    /// only the global cap applies); false if none is running.
    pub fn limit(&self, name: &FileName, rate: u64) -> bool {
        match self.caps().get(name) {
            Some(cap) => {
                cap.set_rate(rate);
                true
            }
            None => false,
        }
    }

    /// Runs a whole-file download of `name`, reporting on `tx`, until it is
    /// done, fails, or `cancel` stops it (its verified chunks stay, served
    /// and resumable).
    pub async fn run(
        &self,
        name: &FileName,
        spec: &Spec,
        tx: &watch::Sender<Phase>,
        cancel: &CancellationToken,
    ) -> Result<DoneInfo, PeerError> {
        let _active = self.ctx.counters.download();
        self.active.fetch_add(1, Ordering::Relaxed);
        let cap = Arc::new(Throttle::default());
        cap.set_rate(spec.max_rate);
        self.caps().insert(name.clone(), cap.clone());
        let result = self.download(name, spec, cap, tx, cancel).await;
        // Bounded: kept among the last few finished (a cancel forgets them).
        self.ctx.origins.finished(name);
        self.caps().remove(name);
        self.active.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = &result {
            info!(file = %name, error = %e, "download stopped");
        }
        result
    }

    /// What is held of `name`: its manifest, and the bytes and chunks held.
    pub fn held(&self, name: &FileName) -> Option<(Arc<Manifest>, u64, u32)> {
        let (manifest, have, _) = self.ctx.holdings.holding(name)?;
        let bytes = have
            .iter()
            .map(|c| u64::from(manifest.layout().chunk_len(c)))
            .sum();
        Some((manifest, bytes, have.len()))
    }

    /// Drops what the chunk map knows of where `name`'s chunks came from
    /// (its download was cancelled, or it was unshared).
    pub fn forget_origins(&self, name: &FileName) {
        self.ctx.origins.forget(name);
    }

    /// Drops a stopped download's verified chunks: no longer served, the
    /// part file and its resume state removed (blocking).
    pub fn discard(&self, name: &FileName) {
        if self
            .ctx
            .holdings
            .holding(name)
            .is_some_and(|(_, _, kind)| kind == holdings::Kind::Partial)
        {
            self.ctx.holdings.remove(name);
        }
        PartFile::discard(&self.ctx.state_dir, name);
    }

    /// The running downloads' own caps. A std mutex: held for a map
    /// operation, never across an await.
    fn caps(&self) -> std::sync::MutexGuard<'_, HashMap<FileName, Arc<Throttle>>> {
        self.caps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where `part`'s verified chunks go.
    fn sink(&self, part: &Arc<PartFile>, manifest: &Arc<Manifest>) -> PartSink {
        PartSink {
            part: part.clone(),
            manifest: manifest.clone(),
            holdings: self.ctx.holdings.clone(),
            origins: self.ctx.origins.clone(),
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
