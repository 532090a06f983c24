//! hive's shared domain code: what the tracker, the peer daemon and `peerctl`
//! agree on.
//!
//! # Layout
//! - [`pb`]: the generated gRPC stubs, and nothing else.
//! - [`metrics`]: Prometheus metrics: per-RPC counts and latencies, and `/metrics` over HTTP.
//! - [`name`]: [`FileName`], the validated name a file is known by.
//! - [`chunk`]: chunk sizes, counts and byte ranges ([`Layout`], [`ChunkIndex`]).
//! - [`chunkset`]: [`ChunkSet`], a bitmap of chunks held.
//! - [`digest`]: BLAKE3 digests of chunks and files, and hashing a file on disk.
//! - [`manifest`]: [`Manifest`], a file's name, layout and digests, always consistent.
//! - [`wire`]: conversions between the stubs and the domain types; bad input
//!   becomes a [`wire::WireError`] (INVALID_ARGUMENT at the edge).
//! - [`shutdown`]: the daemons' Ctrl-C / SIGTERM handling.
//! - [`task`]: spawning named background tasks whose failures are logged.
//! - [`telemetry`]: the daemons' logging set-up.
//! - [`config_file`]: `--config PATH`, the daemons' settings from a TOML file.
//! - [`grpc`]: transport settings and the reflection and health services every
//!   hive gRPC port serves.
#![forbid(unsafe_code)]

pub mod chunk;
pub mod chunkset;
pub mod config_file;
pub mod digest;
pub mod grpc;
pub mod manifest;
pub mod metrics;
pub mod name;
pub mod pb;
pub mod shutdown;
pub mod task;
pub mod telemetry;
pub mod wire;

pub use chunk::{ChunkIndex, ChunkSize, Layout};
pub use chunkset::ChunkSet;
pub use digest::Digest;
pub use manifest::Manifest;
pub use name::FileName;
