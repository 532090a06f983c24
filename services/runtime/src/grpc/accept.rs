//! The accept loop's guards (docs/RELIABILITY.md: RE-8):
//! - caps on connections per source address and in all, below the
//!   open-files limit, so that connections alone never use up the
//!   descriptors the daemon needs for its own files, dials and new clients
//!   (Health among them): at a cap, the connection idle longest makes room,
//!   or the newcomer is closed at once;
//! - a backoff when accepting fails for want of descriptors (EMFILE,
//!   ENFILE) or memory: tonic retries a failed accept at once, which spins a
//!   core for as long as the condition lasts. It is logged once per episode,
//!   with the setting that fixes it.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;
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
    /// In all, across every listener of the process.
    pub total: usize,
}

impl Caps {
    /// No caps (tests, tools).
    pub const NONE: Caps = Caps {
        per_ip: None,
        total: usize::MAX,
    };
}

/// The connections accepted on a listener, each a [`Conn`].
pub struct Incoming {
    inner: TcpIncoming,
    vectored: bool,
    caps: Caps,
    backoff: Option<Pin<Box<Sleep>>>,
    pause: Duration,
}

impl Incoming {
    pub fn new(inner: TcpIncoming) -> Self {
        Self {
            inner,
            vectored: true,
            caps: Caps::NONE,
            backoff: None,
            pause: BACKOFF_FIRST,
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

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.backoff.as_mut() {
                std::task::ready!(pause.as_mut().poll(cx));
                self.backoff = None;
            }
            let tcp = match std::task::ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(tcp)) => tcp,
                Some(Err(e)) if out_of_resources(&e) => {
                    starved(&e);
                    let pause = self.pause;
                    self.pause = (pause * 2).min(BACKOFF_MOST);
                    self.backoff = Some(Box::pin(tokio::time::sleep(pause)));
                    continue;
                }
                // A connection that failed before it was accepted: the
                // next one may be fine.
                Some(Err(_)) => continue,
            };
            if self.pause != BACKOFF_FIRST {
                self.pause = BACKOFF_FIRST;
                if STARVED.swap(false, Ordering::Relaxed) {
                    info!("accepting connections again");
                }
            }
            let ip = tcp.peer_addr().map(|a| a.ip()).ok();
            let Some(slot) = Slot::admit(ip, self.caps) else {
                // Dropped: closed at once, its descriptor back.
                continue;
            };
            return Poll::Ready(Some(Ok(Conn::new(tcp, self.vectored, Some(slot)))));
        }
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

/// Connections held in all, and per source address.
static TOTAL: AtomicUsize = AtomicUsize::new(0);

fn per_ip() -> &'static Mutex<HashMap<IpAddr, usize>> {
    static PER_IP: OnceLock<Mutex<HashMap<IpAddr, usize>>> = OnceLock::new();
    PER_IP.get_or_init(Default::default)
}

/// A connection's place under the caps, given back when it drops.
pub struct Slot {
    ip: Option<IpAddr>,
}

/// Whether a newcomer was already over a cap, logged once per episode.
static SHEDDING: AtomicBool = AtomicBool::new(false);

impl Slot {
    /// A place for a connection from `ip`, making room at a cap by closing
    /// the connection idle longest; `None` if there is no room.
    fn admit(ip: Option<IpAddr>, caps: Caps) -> Option<Slot> {
        let total = TOTAL.load(Ordering::Relaxed);
        let mut counts = per_ip().lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = ip.and_then(|ip| counts.get(&ip).copied()).unwrap_or(0);
        let over_ip = caps.per_ip.is_some_and(|cap| from_ip >= cap);
        let over = over_ip || total >= caps.total;
        if over {
            let within = if over_ip { ip } else { None };
            let made_room = evict_idlest(within, EVICT_IDLE);
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
            *counts.entry(ip).or_default() += 1;
        }
        TOTAL.fetch_add(1, Ordering::Relaxed);
        Some(Slot { ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        TOTAL.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut counts = per_ip().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// Connections held now, in all.
pub fn connections() -> usize {
    TOTAL.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_and_memory_shortages_are_told_apart() {
        let err = |n| io::Error::from_raw_os_error(n);
        use rustix::io::Errno;
        for short in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert!(out_of_resources(&err(short.raw_os_error())));
        }
        assert!(!out_of_resources(&err(Errno::CONNABORTED.raw_os_error())));
        assert!(!out_of_resources(&io::Error::other("x")));
    }
}
