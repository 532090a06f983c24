//! The swarm engine: fetches every missing chunk of one file from every live
//! holder at once.
//!
//! - Rarest first: chunks are requested in order of how few holders have them
//!   (the tracker's per-chunk counts), ties broken at random.
//! - Each holder has about twice what it delivers in a round trip in flight
//!   (its measured rate × answer time, at least 2, at most `--per-holder`;
//!   see `engine/pace.rs`); one connection per holder, one HTTP/2 stream per
//!   chunk.
//! - The tracker is asked again now and then, so holders that join are used:
//!   every [`FRESH_LOCATE`] while the swarm moves (the last answer brought
//!   new holders or chunks, a holder declined a chunk, or one had a free slot
//!   and nothing known to ask it for), and after an answer with no news at
//!   twice the last gap, up to `relocate_interval`. In a young swarm the
//!   others' holdings change by the tenth of a second; seconds-old counts
//!   send every downloader to the seeder for chunks other downloaders
//!   already have. The doubling matters at a swarm's start: the first
//!   answers list only the seeder, and the others' first chunks are news a
//!   fraction of a second later, not at the next interval.
//! - Super-seeding holders send first copies: a request to a holder of the
//!   whole file names the download's next wanted chunks as alternatives,
//!   and the holder may send one of those instead (the engine moves the
//!   request to that chunk as soon as it hears), or decline a chunk it has
//!   sent already; see `engine/pick.rs`.
//! - End-game: once every missing chunk is requested, one that has been
//!   coming for twice as long as chunks typically take is asked of a second
//!   holder too; the first verified copy wins, the other request is dropped.
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
//! stops. It reaches the tracker, the holders and the disk only through the
//! traits of [`super::traits`] (the daemon's adapters are in [`super::live`]),
//! so its rules are unit-tested against fakes (`engine/tests.rs`).
//!
//! This file holds the run loop and what a finished request does; the
//! holders and their strike rules are in `engine/holders.rs`, chunk picking
//! in `engine/pick.rs`, and Locate in `engine/locate.rs`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use hive::{ChunkIndex, ChunkSet, Manifest};
use tokio::{
    sync::mpsc,
    task::{AbortHandle, Id, JoinHandle, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use self::{holders::HolderState, locate::answer};
use super::{
    request::{Failure, Outcome, Swaps},
    traits::{Holders, Locator, Sink},
};
use tracing::debug;

use crate::{Config, error::PeerError, metrics::Counters, throttle::Caps, tracker_link::Located};

/// The tracker is asked at most this often when a holder seems gone.
const RELOCATE_MIN: Duration = Duration::from_secs(1);
/// ...and this often while the swarm moves: a few round trips, a few times
/// the wait of a holder's registrations (50 ms), and four Locates a second,
/// well within the tracker's per-session rate (50/s) with a few downloads
/// at once.
pub const FRESH_LOCATE: Duration = Duration::from_millis(250);
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// What the engine reports while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub chunks_done: u32,
    pub bytes_done: u64,
    pub holders_active: u32,
    /// No live holder has a missing chunk: waiting for one to appear.
    pub stalled: bool,
}

/// What a finished (or stopped) run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub bytes_received: u64,
    pub chunks_fetched: u32,
    pub holders_banned: u32,
}

/// What the engine talks to.
pub struct Swarm<L, H, S> {
    pub locator: L,
    pub holders: H,
    pub sink: S,
}

/// The engine's knobs, from the daemon's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests in flight to one holder at most (its pace keeps fewer).
    pub per_holder: usize,
    /// A request with no complete chunk after this long is abandoned.
    pub chunk_timeout: Duration,
    /// How often the tracker is asked again.
    pub relocate_interval: Duration,
    /// When no live holder has a missing chunk: wait (stalled), asking the
    /// tracker every `relocate_interval`, rather than fail with UNAVAILABLE.
    pub wait_for_holders: bool,
    /// The download caps chunks pass as they arrive.
    pub caps: Caps,
    /// Bytes of chunks no other leecher has that make a download
    /// saturated ([`pick::SATURATED_BYTES`]).
    pub saturated_bytes: u64,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Self {
            per_holder: config.per_holder,
            chunk_timeout: config.chunk_timeout,
            relocate_interval: config.relocate_interval,
            wait_for_holders: true,
            caps: Caps::default(),
            saturated_bytes: pick::SATURATED_BYTES,
        }
    }
}

