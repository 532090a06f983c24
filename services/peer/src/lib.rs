//! hive's peer daemon: shares the files of its directory, serves their
//! chunks to other peers, downloads files from the swarm, and answers
//! `peerctl` on an owner-only control socket.
//!
//! # Layout
//! - [`daemon`]: [`serve`]: the wiring of every part below, and the one
//!   shutdown path.
//! - [`access`]: who may use the Control service: its owner-only Unix
//!   socket, and the cookie TCP control needs.
//! - [`config`]: flags and defaults.
//! - [`holdings`]: what this peer holds, by name: what GetChunk may serve,
//!   and the one place a chunk is gained or lost (each change published).
//! - [`scan`]: finding and hashing shared files, with a hash cache.
//! - [`server`]: the public Peer service (GetChunk): fair upload slots,
//!   the drain rule, the upload cap.
//! - [`tracker_link`]: the session with the tracker (register, heartbeat,
//!   batched chunk registration, leave).
//! - [`fetch`]: downloads: the swarm engine, single chunks, part files and
//!   resume.
//! - [`transfers`]: the transfers the daemon owns (queued, running,
//!   stalled, paused, done, failed), their limit, and their table on disk.
//! - [`pool`]: one connection per holder.
//! - [`share`]: sharing files by path: hash, check, register.
//! - [`watch`]: the watcher: new files in `--dir` shared, deleted or
//!   changed ones withdrawn.
//! - [`status`]: a snapshot of the daemon for `peerctl status`.
//! - [`control`]: the local Control service: each handler converts the
//!   request, calls one operation above and maps its answer.
//! - [`metrics`]: counters of what moved.
//! - [`throttle`]: the upload and download rate caps (token buckets).
//! - [`web`]: the web UI and its HTTP/JSON API (`--web`), on the Control
//!   service's operations.
//! - [`error`]: the daemon's errors and their gRPC status codes.

#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod fetch;
pub mod holdings;
pub mod json;
pub mod metrics;
pub mod pool;
pub mod scan;
pub mod server;
pub mod share;
pub mod status;
pub mod throttle;
pub mod tracker_link;
pub mod transfers;
pub mod watch;
pub mod web;

pub use config::Config;
pub use daemon::{ControlListeners, Listeners, serve};
pub use error::PeerError;
