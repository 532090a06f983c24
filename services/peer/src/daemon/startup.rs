//! What the daemon does before it serves: the directories, the first scan
//! and the saved downloads, what to tell the tracker about its address, and
//! the health it reports while the tracker has it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use hive::ChunkSize;
use tonic_health::ServingStatus;
use tracing::warn;

use crate::{
    Config,
    error::PeerError,
    fetch,
    holdings::Holdings,
    scan::{self, HashCache, STATE_DIR},
    share::Unshared,
    tracker_link::{Announce, TrackerLink},
};

/// The share roots, canonical: `dir` (canonical already), then each
/// `--share-root`.
pub(super) fn share_roots(dir: &Path, extra: &[PathBuf]) -> Result<Vec<PathBuf>, PeerError> {
    let mut roots = vec![dir.to_owned()];
    for root in extra {
        let root = root
            .canonicalize()
            .map_err(|e| PeerError::Invalid(format!("--share-root {}: {e}", root.display())))?;
        roots.push(root);
    }
    Ok(roots)
}

/// Creates the share directory and `.hive` inside it; returns both, absolute.
pub(super) fn prepare_dirs(dir: &Path) -> Result<(PathBuf, PathBuf), PeerError> {
    std::fs::create_dir_all(dir.join(STATE_DIR)).map_err(|e| PeerError::io(dir.display(), &e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| PeerError::io(dir.display(), &e))?;
    let state_dir = dir.join(STATE_DIR);
    Ok((dir, state_dir))
}

/// Scans the share directory into `holdings` and loads saved downloads
/// (blocking); returns the hash cache and the downloads to resume.
pub(super) fn load(
    dir: &Path,
    state_dir: &Path,
    chunk_size: Option<ChunkSize>,
    holdings: &Holdings,
    unshared: &Unshared,
) -> Result<(HashCache, Vec<hive::FileName>), PeerError> {
    let mut cache = HashCache::load(state_dir);
    let mut found = scan::scan_dir(dir, chunk_size, &mut cache)
        .map_err(|e| PeerError::io(dir.display(), &e))?;
    found.retain(|f| !unshared.contains(f.manifest.name()));
    if let Err(e) = cache.save() {
        warn!(error = %e, "cannot save the hash cache");
    }
    for f in found {
        if let Err(e) = holdings.insert_complete(f.manifest, f.path, f.file, f.stamp) {
            warn!(error = %e, "skipped");
        }
    }
    let resume = fetch::load_saved(state_dir, holdings);
    Ok((cache, resume))
}

/// What to tell the tracker about where this peer serves.
pub(super) fn announce(config: &Config, public: SocketAddr) -> Result<Announce, PeerError> {
    let Some(adv) = &config.advertise else {
        return Ok(Announce {
            port: public.port(),
            host: String::new(),
        });
    };
    let (host, port) = adv
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|&p| p != 0)?)))
        .ok_or_else(|| PeerError::Invalid(format!("--advertise {adv:?}: expected HOST:PORT")))?;
    Ok(Announce {
        port,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    })
}

/// Health ("" on both ports) is SERVING while the tracker has accepted this
/// peer: that is when it is a working member of the swarm.
pub(super) async fn report_health(
    link: TrackerLink,
    reporters: Vec<tonic_health::server::HealthReporter>,
) -> Result<(), PeerError> {
    let mut sessions = link.sessions();
    loop {
        let status = if sessions.borrow_and_update().is_some() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for r in &reporters {
            r.set_service_status("", status).await;
        }
        if sessions.changed().await.is_err() {
            return Ok(());
        }
    }
}
