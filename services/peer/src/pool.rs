//! Connections to holders: one HTTP/2 connection (tonic channel) per
//! holder address, reused by every download and connected lazily; over TLS
//! when the daemon has it (a holder's address is then dialled as
//! `https://`, and its certificate must name that host).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use hive::pb::peer::peer_client;
use hive_runtime::{
    grpc::{self, MAX_STREAM_MESSAGE},
    tls::Tls,
};
use tonic::transport::Channel;

use crate::error::PeerError;

/// A client of one holder's Peer service.
pub type PeerClient = peer_client::PeerClient<Channel>;

/// Channels kept at most; past this the pool starts afresh.
const MAX_CHANNELS: usize = 1024;

/// Plaintext unless made with [`Pool::new`].
#[derive(Clone, Default)]
pub struct Pool {
    channels: Arc<Mutex<HashMap<String, PeerClient>>>,
    tls: Option<Tls>,
}

impl Pool {
    /// A pool dialling over TLS with `tls`, if set.
    pub fn new(tls: Option<Tls>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// A client for the holder at `addr` (`host:port`). It refuses any
    /// stream message larger than hive's chunk message plus framing.
    pub fn client(&self, addr: &str) -> Result<PeerClient, PeerError> {
        // The map only ever gains or loses whole entries.
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = grpc::dial(addr, self.tls.as_ref())
            .map_err(|e| PeerError::Invalid(format!("bad holder address: {e}")))?;
        let client =
            PeerClient::new(endpoint.connect_lazy()).max_decoding_message_size(MAX_STREAM_MESSAGE);
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_owned(), client.clone());
        Ok(client)
    }
}
