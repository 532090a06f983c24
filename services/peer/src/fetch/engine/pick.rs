//! What each holder is asked for: the rarest-first queue, the end-game's
//! second copies, the alternatives offered to a super-seeding holder and
//! its swaps, and the bound on chunk bytes in flight.
//!
//! A request that may be declined, to a holder listed with the whole file,
//! names up to [`MAX_INSTEAD`] other wanted chunks, rarest first, that the
//! holder has not declined, nobody else here has and no other request to it
//! names (each request takes at most its share of those, one of as many as
//! may be in flight to the holder): a super-seeding holder sends the one it
//! has sent least, so it sends first copies back to back, with no round trip
//! for a decline, as long as it is asked at all. When the request reports
//! the swap, it moves to the chunk it fetches, which leaves the queue, and
//! the chunk asked for goes back to it, counted as declined by that holder
//! (it had sent it more often).
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

use hive::{ChunkIndex, ChunkSet, wire::MAX_INSTEAD};
use tokio::{task::Id, time::Instant};
use tracing::debug;

use super::Engine;
use crate::fetch::{
    request::{self, Ask},
    traits::{Holders, Locator, Sink},
};

/// A holder in its first pass with nothing but declined chunks to ask and
/// nothing in flight is asked for one again, as it may decline, this long
/// after its last decline: the answer is the chunk (if it is now among its
/// least sent) or fresh hints. Without it a super-seeding holder idles while
/// its last unsent chunks wait for someone to ask.
pub(super) const PROBE_AFTER: Duration = Duration::from_millis(50);
/// A holder of the whole file is not asked for a chunk a leecher here has
/// until this long after a leecher was first seen with it: time for the
/// leechers to spread it, but a slow leecher holding chunks holds nobody
/// back for long.
pub(super) const SPREAD_GRACE: Duration = Duration::from_secs(10);
/// A download holding this many bytes of chunks that no other leecher is
/// known to hold (16 chunks of 128 KiB) is [saturated](Engine::saturated):
/// its upload lags behind what it takes in, so it leaves the first copies
/// of holders of the whole file to leechers that pass theirs on faster. A
/// leecher on a link as fast as the seeder's holds a few chunks' worth (it
/// takes in one seeder's worth of first copies shared with the others, and
/// others learn of each within a Locate or two); one on a slow link piles
/// up tens within seconds. In bytes, not chunks: a download of small chunks
/// holds many more of them for the same time on the link, and one request
/// at a time to the seeder would leave its link idle between them.
pub(super) const SATURATED_BYTES: u64 = 2 << 20;
/// The end-game asks a second holder for a chunk that has been coming for
/// this many times as long as chunks typically take.
const ENDGAME_AFTER: u32 = 2;
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
        let most = (MAX_INFLIGHT_BYTES / self.chunk_bytes()).max(2) as usize;
        let saturated = self.saturated();
        self.starved = false;
        loop {
            let mut started = false;
            for i in 0..self.holders.len() {
                let h = &self.holders[i];
                let limit = match h.chunks.is_full() && saturated {
                    true => 1,
                    false => self.room(i),
                };
                if !self.usable(h) || h.inflight >= limit || self.task_of.len() >= most {
                    continue;
                }
                match self.pick(i) {
                    Some((chunk, may_decline)) => {
                        let instead = match may_decline && h.chunks.is_full() {
                            true => self.instead(i, chunk, limit),
                            false => Vec::new(),
                        };
                        let ask = Ask {
                            chunk,
                            instead,
                            may_decline,
                        };
                        self.start(i, ask);
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

    /// Whether this download takes in first copies faster than its upload
    /// passes them on: while some chunk is held by no leecher (holders of
    /// the whole file are still handing out first copies) and other
    /// leechers could take them, it holds [`SATURATED_BYTES`] or more of
    /// chunks that no other leecher is known to have. Then it keeps one
    /// request at most in flight to each holder of the whole file, so that
    /// their first copies go mostly to leechers whose upload keeps up: on a
    /// slow link, each first copy taken is one the rest of the swarm can
    /// only get at that link's pace once the seeder is gone.
    pub(super) fn saturated(&self) -> bool {
        u64::from(self.unique) * self.chunk_bytes() >= self.settings.saturated_bytes
            && self.leechers > 0
            && self.uncovered > 0
    }

    /// Counts again, from the holders' chunk sets, what the other leechers
    /// hold ([`Engine::saturated`]'s inputs).
    pub(super) fn recount(&mut self) {
        let mut leechers_have = ChunkSet::empty(self.manifest.chunk_count());
        let mut leechers = 0;
        for h in &self.holders {
            if self.source(h) && h.listed && !h.chunks.is_full() {
                leechers_have.union_with(&h.chunks);
                leechers += 1;
            }
        }
        let mut unique = self.have.clone();
        unique.subtract(&leechers_have);
        let mut covered = leechers_have.clone();
        covered.union_with(&self.have);
        self.unique = unique.len();
        self.uncovered = self.manifest.chunk_count() - covered.len();
        self.leechers = leechers;
        self.leechers_have = leechers_have;
    }

    /// The next chunk for holder `i`, and whether it may decline it: one it
    /// hinted at, else the rarest unrequested one it has and has not
    /// declined (of a holder of the whole file, one no leecher here has),
    /// else one it declined that nobody else can supply
    /// (insisting), or in the end-game a requested one, overdue and not yet
    /// held, that it is not already fetching and has not declined. Never
    /// one offered to it in a request in flight: it may be sending that one
    /// already, and asked for it, past its first pass, it would send it
    /// twice.
    pub(super) fn pick(&self, i: usize) -> Option<(ChunkIndex, bool)> {
        let h = &self.holders[i];
        let unrequested = |c: ChunkIndex| {
            h.chunks.contains(c)
                && self.pending.contains(&self.key(c))
                && !h.offered.contains_key(&c)
        };
        if let Some(&chunk) = h.hints.iter().find(|&&c| unrequested(c)) {
            return Some((chunk, true));
        }
        let (mut declined, mut probe) = (None, None);
        // A chunk it has not declined is offered in a request in flight: it
        // may well send that one, so nothing is insisted on meanwhile.
        let mut offered = false;
        let whole = h.chunks.is_full();
        for &(_, _, c) in &self.pending {
            if !h.chunks.contains(c) {
                continue;
            }
            if !h.declined.contains(c) {
                if whole && self.spread(i, c) {
                    continue;
                }
                if !h.offered.contains_key(&c) {
                    return Some((c, true));
                }
                offered = true;
                continue;
            }
            if h.offered.contains_key(&c) {
                continue;
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
        if offered {
            return None;
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
        // not asked again for one it declined. Only chunks coming for longer
        // than twice the typical chunk get one: every copy takes upload
        // from the swarm, which at its end is still what limits everyone.
        let now = Instant::now();
        let overdue = |c: &ChunkIndex| match (self.typical, self.asked_at.get(c)) {
            (Some(typical), Some(&at)) => now.duration_since(at) >= typical * ENDGAME_AFTER,
            _ => true,
        };
        self.inflight
            .iter()
            .filter(|(c, who)| {
                who.len() < MAX_COPIES
                    && overdue(c)
                    // Verified already: the copies left are being aborted.
                    && !self.have.contains(**c)
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

    /// Whether a leecher other than holder `i` (a source without the whole
    /// file) has `chunk` and has not declined it, and was first seen with it
    /// less than [`SPREAD_GRACE`] ago. A holder of the whole file is not
    /// asked for such a chunk: past its first pass it would send it again,
    /// and the leechers spread it without it (in its first pass, the chunks
    /// nobody else has are the ones worth asking it).
    fn spread(&self, i: usize, chunk: ChunkIndex) -> bool {
        let recent = self.spread_since[chunk.position()]
            .is_some_and(|since| since + SPREAD_GRACE > Instant::now());
        recent
            && self.holders.iter().enumerate().any(|(j, h)| {
                j != i
                    && self.source(h)
                    && !h.chunks.is_full()
                    && h.chunks.contains(chunk)
                    && !h.declined.contains(chunk)
            })
    }

    /// The chunks holder `i` may send instead of `chunk`: the next wanted
    /// ones, rarest first, that it has and has not declined, that no other
    /// source here has, and that no other request to it offers. Those are
    /// the ones a seeder in its first pass can send (it sent nobody the
    /// others), and nobody else is asked for one the holder may be sending
    /// already (unless a Locate brings a new holder of it meanwhile). The
    /// lists are disjoint, and each takes at most its share of what is left
    /// (one of `shares`, the requests that may be in flight to it): a chunk
    /// offered is not asked of the holder as such, so requests offering
    /// everything left would hold the next ones back, and a download's last
    /// chunks would come from a holder of the whole file one round trip at
    /// a time.
    fn instead(&self, i: usize, chunk: ChunkIndex, shares: usize) -> Vec<ChunkIndex> {
        let h = &self.holders[i];
        let shares = shares.max(1);
        let mut wanted: Vec<ChunkIndex> = self
            .pending
            .iter()
            .map(|&(_, _, c)| c)
            .filter(|&c| {
                c != chunk
                    && h.chunks.contains(c)
                    && !h.declined.contains(c)
                    && !h.offered.contains_key(&c)
                    && !self.elsewhere(i, c)
            })
            .take(MAX_INSTEAD * shares)
            .collect();
        wanted.truncate(MAX_INSTEAD.min(wanted.len() / shares));
        wanted
    }

    pub(super) fn start(&mut self, i: usize, ask: Ask) {
        let chunk = ask.chunk;
        let offered = ask.instead.clone();
        self.pending.remove(&self.key(chunk));
        let h = &mut self.holders[i];
        if h.inflight == 0 {
            h.pace.busy(Instant::now());
        }
        h.inflight += 1;
        self.swarm.sink.requested(chunk, &h.addr);
        let job = request::fetch_into(
            &self.swarm.holders,
            &h.conn,
            self.manifest.clone(),
            ask,
            (self.settings.chunk_timeout, self.settings.caps.clone()),
            self.swarm.sink.clone(),
            self.swaps.0.clone(),
        );
        let handle = self.tasks.spawn(job);
        if !offered.is_empty() {
            for &c in &offered {
                *self.holders[i].offered.entry(c).or_default() += 1;
            }
            self.offers.insert(handle.id(), offered);
        }
        self.task_of.insert(handle.id(), (i, chunk));
        self.inflight.entry(chunk).or_default().push((i, handle));
        self.asked_at.entry(chunk).or_insert_with(Instant::now);
    }

    /// Puts a chunk back in the queue if nobody holds or fetches it.
    pub(super) fn requeue(&mut self, chunk: ChunkIndex) {
        if !self.have.contains(chunk) && !self.inflight.contains_key(&chunk) {
            self.pending.insert(self.key(chunk));
        }
    }

    /// Request `id`, which offered alternatives, fetches `chunk`: if its
    /// holder sent that instead of the chunk asked for, the request moves to
    /// `chunk`, which nobody else is to be asked for now, and the chunk asked
    /// for goes back to the queue. Either way the alternatives it offered
    /// are free again.
    pub(super) fn on_swap(&mut self, id: Id, chunk: ChunkIndex) {
        let Some(entry) = self.task_of.get_mut(&id) else {
            return;
        };
        let (i, asked) = *entry;
        entry.1 = chunk;
        self.withdraw_offers(id, i);
        if asked == chunk {
            return;
        }
        let moved = self.inflight.get_mut(&asked).and_then(|who| {
            let k = who.iter().position(|(_, handle)| handle.id() == id)?;
            Some(who.swap_remove(k))
        });
        if self.inflight.get(&asked).is_some_and(Vec::is_empty) {
            self.inflight.remove(&asked);
            self.asked_at.remove(&asked);
        }
        if let Some(request) = moved {
            // Verified meanwhile from someone else: not worth fetching.
            if self.have.contains(chunk) {
                request.1.abort();
            }
            self.inflight.entry(chunk).or_default().push(request);
            self.asked_at.entry(chunk).or_insert_with(Instant::now);
        }
        self.pending.remove(&self.key(chunk));
        let h = &mut self.holders[i];
        // It had sent the chunk asked for more often: as good as a decline.
        h.declined.insert(asked);
        h.declined_at = Instant::now();
        let addr = h.addr.clone();
        self.fresh = true;
        self.requeue(asked);
        self.swarm.sink.answered(asked, &addr, false);
        self.swarm.sink.requested(chunk, &addr);
        debug!(target: "hive_peer::timeline", from = %addr, chunk = asked.get(), sent = chunk.get(), "chunk swapped");
    }

    /// Holder `i` has chosen what request `id` fetches (or the request
    /// ended): the chunks it offered may be asked of the holder again.
    pub(super) fn withdraw_offers(&mut self, id: Id, i: usize) {
        let offered = &mut self.holders[i].offered;
        for c in self.offers.remove(&id).unwrap_or_default() {
            if let Some(n) = offered.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    offered.remove(&c);
                }
            }
        }
    }

    /// Request `id` for `chunk` has ended: it is no longer in flight.
    pub(super) fn untrack(&mut self, id: Id, chunk: ChunkIndex) {
        if let Some(who) = self.inflight.get_mut(&chunk) {
            who.retain(|(_, handle)| handle.id() != id);
            if who.is_empty() {
                self.inflight.remove(&chunk);
                self.asked_at.remove(&chunk);
            }
        }
    }
}
