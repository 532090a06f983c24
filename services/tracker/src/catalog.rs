//! [`Catalog`]: the catalog's operations, whatever keeps it. The gRPC
//! service and the sweeper only talk to this trait; its homes are the
//! embedded [`crate::Tracker`] (registry in memory, journal, redb: one
//! process) and the shared [`crate::redis_catalog::RedisCatalog`] (Redis or
//! Redis Cluster: any number of tracker replicas). Both apply the same
//! rules, from [`crate::registry::rules`].

use std::{ops::RangeInclusive, sync::Arc};

use hive::FileName;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::PeerId,
    error::ServiceError,
    registry::{Caller, Credentials, HolderPage, Located, Offer, Page, PeerPage, Registered},
    state::Stats,
};

/// A shared handle on some catalog.
pub type SharedCatalog = Arc<dyn Catalog>;

/// The catalog's operations, as the seed's messages need them. Each call is
/// checked before it changes anything; a refused call changes nothing.
#[tonic::async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Seed message 1: starts a session (`Caller::New`) or extends one, with
    /// the files `offers` holds.
    async fn register(
        &self,
        caller: Caller,
        offers: Vec<Offer>,
    ) -> Result<Registered, ServiceError>;

    /// Seed message 4: `add` and `remove` chunks of `name`; returns how many
    /// chunks of it the peer holds afterwards.
    async fn register_chunks(
        &self,
        cred: Credentials,
        name: &FileName,
        add: &[RangeInclusive<u32>],
        remove: &[RangeInclusive<u32>],
    ) -> Result<u32, ServiceError>;

    /// The caller holds `name` no longer: it leaves the file's holders (a
    /// file it does not hold is no change). NOT_FOUND for an unknown file.
    async fn withdraw(&self, cred: Credentials, name: &FileName) -> Result<(), ServiceError>;

    /// Keeps a session alive for one more TTL.
    async fn heartbeat(&self, cred: Credentials) -> Result<(), ServiceError>;

    /// Seed message 6: ends a session; its holdings are gone from the next
    /// answer on.
    async fn leave(&self, cred: Credentials) -> Result<(), ServiceError>;

    /// Seed message 3: a file's manifest, live holders (`want` at most; 0:
    /// the tracker's cap) and per-chunk counts over all live holders.
    async fn locate(&self, name: &FileName, want: usize) -> Result<Located, ServiceError>;

    /// Seed message 2: up to `limit` files after `after`, in name order.
    async fn list(&self, after: Option<&FileName>, limit: usize) -> Result<Page, ServiceError>;

    /// Up to `limit` live peers after `after`, in id order, each with its
    /// first `files` holdings in name order (the web page's peer list).
    async fn peers(
        &self,
        after: Option<PeerId>,
        limit: usize,
        files: usize,
    ) -> Result<PeerPage, ServiceError>;

    /// Up to `limit` live holders of `name` after `after`, in id order, and
    /// how many there are in all. NOT_FOUND for an unknown file.
    async fn holders(
        &self,
        name: &FileName,
        after: Option<PeerId>,
        limit: usize,
    ) -> Result<HolderPage, ServiceError>;

    /// Drops silent peers' holdings and long-orphaned files; returns how many
    /// peers went.
    async fn sweep(&self) -> Result<usize, ServiceError>;

    /// The catalog's sizes, for logs and metrics.
    async fn stats(&self) -> Result<Stats, ServiceError>;

    /// Makes everything answered durable, for a graceful stop.
    async fn checkpoint(&self) -> Result<(), ServiceError>;

    /// Cancelled once the catalog can no longer be kept: the tracker stops.
    fn broken(&self) -> CancellationToken;
}
