//! Rate caps: a token bucket shared by every transfer it caps, changeable
//! while they run.
//!
//! Written here rather than taken from `governor` for three reasons, each
//! needed by the caps: waiters take their turn in FIFO order (a tokio
//! `Mutex` queue), so uploads sharing a capped link get equal shares frame
//! by frame, where governor lets whichever waiter wakes first win; the rate
//! changes at run time (`peerctl limits`) and a waiter already asleep
//! picks up the new rate at once; and it sleeps on tokio's clock, so its
//! rules are tested under paused time. It is one small bucket.
//!
//! A taker waits until the bucket holds its bytes (or one [`Throttle::piece`]
//! if it asks for more), then takes them, possibly into debt that the next
//! taker waits out. The bucket holds at most one piece and 20 ms of the
//! rate, so over any second a cap of R lets through at most R plus that;
//! uploads are sent in pieces of about R/64 under a cap, which keeps it
//! within 4 % of R.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use tokio::{
    sync::{Mutex as Queue, Notify},
    time::{Duration, Instant},
};

use crate::{error::PeerError, metrics::Counters};

/// Pieces a capped second is cut into: the burst a cap allows.
const PIECES_PER_SECOND: u64 = 64;
const MIN_PIECE: u64 = 4 << 10;
const MAX_PIECE: u64 = 256 << 10;

