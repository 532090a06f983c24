//! What each holder is asked for: the rarest-first queue, the end-game's
//! second copies, and the bound on chunk bytes in flight.
//!
//! Super-seeding holders (see `server/tally.rs`) decline chunks they have
//! sent already while others are unsent, naming some of those: a holder's
//! hints are asked of it first, and a chunk it declined is asked of it again
//! only when no other source here has it and a Locate since the decline
//! found none, and then without `may_decline`. Every other request may be
//! declined, the end-game's second copies too. A holder still in its first
//! pass (its last decline said some chunk was unsent) left with only
//! declined chunks and nothing in flight is asked again, as it may decline,
//! for one that others have, 50 ms after its last decline: for fresh hints.
//! After its first pass it is not: such a probe would be served as a
//! duplicate.

use std::time::Duration;

use hive::ChunkIndex;
use tokio::time::Instant;

use super::Engine;
use crate::fetch::{
    request,
    traits::{Holders, Locator, Sink},
};

/// A holder in its first pass with nothing but declined chunks to ask and
/// nothing in flight is asked for one again, as it may decline, this long
/// after its last decline: the answer is the chunk (if it is now among its
/// least sent) or fresh hints. Without it a super-seeding holder idles while
/// its last unsent chunks wait for someone to ask.
pub(super) const PROBE_AFTER: Duration = Duration::from_millis(50);
/// At most this many holders fetch the same chunk in the end-game.
const MAX_COPIES: usize = 2;
/// A download keeps at most this many chunk bytes in flight over all its
/// holders (and at least two chunks): memory stays bounded however many
/// holders there are and however large the chunks (16 MiB for the largest
/// files).
const MAX_INFLIGHT_BYTES: u64 = 16 << 20;

impl<L: Locator, H: Holders, S: Sink> Engine<L, H, S> {
    /// Rebuilds the rarest-first order from per-chunk holder counts.
    pub(super) fn rerank(&mut self, counts: &[u32]) {
        self.pending.clear();
        for chunk in self.manifest.layout().chunks() {
            let rarity = counts.get(chunk.position()).copied().unwrap_or(0);
            self.rank[chunk.position()] = (rarity, fastrand::u32(..));
            if !self.have.contains(chunk) && !self.inflight.contains_key(&chunk) {
                self.pending.insert(self.key(chunk));
            }
        }
    }

    pub(super) fn key(&self, chunk: ChunkIndex) -> (u32, u32, ChunkIndex) {
        let (rarity, tie) = self.rank[chunk.position()];
        (rarity, tie, chunk)
    }

    /// Fills every holder's free request slots. Notes whether some holder
    /// had a free slot but nothing to be asked for while chunks are missing
    /// (`starved`): what this download knows of the others is out of date.
    pub(super) fn assign(&mut self) {
        let chunk = u64::from(self.manifest.layout().chunk_size().get());
        let most = (MAX_INFLIGHT_BYTES / chunk).max(2) as usize;
        self.starved = false;
        loop {
            let mut started = false;
            for i in 0..self.holders.len() {
                let h = &self.holders[i];
                if !self.usable(h) || h.inflight >= h.limit || self.task_of.len() >= most {
                    continue;
                }
                match self.pick(i) {
                    Some((chunk, may_decline)) => {
                        self.start(i, chunk, may_decline);
                        started = true;
                    }
                    None => self.starved |= !self.pending.is_empty(),
                }
            }
            if !started {
                return;
            }
        }
    }

    /// The next chunk for holder `i`, and whether it may decline it: one it
    /// hinted at, else the rarest unrequested one it has and has not
    /// declined, else one it declined that nobody else can supply (insisting),
    /// or in the end-game a requested one it is not already fetching and
    /// has not declined.
    pub(super) fn pick(&self, i: usize) -> Option<(ChunkIndex, bool)> {
        let h = &self.holders[i];
        let unrequested =
            |c: ChunkIndex| h.chunks.contains(c) && self.pending.contains(&self.key(c));
        if let Some(&chunk) = h.hints.iter().find(|&&c| unrequested(c)) {
            return Some((chunk, true));
        }
        let (mut declined, mut probe) = (None, None);
        for &(_, _, c) in &self.pending {
            if !h.chunks.contains(c) {
                continue;
            }
            if !h.declined.contains(c) {
                return Some((c, true));
            }
            if declined.is_some() && probe.is_some() {
                continue;
            }
            if self.elsewhere(i, c) {
                probe = probe.or(Some(c));
            } else if declined.is_none() && h.declined_at < self.answered_at {
                declined = Some(c);
            }
        }
        if let Some(chunk) = declined {
            return Some((chunk, false));
        }
        if let Some(chunk) = probe
            && h.first_pass
            && h.inflight == 0
            && h.declined_at + PROBE_AFTER <= Instant::now()
        {
            return Some((chunk, true));
        }
        if !self.pending.is_empty() {
            return None;
        }
        // End-game copies are extra: a holder may decline them too, and is
        // not asked again for one it declined.
        self.inflight
            .iter()
            .filter(|(c, who)| {
                who.len() < MAX_COPIES
                    && h.chunks.contains(**c)
                    && !h.declined.contains(**c)
                    && who.iter().all(|(j, _)| *j != i)
            })
            .min_by_key(|(c, who)| (who.len(), self.rank[c.position()]))
            .map(|(c, _)| (*c, true))
    }

    /// Whether a source other than holder `i` has `chunk` and has not
    /// declined it: when every holder of a chunk has declined it, one of
    /// them is insisted on, or the download would wait for it forever.
    fn elsewhere(&self, i: usize, chunk: ChunkIndex) -> bool {
        self.holders.iter().enumerate().any(|(j, h)| {
            j != i && self.source(h) && h.chunks.contains(chunk) && !h.declined.contains(chunk)
        })
    }

    pub(super) fn start(&mut self, i: usize, chunk: ChunkIndex, may_decline: bool) {
        self.pending.remove(&self.key(chunk));
        let h = &mut self.holders[i];
        h.inflight += 1;
        self.swarm.sink.requested(chunk, &h.addr);
        let job = request::fetch_into(
            &self.swarm.holders,
            &h.conn,
            self.manifest.clone(),
            (chunk, may_decline),
            self.settings.chunk_timeout,
            self.settings.caps.clone(),
            self.swarm.sink.clone(),
        );
        let handle = self.tasks.spawn(job);
        self.task_of.insert(handle.id(), (i, chunk));
        self.inflight.entry(chunk).or_default().push((i, handle));
    }

    /// Puts a chunk back in the queue if nobody holds or fetches it.
    pub(super) fn requeue(&mut self, chunk: ChunkIndex) {
        if !self.have.contains(chunk) && !self.inflight.contains_key(&chunk) {
            self.pending.insert(self.key(chunk));
        }
    }
}
