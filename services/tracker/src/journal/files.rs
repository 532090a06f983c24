//! The journal's files: one `journal-<generation>.log` per generation in
//! the data directory, how a start recovers the ones a previous run left,
//! and how a checkpoint reads its generation back.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use tracing::{debug, error, warn};

use super::{io_err, record};
use crate::{
    registry::Change,
    store::{Store, StoreError},
};

/// Replays the generations a previous run left in `dir` into `store` and
/// deletes them; returns the generation the new log starts.
pub(super) fn recover(dir: &Path, store: &dyn Store) -> Result<u64, StoreError> {
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
    let changes = replay_all(&generations)?;
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
    Ok(last.max(checkpointed).map_or(0, |g| g + 1))
}

/// The changes logged in `generations`, in order, up to the first record
/// that cannot be read: the log ends there.
fn replay_all(generations: &[(u64, PathBuf)]) -> Result<Vec<Change>, StoreError> {
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
    Ok(changes)
}

pub(super) fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}.log"))
}

pub(super) fn create_log(dir: &Path, generation: u64) -> Result<File, StoreError> {
    let path = log_path(dir, generation);
    File::options()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// The log files in `dir`, oldest first.
pub(super) fn generations(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
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
    let (records, good) = record::decode(&bytes, changes);
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
pub(super) fn read_back(path: &Path, count: usize) -> Result<Vec<Change>, StoreError> {
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let mut changes = Vec::with_capacity(count);
    let (_, good) = record::decode(&bytes, &mut changes);
    if good != bytes.len() || changes.len() != count {
        return Err(StoreError(format!(
            "{}: read back {} of the {count} changes written",
            path.display(),
            changes.len()
        )));
    }
    Ok(changes)
}
