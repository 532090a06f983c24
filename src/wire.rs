//! The wire boundary: generated types in, domain types out. Everything a
//! handler receives passes through here first; whatever is malformed becomes
//! a [`WireError`], which every service answers with INVALID_ARGUMENT.

use std::fmt;

use crate::{
    chunk::{ChunkIndex, ChunkSize, Layout},
    chunkset::ChunkSet,
    digest::Digest,
    manifest::Manifest,
    name::FileName,
    pb::types as pb,
};

/// Holders a download asks a Locate for (`max_holders`) unless told
/// otherwise: a download keeps at most 16 MiB in flight, a few requests per
/// holder (as many as its measured rate needs), so a handful of holders are
/// busy at once and the rest are spares; later Locates bring others in.
pub const LOCATE_HOLDERS: u32 = 16;

/// Most chunks a GetChunk request may name `instead` of its chunk: enough
/// for a seeder to find an unsent one among a downloader's rarest, while a
/// request stays a few hundred bytes.
pub const MAX_INSTEAD: usize = 64;

/// A malformed request field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WireError {
    pub field: &'static str,
    pub reason: String,
}

impl WireError {
    pub fn new(field: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            field,
            reason: reason.to_string(),
        }
    }
}

/// A file name from the wire.
pub fn file_name(field: &'static str, name: String) -> Result<FileName, WireError> {
    FileName::new(name).map_err(|e| WireError::new(field, e))
}

/// A digest from the wire.
pub fn digest(field: &'static str, bytes: &[u8]) -> Result<Digest, WireError> {
    Digest::from_bytes(bytes).map_err(|e| WireError::new(field, e))
}

/// A chunk number from the wire, checked against the file's layout.
pub fn chunk(field: &'static str, layout: &Layout, number: u32) -> Result<ChunkIndex, WireError> {
    layout
        .chunk(u64::from(number))
        .map_err(|e| WireError::new(field, e))
}

/// The chunks a GetChunk request would take instead of its chunk, checked
/// against the file's layout: at most [`MAX_INSTEAD`], each a chunk of it.
pub fn instead(layout: &Layout, numbers: &[u32]) -> Result<Vec<ChunkIndex>, WireError> {
    if numbers.len() > MAX_INSTEAD {
        return Err(WireError::new(
            "instead",
            format!("{} chunks, at most {MAX_INSTEAD}", numbers.len()),
        ));
    }
    numbers
        .iter()
        .map(|&n| chunk("instead", layout, n))
        .collect()
}

/// A chunk set from its ranges, for a file of `universe` chunks.
pub fn chunk_set(
    field: &'static str,
    universe: u32,
    ranges: &[pb::ChunkRange],
) -> Result<ChunkSet, WireError> {
    ChunkSet::from_ranges(universe, ranges.iter().map(|r| r.first..=r.last))
        .map_err(|e| WireError::new(field, e))
}

/// A holder's chunks from the wire (`chunks` and `chunk_bitmap` of a
/// Holder): the bitmap when there is one, otherwise the ranges.
pub fn holder_chunks(
    universe: u32,
    ranges: &[pb::ChunkRange],
    bitmap: &[u8],
) -> Result<ChunkSet, WireError> {
    if bitmap.is_empty() {
        return chunk_set("chunks", universe, ranges);
    }
    if !ranges.is_empty() {
        return Err(WireError::new("chunk_bitmap", "sent beside chunks"));
    }
    ChunkSet::from_bitmap(universe, bitmap)
        .ok_or_else(|| WireError::new("chunk_bitmap", format!("not a bitmap of {universe} chunks")))
}

/// A holder's chunks for the wire, as `(chunks, chunk_bitmap)`: ranges when
/// they are few (a seeder's is one range), else the bitmap. Ranges cost far
/// more to encode and decode than a bitmap of the same size, so the bitmap
/// is chosen once the ranges would take half its bytes.
pub fn holder_chunk_fields(set: &ChunkSet) -> (Vec<pb::ChunkRange>, bytes::Bytes) {
    // An encoded range of chunks past 127 takes 8 bytes.
    let bitmap_len = (set.universe() as usize).div_ceil(8);
    let runs = set.run_count() as usize;
    if runs <= 2 || runs * 8 <= bitmap_len / 2 {
        (ranges(set), bytes::Bytes::new())
    } else {
        (Vec::new(), set.to_bitmap().into())
    }
}

