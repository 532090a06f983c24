//! Who holds which chunks: seed message 4 (RegisterChunk), and the one way
//! a holding changes, which keeps each file's per-chunk holder counts and
//! the catalog's byte count in step.

use std::{ops::RangeInclusive, sync::Arc, time::Instant};

use hive::{ChunkSet, FileName, Manifest, chunk::ChunkError};

use super::{
    ById, Change, Credentials, FileEntry, Registry, RegistryError,
    rules::{self, holding_bytes},
};
use crate::auth::PeerId;

impl Registry {
    /// Seed message 4: `add` and `remove` chunks of `name` for a session.
    /// Returns how many chunks of the file the peer holds afterwards.
    pub fn register_chunks(
        &mut self,
        cred: &Credentials,
        name: &FileName,
        add: &[RangeInclusive<u32>],
        remove: &[RangeInclusive<u32>],
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<u32, RegistryError> {
        let peer = self.authorize(cred, now)?;
        let file = self
            .files
            .get(name)
            .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?;
        let universe = file.manifest.chunk_count();
        let invalid = |field: &str, e: ChunkError| RegistryError::Invalid(format!("{field}: {e}"));
        let add = ChunkSet::from_ranges(universe, add.iter().cloned())
            .map_err(|e| invalid("chunks", e))?;
        let remove = ChunkSet::from_ranges(universe, remove.iter().cloned())
            .map_err(|e| invalid("withdrawn", e))?;
        let p = &self.peers[&peer];
        if !p.files.contains(name) && !add.is_empty() {
            rules::check_files_per_peer(&self.limits, p.files.len() + 1)?;
            rules::check_budget(&self.limits, self.catalog_bytes, holding_bytes(universe))?;
        }

        let mut chunks = file
            .holders
            .get(&peer)
            .map_or_else(|| ChunkSet::empty(universe), |c| ChunkSet::clone(c));
        chunks.union_with(&add);
        chunks.subtract(&remove);
        let held = chunks.len();
        self.put_holding(peer, name.clone(), chunks, now, changes);
        Ok(held)
    }

    /// The caller holds `name` no longer (unshared, or gone from its disk).
    pub fn withdraw(
        &mut self,
        cred: &Credentials,
        name: &FileName,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<(), RegistryError> {
        let peer = self.authorize(cred, now)?;
        let file = self
            .files
            .get_mut(name)
            .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?;
        if file.remove_holding(peer, now) {
            self.catalog_bytes -= holding_bytes(file.manifest.chunk_count());
            changes.push(Change::RemoveHolding {
                peer,
                name: name.clone(),
            });
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.files.remove(name);
        }
        Ok(())
    }

    /// Sets `peer`'s holding of `name` (a file and a peer both known) to
    /// `chunks`; no chunk of a file that has chunks drops the holding.
    pub(super) fn put_holding(
        &mut self,
        peer: PeerId,
        name: FileName,
        chunks: ChunkSet,
        now: Instant,
        changes: &mut Vec<Change>,
    ) {
        let file = self
            .files
            .get_mut(&name)
            .expect("the file was checked or inserted");
        let p = self
            .peers
            .get_mut(&peer)
            .expect("the peer was checked or inserted");
        let cost = holding_bytes(file.manifest.chunk_count());
        if chunks.is_empty() && file.manifest.chunk_count() > 0 {
            if file.remove_holding(peer, now) {
                self.catalog_bytes -= cost;
                changes.push(Change::RemoveHolding {
                    peer,
                    name: name.clone(),
                });
            }
            p.files.remove(&name);
            return;
        }
        p.files.insert(name.clone());
        let chunks = Arc::new(chunks);
        if file.set_holding(peer, chunks.clone()) {
            self.catalog_bytes += cost;
        }
        changes.push(Change::PutHolding { peer, name, chunks });
    }
}

impl FileEntry {
    pub(super) fn new(manifest: Arc<Manifest>, now: Instant) -> Self {
        Self {
            counts: vec![0; manifest.chunk_count() as usize],
            manifest,
            holders: ById::default(),
            orphaned_since: Some(now),
            charged: None,
        }
    }

    /// Returns whether the holding is new (rather than replaced).
    pub(super) fn set_holding(&mut self, peer: PeerId, chunks: Arc<ChunkSet>) -> bool {
        let old = self.holders.insert(peer, chunks.clone());
        match &old {
            Some(old) => chunks.replace_in_counts(old, &mut self.counts),
            None => chunks.add_to_counts(&mut self.counts),
        }
        self.orphaned_since = None;
        old.is_none()
    }

    /// Returns whether the peer held the file.
    pub(super) fn remove_holding(&mut self, peer: PeerId, now: Instant) -> bool {
        let Some(old) = self.holders.remove(&peer) else {
            return false;
        };
        old.sub_from_counts(&mut self.counts);
        if self.holders.is_empty() {
            self.orphaned_since = Some(now);
        }
        true
    }
}
