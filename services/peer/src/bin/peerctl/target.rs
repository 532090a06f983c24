//! Which daemon a command talks to, and what to tell the user when it is not
//! there or not what it should be: every such message names the flag that
//! points peerctl elsewhere. A tracker may be several replicas
//! (`--tracker A,B`): they are tried in turn.

use std::{cell::Cell, path::PathBuf, time::Duration};

use hive::pb::control::{self as ctl, control_client::ControlClient};
use hive_peer::access::{self, SendCookie};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};

use hive_runtime::tls::Tls;

use crate::{Failure, cli::Cli};

/// A Control client: over the socket, or over TCP with the cookie.
pub type Ctl = ControlClient<InterceptedService<Channel, SendCookie>>;

/// The tracker asked when neither --tracker nor a daemon names one.
pub const DEFAULT_TRACKER: &str = "http://127.0.0.1:65001";

/// How long peerctl waits to learn the tracker of the daemon at --peer.
const ASK_DAEMON: Duration = Duration::from_secs(3);

/// A daemon peerctl talks to.
pub struct Target {
    /// Its URL (or the control socket's path); for a tracker, its replicas
    /// in the order to try them.
    urls: Vec<String>,
    /// The one of `urls` in use: the first that [`Target::connect`]
    /// reached, moved on by [`Target::next`].
    used: Cell<usize>,
    /// The daemon's control socket, when it is dialed there.
    socket: Option<PathBuf>,
    /// The cookie to send, for TCP control, or why it could not be read
    /// (the call then goes without, and a refusal says why).
    cookie: Result<Option<String>, String>,
    /// What it should be: "tracker", "peer daemon", ...
    what: &'static str,
    /// What it may be instead when it does not serve the service asked for.
    instead: &'static str,
    /// How to point peerctl at the right one.
    fix: String,
    /// TLS for its URL (--tls-*), or why the files could not be loaded.
    tls: Result<Option<Tls>, String>,
}

impl Target {
    /// The peer daemon's Control service: its socket (--control, else that
    /// of --dir), or TCP at --peer with the cookie.
    pub fn peer(cli: &Cli) -> Self {
        if let Some(url) = &cli.peer {
            let path = cli
                .cookie
                .clone()
                .unwrap_or_else(|| access::default_cookie(&cli.dir));
            let cookie = access::read_cookie(&path)
                .map(Some)
                .map_err(|e| format!("cannot read the cookie {}: {e}", path.display()));
            return Self {
                urls: vec![url.clone()],
                used: Cell::new(0),
                socket: None,
                cookie,
                what: "peer daemon's TCP control port",
                instead: "a tracker, or a peer's public port",
                fix: "give the daemon's --control-tcp address with --peer".into(),
                tls: tls(cli),
            };
        }
        let path = cli
            .control
            .clone()
            .unwrap_or_else(|| access::default_socket(&cli.dir));
        Self {
            urls: vec![path.display().to_string()],
            used: Cell::new(0),
            socket: Some(path),
            cookie: Ok(None),
            what: "peer daemon's control socket",
            instead: "not a hive peer",
            fix: "give the daemon's socket with --control PATH, or its share \
                  directory with --dir"
                .into(),
            tls: Ok(None),
        }
    }

    /// The tracker for `files` and `locate`: --tracker if given, else the
    /// replicas the daemon peerctl drives uses (the one it uses first), else
    /// the default.
    pub async fn tracker(cli: &Cli) -> Self {
        let peer = Self::peer(cli);
        let (urls, fix) = match &cli.tracker {
            given if !given.is_empty() => (
                given.clone(),
                "give the tracker's address with --tracker".into(),
            ),
            _ => match daemon_trackers(&peer).await {
                Some(urls) => {
                    let fix = format!(
                        "it is the --tracker of the peer at {}; give another with --tracker",
                        host_port(peer.url())
                    );
                    (urls, fix)
                }
                None => (
                    vec![DEFAULT_TRACKER.to_owned()],
                    "no peer daemon answered (--control, --peer) to say which tracker it uses; \
                     give the tracker's address with --tracker"
                        .into(),
                ),
            },
        };
        Self {
            urls,
            used: Cell::new(0),
            socket: None,
            cookie: Ok(None),
            what: "tracker",
            instead: "a peer",
            fix,
            tls: tls(cli),
        }
    }

    /// Any daemon, for `health`.
    pub fn any(cli: &Cli, url: &str) -> Self {
        Self {
            urls: vec![url.to_owned()],
            used: Cell::new(0),
            socket: None,
            cookie: Ok(None),
            what: "daemon",
            instead: "not a gRPC server",
            fix: "check the address".into(),
            tls: tls(cli),
        }
    }

    /// The URL in use.
    pub fn url(&self) -> &str {
        &self.urls[self.used.get()]
    }

    /// Moves on to the next replica, if there is one.
    pub fn next(&self) -> bool {
        let next = self.used.get() + 1;
        if next < self.urls.len() {
            self.used.set(next);
        }
        next < self.urls.len()
    }

