//! The peer's session with the tracker, owned by one task.
//!
//! The task registers everything the peer holds (seed message 1), heartbeats,
//! and announces what the holdings publish (message 4) in batches, so a
//! 1,024-chunk download costs a handful of calls, not 1,024. Queued
//! announcements survive a tracker outage. When the tracker has forgotten
//! the peer (a heartbeat answered NOT_FOUND: restarted, or the peer was
//! silent past the TTL), the task registers again with every chunk it
//! holds, and nothing is lost. On shutdown it leaves (message 6).
//!
//! # Layout
//! - [`session`]: the task: its state machine, its calls, and (in
//!   `session/register.rs`) registration.
//! - [`batch`]: chunk announcements merged per file until they are due (pure).
//! - [`locate`]: Locate answers, validated (plain functions).
//! - [`trackers`]: the tracker replicas (`--tracker A,B`), the one in use,
//!   and failing over to the next when it stops answering; every call below
//!   goes through it.
//! - [`adopt`]: a file refused in its own chunk size, hashed again in the
//!   swarm's; the session hears of it from the holdings.
//!
//! This module is the client side of the wire boundary: everything it hands
//! out (a located file, its holders) is validated domain data, and every
//! failed call is a [`PeerError`] from the boundary on.

mod adopt;
pub mod batch;
pub mod locate;
mod session;
#[cfg(test)]
mod tests;
pub mod trackers;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hive::{FileName, Manifest};
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use self::session::refusal;
pub use self::{
    locate::{Holder, Located},
    trackers::Trackers,
};
use crate::{
    error::PeerError,
    holdings::Holdings,
    scan::{Found, HashCache},
};

/// Deadline of every call to the tracker.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a flush waits for the tracker before its caller goes on (the
/// announcements stay queued): a download never hangs on a tracker that is
/// down.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Where this peer serves, as the tracker should hear it.
#[derive(Debug, Clone)]
pub struct Announce {
    pub port: u16,
    /// Only used by trackers that trust advertised hosts.
    pub host: String,
}

/// The session as others may see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub peer_id: String,
    /// The address the tracker gives other peers for us.
    pub addr: String,
}

/// What callers ask of the session task.
enum Command {
    Share {
        files: Vec<Found>,
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
    Flush {
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
    Leave {
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
    Withdraw {
        name: FileName,
        ack: oneshot::Sender<Result<(), PeerError>>,
    },
}

/// A cheap handle to the session task, and a client for read-only calls.
#[derive(Clone)]
pub struct TrackerLink {
    tx: mpsc::UnboundedSender<Command>,
    session: watch::Receiver<Option<SessionInfo>>,
    trackers: Trackers,
    /// Most holders a Locate asks for.
    locate_holders: u32,
}

impl TrackerLink {
    /// Starts the session task for the tracker replicas at `urls` (see
    /// [`trackers`]). It registers what `holdings` holds as soon as a
    /// tracker answers, and announces every change they publish from now on.
    /// Its Locates ask for `locate_holders` holders at most; it dials over
    /// TLS with `tls`.
    pub fn start(
        urls: &[String],
        tls: Option<&hive_runtime::tls::Tls>,
        locate_holders: u32,
        announce: Announce,
        holdings: Holdings,
        cache: Arc<Mutex<HashCache>>,
    ) -> Result<Self, PeerError> {
        let trackers = Trackers::connect_lazy(urls, tls)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (session_tx, session) = watch::channel(None);
        let (refused_tx, refused) = mpsc::unbounded_channel();
        let changes = holdings.subscribe();
        hive_runtime::task::spawn(
            "adopt-layout",
            adopt::run(trackers.clone(), holdings.clone(), cache, refused),
        );
        let session_task =
            session::Session::new(trackers.clone(), announce, holdings, session_tx, refused_tx);
        hive_runtime::task::spawn("tracker-link", session_task.run(rx, changes));
        Ok(Self {
            tx,
            session,
            trackers,
            locate_holders,
        })
    }

    /// The tracker replicas, and the one in use.
    pub fn trackers(&self) -> &Trackers {
        &self.trackers
    }

    /// The current session, if the tracker has accepted this peer.
    pub fn session(&self) -> Option<SessionInfo> {
        self.session.borrow().clone()
    }

    /// Resolves once the tracker has accepted this peer (again).
    pub fn sessions(&self) -> watch::Receiver<Option<SessionInfo>> {
        self.session.clone()
    }

    /// Registers new complete files; once the tracker accepts them they are
    /// added to the holdings. All or nothing.
    pub async fn share(&self, files: Vec<Found>) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Share { files, ack })?;
        done.await.map_err(|_| stopped())?
    }

    /// Sends every queued announcement now (including every change the
    /// holdings published before this call); resolves when the tracker has
    /// them, or with an error when it cannot be reached: at once if its
    /// last call failed, else after [`FLUSH_WAIT`]. Announcements that were
    /// not sent stay queued and go out once the tracker answers.
    pub async fn flush(&self) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Flush { ack })?;
        match tokio::time::timeout(FLUSH_WAIT, done).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => Err(PeerError::Unavailable(format!(
                "the tracker has not answered in {FLUSH_WAIT:?}; chunk updates stay queued"
            ))),
        }
    }

    /// Leaves the tracker (message 6) after a last flush; the session is not
    /// renewed afterwards.
    pub async fn leave(&self) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Leave { ack })?;
        done.await.map_err(|_| stopped())?
    }

    /// Tells the tracker this peer holds `name` no longer (the holdings
    /// stopped serving it already). Unregistered, there is nothing to tell:
    /// the next registration leaves it out.
    pub async fn withdraw(&self, name: &FileName) -> Result<(), PeerError> {
        let (ack, done) = oneshot::channel();
        self.send(Command::Withdraw {
            name: name.clone(),
            ack,
        })?;
        done.await.map_err(|_| stopped())?
    }

    /// Seed message 3: where `name` is, validated; this peer is never among
    /// the holders. Holders are returned as the tracker lists them; a holder
    /// with a malformed entry is skipped.
    pub async fn locate(&self, name: &FileName) -> Result<Located, PeerError> {
        let me = self.session().map(|s| s.peer_id);
        locate::locate(
            &self.trackers,
            name,
            None,
            self.locate_holders,
            me.as_deref(),
        )
        .await
    }

    /// Asks again where a file is, for a download that has its manifest:
    /// the tracker leaves the manifest out unless the content changed.
    pub async fn relocate(&self, known: &Manifest) -> Result<Located, PeerError> {
        let me = self.session().map(|s| s.peer_id);
        let holders = self.locate_holders;
        locate::locate(
            &self.trackers,
            known.name(),
            Some(known),
            holders,
            me.as_deref(),
        )
        .await
    }

    /// One page of the tracker's file list, passed through as ListFiles
    /// answers it (the web UI's list of files to fetch).
    pub async fn list_files(
        &self,
        req: hive::pb::tracker::ListFilesRequest,
    ) -> Result<hive::pb::tracker::ListFilesResponse, PeerError> {
        self.trackers
            .call(|mut client| {
                let req = req.clone();
                async move { client.list_files(req).await }
            })
            .await
            .map_err(|s| PeerError::tracker(&s))
    }

    fn send(&self, cmd: Command) -> Result<(), PeerError> {
        self.tx.send(cmd).map_err(|_| stopped())
    }
}

fn stopped() -> PeerError {
    PeerError::Unavailable("the tracker session has stopped".into())
}
