//! `tracker`: hive's tracker daemon.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use hive::telemetry::{Telemetry, init_logging};
use hive_tracker::Config;
use tokio::net::TcpListener;

/// Every answer allocates its holders' ids, addresses and chunk sets and
/// frees them once sent. mimalloc spends less of the tracker's CPU per
/// request on that than glibc's malloc, and keeps more memory: both are
/// measured in docs/PERFORMANCE.md ("What changed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hive's tracker: keeps which peer holds which chunk of which file.
#[derive(Parser, Debug)]
#[command(name = "tracker", version)]
struct Args {
    /// Address to serve on; port 0 picks a free port. The bound address is
    /// printed on stdout as `listening on ADDR`.
    #[arg(long, env = "HIVE_LISTEN", default_value = "0.0.0.0:65001")]
    listen: SocketAddr,

    #[command(flatten)]
    telemetry: Telemetry,

    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.telemetry.log_format);
    // Before the first `listening on`: a stop signal from then on is graceful.
    let shutdown = hive::shutdown::signal();
    let tracker = hive_tracker::connect(&args.config)
        .await
        .context("cannot open the catalog")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let metrics = hive::metrics::bind(args.telemetry.metrics).await?;
    hive_tracker::serve(listener, tracker, &args.config, metrics, shutdown).await?;
    Ok(())
}
