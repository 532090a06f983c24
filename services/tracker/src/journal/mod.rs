//! The journal: how the registry's changes become durable without a store
//! commit (and its fsyncs) per request.
//!
//! Each request's changes are appended to a log file in the data directory
//! while the registry lock is held, so in the registry's order, with one
//! `write` and before the request is answered. From then on they survive a
//! crash or `kill -9` of the tracker: the kernel has them. Every
//! `checkpoint_interval`, a background task folds the log into the [`Store`]
//! (one fsynced commit) and deletes it. What a power cut or kernel crash can
//! take therefore depends on [`Fsync`]:
//! - [`Fsync::Periodic`] (the default) answers once the write returns; a power
//!   cut loses what was logged since the last checkpoint. Peers whose
//!   registration it took are answered NOT_FOUND at their next heartbeat and
//!   register again with everything they hold; chunks that other peers
//!   registered in that time stay unlisted until those peers register again.
//! - [`Fsync::Always`] answers only once an fsync of the log covers the
//!   request (one fsync for everything logged meanwhile): nothing
//!   acknowledged is lost, at the cost of waiting for the disk.
//!
//! # Files
//! `journal-<generation>.log`: records of `[payload length: u32 LE][the first
//! 8 bytes of the payload's BLAKE3][payload: changes, see `codec`]`. A
//! checkpoint starts a new generation, reads the old one's file back (from
//! the page cache: the log keeps no copy of its changes in memory, so a
//! replaced chunk set is freed at once, not a second later), commits its
//! changes to the store together with its number, and then deletes the file. At start,
//! generations the store has are deleted unread (their deletion did not
//! last), the others are replayed into the store in order, committed with the
//! last one's number, and deleted. The log ends at the first record that
//! cannot be read: one cut short was being written when the tracker died,
//! before its request was answered (or, with [`Fsync::Periodic`], a power
//! cut took it).
//!
//! # Failures
//! Fail-stop: once a write, fsync or commit fails, the registry in memory is
//! ahead of what is durable. The journal then refuses every change and
//! reports itself [`Journal::broken`], and the tracker stops, to start again
//! from what is durable (a failed fsync is never retried and taken for
//! success).
//!
//! # Layout
//! - this file: [`Journal`], its shared state, and [`Journal::submit`], the
//!   write every request's answer waits for.
//! - `record`: how a record is framed and read back.
//! - `files`: the generation files, and the recovery at start.
//! - `tasks`: the checkpoint and fsync tasks.

mod files;
mod record;
mod tasks;
#[cfg(test)]
mod tests;

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::error;

use self::tasks::{checkpoint, checkpoints, syncs};
use crate::{
    registry::Change,
    store::{Store, StoreError},
};

/// When an acknowledged change is on disk; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// Answer once the change is written to the log; fsync at checkpoints.
    Periodic,
    /// Answer once an fsync of the log covers the change.
    Always,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub fsync: Fsync,
    /// How often the log is folded into the store.
    pub checkpoint_interval: Duration,
}

/// A checkpoint starts early once the log holds this many bytes...
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// ...or this many changes, which bounds the time a checkpoint or a restart
/// spends replaying them.
const CHECKPOINT_CHANGES: usize = 100_000;

/// The ordered path from the registry to its store. Clones share one log.
#[derive(Clone)]
pub struct Journal {
    handle: Option<Arc<Handle>>,
    broken: CancellationToken,
}

/// Stops the background tasks once the last [`Journal`] clone is gone.
struct Handle {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

struct Shared {
    dir: PathBuf,
    store: Arc<dyn Store>,
    fsync: Fsync,
    log: Mutex<Log>,
    /// How many records are durable (counted from the journal's start).
    durable: watch::Sender<u64>,
    sync_wanted: Notify,
    checkpoint_wanted: Notify,
    /// One checkpoint at a time: generations reach the store in order.
    checkpointing: tokio::sync::Mutex<()>,
    broken: CancellationToken,
}

struct Log {
    file: Arc<File>,
    generation: u64,
    /// Records written since the journal started.
    records: u64,
    /// Bytes in this generation's file.
    bytes: u64,
    /// Changes in this generation's file: the next checkpoint's work.
    changes: usize,
    /// Earlier generations' files not yet fsynced ([`Fsync::Always`]).
    retired: Vec<Arc<File>>,
    /// Whether this generation's directory entry has been fsynced.
    dir_synced: bool,
    /// Reused for encoding records.
    buf: Vec<u8>,
}

/// The durability of one request's changes.
pub struct Pending(Wait);

enum Wait {
    Done(Result<(), StoreError>),
    Record {
        /// Durable once this many records are.
        upto: u64,
        durable: watch::Receiver<u64>,
        broken: CancellationToken,
    },
}

impl Journal {
    /// A journal that keeps nothing and never waits.
    pub fn volatile() -> Self {
        Self {
            handle: None,
            broken: CancellationToken::new(),
        }
    }

