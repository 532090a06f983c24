//! The registry: the tracker's catalog (manifests, peers, who holds which
//! chunks) as plain data, with every rule about changing it.
//!
//! It knows nothing of gRPC or storage. Each mutating call first checks
//! everything it will do, and only then changes anything, so a refused call
//! leaves the registry exactly as it was. What a call changed is reported as
//! [`Change`]s, which the store makes durable.
//!
//! Time is passed in (`now`), so liveness rules are tested without waiting.

use std::{
    collections::{BTreeMap, HashMap, HashSet, btree_map},
    hash::{BuildHasherDefault, Hasher},
    ops::{Bound, RangeInclusive},
    sync::Arc,
    time::{Duration, Instant},
};

use hive::{ChunkSet, Digest, FileName, Manifest, chunk::ChunkError};

use crate::auth::{self, IdentityError, PeerId, Token, TokenHash};

/// Hashes a [`PeerId`] with one multiply. Peer ids are minted by the tracker
/// from a CSPRNG, so maps keyed by them need no keyed, flood-resistant hash
/// (callers cannot choose the keys that go in), and a Locate looks up every
/// holder of the file.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type ById<V> = HashMap<PeerId, V, BuildHasherDefault<IdHasher>>;

/// The registry's limits and clocks.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Files one peer may hold.
    pub max_files_per_peer: usize,
    /// Files the catalog may hold in all.
    pub max_files: usize,
    /// Most bytes the catalog may take, as [`manifest_bytes`] and
    /// [`holding_bytes`] count them: what bounds the tracker's memory, since
    /// one manifest may carry up to 16,384 chunk digests.
    pub max_catalog_bytes: u64,
    /// Holders listed in one Locate answer.
    pub locate_holders: usize,
    /// Holders listed per file in a ListFiles answer.
    pub list_holders: usize,
    /// A peer silent for this long is gone.
    pub ttl: Duration,
    /// A file nobody has held for this long is forgotten.
    pub forget_after: Duration,
}

/// Why the registry refused a call. The service maps each to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown file {0:?}")]
    UnknownFile(FileName),
    #[error("unknown or expired peer {0}; register again")]
    UnknownPeer(PeerId),
    #[error("{name:?} is already registered with digest {existing}")]
    Conflict { name: FileName, existing: Digest },
    #[error("invalid session token")]
    Unauthenticated,
    #[error("this session may not act for peer {0}")]
    PermissionDenied(PeerId),
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A durable change to the catalog. Liveness (heartbeats) is soft state and
/// is never stored: restored peers must heartbeat again.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    PutManifest(Arc<Manifest>),
    PutPeer {
        peer: PeerId,
        addr: String,
        token: TokenHash,
    },
    PutHolding {
        peer: PeerId,
        name: FileName,
        chunks: Arc<ChunkSet>,
    },
    RemoveHolding {
        peer: PeerId,
        name: FileName,
    },
    /// The peer and all its holdings.
    RemovePeer(PeerId),
    RemoveManifest(FileName),
}

/// Everything durable, as a store loads it back.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub manifests: Vec<Manifest>,
    pub peers: Vec<(PeerId, String, TokenHash)>,
    pub holdings: Vec<(PeerId, FileName, ChunkSet)>,
}

/// A session's credentials, as presented with a request.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    pub peer: PeerId,
    pub token: TokenHash,
}

/// Who is registering: a new session at an address, or an existing one.
#[derive(Debug, Clone)]
pub enum Caller {
    New { addr: String },
    Session(Credentials),
}

/// A file offered in a Register call, with the chunks the caller holds.
#[derive(Debug, Clone)]
pub struct Offer {
    pub manifest: Manifest,
    pub chunks: ChunkSet,
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub peer: PeerId,
    /// Only for a new session.
    pub token: Option<Token>,
    pub addr: String,
}

/// One holder of a file, as answers show it.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderView {
    pub peer: PeerId,
    pub addr: String,
    /// Shared with the registry: answers copy no chunk sets.
    pub chunks: Arc<ChunkSet>,
    pub confirmed: bool,
}

#[derive(Debug, Clone)]
pub struct Located {
    pub manifest: Arc<Manifest>,
    /// At most [`Limits::locate_holders`] (or fewer, as asked), a random
    /// choice, confirmed first, covering the chunks held as they go.
    pub holders: Vec<HolderView>,
    /// Live holders of each chunk (position 0 is chunk 1), over all
    /// holders, capped at 255.
    pub chunk_holders: Vec<u8>,
    pub holder_count: u32,
}