/// One download's swarm.
pub struct Engine<L: Locator, H: Holders, S: Sink> {
    swarm: Swarm<L, H, S>,
    settings: Settings,
    counters: Arc<Counters>,
    manifest: Arc<Manifest>,
    have: ChunkSet,
    /// Only this holder, if the user named one.
    only: Option<String>,
    holders: Vec<HolderState<H::Conn>>,
    by_addr: HashMap<String, usize>,
    /// Chunks neither held nor requested, rarest first.
    pending: BTreeSet<(u32, u32, ChunkIndex)>,
    rank: Vec<(u32, u32)>,
    /// When a leecher was first seen holding each chunk: until
    /// [`pick::SPREAD_GRACE`] later, a holder of the whole file is not
    /// asked for it.
    spread_since: Vec<Option<Instant>>,
    /// What the other leechers (sources without the whole file) hold, as
    /// far as this download knows: for [`Engine::saturated`].
    leechers_have: ChunkSet,
    /// How many of them there are.
    leechers: usize,
    /// Chunks held here that no other leecher is known to hold: this
    /// peer's upload backlog of first copies.
    unique: u32,
    /// Chunks no leecher (here or elsewhere) holds: while some are, holders
    /// of the whole file are still handing out first copies.
    uncovered: u32,
    inflight: HashMap<ChunkIndex, Vec<(usize, AbortHandle)>>,
    /// When each chunk in flight was first asked for (the end-game asks a
    /// second holder only for chunks that have been coming for long).
    asked_at: HashMap<ChunkIndex, Instant>,
    /// How long a chunk typically takes to come (a moving average).
    typical: Option<Duration>,
    tasks: JoinSet<Outcome>,
    /// Each request's holder and chunk (the one it fetches, once a swap is
    /// heard of).
    task_of: HashMap<Id, (usize, ChunkIndex)>,
    /// The alternatives each request offered, until its holder's choice is
    /// heard.
    offers: HashMap<Id, Vec<ChunkIndex>>,
    /// Requests report a holder's swap here as soon as they hear it.
    swaps: (Swaps, mpsc::UnboundedReceiver<(Id, ChunkIndex)>),
    last_relocate: Instant,
    relocate_soon: bool,
    /// The swarm moves: Locate again after [`FRESH_LOCATE`].
    fresh: bool,
    /// Some holder had a free slot and nothing known to ask it for.
    starved: bool,
    /// The wait before the next Locate while nothing moves: from
    /// [`FRESH_LOCATE`], doubled by each answer without news, up to
    /// `relocate_interval`.
    quiet_gap: Duration,
    /// When the last Locate answer was taken in.
    answered_at: Instant,
    /// A Locate in flight: asked in the background, so a slow or frozen
    /// tracker never holds up requests to holders.
    locating: Option<JoinHandle<Result<Located, PeerError>>>,
    pub stats: RunStats,
    progress: Progress,
}

/// Why nothing is in flight.
enum Idle {
    /// Some holder will be worth asking again at this time.
    Until(Instant),
    /// A holder has only chunks it declined: the next Locate answer tells.
    Locating,
    /// Nobody can supply the missing chunks.
    NoSource,
}

