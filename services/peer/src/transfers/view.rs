//! A transfer as callers see it: its state, how far it is, how fast it goes
//! and when it should end.

use std::{path::PathBuf, sync::Arc, time::Duration};

use hive::{FileName, Manifest};
use tokio::time::Instant;

use super::table::{Entry, State};
use crate::fetch::Phase;

/// The state shown: the table's, with `Stalled` for a running transfer that
/// waits for a holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Queued,
    Running,
    Stalled,
    Paused,
    Done,
    Failed,
}

impl Shown {
    /// Done or failed: nothing more will happen unless asked.
    pub fn ended(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: FileName,
    pub state: Shown,
    /// Why it failed.
    pub reason: String,
    /// Zero until the manifest is known.
    pub size: u64,
    pub chunk_count: u32,
    pub bytes_done: u64,
    pub chunks_done: u32,
    /// Bytes a second over the last few seconds.
    pub rate: u64,
    pub eta: Option<Duration>,
    /// Holders with a request in flight.
    pub holders_active: u32,
    /// Live holders the tracker listed at the start of the run.
    pub holders: u32,
    /// Where the completed file is.
    pub path: Option<PathBuf>,
    /// What `--on-complete` did.
    pub hook: Option<String>,
}

/// The rate is measured over at least this long.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Byte counts sampled now and then, for a rate over the last few seconds.
#[derive(Debug, Default)]
pub struct Rate {
    prev: Option<(Instant, u64)>,
    cur: Option<(Instant, u64)>,
}

impl Rate {
    /// Takes a sample of `bytes` now; returns bytes a second since the
    /// oldest kept sample (two windows at most).
    pub fn sample(&mut self, bytes: u64) -> u64 {
        let now = Instant::now();
        match self.cur {
            None => self.cur = Some((now, bytes)),
            Some((at, _)) if now - at >= RATE_WINDOW => {
                self.prev = self.cur;
                self.cur = Some((now, bytes));
            }
            Some(_) => {}
        }
        let Some((at, then)) = self.prev.or(self.cur) else {
            return 0;
        };
        let secs = (now - at).as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        (bytes.saturating_sub(then) as f64 / secs) as u64
    }
}

/// Builds what callers see of `entry`, from its last run's `phase` (or, with
/// none, from what is held: `held`).
pub fn info(
    entry: &Entry,
    phase: &Phase,
    manifest: Option<&Arc<Manifest>>,
    held: Option<(u64, u32)>,
    rate: &mut Rate,
    hook: Option<&String>,
) -> Info {
    let stalled = phase.progress.stalled;
    let (state, reason, path) = match &entry.state {
        State::Queued => (Shown::Queued, String::new(), None),
        State::Running if stalled => (Shown::Stalled, String::new(), None),
        State::Running => (Shown::Running, String::new(), None),
        State::Paused => (Shown::Paused, String::new(), None),
        State::Done { path } => (Shown::Done, String::new(), Some(path.clone())),
        State::Failed { reason } => (Shown::Failed, reason.clone(), None),
    };
    let (size, chunk_count) = manifest.map_or((0, 0), |m| (m.size(), m.chunk_count()));
    let (bytes_done, chunks_done) = match (&entry.state, phase.started.is_some(), held) {
        (State::Done { .. }, _, _) => (size, chunk_count),
        // The run counts what was held before it too, but only from its
        // first progress report on: until then, what it started with.
        (_, true, _) => phase.started.as_ref().map_or((0, 0), |s| {
            let present = size.saturating_sub(s.bytes_wanted);
            (
                phase.progress.bytes_done.max(present),
                phase.progress.chunks_done.max(s.chunks_present),
            )
        }),
        (_, false, Some(held)) => held,
        _ => (0, 0),
    };
    let running = entry.state == State::Running;
    let rate = if running { rate.sample(bytes_done) } else { 0 };
    let eta =
        (running && rate > 0).then(|| Duration::from_secs(size.saturating_sub(bytes_done) / rate));
    Info {
        name: entry.name.clone(),
        state,
        reason,
        size,
        chunk_count,
        bytes_done,
        chunks_done,
        rate,
        eta,
        holders_active: if running {
            phase.progress.holders_active
        } else {
            0
        },
        holders: phase.started.as_ref().map_or(0, |s| s.holders),
        path,
        hook: hook.cloned(),
    }
}
