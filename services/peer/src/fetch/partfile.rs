//! A download on disk: the part file that chunks are written into, and the
//! resume state beside it. Both live in `.hive/partial/`, named after a hash
//! of the file's name (names may be as long as the file system allows).
//!
//! The resume state records the manifest and, as a hint, the chunks written.
//! Nothing in it is trusted: on resume every chunk is verified against the
//! manifest again, so a torn or garbage state costs time, never correctness.
//! A complete file only appears under its real name through [`PartFile::finish`]:
//! verify everything, fsync, rename, fsync the directory.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock, mpsc},
};

use bytes::Bytes;
use hive::{ChunkIndex, ChunkSet, ChunkSize, Digest, FileName, Layout, Manifest, digest};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::PeerError;

pub const PARTIAL_DIR: &str = "partial";

/// How a download was asked for, so a restart knows whether to continue it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The whole file is wanted; a restarted daemon carries on.
    Whole,
    /// Only chosen chunks (`fetch --chunk`); nothing more is fetched unasked.
    Chunks,
}

/// The resume state file, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    pub name: FileName,
    pub size: u64,
    pub chunk_size: u32,
    pub digest: Digest,
    pub chunk_digests: Vec<Digest>,
    pub mode: Mode,
    /// Stopped by the user: do not continue on restart.
    pub paused: bool,
    /// Chunks written (a hint).
    pub written: Vec<(u32, u32)>,
}

impl ResumeState {
    pub fn new(m: &Manifest, mode: Mode, written: &ChunkSet) -> Self {
        Self {
            name: m.name().clone(),
            size: m.size(),
            chunk_size: m.layout().chunk_size().get(),
            digest: m.digest(),
            chunk_digests: m.chunk_digests().to_vec(),
            mode,
            paused: false,
            written: written
                .ranges()
                .into_iter()
                .map(|r| (*r.start(), *r.end()))
                .collect(),
        }
    }

    /// The manifest it records, if it is a consistent one.
    pub fn manifest(&self) -> Option<Manifest> {
        let layout =
            Layout::new(self.size, ChunkSize::new(u64::from(self.chunk_size)).ok()?).ok()?;
        Manifest::new(
            self.name.clone(),
            layout,
            self.chunk_digests.clone(),
            self.digest,
        )
        .ok()
    }

    /// The chunks it claims were written.
    pub fn written(&self, universe: u32) -> ChunkSet {
        ChunkSet::from_ranges(universe, self.written.iter().map(|&(a, b)| a..=b))
            .unwrap_or_else(|_| ChunkSet::empty(universe))
    }
}

/// Where one download's resume state is saved.
#[derive(Debug, Clone)]
pub struct StateFile(PathBuf);

