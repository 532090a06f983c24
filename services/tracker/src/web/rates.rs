//! Request rates by RPC, read from the metrics registry the gRPC layer
//! counts calls in (`hive_tracker_rpc_calls`), so the page and `/metrics`
//! never disagree. A rate is the change over the last minute or so: the
//! page keeps a sample at most every few seconds when it is looked at, and
//! needs no task of its own.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use prometheus_client::{encoding::text::encode, registry::Registry};

/// The counter, as the text format names it.
const CALLS: &str = "hive_tracker_rpc_calls_total{";
/// Samples are kept at most this often...
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// ...and for this long: a rate covers up to this window.
const WINDOW: Duration = Duration::from_secs(60);

/// Calls answered, all codes and those not OK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    pub total: u64,
    pub failed: u64,
}

/// One RPC's calls and rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRate {
    pub method: String,
    pub calls: Calls,
    /// Calls a second over [`RpcRates::window`]; none until a sample is old enough.
    pub per_sec: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcRates {
    pub rpcs: Vec<RpcRate>,
    /// What the rates were measured over.
    pub window: Duration,
}

pub struct Rates {
    registry: Arc<Registry>,
    /// A std mutex: held only to push or read a sample, never across an await.
    samples: Mutex<VecDeque<(Instant, BTreeMap<String, Calls>)>>,
}

impl Rates {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The calls by RPC now, and their rates since the oldest sample.
    pub fn now(&self) -> RpcRates {
        let now = Instant::now();
        let current = self.read();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            samples.pop_front();
        }
        let oldest = samples.front().cloned();
        if samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= SAMPLE_EVERY)
        {
            samples.push_back((now, current.clone()));
        }
        drop(samples);
        let window = oldest.as_ref().map_or(Duration::ZERO, |(at, _)| now - *at);
        let rpcs = current
            .into_iter()
            .map(|(method, calls)| {
                let per_sec = oldest
                    .as_ref()
                    .filter(|_| window >= Duration::from_secs(1))
                    .map(|(_, then)| {
                        let before = then.get(&method).map_or(0, |c| c.total);
                        calls.total.saturating_sub(before) as f64 / window.as_secs_f64()
                    });
                RpcRate {
                    method,
                    calls,
                    per_sec,
                }
            })
            .collect();
        RpcRates { rpcs, window }
    }

    fn read(&self) -> BTreeMap<String, Calls> {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            return BTreeMap::new();
        }
        parse(&text)
    }
}

/// The call counts in the text format `text`, by method.
fn parse(text: &str) -> BTreeMap<String, Calls> {
    let mut out: BTreeMap<String, Calls> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(CALLS) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let (Some(method), Some(code), Ok(n)) = (
            label(labels, "method"),
            label(labels, "code"),
            value.trim().parse::<f64>(),
        ) else {
            continue;
        };
        let calls = out.entry(method.to_owned()).or_default();
        calls.total += n as u64;
        if code != "OK" {
            calls.failed += n as u64;
        }
    }
    out
}

/// The value of `key="..."` among `labels`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_by_method_from_the_registry() {
        let mut registry = Registry::default();
        let rpc = hive_runtime::metrics::RpcMetrics::register(&mut registry, "hive_tracker");
        drop(rpc);
        let text = "# HELP x\n\
            hive_tracker_rpc_calls_total{method=\"Locate\",code=\"OK\"} 7\n\
            hive_tracker_rpc_calls_total{method=\"Locate\",code=\"NOT_FOUND\"} 2\n\
            hive_tracker_rpc_calls_total{method=\"Register\",code=\"OK\"} 1\n\
            hive_tracker_rpc_seconds_count{method=\"Locate\"} 9\n";
        let calls = parse(text);
        assert_eq!(
            calls["Locate"],
            Calls {
                total: 9,
                failed: 2
            }
        );
        assert_eq!(
            calls["Register"],
            Calls {
                total: 1,
                failed: 0
            }
        );
        assert_eq!(calls.len(), 2);
        // The registry as the daemon builds it reads, empty, as no calls.
        let rates = Rates::new(Arc::new(registry)).now();
        assert!(rates.rpcs.is_empty());
    }
}
