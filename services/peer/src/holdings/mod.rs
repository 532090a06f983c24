//! The holdings: every file this peer holds, by name, with the chunks it
//! holds of each, and the resume state of the ones still downloading.
//!
//! [`Holdings`] is the one owner of "what this peer holds". GetChunk looks
//! files up here and nowhere else: no path is ever built from a request, so
//! a request cannot reach any other file. Every change goes through one of
//! its methods, and each one that changes something publishes exactly one
//! [`HoldingsChange`] to every subscriber (the tracker session announces
//! them), so a new way to gain or lose a chunk cannot forget to tell anyone.

mod retired;
mod source;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fs::File,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use hive::{ChunkIndex, ChunkSet, FileName, Manifest};
use tokio::sync::mpsc;

pub use self::{
    retired::{OnDisk, Retired},
    source::{ChunkSource, ReadError, Stamp},
};
use crate::{
    error::PeerError,
    fetch::partfile::{Mode, PartFile, ResumeState, StateFile},
};

/// How a file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The complete file, shared from where it lies.
    Complete,
    /// A download's part file: some chunks, each verified before it counted.
    Partial,
}

/// One change to what this peer holds, in the order the changes were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldingsChange {
    /// A file is held from now on, or held anew (another layout, another
    /// download of it): `have` is everything now held of it.
    Added {
        manifest: Arc<Manifest>,
        have: ChunkSet,
        kind: Kind,
    },
    /// One more verified chunk is held.
    Marked {
        name: FileName,
        universe: u32,
        chunk: ChunkIndex,
    },
    /// A chunk is held no longer (found damaged).
    Withdrawn {
        name: FileName,
        universe: u32,
        chunk: ChunkIndex,
    },
    /// A download finished: the whole file is held, at its final path.
    Completed { name: FileName },
    /// The file is not held at all any more: `had` is what was held of it
    /// (over its manifest's chunks), for the tracker to hear withdrawn.
    Removed { name: FileName, had: ChunkSet },
}

#[derive(Clone)]
struct Entry {
    manifest: Arc<Manifest>,
    have: ChunkSet,
    kind: Kind,
    path: PathBuf,
    file: Arc<File>,
    stamp: Option<Stamp>,
    /// Where a partial file's resume state is saved.
    resume: Option<StateFile>,
    downloading: bool,
    /// Completed by a download of this daemon: it holds nothing the swarm
    /// lacks, so it does not super-seed.
    fetched: bool,
}

/// One file as `Status` shows it.
#[derive(Debug, Clone)]
pub struct FileView {
    pub manifest: Arc<Manifest>,
    pub have: ChunkSet,
    pub kind: Kind,
    pub path: PathBuf,
    pub downloading: bool,
    /// Set for a file no longer served: gone from disk, or refused.
    pub retired: Option<Retired>,
}

#[derive(Default)]
struct Index {
    files: BTreeMap<FileName, Entry>,
    /// Files no longer served, and why: shown by Status, never served.
    retired: BTreeMap<FileName, (FileView, Option<Stamp>)>,
    subscribers: Vec<mpsc::UnboundedSender<HoldingsChange>>,
}

impl Index {
    /// Sends `change` to every subscriber; forgets those that are gone.
    fn publish(&mut self, change: HoldingsChange) {
        self.subscribers.retain(|s| s.send(change.clone()).is_ok());
    }
}

/// A cheap, shared handle to the holdings.
#[derive(Clone, Default)]
pub struct Holdings {
    /// A std mutex: lookups and updates are short and never await. Changes
    /// are published while it is held, so subscribers see them in the
    /// order they were made.
    inner: Arc<Mutex<Index>>,
}

impl Holdings {
    /// Every change from now on, in order.
    ///
    /// An unbounded `mpsc`, not a `broadcast`: a broadcast receiver that
    /// falls behind loses the oldest changes, and a lost "now holds chunk N"
    /// is a chunk the tracker never lists. Changes are published from sync
    /// code (the swarm engine, GetChunk) and must never wait, so the channel
    /// cannot be bounded either. The session drains it at every turn into
    /// per-file chunk sets, so what waits in it stays small.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<HoldingsChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// Where to read `chunk_number` of `name`, if this peer holds it.
    pub fn source(&self, name: &FileName, chunk_number: u32) -> Result<ChunkSource, PeerError> {
        let index = self.lock();
        let entry = index
            .files
            .get(name)
            .ok_or_else(|| PeerError::NotFound(format!("{name:?} is not served here")))?;
        let chunk = hive::wire::chunk("chunk", entry.manifest.layout(), chunk_number)?;
        if !entry.have.contains(chunk) {
            return Err(PeerError::NotFound(format!(
                "chunk {chunk} of {name:?} is not held here"
            )));
        }
        Ok(ChunkSource {
            manifest: entry.manifest.clone(),
            chunk,
            file: entry.file.clone(),
            stamp: entry.stamp,
        })
    }

