//! What every hive gRPC port and client has in common: the introspection
//! services (reflection v1 and v1alpha, grpc.health.v1), HTTP/2 settings
//! measured to matter for bulk streams (docs/PERFORMANCE.md), and metadata names.

use std::{net::SocketAddr, time::Duration};

use tonic::{
    service::Routes,
    transport::{
        Endpoint, Server,
        server::{TcpConnectInfo, TcpIncoming, TlsConnectInfo},
    },
};
use tonic_health::server::HealthReporter;
pub use tonic_reflection::server::Error as ReflectionError;

use hive::pb;

use crate::tls::Tls;

mod accept;
mod budget;
mod conn;
mod frames;
mod limits;

pub use accept::{Caps, EVICT_IDLE, Incoming, UnixIncoming, connections};
pub use budget::{AnswerBudget, Bounded, BoundedAnswersLayer, connections_ended};
pub use conn::{Conn, HANDSHAKE_TIMEOUT, abort_connection, abort_connections_on};
pub use frames::{SmallFrames, SmallFramesLayer};
pub use limits::{Limits, open_files_limit, raise_open_files_limit};

/// The standard health service's name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Request metadata carrying a peer's session token.
pub const TOKEN_METADATA: &str = "x-peer-token";

/// Chunks stream in messages of this many bytes (the last one shorter).
pub const STREAM_MESSAGE_BYTES: usize = 256 * 1024;
/// A client refuses any chunk stream message larger than this: one full
/// message plus room for protobuf framing.
pub const MAX_STREAM_MESSAGE: usize = STREAM_MESSAGE_BYTES + 1024;

/// The largest HTTP/2 frame; a receiver that allows it moves bulk data with
/// far fewer frames (1.3-2.3x on loopback, docs/PERFORMANCE.md).
pub const MAX_FRAME_SIZE: u32 = 16_777_215;
/// HTTP/2 flow-control windows for receiving bulk streams. A window is also
/// how much a holder may push before the receiver reads it, per stream and
/// per connection: these keep a download from three holders of a 4 GiB
/// file under 100 MiB, and measured as fast at 1 GiB as windows twice the
/// size.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// HTTP/2 keepalive: ping an idle connection this often...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and drop it if the ping is not answered within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive, for connections that go silent below HTTP/2.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Streams a client may make the server reset (by sending frames that are
/// errors on them, "MadeYouReset") before the connection gets GOAWAY; h2's
/// default.
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams a client may reset before the server has accepted them (rapid
/// reset) before the connection gets GOAWAY; h2's default.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// A server builder with hive's HTTP/2 settings. Callers add their own
/// limits (timeouts, concurrency) on top, and serve it on [`incoming`].
///
/// The reset-stream limits are set explicitly because tonic otherwise
/// hands hyper `None`, which hyper reads as "no limit" for the local
/// error resets: a client could then make the server start and reset
/// streams without end, each one's handler running without counting
/// against `max_concurrent_streams`.
pub fn server() -> Server {
    Server::builder()
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_frame_size(MAX_FRAME_SIZE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
}

/// The connections accepted on a bound listener, with TCP_NODELAY and TCP
/// keepalive set, each closed if it sends no HTTP/2 preface within
/// [`HANDSHAKE_TIMEOUT`], and closable by its handlers through
/// [`abort_connection`]. (`Server::tcp_nodelay` does not apply to a
/// listener the caller bound; without NODELAY, small responses wait out
/// delayed ACKs.)
pub fn incoming(listener: tokio::net::TcpListener) -> Incoming {
    Incoming::new(
        TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE)),
    )
}

/// [`incoming`] for a server of small unary answers that puts
/// [`SmallFramesLayer`] on its responses (the tracker): its connections
/// report no vectored writes, so h2 copies the layer's frames into its write
/// buffer and sends many answers with one system call.
pub fn incoming_small_answers(listener: tokio::net::TcpListener) -> Incoming {
    incoming(listener).without_vectored_writes()
}

/// The caps `limits` puts on a public port's connections.
pub fn caps(limits: &Limits) -> Caps {
    Caps {
        per_ip: (limits.max_conns_per_ip > 0).then_some(limits.max_conns_per_ip),
        total: limits.total_conns(),
    }
}

