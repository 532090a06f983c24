//! Downloads: whole files through the swarm engine, single chunks directly.
//!
//! Each whole-file download is one task, keyed by file name; a second Fetch
//! of the same name follows the running one. Callers watch its progress on a
//! `watch` channel. When the last caller goes away the download stops (its
//! verified chunks stay, served and resumable), unless the daemon started it
//! itself, resuming after a restart.

pub mod engine;
pub mod live;
pub mod partfile;
pub mod request;
pub mod traits;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use hive::{ChunkSet, Digest, FileName, Manifest, wire};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::{
    engine::{Engine, Progress, Settings, Swarm},
    live::{LiveEngine, PartSink},
    partfile::{Mode, PartFile},
    request::Failure,
    traits::{Holders, Sink},
};
use crate::{
    Config,
    error::PeerError,
    holdings::{Holdings, Kind, Stamp},
    metrics::Counters,
    pool::Pool,
    scan::HashCache,
    tracker_link::TrackerLink,
};

/// Rounds of re-fetching chunks found damaged when the finished file is
/// checked, before the download fails with DATA_LOSS.
const FINISH_ROUNDS: u32 = 3;
/// Holders tried for one chunk before giving up.
const CHUNK_ATTEMPTS: usize = 4;

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
        running.insert(
            name.clone(),
            Running {
                phase: rx.clone(),
                cancel: cancel.clone(),
                watchers: usize::from(!detached),
                detached,
            },
        );
        let this = self.clone();
        hive_runtime::task::spawn("download", async move {
            let _active = this.ctx.counters.download();
            let result = this.download(&name, force, only, &tx, &cancel).await;
            if let Err(e) = &result {
                info!(file = %name, error = %e, "download stopped");
            }
            this.lock().remove(&name);
            tx.send_modify(|p| p.finished = Some(result));
            Ok::<(), PeerError>(())
        });
        rx
    }

    async fn download(
        &self,
        name: &FileName,
        force: bool,
        only: Option<String>,
        tx: &watch::Sender<Phase>,
        cancel: &CancellationToken,
    ) -> Result<DoneInfo, PeerError> {
        let ctx = &*self.ctx;
        let started = Instant::now();
        let mut located = ctx.link.locate(name).await?;
        let manifest = Arc::new(located.manifest.clone());
        let dest = ctx.dir.join(name.as_str());
        match ctx.holdings.holding(name) {
            Some((m, _, Kind::Complete)) if m.digest() == manifest.digest() => {
                return Ok(DoneInfo::present(
                    ctx.holdings.file(name).map(|f| f.1).unwrap_or(dest),
                    &manifest,
                ));
            }
            Some((m, _, Kind::Complete)) if !force => {
                return Err(PeerError::Exists(format!(
                    "another file named {name:?} is shared here (digest {}); use --force to replace it",
                    m.digest()
                )));
            }
            Some((_, _, Kind::Complete)) => {
                // Being replaced: stop serving the old content now.
                ctx.holdings.remove(name);
            }
            _ => {}
        }
        if !force && dest.exists() {
            return Err(PeerError::Exists(format!(
                "{} exists; use --force to replace it",
                dest.display()
            )));
        }
        let (part, have, _) = self.open_part(&manifest, Mode::Whole).await?;
        part.stream_writes();
        let reserve = part.clone();
        let size = manifest.size();
        blocking(move || reserve.reserve(size)).await?;

        let holders = located.holders.len() as u32;
        let present = have.len();
        tx.send_modify(|p| {
            p.started = Some(StartInfo {
                holders,
                chunks_present: present,
                chunks_wanted: manifest.chunk_count() - present,
                bytes_wanted: manifest.size() - bytes_of(&manifest, &have),
                manifest: manifest.clone(),
            })
        });
        ctx.holdings.set_downloading(name, true);
        let swarm = Swarm {
            locator: ctx.link.clone(),
            holders: ctx.pool.clone(),
            sink: self.sink(&part, &manifest),
        };
        let settings = Settings::from(&ctx.config);
        let counters = ctx.counters.clone();
        let mut engine = Engine::new(swarm, settings, counters, manifest.clone(), have, only);
        let outcome = self
            .fetch_and_finish(&mut engine, &mut located, &part, &dest, force, tx, cancel)
            .await;
        ctx.holdings.set_downloading(name, false);
        match outcome {
            Ok(stamp) => {
                ctx.holdings.complete(name, dest.clone(), stamp);
                self.remember(&dest, stamp, &manifest);
                if let Err(e) = ctx.link.flush().await {
                    warn!(error = %e, "chunk registrations are queued until the tracker answers");
                }
                info!(file = %name, bytes = manifest.size(), elapsed_ms = started.elapsed().as_millis() as u64, "download complete");
                Ok(DoneInfo {
                    path: dest,
                    digest: manifest.digest(),
                    bytes_received: engine.stats.bytes_received,
                    chunks_fetched: engine.stats.chunks_fetched,
                    elapsed: started.elapsed(),
                    source: String::new(),
                    already_present: false,
                    holders_banned: engine.stats.holders_banned,
                })
            }
            Err(e) => {
                // Stopped by the user: do not resume on restart. Stopped by
                // the daemon shutting down: do.
                let paused = e == PeerError::Cancelled && !self.stop.is_cancelled();
                if let Err(e) = ctx.holdings.save_resume(name, Mode::Whole, paused) {
                    warn!(error = %e, "cannot save resume state");
                }
                Err(e)
            }
        }
    }

    /// Runs the engine, then makes the file final; chunks that turn out bad
    /// on disk are fetched again.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_and_finish(
        &self,
        engine: &mut LiveEngine,
        located: &mut crate::tracker_link::Located,
        part: &Arc<PartFile>,
        dest: &std::path::Path,
        force: bool,
        tx: &watch::Sender<Phase>,
        cancel: &CancellationToken,
    ) -> Result<Stamp, PeerError> {
        let ctx = &*self.ctx;
        let manifest = Arc::new(located.manifest.clone());
        for round in 1..=FINISH_ROUNDS {
            let mut report = |p: &Progress| {
                tx.send_if_modified(|phase| {
                    let changed = phase.progress != *p;
                    phase.progress = p.clone();
                    changed
                });
            };
            let transfer = Instant::now();
            engine.run(located.clone(), cancel, &mut report).await?;
            let finish = Instant::now();
            // The hash cache learns the file's digests, in the swarm's chunk
            // size, before the file takes its name: a daemon restarted after
            // a crash past the rename finds them there, rather than hashing
            // the file again in its own chunk size (which the tracker refuses).
            if let Ok(meta) = part.file.metadata() {
                self.remember(dest, Stamp::of(&meta), &manifest);
            }
            let (p, m, d) = (part.clone(), manifest.clone(), dest.to_owned());
            let (have, reverify) = (engine.have().clone(), ctx.config.verify_on_finish);
            let finished = blocking(move || p.finish(&m, &have, &d, force, reverify)).await?;
            debug!(
                file = %manifest.name(),
                transfer_ms = finish.duration_since(transfer).as_millis() as u64,
                finish_ms = finish.elapsed().as_millis() as u64,
                "download phases"
            );
            match finished {
                Ok(()) => {
                    let meta = part
                        .file
                        .metadata()
                        .map_err(|e| PeerError::io(dest.display(), &e))?;
                    return Ok(Stamp::of(&meta));
                }
                Err(bad) => {
                    warn!(file = %manifest.name(), chunks = %bad, round, "chunks damaged on disk; fetching them again");
                    for chunk in bad.iter() {
                        ctx.holdings.withdraw(manifest.name(), chunk);
                    }
                    engine.forget(&bad);
                    *located = ctx.link.relocate(&manifest).await?;
                }
            }
        }
        Err(PeerError::DataLoss(format!(
            "{:?} kept failing verification on disk; the disk may be faulty",
            manifest.name()
        )))
    }

    /// Seed message 5: one chunk, from `from` or from any holder that has it;
    /// verified, stored (served from then on) and registered (message 4).
    pub async fn chunk(
        &self,
        name: &FileName,
        number: u32,
        from: Option<String>,
    ) -> Result<DoneInfo, PeerError> {
        let ctx = &*self.ctx;
        let started = Instant::now();
        let located = ctx.link.locate(name).await?;
        let manifest = Arc::new(located.manifest);
        let chunk = wire::chunk("chunk", manifest.layout(), number)?;
        // A complete copy has every byte, in whatever chunk size it was
        // hashed; a partial one's chunk set only means something in its own.
        if let Some((m, have, kind)) = ctx.holdings.holding(name)
            && m.digest() == manifest.digest()
            && (kind == Kind::Complete || (m == manifest && have.contains(chunk)))
        {
            let path = ctx.holdings.file(name).map(|f| f.1).unwrap_or_default();
            return Ok(DoneInfo::present(path, &manifest));
        }
        let me = ctx.link.session().map(|s| s.peer_id);
        let mut candidates: Vec<String> = match &from {
            Some(addr) => vec![addr.clone()],
            None => located
                .holders
                .into_iter()
                .filter(|h| h.chunks.contains(chunk) && Some(&h.peer_id) != me.as_ref())
                .map(|h| h.addr)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(PeerError::Unavailable(format!(
                "no live holder has chunk {chunk} of {name:?}"
            )));
        }
        fastrand::shuffle(&mut candidates);
        let (part, _, existed) = self.open_part(&manifest, Mode::Chunks).await?;
        let sink = self.sink(&part, &manifest);
        let mut last = None;
        for addr in candidates.into_iter().take(CHUNK_ATTEMPTS) {
            let conn = ctx.pool.connect(&addr)?;
            let outcome = request::fetch_into(
                &ctx.pool,
                &conn,
                manifest.clone(),
                chunk,
                ctx.config.chunk_timeout,
                sink.clone(),
            )
            .await;
            ctx.counters.add_fetched(outcome.received);
            match outcome.result {
                Ok(()) => {
                    sink.held(chunk);
                    // The resume state is written while the tracker stores
                    // the registration.
                    let (p, holdings, n) = (part.clone(), ctx.holdings.clone(), name.clone());
                    let save = blocking(move || {
                        // A whole-file download keeps its mode.
                        let mode = match existed {
                            true => p.state().map_or(Mode::Chunks, |s| s.mode),
                            false => Mode::Chunks,
                        };
                        holdings.save_resume(&n, mode, false)
                    });
                    let (saved, flushed) = tokio::join!(save, ctx.link.flush());
                    if let Err(e) = saved {
                        warn!(error = %e, "cannot save resume state");
                    }
                    if let Err(e) = flushed {
                        warn!(error = %e, "chunk registered locally; the tracker will hear of it once it answers");
                    }
                    return Ok(DoneInfo {
                        path: part.path.clone(),
                        digest: manifest.chunk_digest(chunk),
                        bytes_received: outcome.received,
                        chunks_fetched: 1,
                        elapsed: started.elapsed(),
                        source: addr,
                        already_present: false,
                        holders_banned: 0,
                    });
                }
                Err(Failure::Write(e)) => return Err(e),
                Err(f) => {
                    if matches!(f, Failure::Bad(_) | Failure::Lacks) {
                        ctx.counters.add_strike();
                    }
                    last = Some((addr, f));
                }
            }
        }
        Err(match last {
            Some((addr, Failure::Lacks)) if from.is_some() => {
                PeerError::NotFound(format!("{addr} does not have chunk {chunk} of {name:?}"))
            }
            Some((addr, Failure::Bad(why))) => {
                PeerError::Unavailable(format!("{addr} sent bad data for chunk {chunk}: {why}"))
            }
            Some((addr, f)) => {
                PeerError::Unavailable(format!("cannot fetch chunk {chunk} from {addr}: {f:?}"))
            }
            None => PeerError::Unavailable(format!("no holder could supply chunk {chunk}")),
        })
    }

    /// The part file for `manifest`, with the chunks verified in it: taken
    /// from the share index if the download is known with this very
    /// manifest, else re-verified from disk (nothing in an old part file is
    /// trusted, and one from the same content in another chunk size is
    /// counted again in this one) and added to the index.
    async fn open_part(
        &self,
        manifest: &Arc<Manifest>,
        mode: Mode,
    ) -> Result<(Arc<PartFile>, ChunkSet, bool), PeerError> {
        let ctx = &*self.ctx;
        let known = ctx
            .holdings
            .holding(manifest.name())
            .filter(|(m, _, kind)| *kind == Kind::Partial && m == manifest)
            .map(|(_, have, _)| have);
        let (state_dir, m) = (ctx.state_dir.clone(), manifest.clone());
        let (part, have, existed) = blocking(move || {
            let (part, existed) = PartFile::open(&state_dir, &m)?;
            let have = match known {
                Some(have) => have,
                None if existed => part.verify(&m, None),
                None => ChunkSet::empty(m.chunk_count()),
            };
            Ok((part, have, existed))
        })
        .await?;
        let part = Arc::new(part);
        if ctx
            .holdings
            .holding(manifest.name())
            .is_none_or(|(m, _, kind)| {
                (kind == Kind::Partial && m != *manifest) || m.digest() != manifest.digest()
            })
        {
            // Announced with the chunks it holds.
            ctx.holdings
                .insert_partial(manifest.clone(), &part, have.clone());
        }
        // A single chunk saves the state once it is written.
        if mode == Mode::Whole {
            ctx.holdings.save_resume(manifest.name(), mode, false)?;
        }
        Ok((part, have, existed))
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

fn bytes_of(manifest: &Manifest, set: &ChunkSet) -> u64 {
    set.iter()
        .map(|c| u64::from(manifest.layout().chunk_len(c)))
        .sum()
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PeerError> + Send + 'static,
) -> Result<T, PeerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PeerError::Internal(format!("file task failed: {e}")))?
}

