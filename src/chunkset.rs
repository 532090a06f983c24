//! [`ChunkSet`]: which chunks of a file a peer holds, as a bitmap.
//!
//! On the wire a set travels as inclusive ranges (`1-68`), which is short for
//! the usual cases (everything, or a run of chunks) and readable in grpcurl;
//! a fragmented set (a download in progress) travels as a bitmap instead,
//! whichever is shorter ([`crate::wire::holder_chunks`]).

use std::ops::RangeInclusive;

use crate::chunk::{ChunkError, ChunkIndex};

/// A set of chunk numbers of one file with `universe` chunks.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChunkSet {
    words: Vec<u64>,
    universe: u32,
    len: u32,
}

impl ChunkSet {
    /// No chunks of a file with `universe` chunks.
    pub fn empty(universe: u32) -> Self {
        Self {
            words: vec![0; (universe as usize).div_ceil(64)],
            universe,
            len: 0,
        }
    }

    /// Every chunk of a file with `universe` chunks.
    pub fn full(universe: u32) -> Self {
        let mut set = Self::empty(universe);
        set.words.fill(u64::MAX);
        set.clear_tail();
        set.len = universe;
        set
    }

    /// The set of the given inclusive ranges; each must lie within
    /// `1..=universe`. Ranges may overlap, but a set never needs more than
    /// `universe / 2 + 1` of them, so more are refused: the work done for a
    /// request stays proportional to the file, not to the request.
    pub fn from_ranges(
        universe: u32,
        ranges: impl IntoIterator<Item = RangeInclusive<u32>>,
    ) -> Result<Self, ChunkError> {
        let mut set = Self::empty(universe);
        let mut seen = 0u32;
        for range in ranges {
            let (first, last) = (*range.start(), *range.end());
            seen += 1;
            if seen > universe / 2 + 1 {
                return Err(ChunkError::TooManyRanges {
                    max: universe / 2 + 1,
                    count: universe,
                });
            }
            if first == 0 || first > last {
                return Err(ChunkError::BadRange { first, last });
            }
            if last > universe {
                return Err(ChunkError::OutOfRange {
                    number: u64::from(last),
                    count: universe,
                });
            }
            set.fill_positions(first as usize - 1, last as usize - 1);
        }
        set.recount();
        Ok(set)
    }

    /// The bitmap as bytes (little-endian 64-bit words), for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A bitmap stored by [`ChunkSet::to_bytes`]; `None` if it does not fit
    /// a file of `universe` chunks.
    pub fn from_bytes(universe: u32, bytes: &[u8]) -> Option<Self> {
        let words = (universe as usize).div_ceil(64);
        if bytes.len() != words * 8 {
            return None;
        }
        let mut set = Self {
            words: bytes
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .collect(),
            universe,
            len: 0,
        };
        let before = set.words.last().copied();
        set.clear_tail();
        if set.words.last().copied() != before {
            return None;
        }
        set.recount();
        Some(set)
    }

    /// The set as a bitmap of `universe.div_ceil(8)` bytes: chunk `n` is bit
    /// `(n - 1) % 8` (least significant first) of byte `(n - 1) / 8`. The
    /// wire form for fragmented sets, where ranges would be longer.
    pub fn to_bitmap(&self) -> Vec<u8> {
        let len = (self.universe as usize).div_ceil(8);
        let mut bytes = Vec::with_capacity(len + 8);
        for word in &self.words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }

    /// A bitmap made by [`ChunkSet::to_bitmap`]; `None` if its length is not
    /// the file's or it names chunks past the last.
    pub fn from_bitmap(universe: u32, bitmap: &[u8]) -> Option<Self> {
        if bitmap.len() != (universe as usize).div_ceil(8) {
            return None;
        }
        let mut padded = bitmap.to_vec();
        padded.resize((universe as usize).div_ceil(64) * 8, 0);
        Self::from_bytes(universe, &padded)
    }

    /// How many ranges [`ChunkSet::ranges`] would return, without building
    /// them: the number of set bits whose lower neighbour is clear.
    pub fn run_count(&self) -> u32 {
        let mut carry = 0;
        let mut runs = 0;
        for &word in &self.words {
            runs += (word & !((word << 1) | carry)).count_ones();
            carry = word >> 63;
        }
        runs
    }

    /// How many chunks the file has.
    pub fn universe(&self) -> u32 {
        self.universe
    }

    /// How many chunks are in the set.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the set holds every chunk of the file.
    pub fn is_full(&self) -> bool {
        self.len == self.universe
    }

    pub fn contains(&self, chunk: ChunkIndex) -> bool {
        let pos = chunk.position();
        chunk.get() <= self.universe && self.words[pos / 64] & (1 << (pos % 64)) != 0
    }

    /// Adds `chunk`; false if it was there already or is not in the file.
    pub fn insert(&mut self, chunk: ChunkIndex) -> bool {
        chunk.get() <= self.universe && self.insert_position(chunk.position())
    }

    /// Removes `chunk`; false if it was not there.
    pub fn remove(&mut self, chunk: ChunkIndex) -> bool {
        if chunk.get() > self.universe {
            return false;
        }
        let pos = chunk.position();
        let (word, bit) = (pos / 64, 1 << (pos % 64));
        let had = self.words[word] & bit != 0;
        self.words[word] &= !bit;
        self.len -= u32::from(had);
        had
    }

