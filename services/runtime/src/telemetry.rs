//! Logging for the daemons: tracing to stderr, filtered by `RUST_LOG`
//! (default `info`), as text or as JSON lines; and the operator's flags the
//! daemons share.

use std::{io::IsTerminal, net::SocketAddr};

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `--metrics` and `--log-format`, the same on the tracker and the peer.
#[derive(Debug, Clone, clap::Args)]
pub struct Telemetry {
    /// Serve Prometheus metrics over HTTP at ADDR/metrics (printed on stdout
    /// as `metrics on ADDR`).
    #[arg(long, env = "HIVE_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, env = "HIVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Call once, at the start of `main`.
/// Text is coloured only on a terminal, and never when `NO_COLOR` is set.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The one-line error for a port that `flag` sets and that could not be
/// bound (`what` says which and why): when the address is taken, most often
/// by a second `daemon` on this machine, it says how to move it.
pub fn bind_error(daemon: &str, what: &str, e: &std::io::Error, flag: &str) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "{what} (another {daemon} running here?); choose another with {flag} ADDR, \
             port 0 picks a free one"
        )
    } else {
        format!("{what} (set by {flag})")
    }
}
