//! `tracker-load`'s measured phases and its report: req/s, latency
//! percentiles and CPU per call for the ping and for each tracker, their
//! ratios within each round, and what the calls cost a Redis server.

use std::time::Duration;

use crate::{
    redis_stats::Cost,
    stats::{Samples, spread},
};

/// The call kinds, as reported; the ping last.
pub const OPS: [&str; 4] = ["locate", "register_chunk", "heartbeat", "ping"];

/// One measured phase against one server.
#[derive(Default)]
pub struct Phase {
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// (op, latency in µs) of every successful call.
    pub latencies: Vec<(u8, u32)>,
    /// The server processes' CPU time per call (replicas and their Redis).
    pub cpu_per_call_us: Option<f64>,
    /// This load generator's own CPU time per call: on a machine it shares
    /// with the server, what the callers cost limits what the server can do.
    pub load_cpu_per_call_us: Option<f64>,
    /// What the phase cost the tracker's Redis, if it has one.
    pub redis: Option<Cost>,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, op: Option<u8>, p: f64) -> f64 {
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

/// One tracker's phases, round by round, and its per-kind Redis phases.
pub struct Series {
    pub name: String,
    pub mixes: Vec<Phase>,
    /// (op, phase of that op alone) with Redis costs.
    pub kinds: Vec<(u8, Phase)>,
}

fn rates(ps: &[Phase]) -> Samples {
    Samples::new(ps.iter().map(Phase::rate).collect())
}

fn pct(ps: &[Phase], p: f64) -> Samples {
    Samples::new(ps.iter().map(|x| x.percentile_ms(None, p)).collect())
}

fn cpu(ps: &[Phase], of: fn(&Phase) -> Option<f64>) -> String {
    let s = Samples::new(ps.iter().filter_map(of).collect());
    if s.is_empty() {
        "–".to_owned()
    } else {
        spread(&s, 1)
    }
}

fn ratio(a: &[Phase], b: &[Phase]) -> Samples {
    Samples::new(a.iter().zip(b).map(|(a, b)| a.rate() / b.rate()).collect())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The whole report: one row per server, the ratios, the call kinds'
/// latencies, and the Redis costs.
pub fn report(header: &str, pings: &[Phase], series: &[Series]) {
    println!("\n{header}\n");
    println!(
        "| server | req/s, median [min–max] | p50 ms | p99 ms | server CPU µs/req | load CPU µs/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows = std::iter::once(("raw tonic ping".to_owned(), pings)).chain(
        series
            .iter()
            .map(|s| (format!("{} mix", s.name), &s.mixes[..])),
    );
    for (name, ps) in rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            spread(&rates(ps), 0),
            spread(&pct(ps, 50.0), 2),
            spread(&pct(ps, 99.0), 2),
            cpu(ps, |x| x.cpu_per_call_us),
            cpu(ps, |x| x.load_cpu_per_call_us),
            ps.iter().map(|x| x.errors).sum::<u64>()
        );
    }
    println!();
    for (i, s) in series.iter().enumerate() {
        let r = ratio(&s.mixes, pings);
        let p99 = pct(&s.mixes, 99.0).median();
        println!(
            "{} mix / ping, same round: {}× (target ≥ 0.7: {}); mix p99 {p99:.2} ms (target < 5 ms: {})",
            s.name,
            spread(&r, 2),
            verdict(r.median() >= 0.7),
            verdict(p99 < 5.0)
        );
        if i > 0 {
            let r = ratio(&s.mixes, &series[0].mixes);
            println!(
                "{} mix / {} mix, same round: {}× (scale-out target ≥ 0.6: {}); p99 < 10 ms: {}",
                s.name,
                series[0].name,
                spread(&r, 2),
                verdict(r.median() >= 0.6),
                verdict(p99 < 10.0)
            );
        }
    }
    for s in series {
        kinds_table(s);
    }
    for s in series {
        redis_tables(s);
    }
}

fn kinds_table(s: &Series) {
    println!(
        "\n{}: | mix call | share | p50 ms | p99 ms | p99.9 ms |",
        s.name
    );
    println!("|---|---|---|---|---|");
    let all: usize = s.mixes.iter().map(|m| m.latencies.len()).sum();
    for op in 0..3u8 {
        let n: usize = s
            .mixes
            .iter()
            .map(|m| m.latencies.iter().filter(|(o, _)| *o == op).count())
            .sum();
        let per = |p: f64| {
            let v = s.mixes.iter().map(|m| m.percentile_ms(Some(op), p));
            spread(&Samples::new(v.collect()), 2)
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

/// Redis's cost per mix request (rounds) and per call kind (one phase each).
fn redis_tables(s: &Series) {
    let costs: Vec<&Cost> = s.mixes.iter().filter_map(|m| m.redis.as_ref()).collect();
    if costs.is_empty() {
        return;
    }
    let med = |f: &dyn Fn(&Cost) -> f64| Samples::new(costs.iter().map(|c| f(c)).collect());
    println!(
        "\n{}: Redis per mix request, median [min–max] of the rounds: CPU {} µs, time in commands {} µs",
        s.name,
        spread(&med(&|c| c.cpu_us_per_rpc), 1),
        spread(&med(&|c| c.command_us_per_rpc()), 1)
    );
    println!(
        "\n{}: | call alone | req/s | p99 ms | Redis CPU µs/call | Redis command µs/call | commands per call (usec_per_call) |",
        s.name
    );
    println!("|---|---|---|---|---|---|");
    for (op, p) in &s.kinds {
        let Some(c) = &p.redis else { continue };
        let cmds: Vec<String> = c
            .hot()
            .map(|x| {
                let per = x.usec as f64 / x.calls.max(1) as f64;
                format!("{} {:.2} ({per:.1} µs)", x.name, c.per_rpc(x))
            })
            .collect();
        println!(
            "| {} | {:.0} | {:.2} | {:.1} | {:.1} | {} |",
            OPS[*op as usize],
            p.rate(),
            p.percentile_ms(None, 99.0),
            c.cpu_us_per_rpc,
            c.command_us_per_rpc(),
            cmds.join(", ")
        );
    }
}
