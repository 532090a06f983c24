//! Small answers in small DATA frames, so that h2 writes many answers with
//! one system call.
//!
//! h2 (0.4) copies a short DATA frame into its write buffer, but keeps a
//! longer one aside and must write it to the socket before it takes the
//! next frame of any stream (hyperium/h2#902): a server whose answers are a
//! few KiB, like the tracker's Locate, then makes a system call or two per
//! answer, against one per batch for a server of tiny answers. "Short" is
//! under 256 bytes on a transport with vectored writes and under 1,024
//! without. [`SmallFramesLayer`] cuts each response message of up to
//! [`SPLIT_UP_TO`] bytes into DATA frames of [`FRAME_BYTES`], for
//! connections accepted by [`super::incoming_small_answers`], which report
//! no vectored writes: h2 copies the frames into its buffer like any short
//! frame and writes them with the frames around them, five to a 4 KiB
//! answer. Larger messages (bulk streams) pass as they are.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The size of each frame a message is cut into: the largest h2 copies on a
/// transport without vectored writes (with them, 255 bytes).
pub const FRAME_BYTES: usize = 1023;
/// Messages larger than this are sent as they are: at most half of h2's
/// 16 KiB write buffer, so that one message never fills it by itself.
pub const SPLIT_UP_TO: usize = 8 * 1024;

/// A tower layer whose responses carry their bodies in [`SmallFrames`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SmallFramesLayer;

impl<S> tower::Layer<S> for SmallFramesLayer {
    type Service = SmallFramesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SmallFramesService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct SmallFramesService<S> {
    inner: S,
}

impl<S, Req, B> tower::Service<Req> for SmallFramesService<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<SmallFrames<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<SmallFrames<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(response.map(SmallFrames::new)))
    }
}

pin_project_lite::pin_project! {
    /// A body whose data frames of up to [`SPLIT_UP_TO`] bytes come out as
    /// frames of at most [`FRAME_BYTES`], in order; everything else (larger
    /// frames, trailers, errors) passes as it is.
    pub struct SmallFrames<B> {
        #[pin]
        inner: B,
        rest: Bytes,
    }
}

impl<B> SmallFrames<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
        }
    }
}

impl<B> Body for SmallFrames<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if !this.rest.is_empty() {
            let n = this.rest.len().min(FRAME_BYTES);
            return Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))));
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        match frame.into_data() {
            Ok(mut data) if data.len() > FRAME_BYTES && data.len() <= SPLIT_UP_TO => {
                let head = data.split_to(FRAME_BYTES);
                *this.rest = data;
                Poll::Ready(Some(Ok(Frame::data(head))))
            }
            Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Err(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        plus(&self.inner.size_hint(), self.rest.len() as u64)
    }
}

/// `inner`'s size hint with `extra` bytes held back ahead of it.
pub(crate) fn plus(inner: &SizeHint, extra: u64) -> SizeHint {
    let mut hint = SizeHint::new();
    if let Some(upper) = inner.upper() {
        hint.set_upper(upper + extra);
    }
    hint.set_lower(inner.lower() + extra);
    hint
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    /// The body's next frame; a body that stalls fails the test.
    async fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the body stalled")
    }

    /// Every frame `body` yields: data as its length, trailers as `None`.
    async fn frames<B: Body<Data = Bytes, Error = Infallible> + Unpin>(
        mut body: B,
    ) -> (Vec<Option<usize>>, Bytes) {
        let (mut out, mut data) = (Vec::new(), Vec::new());
        while let Some(frame) = next(&mut body).await {
            match frame.unwrap().into_data() {
                Ok(d) => {
                    out.push(Some(d.len()));
                    data.extend_from_slice(&d);
                }
                Err(_) => out.push(None),
            }
        }
        (out, data.into())
    }

    fn bytes(n: usize) -> Bytes {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_message_is_cut_into_small_frames_in_order() {
        let message = bytes(3000);
        let body = SmallFrames::new(Full::new(message.clone()));
        assert_eq!(body.size_hint().exact(), Some(3000));
        let (got, data) = frames(body).await;
        assert_eq!(got, [Some(1023), Some(1023), Some(954)]);
        assert_eq!(data, message);
    }

    #[tokio::test]
    async fn small_and_bulk_messages_and_trailers_pass_as_they_are() {
        let trailers = http::HeaderMap::from_iter([(
            http::header::HeaderName::from_static("grpc-status"),
            http::HeaderValue::from_static("0"),
        )]);
        let sent = [
            Frame::data(bytes(FRAME_BYTES)),
            Frame::data(bytes(SPLIT_UP_TO + 1)),
            Frame::data(bytes(FRAME_BYTES + 1)),
            Frame::trailers(trailers),
        ];
        let stream = tokio_stream::iter(sent.map(Ok::<_, Infallible>));
        let (got, data) = frames(SmallFrames::new(StreamBody::new(stream))).await;
        assert_eq!(
            got,
            [
                Some(FRAME_BYTES),
                Some(SPLIT_UP_TO + 1),
                Some(FRAME_BYTES),
                Some(1),
                None
            ]
        );
        assert_eq!(data.len(), 2 * FRAME_BYTES + SPLIT_UP_TO + 2);
    }

    #[tokio::test]
    async fn the_body_ends_only_after_its_last_piece() {
        let mut body = SmallFrames::new(Full::new(bytes(1100)));
        assert!(!body.is_end_stream());
        let first = next(&mut body).await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), FRAME_BYTES);
        // The inner body is spent, but 77 bytes are still to come.
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(77));
        next(&mut body).await.unwrap().unwrap();
        assert!(body.is_end_stream());
        assert!(next(&mut body).await.is_none());
    }
}
