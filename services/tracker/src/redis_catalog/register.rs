//! Registration: Register, RegisterChunk, Withdraw, and opening a session.

use std::{
    collections::{HashMap, HashSet},
    ops::RangeInclusive,
};

use futures_util::future::join_all;
use hive::{ChunkSet, Digest, FileName, chunk::ChunkError, pb::types};
use prost::Message;

use super::{
    RedisCatalog, corrupt,
    keys::{FILES, FileKeys, PeerKeys, charge_key},
    layout_of,
    scripts::*,
};
use crate::{
    auth::PeerId,
    error::ServiceError,
    registry::{Caller, Credentials, Offer, Registered, RegistryError, rules},
};

impl RedisCatalog {
    /// The caller holds `name` no longer: its session checked (no file
    /// joins its set), then its holding dropped as a session's end drops
    /// them, and the name taken out of its set.
    pub(super) async fn withdraw_impl(
        &self,
        cred: Credentials,
        name: &FileName,
    ) -> Result<(), ServiceError> {
        let keys = PeerKeys::new(cred.peer);
        let why: String = self
            .run(
                CHUNK_AUTH
                    .key(&keys.s)
                    .key(&keys.l)
                    .key(&keys.f)
                    .arg(cred.token.as_bytes().as_slice())
                    .arg("")
                    .arg("0")
                    .arg(self.limits.max_files_per_peer),
            )
            .await?;
        if why != "ok" {
            return Err(self.refused(&cred, &why).await);
        }
        if self.manifest(name).await?.is_none() {
            return Err(RegistryError::UnknownFile(name.clone()).into());
        }
        let fk = FileKeys::new(name);
        let since: String = self.run(DROP.key(&fk.m).key(&fk.x).arg(&keys.id)).await?;
        self.orphaned(&fk, &since).await?;
        self.query::<i64>(redis::cmd("SREM").arg(&keys.f).arg(name.as_str()))
            .await?;
        Ok(())
    }

