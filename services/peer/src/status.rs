//! What `peerctl status` shows: a snapshot of the daemon in domain terms
//! (the Control service turns it into its answer).

use std::sync::Arc;

use crate::{
    fetch::Fetcher,
    holdings::{FileView, Holdings},
    metrics::{self, Counters},
    server::Slots,
    throttle::Limits,
    tracker_link::{SessionInfo, TrackerLink},
};

/// The daemon at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Empty while the tracker has not accepted this peer.
    pub session: SessionInfo,
    /// The URL of the tracker replica in use.
    pub tracker: String,
    /// Every tracker replica's URL (--tracker), in the order given.
    pub trackers: Vec<String>,
    /// The Peer service's bound address.
    pub listen: String,
    pub files: Vec<FileView>,
    pub counters: metrics::Snapshot,
    pub downloads_active: usize,
    /// The global caps (upload, download), bytes a second; 0 is none.
    pub limits: (u64, u64),
    pub uploads_queued: usize,
    /// The web UI's URL, if it runs.
    pub web_url: Option<String>,
}

/// What a snapshot is taken of: a cheap, shared handle.
#[derive(Clone)]
pub struct Overview {
    pub link: TrackerLink,
    pub holdings: Holdings,
    pub counters: Arc<Counters>,
    pub fetcher: Fetcher,
    pub listen: String,
    pub limits: Limits,
    pub slots: Slots,
    pub web_url: Option<String>,
}

impl Overview {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            session: self.link.session().unwrap_or_default(),
            tracker: self.link.trackers().current().to_owned(),
            trackers: self.link.trackers().urls(),
            listen: self.listen.clone(),
            files: self.holdings.list(),
            counters: self.counters.snapshot(),
            downloads_active: self.fetcher.active(),
            limits: (self.limits.upload.rate(), self.limits.download.rate()),
            uploads_queued: self.slots.usage().queued,
            web_url: self.web_url.clone(),
        }
    }
}
