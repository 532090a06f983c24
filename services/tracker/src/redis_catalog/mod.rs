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
//! | `hv:f:{T}:m` | hash | name, manifest (protobuf), digest, layout, `rec` (a holder record's size), `orphaned` (ms, when no holder), `host` and `cost` (what it is charged to whom) |
//! | `hv:f:{T}:r` | string | **holder records**, dense, each `rec` bytes (stored in `m`): the peer id (16 hex digits), then its chunks as the wire's `chunk_bitmap` |
//! | `hv:f:{T}:x` | hash | peer id → its record's index (so `HLEN` is the number of holders) |
//! | `hv:f:{T}:c0`, `c1`, … | strings | **per-chunk counts as bit planes**: bit k of plane j (in the bitmaps' bit order) is bit j of chunk k's holder count; as many planes as the largest count needs |
//! | `hv:p:{B}:s:<id>` | hash | addr, token hash (BLAKE3; compared in constant time, in the script), and on a TLS tracker `member`: the SHA-256 of the certificate that registered it, which alone may replace it at its address while it is live |
//! | `hv:p:{B}:l:<id>` | string | addr, with the TTL as its expiry: the session is live while it exists |
//! | `hv:p:{B}:f:<id>` | set | names of the files it holds |
//! | `hv:p:{B}:d` | zset | id → deadline (ms, Redis clock), what sweepers claim from |
//! | `hv:t:<token hash>` | string | id (only to tell PERMISSION_DENIED from UNAUTHENTICATED) |
//! | `hv:a:<addr>` | string | the id of the session at this address (on a TLS tracker moved only if it still names the session checked: `address.rs`) |
//! | `hv:files` | zset | names, score 0, for ListFiles by name |
//! | `hv:orph` | zset | tag → when it lost its last holder, for `forget_after` |
//! | `hv:q:<host>` | hash | `files`, `bytes`: the names the host created that are still there, and their manifests' bytes (per-address quotas) |
//!
//! # Round trips per call
//! Heartbeat 1 (a script: token check, `PEXPIRE` of the liveness key).
//! Locate 2: a script on the file's slot returns its name, digest and
//! holder count, a window of 2 × the holders it may answer of its records
//! (from a random record on, wrapping; all of them when there are no
//! more) and its count planes; then one `MGET` of the liveness keys of the
//! records read. Plus one the first time a replica sees a manifest. None
//! when the replica read the file less than `--locate-cache` ago (100 ms by
//! default; see `answers.rs`): a hot file costs Redis about one Locate per
//! replica and period, however many peers ask.
//! RegisterChunk 2 (a script on the peer's slot: token, files-per-peer
//! quota, the file added to its set; a script on the file's slot: new =
//! (old ∪ add) ∖ remove, the record and the planes changed), plus one to
//! undo the first on a refusal, and one to read the manifest when the
//! replica has not cached it. Register (a rare call): 1 for the session
//! when extending one; 1 for the offered files' digests (in parallel),
//! plus one per manifest the replica has not cached; 1 for the catalog's
//! size when a name is new; 3 for a new session (its keys, the token and
//! the address indexes) plus the eviction of an old one at the same
//! address, and on a TLS tracker 1 more to read the address index first
//! and 1 to check the session it names, if any; 1 for the peer's file set; then 1 per file, in order (and 1 to
//! index a new name). Leave 1 + 1 per file held (in parallel) + 1 (the
//! token and address indexes, in parallel). ListFiles 1, then 2 per file,
//! the files in parallel (every record of each).
//!
//! # Counts
//! Every script that changes a holding (Register's, RegisterChunk's, the
//! drop that Leave, Withdraw, an eviction, the sweep and the scrub run)
//! changes its record and the count planes together, in one script on the
//! file's slot, so they never disagree, on a replica of Redis or after a
//! failover either (a script's effects replicate as one transaction). A
//! RegisterChunk of up to 64 chunks on an existing record changes its bits
//! with one `BITFIELD` (which answers the old ones, so only the chunks that
//! really changed are counted) and carries those chunks up the planes with
//! one `BITFIELD INCRBY u1` per plane while any carries: about three
//! commands for one new chunk, against some forty `BITOP`s on scratch keys
//! before. Larger changes, a new record and the drops change the planes by
//! whole strings: the chunks gained and the chunks lost (two `BITOP`s of
//! the old and new bitmaps) are added to and taken from the planes with a
//! ripple-carry, two or three `BITOP`s per plane while anything carries
//! (about log2(holders) planes for a whole file). Locate decodes the planes and
//! takes off the dead holders it read; a dead holder it did not read (the
//! file has more records than its window) stays counted until a sweep
//! drops it, at most a sweep period (TTL / 10) after it expired.
//! [`RedisCatalog::audit`] recounts a file from its records.
//!
//! # Where this differs from the design study, and why
//! - Record ids are the 16 hex digits of the peer id (the keys' form), not
//!   8 bytes: the scripts compare and write them without converting, for 8
//!   bytes more per record.
//! - A small change carries per chunk with `BITFIELD` (all the carrying
//!   chunks of a plane in one command), not `GETBIT`/`SETBIT` pairs per
//!   chunk and plane; whole bitmaps still go through `BITOP`.
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
//! - On a TLS tracker a new session's address is checked before anything
//!   is written but taken only after its session is opened (`address.rs`):
//!   one that loses a race for the address to another member's live
//!   session is refused after all, its session ended before the answer.
//! - `max_files` and the per-address quotas are checked against counts
//!   read before the writes (two replicas, or two racing Registers from
//!   one address, may both pass them by one call's worth); a host's charge
//!   is added after the file's creation, and taken off by the sweeper that
//!   forgets the file. `--max-catalog-mib` does not apply: Redis's
//!   `maxmemory` (with `noeviction`) bounds the catalog, and a write it
//!   refuses is UNAVAILABLE; `--max-catalog-mib-per-address` does.
//! - Every holder is `confirmed` (there is no restore phase).
//! - A sweeper that dies between claiming a session and dropping its
//!   holdings leaves their records: never listed (their liveness key is
//!   gone), but held in memory, and in the stored counts of files with
//!   more holders than a Locate reads, until a scrub
//!   ([`RedisCatalog::scrub`], every few minutes per replica) drops them;
//!   likewise a RegisterChunk whose session is claimed between its two
//!   round trips. The design study's tombstones and claim-recovery set
//!   would free them sooner, at the price of more keys per write.
//! - Stats count peers and files only (holdings and bytes would need a
//!   scan of every file).

