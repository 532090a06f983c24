use std::{cell::Cell, net::SocketAddr};

use tokio::{io::AsyncReadExt, net::TcpStream};
use tonic::codegen::tokio_stream::StreamExt;

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

/// An accept that fails as `fail` says (by the paused clock since the
/// start) and counts its calls; after 10,000 calls (a spin) it gives up
/// with `None`, which the assertions then catch.
fn accept_failing(
    calls: &Cell<u32>,
    start: tokio::time::Instant,
    fail: impl Fn(Duration) -> Option<rustix::io::Errno>,
) -> impl FnMut(&mut Context<'_>) -> Poll<Option<io::Result<Duration>>> {
    move |_| {
        calls.set(calls.get() + 1);
        if calls.get() > 10_000 {
            return Poll::Ready(None);
        }
        let at = start.elapsed();
        Poll::Ready(Some(match fail(at) {
            Some(errno) => Err(io::Error::from_raw_os_error(errno.raw_os_error())),
            None => Ok(at),
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn accepts_that_fail_for_want_of_descriptors_back_off_and_others_do_not() {
    use rustix::io::Errno;
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut backoff = Backoff::default();
        let start = tokio::time::Instant::now();

        // EMFILE for 3 s: retried after 10, 20, 40 ... ms, at most 1 s
        // apart, not thousands of times (a spin never lets the paused clock
        // move, and would give up after 10,000 calls).
        let calls = Cell::new(0);
        let mut accept = accept_failing(&calls, start, |at| {
            (at < Duration::from_secs(3)).then_some(Errno::MFILE)
        });
        let got = std::future::poll_fn(|cx| backoff.poll_accept(cx, &mut accept)).await;
        let at = got.expect("a connection once descriptors are back");
        assert!(at >= Duration::from_secs(3), "{at:?}");
        assert!(
            at < Duration::from_secs(4),
            "retried at most 1 s apart: {at:?}"
        );
        let calls = calls.get();
        assert!((9..=12).contains(&calls), "{calls} accepts in 3 s");

        // After a success the pause starts again from 10 ms...
        let start = tokio::time::Instant::now();
        let calls = Cell::new(0);
        let mut accept = accept_failing(&calls, start, |at| at.is_zero().then_some(Errno::NFILE));
        let at = std::future::poll_fn(|cx| backoff.poll_accept(cx, &mut accept))
            .await
            .expect("accepted");
        assert_eq!((at, calls.get()), (BACKOFF_FIRST, 2));

        // ...and a connection that failed on its own (ECONNABORTED) is
        // skipped without a pause.
        let start = tokio::time::Instant::now();
        let calls = Cell::new(0);
        let mut accept = accept_failing(&calls, start, |_| None);
        let mut aborted_once = true;
        let mut accept = |cx: &mut Context<'_>| {
            if std::mem::take(&mut aborted_once) {
                let e = io::Error::from_raw_os_error(Errno::CONNABORTED.raw_os_error());
                return Poll::Ready(Some(Err(e)));
            }
            accept(cx)
        };
        let at = std::future::poll_fn(|cx| backoff.poll_accept(cx, &mut accept))
            .await
            .expect("accepted");
        assert_eq!(at, Duration::ZERO);
    })
    .await
    .expect("in time");
}

async fn listener(caps: Caps) -> (Incoming, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (
        Incoming::new(TcpIncoming::from(listener)).with_caps(caps),
        addr,
    )
}

/// Connects to `addr` and returns the client and, if the listener admits
/// it, the connection it accepted. A refused newcomer is closed at once,
/// which the client sees as the end of its stream.
async fn connect(incoming: &mut Incoming, addr: SocketAddr) -> (TcpStream, Option<Conn>) {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0; 1];
    let conn = tokio::select! {
        conn = incoming.next() => Some(conn.expect("listening").expect("accepted")),
        closed = client.read(&mut byte) => {
            assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
            None
        }
    };
    (client, conn)
}

/// Whether the server closed `conn` (a read of a closed one fails at once;
/// the clients here send nothing).
async fn closed(conn: &mut Conn) -> bool {
    let read = tokio::time::timeout(Duration::ZERO, conn.read(&mut [0; 1])).await;
    match read {
        Err(_pending) => false,
        Ok(Err(e)) => e.kind() == io::ErrorKind::ConnectionAborted,
        Ok(Ok(n)) => panic!("read {n} bytes the client never sent"),
    }
}

#[tokio::test]
async fn a_flood_on_one_listener_neither_fills_nor_empties_another() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let cap = Caps {
            per_ip: None,
            total: 2,
        };
        // The peer's public port, and its control port.
        let (mut public, public_addr) = listener(cap).await;
        let (mut control, control_addr) = listener(cap).await;

        // The public port is full...
        let mut flood = Vec::new();
        for _ in 0..2 {
            let (client, conn) = connect(&mut public, public_addr).await;
            flood.push((client, conn.expect("under the cap")));
        }
        // ...and the owner still connects to the control port (when
        // connections were counted in all, the cap of 2 was reached).
        let (_owner, owner) = connect(&mut control, control_addr).await;
        let mut owner = owner.expect("the control port has its own count");

        // All idle long enough to be evicted: the next flooding connection
        // makes room among the public port's, not by closing the owner's
        // (idle longest of all).
        all_idle().await;
        let (_client, newcomer) = connect(&mut public, public_addr).await;
        assert!(newcomer.is_some(), "room made for it");
        assert!(
            !closed(&mut owner).await,
            "the owner's control connection was evicted"
        );
        let mut evicted = 0;
        for (_, conn) in &mut flood {
            evicted += usize::from(closed(conn).await);
        }
        assert_eq!(evicted, 1, "one public connection makes room");
    })
    .await
    .expect("in time");
}

/// Lets every connection open now count as idle: the clock paused only for
/// that, as real sockets and a paused clock do not mix.
async fn all_idle() {
    tokio::time::pause();
    tokio::time::advance(EVICT_IDLE + Duration::from_secs(1)).await;
    tokio::time::resume();
}

#[tokio::test]
async fn newcomers_cannot_outrun_the_closes_that_make_room_for_them() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (mut incoming, addr) = listener(Caps {
            per_ip: None,
            total: 2,
        })
        .await;
        let mut open = Vec::new();
        for _ in 0..2 {
            open.push(connect(&mut incoming, addr).await);
        }
        // Each newcomer closes an idle connection to make room. The closed
        // ones are held here, as a busy server's tasks would before
        // dropping them: their descriptors are still in use.
        for n in 0..CLOSING_AHEAD {
            all_idle().await;
            let (client, conn) = connect(&mut incoming, addr).await;
            assert!(conn.is_some(), "newcomer {n} admitted");
            open.push((client, conn));
        }
        all_idle().await;
        let (_, refused) = connect(&mut incoming, addr).await;
        assert!(
            refused.is_none(),
            "admitted with {CLOSING_AHEAD} closes under way"
        );
        // Once the closed connections are gone, newcomers get room again.
        let mut live = Vec::new();
        for (client, conn) in open {
            let mut conn = conn.expect("admitted");
            if !closed(&mut conn).await {
                live.push((client, conn));
            }
        }
        assert_eq!(live.len(), 2, "two connections left under the cap");
        all_idle().await;
        let (_, admitted) = connect(&mut incoming, addr).await;
        assert!(admitted.is_some(), "room made once the closes were done");
    })
    .await
    .expect("in time");
}