/// A byte-rate cap; 0 means none.
#[derive(Debug)]
pub struct Throttle {
    /// Bytes a second; 0 is unlimited. Read without the lock on every take.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Takers waiting for bytes, in arrival order.
    queue: Queue<()>,
    /// Wakes a sleeping taker when the rate changes.
    changed: Notify,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative after a take larger than the bucket.
    tokens: f64,
    at: Instant,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Throttle {
    /// A cap of `rate` bytes a second (0: none).
    pub fn new(rate: u64) -> Self {
        Self {
            rate: AtomicU64::new(rate),
            bucket: Mutex::new(Bucket {
                tokens: piece_of(rate) as f64,
                at: Instant::now(),
            }),
            queue: Queue::new(()),
            changed: Notify::new(),
        }
    }

    /// Bytes a second; 0 means unlimited.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the cap; takers waiting now follow the new rate.
    pub fn set_rate(&self, rate: u64) {
        let mut b = self.lock();
        b.refill(self.rate(), Instant::now());
        b.tokens = b.tokens.min(capacity(rate));
        self.rate.store(rate, Ordering::Relaxed);
        drop(b);
        self.changed.notify_waiters();
    }

    /// How much a capped sender should send at a time: about 1/64 of a
    /// second's worth, so shares interleave finely and no second runs over.
    pub fn piece(&self) -> u64 {
        piece_of(self.rate())
    }

    /// Waits until `n` bytes may pass and takes them; returns how long it
    /// waited (0 at once when there is no cap).
    pub async fn take(&self, n: u64) -> Duration {
        if self.rate() == 0 {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let _turn = self.queue.lock().await;
        loop {
            // Asked for before the rate is read, so a change in between
            // still wakes this taker.
            let changed = self.changed.notified();
            let rate = self.rate();
            let wait = {
                let mut b = self.lock();
                let now = Instant::now();
                b.refill(rate, now);
                let need = n.min(piece_of(rate)) as f64;
                if rate == 0 || b.tokens >= need {
                    b.tokens -= n as f64;
                    return started.elapsed();
                }
                Duration::from_secs_f64((need - b.tokens) / rate as f64)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // Two numbers, each written whole: poison cannot tear them.
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Bucket {
    fn refill(&mut self, rate: u64, now: Instant) {
        let gained = now.duration_since(self.at).as_secs_f64() * rate as f64;
        self.tokens = (self.tokens + gained).min(capacity(rate));
        self.at = now;
    }
}

/// What the bucket holds at most: a piece, and what 20 ms bring, since a
/// taker whose timer wakes late (a busy machine) would otherwise lose what
/// came in meanwhile. Over any second, R plus this: under 1.04 R.
fn capacity(rate: u64) -> f64 {
    piece_of(rate) as f64 + rate as f64 / 50.0
}

fn piece_of(rate: u64) -> u64 {
    match rate {
        0 => MAX_PIECE,
        r => (r / PIECES_PER_SECOND).clamp(MIN_PIECE, MAX_PIECE),
    }
}

/// The slowest cap accepted (bytes a second): below it a single piece
/// would take seconds.
pub const MIN_RATE: u64 = 1024;

/// Checks a cap given by `what` (a flag or field): 0 or at least 1 KiB/s.
pub fn check_rate(what: &str, rate: u64) -> Result<u64, PeerError> {
    match rate {
        1..MIN_RATE => Err(PeerError::Invalid(format!(
            "{what} {rate}: a cap is at least {MIN_RATE} bytes a second (1KiB), or 0 for none"
        ))),
        _ => Ok(rate),
    }
}

/// The daemon's global caps, changeable at run time (`peerctl limits`).
#[derive(Clone)]
pub struct Limits {
    pub upload: Arc<Throttle>,
    pub download: Arc<Throttle>,
    counters: Arc<Counters>,
}

impl Limits {
    pub fn new(upload: u64, download: u64, counters: Arc<Counters>) -> Self {
        counters.set_limits(upload, download);
        Self {
            upload: Arc::new(Throttle::new(upload)),
            download: Arc::new(Throttle::new(download)),
            counters,
        }
    }

    /// Changes the caps given; `None` keeps one as it is.
    pub fn set(&self, upload: Option<u64>, download: Option<u64>) {
        if let Some(r) = upload {
            self.upload.set_rate(r);
        }
        if let Some(r) = download {
            self.download.set_rate(r);
        }
        self.counters
            .set_limits(self.upload.rate(), self.download.rate());
    }
}

/// A transfer's caps: all of them apply (the global one and its own).
#[derive(Debug, Clone, Default)]
pub struct Caps(Vec<Arc<Throttle>>);

impl Caps {
    pub fn new(caps: impl IntoIterator<Item = Arc<Throttle>>) -> Self {
        Self(caps.into_iter().collect())
    }

    /// Waits until every cap lets `n` bytes pass; returns the time waited.
    pub async fn take(&self, n: u64) -> Duration {
        let mut waited = Duration::ZERO;
        for cap in &self.0 {
            waited += cap.take(n).await;
        }
        waited
    }

    /// The smallest piece any of the caps wants.
    pub fn piece(&self) -> u64 {
        self.0
            .iter()
            .filter(|c| c.rate() > 0)
            .map(|c| c.piece())
            .min()
            .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes `takers` get through `cap` in `secs` seconds of paused time,
    /// each taking `piece` at a time.
    async fn run(cap: Arc<Throttle>, takers: usize, piece: u64, secs: u64) -> Vec<u64> {
        let got: Vec<Arc<AtomicU64>> = (0..takers).map(|_| Arc::default()).collect();
        let mut tasks = Vec::new();
        for g in &got {
            let (cap, g) = (cap.clone(), g.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    cap.take(piece).await;
                    g.fetch_add(piece, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        tasks.iter().for_each(|t| t.abort());
        got.iter().map(|g| g.load(Ordering::Relaxed)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_cap_holds_its_rate_and_shares_it_equally() {
        let rate = 4 << 20;
        let cap = Arc::new(Throttle::new(rate));
        let piece = cap.piece();
        let got = run(cap, 3, piece, 10).await;
        let total: u64 = got.iter().sum();
        // At most the bucket (a piece and 20 ms) over the rate.
        assert!(total <= 10 * rate + piece + rate / 50, "{total}");
        assert!(total >= 10 * rate - 2 * piece, "{total}");
        let (min, max) = (got.iter().min().unwrap(), got.iter().max().unwrap());
        assert!(max - min <= piece, "shares {got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_cap_never_waits_and_a_new_rate_applies_to_waiters() {
        let cap = Arc::new(Throttle::new(0));
        assert_eq!(cap.take(1 << 30).await, Duration::ZERO);
        cap.set_rate(1024);
        // A piece of 4 KiB at 1 KiB/s: a waiter would sleep ~4 s...
        cap.take(4096).await;
        let waiter = tokio::spawn({
            let cap = cap.clone();
            async move { cap.take(4096).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...but the cap is lifted, and it goes at once.
        cap.set_rate(0);
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_millis(200), "{waited:?}");
    }

    #[test]
    fn pieces_follow_the_rate() {
        assert_eq!(piece_of(0), MAX_PIECE);
        assert_eq!(piece_of(1024), MIN_PIECE);
        assert_eq!(piece_of(4 << 20), 64 << 10);
        assert_eq!(piece_of(1 << 30), MAX_PIECE);
    }
}
