//! The session task: one state machine, driven by its callers' commands,
//! the changes the holdings publish, and its own timers (registration
//! retries, heartbeats, due announcements).
//!
//! Failed calls are mapped to [`PeerError`] where they return, and the
//! session acts on the code: no answer, a lost session, a refused file.
//! `register` holds the registrations.

mod register;

pub(crate) use register::refusal;

use std::{collections::HashMap, sync::Arc, time::Duration};

use hive::{
    FileName, Manifest,
    pb::tracker::{self as pb},
    wire,
};
use hive_runtime::grpc::TOKEN_METADATA;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tonic::{
    Code, Request,
    metadata::{Ascii, MetadataValue},
};
use tracing::{debug, info, warn};

use super::{Announce, Command, SessionInfo, Trackers, batch::Batch};
use crate::{
    error::PeerError,
    holdings::{Holdings, HoldingsChange, Kind},
};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Announcements that found the tracker down are sent again this much later.
const FLUSH_RETRY: Duration = Duration::from_millis(800);

/// Where the session stands with the tracker.
enum State {
    /// Not registered (not yet, or the tracker lost the session): the next
    /// attempt is at `at`; each failure doubles `backoff`, up to
    /// [`RETRY_MAX`].
    Unregistered { at: Instant, backoff: Duration },
    /// Accepted by the tracker.
    Registered(Live),
    /// Left for good: no session is started again.
    Left,
}

/// A session the tracker accepted.
struct Live {
    peer_id: String,
    token: MetadataValue<Ascii>,
    heartbeat_at: Instant,
    interval: Duration,
    /// The last call got no answer: a flush is answered at once.
    unreachable: bool,
    /// The manifest of each file the tracker accepted in this session, so a
    /// file the holdings add is registered only if the tracker does not
    /// have it in that layout already.
    announced: HashMap<FileName, Arc<Manifest>>,
    /// Files the holdings added whose registration got no answer: tried
    /// again at the next flush.
    unsent: Vec<Arc<Manifest>>,
}

pub struct Session {
    trackers: Trackers,
    announce: Announce,
    holdings: Holdings,
    published: watch::Sender<Option<SessionInfo>>,
    /// Files refused in their own chunk size, for re-adoption.
    refused: mpsc::UnboundedSender<FileName>,
    state: State,
    batch: Batch,
    /// Flushes waiting for the queued announcements to reach the tracker.
    waiters: Vec<oneshot::Sender<Result<(), PeerError>>>,
}

impl Session {
    pub fn new(
        trackers: Trackers,
        announce: Announce,
        holdings: Holdings,
        published: watch::Sender<Option<SessionInfo>>,
        refused: mpsc::UnboundedSender<FileName>,
    ) -> Self {
        Self {
            trackers,
            announce,
            holdings,
            published,
            refused,
            state: State::Unregistered {
                at: Instant::now(),
                backoff: RETRY_MIN,
            },
            batch: Batch::default(),
            waiters: Vec::new(),
        }
    }

