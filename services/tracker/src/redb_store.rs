//! [`RedbStore`]: the catalog in an embedded redb database, `catalog.redb`
//! in the data directory. Each commit is one fsynced write transaction (the
//! journal commits a checkpoint's worth of changes at once).
//!
//! Tables (keys first):
//! - `manifests`: name -> size u64 | chunk size u32 | file digest | chunk digests
//! - `peers`: peer id -> (address, token hash)
//! - `members`: peer id -> the SHA-256 of the certificate that registered
//!   the session, for a session registered over TLS (a table of its own, so
//!   a catalog written before sessions had members opens as it was)
//! - `holdings`: (peer id, name) -> chunk bitmap ([`hive::ChunkSet::to_bytes`])
//! - `meta`: `"journal"` -> the last journal generation committed

use std::{ops::Bound, path::Path};

use hive::{ChunkSet, FileName, Manifest};
use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{
    auth::{Member, PeerId},
    codec,
    registry::{Catalog, Change},
    store::{Store, StoreError},
};

const MANIFESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("manifests");
const PEERS: TableDefinition<u64, (&str, [u8; 32])> = TableDefinition::new("peers");
const MEMBERS: TableDefinition<u64, [u8; 32]> = TableDefinition::new("members");
const HOLDINGS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("holdings");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOURNAL: &str = "journal";

/// redb's page cache. The whole catalog is read once, at start, into the
/// registry; after that redb takes checkpoints' writes and answers no
/// reads. Its default (1 GiB) kept a copy of every page the load read:
/// about twice a full catalog's budget in RSS, for nothing.
const CACHE_BYTES: usize = 16 << 20;

pub struct RedbStore {
    db: Database,
}

