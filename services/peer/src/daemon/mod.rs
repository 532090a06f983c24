//! The daemon's wiring: [`serve`] builds every part from the flags, runs the
//! public Peer service and the local Control service, and takes them down on
//! the one shutdown path (`shutdown`). What happens before serving (the
//! directories, the first scan, resume, health) is in `startup`.

mod shutdown;
mod startup;

use std::{
    future::Future,
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
use tokio::net::{TcpListener, UnixListener};
use tonic_health::ServingStatus;
use tracing::info;

use self::shutdown::{Servers, Stops};
use crate::{
    Config, access, control,
    error::PeerError,
    fetch::{Ctx, Fetcher, origins::Origins},
    holdings::Holdings,
    metrics::Counters,
    pool::Pool,
    server::{self, DrainRule, Slots},
    share::{Sharing, Unshared},
    status::Overview,
    throttle::{Limits, check_rate},
    tracker_link::TrackerLink,
    transfers::{self, Transfers},
    watch,
    web::{self, WebListener},
};

/// Connections are recycled after this long, so none can squat forever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(600);
const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);

/// The daemon's bound sockets.
pub struct Listeners {
    /// The public Peer service.
    pub public: TcpListener,
    /// The Control service.
    pub control: ControlListeners,
    /// Prometheus metrics over HTTP, if wanted.
    pub metrics: Option<TcpListener>,
    /// The web UI (`--web`), if wanted.
    pub web: Option<WebListener>,
}

/// Where the Control service listens (see [`crate::access`]).
pub struct ControlListeners {
    /// The owner-only Unix socket; always.
    pub socket: UnixListener,
    /// TCP control, opt-in: a loopback address, and the cookie every call
    /// must carry.
    pub tcp: Option<(TcpListener, String)>,
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
    if let Some((tcp, _)) = &listeners.control.tcp {
        let addr = tcp
            .local_addr()
            .map_err(|e| PeerError::io("control socket", &e))?;
        if !addr.ip().is_loopback() {
            return Err(PeerError::Invalid(format!(
                "--control-tcp {addr} must be a loopback address"
            )));
        }
    }
    config.transport.check().map_err(PeerError::Invalid)?;
    let web_url = listeners
        .web
        .as_ref()
        .map(web::check)
        .transpose()?
        .map(web::url);
    let tls = config
        .tls
        .load()
        .map_err(|e| PeerError::Invalid(e.to_string()))?;
    if let Some(tls) = &tls {
        info!(
            fingerprint = tls.fingerprint(),
            "TLS 1.3 on every port and dial; members only"
        );
    }
    let (dir, state_dir) = startup::prepare_dirs(&config.dir)?;
    let roots = startup::share_roots(&dir, &config.share_roots)?;
    let unshared = Unshared::load(&state_dir);
    let chunk_size = config
        .chunk_size
        .map(ChunkSize::new)
        .transpose()
        .map_err(|e| PeerError::Invalid(format!("--chunk-size: {e}")))?;

    // Share what is in the directory, and pick up interrupted downloads.
    let holdings = Holdings::default();
    let (cache, resume) = {
        let (dir, state_dir, holdings) = (dir.clone(), state_dir.clone(), holdings.clone());
        let unshared = unshared.clone();
        tokio::task::spawn_blocking(move || {
            startup::load(&dir, &state_dir, chunk_size, &holdings, &unshared)
        })
        .await
        .map_err(|e| PeerError::Internal(format!("start-up task failed: {e}")))??
    };
    let cache = Arc::new(Mutex::new(cache));

