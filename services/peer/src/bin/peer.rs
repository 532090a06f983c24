//! `peer`: hive's peer daemon.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::bail;
use clap::Parser;
use hive_peer::{Config, Listeners};
use hive_runtime::telemetry::{Telemetry, init_logging};
use tokio::net::TcpListener;

/// hive's peer daemon: shares a directory, serves chunks, downloads files.
#[derive(Parser, Debug)]
#[command(name = "peer", version)]
struct Args {
    /// Address of the public Peer service; port 0 picks a free port. Printed
    /// on stdout as `listening on ADDR` once bound.
    #[arg(long, env = "HIVE_LISTEN", default_value = "0.0.0.0:65050")]
    listen: SocketAddr,

    /// Address of the local Control service that peerctl talks to; must be a
    /// loopback address. Printed on stdout as `control on ADDR`.
    #[arg(long, env = "HIVE_CONTROL", default_value = "127.0.0.1:65049")]
    control: SocketAddr,

    /// A TOML file of settings: each key is a long flag without its dashes
    /// (`max-uploads = 64`). Flags and HIVE_* variables override it.
    #[arg(long = "config", env = "HIVE_CONFIG", value_name = "PATH")]
    config_file: Option<PathBuf>,

    #[command(flatten)]
    telemetry: Telemetry,

    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    keep_buffers();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, its causes after colons.
            eprintln!("peer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's allocator hands large freed buffers (the HTTP/2 and gRPC receive
/// buffers, a chunk's frames) back to the kernel and gets them again, zero
/// filled, for the next chunk: about 14% of a download's CPU went to those
/// page faults. Keep them: blocks up to 4 MiB come from the heap, and the
/// heap keeps up to 64 MiB free before shrinking. (Measured: 16% less CPU
/// per GiB fetched, peak RSS 42-46 MiB.)
fn keep_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters. It runs first thing
    // in main, before any other thread exists, with valid option constants.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

async fn run() -> anyhow::Result<()> {
    let args: Args = hive_runtime::config_file::parse();
    init_logging(args.telemetry.log_format);
    // Before any connection: the connection caps are measured against it.
    hive_runtime::grpc::raise_open_files_limit();
    // Before the first `listening on`: a stop signal from then on is graceful.
    let shutdown = hive_runtime::shutdown::signal();
    if !args.control.ip().is_loopback() {
        bail!(
            "--control {} must be a loopback address: the control API is local only",
            args.control
        );
    }
    let public = bind(args.listen, "--listen", "the public port other peers dial").await?;
    println!("listening on {}", public.local_addr()?);
    let control = bind(
        args.control,
        "--control",
        "the control port peerctl talks to",
    )
    .await?;
    println!("control on {}", control.local_addr()?);
    let metrics = hive_runtime::metrics::bind(args.telemetry.metrics)
        .await
        .map_err(|e| bind_error(&e.to_string(), &e, "--metrics"))?;
    let listeners = Listeners {
        public,
        control,
        metrics,
    };
    hive_peer::serve(listeners, args.config, shutdown).await?;
    Ok(())
}

/// Binds `addr`, the port `flag` sets; a failure names the port and the flag.
async fn bind(addr: SocketAddr, flag: &str, port: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(&format!("cannot listen on {addr}, {port}: {e}"), &e, flag))
}

/// `what` went wrong binding the port `flag` sets.
fn bind_error(what: &str, e: &std::io::Error, flag: &str) -> anyhow::Error {
    anyhow::anyhow!(hive_runtime::telemetry::bind_error("peer", what, e, flag))
}
