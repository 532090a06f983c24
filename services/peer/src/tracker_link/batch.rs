//! Chunk announcements on their way to the tracker, merged per file.
//!
//! A 1,024-chunk download costs a handful of RegisterChunk calls, not 1,024:
//! each change waits up to [`WINDOW`] for company, unless [`MAX_CHUNKS`] are
//! queued. For one chunk the latest change wins: a chunk gained and lost
//! again within one batch goes out as withdrawn only, never as held. (It is
//! not dropped altogether: the tracker may already have heard that it is
//! held, from a call that timed out after it was applied or from a
//! registration made while the change was queued, and a withdrawal of a
//! chunk it does not list costs it nothing.)
//!
//! Pure: the time is an argument, so the rules are tested under paused time.

use std::time::Duration;

use hive::{ChunkIndex, ChunkSet, FileName};
use tokio::time::Instant;

/// Chunk changes wait this long for company before they are sent.
pub const WINDOW: Duration = Duration::from_millis(50);
/// ...unless this many are queued.
pub const MAX_CHUNKS: u32 = 256;

/// What the tracker is to hear about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUpdate {
    pub name: FileName,
    /// Chunks now held.
    pub add: ChunkSet,
    /// Chunks held no longer.
    pub remove: ChunkSet,
}

impl FileUpdate {
    fn new(name: FileName, universe: u32) -> Self {
        Self {
            name,
            add: ChunkSet::empty(universe),
            remove: ChunkSet::empty(universe),
        }
    }

    fn len(&self) -> u32 {
        self.add.len() + self.remove.len()
    }

    /// Folds an older update of the same file under this one: where both
    /// speak of a chunk, this one wins.
    fn absorb_older(&mut self, mut older: FileUpdate) {
        if older.add.universe() != self.add.universe() {
            // Another layout: its chunk numbers mean other bytes.
            return;
        }
        older.add.subtract(&self.remove);
        older.remove.subtract(&self.add);
        self.add.union_with(&older.add);
        self.remove.union_with(&older.remove);
    }
}

/// The queued chunk changes, per file in the order each file was first
/// queued, and when they are due.
#[derive(Debug, Default)]
pub struct Batch {
    files: Vec<FileUpdate>,
    due: Option<Instant>,
}

impl Batch {
    /// Queues "`chunk` of `name` is held now".
    pub fn held(&mut self, name: &FileName, universe: u32, chunk: ChunkIndex, now: Instant) {
        let u = self.file(name, universe);
        u.add.insert(chunk);
        u.remove.remove(chunk);
        self.schedule(now);
    }

    /// Queues "`chunk` of `name` is held no longer".
    pub fn withdrawn(&mut self, name: &FileName, universe: u32, chunk: ChunkIndex, now: Instant) {
        let u = self.file(name, universe);
        u.remove.insert(chunk);
        u.add.remove(chunk);
        self.schedule(now);
    }

    /// Drops what is queued for `name` in a layout other than one of
    /// `universe` chunks (the file is held anew): its chunk numbers mean
    /// other bytes now.
    pub fn drop_other_layout(&mut self, name: &FileName, universe: u32) {
        self.files
            .retain(|f| f.name != *name || f.add.universe() == universe);
        if self.files.is_empty() {
            self.due = None;
        }
    }

