//! HTTP/2 below tonic, for abuse tests: gRPC calls over the `h2` crate with
//! chosen flow-control windows and bodies tonic would never send, and a raw
//! frame writer for what even `h2` refuses to do (floods, streams beyond the
//! server's limit, frames that make the server reset streams).

use std::{net::SocketAddr, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tonic::codegen::http;

/// One HTTP/2 connection driven by the `h2` crate.
pub struct H2 {
    pub send: SendRequest<Bytes>,
    pub addr: SocketAddr,
    /// Ends when the connection closes, with the reason.
    pub driver: JoinHandle<Result<(), h2::Error>>,
}

/// Connects with a receive window of `stream_window` bytes per stream (0:
/// the server may send no data at all).
pub async fn connect(addr: SocketAddr, stream_window: u32) -> H2 {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    handshake(tcp, addr, stream_window).await
}

/// Like [`connect`], from the local address `from` (another 127.0.0.x
/// stands for another host on loopback).
pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr, stream_window: u32) -> H2 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the source address");
    let tcp = socket.connect(addr).await.expect("connect");
    handshake(tcp, addr, stream_window).await
}

async fn handshake(tcp: TcpStream, addr: SocketAddr, stream_window: u32) -> H2 {
    tcp.set_nodelay(true).expect("nodelay");
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .max_concurrent_reset_streams(100_000)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(conn);
    H2 { send, addr, driver }
}

/// A gRPC message: the 5-byte prefix (not compressed, length) and `msg`.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + msg.len());
    buf.put_u8(0);
    buf.put_u32(msg.len() as u32);
    buf.put_slice(msg);
    buf.freeze()
}

/// The protobuf encoding of `msg`, as a gRPC message.
pub fn grpc_message<M: prost::Message>(msg: &M) -> Bytes {
    grpc_frame(&msg.encode_to_vec())
}

