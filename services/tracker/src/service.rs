//! The gRPC layer: each handler converts the request into domain types
//! (bad input is INVALID_ARGUMENT), calls the [`crate::Catalog`], and maps the
//! answer back; the conversions each way are the functions below the
//! handlers. Status codes are decided in [`crate::error`].

use std::{net::SocketAddr, ops::RangeInclusive, time::Duration};

use hive::{
    Digest, FileName, Manifest,
    pb::{tracker as pb, types},
    wire::{self, WireError},
};
use hive_runtime::grpc::TOKEN_METADATA;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{info, instrument};

use crate::{
    auth::{IdentityError, Member, PeerId, Token},
    catalog::SharedCatalog,
    error::ServiceError,
    limits::RateLimiter,
    registry::{Caller, Credentials, HolderView, Located, Offer, Page, RegistryError},
};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// A ListFiles page ends early once its files take this many bytes: a page
/// of large files with fragmented holders (up to 2 KiB of chunk bitmap a
/// holder) could otherwise pass the 4 MiB clients accept by default.
const MAX_PAGE_BYTES: usize = 1 << 20;

pub struct TrackerService {
    tracker: SharedCatalog,
    limiter: RateLimiter,
    trust_advertise: bool,
    heartbeat_interval: Duration,
    ttl: Duration,
}

impl TrackerService {
    pub fn new(tracker: SharedCatalog, config: &crate::Config) -> Self {
        Self {
            tracker,
            limiter: config.rate_limiter(),
            trust_advertise: config.trust_advertise,
            heartbeat_interval: config.heartbeat_interval,
            ttl: config.ttl,
        }
    }

    /// Where other peers should dial the caller: the address its request
    /// came from, with the port it serves on; its own word for the host only
    /// if the operator trusts advertised hosts.
    fn holder_addr(
        &self,
        remote: Option<SocketAddr>,
        host: &str,
        port: u32,
    ) -> Result<String, ServiceError> {
        let port = u16::try_from(port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| WireError::new("port", "must be 1-65535"))?;
        if self.trust_advertise && !host.is_empty() {
            return advertised(host, port);
        }
        let ip = remote
            .map(|r| r.ip().to_canonical())
            .ok_or_else(|| ServiceError::Invalid("the caller's address is unknown".into()))?;
        Ok(SocketAddr::new(ip, port).to_string())
    }
}

