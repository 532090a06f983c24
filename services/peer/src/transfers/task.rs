//! The task that owns the transfers: the table, each transfer's progress
//! channel and the handle of each run. It starts queued transfers while a
//! slot is free, takes each run's outcome, saves the table after every
//! change and runs the hook for completed transfers.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use hive::{FileName, Manifest};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Cmd, Info, Runner, hook,
    store::Store,
    table::{Fetched, State, Table},
    view::{self, Rate},
};
use crate::{
    error::PeerError,
    fetch::{DoneInfo, Phase},
};

/// What the task keeps of one transfer besides its table entry.
struct Live {
    phase: watch::Sender<Phase>,
    /// The file's manifest, once a run has learnt it.
    manifest: Option<Arc<Manifest>>,
    /// The run going on, if any: its number and what stops it.
    run: Option<(u64, CancellationToken)>,
    rate: Rate,
    hook: Option<String>,
    /// Cancelled with --remove while it ran: drop its chunks when it ends.
    discard: bool,
    /// Asked to run again (resumed, or fetched after a cancel) while the
    /// last run was still winding down: that run's end starts the next one
    /// instead of deciding the transfer's state.
    restart: bool,
}

impl Live {
    fn new() -> Self {
        Self {
            phase: watch::channel(Phase::default()).0,
            manifest: None,
            run: None,
            rate: Rate::default(),
            hook: None,
            discard: false,
            restart: false,
        }
    }
}

pub(super) struct Task<R: Runner> {
    runner: R,
    table: Table,
    store: Store,
    on_complete: Option<PathBuf>,
    /// Weak: the task ends once every handle and every run is gone.
    tx: mpsc::WeakSender<Cmd>,
    live: HashMap<FileName, Live>,
    runs: u64,
}

