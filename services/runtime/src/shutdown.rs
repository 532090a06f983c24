//! The daemons' one shutdown path: the first Ctrl-C or SIGTERM starts a
//! graceful stop; a second one ends the process at once.
//!
//! The handlers are installed when [`signal`] or [`Signals::install`] is
//! called, not when the returned future is first polled: a daemon calls it
//! before it announces `listening on`, so a SIGTERM sent the moment a
//! supervisor sees that line is never met by the default action (death
//! without a Leave).

use std::future::Future;

use tracing::{info, warn};

/// Installs the handlers now and returns a future that resolves on the
/// first Ctrl-C or SIGTERM, then arms the forced exit on the second.
///
/// Must be called inside a Tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let mut signals = Signals::install();
    async move {
        signals.recv().await;
        info!("shutting down gracefully; signal again to stop at once");
        tokio::spawn(async move {
            signals.recv().await;
            warn!("second signal: stopping now");
            std::process::exit(130);
        });
    }
}

/// Ctrl-C and SIGTERM, caught from the moment of [`Signals::install`].
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Takes over SIGINT and SIGTERM for the rest of the process's life.
    /// Must be called inside a Tokio runtime.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
            match streams {
                Ok(streams) => Self {
                    streams: Some(streams),
                },
                Err(e) => {
                    warn!(error = %e, "cannot watch signals; only Ctrl-C stops gracefully");
                    Self { streams: None }
                }
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on the next Ctrl-C or SIGTERM delivered since `install`.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