/// The frequent calls (Locate, RegisterChunk, Heartbeat, ListFiles) get
/// their spans at debug level: at the default `info` filter a span costs
/// nothing, and these calls log nothing of their own there.
#[tonic::async_trait]
impl pb::tracker_server::Tracker for TrackerService {
    #[instrument(skip_all, fields(files = request.get_ref().files.len()))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.limiter.check(&request)?;
        let member = member_of(&request);
        let (caller, offers) = self.register_request(request)?;
        let out = self
            .tracker
            .register(caller, offers)
            .await
            .map_err(|e| bound(e, member))?;
        match member {
            Some(member) => info!(peer = %out.peer, addr = %out.addr, %member, "registered"),
            None => info!(peer = %out.peer, addr = %out.addr, "registered"),
        }
        Ok(Response::new(pb::RegisterResponse {
            peer_id: out.peer.to_string(),
            token: out.token.map(|t| t.reveal().to_owned()).unwrap_or_default(),
            addr: out.addr,
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            ttl_ms: millis(self.ttl),
        }))
    }

    #[instrument(level = "debug", skip_all)]
    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        self.limiter.check(&request)?;
        let (after, limit) = page_request(request.get_ref())?;
        let page = self.tracker.list(after.as_ref(), limit).await?;
        Ok(Response::new(list_answer(page)))
    }

    #[instrument(level = "debug", skip_all, fields(name = %request.get_ref().name))]
    async fn locate(
        &self,
        request: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        self.limiter.check(&request)?;
        let (name, known, want) = locate_request(request.into_inner())?;
        let found = self.tracker.locate(&name, want).await?;
        Ok(Response::new(locate_answer(found, known)))
    }

    #[instrument(level = "debug", skip_all, fields(peer = %request.get_ref().peer_id, name = %request.get_ref().name))]
    async fn register_chunk(
        &self,
        request: Request<pb::RegisterChunkRequest>,
    ) -> Result<Response<pb::RegisterChunkResponse>, Status> {
        self.limiter.check(&request)?;
        let member = member_of(&request);
        let ChunkUpdate {
            cred,
            name,
            add,
            remove,
        } = chunk_request(request)?;
        let held = self
            .tracker
            .register_chunks(cred, &name, &add, &remove)
            .await
            .map_err(|e| bound(e, member))?;
        Ok(Response::new(pb::RegisterChunkResponse {
            chunks_held: held,
        }))
    }

    #[instrument(level = "debug", skip_all, fields(peer = %request.get_ref().peer_id))]
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.limiter.check_heartbeat(&request)?;
        let member = member_of(&request);
        let token = required_token(request.metadata())?;
        let cred = credentials(&request.get_ref().peer_id, token, member)?;
        self.tracker
            .heartbeat(cred)
            .await
            .map_err(|e| bound(e, member))?;
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            ttl_ms: millis(self.ttl),
        }))
    }

    #[instrument(skip_all, fields(peer = %request.get_ref().peer_id))]
    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.limiter.check(&request)?;
        let member = member_of(&request);
        let token = required_token(request.metadata())?;
        let cred = credentials(&request.get_ref().peer_id, token, member)?;
        self.tracker
            .leave(cred)
            .await
            .map_err(|e| bound(e, member))?;
        info!(peer = %cred.peer, "left");
        Ok(Response::new(pb::LeaveResponse {}))
    }

    #[instrument(skip_all, fields(peer = %request.get_ref().peer_id, name = %request.get_ref().name))]
    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WithdrawResponse>, Status> {
        self.limiter.check(&request)?;
        let member = member_of(&request);
        let token = required_token(request.metadata())?;
        let cred = credentials(&request.get_ref().peer_id, token, member)?;
        let name =
            wire::file_name("name", request.into_inner().name).map_err(ServiceError::from)?;
        self.tracker
            .withdraw(cred, &name)
            .await
            .map_err(|e| bound(e, member))?;
        info!(peer = %cred.peer, file = %name, "withdrawn");
        Ok(Response::new(pb::WithdrawResponse {}))
    }
}

impl TrackerService {
    /// A Register call's caller and offers: a new session at the caller's
    /// address, or the session its token is for.
    fn register_request(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<(Caller, Vec<Offer>), ServiceError> {
        let remote = request.remote_addr();
        let cert = hive_runtime::tls::client_cert(&request);
        let member = cert.as_ref().map(|der| Member::of_cert(der));
        let token = token(request.metadata())?;
        let req = request.into_inner();
        let offers = offers(req.files)?;
        let caller = match token {
            Some(token) => Caller::Session(credentials(&req.peer_id, token, member)?),
            None if !req.peer_id.is_empty() => return Err(IdentityError::MissingToken.into()),
            None => {
                let addr = self.holder_addr(remote, &req.advertise_host, req.port)?;
                if let Some(cert) = &cert {
                    claimable(cert, &addr)?;
                }
                Caller::New { addr, member }
            }
        };
        Ok((caller, offers))
    }
}

/// The member a request's TLS connection belongs to; `None` on plaintext.
fn member_of<T>(request: &Request<T>) -> Option<Member> {
    hive_runtime::tls::client_cert(request).map(|der| Member::of_cert(&der))
}

/// On a TLS connection a session's credentials that do not check out are a
/// member acting for a session that is not its own (a token stolen, or
/// guessed): PERMISSION_DENIED, as the caller is known by its certificate.
fn bound(e: ServiceError, member: Option<Member>) -> ServiceError {
    match (e, member) {
        (ServiceError::Registry(RegistryError::Unauthenticated), Some(member)) => {
            ServiceError::NotYourSession(member)
        }
        (e, _) => e,
    }
}

/// The rule for addresses on a TLS tracker: a member may hold only an
/// address whose host its certificate names, the name other members check
/// when they dial it. So no member can have downloaders sent to a host
/// named by another member's certificate only.
fn claimable(cert: &hive_runtime::tls::CertificateDer<'_>, addr: &str) -> Result<(), ServiceError> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    if hive_runtime::tls::names_host(cert, host) {
        Ok(())
    } else {
        Err(ServiceError::NotYourHost(host.to_owned()))
    }
}

