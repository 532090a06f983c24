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

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, warn};

use crate::{
    codec,
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

const HEADER: usize = 12;

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
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let checkpointed = store.checkpointed()?;
        let (done, generations): (Vec<_>, Vec<_>) = generations(dir)?
            .into_iter()
            .partition(|&(g, _)| checkpointed.is_some_and(|c| g <= c));
        // Already in the store: their deletion did not last (a crash or a
        // power cut came first). Replaying them again could bring back
        // values that later generations changed.
        for (_, path) in &done {
            fs::remove_file(path).map_err(|e| io_err(path, e))?;
        }
        let mut changes = Vec::new();
        for (i, (_, path)) in generations.iter().enumerate() {
            if !replay(path, &mut changes)? {
                let later = generations.len() - i - 1;
                if later > 0 {
                    error!(
                        files = later,
                        "journal files after a damaged record are dropped too: the log ends there"
                    );
                }
                break;
            }
        }
        let last = generations.last().map(|&(g, _)| g);
        if let Some(last) = last {
            // Even with no changes: the files are done with, whatever
            // becomes of their deletion.
            store.commit(&changes, last)?;
            debug!(changes = changes.len(), "journal replayed into the store");
        }
        for (_, path) in &generations {
            fs::remove_file(path).map_err(|e| io_err(path, e))?;
        }
        // Past every generation seen, so that none is taken for done.
        let generation = last.max(checkpointed).map_or(0, |g| g + 1);
        let file = create_log(dir, generation)?;
        sync_dir(dir)?;

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
        log.buf.clear();
        log.buf.extend_from_slice(&[0; HEADER]);
        codec::encode_changes(changes, &mut log.buf);
        let Ok(len) = u32::try_from(log.buf.len() - HEADER) else {
            // A request is at most a few MiB: this cannot be reached. The
            // registry has changed, though, so fail-stop like any failure.
            let e = StoreError("a journal record over 4 GiB".into());
            shared.fail(&e);
            return Pending(Wait::Done(Err(e)));
        };
        let check = blake3::hash(&log.buf[HEADER..]);
        log.buf[..4].copy_from_slice(&len.to_le_bytes());
        log.buf[4..HEADER].copy_from_slice(&check.as_bytes()[..8]);
        if let Err(e) = (&*log.file).write_all(&log.buf) {
            let e = io_err(&log_path(&shared.dir, log.generation), e);
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

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}.log"))
}

fn create_log(dir: &Path, generation: u64) -> Result<File, StoreError> {
    let path = log_path(dir, generation);
    File::options()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// The log files in `dir`, oldest first.
fn generations(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("journal-")?.strip_suffix(".log"))
            .and_then(|g| g.parse::<u64>().ok());
        if let Some(generation) = generation {
            found.push((generation, path));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Appends the changes logged in `path` to `changes`; false if the file
/// ends in a record that cannot be read, where the log then ends.
fn replay(path: &Path, changes: &mut Vec<Change>) -> Result<bool, StoreError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let (records, good) = decode_records(&bytes, changes);
    if good == bytes.len() {
        return Ok(true);
    }
    warn!(
        file = %path.display(),
        records,
        dropped_bytes = bytes.len() - good,
        "the journal ends in a record cut short or damaged (the tracker died writing it, \
         before answering, or the disk lost it); what follows is dropped"
    );
    Ok(false)
}

/// The `count` changes this run logged in `path`, all of them, or an error.
fn read_back(path: &Path, count: usize) -> Result<Vec<Change>, StoreError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let mut changes = Vec::with_capacity(count);
    let (_, good) = decode_records(&bytes, &mut changes);
    if good != bytes.len() || changes.len() != count {
        return Err(StoreError(format!(
            "{}: read back {} of the {count} changes written",
            path.display(),
            changes.len()
        )));
    }
    Ok(changes)
}

