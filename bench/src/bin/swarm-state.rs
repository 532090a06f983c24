//! `swarm-state`: builds a big swarm's state in a real tracker — by default
//! 10,000 peers and 1,000 files of 1,024 chunks with 100 holders each
//! (100,000 holder entries) — then measures the tracker's memory, Locate
//! latency, and how long it takes to answer again after `kill -9` with that
//! state on disk.
//!
//! It starts the tracker itself (on port 0, in `--data-dir`), since it has
//! to kill and restart it.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use hive::{ChunkSize, Manifest};
use hive_bench::{
    daemon::{self, Daemon},
    redis_stats::RedisStats,
    stats::{Samples, spread},
    synth, tracker,
};

/// Build a big swarm in a tracker; measure its RSS, Locate latency and restart time.
#[derive(Parser, Debug)]
#[command(name = "swarm-state")]
struct Args {
    /// The tracker binary (default: `tracker` beside this one).
    #[arg(long)]
    tracker_bin: Option<PathBuf>,

    /// The tracker's data directory; emptied first.
    #[arg(long)]
    data_dir: PathBuf,

    #[arg(long, default_value_t = 10_000)]
    peers: usize,

    #[arg(long, default_value_t = 1_000)]
    files: usize,

    /// Chunks per file (1 MiB each).
    #[arg(long, default_value_t = 1024)]
    chunks: u32,

    /// Holders of each file (at most --peers).
    #[arg(long, default_value_t = 100)]
    holders: usize,

    /// Concurrent callers while building and locating.
    #[arg(long, default_value_t = 64)]
    callers: usize,

    /// Locate calls measured (random files).
    #[arg(long, default_value_t = 20_000)]
    locates: usize,

    /// Most holders each Locate asks for; by default as many as a hive
    /// download asks for (`peer --locate-holders`). 0: the tracker's cap.
    #[arg(long, default_value_t = hive::wire::LOCATE_HOLDERS)]
    locate_holders: u32,

    /// kill -9 / restart cycles timed.
    #[arg(long, default_value_t = 5)]
    restarts: u32,

    /// The tracker's Redis (`redis://HOST:PORT`, `redis+unix:///PATH`) when
    /// it runs on one (`-- --store URL`): its `used_memory` is read with
    /// the state built, and a restart is a stateless replica's.
    #[arg(long)]
    redis: Option<String>,

