//! Connections to holders: one HTTP/2 connection (tonic channel) per
//! holder address, reused by every download and connected lazily.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use hive::pb::peer::peer_client;
use hive_runtime::grpc::{self, MAX_STREAM_MESSAGE};
use tonic::transport::Channel;

use crate::error::PeerError;

/// A client of one holder's Peer service.
pub type PeerClient = peer_client::PeerClient<Channel>;

/// Channels kept at most; past this the pool starts afresh.
const MAX_CHANNELS: usize = 1024;

#[derive(Clone, Default)]
pub struct Pool {
    channels: Arc<Mutex<HashMap<String, PeerClient>>>,
}

impl Pool {
    /// A client for the holder at `addr` (`host:port`). It refuses any
    /// stream message larger than hive's chunk message plus framing.
    pub fn client(&self, addr: &str) -> Result<PeerClient, PeerError> {
        // The map only ever gains or loses whole entries.
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = grpc::endpoint(&grpc::uri_of(addr))
            .map_err(|e| PeerError::Invalid(format!("bad holder address {addr:?}: {e}")))?;
        let client =
            PeerClient::new(endpoint.connect_lazy()).max_decoding_message_size(MAX_STREAM_MESSAGE);
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_owned(), client.clone());
        Ok(client)
    }
}
