//! The transfers' task against a fake runner, under paused time: the queue
//! and its limit, pause/resume/cancel, and the table across a restart.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use hive::{FileName, Manifest};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{Options, Runner, Shown, Transfers};
use crate::{
    error::PeerError,
    fetch::{DoneInfo, Phase, Spec},
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs that end when the test says so, or when cancelled.
#[derive(Clone, Default)]
struct Fake {
    started: Arc<Mutex<Vec<String>>>,
    gates: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    discarded: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    /// How long a cancelled run takes to wind down.
    linger: Duration,
}

impl Fake {
    fn gate(&self, name: &str) -> Arc<Notify> {
        lock(&self.gates)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Lets the run of `name` complete.
    fn complete(&self, name: &str) {
        self.gate(name).notify_one();
    }

    fn started(&self) -> Vec<String> {
        lock(&self.started).clone()
    }
}

impl Runner for Fake {
    fn run(
        &self,
        name: FileName,
        _: Spec,
        _: watch::Sender<Phase>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<DoneInfo, PeerError>> + Send + 'static {
        lock(&self.started).push(name.to_string());
        let (gate, linger) = (self.gate(name.as_str()), self.linger);
        async move {
            tokio::select! {
                _ = cancel.cancelled() => {
                    tokio::time::sleep(linger).await;
                    Err(PeerError::Cancelled)
                }
                _ = gate.notified() => Ok(DoneInfo {
                    path: format!("/share/{name}").into(),
                    digest: hive::Digest::of(&[]),
                    bytes_received: 0,
                    chunks_fetched: 0,
                    elapsed: Duration::ZERO,
                    source: String::new(),
                    already_present: false,
                    holders_banned: 0,
                }),
            }
        }
    }

    fn token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn discard(&self, name: &FileName) {
        lock(&self.discarded).push(name.to_string());
    }

    fn held(&self, _: &FileName) -> Option<(Arc<Manifest>, u64, u32)> {
        None
    }
}

fn name(s: &str) -> FileName {
    FileName::new(s).expect("a name")
}

fn start(fake: &Fake, dir: &Path, max_active: usize) -> Transfers {
    let options = Options {
        max_active,
        on_complete: None,
        state_dir: dir.to_owned(),
    };
    Transfers::start(fake.clone(), options, Vec::new())
}

/// Waits (virtual time) until `name` shows `state`.
async fn until(t: &Transfers, n: &str, state: Shown) {
    let wait = async {
        loop {
            let info = t.get(name(n)).await.expect("the task runs");
            if info.as_ref().map(|i| i.state) == Some(state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("{n} never became {state:?}"));
}

async fn states(t: &Transfers) -> Vec<(String, Shown)> {
    let list = t.list().await.expect("the task runs");
    list.into_iter()
        .map(|i| (i.name.to_string(), i.state))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_queue_runs_in_order_within_the_limit() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = Fake::default();
    let t = start(&fake, dir.path(), 1);
    for n in ["a", "b", "c"] {
        t.fetch(name(n), Spec::default()).await.expect("accepted");
    }
    until(&t, "a", Shown::Running).await;
    assert_eq!(
        states(&t).await,
        [
            ("a".into(), Shown::Running),
            ("b".into(), Shown::Queued),
            ("c".into(), Shown::Queued)
        ]
    );
    fake.complete("a");
    until(&t, "b", Shown::Running).await;
    let a = t.get(name("a")).await.expect("runs").expect("listed");
    assert_eq!(a.state, Shown::Done);
    assert_eq!(a.path.as_deref(), Some(Path::new("/share/a")));
    fake.complete("b");
    fake.complete("c");
    until(&t, "c", Shown::Done).await;
    assert_eq!(fake.started(), ["a", "b", "c"], "one at a time, in order");
}

#[tokio::test(start_paused = true)]
async fn pause_resume_and_cancel_stop_and_start_runs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = Fake::default();
    let t = start(&fake, dir.path(), 1);
    let mut phase = t.fetch(name("a"), Spec::default()).await.expect("accepted");
    t.fetch(name("b"), Spec::default()).await.expect("accepted");
    until(&t, "a", Shown::Running).await;
    assert_eq!(
        t.pause(name("a")).await.expect("paused").state,
        Shown::Paused
    );
    // A follower learns the run stopped; the freed slot goes to b.
    let stopped = phase
        .wait_for(|p| p.finished.is_some())
        .await
        .expect("open");
    assert_eq!(
        stopped.finished.clone().map(|r| r.err()),
        Some(Some(PeerError::Cancelled))
    );
    drop(stopped);
    until(&t, "b", Shown::Running).await;
    t.resume(name("a")).await.expect("resumed");
    until(&t, "a", Shown::Queued).await;
    let gone = t.cancel(name("b"), true).await.expect("cancelled");
    assert_eq!(gone.name, name("b"));
    until(&t, "a", Shown::Running).await;
    assert_eq!(states(&t).await, [("a".into(), Shown::Running)]);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(*lock(&fake.discarded), ["b"], "--remove drops b's chunks");
    let code = |r: Result<_, PeerError>| r.err().map(|e| e.code());
    assert_eq!(code(t.pause(name("b")).await), Some(tonic::Code::NotFound));
    fake.complete("a");
    until(&t, "a", Shown::Done).await;
    assert_eq!(
        code(t.pause(name("a")).await),
        Some(tonic::Code::FailedPrecondition)
    );
    assert_eq!(fake.started(), ["a", "b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn paused_and_running_transfers_survive_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = Fake::default();
    let t = start(&fake, dir.path(), 2);
    for n in ["a", "b", "c"] {
        t.fetch(name(n), Spec::default()).await.expect("accepted");
    }
    until(&t, "b", Shown::Running).await;
    t.pause(name("a")).await.expect("paused");
    until(&t, "c", Shown::Running).await;
    // The daemon stops: its runs are cancelled, not paused.
    fake.stop.cancel();
    drop(t);
    tokio::time::sleep(Duration::from_millis(10)).await;

    let fake = Fake::default();
    let t = start(&fake, dir.path(), 2);
    until(&t, "c", Shown::Running).await;
    assert_eq!(
        states(&t).await,
        [
            ("b".into(), Shown::Running),
            ("c".into(), Shown::Running),
            ("a".into(), Shown::Paused)
        ]
    );
    assert_eq!(fake.started(), ["b", "c"], "the paused one stays paused");
}

#[tokio::test(start_paused = true)]
async fn resumed_while_the_last_run_winds_down_it_runs_again() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = Fake {
        linger: Duration::from_secs(1),
        ..Fake::default()
    };
    let t = start(&fake, dir.path(), 1);
    t.fetch(name("a"), Spec::default()).await.expect("accepted");
    until(&t, "a", Shown::Running).await;
    t.pause(name("a")).await.expect("paused");
    // The paused run has not ended yet (it lingers 1 s).
    t.resume(name("a")).await.expect("resumed");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        fake.started(),
        ["a", "a"],
        "a second run once the first ended"
    );
    assert_eq!(states(&t).await, [("a".into(), Shown::Running)]);

    // Likewise a fetch right after a cancel.
    t.cancel(name("a"), false).await.expect("cancelled");
    let mut phase = t.fetch(name("a"), Spec::default()).await.expect("accepted");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.started(), ["a", "a", "a"]);
    fake.complete("a");
    let done = phase
        .wait_for(|p| p.finished.is_some())
        .await
        .expect("open");
    assert!(
        matches!(done.finished, Some(Ok(_))),
        "the new follower sees the new run, not the old one's end: {:?}",
        done.finished
    );
    drop(done);
    until(&t, "a", Shown::Done).await;
}