    /// More tracker flags (e.g. to lift rate limits), after `--`.
    #[arg(last = true)]
    tracker_args: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.holders > args.peers {
        bail!("--holders must be at most --peers");
    }
    let bin = match &args.tracker_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no binary directory")?
            .join("tracker"),
    };
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)?;
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let log = args.data_dir.with_extension("log");
    let tracker_args = tracker_args(&args);

    let mut t = Daemon::start(&bin, &tracker_args, &log).await?;
    eprintln!("tracker {} (pid {}), log {}", t.addr, t.pid, log.display());
    let mut rng = fastrand::Rng::with_seed(42);
    let chunk_size = ChunkSize::new(1 << 20)?;
    let files: Arc<Vec<Manifest>> = Arc::new(
        (0..args.files)
            .map(|i| synth::manifest(&format!("swarm-{i:05}"), args.chunks, chunk_size, &mut rng))
            .collect::<anyhow::Result<_>>()?,
    );

    let built = Instant::now();
    let sessions = register_peers(&args, &t.addr, &files).await?;
    let registered = built.elapsed();
    let holdings = add_holdings(&args, &t.addr, &files, &sessions).await?;
    let build = built.elapsed();
    eprintln!(
        "built: {} peers registered in {:.1} s, {holdings} holdings added in {:.1} s",
        sessions.len(),
        registered.as_secs_f64(),
        (build - registered).as_secs_f64()
    );
    // Let the allocator settle, then read memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let built_mem = daemon::memory(t.pid)?;
    let redis_mem = match &args.redis {
        Some(url) => Some(RedisStats::connect(url).await?.used_memory().await?),
        None => None,
    };
    let locate = locate_load(&args, &t.addr, &files).await?;

    let mut restart = Vec::new();
    let mut listen = Vec::new();
    let mut loaded = Vec::new();
    let mut restarted_mem = daemon::Memory::default();
    for i in 1..=args.restarts {
        t.kill().await?;
        let t0 = Instant::now();
        t = Daemon::start(&bin, &tracker_args, &log).await?;
        wait_answering(&t.addr, files[0].name().as_str()).await?;
        let total = t0.elapsed();
        listen.push((t.bound - t.started).as_secs_f64());
        restart.push(total.as_secs_f64());
        if let Some(ms) = catalog_load_ms(&log) {
            loaded.push(ms / 1e3);
        }
        restarted_mem = daemon::memory(t.pid)?;
        eprintln!(
            "restart {i}: answering Locate after {:.3} s (RSS {} MiB)",
            total.as_secs_f64(),
            restarted_mem.rss_kib / 1024
        );
    }
    let after_restart = locate_load(&args, &t.addr, &files).await?;
    let disk = std::fs::metadata(args.data_dir.join("catalog.redb")).map_or(0, |m| m.len());
    t.kill().await?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "\n{} peers, {} files of {} chunks, {} holders each ({} holder entries); catalog on disk {:.0} MiB\n",
        sessions.len(),
        args.files,
        args.chunks,
        args.holders,
        holdings + args.files,
        disk as f64 / (1 << 20) as f64
    );
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| build: Register / RegisterChunk calls per second | {:.0} / {:.0} | – |",
        sessions.len() as f64 / registered.as_secs_f64(),
        holdings as f64 / (build - registered).as_secs_f64()
    );
    println!(
        "| tracker RSS with the state built (peak while building) | {:.0} MiB ({:.0} MiB) | ≤ 512 MiB: {} |",
        mib(built_mem.rss_kib),
        mib(built_mem.peak_kib),
        verdict(mib(built_mem.rss_kib) <= 512.0)
    );
    println!(
        "| tracker RSS after a restart (peak while loading) | {:.0} MiB ({:.0} MiB) | ≤ 512 MiB: {} |",
        mib(restarted_mem.rss_kib),
        mib(restarted_mem.peak_kib),
        verdict(mib(restarted_mem.peak_kib) <= 512.0)
    );
    if let Some(bytes) = redis_mem {
        let m = bytes as f64 / f64::from(1 << 20);
        println!(
            "| Redis used_memory with the state built | {m:.1} MiB | ≤ 128 MiB: {} |",
            verdict(m <= 128.0)
        );
    }
    for (when, l) in [("", &locate), (", after restarts", &after_restart)] {
        println!(
            "| Locate{when}, {} callers: req/s, p50, p99 | {:.0}, {:.2} ms, {:.2} ms | p99 < 5 ms: {} |",
            args.callers,
            l.rate,
            l.latency.percentile(50.0),
            l.latency.percentile(99.0),
            verdict(l.latency.percentile(99.0) < 5.0)
        );
    }
    let restart = Samples::new(restart);
    // A replica on Redis holds no state: the scale-out target is 1 s.
    let limit = if args.redis.is_some() { 1.0 } else { 2.0 };
    println!(
        "| restart after kill -9 until Locate answers, s ({} runs) | {} | < {limit} s: {} |",
        restart.len(),
        spread(&restart, 3),
        verdict(restart.median() < limit)
    );
    println!(
        "| of which: until `listening on`, s | {} | – |",
        spread(&Samples::new(listen), 3)
    );
    if !loaded.is_empty() {
        println!(
            "| of which: catalog load (tracker's own log), s | {} | – |",
            spread(&Samples::new(loaded), 3)
        );
    }
    Ok(())
}

fn tracker_args(args: &Args) -> Vec<String> {
    let mut out: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &args.data_dir.to_string_lossy(),
        // Nobody heartbeats here: keep every peer live for the whole run.
        "--ttl",
        "6h",
        "--heartbeat-interval",
        "1h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend(args.tracker_args.iter().cloned());
    out
}

/// Holder entry `e` (0..files*holders) is file `e / holders` held by peer
/// `e % peers`: each peer holds files*holders/peers distinct files.
fn entry(args: &Args, e: usize) -> (usize, usize) {
    (e / args.holders, e % args.peers)
}

