//! `raw-server`: the raw tonic baseline server. Streams one file as 256 KiB
//! messages (Bulk) and answers unary pings (Ping), with hive's transport
//! settings and nothing else.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

/// The raw tonic baseline server: Bulk (a file as 256 KiB messages) and Ping.
#[derive(Parser, Debug)]
#[command(name = "raw-server")]
struct Args {
    /// Address to serve on; port 0 picks a free port. The bound address is
    /// printed on stdout as `listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// The file Bulk serves; without it, only Ping is useful.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = args
        .file
        .as_ref()
        .map(|p| std::fs::File::open(p).with_context(|| format!("{}", p.display())))
        .transpose()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    hive_bench::baseline::serve(listener, file).await
}
