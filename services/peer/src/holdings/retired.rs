//! Files no longer served: deleted, replaced or edited on disk since they
//! were hashed, or refused by the tracker. Each is dropped from what is
//! served (the tracker hears it withdrawn, like any removal) and kept here
//! with the reason, so Status tells the truth about it.

use std::{path::PathBuf, sync::Arc};

use hive::{ChunkSet, FileName, Manifest};

use super::{FileView, Holdings, HoldingsChange, Kind, Stamp};

/// Why a file is no longer served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// The tracker refused it (else it is gone or changed on disk).
    pub refused: bool,
    pub reason: String,
}

/// What a complete file's path holds now, against what was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisk {
    /// As hashed (or not a complete file: part files are hive's own).
    Same,
    Deleted,
    /// Another file now lies at the path (renamed over it).
    Replaced,
    /// Edited in place: another size or mtime.
    Edited,
}

impl OnDisk {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Same => "unchanged",
            Self::Deleted => "deleted from disk",
            Self::Replaced => "replaced on disk",
            Self::Edited => "edited on disk",
        }
    }
}

impl Holdings {
    /// Compares the complete file `name` with its path on disk now
    /// (blocking: one stat).
    pub fn on_disk(&self, name: &FileName) -> OnDisk {
        let Some((path, Some(stamp))) = self
            .lock()
            .files
            .get(name)
            .filter(|e| e.kind == Kind::Complete)
            .map(|e| (e.path.clone(), e.stamp))
        else {
            return OnDisk::Same;
        };
        match std::fs::metadata(&path) {
            Err(_) => OnDisk::Deleted,
            Ok(meta) => {
                let now = Stamp::of(&meta);
                if now == stamp {
                    OnDisk::Same
                } else if now.parts().2 != stamp.parts().2 {
                    OnDisk::Replaced
                } else {
                    OnDisk::Edited
                }
            }
        }
    }

    /// Checks `name` on disk and retires it if it was deleted or replaced;
    /// returns whether it is still served (blocking). A file edited in
    /// place stays: each chunk served from it is verified first (see
    /// [`super::ChunkSource::changed`]), and the watcher hashes it again.
    pub fn check(&self, name: &FileName) -> bool {
        match self.on_disk(name) {
            OnDisk::Same | OnDisk::Edited => true,
            other => {
                self.retire(name, other.reason(), false);
                false
            }
        }
    }

    /// Stops serving `name` and remembers why. Returns whether it was held.
    pub fn retire(&self, name: &FileName, reason: &str, refused: bool) -> bool {
        let mut index = self.lock();
        let Some(e) = index.files.remove(name) else {
            return false;
        };
        index.publish(HoldingsChange::Removed {
            name: name.clone(),
            had: e.have.clone(),
        });
        let view = FileView {
            manifest: e.manifest,
            have: ChunkSet::empty(0),
            kind: e.kind,
            path: e.path,
            downloading: false,
            retired: Some(Retired {
                refused,
                reason: reason.to_owned(),
            }),
        };
        index.retired.insert(name.clone(), (view, e.stamp));
        true
    }

    /// Records a file that was never served: the tracker refused it.
    pub fn refused(&self, manifest: Arc<Manifest>, path: PathBuf, stamp: Stamp, reason: &str) {
        let view = FileView {
            manifest: manifest.clone(),
            have: ChunkSet::empty(0),
            kind: Kind::Complete,
            path,
            downloading: false,
            retired: Some(Retired {
                refused: true,
                reason: reason.to_owned(),
            }),
        };
        self.lock()
            .retired
            .insert(manifest.name().clone(), (view, Some(stamp)));
    }

    /// Forgets a retired file (unshared); returns whether it was one.
    pub fn forget_retired(&self, name: &FileName) -> bool {
        self.lock().retired.remove(name).is_some()
    }

    /// Whether `path` was retired as it is now (`stamp`): nothing new to
    /// share there.
    pub fn retired_as(&self, path: &std::path::Path, stamp: Stamp) -> bool {
        self.lock()
            .retired
            .values()
            .any(|(v, s)| v.path == path && *s == Some(stamp))
    }

    /// Every complete file held, with its path: what the watcher checks.
    pub fn complete_files(&self) -> Vec<FileName> {
        self.lock()
            .files
            .iter()
            .filter(|(_, e)| e.kind == Kind::Complete && e.stamp.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }
}
