//! Request rate limits: token buckets per source IP and per session,
//! checked first thing in every handler. A refused request gets
//! RESOURCE_EXHAUSTED (a gRPC status, never an HTTP 429) and changes
//! nothing.
//!
//! Heartbeats have per-IP buckets of their own (same rate): a flood of
//! other calls from an address shared with real peers (a NAT, a host
//! running several peers) then cannot make their heartbeats fail and
//! expire them. A heartbeat flood still only spends the heartbeat buckets,
//! and each session's own bucket.
//!
//! Not an interceptor: an interceptor answers before the request body is
//! read, and the server then resets the stream to stop the body; h2 counts
//! those resets against the connection's limit (which guards against
//! "MadeYouReset" attacks), so a rate-limited client would soon lose its
//! whole connection instead of getting a status per call.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use hive_runtime::grpc::TOKEN_METADATA;
use tonic::{Request, Status};

/// A refill rate and a burst, in requests; a rate of 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

/// Buckets idle this long are forgotten (they would be full anyway).
const IDLE_SECS: f64 = 60.0;
/// Past this many keys, idle buckets are swept out; after a sweep, the next
/// one waits until the map has doubled, so sweeping stays O(1) per request
/// however many keys are active.
const SWEEP_AT: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets<K> {
    rate: Rate,
    map: Mutex<Map<K>>,
}

struct Map<K> {
    buckets: HashMap<K, Bucket>,
    sweep_at: usize,
}

impl<K: Eq + Hash> Buckets<K> {
    fn new(rate: Rate) -> Option<Self> {
        (rate.per_sec > 0.0).then(|| Self {
            rate,
            map: Mutex::new(Map {
                buckets: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        })
    }

    /// Takes one token for `key`; false if its bucket is empty.
    fn take(&self, key: K, now: Instant) -> bool {
        // A std mutex: a few arithmetic operations under it, no awaits.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let Map { buckets, sweep_at } = &mut *map;
        if buckets.len() >= *sweep_at {
            buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < IDLE_SECS);
            *sweep_at = SWEEP_AT.max(2 * buckets.len());
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate.per_sec;
        b.tokens = (b.tokens + refill).min(self.rate.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The tracker's rate limits; cheap to clone (one per connection).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    per_ip: Option<Buckets<IpAddr>>,
    /// Heartbeats' own per-IP buckets.
    heartbeat_ip: Option<Buckets<IpAddr>>,
    per_session: Option<Buckets<blake3::Hash>>,
}

impl RateLimiter {
    pub fn new(per_ip: Rate, per_session: Rate) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_ip: Buckets::new(per_ip),
                heartbeat_ip: Buckets::new(per_ip),
                per_session: Buckets::new(per_session),
            }),
        }
    }

    /// Whether a request from `ip`, carrying `token` (if any), may proceed.
    pub fn allow(
        &self,
        ip: Option<IpAddr>,
        token: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), &'static str> {
        self.allow_in(&self.inner.per_ip, ip, token, now)
    }

    /// [`RateLimiter::allow`] for a heartbeat: its own per-IP buckets.
    pub fn allow_heartbeat(
        &self,
        ip: Option<IpAddr>,
        token: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), &'static str> {
        self.allow_in(&self.inner.heartbeat_ip, ip, token, now)
    }

    fn allow_in(
        &self,
        per_ip: &Option<Buckets<IpAddr>>,
        ip: Option<IpAddr>,
        token: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), &'static str> {
        if let (Some(b), Some(ip)) = (per_ip, ip)
            && !b.take(ip.to_canonical(), now)
        {
            return Err("too many requests from this address; slow down");
        }
        // Keyed by the token's hash: the raw token is never kept. Tokens
        // are hex and case-blind, so one token in other letter cases is
        // still one session.
        if let (Some(b), Some(token)) = (&self.inner.per_session, token)
            && !b.take(blake3::hash(&token.to_ascii_lowercase()), now)
        {
            return Err("too many requests from this peer; slow down");
        }
        Ok(())
    }
}