    /// Adds a complete file. Sharing the same content again is a no-op (in
    /// another chunk size, it replaces the old layout); other content under
    /// a name already held is refused.
    pub fn insert_complete(
        &self,
        manifest: Arc<Manifest>,
        path: PathBuf,
        file: Arc<File>,
        stamp: Stamp,
    ) -> Result<(), PeerError> {
        let mut index = self.lock();
        if let Some(old) = index.files.get(manifest.name()) {
            if old.manifest.digest() != manifest.digest() {
                return Err(PeerError::Exists(format!(
                    "{:?} is already shared here with digest {}",
                    manifest.name(),
                    old.manifest.digest()
                )));
            }
            if old.kind == Kind::Complete && old.manifest == manifest {
                return Ok(());
            }
        }
        let have = ChunkSet::full(manifest.chunk_count());
        index.retired.remove(manifest.name());
        index.files.insert(
            manifest.name().clone(),
            Entry {
                manifest: manifest.clone(),
                have: have.clone(),
                kind: Kind::Complete,
                path,
                file,
                stamp: Some(stamp),
                resume: None,
                downloading: false,
                fetched: false,
            },
        );
        index.publish(HoldingsChange::Added {
            manifest,
            have,
            kind: Kind::Complete,
        });
        Ok(())
    }

    /// Adds (or replaces) a download's part file holding the verified `have`.
    pub fn insert_partial(&self, manifest: Arc<Manifest>, part: &PartFile, have: ChunkSet) {
        let mut index = self.lock();
        index.retired.remove(manifest.name());
        index.files.insert(
            manifest.name().clone(),
            Entry {
                manifest: manifest.clone(),
                have: have.clone(),
                kind: Kind::Partial,
                path: part.path.clone(),
                file: part.file.clone(),
                stamp: None,
                resume: Some(part.state_file()),
                downloading: false,
                fetched: false,
            },
        );
        index.publish(HoldingsChange::Added {
            manifest,
            have,
            kind: Kind::Partial,
        });
    }

    /// Stops serving `name` altogether.
    pub fn remove(&self, name: &FileName) {
        let mut index = self.lock();
        if let Some(e) = index.files.remove(name) {
            index.publish(HoldingsChange::Removed {
                name: name.clone(),
                had: e.have,
            });
        }
    }

    /// Records a verified chunk; served from now on. Returns whether it is
    /// new (only then is the change published).
    pub fn mark(&self, name: &FileName, chunk: ChunkIndex) -> bool {
        let mut index = self.lock();
        let Some(e) = index.files.get_mut(name) else {
            return false;
        };
        if !e.have.insert(chunk) {
            return false;
        }
        let universe = e.manifest.chunk_count();
        index.publish(HoldingsChange::Marked {
            name: name.clone(),
            universe,
            chunk,
        });
        true
    }

    /// Stops serving a chunk (found damaged). Returns whether it was held
    /// (only then is the change published).
    pub fn withdraw(&self, name: &FileName, chunk: ChunkIndex) -> bool {
        self.withdraw_in(name, None, chunk)
    }

    /// [`Holdings::withdraw`], only while `name` is still held in the
    /// layout of `manifest`: a chunk found damaged in a read made without
    /// the lock says nothing of an entry that replaced the one read.
    pub fn withdraw_if(&self, name: &FileName, manifest: &Manifest, chunk: ChunkIndex) -> bool {
        self.withdraw_in(name, Some(manifest), chunk)
    }

