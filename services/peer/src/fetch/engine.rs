//! The swarm engine: fetches every missing chunk of one file from every live
//! holder at once.
//!
//! - Rarest first: chunks are requested in order of how few holders have them
//!   (the tracker's per-chunk counts), ties broken at random.
//! - Each holder has a bounded number of requests in flight; one connection
//!   per holder, one HTTP/2 stream per chunk.
//! - The tracker is asked again now and then, so holders that join are used.
//! - End-game: once every missing chunk is requested, the last ones are asked
//!   of a second holder too; the first verified copy wins, the other request
//!   is dropped.
//! - Fail-over: a request that fails or stalls past the per-chunk deadline
//!   puts its chunk back for others; an unreachable holder backs off and is
//!   dropped once the tracker no longer lists it, or after repeated failures.
//! - Strikes: bad data (wrong, short, over-long) or a chunk advertised but
//!   not held is a strike. A holder is banned from this download at once if
//!   someone else can serve that chunk, or after three strikes if it is the
//!   only source.
//!
//! The engine owns all its state; request tasks report back through a
//! `JoinSet`, which also aborts whatever is still running when the engine
//! stops.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use hive::{ChunkIndex, ChunkSet, Manifest};
use tokio::{
    task::{AbortHandle, Id, JoinHandle, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    Ctx,
    partfile::PartFile,
    request::{self, Failure, Outcome, PeerClient},
};
use crate::{error::PeerError, tracker_link::Located};

/// Strikes that ban the only source of a chunk.
const SOLE_SOURCE_STRIKES: u32 = 3;
/// Consecutive failures after which a holder is written off.
const MAX_FAILURES: u32 = 5;
/// At most this many holders fetch the same chunk in the end-game.
const MAX_COPIES: usize = 2;
/// The tracker is asked at most this often when a holder seems gone.
const RELOCATE_MIN: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// A download keeps at most this many chunk bytes in flight over all its
/// holders (and at least two chunks): memory stays bounded however many
/// holders there are and however large the chunks (16 MiB for the largest
/// files).
const MAX_INFLIGHT_BYTES: u64 = 16 << 20;

/// What the engine reports while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub chunks_done: u32,
    pub bytes_done: u64,
    pub holders_active: u32,
}

/// What a finished (or stopped) run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub bytes_received: u64,
    pub chunks_fetched: u32,
    pub holders_banned: u32,
}

/// One download's swarm.
pub struct Engine<'a> {
    ctx: &'a Ctx,
    manifest: Arc<Manifest>,
    part: Arc<PartFile>,
    have: ChunkSet,
    /// Only this holder, if the user named one.
    only: Option<String>,
    holders: Vec<HolderState>,
    by_addr: HashMap<String, usize>,
    /// Chunks neither held nor requested, rarest first.
    pending: BTreeSet<(u32, u32, ChunkIndex)>,
    rank: Vec<(u32, u32)>,
    inflight: HashMap<ChunkIndex, Vec<(usize, AbortHandle)>>,
    tasks: JoinSet<Outcome>,
    task_of: HashMap<Id, (usize, ChunkIndex)>,
    last_relocate: Instant,
    relocate_soon: bool,
    /// A Locate in flight: asked in the background, so a slow or frozen
    /// tracker never holds up requests to holders.
    locating: Option<JoinHandle<Result<Located, PeerError>>>,
    pub stats: RunStats,
    progress: Progress,
}

struct HolderState {
    addr: String,
    peer_id: String,
    client: PeerClient,
    chunks: ChunkSet,
    inflight: usize,
    limit: usize,
    strikes: u32,
    banned: bool,
    failures: u32,
    retry_at: Instant,
    /// Whether the last Locate listed it.
    listed: bool,
}

enum Idle {
    /// Some holder will be worth asking again at this time.
    Until(Instant),
    /// Nobody can supply the missing chunks.
    NoSource,
}

impl<'a> Engine<'a> {
    pub fn new(
        ctx: &'a Ctx,
        manifest: Arc<Manifest>,
        part: Arc<PartFile>,
        have: ChunkSet,
        only: Option<String>,
    ) -> Self {
        let progress = Progress {
            chunks_done: have.len(),
            bytes_done: have
                .iter()
                .map(|c| u64::from(manifest.layout().chunk_len(c)))
                .sum(),
            holders_active: 0,
        };
        let rank = vec![(0, 0); manifest.chunk_count() as usize];
        let mut engine = Self {
            ctx,
            manifest,
            part,
            have,
            only,
            holders: Vec::new(),
            by_addr: HashMap::new(),
            pending: BTreeSet::new(),
            rank,
            inflight: HashMap::new(),
            tasks: JoinSet::new(),
            task_of: HashMap::new(),
            last_relocate: Instant::now(),
            relocate_soon: false,
            locating: None,
            stats: RunStats::default(),
            progress,
        };
        engine.rerank(&[]);
        engine
    }

