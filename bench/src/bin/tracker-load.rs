//! `tracker-load`: 64 concurrent callers drive running trackers with a
//! Locate / RegisterChunk / Heartbeat mix, and a raw tonic unary ping server
//! with pings, in interleaved rounds (ping, tracker A, tracker B, ..., ping,
//! A, B, ...), and report req/s and latency of each and their ratios round by
//! round. A tracker may be several replicas (the callers' connections spread
//! over them); one on Redis may name its server (`--redis`), whose own
//! accounting then gives what each call costs it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use hive::{ChunkSize, Manifest};
use hive_bench::{
    daemon,
    load::{OPS, Phase, Series, report},
    pb::{self, ping_client::PingClient},
    redis_stats::RedisStats,
    synth,
    tracker::{self, Client, Session},
};
use tonic::transport::Channel;

/// Load trackers with a call mix, interleaved with a raw tonic ping baseline.
#[derive(Parser, Debug)]
#[command(name = "tracker-load")]
struct Args {
    /// A tracker to load: `[NAME=]HOST:PORT[,HOST:PORT...]` (several
    /// addresses: replicas of one catalog, the connections spread over them).
    /// Repeat for several trackers, measured in turn within each round. Run
    /// them with a TTL longer than the whole benchmark (e.g. --ttl 1h), or
    /// sessions expire between rounds.
    #[arg(long, required = true)]
    tracker: Vec<String>,

    /// A raw-server (HOST:PORT) for the ping baseline.
    #[arg(long)]
    ping: String,

    /// Concurrent callers, each with its own peer session.
    #[arg(long, default_value_t = 64)]
    callers: usize,

    /// HTTP/2 connections the callers share, to each server.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Length of each measured phase.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Rounds; each measures the ping server, then every tracker.
    #[arg(long, default_value_t = 5)]
    rounds: u32,

    /// Unmeasured load on each before the first round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Relative weights of Locate, RegisterChunk and Heartbeat in the mix.
    #[arg(long, default_value = "50,30,20", value_parser = parse_mix)]
    mix: [u32; 3],

    /// Make every Locate a first one, asking for the manifest too. By
    /// default they are the Locates a running download makes (it has the
    /// manifest, so the tracker leaves it out).
    #[arg(long)]
    first_locates: bool,

    /// Most holders each Locate asks for; by default as many as a hive
    /// download asks for (`peer --locate-holders`). 0: the tracker's cap.
    #[arg(long, default_value_t = hive::wire::LOCATE_HOLDERS)]
    locate_holders: u32,

    /// Files the load works on (each registered with its manifest).
    #[arg(long, default_value_t = 16)]
    files: usize,

    /// Chunks per file (1 MiB each).
    #[arg(long, default_value_t = 1024)]
    chunks: u32,

    /// The server processes of a tracker, for their CPU time per request:
    /// `[NAME=]PID[,PID...]` (replicas and their Redis); without NAME, the
    /// first tracker's. Repeatable.
    #[arg(long)]
    tracker_pid: Vec<String>,

    /// The Redis server behind a tracker: `NAME=URL` (`redis://HOST:PORT`,
    /// `redis+unix:///PATH`). Its counters are reset before each of that
    /// tracker's phases and read after; each call kind then runs alone for
    /// one more phase. Repeatable.
    #[arg(long)]
    redis: Vec<String>,

    /// The ping server's PID, for its CPU time per request.
    #[arg(long)]
    ping_pid: Option<u32>,

    /// The member certificate the callers dial an `https://` tracker with;
    /// the other trackers are dialled in plaintext, so one run can compare
    /// the two.
    #[command(flatten)]
    tls: hive_runtime::tls::TlsArgs,
}

fn parse_mix(s: &str) -> Result<[u32; 3], String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse().map_err(|_| format!("bad weight {p:?}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [a, b, c] if a + b + c > 0 => Ok([a, b, c]),
        _ => Err("three weights, not all zero: LOCATE,REGISTER_CHUNK,HEARTBEAT".into()),
    }
}

const PING: u8 = 3;

#[derive(Clone, Copy)]
enum Target {
    Ping,
    /// The tracker of that index, with the mix or one call kind alone.
    Tracker(usize, Option<u8>),
}

/// One tracker (one or more replicas of one catalog) and its sessions.
struct Tracker {
    name: String,
    /// The callers' connections, spread over the replicas.
    clients: Vec<Client>,
    /// Its own files (named after it, so trackers sharing a Redis do not
    /// share holders).
    files: Vec<Manifest>,
    sessions: Vec<Session>,
    pids: Vec<u32>,
    redis: Option<RedisStats>,
}

