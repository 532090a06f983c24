//! The transfer table: every transfer the daemon owns, in the order they
//! were asked for, and the rules of their states. Pure and synchronous: the
//! task in `mod.rs` applies it and does the I/O.
//!
//! ```text
//! queued --(a slot frees)--> running --ok--> done
//!    ^  \                     |  \--error--> failed --resume/fetch--> queued
//!    |   \--pause--> paused <-/pause
//!    \--resume/fetch--/
//! ```
//! `cancel` removes a transfer in any state. A running transfer stopped by
//! the daemon shutting down stays running, and runs again (first queued) at
//! the next start.

use std::path::PathBuf;

use hive::FileName;

use crate::{error::PeerError, fetch::Spec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Queued,
    Running,
    Paused,
    Done { path: PathBuf },
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: FileName,
    pub spec: Spec,
    pub state: State,
}

/// What a Fetch did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// A new transfer, queued.
    New,
    /// The transfer is queued or running already: the caller follows it.
    Following,
    /// A paused, done or failed transfer, queued again.
    Requeued,
}

#[derive(Debug, Clone)]
pub struct Table {
    entries: Vec<Entry>,
    /// Transfers running at once at most.
    limit: usize,
}

impl Table {
    /// A table of `entries` (as saved), running at most `limit` at once.
    /// Those that were running when the daemon stopped are queued first.
    pub fn new(mut entries: Vec<Entry>, limit: usize) -> Self {
        // Stable: the running keep their order, then the queued theirs.
        entries.sort_by_key(|e| e.state != State::Running);
        for e in &mut entries {
            if e.state == State::Running {
                e.state = State::Queued;
            }
        }
        Self {
            entries,
            limit: limit.max(1),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, name: &FileName) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == *name)
    }

    fn entry(&mut self, name: &FileName) -> Result<&mut Entry, PeerError> {
        self.entries
            .iter_mut()
            .find(|e| e.name == *name)
            .ok_or_else(|| {
                PeerError::NotFound(format!(
                    "no transfer of {name:?}; `peerctl transfers` lists them"
                ))
            })
    }

    /// A Fetch of `name`: queues it, or follows the one queued or running.
    pub fn fetch(&mut self, name: &FileName, spec: Spec) -> Fetched {
        let Ok(e) = self.entry(name) else {
            self.entries.push(Entry {
                name: name.clone(),
                spec,
                state: State::Queued,
            });
            return Fetched::New;
        };
        match e.state {
            State::Queued | State::Running => {
                // A new cap reaches a transfer already asked for, and is
                // kept with it (control.rs applies it to the run itself).
                if spec.max_rate > 0 {
                    e.spec.max_rate = spec.max_rate;
                }
                Fetched::Following
            }
            _ => {
                e.spec = spec;
                e.state = State::Queued;
                Fetched::Requeued
            }
        }
    }

    /// Pauses `name`; returns whether it was running (and must be stopped).
    pub fn pause(&mut self, name: &FileName) -> Result<bool, PeerError> {
        let e = self.entry(name)?;
        let was = e.state.clone();
        match was {
            State::Queued | State::Running => e.state = State::Paused,
            State::Paused => {}
            State::Done { .. } | State::Failed { .. } => {
                return Err(PeerError::Precondition(format!(
                    "the transfer of {name:?} has ended; `peerctl fetch {name}` starts it again"
                )));
            }
        }
        Ok(was == State::Running)
    }

    /// Resumes a paused or failed `name` (queued: it runs when a slot is
    /// free); a queued or running one is left as it is.
    pub fn resume(&mut self, name: &FileName) -> Result<(), PeerError> {
        let e = self.entry(name)?;
        match e.state {
            State::Paused | State::Failed { .. } => e.state = State::Queued,
            State::Queued | State::Running => {}
            State::Done { .. } => {
                return Err(PeerError::Precondition(format!(
                    "the transfer of {name:?} is done; `peerctl fetch {name} --force` fetches it again"
                )));
            }
        }
        Ok(())
    }

    /// Removes `name` from the table, whatever its state.
    pub fn cancel(&mut self, name: &FileName) -> Result<Entry, PeerError> {
        self.entry(name)?;
        let at = self.entries.iter().position(|e| e.name == *name);
        Ok(self.entries.remove(at.expect("found above")))
    }

    /// A run of `name` ended. `stopping`: the daemon is shutting down.
    pub fn finished(
        &mut self,
        name: &FileName,
        result: Result<PathBuf, PeerError>,
        stopping: bool,
    ) {
        let Ok(e) = self.entry(name) else {
            return;
        };
        if e.state != State::Running {
            // Paused (or requeued) while it ran: that state stands.
            return;
        }
        e.state = match result {
            Ok(path) => State::Done { path },
            Err(PeerError::Cancelled) if stopping => State::Running,
            Err(PeerError::Cancelled) => State::Paused,
            Err(err) => State::Failed {
                reason: err.to_string(),
            },
        };
    }

    /// Puts a transfer that [`Table::start_next`] marked running back in
    /// the queue (its last run has not ended yet).
    pub fn requeue(&mut self, name: &FileName) {
        if let Ok(e) = self.entry(name)
            && e.state == State::Running
        {
            e.state = State::Queued;
        }
    }

    /// Transfers running now.
    pub fn running(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == State::Running)
            .count()
    }

    /// Starts queued transfers, in order, while a slot is free; returns them.
    pub fn start_next(&mut self) -> Vec<(FileName, Spec)> {
        let mut free = self.limit.saturating_sub(self.running());
        let mut started = Vec::new();
        for e in &mut self.entries {
            if free == 0 {
                break;
            }
            if e.state == State::Queued {
                e.state = State::Running;
                started.push((e.name.clone(), e.spec.clone()));
                free -= 1;
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use hive::FileName;

    use super::{Entry, Fetched, State, Table};
    use crate::{error::PeerError, fetch::Spec};

    fn name(s: &str) -> FileName {
        FileName::new(s).expect("a name")
    }

    fn names(v: Vec<(FileName, Spec)>) -> Vec<String> {
        v.into_iter().map(|(n, _)| n.to_string()).collect()
    }

    fn state(t: &Table, n: &str) -> State {
        t.get(&name(n)).expect("listed").state.clone()
    }

    #[test]
    fn transfers_start_in_order_up_to_the_limit_and_the_rest_queue() {
        let mut t = Table::new(Vec::new(), 2);
        for n in ["a", "b", "c", "d"] {
            assert_eq!(t.fetch(&name(n), Spec::default()), Fetched::New);
        }
        assert_eq!(t.fetch(&name("b"), Spec::default()), Fetched::Following);
        assert_eq!(names(t.start_next()), ["a", "b"]);
        assert_eq!(names(t.start_next()), Vec::<String>::new(), "no free slot");
        assert_eq!(state(&t, "c"), State::Queued);
        t.finished(&name("b"), Ok(PathBuf::from("/d/b")), false);
        assert_eq!(
            state(&t, "b"),
            State::Done {
                path: "/d/b".into()
            }
        );
        assert_eq!(names(t.start_next()), ["c"], "the next in order");
        t.finished(&name("a"), Err(PeerError::NotFound("gone".into())), false);
        assert!(matches!(state(&t, "a"), State::Failed { .. }));
        assert_eq!(names(t.start_next()), ["d"]);
    }

    #[test]
    fn pause_resume_and_cancel_follow_the_state_machine() {
        let mut t = Table::new(Vec::new(), 1);
        t.fetch(&name("a"), Spec::default());
        t.fetch(&name("b"), Spec::default());
        t.start_next();
        assert_eq!(t.pause(&name("a")), Ok(true), "it was running: stop it");
        assert_eq!(t.pause(&name("b")), Ok(false), "queued: nothing to stop");
        assert_eq!(t.pause(&name("a")), Ok(false), "pausing twice is harmless");
        // The stopped run reports in: paused stands.
        t.finished(&name("a"), Err(PeerError::Cancelled), false);
        assert_eq!(state(&t, "a"), State::Paused);
        assert!(t.start_next().is_empty(), "paused transfers never start");
        t.resume(&name("b")).expect("resumes");
        assert_eq!(names(t.start_next()), ["b"]);
        t.finished(&name("b"), Ok("/d/b".into()), false);
        let code = |r: Result<(), PeerError>| r.map_err(|e| e.code()).err();
        assert_eq!(
            code(t.pause(&name("b")).map(drop)),
            Some(tonic::Code::FailedPrecondition)
        );
        assert_eq!(
            code(t.resume(&name("b"))),
            Some(tonic::Code::FailedPrecondition)
        );
        assert_eq!(code(t.resume(&name("zz"))), Some(tonic::Code::NotFound));
        let gone = t.cancel(&name("a")).expect("cancelled");
        assert_eq!(gone.state, State::Paused);
        assert!(t.get(&name("a")).is_none());
        assert_eq!(
            code(t.cancel(&name("a")).map(|_| ())),
            Some(tonic::Code::NotFound)
        );
        // A fetch of an ended transfer queues it again.
        assert_eq!(t.fetch(&name("b"), Spec::default()), Fetched::Requeued);
    }

    #[test]
    fn a_transfer_stopped_by_shutdown_runs_first_at_the_next_start() {
        let mut t = Table::new(Vec::new(), 1);
        t.fetch(&name("x"), Spec::default());
        t.fetch(&name("a"), Spec::default());
        assert_eq!(names(t.start_next()), ["x"]);
        t.pause(&name("x")).expect("paused");
        t.finished(&name("x"), Err(PeerError::Cancelled), false);
        assert_eq!(names(t.start_next()), ["a"]);
        t.resume(&name("x"))
            .expect("queued again, ahead of a in order");
        t.finished(&name("a"), Err(PeerError::Cancelled), true);
        assert_eq!(state(&t, "a"), State::Running, "shutdown is not a pause");
        let saved: Vec<Entry> = t.entries().to_vec();
        let mut t = Table::new(saved, 1);
        assert_eq!(names(t.start_next()), ["a"], "what ran runs again first");
        assert_eq!(state(&t, "x"), State::Queued);
    }
}
