//! The shared catalog: the [`Catalog`] on Redis (one primary) or Redis
//! Cluster, so that any number of identical tracker replicas serve one
//! swarm. A replica keeps no catalog state of its own beyond a cache of
//! manifests (checked against the stored digest on every use).
//!
//! # Keys
//! A file's keys share the hash tag `T`, the hex of the first 8 bytes of
//! BLAKE3(name) (names may hold `{`; the name is stored and compared, so a
//! collision is refused, not merged); a peer's keys share its bucket `B`,
//! its id mod [`BUCKETS`]. Every script touches one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `hv:f:{T}:m` | hash | name, manifest (protobuf), digest, layout, `orphaned` (ms, when no holder) |
//! | `hv:f:{T}:h` | hash | peer id → its chunks, as the wire's `chunk_bitmap` |
//! | `hv:p:{B}:s:<id>` | hash | addr, token hash (BLAKE3; compared in constant time, in the script) |
//! | `hv:p:{B}:l:<id>` | string | addr, with the TTL as its expiry: the session is live while it exists |
//! | `hv:p:{B}:f:<id>` | set | names of the files it holds |
//! | `hv:p:{B}:d` | zset | id → deadline (ms, Redis clock), what sweepers claim from |
//! | `hv:t:<token hash>` | string | id (only to tell PERMISSION_DENIED from UNAUTHENTICATED) |
//! | `hv:a:<addr>` | string | the id of the session at this address |
//! | `hv:files` | zset | names, score 0, for ListFiles by name |
//! | `hv:orph` | zset | tag → when it lost its last holder, for `forget_after` |
//!
//! # Round trips per call
//! Heartbeat 1 (a script: token check, `PEXPIRE` of the liveness key).
//! Locate 2 (a pipeline on the file's slot: digest and every holder's
//! bitmap; then `MGET` of the holders' liveness keys), plus one the first
//! time a replica sees a manifest. RegisterChunk 2 (a script on the peer's
//! slot: token, files-per-peer quota, the file added to its set; a script
//! on the file's slot: new = (old ∪ add) ∖ remove), plus one to undo the
//! first on a refusal, and one to read the manifest when the replica has
//! not cached it. Register (a rare call): 1 for the session when extending
//! one; 1 for the offered files' digests (in parallel), plus one per
//! manifest the replica has not cached; 1 for the catalog's size when a
//! name is new; 3 for a new session (its keys, the token and the address
//! indexes) plus the eviction of an old one at the same address; 1 for the
//! peer's file set; then 1 per file, in order (and 1 to index a new name).
//! Leave 1 + 1 per file held (in parallel) + 1 (the token and address
//! indexes, in parallel). ListFiles 1, then 2 per file, the files in
//! parallel.
//!
//! # Where this differs from the design study, and why
//! - Per-chunk counts are not stored: Locate reads every holder's bitmap
//!   with the file (one `HGETALL`) and counts the live ones in the replica.
//!   Exact over live holders by construction, no count to keep in step (the
//!   study's bit planes need a ripple-carry per change and a property test
//!   to trust), and Redis does no per-bit work at all. The price is a Locate
//!   that reads O(holders) bytes; packed records with bit-plane counts (the
//!   study's layout) are the next step when one file has thousands of
//!   holders.
//! - A heartbeat touches only the liveness key; the deadline set is
//!   corrected by the sweeper's claim script (a due session whose liveness
//!   key still exists is pushed back to its expiry), so Heartbeat is one
//!   script on one key pair.
//! - [`BUCKETS`] is 64 rather than 4,096: every replica sweeps every bucket
//!   a few times per TTL, and 64 already spread over any cluster's
//!   primaries.
//! - Leave and the eviction of a replaced session clean up before they
//!   answer, so the holdings are gone from the next answer and from the
//!   counts (the liveness key is gone first, so Locate already drops them).
//!
//! # What is weaker than the embedded catalog
//! - Register is atomic per file, not per request. Every check (names,
//!   conflicts with the catalog, quotas) runs before anything is written,
//!   so a refused Register changes nothing; but a Register racing another
//!   one that registers the same new name with other content may have
//!   registered its first files when the race is found (ALREADY_EXISTS),
//!   and one whose store fails midway (UNAVAILABLE) may have registered
//!   some. What was written belongs to the caller's session, so it expires
//!   with it if the caller does not retry. True on one primary as on a
//!   cluster: the same scripts run on both.
//! - `max_files` is checked against a count read before the writes (two
//!   replicas may both pass it); `--max-catalog-mib` does not apply: Redis's
//!   `maxmemory` (with `noeviction`) bounds the catalog, and a write it
//!   refuses is UNAVAILABLE.
//! - Every holder is `confirmed` (there is no restore phase).
//! - A sweeper that dies between claiming a session and dropping its
//!   holdings leaves them in the files' hashes: never listed (their
//!   liveness key is gone), but held in memory until a scrub
//!   ([`RedisCatalog::scrub`], every few minutes per replica) drops them;
//!   likewise a RegisterChunk whose session is claimed between its two
//!   round trips. The design study's tombstones and claim-recovery set
//!   would free them sooner, at the price of more keys per write.
//! - Stats count peers and files only (holdings and bytes would need a
//!   scan of every file).