/// Loads the downloads saved in `state_dir` into the share index (every
/// chunk re-verified; blocking) and returns the whole-file downloads to carry
/// on with.
pub fn load_saved(state_dir: &std::path::Path, holdings: &Holdings) -> Vec<FileName> {
    let mut resume = Vec::new();
    for state in partfile::saved_states(state_dir) {
        let Some(manifest) = state.manifest() else {
            warn!(file = %state.name, "resume state holds an inconsistent manifest; ignored");
            continue;
        };
        if !PartFile::exists(state_dir, manifest.name()) {
            // Finished just before a crash, or removed by hand.
            PartFile::forget(state_dir, manifest.name());
            continue;
        }
        let (part, _) = match PartFile::open(state_dir, &manifest) {
            Ok(p) => p,
            Err(e) => {
                warn!(file = %manifest.name(), error = %e, "cannot open part file");
                continue;
            }
        };
        let claimed = state.written(manifest.chunk_count());
        let have = match state.mode {
            Mode::Whole => part.verify(&manifest, None),
            Mode::Chunks => part.verify(&manifest, Some(&claimed)),
        };
        info!(file = %manifest.name(), chunks = have.len(), of = manifest.chunk_count(), "resumed partial file");
        if state.mode == Mode::Whole && !state.paused {
            resume.push(manifest.name().clone());
        }
        holdings.insert_partial(Arc::new(manifest), &part, have);
    }
    resume
}