/// Runs `f(i)` for every i in 0..n on `callers` concurrent workers.
async fn for_each<F, Fut, T>(callers: usize, n: usize, f: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
    T: Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..callers.max(1) {
        let (f, next) = (f.clone(), next.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(out);
                }
                out.push((i, f(w, i).await?));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(done) = workers.join_next().await {
        all.extend(done??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// One connection per caller.
async fn clients(callers: usize, addr: &str) -> anyhow::Result<Arc<Vec<tracker::Client>>> {
    let mut out = Vec::new();
    for _ in 0..callers.max(1) {
        out.push(tracker::connect(addr).await?);
    }
    Ok(Arc::new(out))
}

/// Registers every peer; the first holder of each file brings its manifest.
async fn register_peers(
    args: &Args,
    addr: &str,
    files: &Arc<Vec<Manifest>>,
) -> anyhow::Result<Arc<Vec<tracker::Session>>> {
    let mut first_of: Vec<Vec<usize>> = vec![Vec::new(); args.peers];
    for f in 0..args.files {
        let (_, peer) = entry(args, f * args.holders);
        first_of[peer].push(f);
    }
    let first_of = Arc::new(first_of);
    let clients = clients(args.callers, addr).await?;
    let files = files.clone();
    let sessions = for_each(args.callers, args.peers, move |w, p| {
        let (clients, files, first_of) = (clients.clone(), files.clone(), first_of.clone());
        async move {
            let mut client = clients[w].clone();
            let offered: Vec<&Manifest> = first_of[p].iter().map(|&f| &files[f]).collect();
            let port = u16::try_from(1 + p).context("at most 65,535 peers")?;
            tracker::register(&mut client, port, &offered)
                .await
                .with_context(|| format!("registering peer {p}"))
        }
    })
    .await?;
    Ok(Arc::new(sessions))
}

/// Adds every other holder entry with RegisterChunk; returns how many.
async fn add_holdings(
    args: &Args,
    addr: &str,
    files: &Arc<Vec<Manifest>>,
    sessions: &Arc<Vec<tracker::Session>>,
) -> anyhow::Result<usize> {
    let entries: Arc<Vec<(usize, usize)>> = Arc::new(
        (0..args.files * args.holders)
            .filter(|e| e % args.holders != 0)
            .map(|e| entry(args, e))
            .collect(),
    );
    let clients = clients(args.callers, addr).await?;
    let (files, sessions, n) = (files.clone(), sessions.clone(), entries.len());
    let chunks = args.chunks;
    for_each(args.callers, n, move |w, i| {
        let (clients, files, sessions, entries) = (
            clients.clone(),
            files.clone(),
            sessions.clone(),
            entries.clone(),
        );
        async move {
            let (f, p) = entries[i];
            let mut client = clients[w].clone();
            let ranges = synth::holding(chunks, &mut fastrand::Rng::with_seed(i as u64));
            tracker::register_chunk(
                &mut client,
                &sessions[p],
                files[f].name().as_str(),
                &ranges,
                &[],
            )
            .await
            .with_context(|| format!("adding holding {i}"))
        }
    })
    .await?;
    Ok(n)
}

struct LocateLoad {
    rate: f64,
    latency: Samples,
}

async fn locate_load(
    args: &Args,
    addr: &str,
    files: &Arc<Vec<Manifest>>,
) -> anyhow::Result<LocateLoad> {
    let clients = clients(args.callers, addr).await?;
    let files = files.clone();
    let started = Instant::now();
    let want = args.locate_holders;
    let latencies = for_each(args.callers, args.locates, move |w, i| {
        let (clients, files) = (clients.clone(), files.clone());
        async move {
            let mut client = clients[w].clone();
            let name = files[fastrand::Rng::with_seed(i as u64).usize(..files.len())]
                .name()
                .as_str()
                .to_owned();
            let t0 = Instant::now();
            tracker::locate(&mut client, &name, None, want).await?;
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        }
    })
    .await?;
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Ok(LocateLoad {
        rate,
        latency: Samples::new(latencies),
    })
}

/// Polls until the tracker at `addr` answers a Locate of `name`.
async fn wait_answering(addr: &str, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = tracker::connect(addr).await
            && tracker::locate(&mut c, name, None, 0).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the tracker did not answer within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The `elapsed_ms` of the last "catalog loaded" line in the tracker's log.
fn catalog_load_ms(log: &Path) -> Option<f64> {
    let text = strip_ansi(&std::fs::read_to_string(log).ok()?);
    let line = text.lines().rev().find(|l| l.contains("catalog loaded"))?;
    let value = line.split("elapsed_ms").nth(1)?;
    value
        .trim_start_matches(['=', '"', ':'])
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `text` without terminal colour sequences (ESC [ ... letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_load_time_is_read_from_text_and_json_logs() {
        let dir = std::env::temp_dir().join(format!("swarm-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("t.log");
        let text = "INFO hive_tracker: catalog loaded \u{1b}[3mpeers\u{1b}[0m\u{1b}[2m=\u{1b}[0m10 \u{1b}[3melapsed_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m321\n";
        std::fs::write(&log, text).unwrap();
        assert_eq!(catalog_load_ms(&log), Some(321.0));
        std::fs::write(
            &log,
            "{\"fields\":{\"message\":\"catalog loaded\",\"elapsed_ms\":45}}\n",
        )
        .unwrap();
        assert_eq!(catalog_load_ms(&log), Some(45.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