impl StateFile {
    /// Saves the resume state atomically (temp file, then rename). Not
    /// fsynced: the state is a hint, verified again on resume.
    pub fn save(&self, state: &ResumeState) -> Result<(), PeerError> {
        let tmp = self.0.with_extension("state.tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| PeerError::Internal(e.to_string()))?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.0))
            .map_err(|e| PeerError::io("saving resume state", &e))
    }
}

/// One download's files.
pub struct PartFile {
    pub path: PathBuf,
    state_path: PathBuf,
    pub file: Arc<File>,
    writer: OnceLock<Writer>,
}

/// Bytes written between two requests to start writeback.
const WRITEBACK_EVERY: u64 = 64 << 20;
/// Chunks queued for the writer before senders wait (asynchronously: a
/// disk slower than the network holds up the download, not the runtime).
const WRITE_QUEUE: usize = 32;

type WriteJob = (u64, Vec<Bytes>, oneshot::Sender<io::Result<()>>);

/// Writes a download's verified chunks on a thread of its own, so writes
/// never contend for the file. Every [`WRITEBACK_EVERY`] bytes a second
/// thread flushes what was written (fdatasync) while writing goes on, so
/// data streams to disk during the download and the final fsync has little
/// left. A failed flush fails every later write: an fsync error is never
/// retried into a success.
struct Writer {
    tx: tokio::sync::mpsc::Sender<WriteJob>,
    failed: Failed,
}

/// The first error the writer or flusher hit, if any.
type Failed = Arc<std::sync::Mutex<Option<(io::ErrorKind, String)>>>;

impl Writer {
    fn start(file: Arc<File>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteJob>(WRITE_QUEUE);
        let (flush_tx, flush_rx) = mpsc::sync_channel::<()>(1);
        let failed: Failed = Arc::default();
        let (f, failed_w, failed_f) = (file.clone(), failed.clone(), failed.clone());
        let writer = std::thread::Builder::new()
            .name("hive-writer".into())
            .spawn(move || {
                let mut unsynced = 0u64;
                while let Some((offset, pieces, ack)) = rx.blocking_recv() {
                    let result = match first_error(&failed_w) {
                        Some(e) => Err(e),
                        None => write_pieces(&f, offset, &pieces),
                    };
                    match &result {
                        Ok(()) => {
                            unsynced += pieces.iter().map(|p| p.len() as u64).sum::<u64>();
                            if unsynced >= WRITEBACK_EVERY {
                                unsynced = 0;
                                // One flush pending is enough; it covers this data too.
                                let _ = flush_tx.try_send(());
                            }
                        }
                        Err(e) => record(&failed_w, e),
                    }
                    let _ = ack.send(result);
                }
            });
        let flusher = std::thread::Builder::new()
            .name("hive-flusher".into())
            .spawn(move || {
                for () in flush_rx {
                    if let Err(e) = file.sync_data() {
                        record(&failed_f, &e);
                    }
                }
            });
        if let Err(e) = writer.and(flusher) {
            warn!(error = %e, "cannot start the writer threads");
        }
        Self { tx, failed }
    }
}

impl Writer {
    /// Waits (blocking) until every write queued so far is on the file.
    fn settle(&self) {
        let (ack, done) = oneshot::channel();
        // No pieces: the job writes nothing, but only after the ones before.
        if self.tx.blocking_send((0, Vec::new(), ack)).is_ok() {
            let _ = done.blocking_recv();
        }
    }
}

fn first_error(failed: &Failed) -> Option<io::Error> {
    let guard = failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard
        .as_ref()
        .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
}

fn record(failed: &Failed, e: &io::Error) {
    let mut guard = failed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.get_or_insert((e.kind(), e.to_string()));
}

fn write_pieces(file: &File, mut offset: u64, pieces: &[Bytes]) -> io::Result<()> {
    for piece in pieces {
        file.write_all_at(piece, offset)?;
        offset += piece.len() as u64;
    }
    Ok(())
}

/// The partial-download directory inside a peer's state directory.
pub fn partial_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(PARTIAL_DIR)
}

fn stem(name: &FileName) -> String {
    blake3::hash(name.as_str().as_bytes()).to_hex()[..32].to_owned()
}

