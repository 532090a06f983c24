//! The transfer table on disk: `.hive/transfers.json`, next to the part
//! files' resume states, written whole to a temporary file and renamed over
//! the old one, so a crash leaves either table, never half of one.
//!
//! A separate file rather than a field of each resume state: a queued
//! transfer has no part file yet, and a done one no longer has one.

use std::path::{Path, PathBuf};

use hive::FileName;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::table::{Entry, State};
use crate::{error::PeerError, fetch::Spec};

const FILE: &str = "transfers.json";

#[derive(Serialize, Deserialize)]
struct Saved {
    transfers: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    name: String,
    /// queued, running, paused, done or failed.
    state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(default)]
    spec: Spec,
}

/// Where the table is kept.
#[derive(Debug, Clone)]
pub struct Store(PathBuf);

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self(state_dir.join(FILE))
    }

    /// The saved table; empty if there is none. Unreadable records are
    /// reported and skipped.
    pub fn load(&self) -> Vec<Entry> {
        let bytes = match std::fs::read(&self.0) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                warn!(error = %e, path = %self.0.display(), "cannot read the transfer table");
                return Vec::new();
            }
        };
        let saved: Saved = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, path = %self.0.display(), "unreadable transfer table; starting empty");
                return Vec::new();
            }
        };
        saved.transfers.into_iter().filter_map(entry).collect()
    }

    /// Writes the table (blocking; it is small).
    pub fn save(&self, entries: &[Entry]) -> Result<(), PeerError> {
        let saved = Saved {
            transfers: entries.iter().map(record).collect(),
        };
        let bytes =
            serde_json::to_vec_pretty(&saved).map_err(|e| PeerError::Internal(e.to_string()))?;
        let tmp = self.0.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| PeerError::io(tmp.display(), &e))?;
        std::fs::rename(&tmp, &self.0).map_err(|e| PeerError::io(self.0.display(), &e))
    }
}

fn record(e: &Entry) -> Record {
    let (state, reason, path) = match &e.state {
        State::Queued => ("queued", String::new(), None),
        State::Running => ("running", String::new(), None),
        State::Paused => ("paused", String::new(), None),
        State::Done { path } => ("done", String::new(), Some(path.clone())),
        State::Failed { reason } => ("failed", reason.clone(), None),
    };
    Record {
        name: e.name.to_string(),
        state: state.into(),
        reason,
        path,
        spec: e.spec.clone(),
    }
}

fn entry(r: Record) -> Option<Entry> {
    let Ok(name) = FileName::new(&r.name) else {
        warn!(name = %r.name, "a saved transfer has a bad name; skipped");
        return None;
    };
    let state = match r.state.as_str() {
        "queued" => State::Queued,
        "running" => State::Running,
        "paused" => State::Paused,
        "done" => State::Done {
            path: r.path.unwrap_or_default(),
        },
        "failed" => State::Failed { reason: r.reason },
        other => {
            warn!(file = %name, state = other, "a saved transfer has an unknown state; skipped");
            return None;
        }
    };
    Some(Entry {
        name,
        spec: r.spec,
        state,
    })
}

#[cfg(test)]
mod tests {
    use hive::FileName;

    use super::Store;
    use crate::{
        fetch::Spec,
        transfers::table::{Entry, State},
    };

    #[test]
    fn the_table_survives_a_round_trip_through_disk() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::new(dir.path());
        assert!(store.load().is_empty(), "no file: an empty table");
        let entry = |n: &str, state| Entry {
            name: FileName::new(n).expect("a name"),
            spec: Spec {
                force: n == "b",
                only: (n == "c").then(|| "h:1".to_owned()),
                fail_fast: n == "d",
                max_rate: if n == "a" { 1 << 20 } else { 0 },
            },
            state,
        };
        let table = vec![
            entry("a", State::Running),
            entry("b", State::Paused),
            entry("c", State::Queued),
            entry(
                "d",
                State::Done {
                    path: "/x/d".into(),
                },
            ),
            entry(
                "e",
                State::Failed {
                    reason: "why".into(),
                },
            ),
        ];
        store.save(&table).expect("saved");
        assert_eq!(store.load(), table);
        assert!(!dir.path().join("transfers.json.tmp").exists());
        std::fs::write(dir.path().join("transfers.json"), b"{not json").expect("written");
        assert!(
            store.load().is_empty(),
            "a torn file is reported, not fatal"
        );
    }
}
