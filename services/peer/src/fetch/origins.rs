//! Where each chunk fetched in this daemon's run came from, and which are in
//! flight now: what the web UI's chunk map shows. The engine reports each
//! request as it starts and ends (through its [`super::traits::Sink`]); each
//! change is also published, so a page fills in live.
//!
//! In memory only: a chunk held before the daemon started has no origin
//! here, and says so. Whether a chunk is held is the holdings' to say; an
//! origin is kept for a chunk until it is asked for again.
//!
//! Bounded: a file's origins are kept while its download runs (or is paused)
//! and for the last [`FINISHED_KEPT`] downloads that ended, so a
//! just-finished chunk map still says where its chunks came from; an older
//! one shows its held chunks without origins. A cancelled or unshared file's
//! are dropped at once. (Kept for every file, they would cost about 1 MB per
//! 16,384-chunk file for the daemon's lifetime.)

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use hive::{ChunkIndex, FileName};
use tokio::sync::broadcast;

/// Chunk changes kept for a subscriber that falls behind; one further behind
/// is told it lagged, and reads the map again.
const EVENTS_KEPT: usize = 1024;

/// Downloads that ended whose origins are kept, the most recent.
pub const FINISHED_KEPT: usize = 16;

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

#[derive(Default)]
struct Files {
    chunks: HashMap<FileName, HashMap<u32, Origin>>,
    /// Files whose download ended, oldest first; at most [`FINISHED_KEPT`].
    finished: VecDeque<FileName>,
}

impl Files {
    fn unfinish(&mut self, name: &FileName) {
        self.finished.retain(|n| n != name);
    }
}

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
        // Fetched again: running, not among the finished.
        files.unfinish(name);
        let slot = files
            .chunks
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
        self.publish(name, chunk.get(), origin);
    }

    /// The request for `chunk` of `name` to `from` ended. The first verified
    /// copy is the chunk's origin; a later one (end-game) changes nothing.
    pub fn answered(&self, name: &FileName, chunk: ChunkIndex, from: &str, verified: bool) {
        let mut files = self.files();
        let Some(chunks) = files.chunks.get_mut(name) else {
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
        self.publish(name, chunk.get(), origin);
    }

    /// The download of `name` ended (done, failed or paused): its chunks'
    /// origins are kept among the last [`FINISHED_KEPT`] such files'; its
    /// requests still open are over.
    pub fn finished(&self, name: &FileName) {
        let mut files = self.files();
        files.unfinish(name);
        let Some(chunks) = files.chunks.get_mut(name) else {
            return;
        };
        // Requests still open are over: those chunks are missing again.
        chunks.retain(|&chunk, o| {
            let open = matches!(o, Origin::InFlight(_));
            if open {
                self.publish(name, chunk, None);
            }
            !open
        });
        files.finished.push_back(name.clone());
        while files.finished.len() > FINISHED_KEPT {
            if let Some(old) = files.finished.pop_front() {
                files.chunks.remove(&old);
            }
        }
    }

    /// Drops what is known of `name` (cancelled or unshared).
    pub fn forget(&self, name: &FileName) {
        let mut files = self.files();
        files.unfinish(name);
        files.chunks.remove(name);
    }

    /// The origins known of `name`'s chunks, by index.
    pub fn of(&self, name: &FileName) -> HashMap<u32, Origin> {
        self.files().chunks.get(name).cloned().unwrap_or_default()
    }

    /// Files with origins kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.files().chunks.len()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChunkEvent> {
        self.events.subscribe()
    }

    fn publish(&self, name: &FileName, chunk: u32, origin: Option<Origin>) {
        // An error only means nobody is subscribed.
        let _ = self.events.send(ChunkEvent {
            name: name.clone(),
            chunk,
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

    fn file(i: usize) -> FileName {
        FileName::new(format!("f{i}.bin")).unwrap()
    }

    #[test]
    fn only_the_last_finished_downloads_keep_their_origins() {
        let o = Origins::default();
        let mut events = o.subscribe();
        let running = file(999);
        o.requested(&running, chunk(1), "r:1");
        for i in 0..FINISHED_KEPT + 5 {
            o.requested(&file(i), chunk(1), "a:1");
            o.answered(&file(i), chunk(1), "a:1", true);
            o.requested(&file(i), chunk(2), "b:2");
            o.finished(&file(i));
            // A late answer to a request the end ended is ignored.
            o.answered(&file(i), chunk(2), "b:2", true);
        }
        assert_eq!(
            o.len(),
            FINISHED_KEPT + 1,
            "16 finished and the running one"
        );
        let missing: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| e.origin.is_none())
            .map(|e| e.chunk)
            .collect();
        assert_eq!(
            missing,
            vec![2; FINISHED_KEPT + 5],
            "each open request's chunk is missing again on the page"
        );
        for i in 0..5 {
            assert!(o.of(&file(i)).is_empty(), "f{i} was dropped");
        }
        let last = o.of(&file(FINISHED_KEPT + 4));
        assert_eq!(last.len(), 1, "only verified chunks stay: {last:?}");
        assert_eq!(last[&1], Origin::From("a:1".into()));
        assert_eq!(
            o.of(&running)[&1],
            Origin::InFlight(vec!["r:1".into()]),
            "a running download is never dropped"
        );
    }

    #[test]
    fn a_finished_file_fetched_again_is_not_dropped_while_it_runs() {
        let o = Origins::default();
        o.requested(&file(0), chunk(1), "a:1");
        o.answered(&file(0), chunk(1), "a:1", true);
        o.finished(&file(0));
        // Paused, then resumed: running again.
        o.requested(&file(0), chunk(2), "a:1");
        for i in 1..=FINISHED_KEPT + 1 {
            o.requested(&file(i), chunk(1), "a:1");
            o.finished(&file(i));
        }
        assert_eq!(o.of(&file(0)).len(), 2);
        assert!(o.of(&file(1)).is_empty(), "the oldest finished one went");
    }

    #[test]
    fn a_cancelled_or_unshared_file_is_forgotten() {
        let o = Origins::default();
        o.requested(&file(0), chunk(1), "a:1");
        o.answered(&file(0), chunk(1), "a:1", true);
        o.finished(&file(0));
        o.requested(&file(1), chunk(1), "a:1");
        o.forget(&file(0));
        o.forget(&file(1));
        assert_eq!(o.len(), 0);
        // Its answer after the cancel is ignored.
        o.answered(&file(1), chunk(1), "a:1", true);
        assert_eq!(o.len(), 0);
        // Forgotten, it no longer counts among the finished.
        for i in 2..2 + FINISHED_KEPT {
            o.requested(&file(i), chunk(1), "a:1");
            o.finished(&file(i));
        }
        assert_eq!(o.len(), FINISHED_KEPT);
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
