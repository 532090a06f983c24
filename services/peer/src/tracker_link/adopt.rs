//! A copy refused in its own chunk size joins the swarm in the swarm's.
//!
//! The tracker refuses a file whose content it knows in another chunk size
//! (the whole-file digest does not depend on it). The session reports such
//! a refusal here; this task hashes the file again in the swarm's chunk size
//! and replaces it in the holdings. That change is published like any other,
//! and the session registers the file when it hears of it: nothing calls
//! back into the session.

use std::sync::{Arc, Mutex, PoisonError};

use hive::FileName;
use tokio::sync::mpsc;
use tracing::warn;

use super::{Trackers, locate};
use crate::{
    error::PeerError,
    holdings::{Holdings, Kind},
    scan::{self, HashCache},
};

/// Adopts the swarm's layout for each refused file, one at a time, until
/// the session is gone.
pub async fn run(
    trackers: Trackers,
    holdings: Holdings,
    cache: Arc<Mutex<HashCache>>,
    mut refused: mpsc::UnboundedReceiver<FileName>,
) -> Result<(), PeerError> {
    while let Some(name) = refused.recv().await {
        if let Err(e) = adopt(&trackers, &holdings, &cache, name.clone()).await {
            warn!(file = %name, error = %e, "cannot take the swarm's chunk size");
        }
    }
    Ok(())
}

/// If the tracker knows `name` as the same content in another chunk size,
/// hashes the file again in that size and puts it in the holdings.
async fn adopt(
    trackers: &Trackers,
    holdings: &Holdings,
    cache: &Arc<Mutex<HashCache>>,
    name: FileName,
) -> Result<(), PeerError> {
    let Some((ours, _, Kind::Complete)) = holdings.holding(&name) else {
        return Ok(());
    };
    // Only the manifest is needed.
    let theirs = locate::locate(trackers, &name, None, 1, None)
        .await?
        .manifest;
    if theirs.digest() != ours.digest()
        || theirs.size() != ours.size()
        || theirs.layout() == ours.layout()
    {
        return Ok(());
    }
    let Some((_, path)) = holdings.file(&name) else {
        return Ok(());
    };
    let chunk_size = theirs.layout().chunk_size();
    let cache = cache.clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
        let found = scan::hash_path(&path, name, Some(chunk_size), &mut cache);
        if let Err(e) = cache.save() {
            warn!(error = %e, "cannot save the hash cache");
        }
        found
    })
    .await
    .map_err(|e| PeerError::Internal(format!("hashing task failed: {e}")))?
    .map_err(|e| PeerError::Internal(e.to_string()))?;
    if *found.manifest != theirs {
        warn!(file = %theirs.name(), "the file changed on disk; not shared");
        return Ok(());
    }
    holdings.insert_complete(found.manifest, found.path, found.file, found.stamp)
}
