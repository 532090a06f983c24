//! Synthetic manifests: random chunk digests combined into the file digest
//! they imply, so a tracker accepts them (it checks that a manifest is
//! consistent, not that any file has that content). A tracker can be loaded
//! with a thousand 1 GiB files without hashing a byte.

use hive::{ChunkSize, Digest, FileName, Layout, Manifest, digest};

/// A valid manifest named `name` for a file of `chunks` chunks of
/// `chunk_size` bytes, with digests drawn from `rng`.
pub fn manifest(
    name: &str,
    chunks: u32,
    chunk_size: ChunkSize,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Manifest> {
    let layout = Layout::new(u64::from(chunks) * u64::from(chunk_size.get()), chunk_size)?;
    let digests: Vec<Digest> = (0..chunks)
        .map(|_| {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            Digest::from_bytes(&bytes)
        })
        .collect::<Result<_, _>>()?;
    let file = digest::file_digest(&layout, &digests)
        .ok_or_else(|| anyhow::anyhow!("chunk count mismatch"))?;
    Ok(Manifest::new(FileName::new(name)?, layout, digests, file)?)
}

/// Chunk ranges a holder of a `chunks`-chunk file might hold: most holders
/// are seeds with everything, the rest hold one run of chunks.
pub fn holding(chunks: u32, rng: &mut fastrand::Rng) -> Vec<(u32, u32)> {
    if chunks == 0 || rng.u32(..4) != 0 {
        return vec![(1, chunks.max(1))];
    }
    let first = rng.u32(1..=chunks);
    let last = rng.u32(first..=chunks);
    vec![(first, last)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_manifests_are_consistent() {
        let mut rng = fastrand::Rng::with_seed(7);
        let m = manifest("f", 1024, ChunkSize::new(1 << 20).unwrap(), &mut rng).unwrap();
        assert_eq!(m.chunk_count(), 1024);
        assert_eq!(m.size(), 1 << 30);
        let again = Manifest::new(
            m.name().clone(),
            *m.layout(),
            m.chunk_digests().to_vec(),
            m.digest(),
        );
        assert!(again.is_ok());
        for _ in 0..100 {
            for (a, b) in holding(1024, &mut rng) {
                assert!(1 <= a && a <= b && b <= 1024);
            }
        }
    }
}
