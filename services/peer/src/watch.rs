//! The watcher: keeps what is shared in step with the share directory.
//! Each pass (every `--watch-interval`):
//! - a shared file deleted, replaced or edited on disk since it was hashed
//!   is retired (no longer served, Status says why) and withdrawn from the
//!   tracker;
//! - a file in `--dir` that is not shared (new, or the new content of one
//!   retired) is hashed and shared; if the tracker refuses it, Status says
//!   so and it is not offered again until it changes. A file written to in
//!   the last interval waits for the next pass (a copy in progress), and
//!   names unshared by hand are left alone. Downloads land in `--dir` only
//!   once complete and already held, so their part files (in `.hive`) are
//!   never seen.
//!
//! It polls rather than using inotify (the `notify` crate): a pass costs a
//! stat per file, works on every filesystem (inotify misses changes made
//! over NFS and by other hosts), and one path handles start-up, events
//! missed while the daemon was busy, and renames alike. GetChunk checks the
//! file itself before serving, so nothing stale is served between passes.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use hive::FileName;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    error::PeerError,
    holdings::{Holdings, OnDisk, Stamp},
    scan::STATE_DIR,
    share::{Sharing, Unshared},
};

/// Watches `dir` until `stop`; does nothing if `interval` is zero.
pub async fn run(
    sharing: Sharing,
    dir: PathBuf,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), PeerError> {
    if interval.is_zero() {
        return Ok(());
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        retire_changed(&sharing).await?;
        share_new(&sharing, &dir, interval).await?;
    }
}

/// Retires and withdraws every shared file no longer as it was hashed.
async fn retire_changed(sharing: &Sharing) -> Result<(), PeerError> {
    let holdings = sharing.holdings().clone();
    let changed = blocking(move || {
        holdings
            .complete_files()
            .into_iter()
            .map(|name| (holdings.on_disk(&name), name))
            .filter(|(d, _)| *d != OnDisk::Same)
            .collect::<Vec<_>>()
    })
    .await?;
    for (what, name) in changed {
        if !sharing.holdings().retire(&name, what.reason(), false) {
            continue;
        }
        warn!(file = %name, "{}; no longer shared", what.reason());
        if let Err(e) = sharing.link().withdraw(&name).await {
            warn!(file = %name, error = %e, "the tracker will hear of it when it answers");
        }
    }
    Ok(())
}

/// Shares the files of `dir` that are not shared and have settled.
async fn share_new(sharing: &Sharing, dir: &Path, settle: Duration) -> Result<(), PeerError> {
    let (holdings, unshared, root) = (
        sharing.holdings().clone(),
        sharing.unshared().clone(),
        dir.to_owned(),
    );
    let new = blocking(move || candidates(&root, &holdings, &unshared, settle)).await?;
    for path in new {
        let s = sharing.clone();
        let hashed = blocking(move || s.hash(&path)).await?;
        let found = match hashed {
            Ok(f) => f,
            Err(e) => {
                debug!(error = %e, "not shared");
                continue;
            }
        };
        let (manifest, path, stamp) = (found.manifest.clone(), found.path.clone(), found.stamp);
        match sharing.share_found(vec![found]).await {
            Ok(_) => info!(file = %manifest.name(), "new in the share directory; shared"),
            Err(e) if refused(&e) => {
                warn!(file = %manifest.name(), error = %e, "the tracker refused this file; not shared");
                sharing
                    .holdings()
                    .refused(manifest, path, stamp, &e.to_string());
            }
            // The tracker is down: tried again at the next pass.
            Err(e) => debug!(file = %manifest.name(), error = %e, "not shared yet"),
        }
    }
    Ok(())
}

/// A refusal the tracker will repeat (a name taken, a file refused, a
/// catalog quota), not a failure to reach it: recorded, not retried every
/// pass.
fn refused(e: &PeerError) -> bool {
    crate::tracker_link::refusal(e)
}

/// Regular files directly in `root` (links only if they stay inside it),
/// not held, not unshared by hand, not refused as they are now, and not
/// modified within `settle` (blocking).
fn candidates(
    root: &Path,
    holdings: &Holdings,
    unshared: &Unshared,
    settle: Duration,
) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let settled_before = SystemTime::now() - settle;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let raw = entry.file_name();
        let Some(name) = raw.to_str().and_then(|s| FileName::new(s).ok()) else {
            continue;
        };
        if raw == STATE_DIR || holdings.holding(&name).is_some() || unshared.contains(&name) {
            continue;
        }
        let Ok(path) = entry.path().canonicalize() else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let settled = meta.modified().is_ok_and(|m| m <= settled_before);
        if !path.starts_with(root)
            || !meta.is_file()
            || !settled
            || holdings.retired_as(&path, Stamp::of(&meta))
        {
            continue;
        }
        out.push(path);
    }
    out.sort();
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PeerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PeerError::Internal(format!("watcher task failed: {e}")))
}
