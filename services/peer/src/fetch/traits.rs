//! What the swarm engine needs from the world, as three small traits: where
//! holders come from ([`Locator`]), how one chunk is asked of a holder
//! ([`Holders`]), and where verified chunks go ([`Sink`]). The daemon's
//! implementations are thin adapters in [`super::live`]; the engine's unit
//! tests drive it with fakes.
//!
//! Verification is not part of any trait: [`super::request`] checks every
//! byte a holder sends against the manifest before the sink sees it, whoever
//! implements [`Holders`].

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use hive::{ChunkIndex, FileName, Manifest};
use tokio_stream::Stream;

use tokio::time::Instant;

use super::request::{Ask, Failure};
use crate::{error::PeerError, tracker_link::Located};

/// Where holders and their chunk sets come from: the tracker.
pub trait Locator: Send + Sync + 'static {
    /// Asks again where the file of `known` is, and who holds which chunks.
    fn relocate(
        &self,
        known: Arc<Manifest>,
    ) -> impl Future<Output = Result<Located, PeerError>> + Send + use<Self>;

    /// This peer's own id, if it has a session: it never asks itself.
    fn me(&self) -> Option<String>;
}

/// How one chunk is asked of one holder.
pub trait Holders: Send + Sync + 'static {
    /// A connection to one holder, made once per holder and download.
    type Conn: Clone + Send + Sync + 'static;
    /// The chunk's bytes as they arrive, not yet verified.
    type Frames: Stream<Item = Result<Bytes, Failure>> + Send + Unpin + 'static;

    /// A connection to the holder at `addr` (`host:port`); an error means
    /// the address is unusable.
    fn connect(&self, addr: &str) -> Result<Self::Conn, PeerError>;

    /// Asks `conn` for `ask.chunk` of `name`: the chunk the holder says it
    /// sends (`ask.chunk`, or one of `ask.instead` from a holder that
    /// super-seeds) and its bytes. If `ask.may_decline`, a holder that
    /// super-seeds may answer [`Failure::Declined`] instead.
    fn get_chunk(
        &self,
        conn: &Self::Conn,
        name: &FileName,
        ask: &Ask,
    ) -> impl Future<Output = Result<Answer<Self::Frames>, Failure>> + Send + use<Self>;
}

/// A holder's answer to a chunk request.
pub struct Answer<F> {
    /// The chunk it sends.
    pub chunk: ChunkIndex,
    /// Its bytes as they arrive.
    pub frames: F,
    /// When the holder answered, before the chunk's bytes: the round trip
    /// plus the holder's wait for an upload slot and first read from disk
    /// (for [`super::engine`]'s pace per holder).
    pub at: Instant,
}

/// Where one download's verified chunks go.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Stores a verified chunk, as received in pieces.
    fn write(
        &self,
        chunk: ChunkIndex,
        pieces: Vec<Bytes>,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + use<Self>;

    /// `chunk` is verified and stored: this peer now holds it (serves it and
    /// tells the tracker).
    fn held(&self, chunk: ChunkIndex);

    /// `chunk` was asked of the holder at `from` (for the chunk map).
    fn requested(&self, _chunk: ChunkIndex, _from: &str) {}

    /// The request for `chunk` to `from` ended: `verified`, or failed or
    /// dropped (for the chunk map).
    fn answered(&self, _chunk: ChunkIndex, _from: &str, _verified: bool) {}
}