    /// Runs until every handle is gone.
    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut changes: mpsc::UnboundedReceiver<HoldingsChange>,
    ) -> Result<(), PeerError> {
        loop {
            if let State::Unregistered { at, .. } = self.state
                && Instant::now() >= at
            {
                // Logged inside, and retried on its backoff.
                let _ = self.register_all().await;
            }
            let wake = self.next_wake();
            tokio::select! {
                // Commands first: a flush waits on no overdue heartbeat.
                biased;
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        // A flush covers every change made before it.
                        while let Ok(change) = changes.try_recv() {
                            self.on_change(change).await;
                        }
                        self.handle(cmd).await;
                    }
                    None => return Ok(()),
                },
                change = changes.recv() => match change {
                    Some(change) => self.on_change(change).await,
                    // Never while this task holds the holdings.
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            // Unregistered, the registration above carries the queued
            // changes, on its own retry schedule.
            if matches!(self.state, State::Registered(_)) && self.batch.is_due(now) {
                self.flush().await;
            }
            if let State::Registered(live) = &self.state
                && now >= live.heartbeat_at
            {
                self.heartbeat().await;
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let (state, batch) = match &self.state {
            State::Unregistered { at, .. } => (Some(*at), None),
            State::Registered(live) => (Some(live.heartbeat_at), self.batch.due()),
            State::Left => (None, None),
        };
        [state, batch].into_iter().flatten().min().unwrap_or(far)
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Share { files, ack } => {
                let result = self.share(files).await;
                let _ = ack.send(result);
            }
            Command::Flush { ack } => {
                if let State::Registered(live) = &self.state
                    && live.unreachable
                {
                    // Known to be down: answer now; the retry schedule stands.
                    let _ = ack.send(Err(PeerError::Unavailable(
                        "tracker unreachable; chunk updates stay queued".into(),
                    )));
                    return;
                }
                self.waiters.push(ack);
                self.flush().await;
            }
            Command::Leave { ack } => {
                let result = self.leave().await;
                let _ = ack.send(result);
            }
            Command::Withdraw { name, ack } => {
                let result = self.withdraw(&name).await;
                let _ = ack.send(result);
            }
        }
    }

    /// Queues what the tracker must hear of a change to the holdings.
    async fn on_change(&mut self, change: HoldingsChange) {
        let now = Instant::now();
        match change {
            HoldingsChange::Marked {
                name,
                universe,
                chunk,
            } => self.batch.held(&name, universe, chunk, now),
            HoldingsChange::Withdrawn {
                name,
                universe,
                chunk,
            } => self.batch.withdrawn(&name, universe, chunk, now),
            HoldingsChange::Added {
                manifest,
                have,
                kind: Kind::Partial,
            } => {
                self.batch
                    .drop_other_layout(manifest.name(), manifest.chunk_count());
                for chunk in have.iter() {
                    self.batch
                        .held(manifest.name(), manifest.chunk_count(), chunk, now);
                }
            }
            HoldingsChange::Added {
                manifest,
                kind: Kind::Complete,
                ..
            } => {
                self.batch
                    .drop_other_layout(manifest.name(), manifest.chunk_count());
                self.register_added(manifest).await;
            }
            HoldingsChange::Removed { name, had } => {
                for chunk in had.iter() {
                    self.batch.withdrawn(&name, had.universe(), chunk, now);
                }
                // Held again later, it is registered again.
                if let State::Registered(live) = &mut self.state {
                    live.announced.remove(&name);
                    live.unsent.retain(|m| *m.name() != name);
                }
            }
            // Every chunk of a finished download was announced as it came.
            HoldingsChange::Completed { .. } => {}
        }
    }

    async fn heartbeat(&mut self) {
        let State::Registered(live) = &mut self.state else {
            return;
        };
        live.heartbeat_at = Instant::now() + live.interval;
        let beat = pb::HeartbeatRequest {
            peer_id: live.peer_id.clone(),
        };
        let held: &Live = live;
        let result = self
            .trackers
            .call(|mut c| {
                let req = authed(beat.clone(), held);
                async move { c.heartbeat(req).await }
            })
            .await;
        let result = result.map_err(|s| PeerError::tracker(&s));
        live.unreachable = result.as_ref().is_err_and(no_answer);
        match result {
            Ok(resp) => {
                let interval = Duration::from_millis(resp.heartbeat_interval_ms);
                if !interval.is_zero() {
                    live.interval = interval;
                }
            }
            Err(e) => {
                self.on_session_error(&e);
            }
        }
    }

    /// Sends the queued announcements, one call per file.
    async fn flush(&mut self) {
        match self.state {
            State::Registered(_) => {}
            State::Unregistered { .. } => {
                // Asked for (a flush command, a leave): registering now sends
                // everything held, queued changes included. Its failure
                // goes to the waiters.
                let _ = self.register_all().await;
                return;
            }
            State::Left => {
                // Gone for good: a late flush must not start a session.
                self.batch.clear();
                let left = PeerError::Unavailable("this peer has left the tracker".into());
                self.answer_waiters(Err(left));
                return;
            }
        }
        if let State::Registered(live) = &mut self.state {
            for manifest in std::mem::take(&mut live.unsent) {
                self.register_added(manifest).await;
            }
        }
        let mut updates = self.batch.take().into_iter();
        while let Some(u) = updates.next() {
            let State::Registered(live) = &mut self.state else {
                break;
            };
            let update = pb::RegisterChunkRequest {
                peer_id: live.peer_id.clone(),
                name: u.name.to_string(),
                chunks: wire::ranges(&u.add),
                withdrawn: wire::ranges(&u.remove),
            };
            let held: &Live = live;
            let result = self
                .trackers
                .call(|mut c| {
                    let req = authed(update.clone(), held);
                    async move { c.register_chunk(req).await }
                })
                .await;
            let result = result.map_err(|s| PeerError::tracker(&s));
            live.unreachable = result.as_ref().is_err_and(no_answer);
            match result {
                Ok(_) => {
                    debug!(file = %u.name, chunks = u.add.len(), withdrawn = u.remove.len(), "chunks registered")
                }
                Err(e) if e.code() == Code::InvalidArgument => {
                    warn!(file = %u.name, error = %e, "the tracker refused a chunk update; dropped");
                }
                Err(e) => {
                    if !self.on_session_error(&e) {
                        // The tracker is unreachable: keep the queue, try later.
                        let rest = std::iter::once(u).chain(updates).collect();
                        self.batch.put_back(rest, Instant::now() + FLUSH_RETRY);
                    }
                    // Else the next registration sends everything held.
                    self.answer_waiters(Err(e));
                    return;
                }
            }
        }
        self.answer_waiters(Ok(()));
    }

    async fn leave(&mut self) -> Result<(), PeerError> {
        self.flush().await;
        let State::Registered(live) = std::mem::replace(&mut self.state, State::Left) else {
            return Ok(());
        };
        self.published.send_replace(None);
        let bye = pb::LeaveRequest {
            peer_id: live.peer_id.clone(),
        };
        let answer = self
            .trackers
            .call(|mut c| {
                let req = authed(bye.clone(), &live);
                async move { c.leave(req).await }
            })
            .await;
        match answer.map_err(|s| PeerError::tracker(&s)) {
            Ok(_) => {
                info!(peer = %live.peer_id, "left the tracker");
                Ok(())
            }
            // Already forgotten: as good as gone.
            Err(e) if e.code() == Code::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Forgets the session if the tracker no longer knows it, so the next
    /// turn of the loop registers everything again. Returns whether it did.
    fn on_session_error(&mut self, e: &PeerError) -> bool {
        let lost = matches!(
            e.code(),
            Code::NotFound | Code::Unauthenticated | Code::PermissionDenied
        );
        if !lost || !matches!(self.state, State::Registered(_)) {
            debug!(error = %e, "tracker call failed");
            return false;
        }
        info!(error = %e, "the tracker lost this session; registering again");
        self.state = State::Unregistered {
            at: Instant::now(),
            backoff: RETRY_MIN,
        };
        self.published.send_replace(None);
        true
    }

    fn answer_waiters(&mut self, result: Result<(), PeerError>) {
        for w in self.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

/// `msg` with the session's token.
fn authed<T>(msg: T, live: &Live) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert(TOKEN_METADATA, live.token.clone());
    req
}

/// A call that failed because the tracker did not answer, as opposed to
/// an answer refusing it (see [`PeerError::tracker`]).
fn no_answer(e: &PeerError) -> bool {
    matches!(e, PeerError::Unavailable(_))
}
