//! BLAKE3 digests of chunks and whole files.
//!
//! hive hashes a file as one BLAKE3 tree. A file's digest is its plain BLAKE3
//! hash (what `b3sum` prints). A chunk's digest is the chaining value of the
//! chunk's subtree in that tree: chunk sizes are powers of two of at least
//! BLAKE3's 1 KiB, so every chunk is a whole subtree. A one-chunk file is its
//! own root, so there the chunk digest is the file digest. This gives:
//! - one hashing pass over a file yields every chunk digest and the file digest;
//! - each chunk is verifiable on its own, as soon as it arrives;
//! - the chunk digests of a manifest must combine into its file digest, so a
//!   manifest cannot say one thing per chunk and another for the whole.

use std::{
    fmt,
    fs::File,
    io,
    os::unix::fs::FileExt,
    sync::atomic::{AtomicU32, Ordering},
};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::chunk::{ChunkIndex, Layout};

/// A 32-byte BLAKE3 digest or chaining value. Shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a digest is 32 bytes (64 hex digits); got {0}")]
pub struct DigestError(String);

impl Digest {
    pub const LEN: usize = 32;

    /// The digest of some bytes, as a whole: the file digest of a file
    /// holding exactly `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DigestError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| DigestError(format!("{} bytes", bytes.len())))
    }

    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        blake3::Hash::from_hex(hex)
            .map(|h| Self(*h.as_bytes()))
            .map_err(|_| DigestError(format!("{hex:?}")))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..12])
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes one chunk incrementally, as its bytes arrive.
pub struct ChunkHasher {
    hasher: blake3::Hasher,
    root: bool,
    fed: u64,
}

