//! `raw-fetch`: what gRPC itself can move to disk with verification. Fetches
//! a file from one or more `raw-server`s over N parallel streams (one
//! connection each), hashes every chunk as hive does (BLAKE3 subtree digests
//! of the adaptive chunk size), writes each verified chunk with a positioned
//! write, and prints the whole-file BLAKE3 digest those chunks combine into.
//! None of hive's work: no tracker, no swarm scheduling, no part file, no
//! final re-verification.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hive::{
    ChunkIndex, ChunkSize, Digest, Layout,
    digest::{self, ChunkHasher},
};
use hive_bench::pb::{self, bulk_client::BulkClient};
use hive_runtime::grpc::{self, MAX_STREAM_MESSAGE};
use serde_json::json;
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Requests {
    /// Each stream asks once for one contiguous share of the file.
    Range,
    /// Each stream asks for one chunk at a time, as hive's swarm does.
    Chunk,
}

/// Fetch a file from raw-servers into a file, verifying every chunk.
#[derive(Parser, Debug)]
#[command(name = "raw-fetch")]
struct Args {
    /// A raw-server's address (HOST:PORT); repeat for several sources.
    #[arg(long = "server", required = true)]
    servers: Vec<String>,

    /// Parallel streams, each on its own connection, spread over the servers
    /// in turn; default one per server.
    #[arg(long)]
    streams: Option<usize>,

    /// How the file is asked for.
    #[arg(long, value_enum, default_value_t = Requests::Range)]
    requests: Requests,

    /// Where to write the file (replaced).
    #[arg(long)]
    out: PathBuf,

    /// fsync the file before reporting.
    #[arg(long)]
    fsync: bool,

    /// Fail unless the file's BLAKE3 digest is this (hex).
    #[arg(long)]
    expect: Option<String>,
}

/// A share of the work: chunks `first..=last`, asked for in one request.
#[derive(Clone, Copy)]
struct Job {
    first: u32,
    last: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let streams = args.streams.unwrap_or(args.servers.len()).max(1);
    let mut clients = Vec::with_capacity(streams);
    for i in 0..streams {
        let addr = &args.servers[i % args.servers.len()];
        let channel = grpc::endpoint(&grpc::uri_of(addr))?.connect().await?;
        clients.push(BulkClient::new(channel).max_decoding_message_size(MAX_STREAM_MESSAGE));
    }
    let size = clients[0].info(pb::InfoRequest {}).await?.into_inner().size;
    let layout = Layout::new(size, ChunkSize::for_file(size))?;
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&args.out)
        .with_context(|| format!("{}", args.out.display()))?;
    out.set_len(size)?;
    let out = Arc::new(out);

    let jobs = Arc::new(jobs(&layout, streams, args.requests));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for client in clients {
        let (jobs, next, out) = (jobs.clone(), next.clone(), out.clone());
        workers.spawn(async move {
            let mut digests = Vec::new();
            loop {
                let Some(&job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return anyhow::Ok(digests);
                };
                digests.extend(fetch(client.clone(), &layout, job, &out).await?);
            }
        });
    }
    let mut chunks = vec![None; layout.count() as usize];
    while let Some(done) = workers.join_next().await {
        for (pos, d) in done?? {
            chunks[pos] = Some(d);
        }
    }
    let chunks: Vec<Digest> = chunks
        .into_iter()
        .collect::<Option<_>>()
        .context("some chunks were never fetched")?;
    if args.fsync {
        let out = out.clone();
        tokio::task::spawn_blocking(move || out.sync_all()).await??;
    }
    let digest = digest::file_digest(&layout, &chunks).context("chunk count")?;
    let elapsed = started.elapsed();
    println!(
        "{}",
        json!({
            "bytes": size,
            "elapsed_us": elapsed.as_micros() as u64,
            "mb_s": size as f64 / elapsed.as_secs_f64() / 1e6,
            "streams": streams,
            "digest": digest.to_hex(),
        })
    );
    if let Some(want) = &args.expect
        && *want != digest.to_hex()
    {
        bail!("digest mismatch: got {digest}, expected {want}");
    }
    Ok(())
}

/// The file's chunks cut into jobs: `streams` contiguous shares, or one job
/// per chunk.
fn jobs(layout: &Layout, streams: usize, requests: Requests) -> Vec<Job> {
    let count = layout.count();
    match requests {
        Requests::Chunk => (1..=count).map(|c| Job { first: c, last: c }).collect(),
        Requests::Range => {
            let per = count.div_ceil(streams as u32).max(1);
            (0..count.div_ceil(per))
                .map(|i| Job {
                    first: i * per + 1,
                    last: ((i + 1) * per).min(count),
                })
                .collect()
        }
    }
}

/// Streams one job's chunks, verifying each and writing it once complete.
async fn fetch(
    mut client: BulkClient<Channel>,
    layout: &Layout,
    job: Job,
    out: &Arc<File>,
) -> anyhow::Result<Vec<(usize, Digest)>> {
    let chunk = |n: u32| -> anyhow::Result<ChunkIndex> { Ok(layout.chunk(u64::from(n))?) };
    let start = layout.range(chunk(job.first)?).start;
    let end = layout.range(chunk(job.last)?).end;
    let mut stream = client
        .read(pb::ReadRequest {
            offset: start,
            len: end - start,
        })
        .await?
        .into_inner();
    let mut digests = Vec::new();
    let mut current = chunk(job.first)?;
    let mut hasher = ChunkHasher::new(layout, current);
    let mut want = u64::from(layout.chunk_len(current));
    let mut frames: Vec<Bytes> = Vec::new();
    while let Some(msg) = stream.message().await? {
        let mut data = msg.data;
        while !data.is_empty() {
            let take = (want - hasher.len()).min(data.len() as u64) as usize;
            if take == 0 {
                bail!("the server sent more than asked for");
            }
            let piece = data.split_to(take);
            hasher.update(&piece);
            frames.push(piece);
            if hasher.len() == want {
                let d = hasher.finalize().context("empty chunk")?;
                digests.push((current.position(), d));
                write(
                    out,
                    layout.range(current).start,
                    std::mem::take(&mut frames),
                )
                .await?;
                if current.get() == job.last {
                    continue;
                }
                current = chunk(current.get() + 1)?;
                hasher = ChunkHasher::new(layout, current);
                want = u64::from(layout.chunk_len(current));
            }
        }
    }
    if digests.len() != (job.last - job.first + 1) as usize {
        bail!("the stream ended early");
    }
    Ok(digests)
}

/// Writes one verified chunk's pieces at `offset`, off the async threads.
async fn write(out: &Arc<File>, offset: u64, frames: Vec<Bytes>) -> anyhow::Result<()> {
    let out = out.clone();
    tokio::task::spawn_blocking(move || {
        let mut at = offset;
        for f in frames {
            out.write_all_at(&f, at)?;
            at += f.len() as u64;
        }
        std::io::Result::Ok(())
    })
    .await??;
    Ok(())
}
