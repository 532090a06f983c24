//! `tracker-load`: 64 concurrent callers drive a running tracker with a
//! Locate / RegisterChunk / Heartbeat mix, and a raw tonic unary ping server
//! with pings, in interleaved rounds (ping, mix, ping, mix, ...), and report
//! req/s and latency of each and their ratio round by round.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use hive::{ChunkSize, Manifest};
use hive_bench::{
    daemon,
    pb::{self, ping_client::PingClient},
    stats::{Samples, spread},
    synth,
    tracker::{self, Client, Session},
};
use tonic::transport::Channel;

/// Load a tracker with a call mix, interleaved with a raw tonic ping baseline.
#[derive(Parser, Debug)]
#[command(name = "tracker-load")]
struct Args {
    /// The tracker (HOST:PORT). Run it with a TTL longer than the whole
    /// benchmark (e.g. --ttl 1h), or sessions expire between rounds.
    #[arg(long)]
    tracker: String,

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

    /// Rounds; each measures the ping server, then the tracker.
    #[arg(long, default_value_t = 5)]
    rounds: u32,

    /// Unmeasured load on both before the first round.
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

    /// The tracker's PID, to report its CPU time per request.
    #[arg(long)]
    tracker_pid: Option<u32>,

    /// The ping server's PID, likewise.
    #[arg(long)]
    ping_pid: Option<u32>,
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

const OPS: [&str; 4] = ["locate", "register_chunk", "heartbeat", "ping"];
const PING: u8 = 3;

#[derive(Clone, Copy)]
enum Target {
    Ping,
    Tracker,
}

/// Everything the callers share.
struct World {
    files: Vec<Manifest>,
    sessions: Vec<Session>,
    trackers: Vec<Client>,
    pings: Vec<PingClient<Channel>>,
    mix: [u32; 3],
    chunks: u32,
    first_locates: bool,
    locate_holders: u32,
}

/// One measured phase.
struct Phase {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// (op, latency in µs) of every successful call.
    latencies: Vec<(u8, u32)>,
    cpu_per_call_us: Option<f64>,
    /// This load generator's own CPU time per call: on a machine it shares
    /// with the server, what the callers cost limits what the server can do.
    load_cpu_per_call_us: Option<f64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, op: Option<u8>, p: f64) -> f64 {
        Samples::new(
            self.latencies
                .iter()
                .filter(|(o, _)| op.is_none_or(|op| *o == op))
                .map(|&(_, us)| f64::from(us) / 1e3)
                .collect(),
        )
        .percentile(p)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let world = Arc::new(setup(&args).await?);
    eprintln!(
        "set up: {} files of {} chunks, {} sessions, {} connections to each server",
        world.files.len(),
        world.chunks,
        world.sessions.len(),
        args.connections
    );
    phase(&world, Target::Ping, args.warmup, None).await;
    phase(&world, Target::Tracker, args.warmup, None).await;

    let mut pings = Vec::new();
    let mut mixes = Vec::new();
    for round in 1..=args.rounds {
        let p = phase(&world, Target::Ping, args.duration, args.ping_pid).await;
        let m = phase(&world, Target::Tracker, args.duration, args.tracker_pid).await;
        eprintln!(
            "round {round}: ping {:.0} req/s (p99 {:.2} ms), mix {:.0} req/s (p99 {:.2} ms), ratio {:.2}, mix errors {}",
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
        pings.push(p);
        mixes.push(m);
    }
    report(&args, &pings, &mixes);
    Ok(())
}

async fn setup(args: &Args) -> anyhow::Result<World> {
    let mut trackers = Vec::new();
    let mut pings = Vec::new();
    for _ in 0..args.connections.max(1) {
        trackers.push(tracker::connect(&args.tracker).await?);
        pings.push(PingClient::new(tracker::channel(&args.ping).await?));
    }
    let mut rng = fastrand::Rng::with_seed(1);
    let chunk_size = ChunkSize::new(1 << 20)?;
    let files = (0..args.files.max(1))
        .map(|i| synth::manifest(&format!("load-{i:04}"), args.chunks, chunk_size, &mut rng))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sessions = Vec::new();
    for i in 0..args.callers.max(1) {
        let offered = [&files[i % files.len()], &files[(i + 1) % files.len()]];
        let mut client = trackers[i % trackers.len()].clone();
        let port = 20_000 + u16::try_from(i).context("too many callers")?;
        let session = tracker::register(&mut client, port, &offered)
            .await
            .context("registering the load's sessions")?;
        sessions.push(session);
    }
    Ok(World {
        files,
        sessions,
        trackers,
        pings,
        mix: args.mix,
        chunks: args.chunks,
        first_locates: args.first_locates,
        locate_holders: args.locate_holders,
    })
}

/// Runs every caller against `target` for `duration`.
async fn phase(world: &Arc<World>, target: Target, duration: Duration, pid: Option<u32>) -> Phase {
    let cpu_before = pid.and_then(|p| daemon::cpu_seconds(p).ok());
    let own_before = daemon::cpu_seconds(std::process::id()).ok();
    let started = Instant::now();
    let deadline = started + duration;
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..world.sessions.len() {
        let world = world.clone();
        callers.spawn(async move { caller(&world, i, target, deadline).await });
    }
    let mut out = Phase {
        calls: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        cpu_per_call_us: None,
        load_cpu_per_call_us: None,
    };
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
    if let (Some(before), Some(after)) = (cpu_before, pid.and_then(|p| daemon::cpu_seconds(p).ok()))
    {
        out.cpu_per_call_us = Some((after - before) * 1e6 / out.calls.max(1) as f64);
    }
    if let (Some(before), Ok(after)) = (own_before, daemon::cpu_seconds(std::process::id())) {
        out.load_cpu_per_call_us = Some((after - before) * 1e6 / out.calls.max(1) as f64);
    }
    out
}

type CallerOut = (Vec<(u8, u32)>, u64, Option<String>);

/// One caller's loop: pick an op, time it, until the deadline.
async fn caller(world: &World, i: usize, target: Target, deadline: Instant) -> CallerOut {
    let mut rng = fastrand::Rng::new();
    let mut tracker = world.trackers[i % world.trackers.len()].clone();
    let mut ping = world.pings[i % world.pings.len()].clone();
    let session = &world.sessions[i];
    let total: u32 = world.mix.iter().sum();
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
    while Instant::now() < deadline {
        let op = match target {
            Target::Ping => PING,
            Target::Tracker => {
                let mut roll = rng.u32(..total);
                let mut op = 0u8;
                for (j, &w) in world.mix.iter().enumerate() {
                    if roll < w {
                        op = j as u8;
                        break;
                    }
                    roll -= w;
                }
                op
            }
        };
        let manifest = &world.files[rng.usize(..world.files.len())];
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

fn report(args: &Args, pings: &[Phase], mixes: &[Phase]) {
    let rates = |ps: &[Phase]| Samples::new(ps.iter().map(Phase::rate).collect());
    let pct =
        |ps: &[Phase], p: f64| Samples::new(ps.iter().map(|x| x.percentile_ms(None, p)).collect());
    let cpu = |ps: &[Phase], of: fn(&Phase) -> Option<f64>| {
        let s = Samples::new(ps.iter().filter_map(of).collect());
        if s.is_empty() {
            "–".to_owned()
        } else {
            spread(&s, 1)
        }
    };
    let errors = |ps: &[Phase]| ps.iter().map(|x| x.errors).sum::<u64>();
    println!(
        "\n{} callers over {} connections, {} rounds of {:?} each, mix Locate/RegisterChunk/Heartbeat = {}/{}/{}\n",
        args.callers,
        args.connections,
        args.rounds,
        args.duration,
        args.mix[0],
        args.mix[1],
        args.mix[2]
    );
    println!(
        "| server | req/s, median [min–max] | p50 ms | p99 ms | server CPU µs/req | load CPU µs/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, ps) in [("raw tonic ping", pings), ("tracker mix", mixes)] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            spread(&rates(ps), 0),
            spread(&pct(ps, 50.0), 2),
            spread(&pct(ps, 99.0), 2),
            cpu(ps, |x| x.cpu_per_call_us),
            cpu(ps, |x| x.load_cpu_per_call_us),
            errors(ps)
        );
    }
    let ratio = Samples::new(
        pings
            .iter()
            .zip(mixes)
            .map(|(p, m)| m.rate() / p.rate())
            .collect(),
    );
    let p99 = pct(mixes, 99.0);
    println!(
        "\nmix / ping, same round: {}× (target ≥ 0.7: {}); mix p99 {:.2} ms (target < 5 ms: {})",
        spread(&ratio, 2),
        verdict(ratio.median() >= 0.7),
        p99.median(),
        verdict(p99.median() < 5.0)
    );
    println!("\n| mix call | share | p50 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|");
    let all: usize = mixes.iter().map(|m| m.latencies.len()).sum();
    for op in 0..3u8 {
        let n: usize = mixes
            .iter()
            .map(|m| m.latencies.iter().filter(|(o, _)| *o == op).count())
            .sum();
        let per = |p: f64| {
            spread(
                &Samples::new(mixes.iter().map(|m| m.percentile_ms(Some(op), p)).collect()),
                2,
            )
        };
        println!(
            "| {} | {:.0}% | {} | {} | {} |",
            OPS[op as usize],
            100.0 * n as f64 / all.max(1) as f64,
            per(50.0),
            per(99.0),
            per(99.9)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
