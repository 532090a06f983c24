//! Accepted connections, with the two guards hyper and tonic do not give an
//! HTTP/2 server (docs/RELIABILITY.md: RE-1, RE-2):
//! - a handshake timeout: a connection that has not sent the 24-byte
//!   HTTP/2 client preface within [`HANDSHAKE_TIMEOUT`] is closed (hyper
//!   has no such timer for HTTP/2, so an idle socket would be held forever:
//!   slowloris);
//! - a way for a handler to close its own connection
//!   ([`abort_connection`]): hyper polls a response body only while the
//!   client's flow-control window has room, so a stream whose reader never
//!   drains it can be neither polled nor reset from the server side, and
//!   whatever it holds (an upload slot, buffered frames) would stay until
//!   the connection ends. Closing the connection is the one way to end it.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::accept::Slot;

/// How long a new connection may take to send the HTTP/2 client preface
/// (as libtorrent's TLS handshake timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;

/// Closes the connection between `local` and `remote` that this process
/// accepted, ending every stream on it; false if there is none.
pub fn abort_connection(local: SocketAddr, remote: SocketAddr) -> bool {
    let Some(abort) = open()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(local, remote))
        .cloned()
    else {
        return false;
    };
    abort.fire();
    true
}

/// Closes every connection accepted on `local`; returns how many. For the
/// end of a graceful shutdown, when streams outlived the grace period.
pub fn abort_connections_on(local: SocketAddr) -> usize {
    let open = open().lock().unwrap_or_else(|e| e.into_inner());
    let mut closed = 0;
    for ((l, _), abort) in open.iter() {
        if *l == local {
            abort.fire();
            closed += 1;
        }
    }
    closed
}

type Key = (SocketAddr, SocketAddr);

/// The open connections, so a handler can reach its own. A std mutex:
/// held for a map lookup or update only, never across an await.
fn open() -> &'static Mutex<HashMap<Key, Arc<Abort>>> {
    static OPEN: OnceLock<Mutex<HashMap<Key, Arc<Abort>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// Closes the connection that has read nothing for longest, if that is at
/// least `idle`, among those `listener` accepted from `ip` (or from
/// anywhere); whether there was one. For the accept loop at a cap (see
/// `accept`): a listener makes room among its own connections only.
pub(super) fn evict_idlest(listener: u64, ip: Option<std::net::IpAddr>, idle: Duration) -> bool {
    let open = open().lock().unwrap_or_else(|e| e.into_inner());
    let cutoff = now_ms().saturating_sub(idle.as_millis() as u64);
    let idlest = open
        .iter()
        .filter(|(_, abort)| abort.listener == listener)
        .filter(|((_, remote), _)| ip.is_none_or(|ip| remote.ip() == ip))
        .filter(|(_, abort)| !abort.is_fired())
        .map(|(_, abort)| (abort.last_read.load(Ordering::Relaxed), abort))
        .filter(|(last, _)| *last <= cutoff)
        .min_by_key(|(last, _)| *last);
    match idlest {
        Some((_, abort)) => {
            abort.fire();
            true
        }
        None => false,
    }
}

/// Milliseconds since the first call, for idle times. By tokio's clock, so
/// that tests can pause it.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The abort switch of one connection, the task to wake when thrown, when
/// it last read anything, and the listener that accepted it (0: none under
/// caps).
#[derive(Default)]
struct Abort {
    state: Mutex<(bool, Option<Waker>)>,
    last_read: AtomicU64,
    listener: u64,
}

impl Abort {
    fn is_fired(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn fire(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = true;
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    }

    /// Whether the switch was thrown; otherwise remembers whom to wake.
    fn fired(&self, waker: &Waker) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.0 && !state.1.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.1 = Some(waker.clone());
        }
        state.0
    }
}

/// An accepted TCP connection with a handshake deadline and an abort switch.
pub struct Conn {
    tcp: TcpStream,
    info: TcpConnectInfo,
    /// Until the client preface has arrived: when to give up waiting.
    handshake: Option<Pin<Box<Sleep>>>,
    read: usize,
    abort: Arc<Abort>,
    key: Option<Key>,
    /// Whether it reports vectored writes; see
    /// [`Incoming::without_vectored_writes`].
    vectored: bool,
    /// Without vectored writes: bytes taken by a write but not yet sent,
    /// which go with the next write or flush.
    held: Vec<u8>,
    /// Its place under the connection caps.
    _slot: Option<Slot>,
}

/// Without vectored writes, a write shorter than this is held back (h2
/// writes its buffer, at most 16 KiB and a frame head, then flushes).
const HOLD_UP_TO: usize = 32 * 1024;
/// Once flushed, a hold buffer larger than this is freed.
const KEEP_HELD_CAPACITY: usize = 4 * 1024;