/// A ListFiles call's page: the name to start after, and how many files.
fn page_request(req: &pb::ListFilesRequest) -> Result<(Option<FileName>, usize), ServiceError> {
    let after = match req.page_token.as_str() {
        "" => None,
        token => Some(wire::file_name("page_token", token.to_owned())?),
    };
    let limit = match req.page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    Ok((after, limit))
}

fn list_answer(page: Page) -> pb::ListFilesResponse {
    let summaries = page.files.into_iter().map(|f| pb::FileSummary {
        name: f.manifest.name().to_string(),
        size: f.manifest.size(),
        chunk_size: f.manifest.layout().chunk_size().get(),
        chunk_count: f.manifest.chunk_count(),
        digest: f.manifest.digest().as_bytes().to_vec().into(),
        holder_count: f.holder_count,
        holders: f.holders.into_iter().map(holder).collect(),
    });
    let next = page.next.map(String::from).unwrap_or_default();
    fit_page(summaries, next, MAX_PAGE_BYTES)
}

/// A Locate call's file, the manifest digest the caller has (if any), and
/// how many holders it wants.
fn locate_request(
    req: pb::LocateRequest,
) -> Result<(FileName, Option<Digest>, usize), ServiceError> {
    let name = wire::file_name("name", req.name)?;
    let known = match req.known_digest.is_empty() {
        true => None,
        false => Some(wire::digest("known_digest", &req.known_digest)?),
    };
    let want = usize::try_from(req.max_holders).unwrap_or(usize::MAX);
    Ok((name, known, want))
}

fn locate_answer(found: Located, known: Option<Digest>) -> pb::LocateResponse {
    // A caller that has this very manifest is spared it.
    let manifest =
        (known != Some(found.manifest.digest())).then(|| types::Manifest::from(&*found.manifest));
    pb::LocateResponse {
        manifest,
        holders: found.holders.into_iter().map(holder).collect(),
        chunk_holders: found.chunk_holders.into(),
        holder_count: found.holder_count,
    }
}

/// A RegisterChunk call, checked.
struct ChunkUpdate {
    cred: Credentials,
    name: FileName,
    add: Vec<RangeInclusive<u32>>,
    remove: Vec<RangeInclusive<u32>>,
}

fn chunk_request(request: Request<pb::RegisterChunkRequest>) -> Result<ChunkUpdate, ServiceError> {
    let member = member_of(&request);
    let token = required_token(request.metadata())?;
    let req = request.into_inner();
    Ok(ChunkUpdate {
        cred: credentials(&req.peer_id, token, member)?,
        name: wire::file_name("name", req.name)?,
        add: ranges(&req.chunks),
        remove: ranges(&req.withdrawn),
    })
}

/// The session token from the request metadata, if any.
fn token(metadata: &MetadataMap) -> Result<Option<Token>, ServiceError> {
    let Some(value) = metadata.get(TOKEN_METADATA) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| IdentityError::BadToken)?;
    Ok(Some(Token::parse(text)?))
}

fn required_token(metadata: &MetadataMap) -> Result<Token, ServiceError> {
    token(metadata)?.ok_or_else(|| IdentityError::MissingToken.into())
}

