//! hive's peer daemon: shares the files of its directory, serves their
//! chunks to other peers, downloads files from the swarm, and answers
//! `peerctl` on a loopback-only control port.
//!
//! # Layout
//! - [`config`]: flags and defaults.
//! - [`holdings`]: what this peer holds, by name: what GetChunk may serve,
//!   and the one place a chunk is gained or lost (each change published).
//! - [`scan`]: finding and hashing shared files, with a hash cache.
//! - [`server`]: the public Peer service (GetChunk).
//! - [`tracker_link`]: the session with the tracker (register, heartbeat,
//!   batched chunk registration, leave).
//! - [`fetch`]: downloads: the swarm engine, single chunks, part files and
//!   resume.
//! - [`pool`]: one connection per holder.
//! - [`control`]: the local Control service.
//! - [`metrics`]: counters of what moved.
//! - [`error`]: the daemon's errors and their gRPC status codes.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod error;
pub mod fetch;
pub mod holdings;
pub mod metrics;
pub mod pool;
pub mod scan;
pub mod server;
pub mod tracker_link;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use hive::{
    ChunkSize,
    pb::{
        control::control_server::{ControlServer, SERVICE_NAME as CONTROL_SERVICE},
        peer::peer_server::{PeerServer, SERVICE_NAME as PEER_SERVICE},
    },
};
use hive_runtime::metrics::RpcMetrics;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tracing::{info, warn};

pub use config::Config;
pub use error::PeerError;

use crate::{
    fetch::{Ctx, Fetcher},
    holdings::Holdings,
    metrics::Counters,
    pool::Pool,
    scan::{HashCache, STATE_DIR},
    tracker_link::{Announce, TrackerLink},
};

/// Concurrent streams one connection may open to this peer.
const MAX_STREAMS: u32 = 128;
/// Connections are recycled after this long, so none can squat forever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(600);
const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
/// After the grace period, how long the servers get to wind down once
/// every remaining connection was closed.
const CLOSE_OUT: Duration = Duration::from_millis(200);
/// Leaving the tracker may take at most this long at shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The daemon's bound sockets.
pub struct Listeners {
    /// The public Peer service.
    pub public: TcpListener,
    /// The Control service; must be a loopback address.
    pub control: TcpListener,
    /// Prometheus metrics over HTTP, if wanted.
    pub metrics: Option<TcpListener>,
}

