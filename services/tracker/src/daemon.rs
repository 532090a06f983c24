//! Wiring: opens the catalog, serves the gRPC service with its sweeper and
//! metrics, and shuts it all down on one path, whether asked to or because
//! the catalog could no longer be made durable.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use hive::pb::tracker::tracker_server::{SERVICE_NAME as TRACKER_SERVICE, TrackerServer};
use hive_runtime::metrics::RpcMetrics;
use prometheus_client::{metrics::gauge::Gauge, registry::Registry as MetricsRegistry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Config, Tracker,
    catalog::SharedCatalog,
    error::ServiceError,
    journal::Journal,
    redb_store::RedbStore,
    redis_catalog::RedisCatalog,
    registry::Registry,
    service::TrackerService,
    state,
    store::{Store, StoreError},
};

/// Unary calls taking longer than this are cancelled.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent requests one connection may have in flight; more are refused
/// at once rather than queued.
const CONCURRENCY_PER_CONNECTION: usize = 256;
/// Answers go to hyper in pieces of this size, so that h2 queues at most
/// one beyond a client's window; the rest waits under the answer budget
/// (hive_runtime::grpc::BoundedAnswersLayer). A Locate answer is up to
/// 540 KB.
const ANSWER_PIECE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reflection(#[from] hive_runtime::grpc::ReflectionError),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Catalog(#[from] ServiceError),
}

/// Opens the catalog `config` names: the shared one at `--store`, or else
/// the embedded one ([`open`]).
pub async fn connect(config: &Config) -> Result<SharedCatalog, ServeError> {
    match &config.store {
        Some(url) => {
            config.check().map_err(ServeError::Config)?;
            let catalog = RedisCatalog::connect(url, config.limits())
                .await?
                .with_locate_cache(config.locate_cache);
            info!(store = %catalog.describe(), "shared catalog connected");
            Ok(Arc::new(catalog))
        }
        None => Ok(Arc::new(open(config)?)),
    }
}

/// Opens the embedded catalog as `config` says: redb in the data directory,
/// or memory only. Restored peers must heartbeat again within one TTL.
pub fn open(config: &Config) -> Result<Tracker, ServeError> {
    config.check().map_err(ServeError::Config)?;
    let started = Instant::now();
    let tracker = if config.in_memory {
        Tracker::new(Registry::new(config.limits()), Journal::volatile())
    } else {
        let store = Arc::new(RedbStore::open(&config.data_dir)?);
        let journal = Journal::open(&config.data_dir, store.clone(), config.durability())?;
        let catalog = store.load()?;
        let registry = Registry::restore(config.limits(), catalog, Instant::now());
        Tracker::new(registry, journal)
    };
    let stats = tracker.stats();
    info!(
        peers = stats.peers,
        files = stats.files,
        holdings = stats.holdings,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "catalog loaded"
    );
    Ok(tracker)
}

/// Serves the tracker on `listener` until `shutdown` resolves, then drains
/// in-flight calls and returns.
pub async fn serve(
    listener: TcpListener,
    tracker: SharedCatalog,
    config: &Config,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with_web(listener, tracker, config, metrics, None, shutdown).await
}

/// [`serve`], and the swarm page and its JSON API on `web` if given
/// ([`crate::web`]), stopped on the same path.
pub async fn serve_with_web(
    listener: TcpListener,
    tracker: SharedCatalog,
    config: &Config,
    metrics: Option<TcpListener>,
    web: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let stop = CancellationToken::new();
    let (rpc, gauges, registry) = start_metrics(metrics, stop.clone());
    if let Some(web) = web {
        let pages = crate::web::Web::new(tracker.clone(), registry)
            .allow_hosts(config.web_allow_host.clone());
        hive_runtime::task::spawn("web", crate::web::serve(web, pages, stop.clone()));
    }
    let sweeper = hive_runtime::task::spawn(
        "sweeper",
        sweep(tracker.clone(), config.ttl, gauges, stop.clone()),
    );
    let broken = tracker.broken();
    let stopping = async {
        tokio::select! {
            () = shutdown => {}
            () = broken.cancelled() => {}
        }
    };
    let result = serve_grpc(listener, &tracker, config, &rpc, stopping).await;
    stop.cancel();
    if let Err(e) = sweeper.await {
        warn!(error = %e, "sweeper did not stop cleanly");
    }
    result?;
    if broken.is_cancelled() {
        return Err(StoreError(
            "a commit failed; stopped so that the tracker starts again from what is durable".into(),
        )
        .into());
    }
    // Every answered call is in; the next start then has nothing to replay.
    tracker.checkpoint().await?;
    Ok(())
}

