//! How many requests a download keeps in flight to one holder: about what
//! the holder delivers to it over one round trip (its measured rate × the
//! time it takes to answer a request), twice over, plus one.
//!
//! A fixed count is wrong both ways. A holder that many downloaders share
//! delivers each a fraction of a chunk per round trip: every request past
//! the second only splits its link further, so the first chunks it sends
//! are complete later, and passed on later (a seeder with 8 downloaders × 4
//! requests took 0.7–0.9 s for each one's first chunk, with 2 requests
//! each 0.35–0.55 s). A
//! holder with the link to itself, on a long round trip or with small
//! chunks, needs many: 8 KiB chunks at 50 Mbit/s and 40 ms are 31 chunks a
//! round trip. Here the count follows each holder's rate as this download
//! measures it while the holder is asked (Little's law: in flight = rate ×
//! time), never under [`FLOOR`] (so a measured rate can always grow), never
//! over `--per-holder`. The gain of two makes the count nearly double every
//! two round trips (a rate is measured over two) while the rate keeps up,
//! as TCP's slow start does, and leaves a chunk or two queued at the holder,
//! so its link never waits for a request.

use std::time::Duration;

use tokio::time::Instant;

/// Requests in flight to a holder whose rate is not known or is low.
const FLOOR: usize = 2;
/// Chunks in flight per chunk the holder delivers in a round trip.
const GAIN: f64 = 2.0;
/// A rate is measured over at least this long, and at least two round trips.
const WINDOW: Duration = Duration::from_millis(5);

/// One holder's pace, as one download measures it.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    /// The shortest time the holder took to answer a request (the response
    /// before the chunk's bytes): the round trip with no queue ahead. The
    /// answer also waits for an upload slot there and its first read from
    /// disk; the shortest over many is close to the round trip unless the
    /// holder is never idle.
    base: Option<Duration>,
    /// Bytes a second it delivers while asked: the last window's if more,
    /// else a moving average.
    rate: Option<f64>,
    /// The current window: since when, and the bytes delivered in it.
    since: Instant,
    bytes: u64,
}

impl Pace {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            base: None,
            rate: None,
            since: now,
            bytes: 0,
        }
    }

    /// The holder is asked again after a time with nothing in flight: that
    /// time is not part of its rate.
    pub(super) fn busy(&mut self, now: Instant) {
        (self.since, self.bytes) = (now, 0);
    }

    /// A chunk of `bytes` came, its request answered `answered` after it was
    /// made.
    pub(super) fn delivered(&mut self, now: Instant, answered: Duration, bytes: u64) {
        let base = self.base.map_or(answered, |b| b.min(answered));
        self.base = Some(base);
        self.bytes += bytes;
        let span = now.duration_since(self.since);
        if span < WINDOW.max(base * 2) {
            return;
        }
        let sample = self.bytes as f64 / span.as_secs_f64();
        // Up at once, down gently: a window that delivered less may just
        // have asked for less (nothing else wanted from this holder).
        self.rate = Some(match self.rate {
            Some(rate) if sample < rate => (rate * 3.0 + sample) / 4.0,
            _ => sample,
        });
        (self.since, self.bytes) = (now, 0);
    }

    /// The holder was too busy to take a request: its pace is taken as half
    /// what it was.
    pub(super) fn slow_down(&mut self) {
        self.rate = self.rate.map(|r| r / 2.0);
    }

    /// Requests to keep in flight for chunks of `chunk` bytes, at most
    /// `most` (and at least one).
    pub(super) fn limit(&self, chunk: u64, most: usize) -> usize {
        let want = match (self.rate, self.base) {
            (Some(rate), Some(base)) => {
                let per_trip = rate * base.as_secs_f64() / chunk.max(1) as f64;
                // In range: the product of a rate and a time is finite and
                // not negative, and the cast saturates.
                ((GAIN * per_trip).ceil() as usize).saturating_add(1)
            }
            _ => FLOOR,
        };
        want.max(FLOOR).min(most.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const CHUNK: u64 = 128 << 10;

    /// Feeds `pace` a holder that answers in `rtt` and sends `rate` bytes a
    /// second in chunks of `chunk`, for `chunks` chunks.
    fn feed(pace: &mut Pace, start: Instant, rtt: Duration, rate: f64, chunk: u64, chunks: u32) {
        for n in 1..=chunks {
            let at = start + rtt + Duration::from_secs_f64(f64::from(n) * chunk as f64 / rate);
            pace.delivered(at, rtt, chunk);
        }
    }

    #[test]
    fn an_unmeasured_holder_gets_the_floor_within_the_most_allowed() {
        let pace = Pace::new(Instant::now());
        assert_eq!(pace.limit(CHUNK, 16), FLOOR);
        assert_eq!(pace.limit(CHUNK, 1), 1, "--per-holder 1 is obeyed");
    }

    #[test]
    fn a_holder_shared_by_many_gets_the_floor() {
        // 50 Mbit/s shared by 8 downloaders: 0.78 MB/s each, 40 ms round
        // trip: a quarter chunk a round trip.
        let start = Instant::now();
        let mut pace = Pace::new(start);
        feed(&mut pace, start, 40 * MS, 0.78e6, CHUNK, 20);
        assert_eq!(pace.limit(CHUNK, 16), FLOOR);
    }

    #[test]
    fn a_holder_with_its_link_to_itself_covers_its_round_trip() {
        // 50 Mbit/s alone, 40 ms: 1.9 chunks of 128 KiB a round trip.
        let start = Instant::now();
        let mut pace = Pace::new(start);
        feed(&mut pace, start, 40 * MS, 6.25e6, CHUNK, 40);
        assert_eq!(pace.limit(CHUNK, 16), 5);
        // 8 KiB chunks: 31 a round trip, capped by --per-holder.
        let mut pace = Pace::new(start);
        feed(&mut pace, start, 40 * MS, 6.25e6, 8 << 10, 2000);
        assert_eq!(pace.limit(8 << 10, 16), 16);
        assert!(
            pace.limit(8 << 10, 100) >= 61,
            "{}",
            pace.limit(8 << 10, 100)
        );
    }

    #[test]
    fn time_with_nothing_asked_is_not_counted_and_busy_halves_the_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        feed(&mut pace, start, 40 * MS, 6.25e6, CHUNK, 40);
        let before = pace.limit(CHUNK, 100);
        // Idle for a minute, then asked again: the first window after it
        // (two chunks) is as fast as before, not a minute long.
        let later = start + Duration::from_secs(60);
        pace.busy(later);
        feed(&mut pace, later, 40 * MS, 6.25e6, CHUNK, 2);
        assert_eq!(pace.limit(CHUNK, 100), before);
        pace.slow_down();
        assert!(pace.limit(CHUNK, 100) < before);
    }
}
