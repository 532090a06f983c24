//! The daemon's side of the engine's traits: the tracker session locates,
//! the connection pool asks holders over gRPC, and a download's part file
//! plus the holdings (which serve them and tell the tracker) take its
//! verified chunks.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use hive::{ChunkIndex, FileName, Manifest, pb::peer as pb};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Code, Status, Streaming};

use super::{
    engine::Engine,
    origins::Origins,
    partfile::PartFile,
    request::{Ask, Decline, Failure},
    traits::{Answer, Holders, Locator, Sink},
};
use crate::{
    error::PeerError,
    holdings::Holdings,
    pool::{PeerClient, Pool},
    tracker_link::{Located, TrackerLink},
};

/// The engine as the daemon runs it.
pub type LiveEngine = Engine<TrackerLink, Pool, PartSink>;

impl Locator for TrackerLink {
    fn relocate(
        &self,
        known: Arc<Manifest>,
    ) -> impl Future<Output = Result<Located, PeerError>> + Send + use<> {
        let link = self.clone();
        async move { TrackerLink::relocate(&link, &known).await }
    }

    fn me(&self) -> Option<String> {
        self.session().map(|s| s.peer_id)
    }
}

impl Holders for Pool {
    type Conn = PeerClient;
    type Frames = Frames;

    fn connect(&self, addr: &str) -> Result<PeerClient, PeerError> {
        self.client(addr)
    }

    fn get_chunk(
        &self,
        conn: &PeerClient,
        name: &FileName,
        ask: &Ask,
    ) -> impl Future<Output = Result<Answer<Frames>, Failure>> + Send + use<> {
        let mut client = conn.clone();
        let asked = ask.chunk;
        let request = pb::GetChunkRequest {
            name: name.to_string(),
            chunk: asked.get(),
            may_decline: ask.may_decline,
            instead: ask.instead.iter().map(|c| c.get()).collect(),
        };
        async move {
            let mut stream = client
                .get_chunk(request)
                .await
                .map_err(failure)?
                .into_inner();
            let at = Instant::now();
            // The first message says which chunk comes (0, or a peer that
            // predates swaps: the one asked for); the caller checks it.
            let first = stream.message().await.map_err(failure)?;
            let chunk = first
                .as_ref()
                .and_then(|m| ChunkIndex::new(m.chunk))
                .unwrap_or(asked);
            Ok(Answer {
                chunk,
                frames: Frames(first.map(|m| m.data), stream),
                at,
            })
        }
    }
}

/// A GetChunk answer as bytes, its errors as the engine tells them apart:
/// the first message's data, already read, then the rest.
pub struct Frames(Option<Bytes>, Streaming<pb::ChunkData>);

impl Stream for Frames {
    type Item = Result<Bytes, Failure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.0.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut self.1)
            .poll_next(cx)
            .map(|msg| msg.map(|m| m.map(|m| m.data).map_err(failure)))
    }
}

fn failure(status: Status) -> Failure {
    match status.code() {
        Code::NotFound => Failure::Lacks,
        Code::DataLoss => Failure::Withdrawn,
        Code::ResourceExhausted => Failure::Busy,
        // Only asked with may_decline; the details name the chunks to ask
        // for instead and whether the holder is in its first pass (none, and
        // not, if they do not parse: they are hints).
        Code::FailedPrecondition => {
            let details =
                <pb::Declined as prost::Message>::decode(status.details()).unwrap_or_default();
            let hints: Vec<_> = details
                .least_sent
                .into_iter()
                .filter_map(ChunkIndex::new)
                .collect();
            Failure::Declined(Decline {
                first_pass: !hints.is_empty() && details.least_count == 0,
                hints,
            })
        }
        // A message over our size limit, or a holder disagreeing about the
        // file's layout: the holder is wrong.
        Code::OutOfRange | Code::InvalidArgument => Failure::Bad(status.message().to_owned()),
        _ => Failure::Unreachable(format!("{}: {}", status.code(), status.message())),
    }
}

/// One download's verified chunks: written into its part file, then marked
/// in the holdings, which serve them from then on and tell the tracker.
#[derive(Clone)]
pub struct PartSink {
    pub part: Arc<PartFile>,
    pub manifest: Arc<Manifest>,
    pub holdings: Holdings,
    pub origins: Origins,
}

impl Sink for PartSink {
    fn write(
        &self,
        chunk: ChunkIndex,
        pieces: Vec<Bytes>,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + use<> {
        let part = self.part.clone();
        let offset = self.manifest.layout().range(chunk).start;
        async move { part.write(offset, pieces).await }
    }

    fn held(&self, chunk: ChunkIndex) {
        self.holdings.mark(self.manifest.name(), chunk);
    }

    fn requested(&self, chunk: ChunkIndex, from: &str) {
        self.origins.requested(self.manifest.name(), chunk, from);
    }

    fn answered(&self, chunk: ChunkIndex, from: &str, verified: bool) {
        self.origins
            .answered(self.manifest.name(), chunk, from, verified);
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::{Failure, failure};

    /// How a holder's error answers are told apart: only its own faults are
    /// strikes, and a withdrawn chunk is not one.
    #[test]
    fn a_holders_status_codes_map_to_failures() {
        let failed = |code| failure(Status::new(code, "why"));
        assert!(matches!(failed(Code::NotFound), Failure::Lacks));
        assert!(matches!(failed(Code::DataLoss), Failure::Withdrawn));
        assert!(matches!(failed(Code::ResourceExhausted), Failure::Busy));
        assert!(matches!(
            failed(Code::FailedPrecondition),
            Failure::Declined(d) if d == Default::default()
        ));
        let details = prost::Message::encode_to_vec(&hive::pb::peer::Declined {
            least_sent: vec![3, 0, 9],
            least_count: 0,
        });
        let declined = failure(Status::with_details(
            Code::FailedPrecondition,
            "sent already",
            details.into(),
        ));
        let Failure::Declined(decline) = declined else {
            panic!("a decline with hints: {declined:?}");
        };
        assert_eq!(
            decline.hints.iter().map(|c| c.get()).collect::<Vec<_>>(),
            [3, 9],
            "chunk 0 is no chunk"
        );
        assert!(decline.first_pass, "least_count 0: still in its first pass");
        let details = prost::Message::encode_to_vec(&hive::pb::peer::Declined {
            least_sent: vec![3],
            least_count: 1,
        });
        let declined = failure(Status::with_details(
            Code::FailedPrecondition,
            "sent already",
            details.into(),
        ));
        assert!(matches!(declined, Failure::Declined(d) if !d.first_pass));
        assert!(matches!(failed(Code::OutOfRange), Failure::Bad(_)));
        assert!(matches!(failed(Code::InvalidArgument), Failure::Bad(_)));
        assert!(matches!(failed(Code::Unavailable), Failure::Unreachable(_)));
        assert!(matches!(failed(Code::Internal), Failure::Unreachable(_)));
    }
}