#[derive(Debug, Clone)]
pub struct FileView {
    pub manifest: Arc<Manifest>,
    pub holders: Vec<HolderView>,
    pub holder_count: u32,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub files: Vec<FileView>,
    /// The name to continue after, if there is more.
    pub next: Option<FileName>,
}

struct FileEntry {
    manifest: Arc<Manifest>,
    /// Each holder's chunks, replaced (never changed in place) on an update,
    /// so answers can share them.
    holders: ById<Arc<ChunkSet>>,
    /// Holders of each chunk over all entries in `holders`, live or not yet
    /// swept; kept in step with every change to `holders`.
    counts: Vec<u32>,
    /// When the last holder went, if none is left.
    orphaned_since: Option<Instant>,
}

struct PeerEntry {
    addr: String,
    token: TokenHash,
    last_seen: Instant,
    /// False for a peer restored from storage until it heartbeats.
    confirmed: bool,
    files: HashSet<FileName>,
}

/// A holder of a file whose session is live, as Locate sees it.
struct LiveHolder<'a> {
    id: PeerId,
    entry: &'a PeerEntry,
    chunks: &'a Arc<ChunkSet>,
}

pub struct Registry {
    limits: Limits,
    files: BTreeMap<FileName, FileEntry>,
    peers: ById<PeerEntry>,
    tokens: HashMap<TokenHash, PeerId>,
    addrs: HashMap<String, PeerId>,
    /// The catalog's size in [`Limits::max_catalog_bytes`]'s terms.
    catalog_bytes: u64,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            files: BTreeMap::new(),
            peers: ById::default(),
            tokens: HashMap::new(),
            addrs: HashMap::new(),
            catalog_bytes: 0,
        }
    }

    /// A registry holding a stored catalog. Restored peers are unconfirmed
    /// and get one TTL from `now` to heartbeat. Entries that do not fit
    /// together (a holding of an unknown file or peer) are skipped.
    pub fn restore(limits: Limits, catalog: Catalog, now: Instant) -> Self {
        let mut reg = Self::new(limits);
        for m in catalog.manifests {
            reg.catalog_bytes += manifest_bytes(&m);
            reg.files
                .insert(m.name().clone(), FileEntry::new(Arc::new(m), now));
        }
        for (peer, addr, token) in catalog.peers {
            reg.insert_peer(peer, addr, token, now, false);
        }
        for (peer, name, chunks) in catalog.holdings {
            let (Some(p), Some(f)) = (reg.peers.get_mut(&peer), reg.files.get_mut(&name)) else {
                continue;
            };
            if chunks.universe() == f.manifest.chunk_count() {
                p.files.insert(name);
                if f.set_holding(peer, Arc::new(chunks)) {
                    reg.catalog_bytes += holding_bytes(f.manifest.chunk_count());
                }
            }
        }
        reg
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The catalog's size as [`Limits::max_catalog_bytes`] counts it.
    pub fn catalog_bytes(&self) -> u64 {
        self.catalog_bytes
    }

    /// [`Registry::catalog_bytes`] counted again from scratch.
    #[cfg(test)]
    fn catalog_bytes_recounted(&self) -> u64 {
        self.files
            .values()
            .map(|f| {
                manifest_bytes(&f.manifest)
                    + f.holders.len() as u64 * holding_bytes(f.manifest.chunk_count())
            })
            .sum()
    }

    /// Holder entries over all files.
    pub fn holding_count(&self) -> usize {
        self.files.values().map(|f| f.holders.len()).sum()
    }

    /// Seed message 1: starts or extends a session holding `offers`.
    pub fn register(
        &mut self,
        caller: Caller,
        offers: Vec<Offer>,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<Registered, RegistryError> {
        // Check everything first.
        let existing = match &caller {
            Caller::Session(cred) => Some(self.authorize(cred, now)?),
            Caller::New { .. } => None,
        };
        let mut offered: HashMap<&FileName, &Manifest> = HashMap::new();
        for offer in &offers {
            let (name, digest) = (offer.manifest.name(), offer.manifest.digest());
            if let Some(f) = self.files.get(name) {
                if f.manifest.digest() != digest {
                    return Err(RegistryError::Conflict {
                        name: name.clone(),
                        existing: f.manifest.digest(),
                    });
                }
                // The same content cut into other chunks: its chunk numbers
                // mean other bytes, and would index past the file's counts.
                if f.manifest.layout() != offer.manifest.layout() {
                    let l = f.manifest.layout();
                    return Err(RegistryError::Invalid(format!(
                        "{name:?} is registered in {} chunks of {} bytes; offer it in that layout",
                        l.count(),
                        l.chunk_size()
                    )));
                }
            }
            if offered
                .insert(name, &offer.manifest)
                .is_some_and(|m| *m != offer.manifest)
            {
                return Err(RegistryError::Invalid(format!(
                    "{name:?} is offered twice with different content or chunks"
                )));
            }
        }
        let new_names = offered
            .keys()
            .filter(|n| !self.files.contains_key(**n))
            .count();
        if self.files.len() + new_names > self.limits.max_files {
            return Err(RegistryError::Quota(format!(
                "the tracker holds at most {} files",
                self.limits.max_files
            )));
        }
        let held = existing.map_or(0, |p| {
            let p = &self.peers[&p];
            p.files.len() + offered.keys().filter(|n| !p.files.contains(**n)).count()
        });
        let total = if existing.is_some() {
            held
        } else {
            offered.len()
        };
        if total > self.limits.max_files_per_peer {
            return Err(RegistryError::Quota(format!(
                "a peer may hold at most {} files",
                self.limits.max_files_per_peer
            )));
        }
        // What the catalog grows by: new files' manifests, new holdings.
        let held_now =
            |name: &FileName| existing.is_some_and(|p| self.peers[&p].files.contains(name));
        let mut seen = HashSet::new();
        let growth: u64 = offers
            .iter()
            .filter(|o| seen.insert(o.manifest.name()))
            .map(|Offer { manifest, chunks }| {
                let name = manifest.name();
                let file = match self.files.contains_key(name) {
                    true => 0,
                    false => manifest_bytes(manifest),
                };
                let dropped = chunks.is_empty() && manifest.chunk_count() > 0;
                let holding = match dropped || held_now(name) {
                    true => 0,
                    false => holding_bytes(manifest.chunk_count()),
                };
                file + holding
            })
            .sum();
        // A peer registering again from its address replaces its old session.
        let replaced: u64 = match &caller {
            Caller::New { addr } => self
                .addrs
                .get(addr)
                .and_then(|old| self.peers.get(old))
                .map_or(0, |old| {
                    old.files
                        .iter()
                        .filter_map(|name| self.files.get(name))
                        .map(|f| holding_bytes(f.manifest.chunk_count()))
                        .sum()
                }),
            Caller::Session(_) => 0,
        };
        self.check_budget(growth.saturating_sub(replaced))?;

        // Then apply.
        let (peer, token, addr) = match caller {
            Caller::Session(cred) => (cred.peer, None, self.peers[&cred.peer].addr.clone()),
            Caller::New { addr } => {
                let (peer, token) = self.mint_unused()?;
                if let Some(old) = self.addrs.get(&addr).copied() {
                    // The same address can serve only one live peer: this is
                    // that peer restarted. Its old session goes.
                    self.remove_peer(old, now);
                    changes.push(Change::RemovePeer(old));
                }
                self.insert_peer(peer, addr.clone(), token.hash(), now, true);
                changes.push(Change::PutPeer {
                    peer,
                    addr: addr.clone(),
                    token: token.hash(),
                });
                (peer, Some(token), addr)
            }
        };
        for Offer { manifest, chunks } in offers {
            let name = manifest.name().clone();
            let file = match self.files.entry(name.clone()) {
                btree_map::Entry::Occupied(e) => e.into_mut(),
                btree_map::Entry::Vacant(e) => {
                    self.catalog_bytes += manifest_bytes(&manifest);
                    let manifest = Arc::new(manifest);
                    changes.push(Change::PutManifest(manifest.clone()));
                    e.insert(FileEntry::new(manifest, now))
                }
            };
            let p = self
                .peers
                .get_mut(&peer)
                .expect("the peer was checked or inserted above");
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
                continue;
            }
            p.files.insert(name.clone());
            let chunks = Arc::new(chunks);
            if file.set_holding(peer, chunks.clone()) {
                self.catalog_bytes += cost;
            }
            changes.push(Change::PutHolding { peer, name, chunks });
        }
        Ok(Registered { peer, token, addr })
    }

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
        let new_file = !p.files.contains(name);
        if new_file && !add.is_empty() {
            if p.files.len() >= self.limits.max_files_per_peer {
                return Err(RegistryError::Quota(format!(
                    "a peer may hold at most {} files",
                    self.limits.max_files_per_peer
                )));
            }
            self.check_budget(holding_bytes(universe))?;
        }

        let file = self.files.get_mut(name).expect("looked up above");
        let mut chunks = file
            .holders
            .get(&peer)
            .map_or_else(|| ChunkSet::empty(universe), |c| ChunkSet::clone(c));
        chunks.union_with(&add);
        chunks.subtract(&remove);
        let held = chunks.len();
        let p = self.peers.get_mut(&peer).expect("authorized above");
        if chunks.is_empty() && universe > 0 {
            if file.remove_holding(peer, now) {
                self.catalog_bytes -= holding_bytes(universe);
                changes.push(Change::RemoveHolding {
                    peer,
                    name: name.clone(),
                });
            }
            p.files.remove(name);
        } else {
            p.files.insert(name.clone());
            let chunks = Arc::new(chunks);
            if file.set_holding(peer, chunks.clone()) {
                self.catalog_bytes += holding_bytes(universe);
            }
            changes.push(Change::PutHolding {
                peer,
                name: name.clone(),
                chunks,
            });
        }
        Ok(held)
    }

    /// Keeps a session alive, and confirms a restored one.
    pub fn heartbeat(&mut self, cred: &Credentials, now: Instant) -> Result<(), RegistryError> {
        let peer = self.authorize(cred, now)?;
        let p = self.peers.get_mut(&peer).expect("authorized above");
        p.last_seen = now;
        p.confirmed = true;
        Ok(())
    }

    /// Seed message 6: ends a session and drops all it held.
    pub fn leave(
        &mut self,
        cred: &Credentials,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<(), RegistryError> {
        let peer = self.authorize(cred, now)?;
        self.remove_peer(peer, now);
        changes.push(Change::RemovePeer(peer));
        Ok(())
    }

    /// Drops peers silent for a TTL, and files nobody held for
    /// [`Limits::forget_after`]. Returns how many peers went.
    pub fn expire(&mut self, now: Instant, changes: &mut Vec<Change>) -> usize {
        let ttl = self.limits.ttl;
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.is_live(now, ttl))
            .map(|(id, _)| *id)
            .collect();
        for &peer in &silent {
            self.remove_peer(peer, now);
            changes.push(Change::RemovePeer(peer));
        }
        let forget = self.limits.forget_after;
        let mut freed = 0;
        self.files.retain(|name, f| {
            let keep = f
                .orphaned_since
                .is_none_or(|since| now.saturating_duration_since(since) < forget);
            if !keep {
                freed += manifest_bytes(&f.manifest);
                changes.push(Change::RemoveManifest(name.clone()));
            }
            keep
        });
        self.catalog_bytes -= freed;
        silent.len()
    }

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
            holders: self.pick_holders(live, cap(want, self.limits.locate_holders)),
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
                holders: self.pick_holders(live, self.limits.list_holders),
            });
        }
        let next = match iter.next() {
            Some(_) => files.last().map(|f| f.manifest.name().clone()),
            None => None,
        };
        Page { files, next }
    }

    /// Checks a session's credentials; returns the peer they are good for.
    ///
    /// A valid session acting for another id gets PermissionDenied; an id the
    /// tracker does not know (or has expired) gets UnknownPeer, so the peer
    /// registers again; anything else is Unauthenticated.
    fn authorize(&self, cred: &Credentials, now: Instant) -> Result<PeerId, RegistryError> {
        let owner = self.tokens.get(&cred.token).copied();
        let live = |p: &PeerEntry| p.is_live(now, self.limits.ttl);
        match self.peers.get(&cred.peer).filter(|p| live(p)) {
            // blake3::Hash compares in constant time.
            Some(p) if p.token == cred.token => Ok(cred.peer),
            Some(_) if owner.is_some() => Err(RegistryError::PermissionDenied(cred.peer)),
            Some(_) => Err(RegistryError::Unauthenticated),
            None if owner.is_some_and(|o| o != cred.peer) => {
                Err(RegistryError::PermissionDenied(cred.peer))
            }
            None => Err(RegistryError::UnknownPeer(cred.peer)),
        }
    }

    fn mint_unused(&self) -> Result<(PeerId, Token), RegistryError> {
        loop {
            let (peer, token) = auth::mint()?;
            if !self.peers.contains_key(&peer) && !self.tokens.contains_key(&token.hash()) {
                return Ok((peer, token));
            }
        }
    }

    fn insert_peer(
        &mut self,
        peer: PeerId,
        addr: String,
        token: TokenHash,
        now: Instant,
        confirmed: bool,
    ) {
        self.tokens.insert(token, peer);
        self.addrs.insert(addr.clone(), peer);
        self.peers.insert(
            peer,
            PeerEntry {
                addr,
                token,
                last_seen: now,
                confirmed,
                files: HashSet::new(),
            },
        );
    }

    fn remove_peer(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.tokens.remove(&p.token);
        if self.addrs.get(&p.addr) == Some(&peer) {
            self.addrs.remove(&p.addr);
        }
        for name in &p.files {
            if let Some(f) = self.files.get_mut(name)
                && f.remove_holding(peer, now)
            {
                self.catalog_bytes -= holding_bytes(f.manifest.chunk_count());
            }
        }
    }

    /// Refuses `growth` more bytes past [`Limits::max_catalog_bytes`].
    fn check_budget(&self, growth: u64) -> Result<(), RegistryError> {
        match self.catalog_bytes.saturating_add(growth) <= self.limits.max_catalog_bytes {
            true => Ok(()),
            false => Err(RegistryError::Quota(format!(
                "the tracker's catalog is full ({} MiB of {} MiB)",
                self.catalog_bytes >> 20,
                self.limits.max_catalog_bytes >> 20
            ))),
        }
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

    /// Up to `cap` of `live`: confirmed holders first, in random order, and
    /// coverage first: a holder is passed over while it only has chunks the
    /// holders already chosen have, so every chunk some live holder has is
    /// covered unless `cap` runs out first (one pass, not the smallest
    /// cover). The slots left go to the rest, in order.
    fn pick_holders(&self, mut live: Vec<LiveHolder<'_>>, cap: usize) -> Vec<HolderView> {
        if cap == 0 {
            return Vec::new();
        }
        if live.len() > cap {
            fastrand::shuffle(&mut live);
            live.sort_by_key(|h| !h.entry.confirmed);
            let mut covered = ChunkSet::empty(live[0].chunks.universe());
            let (mut chosen, mut passed) = (Vec::with_capacity(cap), Vec::new());
            let mut order = live.into_iter();
            for h in order.by_ref() {
                if h.chunks.is_subset(&covered) {
                    passed.push(h);
                    continue;
                }
                covered.union_with(h.chunks);
                chosen.push(h);
                // Past this, every holder would be passed over: stop looking.
                if chosen.len() == cap || covered.is_full() {
                    break;
                }
            }
            let room = cap - chosen.len();
            chosen.extend(passed.into_iter().chain(order).take(room));
            live = chosen;
        }
        live.into_iter()
            .map(|h| HolderView {
                peer: h.id,
                addr: h.entry.addr.clone(),
                chunks: h.chunks.clone(),
                confirmed: h.entry.confirmed,
            })
            .collect()
    }
}