    /// When the queued changes should be sent, if any are queued.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether the queued changes should be sent at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|at| now >= at)
    }

    /// Chunk changes queued, over all files.
    fn len(&self) -> u32 {
        self.files.iter().map(FileUpdate::len).sum()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Everything queued, in order; the batch is empty afterwards.
    pub fn take(&mut self) -> Vec<FileUpdate> {
        self.due = None;
        std::mem::take(&mut self.files)
    }

    /// Queues again updates that could not be sent, ahead of anything queued
    /// since (which wins where both speak of a chunk); due at `retry_at`.
    pub fn put_back(&mut self, updates: Vec<FileUpdate>, retry_at: Instant) {
        let newer = std::mem::replace(&mut self.files, updates);
        for u in newer {
            match self.files.iter().position(|f| f.name == u.name) {
                Some(i) => {
                    let older = std::mem::replace(&mut self.files[i], u);
                    self.files[i].absorb_older(older);
                }
                None => self.files.push(u),
            }
        }
        self.files.retain(|f| f.len() > 0);
        if !self.files.is_empty() {
            self.due = Some(self.due.map_or(retry_at, |t| t.min(retry_at)));
        }
    }

    /// Drops everything queued (a registration just sent it all).
    pub fn clear(&mut self) {
        self.files.clear();
        self.due = None;
    }

    fn file(&mut self, name: &FileName, universe: u32) -> &mut FileUpdate {
        let i = match self.files.iter().position(|f| f.name == *name) {
            Some(i) => {
                if self.files[i].add.universe() != universe {
                    // The file was laid out anew: what was queued for the
                    // old layout no longer means anything.
                    self.files[i] = FileUpdate::new(name.clone(), universe);
                }
                i
            }
            None => {
                self.files.push(FileUpdate::new(name.clone(), universe));
                self.files.len() - 1
            }
        };
        &mut self.files[i]
    }

    fn schedule(&mut self, now: Instant) {
        let at = if self.len() >= MAX_CHUNKS {
            now
        } else {
            now + WINDOW
        };
        self.due = Some(self.due.map_or(at, |t| t.min(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> FileName {
        FileName::new(s).unwrap()
    }

    fn c(n: u32) -> ChunkIndex {
        ChunkIndex::new(n).unwrap()
    }

    fn set(universe: u32, chunks: &[u32]) -> ChunkSet {
        let mut s = ChunkSet::empty(universe);
        for &n in chunks {
            s.insert(c(n));
        }
        s
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_due_after_the_window() {
        let mut b = Batch::default();
        assert_eq!(b.due(), None, "nothing queued, nothing due");
        b.held(&name("f"), 10, c(1), Instant::now());
        tokio::time::advance(WINDOW - Duration::from_millis(1)).await;
        assert!(!b.is_due(Instant::now()), "still waiting for company");
        // A later change does not push the deadline out.
        b.held(&name("f"), 10, c(2), Instant::now());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.is_due(Instant::now()));
        let sent = b.take();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].add, set(10, &[1, 2]));
        assert!(b.is_empty());
        assert_eq!(b.due(), None, "taken means nothing is due");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_due_at_once() {
        let mut b = Batch::default();
        let now = Instant::now();
        for n in 1..MAX_CHUNKS {
            b.held(&name("f"), 1024, c(n), now);
        }
        assert!(!b.is_due(now), "one short of a full batch");
        // Withdrawals count toward the size too, over every file.
        b.withdrawn(&name("g"), 4, c(3), now);
        assert!(b.is_due(now));
        assert_eq!(b.len(), MAX_CHUNKS);
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_change_of_a_chunk_wins() {
        let mut b = Batch::default();
        let now = Instant::now();
        b.held(&name("f"), 8, c(3), now);
        b.withdrawn(&name("f"), 8, c(3), now);
        b.withdrawn(&name("f"), 8, c(5), now);
        b.held(&name("f"), 8, c(5), now);
        let sent = b.take();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].add, set(8, &[5]), "withdrawn, then held again");
        assert_eq!(
            sent[0].remove,
            set(8, &[3]),
            "held, then withdrawn: never sent as held"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn files_go_out_in_the_order_first_queued() {
        let mut b = Batch::default();
        let now = Instant::now();
        for f in ["c", "a", "b"] {
            b.held(&name(f), 4, c(1), now);
        }
        b.held(&name("a"), 4, c(2), now);
        let order: Vec<String> = b.take().iter().map(|u| u.name.to_string()).collect();
        assert_eq!(order, ["c", "a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn updates_put_back_go_first_and_newer_changes_win() {
        let mut b = Batch::default();
        let now = Instant::now();
        b.held(&name("f"), 8, c(1), now);
        b.held(&name("f"), 8, c(2), now);
        b.held(&name("g"), 4, c(1), now);
        let failed = b.take();
        // While the call failed, chunk 2 of f was found damaged.
        b.withdrawn(&name("f"), 8, c(2), now);
        b.held(&name("h"), 4, c(4), now);
        let retry = now + Duration::from_millis(800);
        b.put_back(failed, retry);
        assert_eq!(b.due(), Some(now + WINDOW), "the earlier deadline stands");
        let sent = b.take();
        let order: Vec<String> = sent.iter().map(|u| u.name.to_string()).collect();
        assert_eq!(order, ["f", "g", "h"]);
        assert_eq!(sent[0].add, set(8, &[1]));
        assert_eq!(sent[0].remove, set(8, &[2]));

        b.put_back(sent, retry);
        assert_eq!(b.due(), Some(retry), "put back alone: due at the retry");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_layout_drops_what_was_queued_for_the_old() {
        let mut b = Batch::default();
        let now = Instant::now();
        b.held(&name("f"), 8, c(7), now);
        b.held(&name("f"), 2, c(1), now);
        let sent = b.take();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].add, set(2, &[1]));
        assert!(sent[0].remove.is_empty());
    }
}
