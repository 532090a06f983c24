//! hive's core: what the tracker, the peer daemon and `peerctl` agree on,
//! with no transport, HTTP or CLI code (that is `hive-runtime`'s).
//!
//! # Layout
//! - [`pb`]: the generated proto types and gRPC stubs (without transport),
//!   and the descriptor set that server reflection serves.
//! - [`name`]: [`FileName`], the validated name a file is known by.
//! - [`chunk`]: chunk sizes, counts and byte ranges ([`Layout`], [`ChunkIndex`]).
//! - [`chunkset`]: [`ChunkSet`], a bitmap of chunks held.
//! - [`digest`]: BLAKE3 digests of chunks and files, and hashing a file on disk.
//! - [`manifest`]: [`Manifest`], a file's name, layout and digests, always consistent.
//! - [`wire`]: conversions between the stubs and the domain types; bad input
//!   becomes a [`wire::WireError`] (INVALID_ARGUMENT at the edge).
#![forbid(unsafe_code)]

pub mod chunk;
pub mod chunkset;
pub mod digest;
pub mod manifest;
pub mod name;
pub mod pb;
pub mod wire;

pub use chunk::{ChunkIndex, ChunkSize, Layout};
pub use chunkset::ChunkSet;
pub use digest::Digest;
pub use manifest::Manifest;
pub use name::FileName;
