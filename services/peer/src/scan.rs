//! Finding and hashing the files a peer shares: the regular files of its
//! directory at start, and any file `peerctl share` names later.
//!
//! Hashing is the slow part, so results are cached in `.hive/index.json`,
//! keyed by path and checked against size, mtime and inode: an unchanged file
//! is not hashed again on restart.

use std::{
    collections::HashMap,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use hive::{ChunkSize, Digest, FileName, Layout, Manifest};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::holdings::Stamp;

/// hive's own state directory inside the share directory; never shared.
pub const STATE_DIR: &str = ".hive";

/// A file ready to share.
pub struct Found {
    pub manifest: Arc<Manifest>,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub stamp: Stamp,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    #[error("{path}: {reason}")]
    BadName { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |source| ScanError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Opens and hashes (or finds in `cache`) the regular file at `path`, shared
/// as `name`. Blocking.
pub fn hash_path(
    path: &Path,
    name: FileName,
    chunk_size: Option<ChunkSize>,
    cache: &mut HashCache,
) -> Result<Found, ScanError> {
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(ScanError::NotRegular(path.to_owned()));
    }
    let stamp = Stamp::of(&meta);
    let manifest = match cache.lookup(path, &name, stamp, chunk_size) {
        Some(m) => m,
        None => {
            let chunk_size = chunk_size.unwrap_or_else(|| ChunkSize::for_file(meta.len()));
            let started = std::time::Instant::now();
            let m = Manifest::from_file(&file, meta.len(), name, Some(chunk_size))
                .map_err(io_err(path))?;
            debug!(path = %path.display(), bytes = m.size(), elapsed_ms = started.elapsed().as_millis() as u64, "hashed");
            cache.store(path, stamp, &m);
            m
        }
    };
    Ok(Found {
        manifest: Arc::new(manifest),
        path: path.to_owned(),
        file: Arc::new(file),
        stamp,
    })
}

/// Every shareable file directly in `dir`: regular files (or symlinks to
/// regular files inside `dir`) whose names are valid. Others are skipped with
/// a warning. Blocking.
pub fn scan_dir(
    dir: &Path,
    chunk_size: Option<ChunkSize>,
    cache: &mut HashCache,
) -> io::Result<Vec<Found>> {
    let root = dir.canonicalize()?;
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&root)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let raw = entry.file_name();
        if raw == STATE_DIR {
            continue;
        }
        let path = entry.path();
        let Some(name) = raw.to_str().and_then(|s| FileName::new(s).ok()) else {
            warn!(path = %path.display(), "skipped: not a valid hive file name");
            continue;
        };
        match inside(&root, &path) {
            Ok(true) => {}
            Ok(false) => {
                warn!(path = %path.display(), "skipped: a link that leaves the share directory");
                continue;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "skipped");
                continue;
            }
        }
        if !path.metadata().is_ok_and(|m| m.is_file()) {
            debug!(path = %path.display(), "skipped: not a regular file");
            continue;
        }
        match hash_path(&path, name, chunk_size, cache) {
            Ok(f) => found.push(f),
            Err(e) => warn!(error = %e, "skipped"),
        }
    }
    cache.retain(|p| found.iter().any(|f| f.path == p) || !p.starts_with(&root));
    info!(dir = %root.display(), files = found.len(), "share directory scanned");
    Ok(found)
}

/// Whether `path`, with every link resolved, stays inside `root`.
fn inside(root: &Path, path: &Path) -> io::Result<bool> {
    Ok(path.canonicalize()?.starts_with(root))
}

/// Digests of files already hashed, by path; see the module docs.
pub struct HashCache {
    path: PathBuf,
    entries: HashMap<PathBuf, CacheEntry>,
    dirty: bool,
}

#[derive(Serialize, Deserialize, Clone)]
struct CacheEntry {
    len: u64,
    mtime: (i64, i64),
    ino: u64,
    chunk_size: u32,
    digest: Digest,
    chunks: Vec<Digest>,
}

impl HashCache {
    /// The cache in `state_dir`; empty if missing or unreadable.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join("index.json");
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            path,
            entries,
            dirty: false,
        }
    }

    /// Writes the cache if it changed (atomically: temp file, then rename).
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.entries)?)?;
        std::fs::rename(&tmp, &self.path)?;
        self.dirty = false;
        Ok(())
    }

    /// The digests of the unchanged file at `path`, in the chunk size it
    /// was hashed in, unless the caller asks for another. A downloaded file
    /// is remembered in its swarm's chunk size: hashing it again in this
    /// peer's default would offer the tracker a layout it refuses.
    fn lookup(
        &self,
        path: &Path,
        name: &FileName,
        stamp: Stamp,
        chunk_size: Option<ChunkSize>,
    ) -> Option<Manifest> {
        let e = self.entries.get(path)?;
        let same = Stamp::of_parts(e.len, e.mtime, e.ino) == stamp
            && chunk_size.is_none_or(|c| c.get() == e.chunk_size);
        if !same {
            return None;
        }
        let layout = Layout::new(e.len, ChunkSize::new(u64::from(e.chunk_size)).ok()?).ok()?;
        // Re-validated: the chunk digests must still combine into the digest.
        Manifest::new(name.clone(), layout, e.chunks.clone(), e.digest).ok()
    }

    /// Remembers the digests of a file that now has `stamp`.
    pub fn store(&mut self, path: &Path, stamp: Stamp, m: &Manifest) {
        let (len, mtime, ino) = stamp.parts();
        self.entries.insert(
            path.to_owned(),
            CacheEntry {
                len,
                mtime,
                ino,
                chunk_size: m.layout().chunk_size().get(),
                digest: m.digest(),
                chunks: m.chunk_digests().to_vec(),
            },
        );
        self.dirty = true;
    }

    fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|p, _| keep(p));
        self.dirty |= self.entries.len() != before;
    }
}
