//! Super-seeding: a peer holding a whole file sends every chunk once before
//! it sends any chunk twice, as far as its requesters let it.
//!
//! A seeder's upload is the scarce link while a swarm is young: each chunk
//! it sends a second time is one the swarm already had, while some other
//! chunk is still held by nobody else. So the server keeps, per complete
//! file, how often it has sent each chunk. A request may name chunks it
//! would take instead of the one it asks for: the server sends whichever of
//! them it has sent least, decided and counted under one lock, so requesters
//! asking at once never get the same first copy and the seeder's link stays
//! busy with first copies without a round trip per swap. A request that
//! says it could use another chunk (`may_decline`) and whose every chunk was
//! sent more often than the least-sent ones is declined, with some of the
//! least-sent chunks as hints; the requester asks for one of those, and gets
//! the declined one from the peer that has it already (or insists, without
//! `may_decline` and without alternatives, when nobody else has it). Any
//! other request is served, and counted.
//!
//! The counts start again once nobody has asked for the file for
//! [`IDLE_RESET`]: a later swarm starts from an even tally.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hive::{ChunkIndex, Digest, FileName};
use tokio::time::Instant;

/// A file nobody asked for this long has its counts cleared.
pub const IDLE_RESET: Duration = Duration::from_secs(30);
/// Least-sent chunks named in a decline at most.
pub const HINTS: usize = 8;

/// One request, as the tally sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The chunk asked for.
    pub chunk: ChunkIndex,
    /// Chunks the requester would take instead, most wanted first.
    pub instead: &'a [ChunkIndex],
    /// Whether the requester can do with none of them for now.
    pub may_decline: bool,
}

