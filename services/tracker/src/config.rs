//! The tracker's settings: clap flags, each with an `HIVE_*` environment twin.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    journal::{self, Fsync},
    registry::Limits,
};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Directory for the tracker's catalog (created if missing).
    #[arg(long, env = "HIVE_DATA_DIR", default_value = "hive-tracker")]
    pub data_dir: PathBuf,

    /// Keep the catalog in a shared store instead, so that several trackers
    /// serve one swarm: `redis://HOST:PORT` or `redis+unix:///PATH` for one
    /// Redis primary, `redis-cluster://HOST:PORT,HOST:PORT,...` for a Redis
    /// Cluster. --data-dir, --in-memory, --fsync and --max-catalog-mib then
    /// do not apply (Redis's own persistence and maxmemory do).
    #[arg(long, env = "HIVE_STORE")]
    pub store: Option<String>,

    /// Keep the catalog in memory only: everything is lost when the tracker stops.
    #[arg(long, env = "HIVE_IN_MEMORY")]
    pub in_memory: bool,

    /// When an acknowledged change is on disk. periodic: written to the
    /// journal before the answer (survives a crash or kill -9 of the
    /// tracker) and fsynced at each checkpoint (a power cut loses up to one
    /// --checkpoint-interval). always: each answer also waits for an fsync
    /// of the journal (survives power cuts; slower).
    #[arg(long, env = "HIVE_FSYNC", value_enum, default_value = "periodic")]
    pub fsync: Fsync,

    /// How often the journal is folded into the catalog's database.
    #[arg(long, env = "HIVE_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,

    /// How often peers are told to heartbeat.
    #[arg(long, env = "HIVE_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// A peer silent for this long is dropped with all it holds (3x the
    /// heartbeat interval is a good choice).
    #[arg(long, env = "HIVE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// A file nobody has held for this long is forgotten, freeing its name
    /// and its charge against the address that registered it: the grace in
    /// which its holders may come back (after a restart of the tracker too).
    #[arg(long, env = "HIVE_FORGET_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub forget_after: Duration,

    /// Tell other peers to dial the host a peer advertises, instead of the
    /// address its request came from. Needed behind NAT or proxies; it lets
    /// any caller point downloaders at any host, so only use it on networks
    /// you trust.
    #[arg(long, env = "HIVE_TRUST_ADVERTISE")]
    pub trust_advertise: bool,

    /// Most files one peer may hold.
    #[arg(long, env = "HIVE_MAX_FILES_PER_PEER", default_value_t = 10_000)]
    pub max_files_per_peer: usize,

    /// Most holders one Locate answer lists (chunk counts cover them all).
    #[arg(long, env = "HIVE_LOCATE_HOLDERS", default_value_t = 50)]
    pub locate_holders: usize,

    /// With --store: how long a replica reuses a file's Locate answer (0s:
    /// never). Changes made through another replica show up to this much
    /// later; its own changes show at once.
    #[arg(long, env = "HIVE_LOCATE_CACHE", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub locate_cache: Duration,

    /// Requests per second from one source address (0: no limit). Beyond
    /// it, and the burst, requests get RESOURCE_EXHAUSTED.
    #[arg(long, env = "HIVE_IP_RATE", default_value_t = 1000.0)]
    pub ip_rate: f64,

    /// Requests one source address may send in a burst.
    #[arg(long, env = "HIVE_IP_BURST", default_value_t = 2000.0)]
    pub ip_burst: f64,

    /// Requests per second from one peer session (0: no limit).
    #[arg(long, env = "HIVE_PEER_RATE", default_value_t = 50.0)]
    pub peer_rate: f64,

    /// Requests one peer session may send in a burst.
    #[arg(long, env = "HIVE_PEER_BURST", default_value_t = 100.0)]
    pub peer_burst: f64,

    /// Most files the tracker keeps in all; new names beyond it are refused.
    #[arg(long, env = "HIVE_MAX_FILES", default_value_t = 1_000_000)]
    pub max_files: usize,

    /// Most memory, in MiB, the catalog's manifests and chunk sets may take
    /// (32 bytes per chunk digest, a bitmap per holding, and their entries).
    /// Registrations past it get RESOURCE_EXHAUSTED; it is what bounds the
    /// tracker's memory, as a file may have up to 16,384 chunks. It also
    /// bounds restart time (the whole catalog is loaded): full, 128 MiB
    /// restarted in 0.7 s from a cold page cache and 0.5 s warm (release
    /// build, 2 cores), 256 MiB in 1.7 s and 1.3 s with cold runs up to
    /// 3 s, so the default is 128 MiB (about 225,000 small files or 3,500
    /// of 1,024 chunks; about 170 MiB of RSS when full). Raise it where
    /// restart time matters less.
    #[arg(long, env = "HIVE_MAX_CATALOG_MIB", default_value_t = 128)]
    pub max_catalog_mib: u64,

    /// Most names one source address may have in the catalog: the names its
    /// sessions created, until each is released (--forget-after once nobody
    /// holds it). Past it, new names from that address get
    /// RESOURCE_EXHAUSTED; other addresses are unaffected.
    #[arg(long, env = "HIVE_MAX_FILES_PER_ADDRESS", default_value_t = 10_000)]
    pub max_files_per_address: usize,

    /// Most MiB the manifests of those names may take (as --max-catalog-mib
    /// counts them: 36 bytes a chunk, 590 KiB for a 16,384-chunk file).
    /// Applies on every store, Redis too.
    #[arg(long, env = "HIVE_MAX_CATALOG_MIB_PER_ADDRESS", default_value_t = 32)]
    pub max_catalog_mib_per_address: u64,

    /// Largest request the tracker decodes, in bytes.
    #[arg(long, env = "HIVE_MAX_MESSAGE", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Connections, streams and unread answers one client may hold.
    #[command(flatten)]
    pub transport: hive_runtime::grpc::Limits,

    /// TLS with a swarm CA (mutual: only members may call).
    #[command(flatten)]
    pub tls: hive_runtime::tls::TlsArgs,

    /// A host name the swarm page (--web) answers to besides IP addresses
    /// and localhost (repeatable, or a comma list): requests naming any
    /// other host get 403, against DNS rebinding.
    #[arg(
        long = "web-allow-host",
        env = "HIVE_WEB_ALLOW_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub web_allow_host: Vec<String>,
}

