//! Spawning background tasks the same way everywhere: each has a name that
//! its log lines carry, and its failure is logged, never silently dropped.

use std::{fmt::Display, future::Future};

use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info_span};

/// Spawns `fut` as the task `name`. An `Err` it returns is logged.
pub fn spawn<F, E>(name: &'static str, fut: F) -> JoinHandle<()>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    tokio::spawn(
        async move {
            match fut.await {
                Ok(()) => debug!("task finished"),
                Err(e) => error!(error = %e, "task failed"),
            }
        }
        .instrument(info_span!("task", name)),
    )
}
