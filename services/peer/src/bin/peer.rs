//! `peer`: hive's peer daemon.

use std::net::SocketAddr;

use anyhow::{Context, bail};
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

    #[command(flatten)]
    telemetry: Telemetry,

    #[command(flatten)]
    config: Config,
}

fn main() -> anyhow::Result<()> {
    keep_buffers();
    tokio::runtime::Runtime::new()?.block_on(run())
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
    let args = Args::parse();
    init_logging(args.telemetry.log_format);
    // Before the first `listening on`: a stop signal from then on is graceful.
    let shutdown = hive_runtime::shutdown::signal();
    if !args.control.ip().is_loopback() {
        bail!(
            "--control {} must be a loopback address: the control API is local only",
            args.control
        );
    }
    let public = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", public.local_addr()?);
    let control = TcpListener::bind(args.control)
        .await
        .with_context(|| format!("cannot listen on {}", args.control))?;
    println!("control on {}", control.local_addr()?);
    let metrics = hive_runtime::metrics::bind(args.telemetry.metrics).await?;
    let listeners = Listeners {
        public,
        control,
        metrics,
    };
    hive_peer::serve(listeners, args.config, shutdown).await?;
    Ok(())
}
