//! The daemon's one shutdown path: stop downloads (resumable), leave the
//! tracker, drain both servers, and end uploads still running after the
//! grace period.

use std::{net::SocketAddr, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::tracker_link::TrackerLink;

/// After the grace period, how long the servers get to wind down once
/// every remaining connection was closed.
const CLOSE_OUT: Duration = Duration::from_millis(200);
/// Leaving the tracker may take at most this long at shutdown.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What each part of the daemon watches to know it must stop.
#[derive(Default)]
pub(super) struct Stops {
    /// Cancelled by `peerctl leave` once the tracker was left.
    pub leave: CancellationToken,
    /// Both servers stop accepting and finish what they serve.
    pub drain: CancellationToken,
    /// Downloads stop without pausing (they resume on restart).
    pub downloads: CancellationToken,
    /// Uploads still running after the grace period end.
    pub uploads: CancellationToken,
    pub metrics: CancellationToken,
}

/// The running gRPC servers.
pub(super) struct Servers {
    pub public: JoinHandle<Result<(), tonic::transport::Error>>,
    pub control: JoinHandle<Result<(), tonic::transport::Error>>,
    pub control_tcp: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// Takes the daemon down once it was asked to stop; `public` is the Peer
/// service's address, whose connections are closed after `grace`.
pub(super) async fn wind_down(
    stops: &Stops,
    link: &TrackerLink,
    servers: Servers,
    public: SocketAddr,
    grace: Duration,
) {
    stops.downloads.cancel();
    if !stops.leave.is_cancelled()
        && tokio::time::timeout(LEAVE_TIMEOUT, link.leave())
            .await
            .is_err()
    {
        warn!("the tracker did not answer Leave in time");
    }
    stops.drain.cancel();
    let servers = async {
        let all = [("public", servers.public), ("control", servers.control)]
            .into_iter()
            .chain(servers.control_tcp.map(|s| ("control-tcp", s)));
        for (name, server) in all {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(server = name, error = %e, "server stopped with an error"),
                Err(e) => warn!(server = name, error = %e, "server task failed"),
            }
        }
    };
    tokio::pin!(servers);
    if tokio::time::timeout(grace, &mut servers).await.is_err() {
        stops.uploads.cancel();
        let closed = hive_runtime::grpc::abort_connections_on(public);
        warn!(
            ?grace,
            connections = closed,
            "uploads still running after the grace period; ended"
        );
        let _ = tokio::time::timeout(CLOSE_OUT, servers).await;
    }
    stops.metrics.cancel();
    info!("stopped");
}
