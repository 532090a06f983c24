//! hive's tracker: the one central part. It keeps the catalog (manifests, and
//! which peer holds which chunks), answers the seed's messages over gRPC, and
//! forgets peers that stop heartbeating.
//!
//! # Layout
//! - [`config`]: flags and their defaults.
//! - [`daemon`]: [`open`] the catalog and [`serve`] it: the wiring, the
//!   sweeper, metrics and the one shutdown path.
//! - [`auth`]: peer ids and session tokens.
//! - [`registry`]: the catalog and every rule for changing it (no I/O).
//! - [`store`]: the [`store::Store`] trait and the in-memory store.
//! - [`journal`]: the log every change is written to, in order, before its
//!   request is answered, and its checkpoints into the store.
//! - [`redb_store`]: the durable store, on redb; [`codec`]: the bytes on disk.
//! - [`limits`]: request rate limits (token buckets per IP and per session).
//! - [`catalog`]: [`Catalog`], the catalog's operations as the service and
//!   the sweeper call them, whatever keeps the catalog.
//! - [`state`]: [`Tracker`], the embedded catalog: registry and journal.
//! - [`redis_catalog`]: the shared catalog, on Redis or Redis Cluster, for
//!   several tracker replicas.
//! - [`service`]: the gRPC handlers; [`error`] decides their status codes.
//! - [`web`]: the read-only swarm page and its JSON API (`--web`), over the
//!   same catalog calls.

#![forbid(unsafe_code)]

pub mod auth;
pub mod catalog;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod error;
pub mod journal;
pub mod limits;
pub mod redb_store;
pub mod redis_catalog;
pub mod registry;
pub mod service;
pub mod state;
pub mod store;
pub mod web;

pub use catalog::{Catalog, SharedCatalog};
pub use config::Config;
pub use daemon::{ServeError, connect, open, serve, serve_with_web};
pub use state::Tracker;
