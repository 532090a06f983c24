//! The share index: every file this peer serves, by name, with the chunks it
//! holds of each. GetChunk looks files up here and nowhere else: no path is
//! ever built from a request, so a request cannot reach any other file.

use std::{
    collections::BTreeMap,
    fs::File,
    ops::Range,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use hive::{ChunkIndex, ChunkSet, FileName, Manifest};

use crate::error::PeerError;

/// How a file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The complete file, shared from where it lies.
    Complete,
    /// A download's part file: some chunks, each verified before it counted.
    Partial,
}

/// What a complete file looked like when it was hashed; if it looks
/// different when a chunk is served, that chunk is verified first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ino: u64,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self::of_parts(meta.len(), (meta.mtime(), meta.mtime_nsec()), meta.ino())
    }

    pub fn of_parts(len: u64, mtime: (i64, i64), ino: u64) -> Self {
        Self { len, mtime, ino }
    }

    /// Length, mtime (seconds, nanoseconds) and inode.
    pub fn parts(&self) -> (u64, (i64, i64), u64) {
        (self.len, self.mtime, self.ino)
    }
}

#[derive(Clone)]
struct Entry {
    manifest: Arc<Manifest>,
    have: ChunkSet,
    kind: Kind,
    path: PathBuf,
    file: Arc<File>,
    stamp: Option<Stamp>,
    downloading: bool,
}

/// One file as `Status` shows it.
#[derive(Debug, Clone)]
pub struct FileView {
    pub manifest: Arc<Manifest>,
    pub have: ChunkSet,
    pub kind: Kind,
    pub path: PathBuf,
    pub downloading: bool,
}

/// Everything GetChunk needs to read one chunk, taken under the lock and
/// read outside it.
pub struct ChunkSource {
    pub manifest: Arc<Manifest>,
    pub chunk: ChunkIndex,
    file: Arc<File>,
    stamp: Option<Stamp>,
}

/// Why a chunk could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file changed on disk and the chunk no longer matches its digest.
    Changed,
    Io(std::io::Error),
}

impl ChunkSource {
    /// The chunk's byte range in its file.
    pub fn range(&self) -> Range<u64> {
        self.manifest.layout().range(self.chunk)
    }

    /// Whether the file looks different (size, mtime or inode) from when it
    /// was hashed (blocking). Part files, written only by hive, never do.
    pub fn changed(&self) -> Result<bool, ReadError> {
        let Some(stamp) = self.stamp else {
            return Ok(false);
        };
        let now = self.file.metadata().map_err(ReadError::Io)?;
        Ok(Stamp::of(&now) != stamp)
    }

    /// Reads `range` of the file (blocking) as stream messages of at most
    /// `frame` bytes, each in its own buffer so a stalled stream pins only
    /// what it still has to send.
    pub fn read(&self, range: Range<u64>, frame: usize) -> Result<Vec<Bytes>, ReadError> {
        let mut frames = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let len = (range.end - at).min(frame as u64) as usize;
            frames.push(Bytes::from(self.read_at(at, len)?));
            at += len as u64;
        }
        Ok(frames)
    }

    /// Reads `len` bytes at `at` into a fresh buffer, without zeroing it
    /// first (that was 6% of a seeder's CPU).
    fn read_at(&self, at: u64, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let offset = at + buf.len() as u64;
            match rustix::io::pread(
                &*self.file,
                rustix::buffer::spare_capacity(&mut buf),
                offset,
            ) {
                // The file ended early: it shrank since it was hashed.
                Ok(0) => return Err(ReadError::Changed),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ReadError::Io(e.into())),
            }
        }
        // The buffer may hold a little more than asked for.
        buf.truncate(len);
        Ok(buf)
    }

    /// Reads the whole chunk and checks it against its digest (blocking):
    /// for a file that changed on disk.
    pub fn read_verified(&self, frame: usize) -> Result<Vec<Bytes>, ReadError> {
        let frames = self.read(self.range(), frame)?;
        let mut verifier = self.manifest.verifier(self.chunk);
        let intact = frames.iter().all(|f| verifier.update(f).is_ok()) && verifier.finish().is_ok();
        if intact {
            Ok(frames)
        } else {
            Err(ReadError::Changed)
        }
    }
}

