//! Which daemon a command talks to, and what to tell the user when it is not
//! there or not what it should be: every such message names the flag that
//! points peerctl elsewhere.

use std::time::Duration;

use hive::pb::control::{self as ctl, control_client::ControlClient};
use tonic::{Code, Status, transport::Channel};

use crate::{Failure, cli::Cli};

/// The tracker asked when neither --tracker nor a daemon names one.
pub const DEFAULT_TRACKER: &str = "http://127.0.0.1:65001";

/// How long peerctl waits to learn the tracker of the daemon at --peer.
const ASK_DAEMON: Duration = Duration::from_secs(3);

/// A daemon peerctl talks to.
pub struct Target {
    pub url: String,
    /// What it should be: "tracker", "peer daemon", ...
    what: &'static str,
    /// What it may be instead when it does not serve the service asked for.
    instead: &'static str,
    /// How to point peerctl at the right one.
    fix: String,
}

impl Target {
    /// The peer daemon's Control service, at --peer.
    pub fn peer(cli: &Cli) -> Self {
        Self {
            url: cli.peer.clone(),
            what: "peer daemon's control port",
            instead: "a tracker, or a peer's public port",
            fix: "give the daemon's control address with --peer".into(),
        }
    }

    /// The tracker for `files` and `locate`: --tracker if given, else the
    /// one the daemon at --peer uses, else the default.
    pub async fn tracker(cli: &Cli) -> Self {
        let (url, fix) = match &cli.tracker {
            Some(url) => (
                url.clone(),
                "give the tracker's address with --tracker".into(),
            ),
            None => match daemon_tracker(&cli.peer).await {
                Some(url) => {
                    let fix = format!(
                        "it is the --tracker of the peer at {}; give another with --tracker",
                        host_port(&cli.peer)
                    );
                    (url, fix)
                }
                None => (
                    DEFAULT_TRACKER.to_owned(),
                    "no peer daemon answered at --peer to say which tracker it uses; \
                     give the tracker's address with --tracker"
                        .into(),
                ),
            },
        };
        Self {
            url,
            what: "tracker",
            instead: "a peer",
            fix,
        }
    }

    /// Any daemon, for `health`.
    pub fn any(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            what: "daemon",
            instead: "not a gRPC server",
            fix: "check the address".into(),
        }
    }

    pub async fn connect(&self) -> Result<Channel, Failure> {
        let uri = hive_runtime::grpc::uri_of(&self.url);
        hive_runtime::grpc::endpoint(&uri)
            .map_err(|e| {
                Failure::Local(format!(
                    "bad {} URL {:?}: {e}; {}",
                    self.what, self.url, self.fix
                ))
            })?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| {
                Failure::Status(Status::unavailable(format!(
                    "cannot reach the {} at {uri}: {}; {}",
                    self.what,
                    causes(&e),
                    self.fix
                )))
            })
    }

    /// A failure of a call to this daemon, said so the user knows what to
    /// change: a daemon without the service asked for (UNIMPLEMENTED, with
    /// no message) is the wrong daemon.
    pub fn explain(&self, failure: Failure) -> Failure {
        match failure {
            Failure::Status(s) if s.code() == Code::Unimplemented => {
                Failure::Status(Status::unimplemented(format!(
                    "{} is not a hive {} (it is {}?); {}",
                    host_port(&self.url),
                    self.what,
                    self.instead,
                    self.fix
                )))
            }
            other => other,
        }
    }
}

/// The tracker URL the daemon at `peer` uses, if it answers.
async fn daemon_tracker(peer: &str) -> Option<String> {
    let ask = async {
        let channel = hive_runtime::grpc::endpoint(&hive_runtime::grpc::uri_of(peer))
            .ok()?
            .connect()
            .await
            .ok()?;
        let status = ControlClient::new(channel)
            .status(ctl::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        Some(status.tracker).filter(|t| !t.is_empty())
    };
    tokio::time::timeout(ASK_DAEMON, ask).await.ok().flatten()
}

/// An error and its causes on one line: tonic's transport error alone says
/// only "transport error". A cause that repeats the one before is left out.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// `HOST:PORT` of a URL.
pub fn host_port(url: &str) -> &str {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
}
