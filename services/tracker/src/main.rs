//! `tracker`: hive's tracker daemon.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use hive_runtime::telemetry::{Telemetry, init_logging};
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

    /// Serve the read-only swarm page and its JSON API (/api/v1/) on this
    /// address, e.g. 127.0.0.1:8080; port 0 picks a free port (the address
    /// is printed on stdout as `web UI listening on http://ADDR/`). Off by
    /// default.
    /// It shows every file name, peer address and request rate, so bind it
    /// to loopback unless everyone who can reach it may see them.
    #[arg(long, env = "HIVE_WEB", value_name = "ADDR")]
    web: Option<SocketAddr>,

    /// A TOML file of settings: each key is a long flag without its dashes
    /// (`ttl = "30s"`). Flags and HIVE_* variables override it.
    #[arg(long = "config", env = "HIVE_CONFIG", value_name = "PATH")]
    config_file: Option<PathBuf>,

    #[command(flatten)]
    telemetry: Telemetry,

    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, its causes after colons.
            eprintln!("tracker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args: Args = hive_runtime::config_file::parse();
    init_logging(args.telemetry.log_format);
    // Before any connection: the connection caps are measured against it.
    hive_runtime::grpc::raise_open_files_limit();
    // Before the first `listening on`: a stop signal from then on is graceful.
    let shutdown = hive_runtime::shutdown::signal();
    let tracker = hive_tracker::connect(&args.config)
        .await
        .context("cannot open the catalog")?;
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        bind_error(
            &format!("cannot listen on {}: {e}", args.listen),
            &e,
            "--listen",
        )
    })?;
    println!("listening on {}", listener.local_addr()?);
    let metrics = hive_runtime::metrics::bind(args.telemetry.metrics)
        .await
        .map_err(|e| bind_error(&e.to_string(), &e, "--metrics"))?;
    let web = match args.web {
        Some(addr) => {
            let web = TcpListener::bind(addr).await.map_err(|e| {
                bind_error(
                    &format!("cannot serve the web UI on {addr}: {e}"),
                    &e,
                    "--web",
                )
            })?;
            // Beside `listening on`, for scripts (the log says it too).
            println!(
                "web UI listening on {}",
                hive_tracker::web::url(web.local_addr()?)
            );
            Some(web)
        }
        None => None,
    };
    hive_tracker::serve_with_web(listener, tracker, &args.config, metrics, web, shutdown).await?;
    Ok(())
}

/// `what` went wrong binding the port `flag` sets.
fn bind_error(what: &str, e: &std::io::Error, flag: &str) -> anyhow::Error {
    anyhow::anyhow!(hive_runtime::telemetry::bind_error(
        "tracker", what, e, flag
    ))
}
