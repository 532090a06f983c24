//! One chunk from one holder: stream it, verify it as it arrives, and only
//! then hand it to the sink. A holder that sends too much is cut off at the
//! first byte past the chunk; one that sends too little or other bytes is
//! caught by the digest. Nothing unverified ever reaches the sink (the part
//! file), whichever [`Holders`] the bytes came from. A super-seeding holder
//! may send one of the chunks the request named instead of the one it asked
//! for: the chunk is verified against the digest of the chunk it says it
//! sends, which must be one of those named, and the engine is told at once
//! so that it neither asks anyone else for it nor waits for the other.

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use hive::{ChunkIndex, Manifest};
use tokio::{
    sync::mpsc::UnboundedSender,
    task::Id,
    time::{Instant, timeout_at},
};
use tokio_stream::{Stream, StreamExt};

use super::traits::{Answer, Holders, Sink};
use crate::{error::PeerError, throttle::Caps};

/// Why a request failed, as the scheduler needs to tell it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Wrong, short or over-long data, or a message over the size limit: the
    /// holder's fault, worth a strike.
    Bad(String),
    /// The holder says it lacks the chunk it advertised (also a strike).
    Lacks,
    /// The holder found its copy damaged and withdrew it (no strike).
    Withdrawn,
    /// The holder is too busy right now.
    Busy,
    /// The holder sends other chunks first (super-seeding: it has sent this
    /// one more often than the ones it names).
    Declined(Decline),
    /// The holder could not be reached, or the stream broke.
    Unreachable(String),
    /// No complete chunk within the deadline.
    Timeout,
    /// Writing the verified chunk failed: a local problem, fatal to the download.
    Write(PeerError),
}

/// What a request did, including how many bytes it moved either way.
pub struct Outcome {
    pub result: Result<(), Failure>,
    pub received: u64,
    /// From asking to the chunk verified (before it is written).
    pub took: Duration,
    /// From asking to the holder's answer (before the chunk's bytes), if it
    /// answered.
    pub answered: Option<Duration>,
}

/// One chunk request as the engine makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The chunk asked for.
    pub chunk: ChunkIndex,
    /// Chunks a super-seeding holder may send instead, most wanted first
    /// (at most [`hive::wire::MAX_INSTEAD`]); empty when this very chunk is
    /// needed.
    pub instead: Vec<ChunkIndex>,
    /// Whether the holder may answer that it sends other chunks first.
    pub may_decline: bool,
}

impl Ask {
    /// A request for `chunk` alone.
    pub fn only(chunk: ChunkIndex, may_decline: bool) -> Self {
        Self {
            chunk,
            instead: Vec::new(),
            may_decline,
        }
    }
}

/// Where a request task that offered alternatives says which chunk its
/// holder sends, as soon as it knows: the task's id and the chunk. A task
/// sends at most once, so the channel holds at most one message per request
/// in flight.
pub type Swaps = UnboundedSender<(Id, ChunkIndex)>;

/// A super-seeding holder's decline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decline {
    /// Some of the chunks it has sent least: worth asking it for instead.
    pub hints: Vec<ChunkIndex>,
    /// Whether it was still sending some chunk for the first time.
    pub first_pass: bool,
}

/// Fetches `ask.chunk` (or, if the holder swaps it, one of `ask.instead`;
/// with alternatives, the chunk coming is reported to `swaps`) from the holder behind `conn` (which, if
/// `ask.may_decline`, may answer that it sends other chunks first),
/// verifies it and hands it to `sink`: the future asks, streams and
/// verifies within `deadline`, then writes. The bytes pass the download
/// `caps` as they arrive; time spent waiting on a cap extends the
/// deadline, so a capped download never takes its holder for stalled. It
/// borrows nothing, so it can run as a task of its own (and must, for its
/// swap to be reported).
pub fn fetch_into<H: Holders, S: Sink>(
    holders: &H,
    conn: &H::Conn,
    manifest: Arc<Manifest>,
    ask: Ask,
    (deadline, caps): (Duration, Caps),
    sink: S,
    swaps: Swaps,
) -> impl Future<Output = Outcome> + Send + 'static {
    let open = holders.get_chunk(conn, manifest.name(), &ask);
    async move {
        let mut received = 0;
        let asked = Instant::now();
        let mut until = asked + deadline;
        let mut answered = None;
        let got = match timeout_at(until, open).await {
            Ok(Ok(Answer { chunk, frames, at })) => {
                answered = Some(at.duration_since(asked));
                match swapped(&ask, chunk, &swaps) {
                    Ok(()) => {
                        let read = (&mut until, &caps);
                        let got = receive(frames, &manifest, chunk, read, &mut received).await;
                        got.map(|frames| (chunk, frames))
                    }
                    Err(f) => Err(f),
                }
            }
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure::Timeout),
        };
        let took = asked.elapsed();
        let result = match got {
            Ok((chunk, frames)) => sink.write(chunk, frames).await.map_err(Failure::Write),
            Err(f) => Err(f),
        };
        Outcome {
            result,
            received,
            took,
            answered,
        }
    }
}

/// Checks the chunk a holder says it sends against the request, and reports
/// which one it is for a request that offered alternatives (so that they
/// are free again): a chunk not asked for is the holder's fault.
fn swapped(ask: &Ask, chunk: ChunkIndex, swaps: &Swaps) -> Result<(), Failure> {
    if ask.instead.is_empty() && chunk == ask.chunk {
        return Ok(());
    }
    if chunk != ask.chunk && !ask.instead.contains(&chunk) {
        return Err(Failure::Bad(format!(
            "sent chunk {chunk} for chunk {}, which it was not offered instead",
            ask.chunk
        )));
    }
    // Outside a task nobody awaits the report (nor could tell which request).
    if let Some(id) = tokio::task::try_id() {
        // The engine owns the receiver as long as requests run.
        let _ = swaps.send((id, chunk));
    }
    Ok(())
}

/// Reads `chunk` from `frames` and verifies it, returning its bytes as
/// received: this is the check that keeps a holder's wrong bytes out. Each
/// message must come before `until`, which moves on by the time the caps
/// hold it back.
async fn receive(
    mut frames: impl Stream<Item = Result<Bytes, Failure>> + Unpin,
    manifest: &Manifest,
    chunk: ChunkIndex,
    (until, caps): (&mut Instant, &Caps),
    received: &mut u64,
) -> Result<Vec<Bytes>, Failure> {
    let mut verifier = manifest.verifier(chunk);
    let mut pieces = Vec::new();
    loop {
        let next = timeout_at(*until, frames.next())
            .await
            .map_err(|_| Failure::Timeout)?;
        let Some(data) = next.transpose()? else {
            break;
        };
        *received += data.len() as u64;
        verifier
            .update(&data)
            .map_err(|e| Failure::Bad(e.to_string()))?;
        *until += caps.take(data.len() as u64).await;
        pieces.push(data);
    }
    verifier.finish().map_err(|e| Failure::Bad(e.to_string()))?;
    Ok(pieces)
}
