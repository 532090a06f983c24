//! Locate's answers kept a short while per file (`--locate-cache`), so that
//! the Locates of a hot file on one replica reach Redis about once per
//! period instead of once each.
//!
//! What it costs the contract: a change made through another replica (or a
//! session that expired) shows in this replica's Locate answers at most one
//! period later. A holder added or dropped through this replica shows at
//! once: those writes (Register, Withdraw, Leave, an eviction, its sweeps,
//! a RegisterChunk that creates or drops a holding) forget the file's
//! answer, and a read that began before such a write is never kept (the
//! write leaves a newer generation behind). A RegisterChunk that only
//! changes the chunks of a holding that stays does not forget it: those
//! chunks show within the period, so that the RegisterChunks of a busy
//! file do not empty its answer many times a period.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hive::FileName;
use tokio::time::Instant;

use super::locate::Sample;

/// Bytes of answers one replica keeps at most (as [`size`] counts them);
/// past it the expired ones go, then all.
const MAX_BYTES: usize = 32 << 20;

pub(super) struct Answers {
    keep: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<FileName, Entry>,
    bytes: usize,
    /// Bumped by every forget: a read that began before it is not kept.
    generation: u64,
    /// Reads that began before this generation are not kept (the map was
    /// cleared, and with it the forgets that would have refused them).
    floor: u64,
}

struct Entry {
    /// When the read began (a forget: when it happened).
    at: Instant,
    generation: u64,
    /// The sample and the window it was read with; `None` for a forget.
    answer: Option<(usize, Arc<Sample>)>,
    bytes: usize,
}

/// Where a read began: pass it back to [`Answers::keep`].
pub(super) struct Ticket {
    at: Instant,
    generation: u64,
}

impl Answers {
    /// A cache keeping answers for `keep` (zero: none).
    pub(super) fn new(keep: Duration) -> Self {
        Self {
            keep,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name`'s kept answer, if one read with at least `window` records is
    /// younger than the period.
    pub(super) fn get(&self, name: &FileName, window: usize) -> Option<Arc<Sample>> {
        if self.keep.is_zero() {
            return None;
        }
        let inner = self.lock();
        let entry = inner.entries.get(name)?;
        let (read, sample) = entry.answer.as_ref()?;
        let wide_enough = *read == 0 || (window != 0 && *read >= window);
        (entry.at.elapsed() < self.keep && wide_enough).then(|| sample.clone())
    }

    /// Call before reading a file.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket {
            at: Instant::now(),
            generation: self.lock().generation,
        }
    }

    /// Keeps what a read begun at `ticket` found, unless this replica
    /// changed the file since, or the read took longer than the period.
    pub(super) fn keep(&self, name: &FileName, ticket: Ticket, window: usize, sample: Arc<Sample>) {
        if self.keep.is_zero() || ticket.at.elapsed() >= self.keep {
            return;
        }
        let mut inner = self.lock();
        if ticket.generation < inner.floor
            || inner
                .entries
                .get(name)
                .is_some_and(|e| e.generation > ticket.generation)
        {
            return;
        }
        let bytes = size(&sample);
        inner.make_room(bytes, self.keep);
        inner.put(
            name,
            Entry {
                at: ticket.at,
                generation: ticket.generation,
                answer: Some((window, sample)),
                bytes,
            },
        );
    }

    /// This replica changed `name`: its answer goes, and reads begun before
    /// now are not kept.
    pub(super) fn forget<'a>(&self, names: impl IntoIterator<Item = &'a FileName>) {
        if self.keep.is_zero() {
            return;
        }
        let mut inner = self.lock();
        for name in names {
            inner.generation += 1;
            let bytes = 0;
            inner.make_room(bytes, self.keep);
            let generation = inner.generation;
            inner.put(
                name,
                Entry {
                    at: Instant::now(),
                    generation,
                    answer: None,
                    bytes,
                },
            );
        }
    }
}

impl Inner {
    fn put(&mut self, name: &FileName, entry: Entry) {
        self.bytes += entry.bytes + ENTRY_BYTES;
        if let Some(old) = self.entries.insert(name.clone(), entry) {
            self.bytes -= old.bytes + ENTRY_BYTES;
        }
    }

    /// Frees room for `bytes` more: drops entries older than the period
    /// (a forget older than that refuses no read that may still be kept),
    /// then, if that is not enough, everything.
    fn make_room(&mut self, bytes: usize, keep: Duration) {
        if self.bytes + bytes + ENTRY_BYTES <= MAX_BYTES {
            return;
        }
        self.entries.retain(|_, e| e.at.elapsed() < keep);
        self.bytes = self.entries.values().map(|e| e.bytes + ENTRY_BYTES).sum();
        if self.bytes + bytes + ENTRY_BYTES > MAX_BYTES {
            self.entries.clear();
            self.bytes = 0;
            self.floor = self.generation + 1;
            self.generation += 1;
        }
    }
}

/// What an entry takes besides its sample (the name, the map's slot).
const ENTRY_BYTES: usize = 128;

/// About what `sample` takes in memory: its counts, its holders and their
/// chunk sets (the manifest is shared with the manifest cache).
fn size(sample: &Sample) -> usize {
    let chunk_set = (sample.manifest.chunk_count() as usize).div_ceil(8) + 64;
    sample.counts.len() * 4 + sample.live.len() * (chunk_set + 96)
}
