//! Chunk math: how a file of a given size is cut into numbered chunks.
//!
//! Chunks are numbered from 1, as in the seed. The chunk size is a power of
//! two, at least 1 KiB; by default the smallest one that keeps a file at 1,024
//! chunks or fewer (Transmission's rule of thumb), capped at 16 MiB. Every
//! chunk but the last is exactly one chunk size long; a 0-byte file has no
//! chunks. All arithmetic is checked: sizes come from the network.

use std::{fmt, num::NonZeroU32, ops::Range};

/// The smallest chunk size, and BLAKE3's own chunk length.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// The largest chunk size.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// The adaptive chunk size keeps files at this many chunks or fewer.
pub const TARGET_CHUNKS: u64 = 1024;
/// The most chunks a file may have: a manifest of this many digests still
/// fits in one tracker message. With 16 MiB chunks that is 256 GiB.
pub const MAX_CHUNKS: u32 = 16 * 1024;

/// A chunk number, from 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkIndex(NonZeroU32);

impl ChunkIndex {
    /// The first chunk.
    pub const FIRST: ChunkIndex = ChunkIndex(NonZeroU32::MIN);

    /// `None` for 0: chunks are numbered from 1.
    pub fn new(number: u32) -> Option<Self> {
        NonZeroU32::new(number).map(Self)
    }

    /// The chunk's number, from 1, as users and the wire see it.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The chunk's position from 0, for bitmaps and slices.
    pub fn position(self) -> usize {
        (self.0.get() - 1) as usize
    }

    /// The chunk at position `pos` (from 0).
    pub fn from_position(pos: usize) -> Option<Self> {
        u32::try_from(pos).ok()?.checked_add(1).and_then(Self::new)
    }
}

impl fmt::Display for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A valid chunk size: a power of two from [`MIN_CHUNK_SIZE`] to [`MAX_CHUNK_SIZE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkSize(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk size {0} is not a power of two from 1 KiB to 16 MiB")]
    BadChunkSize(u64),
    #[error("a {size}-byte file in {chunk_size}-byte chunks has more than {MAX_CHUNKS} chunks")]
    TooManyChunks { size: u64, chunk_size: u32 },
    #[error("chunk {number} is out of range: the file has {count} chunks, numbered from 1")]
    OutOfRange { number: u64, count: u32 },
    #[error("chunk range {first}-{last} is empty or reversed")]
    BadRange { first: u32, last: u32 },
    #[error(
        "more than {max} chunk ranges for a file of {count} chunks; no set needs more (merge adjacent ranges)"
    )]
    TooManyRanges { max: u32, count: u32 },
}

impl ChunkSize {
    pub const MIN: ChunkSize = ChunkSize(MIN_CHUNK_SIZE);
    pub const MAX: ChunkSize = ChunkSize(MAX_CHUNK_SIZE);

    pub fn new(bytes: u64) -> Result<Self, ChunkError> {
        let valid = bytes.is_power_of_two()
            && (u64::from(MIN_CHUNK_SIZE)..=u64::from(MAX_CHUNK_SIZE)).contains(&bytes);
        match u32::try_from(bytes) {
            Ok(b) if valid => Ok(Self(b)),
            _ => Err(ChunkError::BadChunkSize(bytes)),
        }
    }

    /// The adaptive chunk size for a file of `size` bytes: the smallest power
    /// of two of at least 1 KiB that keeps the file to [`TARGET_CHUNKS`]
    /// chunks, capped at 16 MiB.
    pub fn for_file(size: u64) -> Self {
        let wanted = size.div_ceil(TARGET_CHUNKS).max(u64::from(MIN_CHUNK_SIZE));
        let pow2 = wanted
            .checked_next_power_of_two()
            .unwrap_or(u64::from(MAX_CHUNK_SIZE));
        // The min/max keep the value in range, so the cast cannot truncate.
        Self(pow2.min(u64::from(MAX_CHUNK_SIZE)) as u32)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How one file is cut into chunks: its size and chunk size, and so its
/// chunk count. Always within [`MAX_CHUNKS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    size: u64,
    chunk_size: ChunkSize,
    count: u32,
}

impl Layout {
    pub fn new(size: u64, chunk_size: ChunkSize) -> Result<Self, ChunkError> {
        let count = size.div_ceil(u64::from(chunk_size.get()));
        match u32::try_from(count) {
            Ok(count) if count <= MAX_CHUNKS => Ok(Self {
                size,
                chunk_size,
                count,
            }),
            _ => Err(ChunkError::TooManyChunks {
                size,
                chunk_size: chunk_size.get(),
            }),
        }
    }