impl PartFile {
    /// Opens the part file for `manifest`'s file, creating it (sparse, full
    /// length) if needed. Returns whether it already existed.
    pub fn open(state_dir: &Path, manifest: &Manifest) -> Result<(Self, bool), PeerError> {
        let dir = partial_dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| PeerError::io(dir.display(), &e))?;
        let stem = stem(manifest.name());
        let path = dir.join(format!("{stem}.part"));
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| PeerError::io(path.display(), &e))?;
        if file
            .metadata()
            .map_err(|e| PeerError::io(path.display(), &e))?
            .len()
            != manifest.size()
        {
            file.set_len(manifest.size())
                .map_err(|e| PeerError::io(path.display(), &e))?;
        }
        Ok((
            Self {
                state_path: dir.join(format!("{stem}.state")),
                path,
                file: Arc::new(file),
                writer: OnceLock::new(),
            },
            existed,
        ))
    }

    /// Whether a part file for `name` exists.
    pub fn exists(state_dir: &Path, name: &FileName) -> bool {
        partial_dir(state_dir)
            .join(format!("{}.part", stem(name)))
            .exists()
    }

    /// Removes the part file for `name` and its resume state, if any.
    pub fn discard(state_dir: &Path, name: &FileName) {
        let part = partial_dir(state_dir).join(format!("{}.part", stem(name)));
        if let Err(e) = std::fs::remove_file(&part)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(error = %e, path = %part.display(), "cannot remove part file");
        }
        Self::forget(state_dir, name);
    }

    /// Removes the resume state for `name`, if any.
    pub fn forget(state_dir: &Path, name: &FileName) {
        let path = partial_dir(state_dir).join(format!("{}.state", stem(name)));
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(error = %e, path = %path.display(), "cannot remove resume state");
        }
    }

    /// The saved resume state, if it is readable.
    pub fn state(&self) -> Option<ResumeState> {
        serde_json::from_slice(&std::fs::read(&self.state_path).ok()?).ok()
    }

    /// Reserves the whole file's space on disk (a real `fallocate`, so a
    /// disk without room fails now, not halfway). File systems that cannot
    /// preallocate are left sparse.
    pub fn reserve(&self, size: u64) -> Result<(), PeerError> {
        if size == 0 {
            return Ok(());
        }
        match rustix::fs::fallocate(&*self.file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT) => Err(PeerError::NoSpace(
                format!("no space left on device for {size} bytes"),
            )),
            Err(e) => {
                debug!(error = %e, "fallocate unsupported; the part file stays sparse");
                Ok(())
            }
        }
    }

    /// From now on, write chunks on a writer thread of their own, with
    /// writeback along the way (see [`Writer`]): for whole-file downloads.
    pub fn stream_writes(&self) {
        self.writer.get_or_init(|| Writer::start(self.file.clone()));
    }

    /// Writes a verified chunk (as received, in pieces) at `offset`: on the
    /// writer thread if [`PartFile::stream_writes`] was called, else at once
    /// (a single chunk is not worth starting threads for).
    pub async fn write(&self, offset: u64, pieces: Vec<Bytes>) -> Result<(), PeerError> {
        let Some(writer) = self.writer.get() else {
            let file = self.file.clone();
            return tokio::task::spawn_blocking(move || write_pieces(&file, offset, &pieces))
                .await
                .map_err(|e| PeerError::Internal(format!("write task failed: {e}")))?
                .map_err(|e| PeerError::io("writing a chunk", &e));
        };
        let (ack, done) = oneshot::channel();
        writer
            .tx
            .send((offset, pieces, ack))
            .await
            .map_err(|_| PeerError::Internal("the writer thread stopped".into()))?;
        done.await
            .map_err(|_| PeerError::Internal("the writer thread stopped".into()))?
            .map_err(|e| PeerError::io("writing a chunk", &e))
    }

    /// Saves the resume state (see [`StateFile::save`]).
    pub fn save_state(&self, state: &ResumeState) -> Result<(), PeerError> {
        self.state_file().save(state)
    }

    /// Where the resume state is saved, as a handle that outlives the part
    /// file's writer.
    pub fn state_file(&self) -> StateFile {
        StateFile(self.state_path.clone())
    }

    /// The chunks of the part file that match the manifest (blocking).
    /// `only` limits the check to chunks believed written; `None` checks
    /// every chunk, in parallel, in one pass.
    pub fn verify(&self, manifest: &Manifest, only: Option<&ChunkSet>) -> ChunkSet {
        let mut good = ChunkSet::empty(manifest.chunk_count());
        match only {
            None => match digest::hash_file(&self.file, manifest.layout()) {
                Ok(found) => {
                    for (chunk, (got, want)) in manifest
                        .layout()
                        .chunks()
                        .zip(found.chunks.iter().zip(manifest.chunk_digests()))
                    {
                        if got == want {
                            good.insert(chunk);
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, path = %self.path.display(), "cannot read the part file")
                }
            },
            Some(claimed) => {
                for chunk in claimed.iter() {
                    if self
                        .read_chunk(manifest, chunk)
                        .is_some_and(|d| manifest.verify_chunk(chunk, &d))
                    {
                        good.insert(chunk);
                    }
                }
            }
        }
        good
    }

    fn read_chunk(&self, manifest: &Manifest, chunk: ChunkIndex) -> Option<Vec<u8>> {
        let r = manifest.layout().range(chunk);
        let mut buf = vec![0; (r.end - r.start) as usize];
        self.file.read_exact_at(&mut buf, r.start).ok()?;
        Some(buf)
    }

    /// Makes the download its final file at `dest` (blocking): fsync the
    /// data, then rename into place and fsync the directory, so a file under
    /// its real name is always complete. Every chunk was verified against
    /// the manifest before it was written, and a manifest's chunk digests
    /// always combine into its file digest, so a full set of verified chunks
    /// is the file. With `reverify`, every chunk is also read back from disk
    /// and checked again; bad ones are returned (nothing is renamed) to be
    /// fetched again. An fsync failure fails the download; it is never
    /// retried.
    pub fn finish(
        &self,
        manifest: &Manifest,
        have: &ChunkSet,
        dest: &Path,
        force: bool,
        reverify: bool,
    ) -> Result<Result<(), ChunkSet>, PeerError> {
        if !have.is_full()
            || digest::file_digest(manifest.layout(), manifest.chunk_digests())
                != Some(manifest.digest())
        {
            return Err(PeerError::Internal(format!(
                "finishing {:?} with chunks missing",
                manifest.name()
            )));
        }
        // A write still queued (an end-game copy of a chunk held already)
        // lands before the fsync, never in the finished file after it has
        // been stamped: the watcher would take it for an edit.
        if let Some(w) = self.writer.get() {
            w.settle();
        }
        // A flush that failed during the download fails it now, even if
        // this fsync succeeds: the kernel may have dropped those pages.
        if let Some(e) = self.writer.get().and_then(|w| first_error(&w.failed)) {
            return Err(PeerError::io("writing the download", &e));
        }
        self.file
            .sync_all()
            .map_err(|e| PeerError::io("flushing the download to disk", &e))?;
        if reverify {
            let on_disk = digest::hash_file(&self.file, manifest.layout())
                .map_err(|e| PeerError::io("re-reading the download", &e))?;
            if on_disk.file != manifest.digest() {
                let mut bad = ChunkSet::empty(manifest.chunk_count());
                for (chunk, (got, want)) in manifest
                    .layout()
                    .chunks()
                    .zip(on_disk.chunks.iter().zip(manifest.chunk_digests()))
                {
                    if got != want {
                        bad.insert(chunk);
                    }
                }
                return Ok(Err(bad));
            }
        }
        if !force && dest.exists() {
            return Err(PeerError::Exists(format!(
                "{} exists; use --force to replace it",
                dest.display()
            )));
        }
        std::fs::rename(&self.path, dest).map_err(|e| PeerError::io(dest.display(), &e))?;
        // The rename is the commit point: the file under its name is whole
        // and flushed. A directory that cannot be flushed may lose the new
        // name in a crash, and the next start re-verifies what it finds;
        // failing a finished download here would leave it half-recorded.
        if let Some(dir) = dest.parent()
            && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
        {
            warn!(dir = %dir.display(), error = %e, "cannot flush the directory after the rename");
        }
        self.remove_state();
        Ok(Ok(()))
    }

    /// Forgets the resume state (the part file itself is gone or kept by the caller).
    pub fn remove_state(&self) {
        if let Err(e) = std::fs::remove_file(&self.state_path)
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(error = %e, path = %self.state_path.display(), "cannot remove resume state");
        }
    }
}

/// The resume states found in `state_dir`, with the part files they belong
/// to; unreadable states are reported and left for a later `fetch` of the
/// same name to re-verify.
pub fn saved_states(state_dir: &Path) -> Vec<ResumeState> {
    let dir = partial_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut states = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "state") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ResumeState>(&b).ok())
            .filter(|s| path.file_stem().and_then(|s| s.to_str()) == Some(stem(&s.name).as_str()));
        match parsed {
            Some(state) => states.push(state),
            None => {
                warn!(path = %path.display(), "unreadable resume state; a fetch of that file re-verifies its part file")
            }
        }
    }
    states
}

#[cfg(test)]
mod tests;
