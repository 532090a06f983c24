//! [`Manifest`]: what a file is. Built only from consistent parts, so holding
//! one means its name is valid, its layout sane and its chunk digests combine
//! into its file digest.

use std::{fs::File, io, path::Path};

use crate::{
    chunk::{ChunkError, ChunkIndex, ChunkSize, Layout},
    digest::{self, ChunkHasher, Digest},
    name::FileName,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    name: FileName,
    layout: Layout,
    chunk_digests: Vec<Digest>,
    digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Layout(#[from] ChunkError),
    #[error(
        "the manifest has {got} chunk digests; a {size}-byte file in {chunk_size}-byte chunks has {want}"
    )]
    DigestCount {
        size: u64,
        chunk_size: u32,
        want: u32,
        got: usize,
    },
    #[error("the chunk digests do not combine into the file digest")]
    Inconsistent,
}

impl Manifest {
    /// A manifest from its parts, checked for consistency.
    pub fn new(
        name: FileName,
        layout: Layout,
        chunk_digests: Vec<Digest>,
        digest: Digest,
    ) -> Result<Self, ManifestError> {
        if chunk_digests.len() != layout.count() as usize {
            return Err(ManifestError::DigestCount {
                size: layout.size(),
                chunk_size: layout.chunk_size().get(),
                want: layout.count(),
                got: chunk_digests.len(),
            });
        }
        if digest::file_digest(&layout, &chunk_digests) != Some(digest) {
            return Err(ManifestError::Inconsistent);
        }
        Ok(Self {
            name,
            layout,
            chunk_digests,
            digest,
        })
    }

    /// Hashes the file at `path` (blocking: one pass on every core).
    pub fn from_path(
        path: &Path,
        name: FileName,
        chunk_size: Option<ChunkSize>,
    ) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Self::from_file(&file, size, name, chunk_size)
    }

    /// Hashes the first `size` bytes of an open file (blocking).
    pub fn from_file(
        file: &File,
        size: u64,
        name: FileName,
        chunk_size: Option<ChunkSize>,
    ) -> io::Result<Self> {
        let chunk_size = chunk_size.unwrap_or_else(|| ChunkSize::for_file(size));
        let layout = Layout::new(size, chunk_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let digests = digest::hash_file(file, &layout)?;
        Ok(Self {
            name,
            layout,
            chunk_digests: digests.chunks,
            digest: digests.file,
        })
    }

    pub fn name(&self) -> &FileName {
        &self.name
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn size(&self) -> u64 {
        self.layout.size()
    }

    pub fn chunk_count(&self) -> u32 {
        self.layout.count()
    }

    /// The whole file's BLAKE3 digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn chunk_digests(&self) -> &[Digest] {
        &self.chunk_digests
    }

    /// The expected digest of `chunk`, which must be in the layout.
    pub fn chunk_digest(&self, chunk: ChunkIndex) -> Digest {
        self.chunk_digests[chunk.position()]
    }

    /// Whether `data` is exactly `chunk` of this file.
    pub fn verify_chunk(&self, chunk: ChunkIndex, data: &[u8]) -> bool {
        let mut v = self.verifier(chunk);
        v.update(data).is_ok() && v.finish().is_ok()
    }

    /// A verifier for `chunk` (which must be in the layout), fed as bytes arrive.
    pub fn verifier(&self, chunk: ChunkIndex) -> ChunkVerifier {
        ChunkVerifier {
            hasher: ChunkHasher::new(&self.layout, chunk),
            want_len: u64::from(self.layout.chunk_len(chunk)),
            want: self.chunk_digest(chunk),
        }
    }
}

/// Why received bytes are not the chunk they claim to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFault {
    #[error("more bytes than the chunk holds ({got} > {want})")]
    TooLong { want: u64, got: u64 },
    #[error("fewer bytes than the chunk holds ({got} < {want})")]
    TooShort { want: u64, got: u64 },
    #[error("the bytes do not match the chunk's digest")]
    Mismatch,
}

