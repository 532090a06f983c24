//! Reading a file for Locate and ListFiles: one script on the file's slot
//! (its name and digest, a window of its holder records, its count planes),
//! then one `MGET` of the liveness keys of the holders it read.

use std::sync::Arc;

use hive::{ChunkSet, FileName, Manifest};
use redis::{FromRedisValue, Value};

use super::{
    RedisCatalog, corrupt,
    keys::{FileKeys, liveness_key},
    scripts::LOCATE,
    store_err,
};
use crate::{auth::PeerId, error::ServiceError, registry::HolderView};

/// The length of a peer id in a holder record (16 hex digits).
const ID_LEN: usize = 16;

/// What one read of a file found.
pub(super) struct Sample {
    pub(super) manifest: Arc<Manifest>,
    /// The live holders among the records read.
    pub(super) live: Vec<HolderView>,
    /// Per-chunk counts over live holders: the stored counts less the dead
    /// holders read. Exact when every record was read; otherwise they may
    /// still include holders dead for less than a sweep period that this
    /// read did not see.
    pub(super) counts: Vec<u32>,
    /// Holders with a record, less the dead ones read (exact likewise).
    pub(super) holder_count: u32,
}

/// The script's answer, before the liveness check.
struct Read {
    name: Vec<u8>,
    digest: Vec<u8>,
    holders: usize,
    records: Vec<u8>,
    planes: Vec<Vec<u8>>,
}

impl Read {
    /// The answer of [`LOCATE`]; `None` for an unknown file.
    fn parse(v: Value) -> Result<Option<Self>, ServiceError> {
        let Value::Array(items) = v else {
            return Err(corrupt("answer to Locate"));
        };
        if items.is_empty() {
            return Ok(None);
        }
        let mut items = items.into_iter();
        let mut next = || items.next().ok_or_else(|| corrupt("answer to Locate"));
        let name = Vec::<u8>::from_redis_value(next()?).map_err(store_err)?;
        let digest = Vec::<u8>::from_redis_value(next()?).map_err(store_err)?;
        let holders = usize::from_redis_value(next()?).map_err(store_err)?;
        let _first = usize::from_redis_value(next()?).map_err(store_err)?;
        let records = Vec::<u8>::from_redis_value(next()?).map_err(store_err)?;
        let planes = items
            .map(Vec::<u8>::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(store_err)?;
        Ok(Some(Self {
            name,
            digest,
            holders,
            records,
            planes,
        }))
    }
}

impl RedisCatalog {
    /// `name`'s manifest, counts and live holders among `window` of its
    /// holder records from a random one on (0: all of them); `None` if it
    /// is unknown.
    pub(super) async fn sample(
        &self,
        name: &FileName,
        window: usize,
    ) -> Result<Option<Sample>, ServiceError> {
        let keys = FileKeys::new(name);
        let answer: Value = self
            .run(
                LOCATE
                    .key(&keys.m)
                    .key(&keys.x)
                    .arg(window)
                    .arg(fastrand::u32(..)),
            )
            .await?;
        let Some(read) = Read::parse(answer)? else {
            return Ok(None);
        };
        if read.name != name.as_str().as_bytes() {
            return Ok(None);
        }
        let manifest = self.manifest_with(name, &keys, &read.digest).await?;
        let universe = manifest.chunk_count();
        let mut counts = counts_from_planes(universe as usize, &read.planes);
        let rec = ID_LEN + (universe as usize).div_ceil(8);
        let records: Vec<(PeerId, &[u8])> = read
            .records
            .chunks_exact(rec)
            .filter_map(|r| {
                let id = std::str::from_utf8(&r[..ID_LEN]).ok()?;
                Some((PeerId::parse(id).ok()?, &r[ID_LEN..]))
            })
            .collect();
        let mut holder_count = read.holders as u32;
        if records.is_empty() {
            return Ok(Some(Sample {
                manifest,
                live: Vec::new(),
                counts,
                holder_count,
            }));
        }
        let mut mget = redis::cmd("MGET");
        for (peer, _) in &records {
            mget.arg(liveness_key(*peer));
        }
        let addrs: Vec<Option<String>> = self.query(&mget).await?;
        let mut live = Vec::with_capacity(records.len());
        for ((peer, bitmap), addr) in records.into_iter().zip(addrs) {
            let Some(chunks) = ChunkSet::from_bitmap(universe, bitmap) else {
                return Err(corrupt("holder record"));
            };
            match addr {
                Some(addr) => live.push(HolderView {
                    peer,
                    addr,
                    chunks: Arc::new(chunks),
                    confirmed: true,
                }),
                // Ended, not swept yet: out of the counts now.
                None => {
                    chunks.sub_from_counts(&mut counts);
                    holder_count = holder_count.saturating_sub(1);
                }
            }
        }
        Ok(Some(Sample {
            manifest,
            live,
            counts,
            holder_count,
        }))
    }
}

/// A file's stored counts against its holder records: see
/// [`RedisCatalog::audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Per-chunk counts as the count planes hold them.
    pub stored: Vec<u32>,
    /// The same, counted from every holder record, live or not.
    pub recounted: Vec<u32>,
    /// The peers with a record, in record order.
    pub holders: Vec<PeerId>,
}

