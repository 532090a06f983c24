//! One chunk from one holder: stream it, verify it as it arrives, and only
//! then write it. A holder that sends too much is cut off at the first byte
//! past the chunk; one that sends too little or other bytes is caught by the
//! digest. Nothing unverified ever reaches the part file.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use hive::{ChunkIndex, Manifest, pb::peer as pb};
use tonic::{Code, transport::Channel};

use crate::{error::PeerError, fetch::partfile::PartFile};

pub type PeerClient = pb::peer_client::PeerClient<Channel>;

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

/// Fetches `chunk`, verifies it and writes it into `part`.
pub async fn fetch_into(
    client: PeerClient,
    manifest: Arc<Manifest>,
    chunk: ChunkIndex,
    deadline: Duration,
    part: Arc<PartFile>,
) -> Outcome {
    let mut received = 0;
    let got =
        tokio::time::timeout(deadline, receive(client, &manifest, chunk, &mut received)).await;
    let frames = match got {
        Ok(Ok(frames)) => frames,
        Ok(Err(f)) => {
            return Outcome {
                result: Err(f),
                received,
            };
        }
        Err(_) => {
            return Outcome {
                result: Err(Failure::Timeout),
                received,
            };
        }
    };
    let offset = manifest.layout().range(chunk).start;
    if let Err(e) = part.write(offset, frames).await {
        return Outcome {
            result: Err(Failure::Write(e)),
            received,
        };
    }
    Outcome {
        result: Ok(()),
        received,
    }
}

/// Streams `chunk` and verifies it, returning its bytes as received.
pub async fn receive(
    mut client: PeerClient,
    manifest: &Manifest,
    chunk: ChunkIndex,
    received: &mut u64,
) -> Result<Vec<Bytes>, Failure> {
    let request = pb::GetChunkRequest {
        name: manifest.name().to_string(),
        chunk: chunk.get(),
    };
    let mut stream = client
        .get_chunk(request)
        .await
        .map_err(failure)?
        .into_inner();
    let mut verifier = manifest.verifier(chunk);
    let mut frames = Vec::new();
    while let Some(msg) = stream.message().await.map_err(failure)? {
        *received += msg.data.len() as u64;
        verifier
            .update(&msg.data)
            .map_err(|e| Failure::Bad(e.to_string()))?;
        frames.push(msg.data);
    }
    verifier.finish().map_err(|e| Failure::Bad(e.to_string()))?;
    Ok(frames)
}

fn failure(status: tonic::Status) -> Failure {
    match status.code() {
        Code::NotFound => Failure::Lacks,
        Code::DataLoss => Failure::Withdrawn,
        Code::ResourceExhausted => Failure::Busy,
        // A message over our size limit, or a holder disagreeing about the
        // file's layout: the holder is wrong.
        Code::OutOfRange | Code::InvalidArgument => Failure::Bad(status.message().to_owned()),
        _ => Failure::Unreachable(format!("{}: {}", status.code(), status.message())),
    }
}
