//! The registry: the tracker's catalog (manifests, peers, who holds which
//! chunks) as plain data, with every rule about changing it.
//!
//! It knows nothing of gRPC or storage. Each mutating call first checks
//! everything it will do, and only then changes anything, so a refused call
//! leaves the registry exactly as it was. What a call changed is reported as
//! [`Change`]s, which the store makes durable.
//!
//! Time is passed in (`now`), so liveness rules are tested without waiting.
//!
//! # Layout
//! - this file: the types calls take and answer, and the catalog's entries.
//! - [`rules`]: conflicts, quotas, who may take an address, costs and
//!   holder picking, as plain functions any home for the catalog can call.
//! - `register`: Register (seed message 1), all checks before any change.
//! - `holdings`: RegisterChunk (seed message 4), and the one way a holding
//!   changes.
//! - `sessions`: credentials, heartbeats, Leave and expiry.
//! - `charges`: what each source address has put in the catalog, for the
//!   per-address quotas.
//! - `locate`: ListFiles and Locate, over live holders.
//! - `browse`: live peers and a file's holders, paged, for the web page.

mod browse;
mod charges;
mod holdings;
mod locate;
mod register;
pub mod rules;
mod sessions;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use hive::{ChunkSet, Digest, FileName, Manifest};

pub use self::rules::{holding_bytes, manifest_bytes};
use crate::auth::{IdentityError, Member, PeerId, Token, TokenHash};

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
    /// Names one source address may have in the catalog: those it created,
    /// until they are released (see [`rules::Usage`]).
    pub max_files_per_address: usize,
    /// Manifest bytes ([`manifest_bytes`]) of those names.
    pub max_bytes_per_address: u64,
    /// Holders listed in one Locate answer.
    pub locate_holders: usize,
    /// Holders listed per file in a ListFiles answer.
    pub list_holders: usize,
    /// A peer silent for this long is gone.
    pub ttl: Duration,
    /// A file nobody has held for this long is forgotten, and its name
    /// released: the grace in which its holders may come back.
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
    /// A new session of one member at an address another member's live
    /// session holds ([`rules::check_address`]).
    #[error(
        "address {addr} is held by another member's live session (a member is one \
         certificate; a renewed certificate is another) until it leaves or is silent \
         for {}; serve at another address (the peer's --listen, or --advertise) or wait",
        humantime::format_duration(*.ttl)
    )]
    AddressHeld { addr: String, ttl: Duration },
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
        /// The member whose certificate registered it (TLS only): it holds
        /// its address against other members, across a restart too.
        member: Option<Member>,
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
    /// Sessions: id, address, token hash, and the member that registered
    /// it (TLS only).
    pub peers: Vec<(PeerId, String, TokenHash, Option<Member>)>,
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
    /// A new session at `addr`; on a TLS connection, of `member`, to whom
    /// its token is then bound.
    New {
        addr: String,
        member: Option<Member>,
    },
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

/// A page of live peers, in id order.
#[derive(Debug, Clone)]
pub struct PeerPage {
    pub peers: Vec<PeerView>,
    /// The id to continue after, if there is more.
    pub next: Option<PeerId>,
}

/// A live peer as the web page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub peer: PeerId,
    pub addr: String,
    /// Time since its last heartbeat (or registration).
    pub since_heartbeat: Duration,
    pub confirmed: bool,
    /// Files it holds, all of them.
    pub file_count: u32,
    /// The first of them in name order, as many as asked.
    pub files: Vec<HeldView>,
}

/// One file a peer holds, and how much of it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldView {
    pub name: FileName,
    pub chunks: u32,
    pub chunk_count: u32,
}

/// A page of a file's live holders, in id order.
#[derive(Debug, Clone)]
pub struct HolderPage {
    pub manifest: Arc<Manifest>,
    pub holders: Vec<HolderView>,
    /// Live holders in all.
    pub holder_count: u32,
    /// The id to continue after, if there is more.
    pub next: Option<PeerId>,
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
    /// The host charged for this name ([`rules::charged_host`]), if any.
    charged: Option<Box<str>>,
}

struct PeerEntry {
    addr: String,
    token: TokenHash,
    /// On a TLS tracker, the member that registered it: while it is live,
    /// no other member's session may replace it at its address.
    member: Option<Member>,
    last_seen: Instant,
    /// False for a peer restored from storage until it heartbeats.
    confirmed: bool,
    files: HashSet<FileName>,
}

pub struct Registry {
    limits: Limits,
    files: BTreeMap<FileName, FileEntry>,
    peers: ById<PeerEntry>,
    tokens: HashMap<TokenHash, PeerId>,
    addrs: HashMap<String, PeerId>,
    /// The catalog's size in [`Limits::max_catalog_bytes`]'s terms.
    catalog_bytes: u64,
    /// What each host has put in the catalog, by [`FileEntry::charged`].
    charges: HashMap<Box<str>, rules::Usage>,
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
            charges: HashMap::new(),
        }
    }

    /// A registry holding a stored catalog. Restored peers are unconfirmed
    /// and get one TTL from `now` to heartbeat; a restored file nobody holds
    /// is released [`Limits::forget_after`] from `now`. Entries that do not
    /// fit together (a holding of an unknown file or peer) are skipped.
    pub fn restore(limits: Limits, catalog: Catalog, now: Instant) -> Self {
        let mut reg = Self::new(limits);
        for m in catalog.manifests {
            reg.catalog_bytes += manifest_bytes(&m);
            reg.files
                .insert(m.name().clone(), FileEntry::new(Arc::new(m), now));
        }
        for (peer, addr, token, member) in catalog.peers {
            reg.insert_peer(peer, addr, token, member, now, false);
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
        reg.charge_restored();
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
}

#[cfg(test)]
mod tests;
