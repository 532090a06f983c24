//! One chunk from one holder: stream it, verify it as it arrives, and only
//! then hand it to the sink. A holder that sends too much is cut off at the
//! first byte past the chunk; one that sends too little or other bytes is
//! caught by the digest. Nothing unverified ever reaches the sink (the part
//! file), whichever [`Holders`] the bytes came from.

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use hive::{ChunkIndex, Manifest};
use tokio::time::{Instant, timeout_at};
use tokio_stream::{Stream, StreamExt};

use super::traits::{Holders, Sink};
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
}

/// A super-seeding holder's decline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decline {
    /// Some of the chunks it has sent least: worth asking it for instead.
    pub hints: Vec<ChunkIndex>,
    /// Whether it was still sending some chunk for the first time.
    pub first_pass: bool,
}

/// Fetches `chunk` from the holder behind `conn` (which, if `may_decline`,
/// may answer that it sends other chunks first), verifies it and hands it
/// to `sink`: the future asks, streams and verifies within `deadline`, then
/// writes. The bytes pass the download `caps` as they arrive; time spent
/// waiting on a cap extends the deadline, so a capped download never takes
/// its holder for stalled. It borrows nothing, so it can run as a task of
/// its own.
pub fn fetch_into<H: Holders, S: Sink>(
    holders: &H,
    conn: &H::Conn,
    manifest: Arc<Manifest>,
    (chunk, may_decline): (ChunkIndex, bool),
    deadline: Duration,
    caps: Caps,
    sink: S,
) -> impl Future<Output = Outcome> + Send + 'static {
    let open = holders.get_chunk(conn, manifest.name(), chunk, may_decline);
    async move {
        let mut received = 0;
        let mut until = Instant::now() + deadline;
        let got = match timeout_at(until, open).await {
            Ok(Ok(frames)) => {
                receive(frames, &manifest, chunk, (&mut until, &caps), &mut received).await
            }
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure::Timeout),
        };
        let result = match got {
            Ok(frames) => sink.write(chunk, frames).await.map_err(Failure::Write),
            Err(f) => Err(f),
        };
        Outcome { result, received }
    }
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
