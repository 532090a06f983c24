//! Transfers the daemon owns: every whole-file download, queued, running,
//! stalled, paused, done or failed, whether or not any `peerctl` follows it.
//!
//! One task owns the table and every running download's handle (STYLE rule
//! 5); [`Transfers`] is the cheap handle that talks to it over a channel.
//! A caller going away never stops a transfer: only `pause`, `cancel` and
//! the daemon stopping do (the last one resumably: running transfers run
//! again at the next start).
//!
//! - `table`: the states and their rules (pure).
//! - `task`: the task: starts runs up to `--max-active-transfers`, takes
//!   their outcomes, saves the table, runs the hook.
//! - `view`: what a transfer looks like to callers: progress, rate, ETA.
//! - `store`: the table on disk, next to the resume states.
//! - `hook`: `--on-complete CMD`.

mod hook;
mod store;
mod table;
mod task;
#[cfg(test)]
mod tests;
mod view;

use std::{future::Future, path::PathBuf, sync::Arc};

use hive::{FileName, Manifest};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use self::view::{Info, Shown};
use self::{store::Store, table::Table, task::Task};
use crate::{
    error::PeerError,
    fetch::{DoneInfo, Fetcher, Phase, Spec},
};

/// What runs a transfer: the [`Fetcher`] in the daemon, a fake in tests.
pub trait Runner: Clone + Send + Sync + 'static {
    /// Downloads `name` until done, failed or `cancel`led, reporting on `tx`.
    fn run(
        &self,
        name: FileName,
        spec: Spec,
        tx: watch::Sender<Phase>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<DoneInfo, PeerError>> + Send + 'static;
    /// A token for one run, cancelled too when the daemon stops.
    fn token(&self) -> CancellationToken;
    /// Whether the daemon is stopping.
    fn stopping(&self) -> bool;
    /// Drops the verified chunks of a cancelled transfer (blocking).
    fn discard(&self, name: &FileName);
    /// What is held of `name` now: its manifest and the bytes and chunks held.
    fn held(&self, name: &FileName) -> Option<(Arc<Manifest>, u64, u32)>;
}

impl Runner for Fetcher {
    fn run(
        &self,
        name: FileName,
        spec: Spec,
        tx: watch::Sender<Phase>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<DoneInfo, PeerError>> + Send + 'static {
        let this = self.clone();
        async move { Fetcher::run(&this, &name, &spec, &tx, &cancel).await }
    }

    fn token(&self) -> CancellationToken {
        Fetcher::token(self)
    }

    fn stopping(&self) -> bool {
        Fetcher::stopping(self)
    }

    fn discard(&self, name: &FileName) {
        Fetcher::discard(self, name);
    }

    fn held(&self, name: &FileName) -> Option<(Arc<Manifest>, u64, u32)> {
        Fetcher::held(self, name)
    }
}

/// How the transfers run, from the daemon's flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Transfers running at once at most; the rest wait, queued.
    pub max_active: usize,
    /// Run when a transfer completes.
    pub on_complete: Option<PathBuf>,
    /// `.hive`: where the table is saved.
    pub state_dir: PathBuf,
}

enum Cmd {
    Fetch {
        name: FileName,
        spec: Spec,
        reply: oneshot::Sender<watch::Receiver<Phase>>,
    },
    List(oneshot::Sender<Vec<Info>>),
    Get {
        name: FileName,
        reply: oneshot::Sender<Option<Info>>,
    },
    Pause {
        name: FileName,
        reply: oneshot::Sender<Result<Info, PeerError>>,
    },
    Resume {
        name: FileName,
        reply: oneshot::Sender<Result<Info, PeerError>>,
    },
    Cancel {
        name: FileName,
        remove: bool,
        reply: oneshot::Sender<Result<Info, PeerError>>,
    },
    /// A run ended (sent by the run itself).
    Finished {
        name: FileName,
        run: u64,
        result: Result<DoneInfo, PeerError>,
    },
    /// The hook ran for a completed transfer.
    Hooked {
        name: FileName,
        outcome: String,
    },
}

/// The transfers: a cheap, shared handle to the task that owns them.
#[derive(Clone)]
pub struct Transfers {
    tx: mpsc::Sender<Cmd>,
}

impl Transfers {
    /// Starts the task with the saved table, plus `resume` (downloads found
    /// interrupted on disk that the table does not know: queued).
    pub fn start<R: Runner>(runner: R, options: Options, resume: Vec<FileName>) -> Self {
        let store = Store::new(&options.state_dir);
        let mut table = Table::new(store.load(), options.max_active);
        for name in resume {
            if table.get(&name).is_none() {
                table.fetch(&name, Spec::default());
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let task = Task::new(runner, table, store, options.on_complete, tx.clone());
        hive_runtime::task::spawn("transfers", task.run(rx));
        Self { tx }
    }

    /// Starts a transfer of `name`, or follows the one queued or running
    /// (a paused, done or failed one is queued again); its progress.
    pub async fn fetch(
        &self,
        name: FileName,
        spec: Spec,
    ) -> Result<watch::Receiver<Phase>, PeerError> {
        self.ask(|reply| Cmd::Fetch { name, spec, reply }).await
    }

    /// Every transfer, in the order asked for.
    pub async fn list(&self) -> Result<Vec<Info>, PeerError> {
        self.ask(Cmd::List).await
    }

    /// One transfer, if the table has it.
    pub async fn get(&self, name: FileName) -> Result<Option<Info>, PeerError> {
        self.ask(|reply| Cmd::Get { name, reply }).await
    }

    pub async fn pause(&self, name: FileName) -> Result<Info, PeerError> {
        self.ask(|reply| Cmd::Pause { name, reply }).await?
    }

    pub async fn resume(&self, name: FileName) -> Result<Info, PeerError> {
        self.ask(|reply| Cmd::Resume { name, reply }).await?
    }

    /// Removes the transfer; its verified chunks stay (served, and used by
    /// a later fetch) unless `remove`.
    pub async fn cancel(&self, name: FileName, remove: bool) -> Result<Info, PeerError> {
        self.ask(|reply| Cmd::Cancel {
            name,
            remove,
            reply,
        })
        .await?
    }

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, PeerError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(cmd(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

fn stopped() -> PeerError {
    PeerError::Unavailable("the daemon is stopping".into())
}
