//! The daemons' one shutdown path: the first Ctrl-C or SIGTERM starts a
//! graceful stop; a second one ends the process at once.

use tracing::{info, warn};

/// Resolves on the first Ctrl-C or SIGTERM, and arms the forced exit.
pub async fn signal() {
    wait().await;
    info!("shutting down gracefully; signal again to stop at once");
    tokio::spawn(async {
        wait().await;
        warn!("second signal: stopping now");
        std::process::exit(130);
    });
}

async fn wait() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops gracefully");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