/// Runs the peer daemon until `shutdown` resolves or `peerctl leave` asks it
/// to stop; then it stops downloads (resumable), leaves the tracker, lets
/// running uploads finish within the grace period, and returns.
pub async fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), PeerError> {
    let public_addr = listeners
        .public
        .local_addr()
        .map_err(|e| PeerError::io("public socket", &e))?;
    let control_addr = listeners
        .control
        .local_addr()
        .map_err(|e| PeerError::io("control socket", &e))?;
    if !control_addr.ip().is_loopback() {
        return Err(PeerError::Invalid(format!(
            "the control address {control_addr} must be a loopback address"
        )));
    }
    let (dir, state_dir) = prepare_dirs(&config.dir)?;
    let chunk_size = config
        .chunk_size
        .map(ChunkSize::new)
        .transpose()
        .map_err(|e| PeerError::Invalid(format!("--chunk-size: {e}")))?;

    // Share what is in the directory, and pick up interrupted downloads.
    let holdings = Holdings::default();
    let (cache, resume) = {
        let (dir, state_dir, holdings) = (dir.clone(), state_dir.clone(), holdings.clone());
        tokio::task::spawn_blocking(move || load(&dir, &state_dir, chunk_size, &holdings))
            .await
            .map_err(|e| PeerError::Internal(format!("start-up task failed: {e}")))??
    };
    let cache = Arc::new(Mutex::new(cache));

    let link = TrackerLink::start(
        &config.tracker,
        config.locate_holders,
        announce(&config, public_addr)?,
        holdings.clone(),
        cache.clone(),
    )?;
    let counters = Arc::new(Counters::default());
    let mut registry = Registry::default();
    counters.register(&mut registry);
    let rpc = RpcMetrics::register(&mut registry, "hive_peer");
    let metrics_stop = CancellationToken::new();
    if let Some(listener) = listeners.metrics {
        hive_runtime::task::spawn(
            "metrics",
            hive_runtime::metrics::serve(listener, Arc::new(registry), metrics_stop.clone()),
        );
    }
    let downloads_stop = CancellationToken::new();
    let ctx = Arc::new(Ctx {
        holdings: holdings.clone(),
        link: link.clone(),
        pool: Pool::default(),
        config: config.clone(),
        counters: counters.clone(),
        dir,
        state_dir,
        cache: cache.clone(),
    });
    let fetcher = Fetcher::new(ctx, downloads_stop.clone());
    for name in resume {
        info!(file = %name, "resuming download");
        fetcher.detached(name);
    }

    let leave = CancellationToken::new();
    let drain = CancellationToken::new();
    let uploads_stop = CancellationToken::new();
    let (public_routes, public_health) =
        hive_runtime::grpc::introspection(PEER_SERVICE).map_err(internal)?;
    let (control_routes, control_health) =
        hive_runtime::grpc::introspection(CONTROL_SERVICE).map_err(internal)?;
    // A new reporter says SERVING; this peer is not, until the tracker has
    // accepted it. Set before either port answers, so no caller sees it.
    for reporter in [&public_health, &control_health] {
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
    hive_runtime::task::spawn(
        "health",
        report_health(link.clone(), vec![public_health, control_health]),
    );

    let chunk_server = server::ChunkServer {
        holdings,
        uploads: Arc::new(Semaphore::new(config.max_uploads)),
        send_timeout: config.send_timeout,
        stop: uploads_stop.clone(),
        counters,
    };
    let public = hive_runtime::grpc::server()
        .max_concurrent_streams(MAX_STREAMS)
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(CONNECTION_AGE_GRACE)
        .layer(rpc.layer())
        .add_routes(public_routes.add_service(PeerServer::new(chunk_server)))
        .serve_with_incoming_shutdown(
            hive_runtime::grpc::incoming(listeners.public),
            drain.clone().cancelled_owned(),
        );
    let control = hive_runtime::grpc::server()
        .layer(rpc.layer())
        .add_routes(
            control_routes.add_service(ControlServer::new(control::ControlService {
                fetcher: fetcher.clone(),
                cache,
                listen: public_addr.to_string(),
                shutdown: leave.clone(),
            })),
        )
        .serve_with_incoming_shutdown(
            hive_runtime::grpc::incoming(listeners.control),
            drain.clone().cancelled_owned(),
        );
    let public = tokio::spawn(public);
    let control = tokio::spawn(control);

    tokio::select! {
        _ = shutdown => info!("stopping"),
        _ = leave.cancelled() => info!("left the tracker; stopping"),
    }
    downloads_stop.cancel();
    if !leave.is_cancelled()
        && tokio::time::timeout(LEAVE_TIMEOUT, link.leave())
            .await
            .is_err()
    {
        warn!("the tracker did not answer Leave in time");
    }
    drain.cancel();
    let servers = async {
        for (name, server) in [("public", public), ("control", control)] {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(server = name, error = %e, "server stopped with an error"),
                Err(e) => warn!(server = name, error = %e, "server task failed"),
            }
        }
    };
    tokio::pin!(servers);
    if tokio::time::timeout(config.grace, &mut servers)
        .await
        .is_err()
    {
        uploads_stop.cancel();
        let closed = hive_runtime::grpc::abort_connections_on(public_addr);
        warn!(grace = ?config.grace, connections = closed, "uploads still running after the grace period; ended");
        let _ = tokio::time::timeout(CLOSE_OUT, servers).await;
    }
    metrics_stop.cancel();
    info!("stopped");
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> PeerError {
    PeerError::Internal(e.to_string())
}

/// Creates the share directory and `.hive` inside it; returns both, absolute.
fn prepare_dirs(dir: &Path) -> Result<(PathBuf, PathBuf), PeerError> {
    std::fs::create_dir_all(dir.join(STATE_DIR)).map_err(|e| PeerError::io(dir.display(), &e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| PeerError::io(dir.display(), &e))?;
    let state_dir = dir.join(STATE_DIR);
    Ok((dir, state_dir))
}

/// Scans the share directory into `holdings` and loads saved downloads
/// (blocking); returns the hash cache and the downloads to resume.
fn load(
    dir: &Path,
    state_dir: &Path,
    chunk_size: Option<ChunkSize>,
    holdings: &Holdings,
) -> Result<(HashCache, Vec<hive::FileName>), PeerError> {
    let mut cache = HashCache::load(state_dir);
    let found = scan::scan_dir(dir, chunk_size, &mut cache)
        .map_err(|e| PeerError::io(dir.display(), &e))?;
    if let Err(e) = cache.save() {
        warn!(error = %e, "cannot save the hash cache");
    }
    for f in found {
        if let Err(e) = holdings.insert_complete(f.manifest, f.path, f.file, f.stamp) {
            warn!(error = %e, "skipped");
        }
    }
    let resume = fetch::load_saved(state_dir, holdings);
    Ok((cache, resume))
}

/// What to tell the tracker about where this peer serves.
fn announce(config: &Config, public: SocketAddr) -> Result<Announce, PeerError> {
    let Some(adv) = &config.advertise else {
        return Ok(Announce {
            port: public.port(),
            host: String::new(),
        });
    };
    let (host, port) = adv
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|&p| p != 0)?)))
        .ok_or_else(|| PeerError::Invalid(format!("--advertise {adv:?}: expected HOST:PORT")))?;
    Ok(Announce {
        port,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    })
}

/// Health ("" on both ports) is SERVING while the tracker has accepted this
/// peer: that is when it is a working member of the swarm.
async fn report_health(
    link: TrackerLink,
    reporters: Vec<tonic_health::server::HealthReporter>,
) -> Result<(), PeerError> {
    let mut sessions = link.sessions();
    loop {
        let status = if sessions.borrow_and_update().is_some() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for r in &reporters {
            r.set_service_status("", status).await;
        }
        if sessions.changed().await.is_err() {
            return Ok(());
        }
    }
}
