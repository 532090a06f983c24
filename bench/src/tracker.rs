//! A tracker client as a benchmark drives it: sessions registered on
//! distinct announced ports (the tracker keeps one live peer per address),
//! and the calls of the load mix, each with its session token.

use std::time::Duration;

use hive::{
    Manifest,
    pb::{tracker as pb, types},
};
use hive_runtime::grpc::TOKEN_METADATA;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

pub type Client = pb::tracker_client::TrackerClient<Channel>;

/// One channel (HTTP/2 connection) to `addr` (`host:port`), with hive's
/// transport settings and a 30 s deadline on every call: what the load's
/// callers use for the tracker and for the ping baseline alike.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(
        hive_runtime::grpc::endpoint(&hive_runtime::grpc::uri_of(addr))?
            .timeout(Duration::from_secs(30))
            .connect()
            .await?,
    )
}

/// A tracker client on its own [`channel`].
pub async fn connect(addr: &str) -> anyhow::Result<Client> {
    connect_with(addr, None).await
}

/// A tracker client on its own channel, over TLS with `tls` (`addr` then
/// `https://HOST:PORT`), as a peer dials it.
pub async fn connect_with(
    addr: &str,
    tls: Option<&hive_runtime::tls::Tls>,
) -> anyhow::Result<Client> {
    let channel = match tls {
        None => channel(addr).await?,
        Some(_) => {
            hive_runtime::grpc::dial(addr, tls)?
                .timeout(Duration::from_secs(30))
                .connect()
                .await?
        }
    };
    Ok(Client::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// A registered peer's credentials.
#[derive(Debug, Clone)]
pub struct Session {
    pub peer_id: String,
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl Session {
    /// `msg` as a request carrying this session's token.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert(TOKEN_METADATA, self.token.clone());
        req
    }
}

/// Registers a new peer announcing `port`, offering `files` (whole).
pub async fn register(
    client: &mut Client,
    port: u16,
    files: &[&Manifest],
) -> anyhow::Result<Session> {
    let files = files
        .iter()
        .map(|m| pb::SharedFile {
            manifest: Some(types::Manifest::from(*m)),
            chunks: vec![types::ChunkRange {
                first: 1,
                last: m.chunk_count(),
            }],
        })
        .collect();
    let out = client
        .register(pb::RegisterRequest {
            files,
            port: u32::from(port),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Session {
        peer_id: out.peer_id,
        token: out.token.parse()?,
    })
}

/// Adds (and withdraws) chunk ranges of `name` for `session`.
pub async fn register_chunk(
    client: &mut Client,
    session: &Session,
    name: &str,
    add: &[(u32, u32)],
    withdraw: &[(u32, u32)],
) -> Result<(), tonic::Status> {
    let ranges = |r: &[(u32, u32)]| {
        r.iter()
            .map(|&(first, last)| types::ChunkRange { first, last })
            .collect()
    };
    client
        .register_chunk(session.request(pb::RegisterChunkRequest {
            peer_id: session.peer_id.clone(),
            name: name.to_owned(),
            chunks: ranges(add),
            withdrawn: ranges(withdraw),
        }))
        .await?;
    Ok(())
}

pub async fn heartbeat(client: &mut Client, session: &Session) -> Result<(), tonic::Status> {
    client
        .heartbeat(session.request(pb::HeartbeatRequest {
            peer_id: session.peer_id.clone(),
        }))
        .await?;
    Ok(())
}

/// Locates `name`, asking for `max_holders` holders at most (0: the
/// tracker's cap); returns how many the answer listed. With `known`, the
/// file's digest, it asks as a running download does (the tracker leaves
/// the manifest out).
pub async fn locate(
    client: &mut Client,
    name: &str,
    known: Option<&[u8]>,
    max_holders: u32,
) -> Result<usize, tonic::Status> {
    let out = client
        .locate(pb::LocateRequest {
            name: name.to_owned(),
            known_digest: known.map(bytes::Bytes::copy_from_slice).unwrap_or_default(),
            max_holders,
        })
        .await?
        .into_inner();
    Ok(out.holders.len())
}