/// A chunk set as ranges, for the wire.
pub fn ranges(set: &ChunkSet) -> Vec<pb::ChunkRange> {
    let mut out = Vec::with_capacity(set.run_count() as usize);
    out.extend(set.range_iter().map(|r| pb::ChunkRange {
        first: *r.start(),
        last: *r.end(),
    }));
    out
}

impl TryFrom<pb::Manifest> for Manifest {
    type Error = WireError;

    fn try_from(m: pb::Manifest) -> Result<Self, WireError> {
        let name = file_name("manifest.name", m.name)?;
        let chunk_size = ChunkSize::new(u64::from(m.chunk_size))
            .map_err(|e| WireError::new("manifest.chunk_size", e))?;
        let layout =
            Layout::new(m.size, chunk_size).map_err(|e| WireError::new("manifest.size", e))?;
        let packed = &m.chunk_digests;
        if !packed.len().is_multiple_of(Digest::LEN) {
            return Err(WireError::new(
                "manifest.chunk_digests",
                format!(
                    "{} bytes is not a whole number of 32-byte digests",
                    packed.len()
                ),
            ));
        }
        if packed.len() / Digest::LEN != layout.count() as usize {
            return Err(WireError::new(
                "manifest.chunk_digests",
                format!(
                    "{} digests for a {}-byte file in {}-byte chunks, which has {}",
                    packed.len() / Digest::LEN,
                    m.size,
                    chunk_size,
                    layout.count()
                ),
            ));
        }
        let chunk_digests = packed
            .chunks_exact(Digest::LEN)
            .map(|d| digest("manifest.chunk_digests", d))
            .collect::<Result<Vec<_>, _>>()?;
        let file = digest("manifest.digest", &m.digest)?;
        Manifest::new(name, layout, chunk_digests, file).map_err(|e| WireError::new("manifest", e))
    }
}

/// Digests back to back, as `Manifest.chunk_digests` carries them.
pub fn packed(digests: &[Digest]) -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(digests.len() * Digest::LEN);
    for d in digests {
        out.extend_from_slice(d.as_bytes());
    }
    out.freeze()
}