/// The caps of a loopback-only port: in all, not per address. Counted
/// apart from the public port's, like every listener's.
pub fn loopback_caps(limits: &Limits) -> Caps {
    Caps {
        per_ip: None,
        ..caps(limits)
    }
}

/// The answer budget and send deadline `limits` sets, for a server whose
/// answers go to hyper `piece` bytes at a time ([`BoundedAnswersLayer`]).
pub fn bounded_answers(limits: &Limits, piece: usize) -> BoundedAnswersLayer {
    BoundedAnswersLayer::new(limits.answer_budget_bytes(), limits.send_deadline, piece)
}

/// [`server`] serving TLS with `tls` (mutual: a client certificate from the
/// swarm CA required), or plaintext without. The handshake is bounded by
/// [`HANDSHAKE_TIMEOUT`] and runs after [`incoming`] has counted the
/// connection against its caps, so unfinished handshakes hold slots, not
/// more; a plaintext client gets its connection closed at its first bytes.
pub fn server_with(tls: Option<&Tls>) -> Result<Server, tonic::transport::Error> {
    match tls {
        Some(tls) => server().tls_config(tls.server()),
        None => Ok(server()),
    }
}

/// Why a URL cannot be dialled as asked.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(
        "{0} is https:// but no TLS is set up: give --tls-cert, --tls-key and --tls-ca \
         (`peerctl certs new`)"
    )]
    NoTls(String),
    #[error("{0} is plaintext (http://) but TLS is set up (--tls-cert): give https://")]
    Plaintext(String),
    #[error("{0}: {1}")]
    Transport(String, tonic::transport::Error),
}

/// A client endpoint for `url` as [`endpoint`] makes it, over TLS with
/// `tls` when set. With `tls`, `HOST:PORT` means `https://HOST:PORT` and an
/// `http://` URL is refused: one set up with TLS never falls back to
/// plaintext; an `https://` URL without `tls` is refused too.
pub fn dial(url: &str, tls: Option<&Tls>) -> Result<Endpoint, DialError> {
    let uri = match tls {
        Some(_) => tls_uri_of(url),
        None => uri_of(url),
    };
    let https = is_https(&uri);
    let endpoint = endpoint(&uri).map_err(|e| DialError::Transport(url.to_owned(), e))?;
    match (tls, https) {
        (Some(tls), true) => endpoint
            .tls_config(tls.client())
            .map_err(|e| DialError::Transport(url.to_owned(), e)),
        (None, false) => Ok(endpoint),
        (None, true) => Err(DialError::NoTls(url.to_owned())),
        (Some(_), false) => Err(DialError::Plaintext(url.to_owned())),
    }
}

fn is_https(uri: &str) -> bool {
    uri.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// A client endpoint for `uri` (`http://host:port`) with hive's transport
/// settings: large frames and windows for bulk streams, keepalives to notice
/// a peer that vanished.
pub fn endpoint(uri: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_frame_size(MAX_FRAME_SIZE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW))
}

/// A status code as gRPC tooling names it (`NOT_FOUND`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `host:port` or a full URI, as an `http://` URI.
pub fn uri_of(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// `host:port` or a full URI, as an `https://` URI.
pub fn tls_uri_of(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("https://{addr}")
    }
}

/// The local and remote address of the connection a request came on,
/// plaintext or TLS.
pub fn conn_addrs(extensions: &http::Extensions) -> Option<(SocketAddr, SocketAddr)> {
    let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|i| i.get_ref())
    })?;
    tcp.local_addr.zip(tcp.remote_addr)
}

/// The routes every hive gRPC port serves besides its own service (named
/// `service`, e.g. `hive.tracker.v1.Tracker`): server reflection (v1, and
/// v1alpha for grpcurl 1.8) listing that service and health, and describing
/// every hive type; and the health service, with the reporter that sets it.
pub fn introspection(service: &str) -> Result<(Routes, HealthReporter), ReflectionError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Each reflection service lists itself beside the port's own services.
    let reflection = |itself: &str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name(HEALTH_SERVICE)
            .with_service_name(itself)
    };
    let routes = Routes::new(health)
        .add_service(reflection("grpc.reflection.v1.ServerReflection").build_v1()?)
        .add_service(reflection("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?);
    Ok((routes, reporter))
}