/// Decodes whole, intact records from the start of `bytes` into `changes`;
/// returns how many, and how many bytes they took.
fn decode_records(mut bytes: &[u8], changes: &mut Vec<Change>) -> (usize, usize) {
    let (mut records, mut good) = (0, 0);
    while let Some((header, rest)) = bytes.split_first_chunk::<HEADER>() {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let Some((payload, rest)) = rest.split_at_checked(len) else {
            break;
        };
        if blake3::hash(payload).as_bytes()[..8] != header[4..] {
            break;
        }
        let Some(decoded) = codec::decode_changes(payload) else {
            break;
        };
        changes.extend(decoded);
        records += 1;
        good += HEADER + len;
        bytes = rest;
    }
    (records, good)
}

/// Checkpoints every `interval`, and early when the log grows large.
async fn checkpoints(
    shared: Arc<Shared>,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = shared.broken.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            () = shared.checkpoint_wanted.notified() => {}
        }
        checkpoint(&shared).await?;
    }
}

/// Starts a new generation, commits the old one's changes to the store, and
/// deletes its file.
async fn checkpoint(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let _one_at_a_time = shared.checkpointing.lock().await;
    if shared.broken.is_cancelled() {
        return Err(broken_error());
    }
    let next = {
        let log = shared.lock();
        if log.changes == 0 {
            return Ok(());
        }
        log.generation + 1
    };
    // Created before taking the lock that every request's write waits for.
    let dir = shared.dir.clone();
    let file = tokio::task::spawn_blocking(move || create_log(&dir, next))
        .await
        .unwrap_or_else(|e| Err(StoreError(format!("checkpoint task failed: {e}"))));
    let file = match file {
        Ok(file) => Arc::new(file),
        Err(e) => {
            shared.fail(&e);
            return Err(e);
        }
    };
    // Only checkpoints change the generation, one at a time: it is still
    // `next - 1`, and the changes are at least those seen above.
    let (count, old, upto) = {
        let mut log = shared.lock();
        let retired = std::mem::replace(&mut log.file, file);
        if shared.fsync == Fsync::Always {
            log.retired.push(retired);
        }
        let old = log_path(&shared.dir, log.generation);
        log.generation = next;
        log.bytes = 0;
        log.dir_synced = false;
        let count = std::mem::take(&mut log.changes);
        (count, old, log.records)
    };
    let (store, dir) = (shared.store.clone(), shared.dir.clone());
    let result = tokio::task::spawn_blocking(move || {
        // Every record of the old generation was written under the lock
        // before the swap above: the file is whole.
        let changes = read_back(&old, count)?;
        store.commit(&changes, next - 1)?;
        // The store now says this generation is in, so a start skips it
        // even if this deletion does not last.
        fs::remove_file(&old).map_err(|e| io_err(&old, e))?;
        sync_dir(&dir)
    })
    .await
    .unwrap_or_else(|e| Err(StoreError(format!("checkpoint task failed: {e}"))));
    if let Err(e) = result {
        shared.fail(&e);
        return Err(e);
    }
    debug!(changes = count, "checkpoint");
    shared.durable_upto(upto);
    Ok(())
}

