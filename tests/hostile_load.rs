//! Hostile load on the transport (docs/RELIABILITY.md: RE-6, RE-8), against
//! real tracker processes: readers that never read, and more idle
//! connections than the daemon has descriptors. Each test prints its figures
//! as `FIGURE <ID>: ...` lines on stderr.
//!
//! The new settings are given through their `HIVE_*` twins, which a build
//! without them ignores: the same test, run against such a build, measures
//! the "before" figures of docs/RELIABILITY.md.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use common::{procfs, rawh2, *};
use hive::pb::tracker::{
    LocateRequest, RegisterRequest, SharedFile, tracker_client::TrackerClient,
};
use hive::pb::types::ChunkRange;
use tokio::{net::TcpStream, task::JoinSet};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const LOCATE: &str = "/hive.tracker.v1.Tracker/Locate";
/// Another client, to the tracker: its source address differs from the
/// attacker's (127.0.0.1).
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn launch(env: &[(&str, &str)], wrapper: &[&str]) -> Launch {
    Launch {
        wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A channel to `addr` from the source address `from`.
async fn channel_from(addr: SocketAddr, from: IpAddr) -> Channel {
    let endpoint = hive_runtime::grpc::endpoint(&format!("http://{addr}"))
        .expect("endpoint")
        .local_address(Some(from));
    within(30, endpoint.connect()).await.expect("connect")
}

/// Health on a new connection from `from`, within `wait`: its latency, or
/// why it failed.
async fn health_now(addr: SocketAddr, from: IpAddr, wait: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let call = async {
        let endpoint = hive_runtime::grpc::endpoint(&format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .local_address(Some(from));
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let answer = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        match answer.into_inner().status == ServingStatus::Serving as i32 {
            true => Ok(started.elapsed()),
            false => Err("not SERVING".to_owned()),
        }
    };
    tokio::time::timeout(wait, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {wait:?}")))
}

// ---- RE-6 ------------------------------------------------------------------

/// Registers `name`: a file of 16,384 chunks of 1 KiB, whose Locate answer
/// carries every chunk digest (≈ 540 KB).
async fn register_huge(client: &mut TrackerClient<Channel>, name: &str) {
    let m = manifest_with(name, &data(16 * 1024 * 1024, 61), Some(1024));
    assert_eq!(digest_count(&m), 16_384);
    let shared = SharedFile {
        chunks: vec![ChunkRange {
            first: 1,
            last: 16_384,
        }],
        manifest: Some(m),
    };
    client
        .register(RegisterRequest {
            files: vec![shared],
            port: 4001,
            ..Default::default()
        })
        .await
        .expect("register");
}

/// How the attacker's calls ended.
#[derive(Debug, Default)]
struct Attack {
    /// Answered, and the answer left unread.
    stalled: usize,
    /// Refused with RESOURCE_EXHAUSTED.
    refused: usize,
    /// Not started: the connection's stream cap was reached.
    capped: usize,
    /// Connections left holding unread answers.
    stalling: Vec<usize>,
}

/// `conns` connections with HTTP/2 windows of 0, from the source addresses
/// `from` in turn, each asking for up to `per_conn` Locates of `name` and
/// reading nothing. Returns the connections (held open) and how the calls
/// fared.
async fn zero_window_attack(
    addr: SocketAddr,
    from: &[IpAddr],
    name: &str,
    conns: usize,
    per_conn: usize,
) -> (
    Vec<rawh2::H2>,
    Attack,
    Vec<h2::RecvStream>,
    Vec<h2::SendStream<bytes::Bytes>>,
) {
    let locate = rawh2::grpc_message(&LocateRequest {
        name: name.into(),
        ..Default::default()
    });
    let mut held = Vec::new();
    let mut bodies = Vec::new();
    let mut streams = Vec::new();
    let mut out = Attack::default();
    for n in 0..conns {
        let mut h2 = rawh2::connect_from(addr, from[n % from.len()], 0).await;
        let stalled = out.stalled;
        let mut calls = JoinSet::new();
        for i in 0..per_conn {
            // A call that cannot start waits for the server's stream cap.
            let started =
                tokio::time::timeout(Duration::from_millis(300), h2.call(LOCATE, locate.clone()));
            match started.await {
                Ok(Ok(call)) => {
                    calls.spawn(rawh2::headers(call.response));
                    streams.push(call.stream);
                }
                _ => {
                    out.capped += per_conn - i;
                    break;
                }
            }
        }
        while let Some(answer) = calls.join_next().await {
            let response = answer.expect("call task").expect("response headers");
            match response.headers().get("grpc-status").map(|v| v.as_bytes()) {
                None => {
                    out.stalled += 1;
                    bodies.push(response.into_body());
                }
                Some(b"8") => out.refused += 1,
                Some(other) => panic!("unexpected grpc-status {other:?}"),
            }
        }
        if out.stalled > stalled {
            out.stalling.push(n);
        }
        held.push(h2);
    }
    (held, out, bodies, streams)
}

/// RE-6: readers that never read. One client with windows of 0 asks for
/// hundreds of 540 KB Locate answers, inside the per-address rate limit:
/// the tracker's memory stays bounded (its answer budget, a quarter of it
/// per address, refuses the rest with RESOURCE_EXHAUSTED), another client's
/// Locate and Health are answered meanwhile, and the stalled answers' are
/// ended with their connections after the send deadline, freeing the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re6_readers_that_never_read_cannot_pin_the_trackers_memory() {
    // Long enough for a build without the budget to compute every answer.
    within(300, async {
        const CONNS: usize = 4;
        const PER_CONN: usize = 100;
        const RSS_BOUND_KIB: u64 = 256 * 1024;
        let deadline = Duration::from_secs(3);
        let env = [("HIVE_SEND_DEADLINE", "3s")];
        let tracker = TestTracker::start_in(&launch(&env, &[]), &["--in-memory"]).await;
        let pid = tracker.daemon.pid();
        register_huge(&mut tracker.client().await, "huge").await;
        let mut other = TrackerClient::new(channel_from(tracker.addr, OTHER).await)
            .max_decoding_message_size(4 << 20);
        let request = || LocateRequest {
            name: "huge".into(),
            ..Default::default()
        };
        let answer = other.locate(request()).await.expect("locate").into_inner();
        let answer_bytes = prost::Message::encoded_len(&answer);
        let rss_before = procfs::rss_kib(pid);

        let started = Instant::now();
        let (mut held, attack, bodies, streams) =
            zero_window_attack(tracker.addr, &[ATTACKER], "huge", CONNS, PER_CONN).await;
        let attack_took = started.elapsed();
        let rss_attack = procfs::rss_kib(pid);

        // Others are served meanwhile.
        let during = Instant::now();
        let located = other.locate(request()).await;
        let other_took = during.elapsed();
        let health = health_now(tracker.addr, OTHER, Duration::from_secs(5)).await;

        // The stalled answers end with their connections after the deadline.
        let mut closed_after = Vec::new();
        let wait_until = Instant::now() + deadline + Duration::from_secs(5);
        for &n in &attack.stalling {
            let left = wait_until.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, &mut held[n].driver)
                .await
                .is_ok()
            {
                closed_after.push(started.elapsed());
            }
        }
        drop((bodies, streams));
        let peak = procfs::peak_rss_kib(pid);
        // The budget is free again, for the attacker's address too.
        let after = tracker.client().await.locate(request()).await;
        let last_close = closed_after.iter().max().copied().unwrap_or_default();
        eprintln!(
            "FIGURE RE-6: Locate answer {answer_bytes} bytes; {CONNS} zero-window connections x \
             {PER_CONN} calls in {:.2} s: {} answered and left unread, {} RESOURCE_EXHAUSTED, {} \
             not started (stream cap); tracker RSS before {} MiB, after the attack {} MiB, peak \
             {} MiB (bound {} MiB); other client's Locate {} in {:.1} ms, Health on a new \
             connection {:?}; connections holding unread answers closed by the server {}/{} \
             (last {:.2} s after the attack began, send deadline {:.0} s); Locate after: {}",
            attack_took.as_secs_f64(),
            attack.stalled,
            attack.refused,
            attack.capped,
            rss_before / 1024,
            rss_attack / 1024,
            peak / 1024,
            RSS_BOUND_KIB / 1024,
            code_of(&located),
            other_took.as_secs_f64() * 1e3,
            health
                .as_ref()
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            closed_after.len(),
            attack.stalling.len(),
            last_close.as_secs_f64(),
            deadline.as_secs_f64(),
            code_of(&after),
        );
        assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
        assert!(attack.refused > 0, "the budget refused some: {attack:?}");
        let located = located.expect("another client's Locate").into_inner();
        assert_eq!(located, answer, "the other client got the whole answer");
        health.expect("Health during the attack");
        assert_eq!(
            closed_after.len(),
            attack.stalling.len(),
            "every connection holding unread answers ended"
        );
        after.expect("Locate once the attacker is gone");

        // From four addresses, the attack fills the whole budget: memory
        // stays bounded, Health is answered, and new Locates are refused
        // until the deadline frees it.
        let many: Vec<IpAddr> = (3..7)
            .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
            .collect();
        let (mut held, attack, bodies, streams) =
            zero_window_attack(tracker.addr, &many, "huge", 8, 50).await;
        let located = other.locate(request()).await;
        let health = health_now(tracker.addr, OTHER, Duration::from_secs(5)).await;
        for &n in &attack.stalling {
            let _ =
                tokio::time::timeout(deadline + Duration::from_secs(5), &mut held[n].driver).await;
        }
        drop((bodies, streams));
        let peak = procfs::peak_rss_kib(pid);
        let after = other.locate(request()).await;
        eprintln!(
            "FIGURE RE-6: from 4 addresses, 8 zero-window connections x 50 calls: {} answered and \
             left unread, {} RESOURCE_EXHAUSTED; tracker RSS peak {} MiB (bound {} MiB); other \
             client's Locate {}, Health {:?}; Locate after the deadline {}",
            attack.stalled,
            attack.refused,
            peak / 1024,
            RSS_BOUND_KIB / 1024,
            code_of(&located),
            health
                .as_ref()
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            code_of(&after),
        );
        assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
        health.expect("Health while the budget is spent");
        assert_eq!(
            located.map(|_| ()).map_err(|s| s.code()),
            Err(tonic::Code::ResourceExhausted),
            "the spent budget refuses everyone's new answers"
        );
        after.expect("Locate once the deadline freed the budget");
        assert!(procfs::alive(pid));
    })
    .await;
}

fn code_of<T>(r: &Result<T, tonic::Status>) -> &'static str {
    match r {
        Ok(_) => "OK",
        Err(s) => hive_runtime::grpc::code_name(s.code()),
    }
}

// ---- RE-8 ------------------------------------------------------------------

/// What `n` idle connections did to a tracker with `limit` descriptors.
struct Idle {
    /// Connections opened.
    opened: usize,
    /// CPU time the tracker used over the window, with nobody calling.
    cpu: Duration,
    window: Duration,
    fds_peak: usize,
    /// Health on a new connection while the idle ones are open.
    health_during: Result<Duration, String>,
    /// ...and once they closed.
    health_after: Result<Duration, String>,
}

/// Opens `n` connections at once that send nothing, measures the
/// tracker's CPU time over `window` (all within the 10 s handshake timeout,
/// which would close them), asks Health, closes them and asks again. A
/// connection the listener's backlog (128) cannot take either is left out.
async fn idle_connections(tracker: &TestTracker, n: usize, window: Duration) -> Idle {
    let pid = tracker.daemon.pid();
    let mut connecting = JoinSet::new();
    for _ in 0..n {
        let addr = tracker.addr;
        connecting.spawn(tokio::time::timeout(
            Duration::from_millis(2500),
            TcpStream::connect(addr),
        ));
    }
    let mut idle = Vec::with_capacity(n);
    while let Some(done) = connecting.join_next().await {
        if let Ok(Ok(tcp)) = done.expect("connect task") {
            idle.push(tcp);
        }
    }
    let opened = idle.len();
    // Settled: the tracker has taken what it can.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cpu0, t0) = (procfs::cpu(pid), Instant::now());
    let mut fds_peak = 0;
    while t0.elapsed() < window {
        fds_peak = fds_peak.max(procfs::fds(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = procfs::cpu(pid) - cpu0;
    let window = t0.elapsed();
    let health_during = health_now(tracker.addr, OTHER, Duration::from_secs(5)).await;
    drop(idle);
    let health_after = health_now(tracker.addr, OTHER, Duration::from_secs(10)).await;
    Idle {
        opened,
        cpu,
        window,
        fds_peak,
        health_during,
        health_after,
    }
}

/// RE-8: more idle connections than the tracker has descriptors (hard and
/// soft limit 256, as `prlimit` sets them). (a) With the connection caps
/// lifted above the limit, accepting fails with EMFILE: the accept loop
/// backs off instead of spinning, and logs it once with the fix. (b) With
/// the default caps, connections stop below the limit, idle ones make room
/// for newcomers, and Health on a new connection answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re8_descriptor_exhaustion_neither_spins_nor_locks_out_health() {
    within(120, async {
        const LIMIT: &str = "--nofile=256:256";
        // 244 connections fill the descriptors; the rest wait in the backlog.
        const N: usize = 320;
        let window = Duration::from_secs(3);
        let prlimit = ["prlimit", LIMIT, "--"];
        let mut figures = Vec::new();
        for (case, env) in [
            (
                "(a) caps above the limit",
                &[("HIVE_MAX_CONNS", "100000"), ("HIVE_MAX_CONNS_PER_IP", "0")][..],
            ),
            ("(b) default caps", &[][..]),
        ] {
            let tracker = TestTracker::start_in(&launch(env, &prlimit), &["--in-memory"]).await;
            let got = idle_connections(&tracker, N, window).await;
            let log = tracker.daemon.log();
            let warned = log.matches("cannot accept connections").count();
            let hint = log.contains("ulimit -n") && log.contains("LimitNOFILE");
            let cpu_per_s = got.cpu.as_secs_f64() / got.window.as_secs_f64();
            let ms = |r: &Result<Duration, String>| match r {
                Ok(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
                Err(e) => format!("failed ({e})"),
            };
            figures.push(format!(
                "{case}: {} idle connections, limit {LIMIT}: tracker CPU {:.3} s over {:.1} s \
                 ({:.1}% of a core), fds peak {}, EMFILE warnings {warned} (hint {hint}); Health \
                 on a new connection during {}, after they closed {}",
                got.opened,
                got.cpu.as_secs_f64(),
                got.window.as_secs_f64(),
                100.0 * cpu_per_s,
                got.fds_peak,
                ms(&got.health_during),
                ms(&got.health_after),
            ));
            eprintln!("FIGURE RE-8: {}", figures.last().expect("figure"));
            if case.starts_with("(b)") && warned > 0 {
                // Under the caps, descriptors should not run out: the
                // tracker's own line says how many connections it held.
                for line in log.lines().filter(|l| l.contains("cannot accept")) {
                    eprintln!("RE-8 {case}: EMFILE under the caps: {line}");
                }
            }
            assert!(
                cpu_per_s < 0.1,
                "{case}: the idle tracker used {:?}",
                got.cpu
            );
            got.health_after
                .expect("Health once the idle connections closed");
            if case.starts_with("(a)") {
                assert_eq!(warned, 1, "{case}: logged once");
                assert!(hint, "{case}: the log names the fix");
            } else {
                got.health_during
                    .expect("Health during, thanks to the headroom");
                assert!(got.fds_peak < 256, "{case}: fds {}", got.fds_peak);
            }
        }
    })
    .await;
}