/// A cheap, shared handle to the index.
#[derive(Clone, Default)]
pub struct Shares {
    /// A std mutex: lookups and updates are short and never await.
    inner: Arc<Mutex<BTreeMap<FileName, Entry>>>,
}

impl Shares {
    /// Where to read `chunk_number` of `name`, if this peer holds it.
    pub fn source(&self, name: &FileName, chunk_number: u32) -> Result<ChunkSource, PeerError> {
        let index = self.lock();
        let entry = index
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
        if let Some(old) = index.get(manifest.name()) {
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
        index.insert(
            manifest.name().clone(),
            Entry {
                manifest,
                have,
                kind: Kind::Complete,
                path,
                file,
                stamp: Some(stamp),
                downloading: false,
            },
        );
        Ok(())
    }

    /// Adds (or replaces) a download's part file holding the verified `have`.
    pub fn insert_partial(
        &self,
        manifest: Arc<Manifest>,
        path: PathBuf,
        file: Arc<File>,
        have: ChunkSet,
    ) {
        self.lock().insert(
            manifest.name().clone(),
            Entry {
                manifest,
                have,
                kind: Kind::Partial,
                path,
                file,
                stamp: None,
                downloading: false,
            },
        );
    }

    /// Stops serving `name` altogether.
    pub fn remove(&self, name: &FileName) {
        self.lock().remove(name);
    }

    /// Records a verified chunk; served from now on.
    pub fn mark(&self, name: &FileName, chunk: ChunkIndex) {
        if let Some(e) = self.lock().get_mut(name) {
            e.have.insert(chunk);
        }
    }

    /// Stops serving a chunk (found damaged). Returns whether it was held.
    pub fn withdraw(&self, name: &FileName, chunk: ChunkIndex) -> bool {
        self.lock()
            .get_mut(name)
            .is_some_and(|e| e.have.remove(chunk))
    }

    /// A finished download: the part file now lies at `path`, complete.
    pub fn complete(&self, name: &FileName, path: PathBuf, stamp: Stamp) {
        if let Some(e) = self.lock().get_mut(name) {
            e.kind = Kind::Complete;
            e.path = path;
            e.stamp = Some(stamp);
            e.have = ChunkSet::full(e.manifest.chunk_count());
        }
    }

    pub fn set_downloading(&self, name: &FileName, downloading: bool) {
        if let Some(e) = self.lock().get_mut(name) {
            e.downloading = downloading;
        }
    }

    /// The chunks held of `name`, and its manifest, if it is here at all.
    pub fn holding(&self, name: &FileName) -> Option<(Arc<Manifest>, ChunkSet, Kind)> {
        self.lock()
            .get(name)
            .map(|e| (e.manifest.clone(), e.have.clone(), e.kind))
    }

    /// The open file behind `name` and its path, for a download to continue.
    pub fn file(&self, name: &FileName) -> Option<(Arc<File>, PathBuf)> {
        self.lock()
            .get(name)
            .map(|e| (e.file.clone(), e.path.clone()))
    }

    /// Every file with the chunks held, for (re-)registering with the tracker.
    pub fn holdings(&self) -> Vec<(Arc<Manifest>, ChunkSet)> {
        self.lock()
            .values()
            .map(|e| (e.manifest.clone(), e.have.clone()))
            .collect()
    }

    /// Every file, in name order.
    pub fn list(&self) -> Vec<FileView> {
        self.lock()
            .values()
            .map(|e| FileView {
                manifest: e.manifest.clone(),
                have: e.have.clone(),
                kind: e.kind,
                path: e.path.clone(),
                downloading: e.downloading,
            })
            .collect()
    }

    /// Whether a complete file already lies at `path`.
    pub fn serves_path(&self, path: &Path) -> Option<FileName> {
        self.lock()
            .values()
            .find(|e| e.kind == Kind::Complete && e.path == path)
            .map(|e| e.manifest.name().clone())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<FileName, Entry>> {
        // Every update is a single assignment; a panic elsewhere cannot leave
        // an entry half-written, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