impl RedisCatalog {
    /// `name`'s count planes decoded, beside a recount from its holder
    /// records (every record, whether its session is live or not); `None`
    /// if the file is unknown. The scripts keep the two equal: this is
    /// how tests (and an operator with doubts) check it.
    pub async fn audit(&self, name: &FileName) -> Result<Option<Audit>, ServiceError> {
        let keys = FileKeys::new(name);
        let answer: Value = self
            .run(LOCATE.key(&keys.m).key(&keys.x).arg(0).arg(0))
            .await?;
        let Some(read) = Read::parse(answer)? else {
            return Ok(None);
        };
        let manifest = self.manifest_with(name, &keys, &read.digest).await?;
        let universe = manifest.chunk_count();
        let rec = ID_LEN + (universe as usize).div_ceil(8);
        let mut recounted = vec![0; universe as usize];
        let mut holders = Vec::new();
        for r in read.records.chunks_exact(rec) {
            let id = std::str::from_utf8(&r[..ID_LEN]).map_err(|_| corrupt("holder id"))?;
            holders.push(PeerId::parse(id).map_err(|_| corrupt("holder id"))?);
            ChunkSet::from_bitmap(universe, &r[ID_LEN..])
                .ok_or_else(|| corrupt("holder record"))?
                .add_to_counts(&mut recounted);
        }
        if holders.len() != read.holders {
            return Err(corrupt("holder index"));
        }
        Ok(Some(Audit {
            stored: counts_from_planes(universe as usize, &read.planes),
            recounted,
            holders,
        }))
    }
}

/// Per-chunk counts from a file's count planes: bit k of plane j (bits
/// least significant first in each byte, as in the wire's chunk bitmaps) is
/// bit j of chunk k's count. Missing bytes are zeros.
pub(super) fn counts_from_planes(chunks: usize, planes: &[Vec<u8>]) -> Vec<u32> {
    let mut counts = vec![0u32; chunks];
    for (j, plane) in planes.iter().enumerate().take(32) {
        let weight = 1u32 << j;
        for (i, &byte) in plane.iter().enumerate() {
            let mut bits = byte;
            while bits != 0 {
                let k = i * 8 + bits.trailing_zeros() as usize;
                if let Some(c) = counts.get_mut(k) {
                    *c = c.saturating_add(weight);
                }
                bits &= bits - 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_hold_each_chunks_count_in_binary() {
        // Chunk counts 0, 1, 2, 3, 5, 0, 0, 0, 8 (chunk 8 is the second
        // byte's lowest bit).
        let c0 = vec![0b0001_1010, 0];
        let c1 = vec![0b0000_1100, 0];
        let c2 = vec![0b0001_0000, 0];
        let c3 = vec![0, 0b0000_0001];
        let planes = [c0, c1, c2, c3];
        assert_eq!(counts_from_planes(9, &planes), [0, 1, 2, 3, 5, 0, 0, 0, 8]);
        // Short or missing planes count as zeros; bits past the file are
        // ignored.
        assert_eq!(counts_from_planes(3, &[vec![0xff]]), [1, 1, 1]);
        assert_eq!(counts_from_planes(3, &[]), [0, 0, 0]);
    }
}
