//! What each holder is asked for: the rarest-first queue, the end-game's
//! second copies, and the bound on chunk bytes in flight.

use hive::ChunkIndex;

use super::Engine;
use crate::fetch::{
    request,
    traits::{Holders, Locator, Sink},
};

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

    /// Fills every holder's free request slots.
    pub(super) fn assign(&mut self) {
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
    pub(super) fn pick(&self, i: usize) -> Option<ChunkIndex> {
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

    pub(super) fn start(&mut self, i: usize, chunk: ChunkIndex) {
        self.pending.remove(&self.key(chunk));
        let h = &mut self.holders[i];
        h.inflight += 1;
        self.swarm.sink.requested(chunk, &h.addr);
        let job = request::fetch_into(
            &self.swarm.holders,
            &h.conn,
            self.manifest.clone(),
            chunk,
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