    /// The chunks verified so far.
    pub fn have(&self) -> &ChunkSet {
        &self.have
    }

    /// Takes back chunks found damaged on disk, to fetch them again.
    pub fn forget(&mut self, bad: &ChunkSet) {
        for chunk in bad.iter() {
            if self.have.remove(chunk) {
                self.progress.chunks_done -= 1;
                self.progress.bytes_done -= u64::from(self.manifest.layout().chunk_len(chunk));
                self.requeue(chunk);
            }
        }
    }

    /// Fetches until every chunk is held, the download is cancelled, or no
    /// holder can supply what is missing.
    pub async fn run(
        &mut self,
        located: Located,
        cancel: &CancellationToken,
        report: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<(), PeerError> {
        // Checked like any later answer: a Locate made between rounds may
        // find other content under this name by now.
        self.take(Ok(located));
        let mut relocate = tokio::time::interval(self.ctx.config.relocate_interval);
        relocate.reset();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            if self.have.is_full() {
                self.publish(report);
                return Ok(());
            }
            self.assign();
            let mut wait = None;
            if self.tasks.is_empty() {
                match self.idle() {
                    Idle::Until(at) => wait = Some(at),
                    Idle::NoSource => {
                        // Ask the tracker once more before giving up.
                        if self.relocate_now().await {
                            continue;
                        }
                        let missing = self.manifest.chunk_count() - self.have.len();
                        return Err(PeerError::Unavailable(format!(
                            "no live holder can supply the {missing} missing chunks of {:?}; verified chunks are kept",
                            self.manifest.name()
                        )));
                    }
                }
            }
            if self.relocate_soon && self.last_relocate.elapsed() >= RELOCATE_MIN {
                self.start_locate();
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                Some(joined) = self.tasks.join_next_with_id() => {
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, Some(outcome)),
                        Err(e) => (e.id(), None),
                    };
                    self.on_outcome(id, outcome)?;
                }
                found = answer(&mut self.locating), if self.locating.is_some() => {
                    self.locating = None;
                    self.take(found);
                }
                _ = relocate.tick() => self.start_locate(),
                _ = tick.tick() => self.publish(report),
                _ = tokio::time::sleep_until(wait.unwrap_or_else(Instant::now)), if wait.is_some() => {}
            }
        }
    }

    fn publish(&mut self, report: &mut (dyn FnMut(&Progress) + Send)) {
        self.progress.holders_active =
            self.holders.iter().filter(|h| h.inflight > 0).count() as u32;
        report(&self.progress);
    }

    /// Starts a Locate in the background, unless one is in flight.
    fn start_locate(&mut self) {
        self.last_relocate = Instant::now();
        self.relocate_soon = false;
        if self.locating.is_none() {
            let (link, manifest) = (self.ctx.link.clone(), self.manifest.clone());
            self.locating = Some(tokio::spawn(async move { link.relocate(&manifest).await }));
        }
    }

    /// Asks the tracker again and waits for the answer; returns whether some
    /// holder can now supply a missing chunk.
    async fn relocate_now(&mut self) -> bool {
        self.start_locate();
        let found = answer(&mut self.locating).await;
        self.locating = None;
        self.take(found);
        self.holders
            .iter()
            .any(|h| self.source(h) && self.lacking(h))
    }

    /// Takes in the outcome of a Locate.
    fn take(&mut self, found: Result<Located, PeerError>) {
        match found {
            Ok(found) if found.manifest.digest() == self.manifest.digest() => self.merge(found),
            Ok(_) => {
                warn!(file = %self.manifest.name(), "the tracker now has other content under this name")
            }
            Err(e) => debug!(error = %e, "locate failed; carrying on with known holders"),
        }
    }

    /// Takes in a Locate answer: new holders, fresh chunk sets, rarity.
    fn merge(&mut self, found: Located) {
        let me = self.ctx.link.session().map(|s| s.peer_id);
        for h in &mut self.holders {
            h.listed = false;
        }
        for holder in found.holders {
            if me.as_deref() == Some(holder.peer_id.as_str()) {
                continue;
            }
            if self.only.as_ref().is_some_and(|only| *only != holder.addr) {
                continue;
            }
            match self.by_addr.get(&holder.addr) {
                Some(&i) => {
                    let h = &mut self.holders[i];
                    if h.peer_id != holder.peer_id && !h.banned {
                        // The peer restarted: give it a fresh start.
                        h.failures = 0;
                        h.peer_id = holder.peer_id;
                    }
                    h.chunks = holder.chunks;
                    h.listed = true;
                }
                None => {
                    let chunks = holder.chunks;
                    self.add_holder(holder.addr, holder.peer_id, chunks);
                }
            }
        }
        if let Some(only) = self.only.clone()
            && !self.by_addr.contains_key(&only)
        {
            // Not listed (yet): take the user's word that it has everything.
            self.add_holder(
                only,
                String::new(),
                ChunkSet::full(self.manifest.chunk_count()),
            );
        }
        self.rerank(&found.chunk_holders);
    }

    fn add_holder(&mut self, addr: String, peer_id: String, chunks: ChunkSet) {
        let client = match self.ctx.pool.client(&addr) {
            Ok(c) => c,
            Err(e) => {
                warn!(%addr, error = %e, "holder address unusable");
                return;
            }
        };
        self.by_addr.insert(addr.clone(), self.holders.len());
        self.holders.push(HolderState {
            addr,
            peer_id,
            client,
            chunks,
            inflight: 0,
            limit: self.ctx.config.per_holder.max(1),
            strikes: 0,
            banned: false,
            failures: 0,
            retry_at: Instant::now(),
            listed: true,
        });
    }

    /// Rebuilds the rarest-first order from per-chunk holder counts.
    fn rerank(&mut self, counts: &[u32]) {
        self.pending.clear();
        for chunk in self.manifest.layout().chunks() {
            let rarity = counts.get(chunk.position()).copied().unwrap_or(0);
            self.rank[chunk.position()] = (rarity, fastrand::u32(..));
            if !self.have.contains(chunk) && !self.inflight.contains_key(&chunk) {
                self.pending.insert(self.key(chunk));
            }
        }
    }

    fn key(&self, chunk: ChunkIndex) -> (u32, u32, ChunkIndex) {
        let (rarity, tie) = self.rank[chunk.position()];
        (rarity, tie, chunk)
    }

    /// Whether a request may go to `h` now.
    fn usable(&self, h: &HolderState) -> bool {
        !h.banned && h.failures < MAX_FAILURES && h.retry_at <= Instant::now()
    }

    /// Whether `h` still counts as a source: not banned or written off, and
    /// either listed by the tracker, named by the user, or not yet failing.
    fn source(&self, h: &HolderState) -> bool {
        !h.banned
            && h.failures < MAX_FAILURES
            && (h.listed || self.only.is_some() || h.failures == 0)
    }

    /// Whether `h` has some chunk still missing here.
    fn lacking(&self, h: &HolderState) -> bool {
        h.chunks.iter().any(|c| !self.have.contains(c))
    }

    /// Fills every holder's free request slots.
    fn assign(&mut self) {
        let chunk = u64::from(self.manifest.layout().chunk_size().get());
        let most = (MAX_INFLIGHT_BYTES / chunk).max(2) as usize;
        loop {
            let mut started = false;
            for i in 0..self.holders.len() {
                let h = &self.holders[i];
                if !self.usable(h) || h.inflight >= h.limit || self.task_of.len() >= most {
                    continue;
                }
                if let Some(chunk) = self.pick(i) {
                    self.start(i, chunk);
                    started = true;
                }
            }
            if !started {
                return;
            }
        }
    }

    /// The next chunk for holder `i`: the rarest unrequested one it has, or
    /// in the end-game a requested one it is not already fetching.
    fn pick(&self, i: usize) -> Option<ChunkIndex> {
        let h = &self.holders[i];
        if let Some(&(_, _, chunk)) = self.pending.iter().find(|(_, _, c)| h.chunks.contains(*c)) {
            return Some(chunk);
        }
        if !self.pending.is_empty() {
            return None;
        }
        self.inflight
            .iter()
            .filter(|(c, who)| {
                who.len() < MAX_COPIES && h.chunks.contains(**c) && who.iter().all(|(j, _)| *j != i)
            })
            .min_by_key(|(c, who)| (who.len(), self.rank[c.position()]))
            .map(|(c, _)| *c)
    }

    fn start(&mut self, i: usize, chunk: ChunkIndex) {
        self.pending.remove(&self.key(chunk));
        let h = &mut self.holders[i];
        h.inflight += 1;
        let job = request::fetch_into(
            h.client.clone(),
            self.manifest.clone(),
            chunk,
            self.ctx.config.chunk_timeout,
            self.part.clone(),
        );
        let handle = self.tasks.spawn(job);
        self.task_of.insert(handle.id(), (i, chunk));
        self.inflight.entry(chunk).or_default().push((i, handle));
    }

    /// Handles a finished request; `None` if it was aborted or panicked.
    fn on_outcome(&mut self, id: Id, outcome: Option<Outcome>) -> Result<(), PeerError> {
        let Some((i, chunk)) = self.task_of.remove(&id) else {
            return Ok(());
        };
        self.holders[i].inflight -= 1;
        if let Some(who) = self.inflight.get_mut(&chunk) {
            who.retain(|(j, _)| *j != i);
            if who.is_empty() {
                self.inflight.remove(&chunk);
            }
        }
        let Some(outcome) = outcome else {
            self.requeue(chunk);
            return Ok(());
        };
        self.stats.bytes_received += outcome.received;
        self.ctx.counters.add_fetched(outcome.received);
        match outcome.result {
            Ok(()) => self.on_chunk(i, chunk),
            Err(Failure::Write(e)) => return Err(e),
            Err(failure) => self.on_failure(i, chunk, failure),
        }
        self.requeue(chunk);
        Ok(())
    }

    fn on_chunk(&mut self, i: usize, chunk: ChunkIndex) {
        self.holders[i].failures = 0;
        if !self.have.insert(chunk) {
            return;
        }
        let name = self.manifest.name();
        self.ctx.holdings.mark(name, chunk);
        self.stats.chunks_fetched += 1;
        self.progress.chunks_done += 1;
        self.progress.bytes_done += u64::from(self.manifest.layout().chunk_len(chunk));
        // End-game: the other copies are no longer needed.
        if let Some(others) = self.inflight.get(&chunk) {
            for (_, handle) in others {
                handle.abort();
            }
        }
    }

    fn on_failure(&mut self, i: usize, chunk: ChunkIndex, failure: Failure) {
        let addr = self.holders[i].addr.clone();
        match failure {
            Failure::Bad(why) => self.strike(i, chunk, &why),
            Failure::Lacks => {
                self.holders[i].chunks.remove(chunk);
                self.strike(i, chunk, "advertised a chunk it does not have");
            }
            Failure::Withdrawn => {
                self.holders[i].chunks.remove(chunk);
            }
            Failure::Busy => {
                let h = &mut self.holders[i];
                h.limit = h.limit.saturating_sub(1).max(1);
                h.retry_at = Instant::now() + Duration::from_millis(200);
            }
            Failure::Unreachable(_) | Failure::Timeout => {
                let h = &mut self.holders[i];
                h.failures += 1;
                h.retry_at =
                    Instant::now() + Duration::from_millis(250) * 2u32.pow(h.failures.min(6));
                self.relocate_soon = true;
                debug!(%addr, %chunk, ?failure, failures = h.failures, "request failed");
            }
            Failure::Write(_) => {}
        }
    }

    fn strike(&mut self, i: usize, chunk: ChunkIndex, why: &str) {
        let others = self
            .holders
            .iter()
            .enumerate()
            .any(|(j, h)| j != i && self.source(h) && h.chunks.contains(chunk));
        let h = &mut self.holders[i];
        h.strikes += 1;
        self.ctx.counters.add_strike();
        warn!(addr = %h.addr, %chunk, strikes = h.strikes, reason = why, "bad chunk from holder");
        let limit = if others { 1 } else { SOLE_SOURCE_STRIKES };
        if h.strikes >= limit && !h.banned {
            h.banned = true;
            self.stats.holders_banned += 1;
            info!(addr = %h.addr, strikes = h.strikes, "holder banned from this download");
            for who in self.inflight.values() {
                for (j, handle) in who {
                    if *j == i {
                        handle.abort();
                    }
                }
            }
        }
    }

    /// Puts a chunk back in the queue if nobody holds or fetches it.
    fn requeue(&mut self, chunk: ChunkIndex) {
        if !self.have.contains(chunk) && !self.inflight.contains_key(&chunk) {
            self.pending.insert(self.key(chunk));
        }
    }

    /// Why nothing is in flight: a holder will be back, or none can help.
    fn idle(&self) -> Idle {
        self.holders
            .iter()
            .filter(|h| self.source(h) && self.lacking(h))
            .map(|h| h.retry_at)
            .min()
            .map_or(Idle::NoSource, Idle::Until)
    }
}

/// The answer of the Locate in flight (there must be one).
async fn answer(
    locating: &mut Option<JoinHandle<Result<Located, PeerError>>>,
) -> Result<Located, PeerError> {
    match locating.as_mut() {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| Err(PeerError::Internal(format!("locate task failed: {e}")))),
        None => Err(PeerError::Internal("no locate in flight".into())),
    }
}

impl Drop for Engine<'_> {
    fn drop(&mut self) {
        if let Some(handle) = &self.locating {
            handle.abort();
        }
    }
}
