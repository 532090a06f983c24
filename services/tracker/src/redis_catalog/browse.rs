//! The browsing side on Redis, for the web page: live peers with what they
//! hold, and a file's live holders, each paged in peer-id order.
//!
//! Built on the read paths the rest of the catalog uses: the buckets'
//! deadline sets name every session, a session's liveness key is the truth
//! about it (its value is the address, its time to live tells the last
//! heartbeat), and a file's holders come from [`RedisCatalog::view`], so
//! this file knows nothing of how holdings are stored.

use std::{collections::HashMap, time::Duration};

use futures_util::future::join_all;
use hive::FileName;

use super::{
    BUCKETS, RedisCatalog,
    keys::{PeerKeys, bucket_prefix},
    store_err,
};
use crate::{
    auth::PeerId,
    error::ServiceError,
    registry::{HeldView, HolderPage, HolderView, PeerPage, PeerView, RegistryError},
};

/// A live session's address, time to live, and files (all of them).
type Session = (PeerId, String, Duration, Vec<String>);

impl RedisCatalog {
    /// [`crate::Catalog::peers`]: every bucket's session ids (a few
    /// hundred each in a 10,000-peer swarm), the page of them, then each
    /// one's liveness and files, and the holders of the files shown.
    pub(super) async fn peers_impl(
        &self,
        after: Option<PeerId>,
        limit: usize,
        files: usize,
    ) -> Result<PeerPage, ServiceError> {
        let ranges: Vec<redis::Cmd> = (0..BUCKETS)
            .map(|b| {
                redis::cmd("ZRANGE")
                    .arg(format!("{}d", bucket_prefix(b)))
                    .arg(0)
                    .arg(-1)
                    .clone()
            })
            .collect();
        let mut ids = Vec::new();
        for bucket in join_all(ranges.iter().map(|c| self.query::<Vec<String>>(c))).await {
            ids.extend(bucket?.iter().filter_map(|id| PeerId::parse(id).ok()));
        }
        ids.retain(|&id| after.is_none_or(|a| id > a));
        ids.sort_unstable();
        ids.dedup();
        // Sessions ended but not yet swept drop out below, so read until a
        // page is full or the ids run out.
        let mut sessions = Vec::new();
        let mut rest = ids.as_slice();
        while sessions.len() <= limit && !rest.is_empty() {
            let take = rest.len().min(limit + 1 - sessions.len());
            let (batch, tail) = rest.split_at(take);
            rest = tail;
            for s in join_all(batch.iter().map(|&id| self.session(id))).await {
                sessions.extend(s?);
            }
        }
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let held = self.held_by(&sessions, files).await?;
        let ttl = self.limits.ttl;
        let peers: Vec<PeerView> = sessions
            .into_iter()
            .map(|(peer, addr, left, names)| PeerView {
                peer,
                addr,
                since_heartbeat: ttl.saturating_sub(left),
                confirmed: true,
                file_count: names.len() as u32,
                files: names
                    .iter()
                    .take(files)
                    .filter_map(|n| held.get(&(peer, n.clone())).cloned())
                    .collect(),
            })
            .collect();
        let next = more.then(|| peers.last().map(|p| p.peer)).flatten();
        Ok(PeerPage { peers, next })
    }

    /// [`crate::Catalog::holders`], over [`RedisCatalog::view`].
    pub(super) async fn holders_impl(
        &self,
        name: &FileName,
        after: Option<PeerId>,
        limit: usize,
    ) -> Result<HolderPage, ServiceError> {
        let (manifest, live) = self
            .view(name)
            .await?
            .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?;
        Ok(HolderPage::of(manifest, live, after, limit))
    }

    /// A session's address, time left and files (in name order), if it is
    /// live: one round trip on its bucket's slot.
    async fn session(&self, peer: PeerId) -> Result<Option<Session>, ServiceError> {
        let keys = PeerKeys::new(peer);
        let (addr, left_ms, mut names): (Option<String>, i64, Vec<String>) = redis::pipe()
            .cmd("GET")
            .arg(&keys.l)
            .cmd("PTTL")
            .arg(&keys.l)
            .cmd("SMEMBERS")
            .arg(&keys.f)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_err)?;
        let Some(addr) = addr.filter(|_| left_ms > 0) else {
            return Ok(None);
        };
        names.sort_unstable();
        let left = Duration::from_millis(left_ms as u64);
        Ok(Some((peer, addr, left, names)))
    }

    /// How much of each file shown each session holds: every file shown
    /// is read once, whoever holds it.
    async fn held_by(
        &self,
        sessions: &[Session],
        files: usize,
    ) -> Result<HashMap<(PeerId, String), HeldView>, ServiceError> {
        let mut names: Vec<FileName> = sessions
            .iter()
            .flat_map(|(_, _, _, names)| names.iter().take(files))
            .filter_map(|n| FileName::new(n.clone()).ok())
            .collect();
        names.sort_unstable();
        names.dedup();
        let views = join_all(names.iter().map(|n| self.view(n))).await;
        let mut held = HashMap::new();
        for (name, view) in names.iter().zip(views) {
            // Forgotten since the session listed it: left out.
            let Some((manifest, live)) = view? else {
                continue;
            };
            for h in live {
                let HolderView { peer, chunks, .. } = h;
                held.insert(
                    (peer, name.as_str().to_owned()),
                    HeldView {
                        name: name.clone(),
                        chunks: chunks.len(),
                        chunk_count: manifest.chunk_count(),
                    },
                );
            }
        }
        Ok(held)
    }
}
