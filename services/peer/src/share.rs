//! Sharing files by path (`peerctl share`): each is hashed (through the hash
//! cache), checked against what this peer shares already, and registered
//! with the tracker, which adds it to the holdings once accepted. Only
//! files under the share roots (`--dir`, `--share-root`) are shared: a path
//! is resolved with every link first, so none leads out of them.
//!
//! Unsharing (`peerctl unshare`) stops serving a file and withdraws it from
//! the tracker; the name is remembered (`.hive/unshared.json`) so that
//! neither a restart nor the watcher shares it again until it is shared by
//! hand.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use hive::{ChunkSet, ChunkSize, FileName};
use tracing::{info, warn};

use crate::{
    error::PeerError,
    holdings::{FileView, Holdings, Kind},
    scan::{self, Found, HashCache},
    tracker_link::TrackerLink,
};

/// The share operation and what it needs: a cheap, shared handle.
#[derive(Clone)]
pub struct Sharing {
    holdings: Holdings,
    link: TrackerLink,
    cache: Arc<Mutex<HashCache>>,
    /// Canonical share roots: `--dir` first, then each `--share-root`.
    roots: Arc<Vec<PathBuf>>,
    unshared: Unshared,
}

impl Sharing {
    pub fn new(
        holdings: Holdings,
        link: TrackerLink,
        cache: Arc<Mutex<HashCache>>,
        roots: Vec<PathBuf>,
        unshared: Unshared,
    ) -> Self {
        Self {
            holdings,
            link,
            cache,
            roots: Arc::new(roots),
            unshared,
        }
    }

    pub fn holdings(&self) -> &Holdings {
        &self.holdings
    }

    pub fn link(&self) -> &TrackerLink {
        &self.link
    }

    pub fn unshared(&self) -> &Unshared {
        &self.unshared
    }

    /// Stops serving `name` and withdraws it from the tracker; the file
    /// stays on disk and is not shared again until shared by hand.
    pub async fn unshare(&self, name: &FileName) -> Result<(), PeerError> {
        let held = self.holdings.holding(name).is_some();
        let retired = self.holdings.forget_retired(name);
        if !held && !retired {
            return Err(PeerError::NotFound(format!(
                "{name:?} is not shared here; see peerctl status"
            )));
        }
        self.holdings.remove(name);
        self.unshared.insert(name);
        info!(file = %name, "unshared");
        self.link.withdraw(name).await
    }

    /// Shares the files at `paths`, hashed in `chunk_size` (the default if
    /// `None`): all of them or, on the first that cannot be shared, none.
    /// Returns them as they are now held.
    pub async fn share(
        &self,
        paths: Vec<PathBuf>,
        chunk_size: Option<ChunkSize>,
    ) -> Result<Vec<FileView>, PeerError> {
        if paths.is_empty() {
            return Err(PeerError::Invalid("no paths to share".into()));
        }
        let (cache, roots) = (self.cache.clone(), self.roots.clone());
        let found =
            tokio::task::spawn_blocking(move || hash_all(&paths, &roots, chunk_size, &cache))
                .await
                .map_err(|e| PeerError::Internal(format!("hashing task failed: {e}")))??;
        self.share_found(found).await
    }

    /// Shares files hashed already (all or none); see [`Sharing::share`].
    pub async fn share_found(&self, found: Vec<Found>) -> Result<Vec<FileView>, PeerError> {
        let files = found.iter().map(held).collect();
        for f in &found {
            if let Some((m, _, _)) = self.holdings.holding(f.manifest.name())
                && m.digest() != f.manifest.digest()
            {
                return Err(PeerError::Exists(format!(
                    "{:?} is already shared here with other content",
                    f.manifest.name()
                )));
            }
        }
        let names: Vec<FileName> = found.iter().map(|f| f.manifest.name().clone()).collect();
        self.link.share(found).await?;
        for name in &names {
            self.unshared.remove(name);
        }
        Ok(files)
    }

