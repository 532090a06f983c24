//! The tracker replicas a peer may use (`--tracker A,B,...`), and which one
//! it uses.
//!
//! Every tracker call goes through [`Trackers::call`]: it asks the replica in
//! use, and when that one does not answer (UNAVAILABLE, a connect error, a
//! deadline: see [`no_answer`]) the next, in the order given, until one
//! answers. The one that answered is kept for the calls that follow
//! (sticky: a replica that comes back does not take the peer back). A
//! replica that did not answer rests for a back-off that doubles with each
//! failure ([`BACKOFF_MIN`] to [`BACKOFF_MAX`]); a resting replica is asked
//! after the others, never skipped, so a call fails only once every replica
//! was asked. An answer that refuses the call (NOT_FOUND, INVALID_ARGUMENT,
//! ...) is an answer: it is handed back, not failed over.
//!
//! Replicas on one shared store (`tracker --store redis://...`) accept each
//! other's session tokens, so failing over keeps the session. Independent
//! trackers do not: the next one answers NOT_FOUND, and the session
//! registers again as after a tracker restart.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hive::pb::tracker::tracker_client::TrackerClient;
use tokio::time::Instant;
use tonic::{Code, Response, Status, transport::Channel};
use tracing::{info, warn};

use super::CALL_TIMEOUT;
use crate::error::PeerError;

/// The first rest of a replica that did not answer.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest rest.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The replicas, each with its client `C`, and the choice among them. A
/// cheap, shared handle: clones use the same replica.
#[derive(Clone)]
pub struct Trackers<C = TrackerClient<Channel>> {
    replicas: Arc<[(String, C)]>,
    /// A std mutex: held for a few field updates, never across a call.
    rotation: Arc<Mutex<Rotation>>,
}

impl Trackers {
    /// A lazily connected client for each URL, in the order given (at least
    /// one), over TLS with `tls` (then every URL must be https://). Nothing
    /// is dialled until the first call.
    pub fn connect_lazy(
        urls: &[String],
        tls: Option<&hive_runtime::tls::Tls>,
    ) -> Result<Self, PeerError> {
        let clients = urls
            .iter()
            .map(|url| {
                let channel = hive_runtime::grpc::dial(url, tls)
                    .map_err(|e| PeerError::Invalid(format!("--tracker: {e}")))?
                    .timeout(CALL_TIMEOUT)
                    .connect_lazy();
                Ok((url.clone(), TrackerClient::new(channel)))
            })
            .collect::<Result<Vec<_>, PeerError>>()?;
        Self::new(clients)
    }
}

impl<C: Clone> Trackers<C> {
    /// The replicas, in the order given, with their clients.
    pub fn new(replicas: Vec<(String, C)>) -> Result<Self, PeerError> {
        if replicas.is_empty() {
            return Err(PeerError::Invalid(
                "--tracker: give at least one tracker URL".into(),
            ));
        }
        let rotation = Rotation::new(replicas.len());
        Ok(Self {
            replicas: replicas.into(),
            rotation: Arc::new(Mutex::new(rotation)),
        })
    }

    /// The URL of the replica in use: the last that answered (the first
    /// given, before any call).
    pub fn current(&self) -> &str {
        &self.replicas[self.rotation().current].0
    }

    /// Every replica's URL, in the order given.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|(url, _)| url.clone()).collect()
    }

    /// `call` on the replica in use, then on the others (see the module
    /// doc) until one answers; its answer. When none answers, UNAVAILABLE
    /// naming each replica's failure and `--tracker`.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let order = self.rotation().order(Instant::now());
        let mut failures = Vec::with_capacity(order.len());
        for i in order {
            let (url, client) = &self.replicas[i];
            match call(client.clone()).await {
                Err(status) if no_answer(&status) => {
                    self.rotation().failed(i, Instant::now());
                    failures.push(format!("{url}: {}", said(&status)));
                }
                answer => {
                    let moved = self.rotation().answered(i);
                    if let Some(from) = moved {
                        let from = &self.replicas[from].0;
                        info!(from = %from, to = %url, "a tracker replica stopped answering; using the next");
                    }
                    return answer.map(Response::into_inner);
                }
            }
        }
        if self.replicas.len() > 1 {
            warn!(
                replicas = self.replicas.len(),
                "no tracker replica answered"
            );
        }
        Err(Status::unavailable(format!(
            "no tracker answered ({}); check --tracker",
            failures.join("; ")
        )))
    }

    fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        // Updates leave the rotation consistent at every step: a panic
        // elsewhere cannot have left it half-changed.
        self.rotation.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A failed call that got no answer from the replica, as opposed to an
/// answer refusing it; the same codes [`PeerError::tracker`] calls
/// unreachable.
pub fn no_answer(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// A status's message, or its code when it has none.
fn said(status: &Status) -> String {
    match status.message() {
        "" => hive_runtime::grpc::code_name(status.code()).to_owned(),
        m => m.to_owned(),
    }
}

/// Which replica is in use, and which rest.
#[derive(Debug)]
struct Rotation {
    current: usize,
    /// Per replica: resting after it did not answer.
    resting: Vec<Option<Rest>>,
}

#[derive(Debug, Clone, Copy)]
struct Rest {
    until: Instant,
    backoff: Duration,
}

impl Rotation {
    fn new(replicas: usize) -> Self {
        Self {
            current: 0,
            resting: vec![None; replicas],
        }
    }

    /// The order to ask the replicas in at `now`: the one in use, then the
    /// ones after it in the order given (wrapping around); those resting
    /// after the others, in the same order.
    fn order(&self, now: Instant) -> Vec<usize> {
        let n = self.resting.len();
        let ring = (0..n).map(|k| (self.current + k) % n);
        let (ready, resting): (Vec<usize>, Vec<usize>) =
            ring.partition(|&i| self.resting[i].is_none_or(|r| now >= r.until));
        ready.into_iter().chain(resting).collect()
    }

    /// Replica `i` answered: it is in use from now on and rests no more.
    /// The replica it replaces, if another.
    fn answered(&mut self, i: usize) -> Option<usize> {
        self.resting[i] = None;
        let before = std::mem::replace(&mut self.current, i);
        (before != i).then_some(before)
    }

    /// Replica `i` did not answer at `now`: it rests, twice as long as last
    /// time. A failure while it rests (a call that started before) does
    /// not lengthen the rest.
    fn failed(&mut self, i: usize, now: Instant) {
        let backoff = match self.resting[i] {
            Some(r) if now < r.until => return,
            Some(r) => (r.backoff * 2).min(BACKOFF_MAX),
            None => BACKOFF_MIN,
        };
        self.resting[i] = Some(Rest {
            until: now + backoff,
            backoff,
        });
    }
}

#[cfg(test)]
#[path = "trackers_tests.rs"]
mod tests;
