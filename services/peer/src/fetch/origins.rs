//! Where each chunk fetched in this daemon's run came from, and which are in
//! flight now: what the web UI's chunk map shows. The engine reports each
//! request as it starts and ends (through its [`super::traits::Sink`]); each
//! change is also published, so a page fills in live.
//!
//! In memory only: a chunk held before the daemon started has no origin
//! here, and says so. Whether a chunk is held is the holdings' to say; an
//! origin is kept for a chunk until it is asked for again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use hive::{ChunkIndex, FileName};
use tokio::sync::broadcast;

/// Chunk changes kept for a subscriber that falls behind; one further behind
/// is told it lagged, and reads the map again.
const EVENTS_KEPT: usize = 1024;

/// One chunk of a file being fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Asked of these holders, not yet verified.
    InFlight(Vec<Arc<str>>),
    /// Verified, from this holder.
    From(Arc<str>),
}

/// One change to a chunk, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEvent {
    pub name: FileName,
    pub chunk: u32,
    /// The chunk's origin now; `None`: the request failed and nobody else
    /// fetches it (missing again).
    pub origin: Option<Origin>,
}

type Files = HashMap<FileName, HashMap<u32, Origin>>;

/// A cheap, shared handle.
#[derive(Clone)]
pub struct Origins {
    /// A std mutex: each update is a map operation, never held across an
    /// await; events are sent under it, so subscribers see them in order.
    files: Arc<Mutex<Files>>,
    events: broadcast::Sender<ChunkEvent>,
}

impl Default for Origins {
    fn default() -> Self {
        Self {
            files: Arc::default(),
            events: broadcast::channel(EVENTS_KEPT).0,
        }
    }
}

impl Origins {
    /// `chunk` of `name` was asked of `from`.
    pub fn requested(&self, name: &FileName, chunk: ChunkIndex, from: &str) {
        let mut files = self.files();
        let slot = files
            .entry(name.clone())
            .or_default()
            .entry(chunk.get())
            .or_insert_with(|| Origin::InFlight(Vec::new()));
        match slot {
            Origin::InFlight(who) => who.push(from.into()),
            // Asked again: it is not held any more.
            Origin::From(_) => *slot = Origin::InFlight(vec![from.into()]),
        }
        let origin = Some(slot.clone());
        self.publish(name, chunk, origin);
    }

    /// The request for `chunk` of `name` to `from` ended. The first verified
    /// copy is the chunk's origin; a later one (end-game) changes nothing.
    pub fn answered(&self, name: &FileName, chunk: ChunkIndex, from: &str, verified: bool) {
        let mut files = self.files();
        let Some(chunks) = files.get_mut(name) else {
            return;
        };
        let Some(Origin::InFlight(who)) = chunks.get_mut(&chunk.get()) else {
            return;
        };
        let origin = if verified {
            Some(Origin::From(from.into()))
        } else {
            who.retain(|w| &**w != from);
            (!who.is_empty()).then(|| Origin::InFlight(who.clone()))
        };
        match &origin {
            Some(o) => chunks.insert(chunk.get(), o.clone()),
            None => chunks.remove(&chunk.get()),
        };
        self.publish(name, chunk, origin);
    }

    /// The origins known of `name`'s chunks, by index.
    pub fn of(&self, name: &FileName) -> HashMap<u32, Origin> {
        self.files().get(name).cloned().unwrap_or_default()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChunkEvent> {
        self.events.subscribe()
    }

    fn publish(&self, name: &FileName, chunk: ChunkIndex, origin: Option<Origin>) {
        // An error only means nobody is subscribed.
        let _ = self.events.send(ChunkEvent {
            name: name.clone(),
            chunk: chunk.get(),
            origin,
        });
    }

    fn files(&self) -> MutexGuard<'_, Files> {
        // Each update leaves the maps whole: a panic elsewhere cannot have
        // left one half-changed.
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> FileName {
        FileName::new("a.bin").unwrap()
    }

    fn chunk(i: u32) -> ChunkIndex {
        ChunkIndex::new(i).unwrap()
    }

    #[test]
    fn a_chunk_is_in_flight_until_verified_then_from_its_first_holder() {
        let o = Origins::default();
        let mut events = o.subscribe();
        o.requested(&name(), chunk(3), "10.0.0.1:1");
        o.requested(&name(), chunk(3), "10.0.0.2:2");
        assert_eq!(
            o.of(&name())[&3],
            Origin::InFlight(vec!["10.0.0.1:1".into(), "10.0.0.2:2".into()])
        );
        o.answered(&name(), chunk(3), "10.0.0.2:2", true);
        // The end-game's other copy changes nothing.
        o.answered(&name(), chunk(3), "10.0.0.1:1", true);
        assert_eq!(o.of(&name())[&3], Origin::From("10.0.0.2:2".into()));
        let seen: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.origin)
            .collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[2], Some(Origin::From("10.0.0.2:2".into())));
    }

    #[test]
    fn a_failed_request_leaves_the_chunk_missing_unless_another_fetches_it() {
        let o = Origins::default();
        o.requested(&name(), chunk(1), "a:1");
        o.requested(&name(), chunk(1), "b:2");
        o.answered(&name(), chunk(1), "a:1", false);
        assert_eq!(o.of(&name())[&1], Origin::InFlight(vec!["b:2".into()]));
        o.answered(&name(), chunk(1), "b:2", false);
        assert!(o.of(&name()).is_empty());
        // An answer nobody asked for is ignored.
        o.answered(&name(), chunk(5), "c:3", true);
        assert!(o.of(&name()).is_empty());
    }

    #[test]
    fn a_chunk_asked_again_is_in_flight_again() {
        let o = Origins::default();
        o.requested(&name(), chunk(1), "a:1");
        o.answered(&name(), chunk(1), "a:1", true);
        o.requested(&name(), chunk(1), "b:2");
        assert_eq!(o.of(&name())[&1], Origin::InFlight(vec!["b:2".into()]));
    }
}
