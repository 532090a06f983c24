//! The daemon's web UI and its HTTP/JSON API (`peer --web ADDR`), served by
//! axum on a listener of its own and stopped on the daemon's one shutdown
//! path.
//!
//! Every operation is the Control service's: the JSON handlers and the
//! pages call [`ControlService`] (or the tracker's ListFiles, for the file
//! list), so gRPC, JSON and the pages share one implementation each, and
//! one mapping of gRPC codes to HTTP ones ([`reply`]).
//!
//! - [`guard`]: who may call it: Host and Origin checks (DNS rebinding,
//!   cross-origin requests), the CSRF token every mutating request carries,
//!   and the control cookie off loopback.
//! - `api`: the JSON API under `/api/v1/`.
//! - `events`: the live event stream (server-sent events).
//! - [`chunks`]: a file's chunk map: held, in flight, missing, and where
//!   each chunk came from.
//! - `pages`: the server-rendered pages, their forms, and the embedded
//!   script and style sheet.
//! - [`reply`]: errors as JSON or HTML, with their HTTP codes.

mod api;
pub mod chunks;
mod events;
pub mod guard;
mod pages;
pub mod reply;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, middleware};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use self::guard::Guard;
use crate::{control::ControlService, error::PeerError, fetch::origins::Origins};

/// The web UI's socket and what guards it.
pub struct WebListener {
    pub listener: TcpListener,
    /// The control cookie: required on every request when the address is
    /// not loopback (and must then be given).
    pub secret: Option<String>,
    /// Host names accepted besides IP addresses and `localhost`
    /// (`--web-allow-host`).
    pub allow_hosts: Vec<String>,
}

/// What the handlers share: a cheap handle.
#[derive(Clone)]
pub struct Web {
    pub control: Arc<ControlService>,
    pub origins: Origins,
    pub guard: Arc<Guard>,
    /// Stops the event streams when the daemon stops: they never hold the
    /// server open.
    pub stop: CancellationToken,
}

/// The URL of a web UI bound to `addr`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// Checks that `web` can be guarded: off loopback, only with the secret.
pub fn check(web: &WebListener) -> Result<SocketAddr, PeerError> {
    let addr = web
        .listener
        .local_addr()
        .map_err(|e| PeerError::io("web socket", &e))?;
    if !addr.ip().is_loopback() && web.secret.is_none() {
        return Err(PeerError::Invalid(format!(
            "--web {addr} is not a loopback address, so every request must carry the \
             control cookie, and none was written; use a loopback address for --web"
        )));
    }
    Ok(addr)
}

/// Serves the web UI on `web` until `stop` is cancelled.
pub async fn serve(
    web: WebListener,
    control: Arc<ControlService>,
    origins: Origins,
    stop: CancellationToken,
) -> Result<(), PeerError> {
    let addr = check(&web)?;
    let guard = Guard::new(addr, web.secret, web.allow_hosts)?;
    let state = Web {
        control,
        origins,
        guard: Arc::new(guard),
        stop: stop.clone(),
    };
    let app = Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard::check))
        .with_state(state);
    info!("web UI listening on {}", url(addr));
    axum::serve(web.listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| PeerError::io("web UI", &e))
}