    /// Replays the logs a previous run left in `dir` into `store`, then
    /// starts a new log there and the background tasks (on the current tokio
    /// runtime). Load the catalog from `store` after this returns.
    pub fn open(dir: &Path, store: Arc<dyn Store>, options: Options) -> Result<Self, StoreError> {
        let generation = files::recover(dir, store.as_ref())?;
        let file = files::create_log(dir, generation)?;
        files::sync_dir(dir)?;

        let broken = CancellationToken::new();
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            store,
            fsync: options.fsync,
            log: Mutex::new(Log {
                file: Arc::new(file),
                generation,
                records: 0,
                bytes: 0,
                changes: 0,
                retired: Vec::new(),
                dir_synced: true,
                buf: Vec::new(),
            }),
            durable: watch::Sender::new(0),
            sync_wanted: Notify::new(),
            checkpoint_wanted: Notify::new(),
            checkpointing: tokio::sync::Mutex::new(()),
            broken: broken.clone(),
        });
        hive_runtime::task::spawn(
            "checkpoint",
            checkpoints(shared.clone(), options.checkpoint_interval, stop.clone()),
        );
        if options.fsync == Fsync::Always {
            hive_runtime::task::spawn("fsync", syncs(shared.clone(), stop.clone()));
        }
        Ok(Self {
            handle: Some(Arc::new(Handle {
                shared,
                _stop: stop.drop_guard(),
            })),
            broken,
        })
    }

    /// Cancelled once a write, fsync or commit has failed; nothing is
    /// accepted after it.
    pub fn broken(&self) -> &CancellationToken {
        &self.broken
    }

    /// Logs `changes`; call while holding the registry lock, so that the log
    /// keeps the registry's order.
    pub fn submit(&self, changes: &[Change]) -> Pending {
        let Some(handle) = self.handle.as_ref().filter(|_| !changes.is_empty()) else {
            return Pending(Wait::Done(Ok(())));
        };
        let shared = &handle.shared;
        if shared.broken.is_cancelled() {
            return Pending(Wait::Done(Err(broken_error())));
        }
        let mut log = shared.lock();
        let log = &mut *log;
        let written = record::encode(changes, &mut log.buf).and_then(|()| {
            (&*log.file)
                .write_all(&log.buf)
                .map_err(|e| io_err(&files::log_path(&shared.dir, log.generation), e))
        });
        if let Err(e) = written {
            shared.fail(&e);
            return Pending(Wait::Done(Err(e)));
        }
        log.records += 1;
        log.bytes += log.buf.len() as u64;
        log.changes += changes.len();
        if log.bytes >= CHECKPOINT_BYTES || log.changes >= CHECKPOINT_CHANGES {
            shared.checkpoint_wanted.notify_one();
        }
        match shared.fsync {
            Fsync::Periodic => Pending(Wait::Done(Ok(()))),
            Fsync::Always => {
                shared.sync_wanted.notify_one();
                Pending(Wait::Record {
                    upto: log.records,
                    durable: shared.durable.subscribe(),
                    broken: shared.broken.clone(),
                })
            }
        }
    }

    /// Points the current log at `path` (a device that fails writes, like
    /// /dev/full, or fsyncs, like /dev/null), as a disk failing under the
    /// journal would: the fault tests inject here.
    #[cfg(test)]
    pub(crate) fn fail_log_with(&self, path: &str) {
        let shared = &self.handle.as_ref().expect("a journal on disk").shared;
        shared.lock().file = Arc::new(File::options().write(true).open(path).unwrap());
    }

    /// Folds the log into the store now: for a graceful stop, so that the
    /// next start has nothing to replay.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        match &self.handle {
            Some(handle) => checkpoint(&handle.shared).await,
            None => Ok(()),
        }
    }
}

impl Pending {
    /// Waits until the changes are as durable as the journal makes them.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            Wait::Done(result) => result,
            Wait::Record {
                upto,
                mut durable,
                broken,
            } => tokio::select! {
                biased;
                done = durable.wait_for(|&d| d >= upto) => done.map(drop).map_err(|_| broken_error()),
                () = broken.cancelled() => Err(broken_error()),
            },
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Log> {
        // Every section under this lock leaves the log consistent.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, e: &StoreError) {
        if !self.broken.is_cancelled() {
            error!(error = %e, "the catalog could not be made durable; refusing every change from now on and stopping");
            self.broken.cancel();
        }
    }

    fn durable_upto(&self, upto: u64) {
        self.durable.send_if_modified(|d| {
            let newer = upto > *d;
            *d = (*d).max(upto);
            newer
        });
    }
}

fn broken_error() -> StoreError {
    StoreError("the catalog's storage failed; the tracker is stopping".into())
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError(format!("{}: {e}", path.display()))
}
