//! The connection: to one primary or to a cluster.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{
    Cmd, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};
use tokio_util::sync::CancellationToken;

use super::{RedisCatalog, store_err};
use crate::{error::ServiceError, registry::Limits};

/// How long one command may take before it fails (and its call with it,
/// UNAVAILABLE): well under the gRPC request timeout, well over a busy
/// server's answer (the client's default of 500 ms is not).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The cluster client's wait before retrying a command whose node failed
/// (each retry first refreshes the slot map when the node is gone): at
/// least this many milliseconds ...
const MIN_RETRY_WAIT_MS: u64 = 10;
/// ... and at most this many (growing 10 × 2^retry ms up to it). The
/// client's own defaults wait at least 1,280 ms between retries, so after
/// a primary's failover a command kept waiting for up to that long after
/// the replica had taken over; with these it sees the new primary within
/// a quarter of a second, at the price of a slot-map read per retry (one
/// `CLUSTER SLOTS`, one at a time) while a failover is under way.
const MAX_RETRY_WAIT_MS: u64 = 250;

/// A connection to one primary or to a cluster; both are multiplexed and
/// cheap to clone.
#[derive(Clone)]
pub(super) enum Conn {
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
                    .min_retry_wait(MIN_RETRY_WAIT_MS)
                    .max_retry_wait(MAX_RETRY_WAIT_MS)
                    .retry_wait_formula(10, 2)
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
            answers: super::answers::Answers::new(Duration::ZERO),
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
}

/// `url` without its user and password, if it has any.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{rest}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