/// Asks the kernel to read `path` ahead, whole, in large sequential reads:
/// the load then finds its pages in the page cache instead of waiting for
/// each of redb's reads in turn from a cold disk (after a reboot). Only a
/// hint: a failure changes nothing but speed.
fn read_ahead(path: &Path) {
    use rustix::fs::{Advice, fadvise};
    if let Ok(file) = std::fs::File::open(path) {
        let _ = fadvise(&file, 0, None, Advice::WillNeed);
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) `catalog.redb` in `dir`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let path = dir.join("catalog.redb");
        read_ahead(&path);
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(MANIFESTS).map_err(err)?;
        tx.open_table(PEERS).map_err(err)?;
        tx.open_table(MEMBERS).map_err(err)?;
        tx.open_table(HOLDINGS).map_err(err)?;
        tx.open_table(META).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Catalog, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let mut catalog = Catalog::default();
        let mut layouts = std::collections::HashMap::new();
        for row in tx.open_table(MANIFESTS).map_err(err)?.iter().map_err(err)? {
            let (name, bytes) = row.map_err(err)?;
            // A name stored before the name rules grew (BI-9: deceptive
            // code points) is no longer a name: left out, not a damaged
            // catalog. Its holders' holdings go with it.
            if let Err(e) = FileName::new(name.value()) {
                tracing::warn!(name = ?name.value(), error = %e, "a stored name is no longer valid; forgotten");
                continue;
            }
            let manifest = codec::decode_manifest(name.value(), bytes.value())
                .ok_or_else(|| err(format!("stored manifest {:?} is damaged", name.value())))?;
            layouts.insert(manifest.name().clone(), manifest.chunk_count());
            catalog.manifests.push(manifest);
        }
        let members = tx.open_table(MEMBERS).map_err(err)?;
        for row in tx.open_table(PEERS).map_err(err)?.iter().map_err(err)? {
            let (id, value) = row.map_err(err)?;
            let (addr, token) = value.value();
            let member = members.get(id.value()).map_err(err)?;
            catalog.peers.push((
                PeerId::from_u64(id.value()),
                addr.to_owned(),
                blake3::Hash::from_bytes(token),
                member.map(|m| Member::from_bytes(m.value())),
            ));
        }
        for row in tx.open_table(HOLDINGS).map_err(err)?.iter().map_err(err)? {
            let (key, bits) = row.map_err(err)?;
            let (peer, name) = key.value();
            let Ok(name) = FileName::new(name) else {
                continue;
            };
            let Some(chunks) = layouts
                .get(&name)
                .and_then(|&universe| ChunkSet::from_bytes(universe, bits.value()))
            else {
                continue;
            };
            catalog
                .holdings
                .push((PeerId::from_u64(peer), name, chunks));
        }
        Ok(catalog)
    }

    fn checkpointed(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let meta = tx.open_table(META).map_err(err)?;
        Ok(meta.get(JOURNAL).map_err(err)?.map(|g| g.value()))
    }

    fn commit(&self, changes: &[Change], generation: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            tx.open_table(META)
                .map_err(err)?
                .insert(JOURNAL, generation)
                .map_err(err)?;
            let mut manifests = tx.open_table(MANIFESTS).map_err(err)?;
            let mut peers = tx.open_table(PEERS).map_err(err)?;
            let mut members = tx.open_table(MEMBERS).map_err(err)?;
            let mut holdings = tx.open_table(HOLDINGS).map_err(err)?;
            for change in changes {
                match change {
                    Change::PutManifest(m) => {
                        manifests
                            .insert(m.name().as_str(), manifest_bytes(m).as_slice())
                            .map_err(err)?;
                    }
                    Change::RemoveManifest(name) => {
                        manifests.remove(name.as_str()).map_err(err)?;
                    }
                    Change::PutPeer {
                        peer,
                        addr,
                        token,
                        member,
                    } => {
                        peers
                            .insert(peer.as_u64(), (addr.as_str(), *token.as_bytes()))
                            .map_err(err)?;
                        match member {
                            Some(m) => members.insert(peer.as_u64(), m.as_bytes()).map(drop),
                            None => members.remove(peer.as_u64()).map(drop),
                        }
                        .map_err(err)?;
                    }
                    Change::RemovePeer(peer) => {
                        peers.remove(peer.as_u64()).map_err(err)?;
                        members.remove(peer.as_u64()).map_err(err)?;
                        let id = peer.as_u64();
                        let upper = id
                            .checked_add(1)
                            .map_or(Bound::Unbounded, |next| Bound::Excluded((next, "")));
                        holdings
                            .retain_in((Bound::Included((id, "")), upper), |_, _| false)
                            .map_err(err)?;
                    }
                    Change::PutHolding { peer, name, chunks } => {
                        holdings
                            .insert((peer.as_u64(), name.as_str()), chunks.to_bytes().as_slice())
                            .map_err(err)?;
                    }
                    Change::RemoveHolding { peer, name } => {
                        holdings
                            .remove((peer.as_u64(), name.as_str()))
                            .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }
}

fn manifest_bytes(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_manifest(m, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{every_kind, members_peer};

    #[test]
    fn commits_come_back_after_reopening_with_their_generation() {
        let dir = tempfile::tempdir().unwrap();
        let changes = every_kind();
        // A manifest, a peer and its holding.
        let (puts, removals) = changes.split_at(3);
        {
            let store = RedbStore::open(dir.path()).unwrap();
            assert_eq!(store.checkpointed().unwrap(), None);
            store.commit(puts, 4).unwrap();
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.checkpointed().unwrap(), Some(4));
        let catalog = store.load().unwrap();
        let Change::PutManifest(manifest) = &puts[0] else {
            unreachable!()
        };
        assert_eq!(catalog.manifests, vec![(**manifest).clone()]);
        assert_eq!(catalog.peers.len(), 1);
        assert_eq!(catalog.holdings.len(), 1);

        // The removals: the holding, another peer (the last id there is),
        // the manifest.
        store.commit(removals, 5).unwrap();
        let catalog = store.load().unwrap();
        assert!(catalog.manifests.is_empty() && catalog.holdings.is_empty());
        assert_eq!(catalog.peers.len(), 1);
        assert_eq!(store.checkpointed().unwrap(), Some(5));
    }

    #[test]
    fn a_sessions_member_comes_back_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let Change::PutPeer { peer, member, .. } = members_peer() else {
            unreachable!()
        };
        store.commit(&[members_peer()], 1).unwrap();
        drop(store);
        let store = RedbStore::open(dir.path()).unwrap();
        let peers = store.load().unwrap().peers;
        assert_eq!(peers.len(), 1);
        assert_eq!((peers[0].0, peers[0].3), (peer, member));

        store.commit(&[Change::RemovePeer(peer)], 2).unwrap();
        assert!(store.load().unwrap().peers.is_empty());
        let tx = store.db.begin_read().unwrap();
        assert_eq!(tx.open_table(MEMBERS).unwrap().iter().unwrap().count(), 0);
    }
}
