//! The engine's holders: their state, which of them count as sources, and
//! what a failed request costs one (back-off, write-off, strikes and bans).

use std::{collections::HashMap, time::Duration};

use hive::{ChunkIndex, ChunkSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Engine, Idle, pace::Pace};
use crate::fetch::{
    request::Failure,
    traits::{Holders, Locator, Sink},
};

/// Strikes that ban the only source of a chunk.
const SOLE_SOURCE_STRIKES: u32 = 3;
/// Consecutive failures after which a holder is written off.
const MAX_FAILURES: u32 = 5;

/// One holder, as this download knows it.
pub(super) struct HolderState<C> {
    pub(super) addr: String,
    pub(super) peer_id: String,
    pub(super) conn: C,
    pub(super) chunks: ChunkSet,
    pub(super) inflight: usize,
    /// Most requests in flight to it: `--per-holder`, less after it said
    /// it was busy (one less than it had then), one more again for each
    /// chunk it sends.
    pub(super) limit: usize,
    /// What it delivers, and how many requests that keeps in flight.
    pub(super) pace: Pace,
    pub(super) strikes: u32,
    pub(super) banned: bool,
    pub(super) failures: u32,
    pub(super) retry_at: Instant,
    /// Whether the last Locate listed it.
    pub(super) listed: bool,
    /// Chunks it declined (super-seeding: it sent them already), asked of
    /// it again only with no other source, and insisting.
    pub(super) declined: ChunkSet,
    /// When it last declined one.
    pub(super) declined_at: Instant,
    /// The chunks it named as sent least when it last declined: asked of it
    /// first.
    pub(super) hints: Vec<ChunkIndex>,
    /// Whether, at its last decline, it was still sending some chunk for
    /// the first time (then it is probed for fresh hints when idle).
    pub(super) first_pass: bool,
    /// Chunks offered as alternatives in its requests in flight, and in how
    /// many: not asked of it as such while they are, as it may be sending
    /// one of them already (its answer says which only with its first
    /// bytes).
    pub(super) offered: HashMap<ChunkIndex, u32>,
}

impl<L: Locator, H: Holders, S: Sink> Engine<L, H, S> {
    pub(super) fn add_holder(&mut self, addr: String, peer_id: String, chunks: ChunkSet) {
        let conn = match self.swarm.holders.connect(&addr) {
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
            conn,
            chunks,
            inflight: 0,
            limit: self.settings.per_holder.max(1),
            pace: Pace::new(Instant::now()),
            strikes: 0,
            banned: false,
            failures: 0,
            retry_at: Instant::now(),
            listed: true,
            declined: ChunkSet::empty(self.manifest.chunk_count()),
            declined_at: Instant::now(),
            hints: Vec::new(),
            first_pass: false,
            offered: HashMap::new(),
        });
    }

    /// How many requests to keep in flight to holder `i`: by its pace,
    /// within its limit.
    pub(super) fn room(&self, i: usize) -> usize {
        let h = &self.holders[i];
        h.pace.limit(self.chunk_bytes(), h.limit)
    }

    /// Whether a request may go to `h` now.
    pub(super) fn usable(&self, h: &HolderState<H::Conn>) -> bool {
        !h.banned && h.failures < MAX_FAILURES && h.retry_at <= Instant::now()
    }

    /// Whether `h` still counts as a source: not banned or written off, and
    /// either listed by the tracker, named by the user, or not yet failing.
    pub(super) fn source(&self, h: &HolderState<H::Conn>) -> bool {
        !h.banned
            && h.failures < MAX_FAILURES
            && (h.listed || self.only.is_some() || h.failures == 0)
    }

    /// Whether `h` has some chunk still missing here.
    pub(super) fn lacking(&self, h: &HolderState<H::Conn>) -> bool {
        h.chunks.iter().any(|c| !self.have.contains(c))
    }

    pub(super) fn on_failure(&mut self, i: usize, chunk: ChunkIndex, failure: Failure) {
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
            Failure::Declined(decline) => {
                let h = &mut self.holders[i];
                h.declined.insert(chunk);
                h.declined_at = Instant::now();
                h.hints = decline.hints;
                h.first_pass = decline.first_pass;
                // Someone else has it: a fresh Locate says who.
                self.fresh = true;
                debug!(target: "hive_peer::timeline", from = %addr, chunk = chunk.get(), "chunk declined");
            }
            Failure::Busy => {
                let room = self.room(i);
                let h = &mut self.holders[i];
                h.limit = room.saturating_sub(1).max(1);
                h.pace.slow_down();
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

    pub(super) fn strike(&mut self, i: usize, chunk: ChunkIndex, why: &str) {
        let others = self
            .holders
            .iter()
            .enumerate()
            .any(|(j, h)| j != i && self.source(h) && h.chunks.contains(chunk));
        let h = &mut self.holders[i];
        h.strikes += 1;
        self.counters.add_strike();
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

    /// Why nothing is in flight: a holder will be back, one has only chunks
    /// it declined (the next Locate says whether to insist), or none can
    /// help.
    pub(super) fn idle(&self) -> Idle {
        let now = Instant::now();
        let mut soonest = None;
        for h in self
            .holders
            .iter()
            .filter(|h| self.source(h) && self.lacking(h))
        {
            if h.retry_at <= now {
                // Usable, yet nothing was asked of it: it declined the rest.
                return Idle::Locating;
            }
            soonest = Some(soonest.map_or(h.retry_at, |s: Instant| s.min(h.retry_at)));
        }
        soonest.map_or(Idle::NoSource, Idle::Until)
    }
}