mod scripts;

use std::{
    collections::{HashMap, HashSet},
    ops::RangeInclusive,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use hive::{ChunkSet, Digest, FileName, Manifest, chunk::ChunkError, pb::types};
use prost::Message;
use redis::{
    Cmd, FromRedisValue, RedisFuture, RedisResult, ScriptInvocation, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};
use tokio_util::sync::CancellationToken;

use self::scripts::*;
use crate::{
    auth::{self, PeerId, TokenHash},
    catalog::Catalog,
    error::ServiceError,
    registry::{
        Caller, Credentials, FileView, HolderView, Limits, Located, Offer, Page, Registered,
        RegistryError, rules,
    },
    state::Stats,
    store::StoreError,
};

/// Peer buckets: a peer's keys live in bucket `id mod BUCKETS`.
pub const BUCKETS: u64 = 64;
/// Sessions one claim script takes from a bucket at a time.
const CLAIM_BATCH: usize = 100;
/// Manifests a replica caches; past it the cache starts over.
const MANIFEST_CACHE: usize = 10_000;
/// How long one command may take before it fails (and its call with it,
/// UNAVAILABLE): well under the gRPC request timeout, well over a busy
/// server's answer (the client's default of 500 ms is not).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a replica's sweeper also scrubs every file's holder records
/// (see [`RedisCatalog::scrub`]).
const SCRUB_PERIOD: Duration = Duration::from_secs(300);

/// A connection to one primary or to a cluster; both are multiplexed and
/// cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisCatalog {
    conn: Conn,
    limits: Limits,
    url: String,
    manifests: Mutex<HashMap<FileName, Arc<Manifest>>>,
    /// When this replica last scrubbed.
    scrubbed: Mutex<Instant>,
    broken: CancellationToken,
}

/// A file's keys.
struct FileKeys {
    tag: String,
    m: String,
    h: String,
}

impl FileKeys {
    fn new(name: &FileName) -> Self {
        let hash = blake3::hash(name.as_str().as_bytes());
        let tag: String = hash.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self::for_tag(tag)
    }

    fn for_tag(tag: String) -> Self {
        Self {
            m: format!("hv:f:{{{tag}}}:m"),
            h: format!("hv:f:{{{tag}}}:h"),
            tag,
        }
    }
}

/// A peer's keys.
struct PeerKeys {
    id: String,
    s: String,
    l: String,
    f: String,
    d: String,
}

impl PeerKeys {
    fn new(peer: PeerId) -> Self {
        let id = peer.to_hex();
        let p = bucket_prefix(peer.as_u64() % BUCKETS);
        Self {
            s: format!("{p}s:{id}"),
            l: format!("{p}l:{id}"),
            f: format!("{p}f:{id}"),
            d: format!("{p}d"),
            id,
        }
    }
}

fn bucket_prefix(bucket: u64) -> String {
    format!("hv:p:{{{bucket:02x}}}:")
}

fn token_key(token: &[u8]) -> String {
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    format!("hv:t:{hex}")
}

fn addr_key(addr: &str) -> String {
    format!("hv:a:{addr}")
}

const FILES: &str = "hv:files";
const ORPHANS: &str = "hv:orph";

fn store_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Store(StoreError(format!("redis: {e}")))
}

fn corrupt(what: &str) -> ServiceError {
    ServiceError::Store(StoreError(format!("redis: unexpected {what}")))
}

fn layout_of(m: &Manifest) -> String {
    format!("{}:{}", m.chunk_count(), m.layout().chunk_size().get())
}

/// A file's stored name and digest, if it is known.
type FileHead = (Option<String>, Option<Vec<u8>>);

/// A session ended: its id, address, token hash and files.
type Claimed = (String, String, Vec<u8>, Vec<String>);