/// The gRPC server, with health and reflection, until `stopping` resolves.
async fn serve_grpc(
    listener: TcpListener,
    tracker: &SharedCatalog,
    config: &Config,
    rpc: &RpcMetrics,
    stopping: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (routes, health) = hive_runtime::grpc::introspection(TRACKER_SERVICE)?;
    let service = TrackerServer::new(TrackerService::new(tracker.clone(), config))
        .max_decoding_message_size(config.max_message_bytes);
    health.set_serving::<TrackerServer<TrackerService>>().await;
    let limits = &config.transport;
    let tls = config
        .tls
        .load()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    if let Some(tls) = &tls {
        info!(
            fingerprint = tls.fingerprint(),
            "serving TLS 1.3; members only"
        );
    }
    let incoming = hive_runtime::grpc::incoming_small_answers(listener)
        .with_caps(hive_runtime::grpc::caps(limits));
    hive_runtime::grpc::server_with(tls.as_ref())?
        .timeout(REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .load_shed(true)
        .max_concurrent_streams(limits.max_streams)
        .layer(rpc.layer())
        .layer(hive_runtime::grpc::bounded_answers(limits, ANSWER_PIECE))
        .layer(hive_runtime::grpc::SmallFramesLayer)
        .add_routes(routes.add_service(service))
        .serve_with_incoming_shutdown(incoming, stopping)
        .await?;
    Ok(())
}

/// The tracker's metrics, served on `listener` (if any) until `stop`; the
/// registry is also what the web page reads its request rates from.
fn start_metrics(
    listener: Option<TcpListener>,
    stop: CancellationToken,
) -> (RpcMetrics, Gauges, Arc<MetricsRegistry>) {
    let mut registry = MetricsRegistry::default();
    let rpc = RpcMetrics::register(&mut registry, "hive_tracker");
    let gauges = Gauges::register(&mut registry);
    let registry = Arc::new(registry);
    if let Some(listener) = listener {
        hive_runtime::task::spawn(
            "metrics",
            hive_runtime::metrics::serve(listener, registry.clone(), stop),
        );
    }
    (rpc, gauges, registry)
}

/// Expires silent peers a few times per TTL, so one is gone from answers
/// within a TTL and a bit.
async fn sweep(
    tracker: SharedCatalog,
    ttl: Duration,
    gauges: Gauges,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let period = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match tracker.sweep().await {
            Ok(gone) if gone > 0 => info!(peers = gone, "expired silent peers"),
            Ok(_) => {}
            // The journal is broken and the server is stopping.
            Err(e) => warn!(error = %e, "expiry not stored"),
        }
        match tracker.stats().await {
            Ok(stats) => gauges.set(stats),
            Err(e) => warn!(error = %e, "catalog sizes unknown"),
        }
    }
}

/// The catalog's size, refreshed by the sweeper.
struct Gauges {
    peers: Gauge,
    files: Gauge,
    holdings: Gauge,
    catalog_bytes: Gauge,
}

impl Gauges {
    fn register(registry: &mut MetricsRegistry) -> Self {
        let g = Self {
            peers: Gauge::default(),
            files: Gauge::default(),
            holdings: Gauge::default(),
            catalog_bytes: Gauge::default(),
        };
        registry.register(
            "hive_tracker_peers",
            "Peers with a session",
            g.peers.clone(),
        );
        registry.register(
            "hive_tracker_files",
            "Files in the catalog",
            g.files.clone(),
        );
        registry.register(
            "hive_tracker_holdings",
            "(peer, file) holder entries",
            g.holdings.clone(),
        );
        registry.register(
            "hive_tracker_catalog_bytes",
            "The catalog's size as --max-catalog-mib counts it",
            g.catalog_bytes.clone(),
        );
        g
    }

    fn set(&self, stats: state::Stats) {
        self.peers.set(stats.peers as i64);
        self.files.set(stats.files as i64);
        self.holdings.set(stats.holdings as i64);
        self.catalog_bytes
            .set(i64::try_from(stats.catalog_bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests;
