//! The accept loop's guards (docs/RELIABILITY.md: RE-8):
//! - caps on connections per source address and in all, below the
//!   open-files limit, so that connections alone never use up the
//!   descriptors the daemon needs for its own files, dials and new clients
//!   (Health among them): at a cap, the listener's connection idle longest
//!   makes room, or the newcomer is closed at once. Each listener counts and
//!   evicts only its own connections: a flood on the peer's public port
//!   neither fills nor empties its control port;
//! - a backoff when accepting fails for want of descriptors (EMFILE,
//!   ENFILE) or memory ([`Backoff`], on every listener, the Unix control
//!   socket's too): tonic retries a failed accept at once, which spins a
//!   core for as long as the condition lasts. It is logged once per episode,
//!   with the setting that fixes it.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    net::{UnixListener, UnixStream},
    time::Sleep,
};
use tonic::{codegen::tokio_stream::Stream, transport::server::TcpIncoming};
use tracing::{info, warn};

use super::conn::{Conn, evict_idlest};

/// First and longest pause after an accept failed for want of resources.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MOST: Duration = Duration::from_secs(1);
/// A connection that has sent nothing for this long may be closed to make
/// room for a new one at a cap.
pub const EVICT_IDLE: Duration = Duration::from_secs(2);

/// Caps on the connections a listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Per source address; `None`: no cap (a loopback control port).
    pub per_ip: Option<usize>,
    /// In all, on this listener.
    pub total: usize,
}

impl Caps {
    /// No caps (tests, tools).
    pub const NONE: Caps = Caps {
        per_ip: None,
        total: usize::MAX,
    };
}

/// The pause after an accept failed for want of resources, doubling while
/// it keeps failing. Shared by every listener (TCP and Unix).
#[derive(Default)]
struct Backoff {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The next pause; zero until an accept has failed.
    pause: Duration,
}

impl Backoff {
    /// The next connection `accept` gives, waiting out a pause first if
    /// one is due. Accepts that failed for want of resources start or
    /// lengthen a pause; other failures (a connection gone before it was
    /// accepted) are skipped.
    fn poll_accept<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut accept: impl FnMut(&mut Context<'_>) -> Poll<Option<io::Result<T>>>,
    ) -> Poll<Option<T>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            match ready!(accept(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(conn)) => {
                    if !self.pause.is_zero() {
                        self.pause = Duration::ZERO;
                        if STARVED.swap(false, Ordering::Relaxed) {
                            info!("accepting connections again");
                        }
                    }
                    return Poll::Ready(Some(conn));
                }
                Some(Err(e)) if out_of_resources(&e) => {
                    starved(&e);
                    let pause = self.pause.max(BACKOFF_FIRST);
                    self.pause = (pause * 2).min(BACKOFF_MOST);
                    self.sleep = Some(Box::pin(tokio::time::sleep(pause)));
                }
                Some(Err(_)) => {}
            }
        }
    }
}

/// The connections accepted on a listener, each a [`Conn`].
pub struct Incoming {
    inner: TcpIncoming,
    vectored: bool,
    caps: Caps,
    held: Arc<Held>,
    backoff: Backoff,
}

impl Incoming {
    pub fn new(inner: TcpIncoming) -> Self {
        Self {
            inner,
            vectored: true,
            caps: Caps::NONE,
            held: Arc::new(Held::new()),
            backoff: Backoff::default(),
        }
    }

    /// Connections that report no vectored writes: h2 then copies DATA
    /// frames of up to 1,023 bytes into its write buffer instead of 255.
    /// h2 writes a larger frame in two pieces then (its buffer, ending in
    /// the frame's head, and the frame's payload); the connection holds
    /// the first back and sends both with one `writev`, as h2 would have.
    /// For servers of small answers, with [`super::SmallFramesLayer`].
    pub fn without_vectored_writes(mut self) -> Self {
        self.vectored = false;
        self
    }

    /// Caps the connections this listener holds.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let inner = &mut this.inner;
            let accepted = this
                .backoff
                .poll_accept(cx, |cx| Pin::new(&mut *inner).poll_next(cx));
            let Some(tcp) = ready!(accepted) else {
                return Poll::Ready(None);
            };
            let ip = tcp.peer_addr().map(|a| a.ip()).ok();
            let Some(slot) = Slot::admit(&this.held, ip, this.caps) else {
                // Dropped: closed at once, its descriptor back.
                continue;
            };
            return Poll::Ready(Some(Ok(Conn::new(tcp, this.vectored, Some(slot)))));
        }
    }
}