/// Everything the callers share.
struct World {
    trackers: Vec<Tracker>,
    pings: Vec<PingClient<Channel>>,
    mix: [u32; 3],
    chunks: u32,
    first_locates: bool,
    locate_holders: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let world = Arc::new(setup(&args).await?);
    eprintln!(
        "set up: {} tracker(s), each {} files of {} chunks and {} sessions; {} connections to each server",
        world.trackers.len(),
        args.files.max(1),
        world.chunks,
        args.callers.max(1),
        args.connections
    );
    phase(&world, Target::Ping, args.warmup, args.ping_pid).await?;
    for t in 0..world.trackers.len() {
        phase(&world, Target::Tracker(t, None), args.warmup, None).await?;
    }
    let single = world.trackers.len() == 1;
    let mut pings = Vec::new();
    let mut series: Vec<Series> = world
        .trackers
        .iter()
        .map(|t| Series {
            name: t.name.clone(),
            mixes: Vec::new(),
            kinds: Vec::new(),
        })
        .collect();
    for round in 1..=args.rounds {
        let p = phase(&world, Target::Ping, args.duration, args.ping_pid).await?;
        for (t, s) in series.iter_mut().enumerate() {
            let m = phase(&world, Target::Tracker(t, None), args.duration, None).await?;
            let label = if single {
                String::new()
            } else {
                format!(" [{}]", s.name)
            };
            eprintln!(
                "round {round}{label}: ping {:.0} req/s (p99 {:.2} ms), mix {:.0} req/s (p99 {:.2} ms), ratio {:.2}, mix errors {}",
                p.rate(),
                p.percentile_ms(None, 99.0),
                m.rate(),
                m.percentile_ms(None, 99.0),
                m.rate() / p.rate(),
                m.errors
            );
            if let Some(e) = &m.first_error {
                eprintln!("  first mix error: {e}");
            }
            s.mixes.push(m);
        }
        pings.push(p);
    }
    for (t, s) in series.iter_mut().enumerate() {
        if world.trackers[t].redis.is_none() {
            continue;
        }
        for op in 0..3u8 {
            let p = phase(&world, Target::Tracker(t, Some(op)), args.duration, None).await?;
            eprintln!(
                "{} {} alone: {:.0} req/s",
                s.name,
                OPS[op as usize],
                p.rate()
            );
            s.kinds.push((op, p));
        }
    }
    let header = format!(
        "{} callers over {} connections, {} rounds of {:?} each, mix Locate/RegisterChunk/Heartbeat = {}/{}/{}",
        args.callers,
        args.connections,
        args.rounds,
        args.duration,
        args.mix[0],
        args.mix[1],
        args.mix[2]
    );
    report(&header, &pings, &series);
    Ok(())
}

/// `NAME=VALUE` or `VALUE` (named `default`).
fn named<'a>(spec: &'a str, default: &'a str) -> (&'a str, &'a str) {
    spec.split_once('=').unwrap_or((default, spec))
}

async fn setup(args: &Args) -> anyhow::Result<World> {
    let mut pings = Vec::new();
    for _ in 0..args.connections.max(1) {
        pings.push(PingClient::new(tracker::channel(&args.ping).await?));
    }
    let mut trackers = Vec::new();
    for (t, spec) in args.tracker.iter().enumerate() {
        let (name, addrs) = named(spec, "tracker");
        let addrs: Vec<&str> = addrs.split(',').filter(|a| !a.is_empty()).collect();
        if addrs.is_empty() {
            bail!("--tracker {spec}: no address");
        }
        let mut pids = Vec::new();
        for p in &args.tracker_pid {
            let (of, list) = named(p, &args.tracker[0]);
            if of == name || (of == args.tracker[0] && t == 0) {
                for pid in list.split(',') {
                    pids.push(pid.parse().with_context(|| format!("--tracker-pid {p}"))?);
                }
            }
        }
        let redis = match args.redis.iter().find(|r| named(r, "").0 == name) {
            Some(r) => Some(RedisStats::connect(named(r, "").1).await?),
            None => None,
        };
        trackers.push(tracker_setup(args, t, name, &addrs, pids, redis).await?);
    }
    Ok(World {
        trackers,
        pings,
        mix: args.mix,
        chunks: args.chunks,
        first_locates: args.first_locates,
        locate_holders: args.locate_holders,
    })
}