impl RateLimiter {
    /// Checks a request against the limits.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let ip = request.remote_addr().map(|a| a.ip());
        let token = request.metadata().get(TOKEN_METADATA).map(|v| v.as_bytes());
        self.allow(ip, token, Instant::now())
            .map_err(Status::resource_exhausted)
    }

    /// Checks a heartbeat against the limits (its own per-IP buckets).
    pub fn check_heartbeat<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let ip = request.remote_addr().map(|a| a.ip());
        let token = request.metadata().get(TOKEN_METADATA).map(|v| v.as_bytes());
        self.allow_heartbeat(ip, token, Instant::now())
            .map_err(Status::resource_exhausted)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_refill_at_their_rate() {
        let limiter = RateLimiter::new(
            Rate {
                per_sec: 10.0,
                burst: 5.0,
            },
            Rate {
                per_sec: 0.0,
                burst: 0.0,
            },
        );
        let ip = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.allow(ip, None, t0).is_ok());
        }
        assert!(limiter.allow(ip, None, t0).is_err(), "burst spent");
        assert!(
            limiter
                .allow(Some("10.0.0.2".parse().unwrap()), None, t0)
                .is_ok(),
            "other IPs unaffected"
        );
        assert!(
            limiter
                .allow(ip, None, t0 + Duration::from_millis(100))
                .is_ok(),
            "one token per 100 ms"
        );
        assert!(
            limiter
                .allow(ip, None, t0 + Duration::from_millis(100))
                .is_err()
        );
        assert!(
            limiter.allow(None, None, t0).is_ok(),
            "no address, no IP limit"
        );
    }

    #[test]
    fn idle_buckets_are_swept_and_active_ones_do_not_cost_a_sweep_each() {
        let buckets = Buckets::<u32>::new(Rate {
            per_sec: 1.0,
            burst: 2.0,
        })
        .unwrap();
        let t0 = Instant::now();
        let idle = t0 + Duration::from_secs_f64(IDLE_SECS);
        let state = |b: &Buckets<u32>| {
            let map = b.map.lock().unwrap();
            (map.buckets.len(), map.sweep_at)
        };
        for key in 0..SWEEP_AT as u32 {
            assert!(buckets.take(key, t0));
        }
        assert_eq!(state(&buckets), (SWEEP_AT, SWEEP_AT));
        // Every key still active: the sweep keeps them all, and the next one
        // waits for the map to double.
        assert!(buckets.take(u32::MAX, t0));
        assert_eq!(state(&buckets), (SWEEP_AT + 1, 2 * SWEEP_AT));
        for key in SWEEP_AT as u32..2 * SWEEP_AT as u32 - 1 {
            assert!(buckets.take(key, t0));
        }
        assert_eq!(state(&buckets), (2 * SWEEP_AT, 2 * SWEEP_AT));
        // A minute later, all of them idle: one sweep forgets them.
        assert!(buckets.take(0, idle));
        assert_eq!(state(&buckets), (1, SWEEP_AT));
    }

    #[test]
    fn a_flood_of_other_calls_leaves_heartbeats_their_budget() {
        let rate = Rate {
            per_sec: 10.0,
            burst: 5.0,
        };
        let limiter = RateLimiter::new(
            rate,
            Rate {
                per_sec: 0.0,
                burst: 0.0,
            },
        );
        let ip = Some("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        while limiter.allow(ip, None, t0).is_ok() {}
        assert!(
            limiter.allow(ip, None, t0).is_err(),
            "the address is flooded"
        );
        for _ in 0..5 {
            assert!(limiter.allow_heartbeat(ip, Some(b"tok"), t0).is_ok());
        }
        assert!(
            limiter.allow_heartbeat(ip, Some(b"tok"), t0).is_err(),
            "heartbeats have a budget too"
        );
    }

    #[test]
    fn sessions_are_limited_by_token() {
        let limiter = RateLimiter::new(
            Rate {
                per_sec: 0.0,
                burst: 0.0,
            },
            Rate {
                per_sec: 1.0,
                burst: 2.0,
            },
        );
        let t0 = Instant::now();
        let (a, b) = (b"aaaa".as_slice(), b"bbbb".as_slice());
        assert!(limiter.allow(None, Some(a), t0).is_ok());
        assert!(limiter.allow(None, Some(a), t0).is_ok());
        assert!(limiter.allow(None, Some(a), t0).is_err());
        assert!(
            limiter.allow(None, Some(b"AAAA"), t0).is_err(),
            "the same token in capitals is the same session"
        );
        assert!(limiter.allow(None, Some(b), t0).is_ok());
        assert!(
            limiter.allow(None, None, t0).is_ok(),
            "unauthenticated calls are limited per IP only"
        );
    }
}
