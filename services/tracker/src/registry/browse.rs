//! The browsing side, for the web page and its JSON: live peers with what
//! they hold, and a file's live holders, each paged in peer-id order so
//! that no answer grows with the swarm.

use std::time::Instant;

use hive::FileName;

use super::{
    FileEntry, HeldView, HolderPage, HolderView, PeerPage, PeerView, Registry, RegistryError,
};
use crate::auth::PeerId;

impl Registry {
    /// Up to `limit` live peers after `after`, in id order, each with its
    /// first `files` holdings in name order.
    pub fn peers(
        &self,
        after: Option<PeerId>,
        limit: usize,
        files: usize,
        now: Instant,
    ) -> PeerPage {
        let ttl = self.limits.ttl;
        let mut ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| after.is_none_or(|a| **id > a) && p.is_live(now, ttl))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let peers: Vec<PeerView> = ids
            .into_iter()
            .map(|id| {
                let p = &self.peers[&id];
                let mut names: Vec<&FileName> = p.files.iter().collect();
                names.sort_unstable();
                let held = names
                    .into_iter()
                    .take(files)
                    .filter_map(|name| {
                        let f = self.files.get(name)?;
                        Some(HeldView {
                            name: name.clone(),
                            chunks: f.holders.get(&id).map_or(0, |c| c.len()),
                            chunk_count: f.manifest.chunk_count(),
                        })
                    })
                    .collect();
                PeerView {
                    peer: id,
                    addr: p.addr.clone(),
                    since_heartbeat: now.saturating_duration_since(p.last_seen),
                    confirmed: p.confirmed,
                    file_count: p.files.len() as u32,
                    files: held,
                }
            })
            .collect();
        let next = more.then(|| peers.last().map(|p| p.peer)).flatten();
        PeerPage { peers, next }
    }

    /// Up to `limit` live holders of `name` after `after`, in id order.
    pub fn holders(
        &self,
        name: &FileName,
        after: Option<PeerId>,
        limit: usize,
        now: Instant,
    ) -> Result<HolderPage, RegistryError> {
        let file = self
            .files
            .get(name)
            .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?;
        let live = self.live_views(file, now);
        Ok(HolderPage::of(file.manifest.clone(), live, after, limit))
    }

    fn live_views(&self, file: &FileEntry, now: Instant) -> Vec<HolderView> {
        file.holders
            .iter()
            .filter_map(|(&peer, chunks)| {
                let p = self.peers.get(&peer)?;
                p.is_live(now, self.limits.ttl).then(|| HolderView {
                    peer,
                    addr: p.addr.clone(),
                    chunks: chunks.clone(),
                    confirmed: p.confirmed,
                })
            })
            .collect()
    }
}

impl HolderPage {
    /// The page of `live` (a file's live holders, any order) after `after`.
    pub fn of(
        manifest: std::sync::Arc<hive::Manifest>,
        mut live: Vec<HolderView>,
        after: Option<PeerId>,
        limit: usize,
    ) -> Self {
        let holder_count = live.len() as u32;
        live.retain(|h| after.is_none_or(|a| h.peer > a));
        live.sort_unstable_by_key(|h| h.peer);
        let more = live.len() > limit;
        live.truncate(limit);
        let next = more.then(|| live.last().map(|h| h.peer)).flatten();
        Self {
            manifest,
            holders: live,
            holder_count,
            next,
        }
    }
}