    /// A connection to the URL in use, or else to the first after it that
    /// accepts one (which is then in use).
    pub async fn connect(&self) -> Result<Channel, Failure> {
        if let Some(path) = &self.socket {
            return self.connect_socket(path).await;
        }
        let mut failures = Vec::new();
        loop {
            match self.connect_one(self.url()).await {
                Ok(channel) => return Ok(channel),
                Err(Failure::Status(unreachable)) => {
                    failures.push(unreachable.message().to_owned())
                }
                Err(local) => return Err(local),
            }
            if !self.next() {
                break;
            }
        }
        let failures = failures.join("; ");
        Err(Failure::Status(Status::unavailable(
            match self.urls.len() {
                1 => format!("cannot reach the {} at {failures}; {}", self.what, self.fix),
                n => format!(
                    "cannot reach any of the {n} {} replicas ({failures}); {}",
                    self.what, self.fix
                ),
            },
        )))
    }

    /// A connection to the daemon's control socket; one the OS refuses to
    /// open is PERMISSION_DENIED.
    async fn connect_socket(&self, path: &std::path::Path) -> Result<Channel, Failure> {
        let dial = access::connect_socket(path);
        match tokio::time::timeout(Duration::from_secs(3), dial).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) if denied(&e) => Err(Failure::Status(Status::permission_denied(format!(
                "cannot open the {} at {}: permission denied; only the daemon's \
                     user may drive it (run peerctl as that user)",
                self.what,
                path.display()
            )))),
            Ok(Err(e)) => Err(Failure::Status(Status::unavailable(format!(
                "cannot reach the {} at {}: {}; {}",
                self.what,
                path.display(),
                causes(&e),
                self.fix
            )))),
            Err(_) => Err(Failure::Status(Status::unavailable(format!(
                "the {} at {} does not answer; {}",
                self.what,
                path.display(),
                self.fix
            )))),
        }
    }

    /// A connection to `url`; a bad URL is a local failure, and one that
    /// cannot be reached is UNAVAILABLE saying "URI: causes".
    async fn connect_one(&self, url: &str) -> Result<Channel, Failure> {
        let tls = self.tls.clone().map_err(Failure::Local)?;
        hive_runtime::grpc::dial(url, tls.as_ref())
            .map_err(|e| Failure::Local(format!("bad {} URL: {e}; {}", self.what, self.fix)))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| {
                let hint = match tls {
                    Some(_) => "",
                    None => {
                        " (if it serves TLS, give https:// with --tls-cert, --tls-key and --tls-ca)"
                    }
                };
                Failure::Status(Status::unavailable(format!("{url}: {}{hint}", causes(&e))))
            })
    }

    /// A Control client for this daemon, sending its cookie over TCP.
    pub async fn control(&self) -> Result<Ctl, Failure> {
        let cookie = match &self.cookie {
            Ok(Some(text)) => SendCookie::new(text)
                .map_err(|e| Failure::Local(format!("{e}; give --cookie PATH")))?,
            Ok(None) | Err(_) => SendCookie::default(),
        };
        Ok(ControlClient::with_interceptor(
            self.connect().await?,
            cookie,
        ))
    }

    /// A failure of a call to this daemon, said so the user knows what to
    /// change: a daemon without the service asked for (UNIMPLEMENTED, with
    /// no message) is the wrong daemon.
    pub fn explain(&self, failure: Failure) -> Failure {
        match failure {
            Failure::Status(s) if self.plaintext_refused(&s) => {
                Failure::Status(Status::unavailable(format!(
                    "{} closed the connection ({}): if it serves TLS, give https:// \
                     with --tls-cert, --tls-key and --tls-ca",
                    self.url(),
                    s.message()
                )))
            }
            Failure::Status(s) if s.code() == Code::Unimplemented => {
                Failure::Status(Status::unimplemented(format!(
                    "{} is not a hive {} (it is {}?); {}",
                    host_port(self.url()),
                    self.what,
                    self.instead,
                    self.fix
                )))
            }
            Failure::Status(s) if s.code() == Code::Unauthenticated => {
                let why = self.cookie.as_ref().err().map_or("", String::as_str);
                Failure::Status(Status::unauthenticated(format!(
                    "{} refused: {} {why}",
                    self.url(),
                    s.message()
                )))
            }
            other => other,
        }
    }
}

impl Target {
    /// Whether a plaintext call failed in the transport, as one to a TLS
    /// port does (the server closes the connection at its first bytes).
    fn plaintext_refused(&self, s: &Status) -> bool {
        let transport = std::error::Error::source(s)
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
        matches!(self.tls, Ok(None))
            && self.socket.is_none()
            && transport
            && matches!(
                s.code(),
                Code::Unknown | Code::Cancelled | Code::Unavailable
            )
    }
}

/// The TLS --tls-* asks for; an error names the flag to fix.
fn tls(cli: &Cli) -> Result<Option<Tls>, String> {
    cli.tls.load().map_err(|e| e.to_string())
}

/// The tracker replicas the daemon `peer` may use, the one it uses first,
/// if it answers.
async fn daemon_trackers(peer: &Target) -> Option<Vec<String>> {
    let ask = async {
        let status = peer
            .control()
            .await
            .ok()?
            .status(ctl::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        let in_use = Some(status.tracker).filter(|t| !t.is_empty())?;
        let others: Vec<String> = status
            .trackers
            .into_iter()
            .filter(|t| *t != in_use)
            .collect();
        Some(std::iter::once(in_use).chain(others).collect())
    };
    tokio::time::timeout(ASK_DAEMON, ask).await.ok().flatten()
}

/// Whether the OS refused to open the socket (its mode, or its directory's).
fn denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return true;
        }
        source = cause.source();
    }
    false
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