/// Checks one chunk's bytes against the manifest as they stream in: length
/// first (never more than the chunk), then the digest at the end.
pub struct ChunkVerifier {
    hasher: ChunkHasher,
    want_len: u64,
    want: Digest,
}

impl ChunkVerifier {
    /// Feeds the next bytes; refuses (without hashing them) bytes past the
    /// chunk's end.
    pub fn update(&mut self, data: &[u8]) -> Result<(), ChunkFault> {
        let got = self.hasher.len() + data.len() as u64;
        if got > self.want_len {
            return Err(ChunkFault::TooLong {
                want: self.want_len,
                got,
            });
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Bytes fed so far.
    pub fn received(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether the bytes fed are exactly the chunk.
    pub fn finish(&self) -> Result<(), ChunkFault> {
        let got = self.hasher.len();
        if got < self.want_len {
            return Err(ChunkFault::TooShort {
                want: self.want_len,
                got,
            });
        }
        match self.hasher.finalize() {
            Some(d) if d == self.want => Ok(()),
            _ => Err(ChunkFault::Mismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_file() -> (Vec<u8>, Manifest) {
        let bytes: Vec<u8> = (0..69630u32).map(|i| (i % 251) as u8).collect();
        let mut tmp = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut tmp, &bytes).unwrap();
        let m = Manifest::from_file(&tmp, 69630, FileName::new("23").unwrap(), None).unwrap();
        (bytes, m)
    }

    #[test]
    fn from_file_is_consistent() {
        let (bytes, m) = seed_file();
        assert_eq!(m.chunk_count(), 68);
        assert_eq!(m.digest(), Digest::of(&bytes));
        let again = Manifest::new(
            m.name().clone(),
            *m.layout(),
            m.chunk_digests().to_vec(),
            m.digest(),
        );
        assert_eq!(again, Ok(m));
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let (_, m) = seed_file();
        let name = m.name().clone();
        let mut digests = m.chunk_digests().to_vec();
        digests.pop();
        assert!(matches!(
            Manifest::new(name.clone(), *m.layout(), digests, m.digest()),
            Err(ManifestError::DigestCount {
                want: 68,
                got: 67,
                ..
            })
        ));
        let mut digests = m.chunk_digests().to_vec();
        digests.swap(0, 1);
        assert_eq!(
            Manifest::new(name.clone(), *m.layout(), digests, m.digest()),
            Err(ManifestError::Inconsistent)
        );
        assert_eq!(
            Manifest::new(
                name,
                *m.layout(),
                m.chunk_digests().to_vec(),
                Digest::of(b"other")
            ),
            Err(ManifestError::Inconsistent)
        );
    }

    #[test]
    fn verifier_catches_every_fault() {
        let (bytes, m) = seed_file();
        let c2 = m.layout().chunk(2).unwrap();
        let good = &bytes[1024..2048];
        assert!(m.verify_chunk(c2, good));

        let mut flipped = good.to_vec();
        flipped[100] ^= 0x10;
        let mut v = m.verifier(c2);
        v.update(&flipped).unwrap();
        assert_eq!(v.finish(), Err(ChunkFault::Mismatch));

        let mut v = m.verifier(c2);
        v.update(&good[..1000]).unwrap();
        assert_eq!(
            v.finish(),
            Err(ChunkFault::TooShort {
                want: 1024,
                got: 1000
            })
        );

        let mut v = m.verifier(c2);
        v.update(good).unwrap();
        assert_eq!(
            v.update(b"x"),
            Err(ChunkFault::TooLong {
                want: 1024,
                got: 1025
            })
        );

        let v = m.verifier(c2);
        assert_eq!(v.finish(), Err(ChunkFault::TooShort { want: 1024, got: 0 }));

        // Right bytes, wrong position.
        assert!(!m.verify_chunk(m.layout().chunk(3).unwrap(), good));
    }
}