/// [`Fsync::Always`]: fsyncs the log whenever records wait for it.
async fn syncs(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), StoreError> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = shared.broken.cancelled() => return Ok(()),
            () = shared.sync_wanted.notified() => {}
        }
        let (file, retired, upto, generation, dir_synced) = {
            let mut log = shared.lock();
            (
                log.file.clone(),
                std::mem::take(&mut log.retired),
                log.records,
                log.generation,
                log.dir_synced,
            )
        };
        if upto <= *shared.durable.borrow() {
            continue;
        }
        let dir = shared.dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            for f in retired.iter().chain([&file]) {
                f.sync_data()
                    .map_err(|e| StoreError(format!("journal fsync: {e}")))?;
            }
            if dir_synced { Ok(()) } else { sync_dir(&dir) }
        })
        .await
        .unwrap_or_else(|e| Err(StoreError(format!("fsync task failed: {e}"))));
        if let Err(e) = result {
            shared.fail(&e);
            return Err(e);
        }
        if !dir_synced {
            let mut log = shared.lock();
            if log.generation == generation {
                log.dir_synced = true;
            }
        }
        shared.durable_upto(upto);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{codec::tests::every_kind, registry::Catalog};

    /// Keeps every change it is given, in order; fails every commit after
    /// the first `ok`.
    #[derive(Default)]
    struct Recording {
        changes: Mutex<Vec<Change>>,
        generation: Mutex<Option<u64>>,
        commits: AtomicUsize,
        ok: Option<usize>,
    }

    impl Store for Recording {
        fn load(&self) -> Result<Catalog, StoreError> {
            Ok(Catalog::default())
        }

        fn commit(&self, changes: &[Change], generation: u64) -> Result<(), StoreError> {
            let n = self.commits.fetch_add(1, Ordering::SeqCst);
            if self.ok.is_some_and(|ok| n >= ok) {
                return Err(StoreError("disk gone".into()));
            }
            self.changes.lock().unwrap().extend_from_slice(changes);
            *self.generation.lock().unwrap() = Some(generation);
            Ok(())
        }

        fn checkpointed(&self) -> Result<Option<u64>, StoreError> {
            Ok(*self.generation.lock().unwrap())
        }
    }

    impl Recording {
        fn changes(&self) -> Vec<Change> {
            self.changes.lock().unwrap().clone()
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    fn options(fsync: Fsync) -> Options {
        Options {
            fsync,
            // Checkpoints only when a test asks for one.
            checkpoint_interval: Duration::from_secs(3600),
        }
    }

    fn open(dir: &Path, store: &Arc<Recording>) -> Journal {
        Journal::open(dir, store.clone(), options(Fsync::Periodic)).unwrap()
    }

    /// Logs each change of `changes` as a request of its own.
    async fn submit_each(journal: &Journal, changes: &[Change]) {
        for change in changes {
            let pending = journal.submit(std::slice::from_ref(change));
            tokio::time::timeout(WAIT, pending.durable())
                .await
                .expect("answered")
                .expect("logged");
        }
    }

    fn logs(dir: &Path) -> Vec<(u64, u64)> {
        generations(dir)
            .unwrap()
            .into_iter()
            .map(|(g, path)| (g, fs::metadata(path).unwrap().len()))
            .collect()
    }

    #[tokio::test]
    async fn what_a_killed_tracker_logged_is_replayed_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = Arc::new(Recording::default());
        let journal = open(dir.path(), &first);
        submit_each(&journal, &every_kind()).await;
        // Gone without a checkpoint, as under kill -9: only the log has them.
        drop(journal);
        assert!(first.changes().is_empty());

        let second = Arc::new(Recording::default());
        let _journal = open(dir.path(), &second);
        assert_eq!(second.changes(), every_kind());
        // The replayed log is deleted; a new generation starts empty.
        assert_eq!(logs(dir.path()), vec![(1, 0)]);
    }

    #[tokio::test]
    async fn a_checkpoint_moves_the_log_into_the_store_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording::default());
        let journal = open(dir.path(), &store);
        let changes = every_kind();
        let (early, late) = changes.split_at(3);

        submit_each(&journal, early).await;
        journal.checkpoint().await.unwrap();
        assert_eq!(store.changes(), early);
        assert_eq!(logs(dir.path()), vec![(1, 0)]);

        submit_each(&journal, late).await;
        journal.checkpoint().await.unwrap();
        assert_eq!(store.changes(), changes);
        // Nothing new: no commit, no new generation.
        journal.checkpoint().await.unwrap();
        assert_eq!(store.commits.load(Ordering::SeqCst), 2);
        assert_eq!(logs(dir.path()), vec![(2, 0)]);
        drop(journal);

        // Everything was checkpointed: the next start replays nothing.
        let _journal = open(dir.path(), &store);
        assert_eq!(store.changes(), changes);
        assert_eq!(logs(dir.path()), vec![(3, 0)]);
    }

    #[tokio::test]
    async fn a_generation_the_store_has_is_never_replayed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording::default());
        let journal = open(dir.path(), &store);
        let changes = every_kind();
        submit_each(&journal, &changes).await;
        let logged = fs::read(log_path(dir.path(), 0)).unwrap();
        journal.checkpoint().await.unwrap();
        // A later change to the same key, in the next generation.
        let removed = Change::RemovePeer(crate::auth::PeerId::from_u64(7));
        submit_each(&journal, std::slice::from_ref(&removed)).await;
        drop(journal);

        // Generation 0 is back, whole or in part, as if its deletion had
        // not lasted through a power cut.
        for kept in [logged.len(), logged.len() / 2] {
            fs::write(log_path(dir.path(), 0), &logged[..kept]).unwrap();
            let before = store.changes().len();
            let _journal = open(dir.path(), &store);
            // Skipped and deleted; only what came after it is replayed.
            let replayed = store.changes()[before..].to_vec();
            let expected = if before == changes.len() {
                vec![removed.clone()]
            } else {
                Vec::new()
            };
            assert_eq!(replayed, expected, "kept {kept} bytes");
            assert!(logs(dir.path()).iter().all(|&(g, _)| g > 1));
        }
    }

    #[tokio::test]
    async fn the_log_ends_at_the_first_record_that_cannot_be_read() {
        let changes = every_kind();
        // Three generations of two records each, none checkpointed.
        let dir = tempfile::tempdir().unwrap();
        for (g, pair) in changes.chunks(2).enumerate() {
            let journal = open(dir.path(), &Arc::new(Recording::default()));
            submit_each(&journal, pair).await;
            // Left behind, as by a crash; kept aside so that the next open
            // does not replay it yet.
            drop(journal);
            fs::rename(
                log_path(dir.path(), 0),
                dir.path().join(format!("kept-{g}")),
            )
            .unwrap();
        }
        let restore = |dir: &Path| {
            for g in 0..3 {
                let kept = dir.join(format!("kept-{g}"));
                fs::copy(&kept, log_path(dir, g)).unwrap();
            }
        };
        let replayed = |dir: &Path| {
            let store = Arc::new(Recording::default());
            drop(open(dir, &store));
            assert!(generations(dir).unwrap().iter().all(|(g, _)| *g == 3));
            fs::remove_file(log_path(dir, 3)).unwrap();
            store.changes()
        };

        restore(dir.path());
        assert_eq!(replayed(dir.path()), changes, "intact");

        // The last record cut short, as by kill -9 in the middle of a write.
        restore(dir.path());
        let newest = log_path(dir.path(), 2);
        let len = fs::metadata(&newest).unwrap().len();
        File::options()
            .write(true)
            .open(&newest)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(replayed(dir.path()), changes[..5]);

        // A damaged byte in generation 1's second record: the log ends
        // there, and generation 2 is dropped with it.
        restore(dir.path());
        let middle = log_path(dir.path(), 1);
        let mut bytes = fs::read(&middle).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&middle, bytes).unwrap();
        assert_eq!(replayed(dir.path()), changes[..3]);
    }

    #[tokio::test]
    async fn a_failed_checkpoint_breaks_the_journal_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording {
            ok: Some(1),
            ..Recording::default()
        });
        let journal = open(dir.path(), &store);
        let changes = every_kind();
        submit_each(&journal, &changes[..1]).await;
        journal.checkpoint().await.unwrap();
        assert!(!journal.broken().is_cancelled());

        submit_each(&journal, &changes[1..2]).await;
        assert!(journal.checkpoint().await.is_err());
        tokio::time::timeout(WAIT, journal.broken().cancelled())
            .await
            .expect("the journal reports itself broken");
        // Nothing is accepted after the failure, and nothing more committed.
        let refused = journal.submit(&changes[2..3]);
        assert!(refused.durable().await.is_err());
        assert!(journal.checkpoint().await.is_err());
        assert_eq!(store.commits.load(Ordering::SeqCst), 2);
        // What failed to reach the store is still in the log for the next
        // start; the refused change is not.
        drop(journal);
        let next = Arc::new(Recording::default());
        let _journal = open(dir.path(), &next);
        assert_eq!(next.changes(), changes[1..2]);
    }

    #[tokio::test]
    async fn a_checkpoint_that_cannot_read_back_its_log_breaks_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording::default());
        let journal = open(dir.path(), &store);
        submit_each(&journal, &every_kind()[..2]).await;
        // The file loses its last record under the journal (a disk fault).
        let (_, path) = generations(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let e = journal.checkpoint().await.expect_err("a short log");
        assert!(
            e.to_string().contains("read back 1 of the 2 changes"),
            "{e}"
        );
        assert!(journal.broken().is_cancelled());
        assert_eq!(
            store.commits.load(Ordering::SeqCst),
            0,
            "nothing half-committed"
        );
    }

    /// Points the journal's current log at `path` (a device that fails
    /// writes or fsyncs), as a disk failing under it would.
    fn fail_log_with(journal: &Journal, path: &str) {
        let shared = &journal.handle.as_ref().unwrap().shared;
        shared.lock().file = Arc::new(File::options().write(true).open(path).unwrap());
    }

    #[tokio::test]
    async fn a_failed_write_refuses_its_request_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording::default());
        let journal = open(dir.path(), &store);
        let changes = every_kind();
        submit_each(&journal, &changes[..1]).await;
        fail_log_with(&journal, "/dev/full"); // ENOSPC
        assert!(journal.submit(&changes[1..2]).durable().await.is_err());
        assert!(journal.broken().is_cancelled());
        // Refused without touching the log, and never checkpointed.
        assert!(journal.submit(&changes[2..3]).durable().await.is_err());
        assert!(journal.checkpoint().await.is_err());
        assert_eq!(store.commits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn with_fsync_always_a_failed_fsync_is_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording::default());
        let journal = Journal::open(dir.path(), store.clone(), options(Fsync::Always)).unwrap();
        let durable = journal.handle.as_ref().unwrap().shared.durable.subscribe();
        let changes = every_kind();
        submit_each(&journal, &changes[..1]).await;
        fail_log_with(&journal, "/dev/null"); // writes, but fsync fails (EINVAL)
        let pending = journal.submit(&changes[1..2]);
        let answer = tokio::time::timeout(WAIT, pending.durable()).await;
        assert!(answer.expect("answered").is_err());
        assert!(journal.broken().is_cancelled());
        assert_eq!(*durable.borrow(), 1, "only the first request is durable");
        assert!(journal.submit(&changes[2..3]).durable().await.is_err());
    }

    #[tokio::test]
    async fn with_fsync_always_an_answer_waits_for_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Recording::default());
        let journal = Journal::open(dir.path(), store.clone(), options(Fsync::Always)).unwrap();
        let durable = journal.handle.as_ref().unwrap().shared.durable.subscribe();
        let changes = every_kind();
        // Many requests at once share fsyncs; each is answered only once
        // the durable count covers it.
        let pending: Vec<_> = changes
            .iter()
            .map(|c| journal.submit(std::slice::from_ref(c)))
            .collect();
        for p in pending {
            tokio::time::timeout(WAIT, p.durable())
                .await
                .expect("answered")
                .expect("fsynced");
        }
        assert_eq!(*durable.borrow(), changes.len() as u64);
        // Across a checkpoint too, into a new generation.
        journal.checkpoint().await.unwrap();
        submit_each(&journal, &changes[..1]).await;
        assert_eq!(*durable.borrow(), changes.len() as u64 + 1);
        assert_eq!(store.changes(), changes);
    }
}
