//! What hive's daemons run on, beside the core's domain types: gRPC
//! transport and its tuning, the introspection every port serves, metrics,
//! logging, background tasks and shutdown. `peerctl` uses the client side.
//!
//! # Layout
//! - [`grpc`]: transport settings and the reflection and health services every
//!   hive gRPC port serves; accepted connections with a handshake timeout
//!   (`grpc/conn.rs`) and small answers cut into small HTTP/2 frames
//!   (`grpc/frames.rs`).
//! - [`metrics`]: Prometheus metrics: per-RPC counts and latencies, and `/metrics` over HTTP.
//! - [`telemetry`]: the daemons' logging set-up, shared operator flags, and
//!   the message for a port that cannot be bound.
//! - [`task`]: spawning named background tasks whose failures are logged.
//! - [`shutdown`]: the daemons' Ctrl-C / SIGTERM handling.
//! - [`tls`]: `--tls-cert`/`--tls-key`/`--tls-ca`, TLS 1.3 with a swarm CA
//!   on every port and dial; [`tls::certs`] makes the CA and members' certificates.
//! - [`config_file`]: `--config PATH`, the daemons' settings from a TOML file
//!   (flags and `HIVE_*` variables override it).
//! - [`web`]: presentation shared by the peer's and the tracker's web pages.
#![forbid(unsafe_code)]

pub mod config_file;
pub mod grpc;
pub mod metrics;
pub mod shutdown;
pub mod task;
pub mod telemetry;
pub mod tls;
pub mod web;
