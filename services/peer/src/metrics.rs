//! What the daemon has moved: counters shared by uploads and downloads,
//! readable by `Status` and exported to Prometheus with `--metrics`.

use std::sync::Arc;

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Default)]
pub struct Counters {
    bytes_served: Counter,
    bytes_fetched: Counter,
    uploads_active: Gauge,
    downloads_active: Gauge,
    strikes: Counter,
    uploads_cut: Counter,
    uploads_refused: Counter,
    uploads_declined: Counter,
    uploads_swapped: Counter,
    max_upload_rate: Gauge,
    max_download_rate: Gauge,
}

/// A moment's reading of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes_served: u64,
    pub bytes_fetched: u64,
    pub uploads_active: u64,
    pub strikes: u64,
    pub uploads_cut: u64,
    pub uploads_refused: u64,
}

impl Counters {
    /// Exposes the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hive_peer_served_bytes",
            "Chunk bytes sent to other peers",
            self.bytes_served.clone(),
        );
        registry.register(
            "hive_peer_fetched_bytes",
            "Chunk bytes received from other peers, rejected data included",
            self.bytes_fetched.clone(),
        );
        registry.register(
            "hive_peer_uploads_active",
            "GetChunk streams being served",
            self.uploads_active.clone(),
        );
        registry.register(
            "hive_peer_downloads_active",
            "Whole-file downloads running",
            self.downloads_active.clone(),
        );
        registry.register(
            "hive_peer_strikes",
            "Bad chunks or false claims received from holders",
            self.strikes.clone(),
        );
        registry.register(
            "hive_peer_uploads_cut",
            "Uploads abandoned because the reader stalled or drained slower than --min-upload-rate",
            self.uploads_cut.clone(),
        );
        registry.register(
            "hive_peer_uploads_refused",
            "GetChunk requests refused for want of an upload slot (RESOURCE_EXHAUSTED)",
            self.uploads_refused.clone(),
        );
        registry.register(
            "hive_peer_uploads_declined",
            "GetChunk requests declined by super-seeding: a chunk of a whole file sent more often than others, asked by a peer that may take another (FAILED_PRECONDITION)",
            self.uploads_declined.clone(),
        );
        registry.register(
            "hive_peer_uploads_swapped",
            "GetChunk requests answered by super-seeding with one of the chunks the requester named instead, sent less than the one it asked for",
            self.uploads_swapped.clone(),
        );
        registry.register(
            "hive_peer_max_upload_rate_bytes",
            "The upload cap in bytes a second (0: none)",
            self.max_upload_rate.clone(),
        );
        registry.register(
            "hive_peer_max_download_rate_bytes",
            "The global download cap in bytes a second (0: none)",
            self.max_download_rate.clone(),
        );
    }

    pub fn add_upload_cut(&self) {
        self.uploads_cut.inc();
    }

    pub fn add_upload_refused(&self) {
        self.uploads_refused.inc();
    }

    pub fn add_upload_declined(&self) {
        self.uploads_declined.inc();
    }

    pub fn add_upload_swapped(&self) {
        self.uploads_swapped.inc();
    }

    /// Publishes the rate caps now in force.
    pub fn set_limits(&self, upload: u64, download: u64) {
        self.max_upload_rate
            .set(i64::try_from(upload).unwrap_or(i64::MAX));
        self.max_download_rate
            .set(i64::try_from(download).unwrap_or(i64::MAX));
    }

    pub fn add_served(&self, n: u64) {
        self.bytes_served.inc_by(n);
    }

    pub fn add_fetched(&self, n: u64) {
        self.bytes_fetched.inc_by(n);
    }

    pub fn add_strike(&self) {
        self.strikes.inc();
    }

    /// Counts an upload as active until the guard drops.
    pub fn upload(self: &Arc<Self>) -> ActiveGuard {
        self.uploads_active.inc();
        ActiveGuard(self.uploads_active.clone())
    }

    /// Counts a download as running until the guard drops.
    pub fn download(&self) -> ActiveGuard {
        self.downloads_active.inc();
        ActiveGuard(self.downloads_active.clone())
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bytes_served: self.bytes_served.get(),
            bytes_fetched: self.bytes_fetched.get(),
            uploads_active: self.uploads_active.get().max(0) as u64,
            strikes: self.strikes.get(),
            uploads_cut: self.uploads_cut.get(),
            uploads_refused: self.uploads_refused.get(),
        }
    }
}

/// Decrements a gauge when dropped.
pub struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