    /// The share roots, canonical.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Hashes the file at `path` (blocking, through the cache).
    pub fn hash(&self, path: &Path) -> Result<Found, PeerError> {
        hash_all(&[path.to_owned()], &self.roots, None, &self.cache).map(|mut v| v.remove(0))
    }
}

/// Names unshared by hand, saved in `.hive/unshared.json`.
#[derive(Clone)]
pub struct Unshared {
    path: PathBuf,
    names: Arc<Mutex<BTreeSet<FileName>>>,
}

impl Unshared {
    /// The set saved in `state_dir`; empty if missing or unreadable.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join("unshared.json");
        let names = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| FileName::new(n).ok())
            .collect();
        Self {
            path,
            names: Arc::new(Mutex::new(names)),
        }
    }

    pub fn contains(&self, name: &FileName) -> bool {
        self.lock().contains(name)
    }

    fn insert(&self, name: &FileName) {
        let mut names = self.lock();
        if names.insert(name.clone()) {
            self.save(&names);
        }
    }

    fn remove(&self, name: &FileName) {
        let mut names = self.lock();
        if names.remove(name) {
            self.save(&names);
        }
    }

    fn save(&self, names: &BTreeSet<FileName>) {
        let list: Vec<&str> = names.iter().map(FileName::as_str).collect();
        let write = serde_json::to_vec(&list)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&self.path, b));
        if let Err(e) = write {
            warn!(path = %self.path.display(), error = %e, "cannot save the unshared files");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<FileName>> {
        // Each change is one insert or remove; poison cannot tear the set.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A file just hashed, as it is held once shared.
fn held(f: &Found) -> FileView {
    FileView {
        manifest: f.manifest.clone(),
        have: ChunkSet::full(f.manifest.chunk_count()),
        kind: Kind::Complete,
        path: f.path.clone(),
        downloading: false,
        retired: None,
    }
}

/// Hashes every path, or fails on the first that cannot be shared.
fn hash_all(
    paths: &[PathBuf],
    roots: &[PathBuf],
    chunk_size: Option<ChunkSize>,
    cache: &Mutex<HashCache>,
) -> Result<Vec<Found>, PeerError> {
    // Hashing holds the cache lock: shares are rare, and this keeps one
    // consistent cache file.
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let mut found: Vec<Found> = Vec::new();
    for raw in paths {
        let path = raw
            .canonicalize()
            .map_err(|e| PeerError::io(raw.display(), &e))?;
        if !roots.iter().any(|r| path.starts_with(r)) {
            return Err(PeerError::Denied(format!(
                "{} is outside the share roots ({}); the daemon shares only files under \
                 its --dir and each --share-root",
                raw.display(),
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let name = file_name_of(&path)?;
        if found.iter().any(|f| f.manifest.name() == &name) {
            return Err(PeerError::Invalid(format!("two paths named {name:?}")));
        }
        let f = scan::hash_path(&path, name, chunk_size, &mut cache).map_err(|e| match e {
            scan::ScanError::NotRegular(p) => {
                PeerError::Invalid(format!("{}: not a regular file", p.display()))
            }
            scan::ScanError::BadName { reason, .. } => PeerError::Invalid(reason),
            scan::ScanError::Io { path, source } => PeerError::io(path.display(), &source),
        })?;
        found.push(f);
    }
    if let Err(e) = cache.save() {
        warn!(error = %e, "cannot save the hash cache");
    }
    Ok(found)
}

fn file_name_of(path: &Path) -> Result<FileName, PeerError> {
    let raw = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PeerError::Invalid(format!("{}: no usable file name", path.display())))?;
    FileName::new(raw).map_err(|e| PeerError::Invalid(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    //! The rules `share` decides before the tracker hears of anything; the
    //! tracker here is unreachable, so a share that got past them would fail
    //! otherwise.

    use std::{future::Future, time::Duration};

    use tempfile::TempDir;

    use super::*;
    use crate::{scan, tracker_link::Announce};

    fn sharing(dir: &TempDir) -> (Sharing, Holdings) {
        let holdings = Holdings::default();
        let cache = Arc::new(Mutex::new(HashCache::load(dir.path())));
        let announce = Announce {
            port: 1,
            host: String::new(),
        };
        // Nothing listens on port 1: a call that reaches the tracker fails.
        let link = TrackerLink::start(
            &["http://127.0.0.1:1".to_owned()],
            None,
            10,
            announce,
            holdings.clone(),
            cache.clone(),
        )
        .expect("a well-formed URL");
        let roots = vec![dir.path().canonicalize().unwrap()];
        let unshared = Unshared::load(dir.path());
        (
            Sharing::new(holdings.clone(), link, cache, roots, unshared),
            holdings,
        )
    }

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("share answered in time")
    }

    #[tokio::test]
    async fn sharing_nothing_is_invalid() {
        let tmp = TempDir::new().unwrap();
        let (sharing, _) = sharing(&tmp);
        let e = within(sharing.share(Vec::new(), None)).await.unwrap_err();
        assert!(matches!(e, PeerError::Invalid(_)), "{e:?}");
    }

    #[tokio::test]
    async fn two_paths_with_one_name_are_refused() {
        let tmp = TempDir::new().unwrap();
        let (sharing, holdings) = sharing(&tmp);
        let a = write(&tmp.path().join("a"), "same", b"one");
        let b = write(&tmp.path().join("b"), "same", b"two");
        let e = within(sharing.share(vec![a, b], None)).await.unwrap_err();
        assert!(matches!(e, PeerError::Invalid(_)), "{e:?}");
        assert!(holdings.list().is_empty());
    }

    #[tokio::test]
    async fn a_path_out_of_the_roots_is_denied_even_through_a_link() {
        let tmp = TempDir::new().unwrap();
        let outside = TempDir::new().unwrap();
        let (sharing, holdings) = sharing(&tmp);
        let secret = write(outside.path(), "secret", b"root's only");
        let e = within(sharing.share(vec![secret.clone()], None))
            .await
            .unwrap_err();
        assert!(matches!(e, PeerError::Denied(_)), "{e:?}");
        assert!(e.to_string().contains("--share-root"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = within(sharing.share(vec![link], None)).await.unwrap_err();
        assert!(matches!(e, PeerError::Denied(_)), "{e:?}");
        assert!(holdings.list().is_empty());
    }

    #[tokio::test]
    async fn a_directory_is_not_shared() {
        let tmp = TempDir::new().unwrap();
        let (sharing, _) = sharing(&tmp);
        let dir = tmp.path().join("folder");
        std::fs::create_dir(&dir).unwrap();
        let e = within(sharing.share(vec![dir], None)).await.unwrap_err();
        assert!(matches!(e, PeerError::Invalid(_)), "{e:?}");
    }

    #[tokio::test]
    async fn other_content_under_a_held_name_is_refused_and_the_held_file_stays() {
        let tmp = TempDir::new().unwrap();
        let (sharing, holdings) = sharing(&tmp);
        let held = write(&tmp.path().join("held"), "f.txt", b"the held content");
        let mut cache = HashCache::load(tmp.path());
        let name = FileName::new("f.txt").unwrap();
        let f = scan::hash_path(&held, name.clone(), None, &mut cache).unwrap();
        let digest = f.manifest.digest();
        holdings
            .insert_complete(f.manifest, f.path, f.file, f.stamp)
            .unwrap();

        let other = write(&tmp.path().join("new"), "f.txt", b"other content");
        let e = within(sharing.share(vec![other], None)).await.unwrap_err();
        assert!(matches!(e, PeerError::Exists(_)), "{e:?}");
        let (m, _, kind) = holdings.holding(&name).expect("still held");
        assert_eq!((m.digest(), kind), (digest, Kind::Complete));
    }
}
