//! Answers held for clients that do not read them (docs/RELIABILITY.md:
//! RE-6). hyper takes a response body's next frame, then waits for the
//! client's flow-control window before handing it to h2 and asking for
//! another; a client that keeps its windows at 0 thus pins every answer it
//! asked for, whole, for as long as its connection lives. [`BoundedAnswersLayer`]
//! bounds that:
//! - each answer's bytes are charged to one budget per server, and to its
//!   source address's share of it (a quarter), from the moment the body
//!   yields them until hyper comes back for more (it has handed them to h2)
//!   or the body is dropped; while the budget or the caller's share is
//!   spent, new calls (Health excepted) get RESOURCE_EXHAUSTED, before the
//!   handler runs or, for an answer made meanwhile, in place of it. The
//!   share keeps one address from refusing everyone else;
//! - an answer is handed to hyper in pieces of at most `piece` bytes, so
//!   that h2 never queues more than one piece of it beyond the client's
//!   window: the rest waits, charged, in the body;
//! - a body whose client has not taken its last piece within the send
//!   deadline ends its connection, the one way a server can end a stream
//!   hyper will not poll (see [`super::abort_connection`]); every answer on
//!   it is freed then.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use self::deadline::connections_ended;
use self::deadline::{Watch, now_ms, watch};

/// Calls to this service are never refused for want of budget.
const EXEMPT_PREFIX: &str = "/grpc.health.v1.Health/";
/// One source address may hold this fraction of the budget.
const SHARE_DIVISOR: usize = 4;
/// Shares of addresses with nothing charged are forgotten past this many.
const SHARES_KEPT: usize = 1024;

type Share = Arc<AtomicUsize>;

/// The bytes of answers not yet taken by their clients, against a limit.
#[derive(Debug)]
pub struct AnswerBudget {
    limit: usize,
    used: AtomicUsize,
    deadline: Duration,
    shares: Mutex<HashMap<IpAddr, Share>>,
}

impl AnswerBudget {
    fn new(limit: usize, deadline: Duration) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            deadline,
            shares: Mutex::default(),
        }
    }

    /// Whether the budget, or `share` of it, is spent.
    fn spent(&self, share: Option<&Share>) -> bool {
        self.used.load(Ordering::Relaxed) >= self.limit
            || share.is_some_and(|s| s.load(Ordering::Relaxed) >= self.limit / SHARE_DIVISOR)
    }

    fn share_of(&self, ip: IpAddr) -> Share {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        if shares.len() >= SHARES_KEPT && !shares.contains_key(&ip) {
            shares.retain(|_, s| Arc::strong_count(s) > 1);
        }
        shares.entry(ip).or_default().clone()
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn refusal(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "the server holds as many answers its clients have not read as it may \
             (--answer-budget-mib {} MiB, a quarter of it per address); try again shortly",
            self.limit >> 20
        ))
    }
}

/// Puts every response body of a server under one [`AnswerBudget`].
#[derive(Debug, Clone)]
pub struct BoundedAnswersLayer {
    budget: Arc<AnswerBudget>,
    piece: usize,
}

impl BoundedAnswersLayer {
    /// A budget of `limit` bytes, a send deadline, and answers handed to
    /// hyper `piece` bytes at a time (`usize::MAX`: as they come, for
    /// bulk streams whose messages are already bounded).
    pub fn new(limit: usize, deadline: Duration, piece: usize) -> Self {
        Self {
            budget: Arc::new(AnswerBudget::new(limit, deadline)),
            piece: piece.max(1),
        }
    }

    pub fn budget(&self) -> Arc<AnswerBudget> {
        self.budget.clone()
    }
}