impl RedisCatalog {
    /// Connects to `url`: `redis://HOST:PORT`, `redis+unix:///PATH` (one
    /// primary) or `redis-cluster://HOST:PORT,HOST:PORT,...`.
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, ServiceError> {
        let conn = match url.strip_prefix("redis-cluster://") {
            Some(nodes) => {
                let nodes: Vec<String> = nodes
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("redis://{n}"))
                    .collect();
                let client = redis::cluster::ClusterClient::builder(nodes)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()
                    .map_err(store_err)?;
                Conn::Cluster(client.get_async_connection().await.map_err(store_err)?)
            }
            None => {
                let client = redis::Client::open(url).map_err(store_err)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let manager = client.get_connection_manager_with_config(config).await;
                Conn::Single(manager.map_err(store_err)?)
            }
        };
        let mut catalog = Self {
            conn,
            limits,
            url: url.to_owned(),
            manifests: Mutex::new(HashMap::new()),
            scrubbed: Mutex::new(Instant::now()),
            broken: CancellationToken::new(),
        };
        let pong: String = redis::cmd("PING")
            .query_async(&mut catalog.conn)
            .await
            .map_err(store_err)?;
        debug_assert_eq!(pong, "PONG");
        Ok(catalog)
    }

    /// Where the catalog is, for logs: the URL without any credentials.
    pub fn describe(&self) -> String {
        redacted(&self.url)
    }

    fn ttl_ms(&self) -> u64 {
        self.limits.ttl.as_millis().try_into().unwrap_or(u64::MAX)
    }

    async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, ServiceError> {
        inv.invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_err)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, ServiceError> {
        cmd.query_async(&mut self.conn.clone())
            .await
            .map_err(store_err)
    }

    /// The error for credentials a script refused (`why`), as the embedded
    /// catalog decides it: a token of another live or unswept session is
    /// PERMISSION_DENIED.
    async fn refused(&self, cred: &Credentials, why: &str) -> ServiceError {
        let owner: Option<String> = match self
            .query(redis::cmd("GET").arg(token_key(cred.token.as_bytes())))
            .await
        {
            Ok(o) => o,
            Err(e) => return e,
        };
        let owner = owner.and_then(|o| PeerId::parse(&o).ok());
        let e = match why {
            "mismatch" if owner.is_some() => RegistryError::PermissionDenied(cred.peer),
            "mismatch" => RegistryError::Unauthenticated,
            "gone" if owner.is_some_and(|o| o != cred.peer) => {
                RegistryError::PermissionDenied(cred.peer)
            }
            "gone" => RegistryError::UnknownPeer(cred.peer),
            other => return corrupt(&format!("answer {other:?}")),
        };
        e.into()
    }

    /// `name`'s manifest as stored now, if the file is known.
    async fn manifest(&self, name: &FileName) -> Result<Option<Arc<Manifest>>, ServiceError> {
        let keys = FileKeys::new(name);
        let (stored, digest): (Option<String>, Option<Vec<u8>>) = self
            .query(redis::cmd("HMGET").arg(&keys.m).arg("name").arg("digest"))
            .await?;
        let (Some(stored), Some(digest)) = (stored, digest) else {
            return Ok(None);
        };
        if stored != name.as_str() {
            return Ok(None);
        }
        self.manifest_with(name, &keys, &digest).await.map(Some)
    }

    /// `name`'s manifest of digest `digest`: from the cache, or read.
    async fn manifest_with(
        &self,
        name: &FileName,
        keys: &FileKeys,
        digest: &[u8],
    ) -> Result<Arc<Manifest>, ServiceError> {
        if let Some(m) = self.cached(name)
            && m.digest().as_bytes() == digest
        {
            return Ok(m);
        }
        let bytes: Option<Vec<u8>> = self
            .query(redis::cmd("HGET").arg(&keys.m).arg("manifest"))
            .await?;
        let bytes = bytes.ok_or_else(|| corrupt("file without a manifest"))?;
        let wire = types::Manifest::decode(bytes.as_slice()).map_err(|_| corrupt("manifest"))?;
        let m = Arc::new(Manifest::try_from(wire).map_err(|_| corrupt("manifest"))?);
        let mut cache = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MANIFEST_CACHE {
            cache.clear();
        }
        cache.insert(name.clone(), m.clone());
        Ok(m)
    }

    fn forget_cached(&self, name: &FileName) {
        let mut cache = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(name);
    }

    fn cached(&self, name: &FileName) -> Option<Arc<Manifest>> {
        let cache = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(name).cloned()
    }

    /// A file's manifest and live holders; `None` if it is unknown.
    async fn view(
        &self,
        name: &FileName,
    ) -> Result<Option<(Arc<Manifest>, Vec<HolderView>)>, ServiceError> {
        let keys = FileKeys::new(name);
        let ((stored, digest), holders): (FileHead, Vec<(String, Vec<u8>)>) = redis::pipe()
            .cmd("HMGET")
            .arg(&keys.m)
            .arg("name")
            .arg("digest")
            .cmd("HGETALL")
            .arg(&keys.h)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_err)?;
        let (Some(stored), Some(digest)) = (stored, digest) else {
            return Ok(None);
        };
        if stored != name.as_str() {
            return Ok(None);
        }
        let manifest = self.manifest_with(name, &keys, &digest).await?;
        let universe = manifest.chunk_count();
        let holders: Vec<(PeerId, ChunkSet)> = holders
            .into_iter()
            .filter_map(|(id, bits)| {
                Some((
                    PeerId::parse(&id).ok()?,
                    ChunkSet::from_bitmap(universe, &bits)?,
                ))
            })
            .collect();
        if holders.is_empty() {
            return Ok(Some((manifest, Vec::new())));
        }
        let mut mget = redis::cmd("MGET");
        for (id, _) in &holders {
            mget.arg(PeerKeys::new(*id).l);
        }
        let addrs: Vec<Option<String>> = self.query(&mget).await?;
        let live = holders
            .into_iter()
            .zip(addrs)
            .filter_map(|((peer, chunks), addr)| {
                Some(HolderView {
                    peer,
                    addr: addr?,
                    chunks: Arc::new(chunks),
                    confirmed: true,
                })
            })
            .collect();
        Ok(Some((manifest, live)))
    }

    /// Drops every holding of ended sessions and their index entries.
    async fn clean_up(&self, ended: Vec<Claimed>) -> Result<(), ServiceError> {
        let mut tasks = tokio::task::JoinSet::new();
        for (id, addr, token, files) in ended {
            for name in files {
                let conn = self.conn.clone();
                let id = id.clone();
                tasks.spawn(async move { drop_holding(conn, &name, &id).await });
            }
            // The indexes, if they still name this session.
            let indexes = [
                (!addr.is_empty()).then(|| addr_key(&addr)),
                (!token.is_empty()).then(|| token_key(&token)),
            ];
            for key in indexes.into_iter().flatten() {
                let (mut conn, id) = (self.conn.clone(), id.clone());
                tasks.spawn(async move {
                    DELETE_IF
                        .key(key)
                        .arg(&id)
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map(drop)
                });
            }
        }
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                result = Err(store_err(e));
            }
        }
        result
    }

    /// Forgets files orphaned for `forget_after`.
    async fn forget(&self) -> Result<(), ServiceError> {
        let after: u64 = self
            .limits
            .forget_after
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX);
        let tags: Vec<String> = self
            .run(ORPHANS_DUE.key(ORPHANS).arg(after).arg(CLAIM_BATCH))
            .await?;
        for tag in tags {
            let keys = FileKeys::for_tag(tag);
            let out: Vec<String> = self
                .run(FORGET.key(&keys.m).key(&keys.h).arg(after))
                .await?;
            match out.first().map(String::as_str) {
                Some("gone") => {
                    let name = out.get(1).cloned().unwrap_or_default();
                    self.query::<i64>(redis::cmd("ZREM").arg(FILES).arg(&name))
                        .await?;
                    // Registered again since: listed again (the Register's
                    // own ZADD may have come before the ZREM).
                    let back: bool = self.query(redis::cmd("EXISTS").arg(&keys.m)).await?;
                    if back {
                        self.query::<i64>(redis::cmd("ZADD").arg(FILES).arg(0).arg(&name))
                            .await?;
                    }
                    self.query::<i64>(redis::cmd("ZREM").arg(ORPHANS).arg(&keys.tag))
                        .await?;
                }
                Some("young") => {
                    let since = out.get(1).cloned().unwrap_or_default();
                    self.query::<i64>(redis::cmd("ZADD").arg(ORPHANS).arg(since).arg(&keys.tag))
                        .await?;
                }
                _ => {
                    self.query::<i64>(redis::cmd("ZREM").arg(ORPHANS).arg(&keys.tag))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Indexes a file that lost its last holder at `since` (ms).
    async fn orphaned(&self, keys: &FileKeys, since: &str) -> Result<(), ServiceError> {
        if since.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("ZADD").arg(ORPHANS).arg(since).arg(&keys.tag))
            .await
            .map(drop)
    }

    /// Registers offers for `peer` after every check passed: its file set
    /// first (so every holding can be found from the session), then each
    /// file in order.
    async fn apply(&self, peer: PeerId, offers: Vec<Offer>) -> Result<(), ServiceError> {
        let keys = PeerKeys::new(peer);
        let mut kept: HashMap<&FileName, bool> = HashMap::new();
        for o in &offers {
            let dropped = o.chunks.is_empty() && o.manifest.chunk_count() > 0;
            kept.insert(o.manifest.name(), !dropped);
        }
        let add: Vec<&str> = kept
            .iter()
            .filter(|(_, k)| **k)
            .map(|(n, _)| n.as_str())
            .collect();
        if !add.is_empty() {
            self.query::<i64>(redis::cmd("SADD").arg(&keys.f).arg(&add))
                .await?;
        }
        for Offer { manifest, chunks } in &offers {
            let fk = FileKeys::new(manifest.name());
            let dropped = chunks.is_empty() && manifest.chunk_count() > 0;
            let wire = types::Manifest::from(manifest).encode_to_vec();
            let out: Vec<Vec<u8>> = self
                .run(
                    PUT.key(&fk.m)
                        .key(&fk.h)
                        .arg(manifest.name().as_str())
                        .arg(wire)
                        .arg(manifest.digest().as_bytes().as_slice())
                        .arg(layout_of(manifest))
                        .arg(&keys.id)
                        .arg(chunks.to_bitmap())
                        .arg(if dropped { "1" } else { "0" }),
                )
                .await?;
            match out.first().map(Vec::as_slice) {
                Some(b"ok") => {}
                Some(b"conflict") => {
                    let existing = out.get(1).and_then(|d| Digest::from_bytes(d).ok());
                    return Err(match existing {
                        Some(existing) if existing != manifest.digest() => {
                            RegistryError::Conflict {
                                name: manifest.name().clone(),
                                existing,
                            }
                        }
                        _ => RegistryError::Invalid(format!(
                            "{:?} is registered in another layout; offer it in that layout",
                            manifest.name()
                        )),
                    }
                    .into());
                }
                Some(b"collision") => {
                    return Err(RegistryError::Quota(format!(
                        "{:?} cannot be registered on this tracker",
                        manifest.name()
                    ))
                    .into());
                }
                _ => return Err(corrupt("answer to a registration")),
            }
            if out.get(1).map(Vec::as_slice) == Some(b"1") {
                self.query::<i64>(
                    redis::cmd("ZADD")
                        .arg(FILES)
                        .arg(0)
                        .arg(manifest.name().as_str()),
                )
                .await?;
            }
            let since = String::from_utf8_lossy(out.get(2).map_or(&[][..], Vec::as_slice));
            self.orphaned(&fk, &since).await?;
        }
        let gone: Vec<&str> = kept
            .iter()
            .filter(|(_, k)| !**k)
            .map(|(n, _)| n.as_str())
            .collect();
        if !gone.is_empty() {
            self.query::<i64>(redis::cmd("SREM").arg(&keys.f).arg(&gone))
                .await?;
        }
        Ok(())
    }

    /// A new session at `addr`; an old one there is ended first.
    async fn open_session(&self, addr: &str) -> Result<(PeerId, auth::Token), ServiceError> {
        let (peer, token) = auth::mint().map_err(RegistryError::from)?;
        let keys = PeerKeys::new(peer);
        let hash: TokenHash = token.hash();
        self.run::<String>(
            OPEN.key(&keys.s)
                .key(&keys.l)
                .key(&keys.d)
                .arg(&keys.id)
                .arg(addr)
                .arg(hash.as_bytes().as_slice())
                .arg(self.ttl_ms()),
        )
        .await?;
        self.query::<()>(
            redis::cmd("SET")
                .arg(token_key(hash.as_bytes()))
                .arg(&keys.id),
        )
        .await?;
        let old: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(addr_key(addr))
                    .arg(&keys.id)
                    .arg("GET"),
            )
            .await?;
        if let Some(old) = old.and_then(|o| PeerId::parse(&o).ok())
            && old != peer
        {
            let ok = PeerKeys::new(old);
            let ended: Vec<Claimed> = self.run(EVICT.key(&ok.d).arg(&ok.id)).await?;
            // The address index already names the new session.
            let ended = ended
                .into_iter()
                .map(|(id, _, token, files)| (id, String::new(), token, files))
                .collect();
            self.clean_up(ended).await?;
        }
        Ok((peer, token))
    }
}