impl From<&Manifest> for pb::Manifest {
    fn from(m: &Manifest) -> Self {
        pb::Manifest {
            name: m.name().to_string(),
            size: m.size(),
            chunk_size: m.layout().chunk_size().get(),
            chunk_digests: packed(m.chunk_digests()),
            digest: bytes::Bytes::copy_from_slice(m.digest().as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_manifest() -> pb::Manifest {
        let bytes: Vec<u8> = (0..1822u32).map(|i| i as u8).collect();
        let mut tmp = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut tmp, &bytes).unwrap();
        let m = Manifest::from_file(&tmp, 1822, FileName::new("bse").unwrap(), None).unwrap();
        pb::Manifest::from(&m)
    }

    #[test]
    fn manifest_round_trips() {
        let wire = seed_manifest();
        let m = Manifest::try_from(wire.clone()).unwrap();
        assert_eq!(pb::Manifest::from(&m), wire);
    }

    #[test]
    fn malformed_manifests_name_the_field() {
        type Case = (&'static str, fn(&mut pb::Manifest));
        let cases: &[Case] = &[
            ("manifest.name", |m| m.name = "../x".into()),
            ("manifest.chunk_size", |m| m.chunk_size = 0),
            ("manifest.chunk_size", |m| m.chunk_size = 3),
            ("manifest.size", |m| m.size = u64::MAX),
            ("manifest.chunk_digests", |m| m.size = 0),
            ("manifest.chunk_digests", |m| {
                m.chunk_digests = m.chunk_digests.slice(32..);
            }),
            ("manifest.chunk_digests", |m| {
                m.chunk_digests = m.chunk_digests.slice(1..);
            }),
            ("manifest.digest", |m| m.digest = m.digest.slice(..31)),
            ("manifest", |m| {
                m.digest = bytes::Bytes::from_static(&[7; 32])
            }),
        ];
        for (field, spoil) in cases {
            let mut wire = seed_manifest();
            spoil(&mut wire);
            let err = Manifest::try_from(wire).unwrap_err();
            assert_eq!(err.field, *field, "{err}");
        }
    }

    #[test]
    fn chunk_sets_and_numbers_are_checked() {
        let layout = Layout::adaptive(1822).unwrap();
        assert!(chunk("chunk", &layout, 0).is_err());
        assert!(chunk("chunk", &layout, 3).is_err());
        assert_eq!(chunk("chunk", &layout, 2).map(ChunkIndex::get), Ok(2));
        let r = |first, last| pb::ChunkRange { first, last };
        assert!(chunk_set("chunks", 2, &[r(1, 3)]).is_err());
        assert!(chunk_set("chunks", 2, &[r(0, 1)]).is_err());
        let set = chunk_set("chunks", 68, &[r(1, 68)]).unwrap();
        assert!(set.is_full());
        assert_eq!(ranges(&set), vec![r(1, 68)]);
    }

    #[test]
    fn holder_chunks_travel_as_the_shorter_form() {
        let seeder = ChunkSet::full(1024);
        let (ranges, bitmap) = holder_chunk_fields(&seeder);
        assert_eq!((ranges.len(), bitmap.len()), (1, 0));
        assert_eq!(holder_chunks(1024, &ranges, &bitmap), Ok(seeder));

        let odd = ChunkSet::from_ranges(1024, (1..=1024).step_by(2).map(|n| n..=n)).unwrap();
        let (ranges, bitmap) = holder_chunk_fields(&odd);
        assert_eq!((ranges.len(), bitmap.len()), (0, 128));
        assert_eq!(holder_chunks(1024, &ranges, &bitmap), Ok(odd));

        let r = |first, last| pb::ChunkRange { first, last };
        assert!(
            holder_chunks(68, &[r(1, 1)], &[0; 9]).is_err(),
            "both forms"
        );
        assert!(holder_chunks(68, &[], &[0; 8]).is_err(), "short bitmap");
        assert!(holder_chunks(68, &[], &[0xff; 9]).is_err(), "chunk 69");
    }

    /// Ranges for one or two runs whatever the file's size (a seeder, a
    /// download's first stretch), and while they are under half the
    /// bitmap's bytes; the bitmap once they are not.
    #[test]
    fn a_holders_chunks_go_as_ranges_or_a_bitmap_by_size() {
        let two_runs = ChunkSet::from_ranges(16, [1..=3, 5..=6]).unwrap();
        let (ranges, bitmap) = holder_chunk_fields(&two_runs);
        assert_eq!((ranges.len(), bitmap.len()), (2, 0));
        let three_in_many = ChunkSet::from_ranges(1024, [1..=3, 5..=6, 9..=9]).unwrap();
        let (ranges, bitmap) = holder_chunk_fields(&three_in_many);
        assert_eq!((ranges.len(), bitmap.len()), (3, 0));
        let mut every_other = ChunkSet::empty(64);
        for n in (1..=64).step_by(2) {
            every_other.insert(ChunkIndex::new(n).unwrap());
        }
        let (ranges, bitmap) = holder_chunk_fields(&every_other);
        assert_eq!((ranges.len(), bitmap.len()), (0, 8));
        // The boundary: 1,024 chunks have a 128-byte bitmap; 8 ranges (64
        // bytes) go as ranges, 9 as the bitmap.
        let runs =
            |k: u32| ChunkSet::from_ranges(1024, (0..k).map(|i| 10 * i + 1..=10 * i + 2)).unwrap();
        assert_eq!(holder_chunk_fields(&runs(8)).0.len(), 8);
        assert_eq!(holder_chunk_fields(&runs(9)).1.len(), 128);
    }
}