    /// Adds every chunk of `other` (a set over the same file).
    pub fn union_with(&mut self, other: &ChunkSet) {
        debug_assert_eq!(self.universe, other.universe);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
        self.recount();
    }

    /// Whether every chunk of this set is in `other` (a set over the same file).
    pub fn is_subset(&self, other: &ChunkSet) -> bool {
        debug_assert_eq!(self.universe, other.universe);
        self.words
            .iter()
            .zip(&other.words)
            .all(|(a, b)| a & !b == 0)
    }

    /// Removes every chunk of `other` (a set over the same file).
    pub fn subtract(&mut self, other: &ChunkSet) {
        debug_assert_eq!(self.universe, other.universe);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
        self.recount();
    }

    /// The chunks in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = ChunkIndex> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            BitIter(word).filter_map(move |bit| ChunkIndex::from_position(w * 64 + bit))
        })
    }

    /// The chunks not in the set, in order.
    pub fn missing(&self) -> impl Iterator<Item = ChunkIndex> + '_ {
        let universe = self.universe as usize;
        self.words.iter().enumerate().flat_map(move |(w, &word)| {
            BitIter(!word)
                .map(move |bit| w * 64 + bit)
                .take_while(move |&pos| pos < universe)
                .filter_map(ChunkIndex::from_position)
        })
    }

    /// The set as sorted, disjoint, non-adjacent inclusive ranges. Walks
    /// whole words: a full set (a seeder's) is one step.
    pub fn ranges(&self) -> Vec<RangeInclusive<u32>> {
        self.range_iter().collect()
    }

    /// [`ChunkSet::ranges`], one at a time.
    pub fn range_iter(&self) -> impl Iterator<Item = RangeInclusive<u32>> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let start = self.next_with(pos, true)?;
            let end = self
                .next_with(start, false)
                .unwrap_or(self.universe as usize);
            pos = end;
            // Positions are below the universe, a u32.
            Some(start as u32 + 1..=end as u32)
        })
    }

    /// The first position at or after `from` whose bit is `set`.
    fn next_with(&self, from: usize, set: bool) -> Option<usize> {
        let universe = self.universe as usize;
        let mut w = from / 64;
        let mut word = self.words.get(w)?;
        let mut bits = (if set { *word } else { !*word }) & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                let pos = w * 64 + bits.trailing_zeros() as usize;
                return (pos < universe).then_some(pos);
            }
            w += 1;
            word = self.words.get(w)?;
            bits = if set { *word } else { !*word };
        }
    }

    /// Adds one to `counts[i]` for every chunk at position `i` in the set.
    pub fn add_to_counts(&self, counts: &mut [u32]) {
        if self.is_full() {
            // The common case (a seeder), kept cheap for large swarms.
            counts.iter_mut().for_each(|c| *c += 1);
            return;
        }
        for chunk in self.iter() {
            counts[chunk.position()] += 1;
        }
    }

    /// Subtracts one from `counts[i]` for every chunk at position `i` in the set.
    pub fn sub_from_counts(&self, counts: &mut [u32]) {
        for chunk in self.iter() {
            let c = &mut counts[chunk.position()];
            *c = c.saturating_sub(1);
        }
    }

    /// Updates `counts` for this set taking the place of `old` (a set over the
    /// same file): the same as `old.sub_from_counts` then `add_to_counts`,
    /// but visiting only the chunks in which the two differ.
    pub fn replace_in_counts(&self, old: &ChunkSet, counts: &mut [u32]) {
        debug_assert_eq!(self.universe, old.universe);
        for (w, (&new, &was)) in self.words.iter().zip(&old.words).enumerate() {
            for bit in BitIter(new & !was) {
                counts[w * 64 + bit] += 1;
            }
            for bit in BitIter(was & !new) {
                let c = &mut counts[w * 64 + bit];
                *c = c.saturating_sub(1);
            }
        }
    }

    fn insert_position(&mut self, pos: usize) -> bool {
        let (word, bit) = (pos / 64, 1 << (pos % 64));
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u32::from(new);
        new
    }

    /// Sets positions `first..=last` a word at a time; the caller recounts.
    fn fill_positions(&mut self, first: usize, last: usize) {
        let (fw, lw) = (first / 64, last / 64);
        let low = u64::MAX << (first % 64);
        let high = u64::MAX >> (63 - last % 64);
        if fw == lw {
            self.words[fw] |= low & high;
            return;
        }
        self.words[fw] |= low;
        self.words[fw + 1..lw].fill(u64::MAX);
        self.words[lw] |= high;
    }

    fn clear_tail(&mut self) {
        let tail = self.universe as usize % 64;
        if tail != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << tail) - 1;
        }
    }

    fn recount(&mut self) {
        self.len = self.words.iter().map(|w| w.count_ones()).sum();
    }
}

/// Shows the set the way users read it: `1-3,7,9-12`.
impl std::fmt::Display for ChunkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, r) in self.ranges().into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ChunkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkSet({}/{}: {self})", self.len, self.universe)
    }
}

/// The positions of the set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests;