impl<R: Runner> Task<R> {
    pub(super) fn new(
        runner: R,
        table: Table,
        store: Store,
        on_complete: Option<PathBuf>,
        tx: mpsc::Sender<Cmd>,
    ) -> Self {
        Self {
            runner,
            table,
            store,
            on_complete,
            tx: tx.downgrade(),
            live: HashMap::new(),
            runs: 0,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) -> Result<(), PeerError> {
        self.start_next();
        self.save();
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
        }
        Ok(())
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Fetch { name, spec, reply } => {
                let fetched = self.table.fetch(&name, spec);
                let live = self.live.entry(name.clone()).or_insert_with(Live::new);
                if fetched == Fetched::Requeued {
                    live.phase.send_replace(Phase::default());
                }
                let _ = reply.send(live.phase.subscribe());
                info!(file = %name, ?fetched, "transfer asked for");
                self.changed();
            }
            Cmd::List(reply) => {
                let names: Vec<_> = self
                    .table
                    .entries()
                    .iter()
                    .map(|e| e.name.clone())
                    .collect();
                let list = names.iter().filter_map(|n| self.info(n)).collect();
                let _ = reply.send(list);
            }
            Cmd::Get { name, reply } => {
                let _ = reply.send(self.info(&name));
            }
            Cmd::Pause { name, reply } => {
                let paused = self.table.pause(&name).map(|was_running| {
                    if was_running && let Some((_, cancel)) = self.live(&name).run.as_ref() {
                        cancel.cancel();
                    }
                    info!(file = %name, "transfer paused");
                });
                self.changed();
                let _ = reply.send(paused.map(|()| self.info_of(&name)));
            }
            Cmd::Resume { name, reply } => {
                let was = self.table.get(&name).map(|e| e.state.clone());
                let resumed = self.table.resume(&name);
                if resumed.is_ok() && matches!(was, Some(State::Paused | State::Failed { .. })) {
                    self.live(&name).phase.send_replace(Phase::default());
                    info!(file = %name, "transfer resumed");
                }
                self.changed();
                let _ = reply.send(resumed.map(|()| self.info_of(&name)));
            }
            Cmd::Cancel {
                name,
                remove,
                reply,
            } => {
                let _ = reply.send(self.cancel(&name, remove));
            }
            Cmd::Finished { name, run, result } => self.finished(name, run, result),
            Cmd::Hooked { name, outcome } => {
                if let Some(live) = self.live.get_mut(&name) {
                    live.hook = Some(outcome);
                }
            }
        }
    }

    fn cancel(&mut self, name: &FileName, remove: bool) -> Result<Info, PeerError> {
        let info = self.info(name);
        self.table.cancel(name)?;
        let info = info.expect("in the table: cancel found it");
        let live = self.live(name);
        match live.run.as_ref() {
            Some((_, cancel)) => {
                cancel.cancel();
                live.discard = remove;
            }
            None => {
                self.live.remove(name);
                if remove {
                    self.discard(name.clone());
                }
            }
        }
        info!(file = %name, remove, "transfer cancelled");
        self.changed();
        Ok(info)
    }

    fn finished(&mut self, name: FileName, run: u64, result: Result<DoneInfo, PeerError>) {
        let Some(live) = self.live.get_mut(&name) else {
            return;
        };
        if live.run.as_ref().is_none_or(|(n, _)| *n != run) {
            return;
        }
        live.run = None;
        if let Some(s) = &live.phase.borrow().started {
            live.manifest = Some(s.manifest.clone());
        }
        if std::mem::take(&mut live.restart) {
            // The transfer was queued again while this run wound down: its
            // followers wait for the next run, which starts now.
            live.discard = false;
            self.changed();
            return;
        }
        live.phase
            .send_modify(|p| p.finished = Some(result.clone()));
        let discard = live.discard;
        if self.table.get(&name).is_none() {
            // Cancelled while it ran.
            self.live.remove(&name);
            if discard {
                self.discard(name);
            }
            self.changed();
            return;
        }
        let path = result.map(|d| d.path);
        if let (Ok(path), Some(cmd)) = (&path, &self.on_complete) {
            self.hook(cmd.clone(), path.clone(), name.clone());
        }
        self.table.finished(&name, path, self.runner.stopping());
        self.changed();
    }

    /// After any change: start what may start, save the table.
    fn changed(&mut self) {
        if !self.runner.stopping() {
            self.start_next();
        }
        self.save();
    }

    fn start_next(&mut self) {
        for (name, spec) in self.table.start_next() {
            let live = self.live.entry(name.clone()).or_insert_with(Live::new);
            if live.run.is_some() {
                // The last run is still winding down: queued again, it
                // starts once that one reports in.
                live.restart = true;
                self.table.requeue(&name);
                continue;
            }
            self.runs += 1;
            let cancel = self.runner.token();
            live.run = Some((self.runs, cancel.clone()));
            live.rate = Rate::default();
            live.hook = None;
            live.phase.send_replace(Phase::default());
            let download = self
                .runner
                .run(name.clone(), spec, live.phase.clone(), cancel);
            let (tx, run) = (self.tx.clone(), self.runs);
            info!(file = %name, "transfer started");
            hive_runtime::task::spawn("transfer", async move {
                let result = download.await;
                if let Some(tx) = tx.upgrade() {
                    let _ = tx.send(Cmd::Finished { name, run, result }).await;
                }
                Ok::<(), PeerError>(())
            });
        }
    }

    fn hook(&self, cmd: PathBuf, path: PathBuf, name: FileName) {
        let tx = self.tx.clone();
        hive_runtime::task::spawn("on-complete", async move {
            let outcome = hook::run(cmd, &path, &name).await;
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Cmd::Hooked { name, outcome }).await;
            }
            Ok::<(), PeerError>(())
        });
    }

    fn discard(&self, name: FileName) {
        let runner = self.runner.clone();
        hive_runtime::task::spawn("discard", async move {
            tokio::task::spawn_blocking(move || runner.discard(&name))
                .await
                .map_err(|e| PeerError::Internal(format!("discard task failed: {e}")))
        });
    }

    fn save(&self) {
        if let Err(e) = self.store.save(self.table.entries()) {
            warn!(error = %e, "cannot save the transfer table");
        }
    }

    fn live(&mut self, name: &FileName) -> &mut Live {
        self.live.entry(name.clone()).or_insert_with(Live::new)
    }

    /// The transfer as callers see it (it must be in the table).
    fn info_of(&mut self, name: &FileName) -> Info {
        self.info(name).expect("the transfer is in the table")
    }

    fn info(&mut self, name: &FileName) -> Option<Info> {
        let entry = self.table.get(name)?.clone();
        let held = self.runner.held(name);
        let live = self.live.entry(name.clone()).or_insert_with(Live::new);
        let phase = live.phase.borrow().clone();
        if let Some(s) = &phase.started {
            live.manifest = Some(s.manifest.clone());
        }
        if live.manifest.is_none() {
            live.manifest = held.as_ref().map(|h| h.0.clone());
        }
        let held = held.map(|(_, bytes, chunks)| (bytes, chunks));
        Some(view::info(
            &entry,
            &phase,
            live.manifest.as_ref(),
            held,
            &mut live.rate,
            live.hook.as_ref(),
        ))
    }
}
