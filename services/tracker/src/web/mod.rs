//! The tracker's web side (`--web ADDR`): a read-only swarm page and the
//! JSON API behind it, both over the same [`Catalog`] calls the gRPC service
//! makes. Off unless asked for; it changes nothing.
//!
//! # Layout
//! - this file: the router, [`serve`], the Host check every request passes
//!   first (against DNS rebinding: an IP address, `localhost`, or a
//!   `--web-allow-host` name, as on the peer), and how a refusal becomes an
//!   HTTP status (from the gRPC code [`crate::error`] decides, so the three
//!   faces agree).
//! - [`ops`]: the operations, paged and bounded; pages and JSON call only these.
//! - [`api`]: `/api/v1/...`, JSON.
//! - [`pages`]: the HTML pages; [`strip`]: a file's availability strip.
//! - [`rates`]: request rates by RPC, read from the metrics registry.
//! - `assets/`: the page's CSS and JavaScript, embedded in the binary.

pub mod api;
pub mod ops;
pub mod pages;
pub mod rates;
pub mod strip;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry as MetricsRegistry;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{catalog::SharedCatalog, error::ServiceError};

/// What the handlers share: the catalog, the request rates, and the host
/// names the page answers to besides addresses and localhost.
#[derive(Clone)]
pub struct Web {
    catalog: SharedCatalog,
    rates: Arc<rates::Rates>,
    allow_hosts: Arc<[String]>,
}

impl Web {
    /// `metrics` is the registry the gRPC layer counts calls in.
    pub fn new(catalog: SharedCatalog, metrics: Arc<MetricsRegistry>) -> Self {
        Self {
            catalog,
            rates: Arc::new(rates::Rates::new(metrics)),
            allow_hosts: Arc::new([]),
        }
    }

    /// Also answers requests naming these hosts (`--web-allow-host`).
    pub fn allow_hosts(self, names: Vec<String>) -> Self {
        Self {
            allow_hosts: hive_runtime::web::allowed_hosts(names).into(),
            ..self
        }
    }
}

/// The routes: pages at `/`, JSON under `/api/v1/`.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(pages::files))
        .route("/files/{name}", get(pages::file))
        .route("/peers", get(pages::peers))
        .route("/stats", get(pages::stats))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .route("/api/v1/files", get(api::files))
        .route("/api/v1/files/{name}", get(api::file))
        .route("/api/v1/peers", get(api::peers))
        .route("/api/v1/stats", get(api::stats))
        .layer(middleware::from_fn_with_state(web.clone(), host_check))
        .with_state(web)
}

/// Refuses a request naming a host this page is not (DNS rebinding): 403.
async fn host_check(State(web): State<Web>, req: Request, next: Next) -> Response {
    match hive_runtime::web::host_ok(req.headers(), &web.allow_hosts, "tracker") {
        Ok(()) => next.run(req).await,
        Err(why) => Refusal {
            status: StatusCode::FORBIDDEN,
            message: why,
        }
        .into_response(),
    }
}

/// Serves the pages on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    web: Web,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "web UI listening on {}", url(addr));
    axum::serve(listener, router(web))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// The page's address, as logged.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// A page request's paging: where to start and how many.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub page_token: Option<String>,
    pub page_size: Option<usize>,
}

/// A refused request: its HTTP status and a short message for the user.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// The gRPC code decides the HTTP status, so every face refuses alike.
impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        let status = tonic::Status::from(e);
        let http = match status.code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status: http,
            message: status.message().to_owned(),
        }
    }
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
}
