//! Medians, percentiles, and the summary tables of interleaved runs.
//!
//! The machines hive is measured on are shared and noisy, so every figure is
//! a median over rounds, shown with its range, and every comparison is a
//! ratio taken within one round (both commands ran back to back), then the
//! median of those ratios.

use std::{collections::BTreeMap, fmt::Write as _};

/// Sorted samples.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        Self(values)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn min(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }

    /// The median (the mean of the two middle values for an even count).
    pub fn median(&self) -> f64 {
        let n = self.0.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => self.0[n / 2],
            _ => (self.0[n / 2 - 1] + self.0[n / 2]) / 2.0,
        }
    }

    /// The nearest-rank percentile, `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

/// `median [min–max]` with `digits` decimals.
pub fn spread(s: &Samples, digits: usize) -> String {
    format!(
        "{:.d$} [{:.d$}–{:.d$}]",
        s.median(),
        s.min(),
        s.max(),
        d = digits
    )
}

/// One timed command of one round, as the scripts record it: a TSV line
/// `name  round  seconds  bytes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub name: String,
    pub round: u32,
    pub seconds: f64,
    pub bytes: u64,
}

impl Timing {
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split('\t');
        Some(Self {
            name: f.next()?.to_owned(),
            round: f.next()?.trim().parse().ok()?,
            seconds: f.next()?.trim().parse().ok()?,
            bytes: f.next().map_or(Some(0), |b| b.trim().parse().ok())?,
        })
    }
}

/// A same-round comparison to show: how many times faster `a` was than `b`,
/// and optionally the least that counts as meeting a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub a: String,
    pub b: String,
    pub target: Option<f64>,
}

impl Ratio {
    /// `A:B` or `A:B>=TARGET`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (pair, target) = match s.split_once(">=") {
            Some((pair, t)) => (
                pair,
                Some(
                    t.trim()
                        .parse()
                        .map_err(|_| format!("bad target in {s:?}"))?,
                ),
            ),
            None => (s, None),
        };
        let (a, b) = pair
            .split_once(':')
            .ok_or_else(|| format!("expected A:B or A:B>=TARGET, got {s:?}"))?;
        Ok(Self {
            a: a.trim().to_owned(),
            b: b.trim().to_owned(),
            target,
        })
    }
}

/// A duration in seconds, in ms below one second.
fn time(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.3} s")
    }
}

/// The Markdown summary of interleaved timings: per command the median time
/// (and MB/s when bytes were moved), then each requested ratio — how many
/// times faster A was than B, round by round — with its verdict.
pub fn summarize(timings: &[Timing], ratios: &[Ratio]) -> String {
    let mut by_name: BTreeMap<&str, BTreeMap<u32, &Timing>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for t in timings {
        if !by_name.contains_key(t.name.as_str()) {
            order.push(&t.name);
        }
        by_name.entry(&t.name).or_default().insert(t.round, t);
    }
    let mut out = String::new();
    out.push_str("| command | runs | time, median [min–max] | MB/s, median [min–max] |\n");
    out.push_str("|---|---|---|---|\n");
    for name in &order {
        let runs = &by_name[name];
        let secs = Samples::new(runs.values().map(|t| t.seconds).collect());
        let rate = Samples::new(
            runs.values()
                .filter(|t| t.bytes > 0)
                .map(|t| t.bytes as f64 / t.seconds / 1e6)
                .collect(),
        );
        let rate = if rate.is_empty() {
            "–".to_owned()
        } else {
            spread(&rate, 0)
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} [{}–{}] | {rate} |",
            secs.len(),
            time(secs.median()),
            time(secs.min()),
            time(secs.max())
        );
    }
    if !ratios.is_empty() {
        out.push_str("\n| A : B, same round | rounds | A faster than B by, median [min–max] | ratio of medians | target |\n");
        out.push_str("|---|---|---|---|---|\n");
    }
    for Ratio { a, b, target } in ratios {
        let target = |median: f64| match target {
            None => "–".to_owned(),
            Some(t) if median >= *t => format!("≥ {t}×: met"),
            Some(t) => format!("≥ {t}×: MISSED by {:.0}%", 100.0 * (1.0 - median / t)),
        };
        let (Some(ra), Some(rb)) = (by_name.get(a.as_str()), by_name.get(b.as_str())) else {
            let _ = writeln!(out, "| {a} : {b} | 0 | no data | – | – |");
            continue;
        };
        let per_round = Samples::new(
            ra.iter()
                .filter_map(|(round, ta)| rb.get(round).map(|tb| tb.seconds / ta.seconds))
                .collect(),
        );
        let of_medians = Samples::new(rb.values().map(|t| t.seconds).collect()).median()
            / Samples::new(ra.values().map(|t| t.seconds).collect()).median();
        let _ = writeln!(
            out,
            "| {a} : {b} | {} | {}× | {of_medians:.2}× | {} |",
            per_round.len(),
            spread(&per_round, 2),
            target(per_round.median())
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        let s = Samples::new(vec![5.0, 1.0, 3.0]);
        assert_eq!(s.median(), 3.0);
        assert_eq!(Samples::new(vec![4.0, 1.0, 3.0, 2.0]).median(), 2.5);
        let s = Samples::new((1..=100).map(f64::from).collect());
        assert_eq!(s.percentile(50.0), 50.0);
        assert_eq!(s.percentile(99.0), 99.0);
        assert_eq!(s.percentile(100.0), 100.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn ratios_are_taken_within_a_round() {
        let lines = [
            "hive\t1\t1.0\t1000000",
            "curl\t1\t2.0\t1000000",
            "hive\t2\t4.0\t1000000",
            "curl\t2\t4.0\t1000000",
        ];
        let timings: Vec<Timing> = lines.iter().filter_map(|l| Timing::parse(l)).collect();
        assert_eq!(timings.len(), 4);
        let ratio = Ratio::parse("hive:curl>=2").unwrap();
        assert_eq!(ratio.target, Some(2.0));
        let table = summarize(&timings, &[ratio]);
        // Round 1: 2.0×, round 2: 1.0×, median 1.5×: 25% short of 2×.
        assert!(
            table.contains("| hive : curl | 2 | 1.50 [1.00–2.00]× | 1.20× | ≥ 2×: MISSED by 25% |"),
            "{table}"
        );
        assert!(
            table.contains("| hive | 2 | 2.500 s [1.000 s–4.000 s] |"),
            "{table}"
        );
    }
}