mod address;
mod answers;
mod browse;
mod conn;
mod keys;
mod locate;
mod register;
mod scripts;
mod sweep;

pub use locate::Audit;

use std::{
    collections::HashMap,
    ops::RangeInclusive,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures_util::future::join_all;
use hive::{FileName, Manifest, pb::types};
use prost::Message;
use redis::{Cmd, FromRedisValue, ScriptInvocation, Value};
use tokio_util::sync::CancellationToken;

use self::{
    conn::Conn,
    keys::{FILES, FileKeys, PeerKeys, bucket_prefix, token_key},
    scripts::*,
};
use crate::{
    auth::PeerId,
    catalog::Catalog,
    error::ServiceError,
    registry::{
        Caller, Credentials, FileView, HolderPage, HolderView, Limits, Located, Offer, Page,
        PeerPage, Registered, RegistryError, rules,
    },
    state::Stats,
    store::StoreError,
};

/// Peer buckets: a peer's keys live in bucket `id mod BUCKETS`.
pub const BUCKETS: u64 = 64;
/// Manifests a replica caches; past it the cache starts over.
const MANIFEST_CACHE: usize = 10_000;

pub struct RedisCatalog {
    conn: Conn,
    limits: Limits,
    url: String,
    manifests: Mutex<HashMap<FileName, Arc<Manifest>>>,
    /// Locate's answers, kept for `--locate-cache`.
    answers: answers::Answers,
    /// When this replica last scrubbed.
    scrubbed: Mutex<Instant>,
    broken: CancellationToken,
}

fn store_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Store(StoreError(format!("redis: {e}")))
}