/// Holders listed per file in ListFiles.
const LIST_HOLDERS: usize = 10;

impl Config {
    pub fn rate_limiter(&self) -> crate::limits::RateLimiter {
        use crate::limits::{Rate, RateLimiter};
        RateLimiter::new(
            Rate {
                per_sec: self.ip_rate,
                burst: self.ip_burst.max(1.0),
            },
            Rate {
                per_sec: self.peer_rate,
                burst: self.peer_burst.max(1.0),
            },
        )
    }

    pub fn durability(&self) -> journal::Options {
        journal::Options {
            fsync: self.fsync,
            checkpoint_interval: self.checkpoint_interval,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_files_per_peer: self.max_files_per_peer,
            max_files: self.max_files,
            max_catalog_bytes: self.max_catalog_mib.saturating_mul(1 << 20),
            max_files_per_address: self.max_files_per_address,
            max_bytes_per_address: self.max_catalog_mib_per_address.saturating_mul(1 << 20),
            locate_holders: self.locate_holders,
            list_holders: LIST_HOLDERS.min(self.locate_holders),
            ttl: self.ttl,
            forget_after: self.forget_after,
        }
    }

    /// Refuses settings that cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.ttl < self.heartbeat_interval {
            return Err(format!(
                "--ttl ({:?}) must be at least --heartbeat-interval ({:?})",
                self.ttl, self.heartbeat_interval
            ));
        }
        for (flag, v) in [
            ("--ip-rate", self.ip_rate),
            ("--ip-burst", self.ip_burst),
            ("--peer-rate", self.peer_rate),
            ("--peer-burst", self.peer_burst),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{flag} must be a number of at least 0"));
            }
        }
        if self.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be above zero".into());
        }
        if self.checkpoint_interval.is_zero() {
            return Err("--checkpoint-interval must be above zero".into());
        }
        if self.locate_holders == 0 {
            return Err("--locate-holders must be at least 1".into());
        }
        self.transport.check()
    }
}

/// The defaults are exactly what the command line gives with no flags.
impl Default for Config {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        Defaults::parse_from(["tracker"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert_eq!(Config::default().check(), Ok(()));
        let refused = [
            Config {
                locate_holders: 0,
                ..Config::default()
            },
            Config {
                heartbeat_interval: Duration::ZERO,
                ..Config::default()
            },
            Config {
                checkpoint_interval: Duration::ZERO,
                ..Config::default()
            },
            Config {
                ttl: Duration::from_secs(1),
                heartbeat_interval: Duration::from_secs(2),
                ..Config::default()
            },
            Config {
                peer_rate: -1.0,
                ..Config::default()
            },
        ];
        for config in refused {
            assert!(config.check().is_err(), "{config:?}");
        }
    }
}
