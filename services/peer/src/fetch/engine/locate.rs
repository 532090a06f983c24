//! The engine and the tracker: Locate asked in the background, and its
//! answers taken in (new holders, fresh chunk sets, rarity).

use hive::ChunkSet;
use tokio::{task::JoinHandle, time::Instant};
use tracing::{debug, warn};

use super::{Engine, FRESH_LOCATE};
use crate::{
    error::PeerError,
    fetch::traits::{Holders, Locator, Sink},
    tracker_link::Located,
};

impl<L: Locator, H: Holders, S: Sink> Engine<L, H, S> {
    /// Starts a Locate in the background, unless one is in flight.
    pub(super) fn start_locate(&mut self) {
        self.last_relocate = Instant::now();
        self.relocate_soon = false;
        if self.locating.is_none() {
            let found = self.swarm.locator.relocate(self.manifest.clone());
            self.locating = Some(tokio::spawn(found));
        }
    }

    /// Asks the tracker again and waits for the answer; returns whether some
    /// holder can now supply a missing chunk.
    pub(super) async fn relocate_now(&mut self) -> bool {
        self.start_locate();
        let found = answer(&mut self.locating).await;
        self.locating = None;
        self.take(found);
        self.holders
            .iter()
            .any(|h| self.source(h) && self.lacking(h))
    }

    /// An answer without news (or none): the next Locate waits twice as
    /// long as the last, up to the interval.
    fn quieter(&mut self) {
        self.quiet_gap = (self.quiet_gap * 2).min(self.settings.relocate_interval);
    }

    /// Takes in the outcome of a Locate.
    pub(super) fn take(&mut self, found: Result<Located, PeerError>) {
        match found {
            Ok(found) if found.manifest.digest() == self.manifest.digest() => self.merge(found),
            Ok(_) => {
                warn!(file = %self.manifest.name(), "the tracker now has other content under this name")
            }
            Err(e) => {
                // Not news: a tracker that fails is asked less and less
                // often, up to the interval.
                self.fresh = false;
                self.quieter();
                debug!(error = %e, "locate failed; carrying on with known holders");
            }
        }
    }

    /// Takes in a Locate answer: new holders, fresh chunk sets, rarity; and
    /// whether it brought news (the swarm moves: ask again soon).
    pub(super) fn merge(&mut self, found: Located) {
        let me = self.swarm.locator.me();
        self.answered_at = Instant::now();
        let mut news = false;
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
                    news |= h.chunks != holder.chunks;
                    h.chunks = holder.chunks;
                    h.listed = true;
                }
                None => {
                    news = true;
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
        self.fresh = news;
        match news {
            true => self.quiet_gap = FRESH_LOCATE,
            false => self.quieter(),
        }
        debug!(holders = self.holders.len(), news, "located");
        let now = Instant::now();
        for h in self
            .holders
            .iter()
            .filter(|h| h.listed && !h.chunks.is_full())
        {
            for c in h.chunks.iter() {
                self.spread_since[c.position()].get_or_insert(now);
            }
        }
        self.rerank(&found.chunk_holders);
        self.recount();
    }
}

/// The answer of the Locate in flight (there must be one).
pub(super) async fn answer(
    locating: &mut Option<JoinHandle<Result<Located, PeerError>>>,
) -> Result<Located, PeerError> {
    match locating.as_mut() {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| Err(PeerError::Internal(format!("locate task failed: {e}")))),
        None => Err(PeerError::Internal("no locate in flight".into())),
    }
}
