//! The read side: seed messages 2 (ListFiles) and 3 (Locate), over the live
//! holders only, each answer listing the holders [`rules::pick_holders`]
//! chooses.

use std::{ops::Bound, sync::Arc, time::Instant};

use hive::{ChunkSet, FileName};

use super::{
    FileEntry, FileView, HolderView, Located, Page, PeerEntry, Registry, RegistryError, rules,
};
use crate::auth::PeerId;

/// A holder of a file whose session is live, as Locate sees it.
struct LiveHolder<'a> {
    id: PeerId,
    entry: &'a PeerEntry,
    chunks: &'a Arc<ChunkSet>,
}

impl Registry {
    /// Seed message 3: a file's manifest, live holders and chunk counts;
    /// `want` holders at most (0: the tracker's cap, which also bounds it).
    pub fn locate(
        &self,
        name: &FileName,
        want: usize,
        now: Instant,
    ) -> Result<Located, RegistryError> {
        let file = self
            .files
            .get(name)
            .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?;
        let live = self.live_holders(file, now);
        let chunk_holders = if live.len() == file.holders.len() {
            capped(&file.counts)
        } else {
            // Some holders expired but are not swept yet: count the live ones.
            let mut counts = vec![0; file.counts.len()];
            for h in &live {
                h.chunks.add_to_counts(&mut counts);
            }
            capped(&counts)
        };
        let holder_count = live.len() as u32;
        Ok(Located {
            manifest: file.manifest.clone(),
            holders: pick_holders(live, rules::cap(want, self.limits.locate_holders)),
            chunk_holders,
            holder_count,
        })
    }

    /// Seed message 2: up to `limit` files after the name `after`, in name order.
    pub fn list(&self, after: Option<&FileName>, limit: usize, now: Instant) -> Page {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut files: Vec<FileView> = Vec::new();
        let mut iter = self.files.range::<FileName, _>((start, Bound::Unbounded));
        for (_, file) in iter.by_ref().take(limit) {
            let live = self.live_holders(file, now);
            files.push(FileView {
                manifest: file.manifest.clone(),
                holder_count: live.len() as u32,
                holders: pick_holders(live, self.limits.list_holders),
            });
        }
        let next = match iter.next() {
            Some(_) => files.last().map(|f| f.manifest.name().clone()),
            None => None,
        };
        Page { files, next }
    }

    fn live_holders<'a>(&'a self, file: &'a FileEntry, now: Instant) -> Vec<LiveHolder<'a>> {
        file.holders
            .iter()
            .filter_map(|(&id, chunks)| {
                let entry = self.peers.get(&id)?;
                entry
                    .is_live(now, self.limits.ttl)
                    .then_some(LiveHolder { id, entry, chunks })
            })
            .collect()
    }
}

/// Up to `cap` of `live`, as [`rules::pick_holders`] chooses them, as
/// answers show them.
fn pick_holders(live: Vec<LiveHolder<'_>>, cap: usize) -> Vec<HolderView> {
    rules::pick_holders(live, cap, |h| h.chunks.as_ref(), |h| h.entry.confirmed)
        .into_iter()
        .map(|h| HolderView {
            peer: h.id,
            addr: h.entry.addr.clone(),
            chunks: h.chunks.clone(),
            confirmed: h.entry.confirmed,
        })
        .collect()
}

/// Holder counts as Locate sends them: a byte each, capped at 255.
fn capped(counts: &[u32]) -> Vec<u8> {
    counts.iter().map(|&c| c.min(255) as u8).collect()
}