/// `url` without its user and password, if it has any.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{rest}"),
        _ => url.to_owned(),
    }
}

/// Drops `id`'s holding of `name`.
async fn drop_holding(mut conn: Conn, name: &str, id: &str) -> RedisResult<()> {
    let Ok(name) = FileName::new(name) else {
        return Ok(());
    };
    let keys = FileKeys::new(&name);
    let since: String = DROP
        .key(&keys.m)
        .key(&keys.h)
        .arg(id)
        .invoke_async(&mut conn)
        .await?;
    if !since.is_empty() {
        redis::cmd("ZADD")
            .arg(ORPHANS)
            .arg(since)
            .arg(&keys.tag)
            .query_async::<i64>(&mut conn)
            .await?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Catalog for RedisCatalog {
    async fn register(
        &self,
        caller: Caller,
        offers: Vec<Offer>,
    ) -> Result<Registered, ServiceError> {
        let distinct: Vec<FileName> = {
            let mut seen = HashSet::new();
            offers
                .iter()
                .map(|o| o.manifest.name())
                .filter(|n| seen.insert(*n))
                .cloned()
                .collect()
        };
        // The session first, as the embedded catalog checks it first.
        let session = match &caller {
            Caller::Session(cred) => {
                let keys = PeerKeys::new(cred.peer);
                let mut inv = SESSION.key(&keys.s);
                inv.key(&keys.l)
                    .key(&keys.f)
                    .arg(cred.token.as_bytes().as_slice());
                for n in &distinct {
                    inv.arg(n.as_str());
                }
                let out: Vec<String> = self.run(&inv).await?;
                match out.as_slice() {
                    [ok, addr, held, new] if ok == "ok" => {
                        let held: usize = held.parse().map_err(|_| corrupt("count"))?;
                        let new: usize = new.parse().map_err(|_| corrupt("count"))?;
                        Some((cred.peer, addr.clone(), held + new))
                    }
                    [why, ..] => return Err(self.refused(cred, why).await),
                    [] => return Err(corrupt("empty answer")),
                }
            }
            Caller::New { .. } => None,
        };
        // Every check before any write.
        let mut registered = HashMap::new();
        let found = join_all(distinct.iter().map(|n| self.manifest(n))).await;
        for (name, m) in distinct.iter().zip(found) {
            if let Some(m) = m? {
                registered.insert(name.clone(), m);
            }
        }
        rules::check_offers(&offers, |n| registered.get(n).map(|m| m.as_ref()))?;
        let new_names = distinct.len() - registered.len();
        if new_names > 0 {
            let files: usize = self.query(redis::cmd("ZCARD").arg(FILES)).await?;
            rules::check_file_count(&self.limits, files + new_names)?;
        }
        let held = session.as_ref().map_or(distinct.len(), |s| s.2);
        rules::check_files_per_peer(&self.limits, held)?;

        let (peer, token, addr) = match (session, caller) {
            (Some((peer, addr, _)), _) => (peer, None, addr),
            (None, Caller::New { addr }) => {
                let (peer, token) = self.open_session(&addr).await?;
                (peer, Some(token), addr)
            }
            (None, Caller::Session(_)) => unreachable!("checked above"),
        };
        self.apply(peer, offers).await?;
        Ok(Registered { peer, token, addr })
    }

    async fn register_chunks(
        &self,
        cred: Credentials,
        name: &FileName,
        add: &[RangeInclusive<u32>],
        remove: &[RangeInclusive<u32>],
    ) -> Result<u32, ServiceError> {
        let keys = PeerKeys::new(cred.peer);
        let fk = FileKeys::new(name);
        for attempt in 0.. {
            // A cached manifest is checked by the script against the stored
            // digest ('stale', 'unknown'), so the hot path skips the read.
            let manifest = match (attempt, self.cached(name)) {
                (0, Some(m)) => Some(m),
                _ => self.manifest(name).await?,
            };
            let invalid =
                |field: &str, e: ChunkError| RegistryError::Invalid(format!("{field}: {e}"));
            let sets = manifest.as_ref().map(|m| {
                let universe = m.chunk_count();
                let add = ChunkSet::from_ranges(universe, add.iter().cloned())
                    .map_err(|e| invalid("chunks", e))?;
                let remove = ChunkSet::from_ranges(universe, remove.iter().cloned())
                    .map_err(|e| invalid("withdrawn", e))?;
                Ok::<_, RegistryError>((add, remove))
            });
            if attempt == 0 && matches!(sets, Some(Err(_))) {
                // Refused against a cached manifest: check the stored one.
                self.forget_cached(name);
                continue;
            }
            // The file joins the peer's set only when the call can go on
            // and would keep a holding of it.
            let join = match (&manifest, &sets) {
                (Some(m), Some(Ok((add, _)))) => !add.is_empty() || m.chunk_count() == 0,
                _ => false,
            };
            let quota = matches!(&sets, Some(Ok((add, _))) if !add.is_empty());
            let why: String = self
                .run(
                    CHUNK_AUTH
                        .key(&keys.s)
                        .key(&keys.l)
                        .key(&keys.f)
                        .arg(cred.token.as_bytes().as_slice())
                        .arg(if join { name.as_str() } else { "" })
                        .arg(if quota { "1" } else { "0" })
                        .arg(self.limits.max_files_per_peer),
                )
                .await?;
            let added = match why.as_str() {
                "added" => true,
                "ok" => false,
                "quota" => false,
                other => return Err(self.refused(&cred, other).await),
            };
            let (manifest, (add_set, remove_set)) = match (manifest, sets) {
                (None, _) | (_, None) => {
                    return Err(RegistryError::UnknownFile(name.clone()).into());
                }
                (Some(_), Some(Err(e))) => return Err(e.into()),
                (Some(m), Some(Ok(s))) => (m, s),
            };
            if why == "quota" {
                rules::check_files_per_peer(&self.limits, self.limits.max_files_per_peer + 1)?;
            }
            let out: Vec<String> = match self
                .run(
                    CHUNKS
                        .key(&fk.m)
                        .key(&fk.h)
                        .arg(manifest.digest().as_bytes().as_slice())
                        .arg(&keys.id)
                        .arg(add_set.to_bitmap())
                        .arg(remove_set.to_bitmap()),
                )
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    if added {
                        self.undo_join(&keys, name).await;
                    }
                    return Err(e);
                }
            };
            match out.first().map(String::as_str) {
                Some("ok") => {
                    let held: u32 = out[1].parse().map_err(|_| corrupt("count"))?;
                    let since = out.get(2).cloned().unwrap_or_default();
                    self.orphaned(&fk, &since).await?;
                    if held == 0 && manifest.chunk_count() > 0 {
                        self.query::<i64>(redis::cmd("SREM").arg(&keys.f).arg(name.as_str()))
                            .await?;
                    }
                    return Ok(held);
                }
                Some("stale") if attempt == 0 => {
                    // Forgotten and registered again with other content:
                    // check the ranges against the new manifest.
                    self.forget_cached(name);
                    if added {
                        self.undo_join(&keys, name).await;
                    }
                }
                _ => {
                    if added {
                        self.undo_join(&keys, name).await;
                    }
                    return Err(RegistryError::UnknownFile(name.clone()).into());
                }
            }
        }
        unreachable!("the loop returns")
    }

    async fn heartbeat(&self, cred: Credentials) -> Result<(), ServiceError> {
        let keys = PeerKeys::new(cred.peer);
        let why: String = self
            .run(
                HEARTBEAT
                    .key(&keys.s)
                    .key(&keys.l)
                    .arg(cred.token.as_bytes().as_slice())
                    .arg(self.ttl_ms()),
            )
            .await?;
        match why.as_str() {
            "ok" => Ok(()),
            other => Err(self.refused(&cred, other).await),
        }
    }

    async fn leave(&self, cred: Credentials) -> Result<(), ServiceError> {
        let keys = PeerKeys::new(cred.peer);
        let out: Value = self
            .run(
                LEAVE
                    .key(&keys.s)
                    .key(&keys.l)
                    .key(&keys.f)
                    .key(&keys.d)
                    .arg(cred.token.as_bytes().as_slice())
                    .arg(&keys.id),
            )
            .await?;
        let (status, claimed): (String, Option<Claimed>) = match &out {
            Value::Array(items) if items.len() == 2 => {
                let status = String::from_redis_value_ref(&items[0]).map_err(store_err)?;
                let claimed = Claimed::from_redis_value_ref(&items[1]).map_err(store_err)?;
                (status, Some(claimed))
            }
            Value::Array(items) if items.len() == 1 => (
                String::from_redis_value_ref(&items[0]).map_err(store_err)?,
                None,
            ),
            _ => return Err(corrupt("answer to Leave")),
        };
        match (status.as_str(), claimed) {
            ("ok", Some(c)) => self.clean_up(vec![c]).await,
            (why, _) => Err(self.refused(&cred, why).await),
        }
    }

    async fn locate(&self, name: &FileName, want: usize) -> Result<Located, ServiceError> {
        let (manifest, live) = self
            .view(name)
            .await?
            .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?;
        let mut counts = vec![0u32; manifest.chunk_count() as usize];
        for h in &live {
            h.chunks.add_to_counts(&mut counts);
        }
        let holder_count = live.len() as u32;
        let cap = rules::cap(want, self.limits.locate_holders);
        Ok(Located {
            manifest,
            holders: rules::pick_holders(live, cap, |h| h.chunks.as_ref(), |h| h.confirmed),
            chunk_holders: counts.iter().map(|&c| c.min(255) as u8).collect(),
            holder_count,
        })
    }

    async fn list(&self, after: Option<&FileName>, limit: usize) -> Result<Page, ServiceError> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let names: Vec<String> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(FILES)
                    .arg(start)
                    .arg("+")
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit.saturating_add(1)),
            )
            .await?;
        let more = names.len() > limit;
        let names: Vec<FileName> = names
            .into_iter()
            .take(limit)
            .filter_map(|n| FileName::new(n).ok())
            .collect();
        let views = join_all(names.iter().map(|n| self.view(n))).await;
        let mut files = Vec::new();
        for view in views {
            // Forgotten since it was listed: left out.
            let Some((manifest, live)) = view? else {
                continue;
            };
            files.push(FileView {
                manifest,
                holder_count: live.len() as u32,
                holders: rules::pick_holders(
                    live,
                    self.limits.list_holders,
                    |h| h.chunks.as_ref(),
                    |h| h.confirmed,
                ),
            });
        }
        let next = match more {
            true => files.last().map(|f| f.manifest.name().clone()),
            false => None,
        };
        Ok(Page { files, next })
    }

    async fn sweep(&self) -> Result<usize, ServiceError> {
        let mut tasks = tokio::task::JoinSet::new();
        for bucket in 0..BUCKETS {
            let mut conn = self.conn.clone();
            tasks.spawn(async move {
                let d = format!("{}d", bucket_prefix(bucket));
                CLAIM
                    .key(d)
                    .arg(CLAIM_BATCH)
                    .invoke_async::<Vec<Claimed>>(&mut conn)
                    .await
            });
        }
        let mut ended = Vec::new();
        let mut failed = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(c)) => ended.extend(c),
                Ok(Err(e)) => failed = Some(store_err(e)),
                Err(_) => {}
            }
        }
        let gone = ended.len();
        self.clean_up(ended).await?;
        self.forget().await?;
        let due = {
            let mut last = self.scrubbed.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= SCRUB_PERIOD;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            let dropped = self.scrub().await?;
            if dropped > 0 {
                tracing::info!(
                    records = dropped,
                    "dropped holder records of ended sessions"
                );
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(gone),
        }
    }

    async fn stats(&self) -> Result<Stats, ServiceError> {
        let files: usize = self.query(redis::cmd("ZCARD").arg(FILES)).await?;
        let cards: Vec<redis::Cmd> = (0..BUCKETS)
            .map(|b| {
                redis::cmd("ZCARD")
                    .arg(format!("{}d", bucket_prefix(b)))
                    .clone()
            })
            .collect();
        let mut peers = 0;
        for n in join_all(cards.iter().map(|c| self.query::<usize>(c))).await {
            peers += n?;
        }
        Ok(Stats {
            peers,
            files,
            holdings: 0,
            catalog_bytes: 0,
        })
    }

    async fn checkpoint(&self) -> Result<(), ServiceError> {
        // Redis's own persistence decides what survives it.
        Ok(())
    }

    fn broken(&self) -> CancellationToken {
        self.broken.clone()
    }
}