    let link = TrackerLink::start(
        &config.tracker,
        tls.as_ref(),
        config.locate_holders,
        startup::announce(&config, public_addr)?,
        holdings.clone(),
        cache.clone(),
    )?;
    let counters = Arc::new(Counters::default());
    let limits = Limits::new(
        check_rate("--max-upload-rate", config.max_upload_rate)?,
        check_rate("--max-download-rate", config.max_download_rate)?,
        counters.clone(),
    );
    let slots = Slots::new(config.max_uploads, config.uploads_per_address());
    let mut registry = Registry::default();
    counters.register(&mut registry);
    let rpc = RpcMetrics::register(&mut registry, "hive_peer");
    let stops = Stops::default();
    if let Some(listener) = listeners.metrics {
        hive_runtime::task::spawn(
            "metrics",
            hive_runtime::metrics::serve(listener, Arc::new(registry), stops.metrics.clone()),
        );
    }
    let sharing = Sharing::new(
        holdings.clone(),
        link.clone(),
        cache.clone(),
        roots,
        unshared,
    );
    hive_runtime::task::spawn(
        "watch",
        watch::run(
            sharing.clone(),
            dir.clone(),
            config.watch_interval,
            stops.downloads.clone(),
        ),
    );
    let origins = Origins::default();
    let ctx = Arc::new(Ctx {
        holdings: holdings.clone(),
        link: link.clone(),
        pool: Pool::new(tls.clone()),
        config: config.clone(),
        counters: counters.clone(),
        dir,
        state_dir: state_dir.clone(),
        cache,
        download_cap: limits.download.clone(),
        origins: origins.clone(),
    });
    let fetcher = Fetcher::new(ctx, stops.downloads.clone());
    let transfers = Transfers::start(
        fetcher.clone(),
        transfers::Options {
            max_active: usize::try_from(config.max_active_transfers).unwrap_or(usize::MAX),
            on_complete: config.on_complete.clone(),
            state_dir: state_dir.clone(),
        },
        resume,
    );

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
        startup::report_health(link.clone(), vec![public_health, control_health]),
    );

    let chunk_server = server::ChunkServer {
        holdings: holdings.clone(),
        slots: slots.clone(),
        queue_wait: config.upload_queue_wait,
        send_timeout: config.send_timeout,
        drain: DrainRule {
            min_rate: config.min_upload_rate,
            window: config.drain_window,
        },
        cap: limits.upload.clone(),
        stop: stops.uploads.clone(),
        counters: counters.clone(),
        tally: server::Tally::default(),
    };
    let control_service = control::ControlService {
        sharing,
        fetcher: fetcher.clone(),
        transfers,
        overview: Overview {
            link: link.clone(),
            holdings: holdings.clone(),
            counters,
            fetcher,
            listen: public_addr.to_string(),
            limits,
            slots,
            web_url,
        },
        link: link.clone(),
        shutdown: stops.leave.clone(),
    };
    // Chunk messages are bounded already (256 KiB): handed to hyper whole.
    let limits = &config.transport;
    let public = hive_runtime::grpc::server_with(tls.as_ref())
        .map_err(internal)?
        .max_concurrent_streams(limits.max_streams)
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(CONNECTION_AGE_GRACE)
        .layer(rpc.layer())
        .layer(hive_runtime::grpc::bounded_answers(limits, usize::MAX))
        .add_routes(public_routes.add_service(PeerServer::new(chunk_server)))
        .serve_with_incoming_shutdown(
            hive_runtime::grpc::incoming(listeners.public)
                .with_caps(hive_runtime::grpc::caps(limits)),
            stops.drain.clone().cancelled_owned(),
        );
    let control = Arc::new(control_service);
    if let Some(listener) = listeners.web {
        let web = web::serve(listener, control.clone(), origins, stops.drain.clone());
        hive_runtime::task::spawn("web", web);
    }
    let socket = hive_runtime::grpc::server()
        .max_concurrent_streams(limits.max_streams)
        .layer(rpc.layer())
        .layer(hive_runtime::grpc::bounded_answers(limits, usize::MAX))
        .add_routes(
            control_routes
                .clone()
                .add_service(ControlServer::from_arc(control.clone())),
        )
        .serve_with_incoming_shutdown(
            hive_runtime::grpc::UnixIncoming::new(listeners.control.socket),
            stops.drain.clone().cancelled_owned(),
        );
    let control_tcp = match listeners.control.tcp {
        None => None,
        Some((listener, cookie)) => {
            let checked = tonic::service::interceptor::InterceptedService::new(
                ControlServer::from_arc(control),
                access::CookieCheck::new(cookie),
            );
            let server = hive_runtime::grpc::server_with(tls.as_ref())
                .map_err(internal)?
                .max_concurrent_streams(limits.max_streams)
                .layer(rpc.layer())
                .layer(hive_runtime::grpc::bounded_answers(limits, usize::MAX))
                .add_routes(control_routes.add_service(checked))
                .serve_with_incoming_shutdown(
                    hive_runtime::grpc::incoming(listener)
                        .with_caps(hive_runtime::grpc::loopback_caps(limits)),
                    stops.drain.clone().cancelled_owned(),
                );
            Some(tokio::spawn(server))
        }
    };
    let servers = Servers {
        public: tokio::spawn(public),
        control: tokio::spawn(socket),
        control_tcp,
    };

    tokio::select! {
        _ = shutdown => info!("stopping"),
        _ = stops.leave.cancelled() => info!("left the tracker; stopping"),
    }
    shutdown::wind_down(&stops, &link, servers, public_addr, config.grace).await;
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> PeerError {
    PeerError::Internal(e.to_string())
}
