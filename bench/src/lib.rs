//! hive's benchmarks. The binaries measure hive against what a user could
//! pick instead, always in the same run; this library holds what they share.
//!
//! # Layout
//! - [`pb`]: the generated stubs of the benchmark's own proto (bulk stream, ping).
//! - [`baseline`]: the raw tonic services hive is measured against.
//! - [`stats`]: medians, percentiles and the summary tables the scripts print.
//! - [`synth`]: synthetic but valid manifests, for loading a tracker.
//! - [`tracker`]: a tracker client with a session, and the calls the load uses.
//! - [`load`]: `tracker-load`'s measured phases and its report.
//! - [`redis_stats`]: a Redis server's own accounting (commands, CPU, memory).
//! - [`daemon`]: starting hive's daemons and reading what they print and use.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod daemon;
pub mod load;
pub mod redis_stats;
pub mod stats;
pub mod synth;
pub mod tracker;

/// The generated stubs, and nothing else.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("hive.bench.v1");
}