impl ChunkHasher {
    /// A hasher for `chunk`, which must be in `layout`.
    pub fn new(layout: &Layout, chunk: ChunkIndex) -> Self {
        let root = layout.count() == 1;
        let mut hasher = blake3::Hasher::new();
        if !root {
            // The offset is a multiple of the chunk size, itself a multiple of
            // BLAKE3's 1 KiB chunk, as `set_input_offset` requires.
            hasher.set_input_offset(layout.range(chunk).start);
        }
        Self {
            hasher,
            root,
            fed: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.fed += data.len() as u64;
    }

    /// How many bytes were fed so far.
    pub fn len(&self) -> u64 {
        self.fed
    }

    pub fn is_empty(&self) -> bool {
        self.fed == 0
    }

    /// The chunk's digest; `None` if no bytes were fed (no chunk is empty).
    pub fn finalize(&self) -> Option<Digest> {
        if self.fed == 0 {
            return None;
        }
        Some(if self.root {
            Digest(*self.hasher.finalize().as_bytes())
        } else {
            Digest(self.hasher.finalize_non_root())
        })
    }
}

/// The digest of `chunk` of a file laid out as `layout`, given its bytes.
pub fn chunk_digest(layout: &Layout, chunk: ChunkIndex, data: &[u8]) -> Option<Digest> {
    let mut hasher = ChunkHasher::new(layout, chunk);
    hasher.update(data);
    hasher.finalize()
}

/// The file digest that the chunk digests of a file laid out as `layout`
/// combine into; `None` if there is not one digest per chunk.
pub fn file_digest(layout: &Layout, chunks: &[Digest]) -> Option<Digest> {
    if chunks.len() != layout.count() as usize {
        return None;
    }
    Some(match chunks {
        [] => Digest::of(b""),
        [only] => *only,
        _ => {
            let size = layout.size();
            let left = left_subtree_len(size);
            let l = subtree_cv(layout, chunks, 0, left);
            let r = subtree_cv(layout, chunks, left, size - left);
            Digest(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
        }
    })
}

/// The chaining value of the subtree covering `offset..offset + len`, which
/// starts on a chunk boundary. Splits exactly as BLAKE3 does: the left side
/// is the largest power of two below `len`, always a whole number of chunks.
fn subtree_cv(layout: &Layout, chunks: &[Digest], offset: u64, len: u64) -> ChainingValue {
    let chunk_size = u64::from(layout.chunk_size().get());
    if len <= chunk_size {
        return chunks[(offset / chunk_size) as usize].0;
    }
    let left = left_subtree_len(len);
    let l = subtree_cv(layout, chunks, offset, left);
    let r = subtree_cv(layout, chunks, offset + left, len - left);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// Every chunk digest and the file digest of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    pub chunks: Vec<Digest>,
    pub file: Digest,
}

/// Files smaller than this are hashed on the calling thread alone.
const PARALLEL_FROM: u64 = 8 << 20;
/// Each read covers at least this much, so tiny chunks are read in batches.
const READ_BATCH: u64 = 1 << 20;

/// Hashes the first `layout.size()` bytes of `file` on every core: one pass,
/// reading with `pread`, no memory map. Fails if the file is shorter.
pub fn hash_file(file: &File, layout: &Layout) -> io::Result<FileDigests> {
    let threads = if layout.size() < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let chunk_size = u64::from(layout.chunk_size().get());
    let batch = (READ_BATCH / chunk_size).max(1) as u32;
    let next = AtomicU32::new(0);
    let work = || -> io::Result<Vec<(usize, Digest)>> {
        let mut buf = vec![0u8; (u64::from(batch) * chunk_size).min(layout.size()) as usize];
        let mut out = Vec::new();
        loop {
            let first = next.fetch_add(batch, Ordering::Relaxed) + 1;
            let chunks: Vec<ChunkIndex> = (first..first.saturating_add(batch))
                .filter_map(|n| layout.chunk(u64::from(n)).ok())
                .collect();
            let (Some(lo), Some(hi)) = (chunks.first(), chunks.last()) else {
                return Ok(out);
            };
            let span = layout.range(*lo).start..layout.range(*hi).end;
            let data = &mut buf[..(span.end - span.start) as usize];
            file.read_exact_at(data, span.start)?;
            for &chunk in &chunks {
                let r = layout.range(chunk);
                let at = (r.start - span.start) as usize..(r.end - span.start) as usize;
                // Chunks are never empty, so there is always a digest.
                if let Some(d) = chunk_digest(layout, chunk, &data[at]) {
                    out.push((chunk.position(), d));
                }
            }
        }
    };
    let parts: Vec<io::Result<Vec<(usize, Digest)>>> = if threads == 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("hashing thread panicked")))
                })
                .collect()
        })
    };
    let mut chunks = vec![Digest([0; 32]); layout.count() as usize];
    for part in parts {
        for (pos, digest) in part? {
            chunks[pos] = digest;
        }
    }
    let file =
        file_digest(layout, &chunks).ok_or_else(|| io::Error::other("chunk count mismatch"))?;
    Ok(FileDigests { chunks, file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkSize;

    /// Deterministic bytes that differ from chunk to chunk.
    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 1024 * 7) as u8).collect()
    }

    fn digests_in_memory(layout: &Layout, bytes: &[u8]) -> Vec<Digest> {
        layout
            .chunks()
            .map(|c| {
                let r = layout.range(c);
                chunk_digest(layout, c, &bytes[r.start as usize..r.end as usize]).unwrap()
            })
            .collect()
    }

    #[test]
    fn chunk_digests_combine_into_b3sum() {
        // Sizes around BLAKE3's chunk and ours, the seed's files, and uneven tails.
        let sizes = [
            0,
            1,
            1023,
            1024,
            1025,
            1822,
            2048,
            3 * 1024 + 1,
            69630,
            1 << 20,
            (1 << 20) + 1,
        ];
        for size in sizes {
            let bytes = data(size);
            for chunk_size in [1024u64, 2048, 4096, 65536] {
                let Ok(layout) = Layout::new(size as u64, ChunkSize::new(chunk_size).unwrap())
                else {
                    continue;
                };
                let chunks = digests_in_memory(&layout, &bytes);
                let file = file_digest(&layout, &chunks).unwrap();
                assert_eq!(file, Digest::of(&bytes), "size {size} chunk {chunk_size}");
            }
        }
    }

    #[test]
    fn one_chunk_file_digest_is_the_chunk_digest() {
        let bytes = data(1000);
        let layout = Layout::adaptive(1000).unwrap();
        let chunk = chunk_digest(&layout, ChunkIndex::FIRST, &bytes).unwrap();
        assert_eq!(chunk, Digest::of(&bytes));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let bytes = data(69630);
        let layout = Layout::adaptive(69630).unwrap();
        let chunk = layout.chunk(5).unwrap();
        let r = layout.range(chunk);
        let piece = &bytes[r.start as usize..r.end as usize];
        let mut h = ChunkHasher::new(&layout, chunk);
        for part in piece.chunks(100) {
            h.update(part);
        }
        assert_eq!(h.finalize(), chunk_digest(&layout, chunk, piece));
        assert_eq!(ChunkHasher::new(&layout, chunk).finalize(), None);
    }

    #[test]
    fn a_changed_byte_changes_the_chunk_digest() {
        let mut bytes = data(4096);
        let layout = Layout::new(4096, ChunkSize::MIN).unwrap();
        let before = digests_in_memory(&layout, &bytes);
        bytes[2048] ^= 1;
        let after = digests_in_memory(&layout, &bytes);
        assert_eq!(before[0], after[0]);
        assert_ne!(before[2], after[2]);
        // The same bytes at another position hash differently.
        let c1 = layout.chunk(1).unwrap();
        let c2 = layout.chunk(2).unwrap();
        assert_ne!(
            chunk_digest(&layout, c1, &bytes[..1024]),
            chunk_digest(&layout, c2, &bytes[..1024])
        );
    }

    #[test]
    fn file_digest_needs_one_digest_per_chunk() {
        let layout = Layout::adaptive(69630).unwrap();
        assert_eq!(file_digest(&layout, &[Digest::of(b"x"); 67]), None);
        assert_eq!(file_digest(&layout, &[]), None);
    }

    #[test]
    fn hash_file_matches_in_memory_hashing() {
        for size in [0usize, 1822, 69630, (9 << 20) + 5] {
            let bytes = data(size);
            let mut tmp = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut tmp, &bytes).unwrap();
            let layout = Layout::adaptive(size as u64).unwrap();
            let got = hash_file(&tmp, &layout).unwrap();
            assert_eq!(
                got.chunks,
                digests_in_memory(&layout, &bytes),
                "size {size}"
            );
            assert_eq!(got.file, Digest::of(&bytes), "size {size}");
        }
    }

    #[test]
    fn hash_file_fails_on_a_short_file() {
        let mut tmp = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut tmp, &data(1000)).unwrap();
        let layout = Layout::adaptive(2000).unwrap();
        assert!(hash_file(&tmp, &layout).is_err());
    }

    /// What `b3sum` prints for an empty input, so a user can check a
    /// download with it.
    #[test]
    fn hex_is_what_b3sum_prints() {
        assert_eq!(
            Digest::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn a_new_chunk_hasher_is_empty_until_fed() {
        let layout = Layout::new(1822, ChunkSize::new(1024).unwrap()).unwrap();
        let mut h = ChunkHasher::new(&layout, ChunkIndex::FIRST);
        assert!(h.is_empty());
        h.update(b"x");
        assert!(!h.is_empty());
    }
}