impl<L: Locator, H: Holders, S: Sink> Engine<L, H, S> {
    pub fn new(
        swarm: Swarm<L, H, S>,
        settings: Settings,
        counters: Arc<Counters>,
        manifest: Arc<Manifest>,
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
            stalled: false,
        };
        let chunks = manifest.chunk_count();
        let rank = vec![(0, 0); chunks as usize];
        let mut engine = Self {
            swarm,
            settings,
            counters,
            manifest,
            have,
            only,
            holders: Vec::new(),
            by_addr: HashMap::new(),
            pending: BTreeSet::new(),
            spread_since: vec![None; rank.len()],
            leechers_have: ChunkSet::empty(chunks),
            leechers: 0,
            unique: 0,
            uncovered: 0,
            rank,
            inflight: HashMap::new(),
            asked_at: HashMap::new(),
            typical: None,
            tasks: JoinSet::new(),
            task_of: HashMap::new(),
            offers: HashMap::new(),
            swaps: mpsc::unbounded_channel(),
            last_relocate: Instant::now(),
            relocate_soon: false,
            fresh: false,
            starved: false,
            quiet_gap: FRESH_LOCATE,
            answered_at: Instant::now(),
            locating: None,
            stats: RunStats::default(),
            progress,
        };
        engine.rerank(&[]);
        engine.recount();
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
        self.recount();
    }

    /// Fetches until every chunk is held, the download is cancelled, or no
    /// holder can supply what is missing (unless it waits for one: then it
    /// reports itself stalled and takes up again when a Locate lists one).
    pub async fn run(
        &mut self,
        located: Located,
        cancel: &CancellationToken,
        report: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<(), PeerError> {
        // Checked like any later answer: a Locate made between rounds may
        // find other content under this name by now.
        self.take(Ok(located));
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            if self.have.is_full() {
                // End-game copies still running would write their chunk
                // again: ended here, so nothing is written after the finish.
                self.tasks.abort_all();
                while let Some(joined) = self.tasks.join_next_with_id().await {
                    self.joined(joined)?;
                }
                self.publish(report);
                return Ok(());
            }
            self.assign();
            let mut wait = None;
            if self.tasks.is_empty() {
                match self.idle() {
                    Idle::Until(at) => {
                        wait = Some(at);
                        self.progress.stalled = false;
                    }
                    Idle::Locating => self.progress.stalled = false,
                    // Stalled already: the relocate tick asks the tracker.
                    Idle::NoSource if self.progress.stalled => {}
                    Idle::NoSource => {
                        // Ask the tracker once more before giving up.
                        if self.relocate_now().await {
                            continue;
                        }
                        if !self.settings.wait_for_holders {
                            return Err(self.unavailable());
                        }
                        self.progress.stalled = true;
                        self.publish(report);
                    }
                }
            } else if self.progress.stalled {
                self.progress.stalled = false;
                self.publish(report);
            }
            if self.relocate_soon && self.last_relocate.elapsed() >= RELOCATE_MIN {
                self.start_locate();
            }
            let due = self.locate_due();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(PeerError::Cancelled),
                Some(joined) = self.tasks.join_next_with_id() => self.joined(joined)?,
                Some((id, chunk)) = self.swaps.1.recv() => self.on_swap(id, chunk),
                found = answer(&mut self.locating), if self.locating.is_some() => {
                    self.locating = None;
                    self.take(found);
                }
                _ = tokio::time::sleep_until(due), if self.locating.is_none() => self.start_locate(),
                _ = tick.tick() => self.publish(report),
                _ = tokio::time::sleep_until(wait.unwrap_or_else(Instant::now)), if wait.is_some() => {}
            }
        }
    }

    /// When the tracker is to be asked next.
    fn locate_due(&self) -> Instant {
        // Stalled, nobody has what is missing: waiting on the interval.
        let moving = self.fresh || (self.starved && !self.progress.stalled);
        let after = match (moving, self.progress.stalled) {
            (true, _) => FRESH_LOCATE,
            (false, true) => self.settings.relocate_interval,
            (false, false) => self.quiet_gap,
        };
        let after = after.min(self.settings.relocate_interval);
        self.last_relocate + after
    }

    /// The file's chunk size in bytes (its last chunk may be shorter).
    fn chunk_bytes(&self) -> u64 {
        u64::from(self.manifest.layout().chunk_size().get())
    }

    fn unavailable(&self) -> PeerError {
        let missing = self.manifest.chunk_count() - self.have.len();
        PeerError::Unavailable(format!(
            "no live holder can supply the {missing} missing chunks of {:?}; verified chunks are kept",
            self.manifest.name()
        ))
    }

    fn publish(&mut self, report: &mut (dyn FnMut(&Progress) + Send)) {
        self.progress.holders_active =
            self.holders.iter().filter(|h| h.inflight > 0).count() as u32;
        report(&self.progress);
    }

    /// Handles a request the join set gave back.
    fn joined(
        &mut self,
        joined: Result<(Id, Outcome), tokio::task::JoinError>,
    ) -> Result<(), PeerError> {
        match joined {
            Ok((id, outcome)) => self.on_outcome(id, Some(outcome)),
            Err(e) => self.on_outcome(e.id(), None),
        }
    }

    /// Handles a finished request; `None` if it was aborted or panicked.
    fn on_outcome(&mut self, id: Id, outcome: Option<Outcome>) -> Result<(), PeerError> {
        // A swap is reported before its request ends: taken in first, so
        // the request is settled under the chunk it fetched.
        while let Ok((task, chunk)) = self.swaps.1.try_recv() {
            self.on_swap(task, chunk);
        }
        let Some((i, chunk)) = self.task_of.remove(&id) else {
            return Ok(());
        };
        self.withdraw_offers(id, i);
        self.holders[i].inflight -= 1;
        let verified = outcome.as_ref().is_some_and(|o| o.result.is_ok());
        self.swarm
            .sink
            .answered(chunk, &self.holders[i].addr, verified);
        self.untrack(id, chunk);
        let Some(outcome) = outcome else {
            self.requeue(chunk);
            return Ok(());
        };
        self.stats.bytes_received += outcome.received;
        self.counters.add_fetched(outcome.received);
        let wasted = match &outcome.result {
            Ok(()) => self.have.contains(chunk),
            Err(_) => outcome.received > 0,
        };
        if wasted {
            debug!(target: "hive_peer::timeline", from = %self.holders[i].addr, chunk = chunk.get(), bytes = outcome.received, ok = outcome.result.is_ok(), "chunk wasted");
        }
        if outcome.result.is_ok() {
            self.typical = Some(match self.typical {
                Some(t) => (t * 7 + outcome.took) / 8,
                None => outcome.took,
            });
            let h = &mut self.holders[i];
            if let Some(answered) = outcome.answered {
                h.pace.delivered(Instant::now(), answered, outcome.received);
            }
            // A holder that said it was busy gets back its requests one by
            // one as it sends chunks.
            h.limit = (h.limit + 1).min(self.settings.per_holder.max(1));
        }
        match outcome.result {
            Ok(()) => self.on_chunk(i, chunk),
            Err(Failure::Write(e)) => return Err(e),
            Err(failure) => self.on_failure(i, chunk, failure),
        }
        self.requeue(chunk);
        Ok(())
    }

    fn on_chunk(&mut self, i: usize, chunk: ChunkIndex) {
        let h = &mut self.holders[i];
        h.failures = 0;
        // It has the chunk, whatever the last Locate said.
        h.chunks.insert(chunk);
        let from_leecher = !h.chunks.is_full();
        // End-game: the other copies are no longer needed, whether this one
        // came first or (the chunk held already) second.
        if let Some(others) = self.inflight.get(&chunk) {
            for (_, handle) in others {
                handle.abort();
            }
        }
        if !self.have.insert(chunk) {
            return;
        }
        if !self.leechers_have.contains(chunk) {
            self.uncovered = self.uncovered.saturating_sub(1);
            if from_leecher {
                self.leechers_have.insert(chunk);
            } else {
                // A first copy: no other leecher is known to have it.
                self.unique += 1;
            }
        }
        // The swarm's timeline (who sent which chunk to whom, when), for
        // bench/netem/timeline.py: RUST_LOG=hive_peer::timeline=debug.
        debug!(target: "hive_peer::timeline", from = %self.holders[i].addr, chunk = chunk.get(), "chunk verified");
        self.swarm.sink.held(chunk);
        self.stats.chunks_fetched += 1;
        self.progress.chunks_done += 1;
        self.progress.bytes_done += u64::from(self.manifest.layout().chunk_len(chunk));
    }
}

impl<L: Locator, H: Holders, S: Sink> Drop for Engine<L, H, S> {
    fn drop(&mut self) {
        if let Some(handle) = &self.locating {
            handle.abort();
        }
    }
}

mod holders;
mod locate;
mod pace;
mod pick;

#[cfg(test)]
pub(super) mod fakes;
#[cfg(test)]
mod seeding_tests;
#[cfg(test)]
mod tests;