impl RedisCatalog {
    /// Takes `name` back out of the peer's file set after a refused
    /// RegisterChunk added it (best effort: a stray name only counts
    /// against the peer's quota until its session ends).
    /// Drops every holder record whose session is no longer live, file by
    /// file; returns how many. Such records are left by a sweeper that died
    /// between claiming a session and dropping its holdings, or by a
    /// RegisterChunk whose session was claimed between its two round trips.
    /// They are never listed (their liveness key is gone), but they hold
    /// memory and keep their file from being orphaned. Dropping a record a
    /// claim is about to drop too is harmless (the drop is idempotent).
    /// Reads every holder record: the sweeper runs it every five minutes.
    pub async fn scrub(&self) -> Result<usize, ServiceError> {
        let mut start = "-".to_owned();
        let mut dropped = 0;
        loop {
            let names: Vec<String> = self
                .query(
                    redis::cmd("ZRANGE")
                        .arg(FILES)
                        .arg(&start)
                        .arg("+")
                        .arg("BYLEX")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(CLAIM_BATCH),
                )
                .await?;
            let Some(last) = names.last() else {
                return Ok(dropped);
            };
            start = format!("({last}");
            for name in &names {
                let keys = FileKeys::new(&FileName::new(name.as_str()).map_err(store_err)?);
                let ids: Vec<String> = self.query(redis::cmd("HKEYS").arg(&keys.h)).await?;
                let peers: Vec<PeerKeys> = ids
                    .iter()
                    .filter_map(|id| PeerId::parse(id).ok())
                    .map(PeerKeys::new)
                    .collect();
                if peers.is_empty() {
                    continue;
                }
                let mut mget = redis::cmd("MGET");
                for p in &peers {
                    mget.arg(&p.l);
                }
                let live: Vec<Option<String>> = self.query(&mget).await?;
                // Ids are never reused: a liveness key gone never comes back.
                for (p, _) in peers.iter().zip(live).filter(|(_, l)| l.is_none()) {
                    drop_holding(self.conn.clone(), name, &p.id)
                        .await
                        .map_err(store_err)?;
                    dropped += 1;
                }
            }
        }
    }

    async fn undo_join(&self, keys: &PeerKeys, name: &FileName) {
        let _ = self
            .query::<i64>(redis::cmd("SREM").arg(&keys.f).arg(name.as_str()))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_a_file_in_one_slot_and_a_peer_in_its_bucket() {
        // A name with braces still gets one tag of its own: 16 hex digits.
        let f = FileKeys::new(&FileName::new("a{b}c").unwrap());
        assert_eq!(f.tag.len(), 16);
        assert!(f.tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(f.m, format!("hv:f:{{{}}}:m", f.tag));
        assert_eq!(f.h, format!("hv:f:{{{}}}:h", f.tag));
        let p = PeerKeys::new(PeerId::from_u64(0x21 + BUCKETS * 7));
        for k in [&p.s, &p.l, &p.f, &p.d] {
            assert!(k.starts_with("hv:p:{21}:"), "{k}");
        }
    }

    #[test]
    fn the_logged_url_has_no_credentials() {
        assert_eq!(redacted("redis://u:secret@h:6379"), "redis://h:6379");
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redacted("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
    }
}