/// What a file's entry costs in the catalog budget: a chunk digest and a
/// holder count per chunk, plus the entry itself.
pub fn manifest_bytes(m: &Manifest) -> u64 {
    512 + 36 * u64::from(m.chunk_count())
}

/// What one peer's holding of a file of `chunks` chunks costs: its bitmap,
/// plus the entry itself.
pub fn holding_bytes(chunks: u32) -> u64 {
    96 + 8 * u64::from(chunks.div_ceil(64))
}

/// The holders a Locate lists: what the caller wants, within the cap.
fn cap(want: usize, cap: usize) -> usize {
    match want {
        0 => cap,
        want => want.min(cap),
    }
}

/// Holder counts as Locate sends them: a byte each, capped at 255.
fn capped(counts: &[u32]) -> Vec<u8> {
    counts.iter().map(|&c| c.min(255) as u8).collect()
}

impl FileEntry {
    fn new(manifest: Arc<Manifest>, now: Instant) -> Self {
        Self {
            counts: vec![0; manifest.chunk_count() as usize],
            manifest,
            holders: ById::default(),
            orphaned_since: Some(now),
        }
    }

    /// Returns whether the holding is new (rather than replaced).
    fn set_holding(&mut self, peer: PeerId, chunks: Arc<ChunkSet>) -> bool {
        let old = self.holders.insert(peer, chunks.clone());
        match &old {
            Some(old) => chunks.replace_in_counts(old, &mut self.counts),
            None => chunks.add_to_counts(&mut self.counts),
        }
        self.orphaned_since = None;
        old.is_none()
    }

    /// Returns whether the peer held the file.
    fn remove_holding(&mut self, peer: PeerId, now: Instant) -> bool {
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

impl PeerEntry {
    fn is_live(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_seen) < ttl
    }
}

#[cfg(test)]
mod tests;