impl Conn {
    pub(super) fn new(tcp: TcpStream, vectored: bool, slot: Option<Slot>) -> Self {
        let info = tcp.connect_info();
        let abort = Arc::new(Abort {
            last_read: AtomicU64::new(now_ms()),
            listener: slot.as_ref().map_or(0, Slot::listener),
            ..Abort::default()
        });
        let key = info.local_addr.zip(info.remote_addr);
        if let Some(key) = key {
            open()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, abort.clone());
        }
        Self {
            tcp,
            info,
            handshake: Some(Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT))),
            read: 0,
            abort,
            key,
            vectored,
            held: Vec::new(),
            _slot: slot,
        }
    }

    fn aborted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed by the server",
        )
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut open = open().lock().unwrap_or_else(|e| e.into_inner());
            if open.get(&key).is_some_and(|a| Arc::ptr_eq(a, &self.abort)) {
                open.remove(&key);
            }
        }
    }
}

impl Connected for Conn {
    // The plain TCP info, so `Request::remote_addr` works as before.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.abort.fired(cx.waker()) {
            return Poll::Ready(Err(Self::aborted()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.abort.last_read.store(now_ms(), Ordering::Relaxed);
                }
                this.read += n;
                if this.read >= PREFACE_LEN {
                    this.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .handshake
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface in time");
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.abort.fired(cx.waker()) {
            return Poll::Ready(Err(Self::aborted()));
        }
        if this.vectored {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        loop {
            if this.held.len() + buf.len() < HOLD_UP_TO {
                this.held.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
            if this.held.is_empty() {
                return Pin::new(&mut this.tcp).poll_write(cx, buf);
            }
            let both = [io::IoSlice::new(&this.held), io::IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.tcp).poll_write_vectored(cx, &both))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            let sent_held = n.min(this.held.len());
            this.held.drain(..sent_held);
            if n > sent_held {
                return Poll::Ready(Ok(n - sent_held));
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.vectored {
            // Behind any held bytes, as `poll_write` keeps them; a caller
            // that asks anyway gets one slice at a time.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        let this = self.get_mut();
        if this.abort.fired(cx.waker()) {
            return Poll::Ready(Err(Self::aborted()));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored && self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.held.is_empty() {
            if this.abort.fired(cx.waker()) {
                return Poll::Ready(Err(Self::aborted()));
            }
            let n = ready!(Pin::new(&mut this.tcp).poll_write(cx, &this.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.held.drain(..n);
            if this.held.is_empty() && this.held.capacity() > KEEP_HELD_CAPACITY {
                // An idle connection keeps little: a tracker has thousands.
                this.held = Vec::new();
            }
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn pair(vectored: bool) -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        (
            Conn::new(accepted.unwrap().0, vectored, None),
            client.unwrap(),
        )
    }

    #[tokio::test]
    async fn held_writes_go_out_in_order_with_the_next_write_or_a_flush() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let (mut conn, mut client) = pair(false).await;
            assert!(!conn.is_write_vectored());
            // A short write is held until a flush...
            conn.write_all(b"head").await.unwrap();
            assert_eq!(conn.held, b"head");
            // A vectored write, asked for anyway, queues behind it.
            let more = [io::IoSlice::new(b""), io::IoSlice::new(b"er")];
            assert_eq!(conn.write_vectored(&more).await.unwrap(), 2);
            assert_eq!(conn.held, b"header");
            conn.flush().await.unwrap();
            assert!(conn.held.is_empty());
            let mut got = [0; 6];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"header");
            // A large hold is freed once flushed.
            conn.write_all(&[7; 10_000]).await.unwrap();
            assert!(conn.held.capacity() >= 10_000);
            conn.flush().await.unwrap();
            assert_eq!(conn.held.capacity(), 0);
            let mut got = vec![0; 10_000];
            client.read_exact(&mut got).await.unwrap();
            assert!(got.iter().all(|&b| b == 7));
            // ...or a write too long to hold, which takes it along.
            let long: Vec<u8> = (0..HOLD_UP_TO * 4).map(|i| i as u8).collect();
            conn.write_all(b"frame head").await.unwrap();
            let writing = async {
                conn.write_all(&long).await.unwrap();
                conn.shutdown().await.unwrap();
            };
            let mut all = Vec::new();
            let reading = client.read_to_end(&mut all);
            let ((), read) = tokio::join!(writing, reading);
            read.unwrap();
            assert_eq!(&all[..10], b"frame head");
            assert!(
                all[10..] == long[..],
                "{} bytes after the head",
                all.len() - 10
            );
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn vectored_connections_hold_nothing() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let (mut conn, mut client) = pair(true).await;
            conn.write_all(b"now").await.unwrap();
            assert!(conn.held.is_empty());
            let mut got = [0; 3];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"now");
        })
        .await
        .expect("in time");
    }
}