    pub(super) async fn register_impl(
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
        // The caller first, as the embedded catalog checks it first: its
        // session, or on a TLS tracker the address a new one takes.
        let (session, seen) = match &caller {
            Caller::Session(cred) => (Some(self.session_of(cred, &distinct).await?), None),
            Caller::New {
                addr,
                member: Some(member),
            } => (None, Some(self.address_for(addr, member).await?)),
            Caller::New { member: None, .. } => (None, None),
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
        let host = match (&session, &caller) {
            (Some((_, addr, _)), _) | (None, Caller::New { addr, .. }) => {
                rules::charged_host(addr).to_owned()
            }
            (None, Caller::Session(_)) => unreachable!("a session is checked first"),
        };
        if new_names > 0 {
            let new_bytes = offers
                .iter()
                .filter(|o| !registered.contains_key(o.manifest.name()))
                .map(|o| (o.manifest.name(), rules::manifest_bytes(&o.manifest)))
                .collect::<HashMap<_, _>>()
                .values()
                .sum();
            let usage = self.usage(&host).await?;
            rules::check_address_quota(&self.limits, usage, new_names as u64, new_bytes)?;
        }

        let (peer, token, addr) = match (session, caller) {
            (Some((peer, addr, _)), _) => (peer, None, addr),
            (None, Caller::New { addr, member }) => {
                let (peer, token) = self.open_session(&addr, member.as_ref(), seen).await?;
                (peer, Some(token), addr)
            }
            (None, Caller::Session(_)) => unreachable!("checked above"),
        };
        if let Err(e) = self.apply(peer, &host, offers).await {
            // A racing Register bound a name first, or Redis failed: a new
            // session whose token the caller never gets is ended at once.
            if token.is_some() {
                self.end_new_session(peer).await;
            }
            return Err(e);
        }
        Ok(Registered { peer, token, addr })
    }

    /// The session `cred` is for, checked: its id, its address, and how
    /// many files it would hold with the `distinct` names offered.
    async fn session_of(
        &self,
        cred: &Credentials,
        distinct: &[FileName],
    ) -> Result<(PeerId, String, usize), ServiceError> {
        let keys = PeerKeys::new(cred.peer);
        let mut inv = SESSION.key(&keys.s);
        inv.key(&keys.l)
            .key(&keys.f)
            .arg(cred.token.as_bytes().as_slice());
        for n in distinct {
            inv.arg(n.as_str());
        }
        let out: Vec<String> = self.run(&inv).await?;
        match out.as_slice() {
            [ok, addr, held, new] if ok == "ok" => {
                let held: usize = held.parse().map_err(|_| corrupt("count"))?;
                let new: usize = new.parse().map_err(|_| corrupt("count"))?;
                Ok((cred.peer, addr.clone(), held + new))
            }
            [why, ..] => Err(self.refused(cred, why).await),
            [] => Err(corrupt("empty answer")),
        }
    }

    /// The chunks the caller now holds, and whether its holding stayed and
    /// only its chunks changed.
    pub(super) async fn register_chunks_impl(
        &self,
        cred: Credentials,
        name: &FileName,
        add: &[RangeInclusive<u32>],
        remove: &[RangeInclusive<u32>],
    ) -> Result<(u32, bool), ServiceError> {
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
            let lists = small_change(&add_set, &remove_set);
            let out: Vec<String> = match self
                .run(
                    CHUNKS
                        .key(&fk.m)
                        .key(&fk.x)
                        .arg(manifest.digest().as_bytes().as_slice())
                        .arg(&keys.id)
                        .arg(add_set.to_bitmap())
                        .arg(remove_set.to_bitmap())
                        .arg(&lists.0)
                        .arg(&lists.1),
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
                    let in_place = out.get(3).is_some_and(|s| s == "in place");
                    return Ok((held, in_place));
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

    /// Registers offers for `peer` after every check passed: its file set
    /// first (so every holding can be found from the session), then each
    /// file in order, a new one charged to `host`.
    pub(super) async fn apply(
        &self,
        peer: PeerId,
        host: &str,
        offers: Vec<Offer>,
    ) -> Result<(), ServiceError> {
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
            let cost = rules::manifest_bytes(manifest);
            let out: Vec<Vec<u8>> = self
                .run(
                    PUT.key(&fk.m)
                        .key(&fk.x)
                        .arg(manifest.name().as_str())
                        .arg(wire)
                        .arg(manifest.digest().as_bytes().as_slice())
                        .arg(layout_of(manifest))
                        .arg(&keys.id)
                        .arg(chunks.to_bitmap())
                        .arg(if dropped { "1" } else { "0" })
                        .arg(host)
                        .arg(cost),
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
                self.charge(host, 1, cost.try_into().unwrap_or(i64::MAX))
                    .await?;
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

    /// What `host` has put in the catalog.
    async fn usage(&self, host: &str) -> Result<rules::Usage, ServiceError> {
        let (files, bytes): (Option<u64>, Option<u64>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(charge_key(host))
                    .arg("files")
                    .arg("bytes"),
            )
            .await?;
        Ok(rules::Usage {
            files: files.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        })
    }

    /// Adds `files` names of `bytes` bytes (negative: takes them off) to
    /// what `host` has put in the catalog.
    pub(super) async fn charge(
        &self,
        host: &str,
        files: i64,
        bytes: i64,
    ) -> Result<(), ServiceError> {
        self.run::<i64>(CHARGE.key(charge_key(host)).arg(files).arg(bytes))
            .await
            .map(drop)
    }

    /// Takes `name` back out of the peer's file set after a refused
    /// RegisterChunk added it (best effort: a stray name only counts
    /// against the peer's quota until its session ends).
    async fn undo_join(&self, keys: &PeerKeys, name: &FileName) {
        let _ = self
            .query::<i64>(redis::cmd("SREM").arg(&keys.f).arg(name.as_str()))
            .await;
    }
}

/// Chunks a RegisterChunk may change bit by bit (see [`CHUNKS`]); past it
/// the script combines whole bitmaps.
const SMALL_CHANGE: u32 = 64;

/// The chunk positions of `add` and `remove` as the script's lists
/// (decimal, space-separated) when the change is small and the two are
/// disjoint; else two empty strings.
fn small_change(add: &ChunkSet, remove: &ChunkSet) -> (String, String) {
    let small = add.len() + remove.len() <= SMALL_CHANGE;
    if !small || add.iter().any(|c| remove.contains(c)) {
        return (String::new(), String::new());
    }
    let list = |set: &ChunkSet| {
        set.iter()
            .map(|c| c.position().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    (list(add), list(remove))
}