    fn withdraw_in(&self, name: &FileName, read: Option<&Manifest>, chunk: ChunkIndex) -> bool {
        let mut index = self.lock();
        let Some(e) = index.files.get_mut(name) else {
            return false;
        };
        if read.is_some_and(|m| *e.manifest != *m) {
            return false;
        }
        if !e.have.remove(chunk) {
            return false;
        }
        let universe = e.manifest.chunk_count();
        index.publish(HoldingsChange::Withdrawn {
            name: name.clone(),
            universe,
            chunk,
        });
        true
    }

    /// A finished download: the part file now lies at `path`, complete (its
    /// resume state is gone with it).
    pub fn complete(&self, name: &FileName, path: PathBuf, stamp: Stamp) {
        let mut index = self.lock();
        let Some(e) = index.files.get_mut(name) else {
            return;
        };
        e.kind = Kind::Complete;
        e.fetched = true;
        e.path = path;
        e.stamp = Some(stamp);
        e.resume = None;
        e.have = ChunkSet::full(e.manifest.chunk_count());
        index.publish(HoldingsChange::Completed { name: name.clone() });
    }

    /// Saves the resume state of the download of `name` (blocking): its
    /// manifest and the chunks held now, taken from the holdings themselves
    /// so that the state never disagrees with what is served. Does nothing
    /// for a file that is not partial.
    ///
    /// Not called per chunk of a whole-file download: such a download is
    /// re-verified in full on resume, so its state is saved when it starts
    /// and when it stops, and [`Holdings::mark`] stays free of disk I/O. The
    /// state is a hint and is not fsynced.
    pub fn save_resume(&self, name: &FileName, mode: Mode, paused: bool) -> Result<(), PeerError> {
        let (file, state) = {
            let index = self.lock();
            let Some((e, file)) = index
                .files
                .get(name)
                .and_then(|e| Some((e, e.resume.clone()?)))
            else {
                return Ok(());
            };
            let mut state = ResumeState::new(&e.manifest, mode, &e.have);
            state.paused = paused;
            (file, state)
        };
        file.save(&state)
    }

    pub fn set_downloading(&self, name: &FileName, downloading: bool) {
        if let Some(e) = self.lock().files.get_mut(name) {
            e.downloading = downloading;
        }
    }

    /// The chunks held of `name`, and its manifest, if it is here at all.
    pub fn holding(&self, name: &FileName) -> Option<(Arc<Manifest>, ChunkSet, Kind)> {
        self.lock()
            .files
            .get(name)
            .map(|e| (e.manifest.clone(), e.have.clone(), e.kind))
    }

    /// Whether this peer super-seeds `name` (`server/tally.rs`): it holds
    /// the whole file, shared from disk rather than downloaded by this
    /// daemon. A peer that has just finished a download got every chunk
    /// from the swarm, so none of its chunks is a first copy, and declining
    /// duplicates would only hold back the swarm's last chunks. Known for
    /// this run only: after a restart, or once the watcher has shared the
    /// file anew, it is a file on disk like any other (then it may well be
    /// the only seed left).
    pub fn super_seeds(&self, name: &FileName) -> bool {
        self.lock()
            .files
            .get(name)
            .is_some_and(|e| e.kind == Kind::Complete && !e.fetched && e.have.is_full())
    }

    /// The open file behind `name` and its path, for a download to continue.
    pub fn file(&self, name: &FileName) -> Option<(Arc<File>, PathBuf)> {
        self.lock()
            .files
            .get(name)
            .map(|e| (e.file.clone(), e.path.clone()))
    }

    /// Every file with the chunks held, for (re-)registering with the tracker.
    pub fn snapshot(&self) -> Vec<(Arc<Manifest>, ChunkSet)> {
        self.lock()
            .files
            .values()
            .map(|e| (e.manifest.clone(), e.have.clone()))
            .collect()
    }

    /// Every file, held or retired, in name order.
    pub fn list(&self) -> Vec<FileView> {
        let index = self.lock();
        let held = index.files.values().map(|e| FileView {
            manifest: e.manifest.clone(),
            have: e.have.clone(),
            kind: e.kind,
            path: e.path.clone(),
            downloading: e.downloading,
            retired: None,
        });
        let retired = index.retired.values().map(|(v, _)| v.clone());
        let mut all: Vec<FileView> = held.chain(retired).collect();
        all.sort_by(|a, b| a.manifest.name().cmp(b.manifest.name()));
        all
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every update is a single assignment; a panic elsewhere cannot leave
        // an entry half-written, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