impl<S> tower::Layer<S> for BoundedAnswersLayer {
    type Service = BoundedAnswers<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundedAnswers {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BoundedAnswers<S> {
    inner: S,
    layer: BoundedAnswersLayer,
}

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for BoundedAnswers<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<B>>,
{
    type Response = http::Response<Bounded<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let exempt = req.uri().path().starts_with(EXEMPT_PREFIX);
        let budget = self.layer.budget.clone();
        let conn = super::conn_addrs(req.extensions());
        let share = conn.map(|(_, remote)| budget.share_of(remote.ip()));
        if !exempt && budget.spent(share.as_ref()) {
            // The inner services (routes, body layers) reserve nothing in
            // `poll_ready`, so not calling them is fine.
            return ResponseFuture::Refused {
                status: Some(budget.refusal()),
            };
        }
        let answer = Answer {
            budget,
            share,
            piece: self.layer.piece,
            conn,
            exempt,
        };
        ResponseFuture::Called {
            inner: self.inner.call(req),
            answer: Some(answer),
        }
    }
}

/// What a body needs to know of its call.
struct Answer {
    budget: Arc<AnswerBudget>,
    share: Option<Share>,
    piece: usize,
    conn: Option<(SocketAddr, SocketAddr)>,
    exempt: bool,
}

pin_project_lite::pin_project! {
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F> {
        Called { #[pin] inner: F, answer: Option<Answer> },
        Refused { status: Option<tonic::Status> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Bounded<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Called { inner, answer } => {
                let response = ready!(inner.poll(cx))?;
                let answer = answer.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(|body| Bounded::new(body, answer))))
            }
            ResponseFutureProj::Refused { status } => {
                let status = status.take().expect("polled after completion");
                let response = status.into_http::<()>();
                Poll::Ready(Ok(response.map(|()| Bounded::empty())))
            }
        }
    }
}

/// Bytes charged to a budget and a share of it, given back when dropped.
struct Charge {
    budget: Arc<AnswerBudget>,
    share: Option<Share>,
    bytes: usize,
}

impl Charge {
    fn add(&mut self, n: usize) {
        self.budget.used.fetch_add(n, Ordering::Relaxed);
        if let Some(share) = &self.share {
            share.fetch_add(n, Ordering::Relaxed);
        }
        self.bytes += n;
    }

    fn release(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.budget.used.fetch_sub(n, Ordering::Relaxed);
        if let Some(share) = &self.share {
            share.fetch_sub(n, Ordering::Relaxed);
        }
        self.bytes -= n;
    }

    fn spent(&self) -> bool {
        self.budget.spent(self.share.as_ref())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release(self.bytes);
    }
}

pin_project_lite::pin_project! {
    /// A response body under a budget; see the module's documentation.
    pub struct Bounded<B> {
        #[pin]
        inner: Option<B>,
        charge: Option<Charge>,
        piece: usize,
        conn: Option<(SocketAddr, SocketAddr)>,
        exempt: bool,
        // Data taken from `inner` and not yet handed to hyper.
        rest: Bytes,
        // The size of the piece hyper has; charged until it comes back.
        handed: usize,
        data_seen: bool,
        watch: Option<Arc<Watch>>,
    }
}

impl<B> Bounded<B> {
    fn new(inner: B, answer: Answer) -> Self {
        Self {
            inner: Some(inner),
            charge: Some(Charge {
                budget: answer.budget,
                share: answer.share,
                bytes: 0,
            }),
            piece: answer.piece,
            conn: answer.conn,
            exempt: answer.exempt,
            rest: Bytes::new(),
            handed: 0,
            data_seen: false,
            watch: None,
        }
    }

    /// A body with nothing in it: a refusal's status is in its headers.
    fn empty() -> Self {
        Self {
            inner: None,
            charge: None,
            piece: usize::MAX,
            conn: None,
            exempt: true,
            rest: Bytes::new(),
            handed: 0,
            data_seen: true,
            watch: None,
        }
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        // hyper is back: the piece it had is with h2 now.
        if let Some(charge) = this.charge.as_mut() {
            charge.release(std::mem::take(this.handed));
        }
        if let Some(watch) = this.watch.as_ref() {
            watch.since.store(0, Ordering::Relaxed);
        }
        if this.rest.is_empty() {
            let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                return Poll::Ready(None);
            };
            let frame = match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                other => return Poll::Ready(other),
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            let charge = this.charge.as_mut().expect("a called body is charged");
            if !std::mem::replace(this.data_seen, true) && !*this.exempt && charge.spent() {
                // Made while the budget was spent: refused in its place.
                let mut trailers = http::HeaderMap::new();
                let _ = charge.budget.refusal().add_header(&mut trailers);
                this.inner.set(None);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            charge.add(data.len());
            *this.rest = data;
        }
        let n = this.rest.len().min(*this.piece);
        *this.handed = n;
        let piece = this.rest.split_to(n);
        if let Some(conn) = *this.conn {
            let budget = &this.charge.as_ref().expect("charged").budget;
            let watch = this
                .watch
                .get_or_insert_with(|| watch(conn, budget.deadline));
            watch.since.store(now_ms().max(1), Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let Some(inner) = self.inner.as_ref() else {
            return SizeHint::with_exact(rest);
        };
        super::frames::plus(&inner.size_hint(), rest)
    }
}

mod deadline;

#[cfg(test)]
mod tests;
