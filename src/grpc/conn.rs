//! Accepted connections, with the two guards hyper and tonic do not give an
//! HTTP/2 server (TESTPLAN RE-1, RE-2):
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
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tonic::{
    codegen::tokio_stream::Stream,
    transport::server::{Connected, TcpConnectInfo, TcpIncoming},
};

/// How long a new connection may take to send the HTTP/2 client preface
/// (as libtorrent's TLS handshake timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;

/// The connections accepted on a listener, each a [`Conn`].
pub struct Incoming {
    inner: TcpIncoming,
}

impl Incoming {
    pub fn new(inner: TcpIncoming) -> Self {
        Self { inner }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|next| next.map(|accepted| accepted.map(Conn::new)))
    }
}

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

/// The abort switch of one connection, and the task to wake when thrown.
#[derive(Default)]
struct Abort(Mutex<(bool, Option<Waker>)>);

impl Abort {
    fn fire(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = true;
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    }

    /// Whether the switch was thrown; otherwise remembers whom to wake.
    fn fired(&self, waker: &Waker) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
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
}

impl Conn {
    fn new(tcp: TcpStream) -> Self {
        let info = tcp.connect_info();
        let abort = Arc::new(Abort::default());
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
                this.read += buf.filled().len() - before;
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
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.abort.fired(cx.waker()) {
            return Poll::Ready(Err(Self::aborted()));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
