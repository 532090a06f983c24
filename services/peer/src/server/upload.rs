//! One chunk on its way out: a producer task that reads the chunk a segment
//! at a time and feeds it to the response stream, within the upload cap,
//! and gives up on a reader that stalls or drains too slowly.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use hive::pb::peer as pb;
use hive_runtime::grpc::STREAM_MESSAGE_BYTES;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, warn};

use super::SEGMENT;
use crate::{error::PeerError, holdings::ChunkSource, metrics::Counters, throttle::Throttle};

/// How fast a reader must take an upload's data: at least `min_rate` bytes
/// a second over every `window` (time spent waiting on the upload cap not
/// counted). 0 turns the rule off.
#[derive(Debug, Clone, Copy)]
pub struct DrainRule {
    pub min_rate: u64,
    pub window: Duration,
}

/// The current window of a [`DrainRule`].
struct Drain {
    rule: DrainRule,
    since: Instant,
    bytes: u64,
}

impl Drain {
    fn new(rule: DrainRule) -> Self {
        Self {
            rule,
            since: Instant::now(),
            bytes: 0,
        }
    }

    /// When the current window closes, if the rule is on.
    fn closes(&self) -> Option<Instant> {
        (self.rule.min_rate > 0 && !self.rule.window.is_zero())
            .then(|| self.since + self.rule.window)
    }

    /// Whether the window took what the rule asks.
    fn met(&self) -> bool {
        self.bytes as f64 >= self.rule.min_rate as f64 * self.rule.window.as_secs_f64()
    }

    /// At a window's close: false if the reader was too slow, else a new
    /// window starts.
    fn roll(&mut self, now: Instant) -> bool {
        if !self.met() {
            return false;
        }
        (self.since, self.bytes) = (now, 0);
        true
    }
}

/// Why an upload stopped early.
enum Stop {
    Gone,
    Stalled,
    Slow,
    Shutdown,
}

/// One chunk on its way out: the frames in hand, and where to read next.
pub(super) struct Upload {
    pub(super) source: Arc<ChunkSource>,
    pub(super) frames: Vec<bytes::Bytes>,
    pub(super) next: u64,
    pub(super) tx: mpsc::Sender<Result<pb::ChunkData, Status>>,
    pub(super) timeout: Duration,
    pub(super) drain: DrainRule,
    pub(super) cap: Arc<Throttle>,
    pub(super) stop: CancellationToken,
    pub(super) counters: Arc<Counters>,
    /// The connection's local and remote address.
    pub(super) conn: Option<(SocketAddr, SocketAddr)>,
    /// Resolves when the response stream has been dropped.
    pub(super) ended: oneshot::Receiver<()>,
    /// The chunk's number, put on the first message (it may be another
    /// than the one asked for) and then cleared. Atomic only because the
    /// sends borrow the upload shared across awaits.
    pub(super) label: AtomicU32,
}

impl Upload {
    /// Feeds the chunk to the stream a segment at a time; stops when the
    /// reader goes away, stalls past the timeout or drains too slowly, or
    /// the daemon stops serving.
    pub(super) async fn run(mut self) -> Result<(), PeerError> {
        let end = self.source.range().end;
        let mut drain = Drain::new(self.drain);
        loop {
            for data in std::mem::take(&mut self.frames) {
                if let Err(why) = self.send(data, &mut drain).await {
                    self.stopped(why);
                    return Ok(());
                }
            }
            if self.next >= end {
                self.linger().await;
                return Ok(());
            }
            let (source, at) = (self.source.clone(), self.next);
            let to = end.min(at + SEGMENT);
            let read =
                tokio::task::spawn_blocking(move || source.read(at..to, STREAM_MESSAGE_BYTES))
                    .await;
            match read {
                Ok(Ok(frames)) => (self.frames, self.next) = (frames, to),
                _ => {
                    warn!(chunk = %self.source.chunk, "cannot read the rest of the chunk");
                    // Waited for, not tried: a full queue must not turn the
                    // error into a short stream that ends OK.
                    let error = Err(Status::internal("cannot read the chunk"));
                    let _ = tokio::time::timeout(self.timeout, self.tx.send(error)).await;
                    return Ok(());
                }
            }
        }
    }

