//! The journal's background tasks: checkpoints, which fold the log into
//! the store, and with [`Fsync::Always`] the fsyncs that answers wait for.

use std::{fs, path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Fsync, Shared, broken_error, files, io_err};
use crate::store::StoreError;

/// Checkpoints every `interval`, and early when the log grows large.
pub(super) async fn checkpoints(
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
pub(super) async fn checkpoint(shared: &Arc<Shared>) -> Result<(), StoreError> {
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
    let result: Result<Retired, StoreError> = async {
        let old = next_generation(shared, next).await?;
        fold(shared, &old, next - 1).await?;
        Ok(old)
    }
    .await;
    match result {
        Ok(old) => {
            debug!(changes = old.count, "checkpoint");
            shared.durable_upto(old.upto);
            Ok(())
        }
        Err(e) => {
            shared.fail(&e);
            Err(e)
        }
    }
}

/// A generation's file once the log has moved on to the next one.
struct Retired {
    path: PathBuf,
    /// The changes in it.
    count: usize,
    /// The records written up to its end, counted from the journal's start.
    upto: u64,
}

/// Creates generation `next`'s file and moves the log to it.
async fn next_generation(shared: &Shared, next: u64) -> Result<Retired, StoreError> {
    // Created before taking the lock that every request's write waits for.
    let dir = shared.dir.clone();
    let file = tokio::task::spawn_blocking(move || files::create_log(&dir, next))
        .await
        .unwrap_or_else(|e| Err(StoreError(format!("checkpoint task failed: {e}"))))?;
    // Only checkpoints change the generation, one at a time: it is still
    // `next - 1`, and the changes are at least those seen in `checkpoint`.
    let mut log = shared.lock();
    let retired = std::mem::replace(&mut log.file, Arc::new(file));
    if shared.fsync == Fsync::Always {
        log.retired.push(retired);
    }
    let path = files::log_path(&shared.dir, log.generation);
    log.generation = next;
    log.bytes = 0;
    log.dir_synced = false;
    Ok(Retired {
        path,
        count: std::mem::take(&mut log.changes),
        upto: log.records,
    })
}

/// Commits the changes in `old` to the store as `generation`, then deletes
/// its file.
async fn fold(shared: &Shared, old: &Retired, generation: u64) -> Result<(), StoreError> {
    let (store, dir) = (shared.store.clone(), shared.dir.clone());
    let (path, count) = (old.path.clone(), old.count);
    tokio::task::spawn_blocking(move || {
        // Every record of the old generation was written under the lock
        // before the swap in `next_generation`: the file is whole.
        let changes = files::read_back(&path, count)?;
        store.commit(&changes, generation)?;
        // The store now says this generation is in, so a start skips it
        // even if this deletion does not last.
        fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        files::sync_dir(&dir)
    })
    .await
    .unwrap_or_else(|e| Err(StoreError(format!("checkpoint task failed: {e}"))))
}

/// [`Fsync::Always`]: fsyncs the log whenever records wait for it.
pub(super) async fn syncs(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), StoreError> {
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
            if dir_synced {
                Ok(())
            } else {
                files::sync_dir(&dir)
            }
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