/// A session's credentials as presented over a connection of `member`
/// (see [`Token::hash_for`]).
fn credentials(
    peer_id: &str,
    token: Token,
    member: Option<Member>,
) -> Result<Credentials, ServiceError> {
    Ok(Credentials {
        peer: PeerId::parse(peer_id)?,
        token: token.hash_for(member.as_ref()),
    })
}

fn offers(files: Vec<pb::SharedFile>) -> Result<Vec<Offer>, ServiceError> {
    files
        .into_iter()
        .map(|f| {
            let manifest = Manifest::try_from(
                f.manifest
                    .ok_or_else(|| WireError::new("files.manifest", "missing"))?,
            )?;
            let chunks = wire::chunk_set("files.chunks", manifest.chunk_count(), &f.chunks)?;
            Ok(Offer { manifest, chunks })
        })
        .collect()
}

fn ranges(ranges: &[types::ChunkRange]) -> Vec<RangeInclusive<u32>> {
    ranges.iter().map(|r| r.first..=r.last).collect()
}

/// A ListFiles answer of `files` that takes at most `budget` bytes (always
/// at least one file); when files are left out, the page token points
/// past the last one kept, so the next page starts with them.
fn fit_page(
    files: impl Iterator<Item = pb::FileSummary>,
    next_page_token: String,
    budget: usize,
) -> pb::ListFilesResponse {
    let mut page = pb::ListFilesResponse {
        files: Vec::new(),
        next_page_token,
    };
    let mut used = 0;
    for file in files {
        let len = prost::Message::encoded_len(&file);
        if let Some(last) = page.files.last()
            && used + len > budget
        {
            page.next_page_token = last.name.clone();
            break;
        }
        used += len;
        page.files.push(file);
    }
    page
}

fn holder(h: HolderView) -> pb::Holder {
    let (chunks, chunk_bitmap) = wire::holder_chunk_fields(&h.chunks);
    pb::Holder {
        peer_id: h.peer.to_hex(),
        addr: h.addr,
        chunk_count: h.chunks.len(),
        chunks,
        confirmed: h.confirmed,
        chunk_bitmap,
    }
}

/// `host:port` for an advertised host: a DNS name or an IP literal.
fn advertised(host: &str, port: u16) -> Result<String, ServiceError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    let dns_ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !dns_ok {
        return Err(WireError::new("advertise_host", "not a host name or IP address").into());
    }
    Ok(format!("{host}:{port}"))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, holders: usize) -> pb::FileSummary {
        pb::FileSummary {
            name: name.into(),
            holder_count: holders as u32,
            holders: (0..holders)
                .map(|i| pb::Holder {
                    peer_id: format!("{i:016x}"),
                    addr: format!("10.0.0.{i}:65050"),
                    chunk_count: 8_192,
                    chunk_bitmap: vec![0x55; 2_048].into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pages_end_early_when_their_files_pass_the_byte_budget() {
        let files = || ["a", "b", "c", "d"].into_iter().map(|n| summary(n, 10));
        let one = prost::Message::encoded_len(&summary("a", 10));

        // Room for two and a half files: two, and the next page starts at c.
        let page = fit_page(files(), "d".into(), one * 5 / 2);
        let names: Vec<_> = page.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            (names, page.next_page_token.as_str()),
            (vec!["a", "b"], "b")
        );
        assert!(prost::Message::encoded_len(&page) <= one * 5 / 2 + 16);

        // Within the budget: the page and its token are the registry's.
        let page = fit_page(files(), "d".into(), one * 4);
        assert_eq!((page.files.len(), page.next_page_token.as_str()), (4, "d"));
        let page = fit_page(files(), String::new(), one * 4);
        assert_eq!(page.next_page_token, "", "the last page stays the last");

        // One file larger than the budget still comes, alone.
        let page = fit_page(files(), String::new(), 10);
        let names: Vec<_> = page.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!((names, page.next_page_token.as_str()), (vec!["a"], "a"));
    }
}
