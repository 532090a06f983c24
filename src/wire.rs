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

/// A chunk set from its ranges, for a file of `universe` chunks.
pub fn chunk_set(
    field: &'static str,
    universe: u32,
    ranges: &[pb::ChunkRange],
) -> Result<ChunkSet, WireError> {
    ChunkSet::from_ranges(universe, ranges.iter().map(|r| r.first..=r.last))
        .map_err(|e| WireError::new(field, e))
}

/// A chunk set as ranges, for the wire.
pub fn ranges(set: &ChunkSet) -> Vec<pb::ChunkRange> {
    set.ranges()
        .into_iter()
        .map(|r| pb::ChunkRange {
            first: *r.start(),
            last: *r.end(),
        })
        .collect()
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
}