    /// Sends one frame, in pieces of the cap's size when the upload is
    /// capped, so capped uploads interleave finely.
    async fn send(&self, mut data: bytes::Bytes, drain: &mut Drain) -> Result<(), Stop> {
        let piece = usize::try_from(self.cap.piece()).unwrap_or(usize::MAX);
        while !data.is_empty() {
            let part = match self.cap.rate() {
                0 => std::mem::take(&mut data),
                _ => data.split_to(piece.min(data.len())),
            };
            let len = part.len() as u64;
            tokio::select! {
                waited = self.cap.take(len) => drain.since += waited,
                _ = self.stop.cancelled() => return Err(Stop::Shutdown),
            }
            self.send_piece(part, drain).await?;
            self.counters.add_served(len);
        }
        Ok(())
    }

    /// Sends one message once the reader has room for it.
    async fn send_piece(&self, data: bytes::Bytes, drain: &mut Drain) -> Result<(), Stop> {
        let stall_at = Instant::now() + self.timeout;
        let len = data.len() as u64;
        let mut data = Some(data);
        loop {
            let closes = drain.closes();
            let until = closes.map_or(stall_at, |c| c.min(stall_at));
            tokio::select! {
                room = tokio::time::timeout_at(until, self.tx.reserve()) => match room {
                    Ok(Ok(permit)) => {
                        let data = data.take().unwrap_or_default();
                        let chunk = self.label.swap(0, Ordering::Relaxed);
                        permit.send(Ok(pb::ChunkData { data, chunk }));
                        drain.bytes += len;
                        return Ok(());
                    }
                    Ok(Err(_)) => return Err(Stop::Gone),
                    Err(_) => {
                        let now = Instant::now();
                        if now >= stall_at {
                            return Err(Stop::Stalled);
                        }
                        if closes.is_some_and(|c| now >= c) && !drain.roll(now) {
                            return Err(Stop::Slow);
                        }
                    }
                },
                _ = self.stop.cancelled() => return Err(Stop::Shutdown),
            }
        }
    }

    /// After the last message: the stream keeps its slot until the reader
    /// has taken what is still buffered (at most the channel and hyper's
    /// message) and the stream has ended. A reader that has not taken it
    /// within the time the drain rule allows for that much (at least one
    /// window; the send timeout with the rule off) is cut as a stalled one
    /// is, so a chunk small enough to be buffered whole cannot be used to
    /// hold a slot either.
    async fn linger(self) {
        let DrainRule { min_rate, window } = self.drain;
        let buffered = (self.source.range().end - self.source.range().start)
            .min((super::AHEAD as u64 + 1) * STREAM_MESSAGE_BYTES as u64);
        let allowed = match min_rate {
            0 => self.timeout,
            r => Duration::from_secs_f64(buffered as f64 / r as f64).max(window),
        };
        let Self {
            tx,
            ended,
            stop,
            conn,
            counters,
            ..
        } = self;
        // The stream ends once it has sent everything and its sender is gone.
        drop(tx);
        tokio::select! {
            _ = ended => {}
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(allowed) => {
                warn!(?allowed, "the reader did not take the end of its chunk in time; connection closed");
                counters.add_upload_cut();
                if let Some((local, remote)) = conn {
                    hive_runtime::grpc::abort_connection(local, remote);
                }
            }
        }
    }

    /// Ends an upload that stopped early. A reader that stalls or trickles
    /// has (nearly) stopped opening its flow-control window, and hyper
    /// polls a response body only while that window has room: the stream
    /// can then be neither ended nor reset from here, and would keep its
    /// upload slot and buffered messages until its connection closes (up to
    /// the maximum connection age). So such a reader's connection is
    /// closed, which ends the stream and frees both. hive's own downloads
    /// give up on a chunk before the send timeout (`--chunk-timeout`), so
    /// this cuts only readers that stopped or crawl.
    fn stopped(&self, why: Stop) {
        let abort = || {
            if let Some((local, remote)) = self.conn {
                hive_runtime::grpc::abort_connection(local, remote);
            }
        };
        match why {
            Stop::Gone => debug!("the reader went away"),
            Stop::Stalled => {
                warn!(timeout = ?self.timeout, "the reader stopped taking data; upload abandoned, connection closed");
                self.counters.add_upload_cut();
                abort();
            }
            Stop::Slow => {
                let DrainRule { min_rate, window } = self.drain;
                warn!(
                    min_rate,
                    ?window,
                    "the reader drains slower than --min-upload-rate; upload abandoned, connection closed"
                );
                self.counters.add_upload_cut();
                abort();
            }
            Stop::Shutdown => {
                let _ = self
                    .tx
                    .try_send(Err(Status::unavailable("the peer is shutting down")));
            }
        }
    }
}