    /// The layout with the adaptive chunk size.
    pub fn adaptive(size: u64) -> Result<Self, ChunkError> {
        Self::new(size, ChunkSize::for_file(size))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// How many chunks the file has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The chunk numbered `number`, if the file has it.
    pub fn chunk(&self, number: u64) -> Result<ChunkIndex, ChunkError> {
        u32::try_from(number)
            .ok()
            .filter(|&n| n <= self.count)
            .and_then(ChunkIndex::new)
            .ok_or(ChunkError::OutOfRange {
                number,
                count: self.count,
            })
    }

    /// Whether `chunk` is one of this file's chunks.
    pub fn contains(&self, chunk: ChunkIndex) -> bool {
        chunk.get() <= self.count
    }

    /// The chunk's byte range in the file. `chunk` must be in the layout.
    pub fn range(&self, chunk: ChunkIndex) -> Range<u64> {
        debug_assert!(self.contains(chunk), "{chunk:?} outside {self:?}");
        let start = u64::from(chunk.get() - 1) * u64::from(self.chunk_size.get());
        let end = (start + u64::from(self.chunk_size.get())).min(self.size);
        start..end
    }

    /// The chunk's length in bytes. `chunk` must be in the layout.
    pub fn chunk_len(&self, chunk: ChunkIndex) -> u32 {
        let r = self.range(chunk);
        // A chunk is never longer than the chunk size, which is a u32.
        (r.end - r.start) as u32
    }

    /// Every chunk, in order.
    pub fn chunks(&self) -> impl DoubleEndedIterator<Item = ChunkIndex> + use<> {
        (1..=self.count).filter_map(ChunkIndex::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn adaptive_sizes() {
        // (file size, chunk size, chunk count)
        let table = [
            (0, KIB, 0),                // empty file: no chunks
            (1, KIB, 1),                // one short chunk
            (KIB - 1, KIB, 1),          // C - 1
            (KIB, KIB, 1),              // exactly C
            (KIB + 1, KIB, 2),          // C + 1: a 1-byte last chunk
            (1822, KIB, 2),             // the seed's `bse`
            (69630, KIB, 68),           // the seed's `23`
            (MIB, KIB, 1024),           // largest file with 1 KiB chunks
            (MIB + 1, 2 * KIB, 513),    // one byte more doubles the chunk size
            (GIB, MIB, 1024),           // 1 GiB -> 1 MiB chunks
            (4 * GIB, 4 * MIB, 1024),   // 4 GiB -> 4 MiB chunks
            (16 * GIB, 16 * MIB, 1024), // at the cap
            (64 * GIB, 16 * MIB, 4096), // beyond it the count grows
        ];
        for (size, chunk, count) in table {
            let layout = Layout::adaptive(size).unwrap();
            assert_eq!(u64::from(layout.chunk_size().get()), chunk, "size {size}");
            assert_eq!(layout.count(), count, "size {size}");
        }
    }

    #[test]
    fn ranges_tile_the_file() {
        for size in [0, 1, KIB - 1, KIB, KIB + 1, 1822, 69630, 3 * MIB + 17] {
            let layout = Layout::adaptive(size).unwrap();
            let mut next = 0;
            for chunk in layout.chunks() {
                let r = layout.range(chunk);
                assert_eq!(r.start, next, "size {size} {chunk:?}");
                assert!(r.end > r.start);
                assert!(r.end - r.start <= u64::from(layout.chunk_size().get()));
                next = r.end;
            }
            assert_eq!(next, size);
        }
        let seed = Layout::adaptive(69630).unwrap();
        let last = seed.chunk(68).unwrap();
        assert_eq!(seed.range(last), 68608..69630);
        assert_eq!(seed.chunk_len(last), 1022);
    }

    #[test]
    fn chunk_numbers_are_checked() {
        let layout = Layout::adaptive(1822).unwrap();
        assert_eq!(layout.chunk(1).map(ChunkIndex::get), Ok(1));
        assert_eq!(layout.chunk(2).map(ChunkIndex::get), Ok(2));
        for bad in [0, 3, u64::from(u32::MAX), u64::MAX] {
            assert!(
                matches!(layout.chunk(bad), Err(ChunkError::OutOfRange { .. })),
                "{bad}"
            );
        }
        assert!(Layout::adaptive(0).unwrap().chunk(1).is_err());
    }

    #[test]
    fn chunk_sizes_are_checked() {
        for bad in [0, 3, 512, 1023, 1025, 3 * KIB, 32 * MIB, 1 << 40, u64::MAX] {
            assert_eq!(ChunkSize::new(bad), Err(ChunkError::BadChunkSize(bad)));
        }
        for good in [KIB, 2 * KIB, 256 * KIB, 16 * MIB] {
            assert_eq!(u64::from(ChunkSize::new(good).unwrap().get()), good);
        }
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        assert!(matches!(
            Layout::adaptive(u64::MAX),
            Err(ChunkError::TooManyChunks { .. })
        ));
        assert!(Layout::new(MIB * 17, ChunkSize::MIN).is_err());
        let max = Layout::new(u64::from(MAX_CHUNKS) * 16 * MIB, ChunkSize::MAX).unwrap();
        assert_eq!(max.count(), MAX_CHUNKS);
        let last = max.chunk(u64::from(MAX_CHUNKS)).unwrap();
        assert_eq!(max.range(last).end, max.size());
    }

    #[test]
    fn positions_round_trip() {
        assert_eq!(ChunkIndex::FIRST.position(), 0);
        assert_eq!(ChunkIndex::from_position(67).map(ChunkIndex::get), Some(68));
        assert_eq!(ChunkIndex::new(0), None);
    }

    #[test]
    fn a_layout_contains_its_chunks_and_no_more() {
        // The seed's bse: 1,822 bytes, 2 chunks of 1 KiB.
        let layout = Layout::new(1822, ChunkSize::new(KIB).unwrap()).unwrap();
        let n = |n| ChunkIndex::new(n).unwrap();
        assert!(layout.contains(n(1)) && layout.contains(n(2)));
        assert!(!layout.contains(n(3)));
    }
}