impl<'a> Ask<'a> {
    /// A request for `chunk` alone.
    pub fn only(chunk: ChunkIndex, may_decline: bool) -> Self {
        Self {
            chunk,
            instead: &[],
            may_decline,
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send this chunk (the one asked for or one of the alternatives); it
    /// has been counted.
    Serve(ChunkIndex),
    /// Decline it: `least_sent` are some of the chunks sent least, each
    /// `least_count` times.
    Decline {
        least_sent: Vec<u32>,
        least_count: u32,
    },
}

/// How often each chunk of each complete file was sent.
#[derive(Clone, Default)]
pub struct Tally(Arc<Mutex<HashMap<FileName, Counts>>>);

/// One file's counts.
struct Counts {
    digest: Digest,
    sent: Vec<u32>,
    /// The lowest count, and how many chunks have it.
    least: u32,
    at_least: usize,
    last: Instant,
}

impl Counts {
    fn new(digest: Digest, chunks: u32, now: Instant) -> Self {
        Self {
            digest,
            sent: vec![0; chunks as usize],
            least: 0,
            at_least: chunks as usize,
            last: now,
        }
    }

    fn count(&mut self, i: usize) {
        self.sent[i] += 1;
        if self.sent[i] - 1 == self.least {
            self.at_least -= 1;
            if self.at_least == 0 {
                self.least += 1;
                let least = self.least;
                self.at_least = self.sent.iter().filter(|&&n| n == least).count();
            }
        }
    }

    /// Takes back one count of chunk `i` (a send that never happened).
    fn uncount(&mut self, i: usize) {
        if self.sent[i] == 0 {
            return;
        }
        self.sent[i] -= 1;
        if self.sent[i] < self.least {
            self.least = self.sent[i];
            self.at_least = 1;
        } else if self.sent[i] == self.least {
            self.at_least += 1;
        }
    }

    /// Up to [`HINTS`] chunks at the lowest count, other than `not`, from a
    /// random place on (so that requesters told at once get different ones).
    fn hints(&self, not: usize) -> Vec<u32> {
        let n = self.sent.len();
        let from = fastrand::usize(..n);
        (0..n)
            .map(|k| (from + k) % n)
            .filter(|&i| i != not && self.sent[i] == self.least)
            .take(HINTS)
            .map(|i| i as u32 + 1)
            .collect()
    }
}

impl Tally {
    /// Which chunk of the complete file `name` (whose manifest has `digest`
    /// and `chunks` chunks) to send for `ask`, if any: of the chunk asked
    /// for and its alternatives, the one sent least (the one asked for on a
    /// tie, then the earliest alternative).
    pub fn decide(
        &self,
        name: &FileName,
        (digest, chunks): (Digest, u32),
        ask: Ask<'_>,
        now: Instant,
    ) -> Verdict {
        let mut files = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = files
            .entry(name.clone())
            .or_insert_with(|| Counts::new(digest, chunks, now));
        if counts.digest != digest
            || counts.sent.len() != chunks as usize
            || now.duration_since(counts.last) >= IDLE_RESET
        {
            *counts = Counts::new(digest, chunks, now);
        }
        counts.last = now;
        let n = counts.sent.len();
        if ask.chunk.position() >= n {
            return Verdict::Serve(ask.chunk);
        }
        // The first of the least sent: `min_by_key` keeps the first minimum.
        let best = std::iter::once(ask.chunk)
            .chain(ask.instead.iter().copied())
            .filter(|c| c.position() < n)
            .min_by_key(|c| counts.sent[c.position()])
            .unwrap_or(ask.chunk);
        let i = best.position();
        if ask.may_decline && counts.sent[i] > counts.least {
            return Verdict::Decline {
                least_sent: counts.hints(ask.chunk.position()),
                least_count: counts.least,
            };
        }
        counts.count(i);
        Verdict::Serve(best)
    }

    /// Takes back a send of `chunk` that [`Tally::decide`] counted but that
    /// never happened (the request got no upload slot): otherwise a flash
    /// crowd's refused requests would mark chunks sent that never left.
    pub fn uncount(&self, name: &FileName, chunk: ChunkIndex) {
        let mut files = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counts) = files.get_mut(name)
            && chunk.position() < counts.sent.len()
        {
            counts.uncount(chunk.position());
        }
    }

    /// Forgets `name` (no longer held whole).
    pub fn forget(&self, name: &FileName) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> FileName {
        FileName::new("f").unwrap()
    }

    fn c(n: u32) -> ChunkIndex {
        ChunkIndex::new(n).unwrap()
    }

    fn d() -> Digest {
        Digest::of(b"one")
    }

    /// Every chunk once before any twice: a repeat is declined with hints
    /// that are exactly the chunks not sent yet; once all were sent once the
    /// same chunk is served again.
    #[test]
    fn a_seeder_sends_each_chunk_once_before_any_twice() {
        let t = Tally::default();
        let now = Instant::now();
        assert_eq!(
            t.decide(&name(), (d(), 4), Ask::only(c(2), true), now),
            Verdict::Serve(c(2))
        );
        let Verdict::Decline {
            least_sent: mut hints,
            least_count: 0,
        } = t.decide(&name(), (d(), 4), Ask::only(c(2), true), now)
        else {
            panic!("a second copy of chunk 2 while 1, 3 and 4 are unsent must be declined");
        };
        hints.sort_unstable();
        assert_eq!(hints, vec![1, 3, 4]);
        for n in [1, 3, 4] {
            assert_eq!(
                t.decide(&name(), (d(), 4), Ask::only(c(n), true), now),
                Verdict::Serve(c(n))
            );
        }
        // All sent once: chunk 2's second copy goes now, then 2 is ahead again.
        assert_eq!(
            t.decide(&name(), (d(), 4), Ask::only(c(2), true), now),
            Verdict::Serve(c(2))
        );
        assert!(matches!(
            t.decide(&name(), (d(), 4), Ask::only(c(2), true), now),
            Verdict::Decline { least_count: 1, .. }
        ));
    }

    /// A requester that cannot take another chunk is always served, and its
    /// copy counts.
    #[test]
    fn a_request_that_may_not_be_declined_is_served_and_counted() {
        let t = Tally::default();
        let now = Instant::now();
        assert_eq!(
            t.decide(&name(), (d(), 2), Ask::only(c(1), false), now),
            Verdict::Serve(c(1))
        );
        assert_eq!(
            t.decide(&name(), (d(), 2), Ask::only(c(1), false), now),
            Verdict::Serve(c(1))
        );
        assert_eq!(
            t.decide(&name(), (d(), 2), Ask::only(c(1), true), now),
            Verdict::Decline {
                least_sent: vec![2],
                least_count: 0
            }
        );
    }

    /// At most HINTS hints, never the declined chunk itself.
    #[test]
    fn hints_are_few_and_never_the_declined_chunk() {
        let t = Tally::default();
        let now = Instant::now();
        assert_eq!(
            t.decide(&name(), (d(), 100), Ask::only(c(50), true), now),
            Verdict::Serve(c(50))
        );
        let Verdict::Decline {
            least_sent: hints, ..
        } = t.decide(&name(), (d(), 100), Ask::only(c(50), true), now)
        else {
            panic!("declined expected");
        };
        assert_eq!(hints.len(), HINTS);
        assert!(hints.iter().all(|&h| h != 50 && (1..=100).contains(&h)));
    }

    /// A send that never happened (no upload slot) is taken back.
    #[test]
    fn a_send_taken_back_is_no_longer_counted() {
        let tally = Tally::default();
        let now = Instant::now();
        let digest = Digest::of(b"x");
        let decide = |n, may| tally.decide(&name(), (digest, 2), Ask::only(c(n), may), now);
        assert!(matches!(decide(1, true), Verdict::Serve(_)));
        // Chunk 1 is ahead of chunk 2: declined.
        assert!(matches!(decide(1, true), Verdict::Decline { .. }));
        // The send of chunk 1 never happened: it is not ahead any more.
        tally.uncount(&name(), c(1));
        assert!(matches!(decide(1, true), Verdict::Serve(_)));
        assert!(matches!(decide(2, true), Verdict::Serve(_)));
        // Both sent once: the least count moved on, and a take-back of one
        // brings it back.
        tally.uncount(&name(), c(2));
        match decide(1, true) {
            Verdict::Decline {
                least_sent,
                least_count,
            } => {
                assert_eq!((least_sent, least_count), (vec![2], 0));
            }
            Verdict::Serve(_) => panic!("chunk 1 is ahead of chunk 2 again"),
        }
    }

    /// A file idle for IDLE_RESET, or replaced by other content, starts
    /// from an even tally.
    #[test]
    fn counts_start_again_after_idleness_or_new_content() {
        let t = Tally::default();
        let now = Instant::now();
        assert_eq!(
            t.decide(&name(), (d(), 2), Ask::only(c(1), true), now),
            Verdict::Serve(c(1))
        );
        let later = now + IDLE_RESET;
        assert_eq!(
            t.decide(&name(), (d(), 2), Ask::only(c(1), true), later),
            Verdict::Serve(c(1))
        );
        let other = Digest::of(b"other");
        assert_eq!(
            t.decide(&name(), (other, 2), Ask::only(c(1), true), later),
            Verdict::Serve(c(1))
        );
        t.forget(&name());
        assert_eq!(
            t.decide(&name(), (other, 2), Ask::only(c(1), true), later),
            Verdict::Serve(c(1))
        );
    }

    /// Asked for a chunk sent already, with alternatives: the least-sent of
    /// them is sent instead, first copies only, and two requesters naming
    /// the same alternatives at once get different ones.
    #[test]
    fn an_alternative_sent_least_is_sent_instead() {
        let t = Tally::default();
        let now = Instant::now();
        let decide = |chunk, instead: &[ChunkIndex], may_decline| {
            let ask = Ask {
                chunk,
                instead,
                may_decline,
            };
            t.decide(&name(), (d(), 5), ask, now)
        };
        assert_eq!(decide(c(1), &[], true), Verdict::Serve(c(1)));
        // Chunk 1 is ahead; 4 is the first unsent alternative.
        let instead = [c(1), c(4), c(5)];
        assert_eq!(decide(c(1), &instead, true), Verdict::Serve(c(4)));
        assert_eq!(decide(c(1), &instead, true), Verdict::Serve(c(5)));
        // Asked for itself while unsent, a chunk wins its ties.
        assert_eq!(decide(c(2), &[c(3)], true), Verdict::Serve(c(2)));
        // Every chunk named was sent; 3 was not: declined, with 3 as a hint.
        assert_eq!(
            decide(c(1), &[c(2), c(4)], true),
            Verdict::Decline {
                least_sent: vec![3],
                least_count: 0
            }
        );
        // Without may_decline, the least-sent of those named goes: chunk 1
        // on a tie, then 2, which is now sent less.
        assert_eq!(decide(c(1), &[c(2), c(4)], false), Verdict::Serve(c(1)));
        assert_eq!(decide(c(1), &[c(2), c(4)], false), Verdict::Serve(c(2)));
        // Alternatives beyond the file are passed over.
        let beyond = ChunkIndex::new(99).unwrap();
        assert_eq!(decide(c(1), &[beyond, c(3)], true), Verdict::Serve(c(3)));
    }
}