fn request(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A call in flight: its response, and its request stream (to reset it).
pub struct Call {
    pub response: ResponseFuture,
    pub stream: h2::SendStream<Bytes>,
}

impl H2 {
    /// Starts a call of `path` whose request body is `body`, sent whole.
    pub async fn call(&mut self, path: &str, body: Bytes) -> Result<Call, h2::Error> {
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(request(self.addr, path), false)?;
        stream.send_data(body, true)?;
        Ok(Call { response, stream })
    }

    /// A whole unary call: sends `body`, reads the answer to its end.
    pub async fn unary(&mut self, path: &str, body: Bytes) -> Result<Outcome, h2::Error> {
        let call = self.call(path, body).await?;
        finish(call.response).await
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status.
    pub http: u16,
    /// The gRPC status code (0 = OK).
    pub code: Option<i32>,
    pub message: String,
    /// Bytes of response body received.
    pub body: usize,
}

impl Outcome {
    pub fn code(&self) -> tonic::Code {
        tonic::Code::from_i32(self.code.unwrap_or(-1))
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(i32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok();
        match (bytes[i], hex()) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The response headers alone: a refusal comes as trailers-only headers
/// carrying `grpc-status`; an accepted stream has none yet.
pub async fn headers(
    response: ResponseFuture,
) -> Result<http::Response<h2::RecvStream>, h2::Error> {
    response.await
}

/// Reads a response to its end (draining the body as it comes).
pub async fn finish(response: ResponseFuture) -> Result<Outcome, h2::Error> {
    let response = response.await?;
    let http = response.status().as_u16();
    if let Some((code, message)) = grpc_status(response.headers()) {
        return Ok(Outcome {
            http,
            code: Some(code),
            message,
            body: 0,
        });
    }
    let mut len = 0;
    let trailers = drain(response.into_body(), |chunk| len += chunk.len()).await?;
    let (code, message) = grpc_status(&trailers).unzip();
    Ok(Outcome {
        http,
        code,
        message: message.unwrap_or_default(),
        body: len,
    })
}

/// A whole unary answer as it came: the body's DATA frames, and the gRPC
/// status from the trailers.
pub async fn frames(response: ResponseFuture) -> Result<(Vec<Bytes>, Option<i32>), h2::Error> {
    let mut frames = Vec::new();
    let trailers = drain(response.await?.into_body(), |chunk| frames.push(chunk)).await?;
    Ok((frames, grpc_status(&trailers).map(|(code, _)| code)))
}

/// Reads `body` to its end, handing each DATA frame to `each` and giving
/// its flow-control capacity back; returns the trailers.
async fn drain(
    mut body: h2::RecvStream,
    mut each: impl FnMut(Bytes),
) -> Result<http::HeaderMap, h2::Error> {
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        each(chunk);
    }
    Ok(body.trailers().await?.unwrap_or_default())
}

// ---- raw frames ------------------------------------------------------------

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// HTTP/2 frames written by hand into a buffer, to be sent in one go.
#[derive(Default)]
pub struct Frames(pub BytesMut);

impl Frames {
    /// The client preface and an empty SETTINGS frame.
    pub fn preface() -> Self {
        let mut f = Self::default();
        f.0.put_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        f.frame(SETTINGS, 0, 0, &[]);
        f
    }

    pub fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> &mut Self {
        let len = payload.len() as u32;
        self.0.put_slice(&len.to_be_bytes()[1..]);
        self.0.put_u8(kind);
        self.0.put_u8(flags);
        self.0.put_u32(stream & 0x7fff_ffff);
        self.0.put_slice(payload);
        self
    }

    /// A gRPC request's HEADERS (literal fields, no Huffman, no indexing).
    pub fn request_headers(&mut self, stream: u32, path: &str, end_stream: bool) -> &mut Self {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "hive"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            block.push(0x00);
            hpack_string(&mut block, name);
            hpack_string(&mut block, value);
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.frame(HEADERS, flags, stream, &block)
    }

    /// A whole gRPC request on `stream`: HEADERS, then DATA ending it.
    pub fn request(&mut self, stream: u32, path: &str, body: &[u8]) -> &mut Self {
        self.request_headers(stream, path, false);
        self.frame(DATA, END_STREAM, stream, body)
    }

    pub fn ping(&mut self, payload: u64) -> &mut Self {
        self.frame(PING, 0, 0, &payload.to_be_bytes())
    }

    pub fn rst_stream(&mut self, stream: u32, code: u32) -> &mut Self {
        self.frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    pub fn window_update(&mut self, stream: u32, increment: u32) -> &mut Self {
        self.frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
    }
}

fn hpack_string(out: &mut Vec<u8>, s: &str) {
    // A 7-bit prefixed length (RFC 7541 5.1), H = 0.
    let mut len = s.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128 + 128) as u8);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s.as_bytes());
}

/// What a server sent back on a raw connection, by frame type.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub frames: usize,
    pub headers: usize,
    pub data_bytes: usize,
    pub rst_streams: usize,
    pub pings: usize,
    /// The GOAWAY error code, if one came.
    pub goaway: Option<u32>,
    /// Whether the server closed the connection.
    pub closed: bool,
}

/// Reads frames from `tcp` until the server closes it, a GOAWAY has come
/// and `idle` passes with nothing more, or `idle` passes with nothing at all.
pub async fn read_frames<R: AsyncRead + Unpin>(tcp: &mut R, idle: Duration) -> Received {
    let mut got = Received::default();
    let mut buf = BytesMut::with_capacity(1 << 16);
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let frame = buf.split_to(9 + len);
            got.frames += 1;
            match kind {
                DATA => got.data_bytes += len,
                HEADERS => got.headers += 1,
                RST_STREAM => got.rst_streams += 1,
                PING => got.pings += 1,
                GOAWAY if len >= 8 => {
                    got.goaway = Some(u32::from_be_bytes([
                        frame[13], frame[14], frame[15], frame[16],
                    ]));
                }
                _ => {}
            }
        }
        match tokio::time::timeout(idle, tcp.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                got.closed = true;
                return got;
            }
            Ok(Ok(_)) => {}
            Err(_) => return got,
        }
    }
}

/// Opens a raw connection and sends the preface.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.write_all(&Frames::preface().0).await.expect("preface");
    tcp
}