fn corrupt(what: &str) -> ServiceError {
    ServiceError::Store(StoreError(format!("redis: unexpected {what}")))
}

fn layout_of(m: &Manifest) -> String {
    format!("{}:{}", m.chunk_count(), m.layout().chunk_size().get())
}

/// A session ended: its id, address, token hash and files.
type Claimed = (String, String, Vec<u8>, Vec<String>);

impl RedisCatalog {
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

    /// Keeps Locate's answers for `keep` (see `--locate-cache`); zero, as
    /// [`RedisCatalog::connect`] leaves it, keeps none.
    pub fn with_locate_cache(mut self, keep: std::time::Duration) -> Self {
        self.answers = answers::Answers::new(keep);
        self
    }

    /// A file's manifest and all its live holders; `None` if it is
    /// unknown. Reads every holder record (ListFiles).
    async fn view(
        &self,
        name: &FileName,
    ) -> Result<Option<(Arc<Manifest>, Vec<HolderView>)>, ServiceError> {
        Ok(self.sample(name, 0).await?.map(|s| (s.manifest, s.live)))
    }
}

#[tonic::async_trait]
impl Catalog for RedisCatalog {
    async fn register(
        &self,
        caller: Caller,
        offers: Vec<Offer>,
    ) -> Result<Registered, ServiceError> {
        let names: Vec<FileName> = offers.iter().map(|o| o.manifest.name().clone()).collect();
        let registered = self.register_impl(caller, offers).await;
        self.answers.forget(&names);
        registered
    }

    async fn register_chunks(
        &self,
        cred: Credentials,
        name: &FileName,
        add: &[RangeInclusive<u32>],
        remove: &[RangeInclusive<u32>],
    ) -> Result<u32, ServiceError> {
        let held = self.register_chunks_impl(cred, name, add, remove).await;
        // A holder gained or lost shows at once; a holder's chunks within
        // --locate-cache, like any change made through another replica.
        if !matches!(held, Ok((_, true))) {
            self.answers.forget([name]);
        }
        held.map(|(held, _)| held)
    }

    async fn withdraw(&self, cred: Credentials, name: &FileName) -> Result<(), ServiceError> {
        let withdrawn = self.withdraw_impl(cred, name).await;
        self.answers.forget([name]);
        withdrawn
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
        let cap = rules::cap(want, self.limits.locate_holders);
        // Twice the holders it may return, so that coverage has a choice.
        let window = cap.saturating_mul(2).max(1);
        let sample = match self.answers.get(name, window) {
            Some(kept) => kept,
            None => {
                let ticket = self.answers.ticket();
                let sample = Arc::new(
                    self.sample(name, window)
                        .await?
                        .ok_or_else(|| RegistryError::UnknownFile(name.clone()))?,
                );
                self.answers.keep(name, ticket, window, sample.clone());
                sample
            }
        };
        Ok(Located {
            manifest: sample.manifest.clone(),
            holders: rules::pick_holders(
                sample.live.clone(),
                cap,
                |h| h.chunks.as_ref(),
                |h| h.confirmed,
            ),
            chunk_holders: sample.counts.iter().map(|&c| c.min(255) as u8).collect(),
            holder_count: sample.holder_count,
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

    async fn peers(
        &self,
        after: Option<PeerId>,
        limit: usize,
        files: usize,
    ) -> Result<PeerPage, ServiceError> {
        self.peers_impl(after, limit, files).await
    }

    async fn holders(
        &self,
        name: &FileName,
        after: Option<PeerId>,
        limit: usize,
    ) -> Result<HolderPage, ServiceError> {
        self.holders_impl(name, after, limit).await
    }

    async fn sweep(&self) -> Result<usize, ServiceError> {
        self.sweep_impl().await
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
