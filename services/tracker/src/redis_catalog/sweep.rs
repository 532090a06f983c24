//! Sweeping: ended sessions, orphaned files, and the scrub.

use std::time::{Duration, Instant};

use hive::FileName;
use redis::RedisResult;

use super::{
    BUCKETS, Claimed, RedisCatalog,
    conn::Conn,
    keys::{FILES, FileKeys, ORPHANS, PeerKeys, addr_key, bucket_prefix, token_key},
    scripts::*,
    store_err,
};
use crate::{auth::PeerId, error::ServiceError};

/// Sessions one claim script takes from a bucket at a time.
const CLAIM_BATCH: usize = 100;
/// How often a replica's sweeper also scrubs every file's holder records
/// (see [`RedisCatalog::scrub`]).
const SCRUB_PERIOD: Duration = Duration::from_secs(300);

impl RedisCatalog {
    /// Drops every holding of ended sessions and their index entries.
    pub(super) async fn clean_up(&self, ended: Vec<Claimed>) -> Result<(), ServiceError> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut changed = Vec::new();
        for (id, addr, token, files) in ended {
            for name in files {
                changed.extend(FileName::new(name.clone()).ok());
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
        self.answers.forget(&changed);
        result
    }

    /// Forgets files orphaned for `forget_after`, and takes their charges
    /// off the hosts that created them.
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
                .run(FORGET.key(&keys.m).key(&keys.x).arg(after))
                .await?;
            match out.first().map(String::as_str) {
                Some("gone") => {
                    let name = out.get(1).cloned().unwrap_or_default();
                    if let [_, _, host, cost] = out.as_slice()
                        && !host.is_empty()
                    {
                        let cost: i64 = cost.parse().unwrap_or(0);
                        self.charge(host, -1, -cost).await?;
                    }
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
    pub(super) async fn orphaned(&self, keys: &FileKeys, since: &str) -> Result<(), ServiceError> {
        if since.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("ZADD").arg(ORPHANS).arg(since).arg(&keys.tag))
            .await
            .map(drop)
    }

    pub(super) async fn sweep_impl(&self) -> Result<usize, ServiceError> {
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
                let ids: Vec<String> = self.query(redis::cmd("HKEYS").arg(&keys.x)).await?;
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
}

/// Drops `id`'s holding of `name`.
async fn drop_holding(mut conn: Conn, name: &str, id: &str) -> RedisResult<()> {
    let Ok(name) = FileName::new(name) else {
        return Ok(());
    };
    let keys = FileKeys::new(&name);
    let since: String = DROP
        .key(&keys.m)
        .key(&keys.x)
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