/// The connections accepted on a Unix socket (the peer's control socket),
/// with the same [`Backoff`] as TCP listeners and no caps: only the
/// socket's owner can connect.
pub struct UnixIncoming {
    listener: UnixListener,
    backoff: Backoff,
}

impl UnixIncoming {
    pub fn new(listener: UnixListener) -> Self {
        Self {
            listener,
            backoff: Backoff::default(),
        }
    }
}

impl Stream for UnixIncoming {
    type Item = io::Result<UnixStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let listener = &this.listener;
        let accepted = this.backoff.poll_accept(cx, |cx| {
            listener
                .poll_accept(cx)
                .map(|r| Some(r.map(|(stream, _)| stream)))
        });
        accepted.map(|stream| stream.map(Ok))
    }
}

/// Whether accepting failed for want of descriptors or memory, which only
/// time (connections closing) can fix.
fn out_of_resources(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .into_iter()
        .any(|s| Some(s) == errno)
}

static STARVED: AtomicBool = AtomicBool::new(false);

/// Logs the first failure of an episode, with what fixes it.
fn starved(e: &io::Error) {
    if !STARVED.swap(true, Ordering::Relaxed) {
        warn!(
            error = %e,
            open_files_limit = super::open_files_limit(),
            connections = TOTAL.load(Ordering::Relaxed),
            "cannot accept connections: out of file descriptors or memory; backing off until \
             some close. Raise the open-files limit (ulimit -n, LimitNOFILE= in the systemd \
             unit) or lower --max-conns"
        );
    }
}

/// Connections held in all, over every listener (for logs and
/// [`connections`]; the caps count each listener's own).
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// The connections one listener holds: in all, and per source address.
pub(super) struct Held {
    /// Tells this listener's connections from others' (for eviction).
    pub(super) listener: u64,
    /// A std mutex: held for a count's update only, never across an await.
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Held {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            listener: NEXT.fetch_add(1, Ordering::Relaxed),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's place under its listener's caps, given back when it
/// drops.
pub struct Slot {
    held: Arc<Held>,
    ip: Option<IpAddr>,
}

/// Whether a newcomer was already over a cap, logged once per episode.
static SHEDDING: AtomicBool = AtomicBool::new(false);

/// A connection closed to make room keeps its descriptor, and its place
/// under the caps, until its task has seen the close and dropped it. At
/// most this many such closes may be under way: past them a newcomer is
/// refused, not admitted, so that a burst of newcomers (a backlog drained
/// at once) cannot outrun the closes and spend the descriptors' reserve.
pub(super) const CLOSING_AHEAD: usize = 16;

impl Slot {
    /// A place for a connection from `ip`, making room at a cap by closing
    /// the listener's connection idle longest; `None` if there is no room.
    fn admit(held: &Arc<Held>, ip: Option<IpAddr>, caps: Caps) -> Option<Slot> {
        let mut counts = held.counts();
        let total = counts.total;
        let from_ip = ip
            .and_then(|ip| counts.per_ip.get(&ip).copied())
            .unwrap_or(0);
        let over_ip = caps.per_ip.is_some_and(|cap| from_ip >= cap);
        let over = over_ip || total >= caps.total;
        if over {
            let within = if over_ip { ip } else { None };
            // Held beyond the cap reached: closes under way.
            let closing = match caps.per_ip {
                Some(cap) if over_ip => from_ip - cap,
                _ => total - caps.total,
            };
            let made_room =
                closing < CLOSING_AHEAD && evict_idlest(held.listener, within, EVICT_IDLE);
            if !SHEDDING.swap(true, Ordering::Relaxed) {
                warn!(
                    remote = ?ip,
                    connections = total,
                    from_address = from_ip,
                    made_room,
                    "connection cap reached (--max-conns-per-ip, --max-conns): closing idle \
                     connections to make room, refusing new ones when none is idle"
                );
            }
            if !made_room {
                return None;
            }
        } else {
            SHEDDING.store(false, Ordering::Relaxed);
        }
        if let Some(ip) = ip {
            *counts.per_ip.entry(ip).or_default() += 1;
        }
        counts.total += 1;
        TOTAL.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            held: held.clone(),
            ip,
        })
    }

    /// The listener this connection was accepted on.
    pub(super) fn listener(&self) -> u64 {
        self.held.listener
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        TOTAL.fetch_sub(1, Ordering::Relaxed);
        let mut counts = self.held.counts();
        counts.total -= 1;
        if let Some(ip) = self.ip
            && let Some(n) = counts.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// Connections held now, in all.
pub fn connections() -> usize {
    TOTAL.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests;