async fn tracker_setup(
    args: &Args,
    t: usize,
    name: &str,
    addrs: &[&str],
    pids: Vec<u32>,
    redis: Option<RedisStats>,
) -> anyhow::Result<Tracker> {
    let tls = args.tls.load()?;
    let mut clients = Vec::new();
    for c in 0..args.connections.max(1) {
        let addr = addrs[c % addrs.len()];
        let tls = tls.as_ref().filter(|_| addr.starts_with("https://"));
        clients.push(tracker::connect_with(addr, tls).await?);
    }
    let mut rng = fastrand::Rng::with_seed(1);
    let chunk_size = ChunkSize::new(1 << 20)?;
    let files = (0..args.files.max(1))
        .map(|i| {
            synth::manifest(
                &format!("load-{t}-{i:04}"),
                args.chunks,
                chunk_size,
                &mut rng,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sessions = Vec::new();
    for i in 0..args.callers.max(1) {
        let offered = [&files[i % files.len()], &files[(i + 1) % files.len()]];
        let mut client = clients[i % clients.len()].clone();
        // A port per tracker and caller: trackers sharing a Redis keep
        // one session per address, and every caller here is 127.0.0.1.
        let port =
            u16::try_from(20_000 + t * args.callers.max(1) + i).context("too many callers")?;
        let session = tracker::register(&mut client, port, &offered)
            .await
            .with_context(|| format!("registering the load's sessions on {name}"))?;
        sessions.push(session);
    }
    Ok(Tracker {
        name: name.to_owned(),
        clients,
        files,
        sessions,
        pids,
        redis,
    })
}

fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter()
        .map(|&p| daemon::cpu_seconds(p).ok())
        .sum::<Option<f64>>()
}

/// Runs every caller against `target` for `duration`.
async fn phase(
    world: &Arc<World>,
    target: Target,
    duration: Duration,
    ping_pid: Option<u32>,
) -> anyhow::Result<Phase> {
    let (pids, redis) = match target {
        Target::Ping => (ping_pid.into_iter().collect(), None),
        Target::Tracker(t, _) => (
            world.trackers[t].pids.clone(),
            world.trackers[t].redis.clone(),
        ),
    };
    let redis_cpu = match &redis {
        Some(r) => Some(r.reset().await?),
        None => None,
    };
    let cpu_before = (!pids.is_empty()).then(|| cpu_of(&pids)).flatten();
    let own_before = daemon::cpu_seconds(std::process::id()).ok();
    let started = Instant::now();
    let deadline = started + duration;
    let mut callers = tokio::task::JoinSet::new();
    let callers_n = match target {
        Target::Ping => world.trackers[0].sessions.len(),
        Target::Tracker(t, _) => world.trackers[t].sessions.len(),
    };
    for i in 0..callers_n {
        let world = world.clone();
        callers.spawn(async move { caller(&world, i, target, deadline).await });
    }
    let mut out = Phase::default();
    while let Some(done) = callers.join_next().await {
        let Ok((latencies, errors, first_error)) = done else {
            out.errors += 1;
            continue;
        };
        out.calls += latencies.len() as u64;
        out.errors += errors;
        out.first_error = out.first_error.or(first_error);
        out.latencies.extend(latencies);
    }
    out.elapsed = started.elapsed();
    let calls = out.calls.max(1) as f64;
    if let (Some(before), Some(after)) = (cpu_before, cpu_of(&pids)) {
        out.cpu_per_call_us = Some((after - before) * 1e6 / calls);
    }
    if let (Some(before), Ok(after)) = (own_before, daemon::cpu_seconds(std::process::id())) {
        out.load_cpu_per_call_us = Some((after - before) * 1e6 / calls);
    }
    if let (Some(r), Some(before)) = (redis, redis_cpu) {
        out.redis = Some(r.cost(before, out.calls + out.errors).await?);
    }
    Ok(out)
}

type CallerOut = (Vec<(u8, u32)>, u64, Option<String>);

/// The op to run next: `only`, or one drawn by the mix's weights.
fn pick(world: &World, only: Option<u8>, rng: &mut fastrand::Rng) -> u8 {
    if let Some(op) = only {
        return op;
    }
    let mut roll = rng.u32(..world.mix.iter().sum::<u32>());
    for (j, &w) in world.mix.iter().enumerate() {
        if roll < w {
            return j as u8;
        }
        roll -= w;
    }
    0
}

/// One caller's loop: pick an op, time it, until the deadline.
async fn caller(world: &World, i: usize, target: Target, deadline: Instant) -> CallerOut {
    let mut rng = fastrand::Rng::new();
    let t = match target {
        Target::Tracker(t, _) => t,
        Target::Ping => 0,
    };
    let tr = &world.trackers[t];
    let mut tracker = tr.clients[i % tr.clients.len()].clone();
    let mut ping = world.pings[i % world.pings.len()].clone();
    let session = &tr.sessions[i];
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
    while Instant::now() < deadline {
        let op = match target {
            Target::Ping => PING,
            Target::Tracker(_, only) => pick(world, only, &mut rng),
        };
        let manifest = &tr.files[rng.usize(..tr.files.len())];
        let file = manifest.name().as_str();
        let known = (!world.first_locates).then(|| manifest.digest());
        let t0 = Instant::now();
        let result = match op {
            0 => tracker::locate(
                &mut tracker,
                file,
                known.as_ref().map(|d| &d.as_bytes()[..]),
                world.locate_holders,
            )
            .await
            .map(drop),
            1 => {
                let (add, drop) = (rng.u32(1..=world.chunks), rng.u32(1..=world.chunks));
                tracker::register_chunk(&mut tracker, session, file, &[(add, add)], &[(drop, drop)])
                    .await
            }
            2 => tracker::heartbeat(&mut tracker, session).await,
            _ => ping.ping(pb::PingRequest {}).await.map(drop),
        };
        let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        match result {
            Ok(()) => latencies.push((op, us)),
            Err(status) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{}: {status}", OPS[op as usize]));
            }
        }
    }
    (latencies, errors, first_error)
}
