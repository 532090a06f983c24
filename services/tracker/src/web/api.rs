//! `/api/v1/...`: the JSON API, read-only. Each handler is one operation
//! of [`super::ops`] and its answer as JSON; a refusal is its HTTP status
//! and `{"error": "..."}`. The shapes are documented in docs/WEB.md.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{PageQuery, Refusal, Web, ops};
use crate::registry::{HeldView, HolderView, PeerView};

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Error {
            error: String,
        }
        (
            self.status,
            Json(Error {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// A file as the list and its own page show it.
#[derive(Debug, Serialize)]
pub struct FileJson {
    pub name: String,
    pub size: u64,
    pub chunk_size: u32,
    pub chunk_count: u32,
    /// BLAKE3 of the manifest, hex.
    pub digest: String,
    /// Live holders.
    pub holder_count: u32,
}

impl FileJson {
    fn of(m: &hive::Manifest, holder_count: u32) -> Self {
        Self {
            name: m.name().to_string(),
            size: m.size(),
            chunk_size: m.layout().chunk_size().get(),
            chunk_count: m.chunk_count(),
            digest: m.digest().to_hex(),
            holder_count,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ListedJson {
    #[serde(flatten)]
    pub file: FileJson,
    /// Chunks at least one live holder has.
    pub available_chunks: u32,
    /// The fewest live holders of any chunk (capped at 255).
    pub rarest_chunk_holders: u8,
}

#[derive(Debug, Serialize)]
pub struct HolderJson {
    pub peer_id: String,
    pub addr: String,
    pub chunks_held: u32,
    /// False for a peer restored after a tracker restart that has not
    /// heartbeated since.
    pub confirmed: bool,
}

impl From<&HolderView> for HolderJson {
    fn from(h: &HolderView) -> Self {
        Self {
            peer_id: h.peer.to_hex(),
            addr: h.addr.clone(),
            chunks_held: h.chunks.len(),
            confirmed: h.confirmed,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PeerJson {
    pub peer_id: String,
    pub addr: String,
    pub since_heartbeat_ms: u64,
    pub confirmed: bool,
    pub file_count: u32,
    /// The first files in name order (at most ops::FILES_PER_PEER).
    pub files: Vec<HeldJson>,
}

#[derive(Debug, Serialize)]
pub struct HeldJson {
    pub name: String,
    pub chunks_held: u32,
    pub chunk_count: u32,
}

impl From<&PeerView> for PeerJson {
    fn from(p: &PeerView) -> Self {
        Self {
            peer_id: p.peer.to_hex(),
            addr: p.addr.clone(),
            since_heartbeat_ms: p.since_heartbeat.as_millis().try_into().unwrap_or(u64::MAX),
            confirmed: p.confirmed,
            file_count: p.file_count,
            files: p.files.iter().map(HeldJson::from).collect(),
        }
    }
}

impl From<&HeldView> for HeldJson {
    fn from(h: &HeldView) -> Self {
        Self {
            name: h.name.to_string(),
            chunks_held: h.chunks,
            chunk_count: h.chunk_count,
        }
    }
}

/// The query string, or 400 naming what is wrong with it.
pub(super) fn page_query(
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<PageQuery, Refusal> {
    q.map(|Query(q)| q).map_err(|e| {
        Refusal::bad_request(format!(
            "bad query string (page_token, page_size): {}",
            e.body_text()
        ))
    })
}

/// `GET /api/v1/files`: ListFiles, with each file's availability.
pub async fn files(
    State(web): State<Web>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Refusal> {
    #[derive(Serialize)]
    struct Answer {
        files: Vec<ListedJson>,
        next_page_token: Option<String>,
    }
    let page = ops::files(&web.catalog, &page_query(q)?).await?;
    Ok(Json(Answer {
        files: page
            .files
            .iter()
            .map(|f| ListedJson {
                file: FileJson::of(&f.view.manifest, f.view.holder_count),
                available_chunks: f.available,
                rarest_chunk_holders: f.rarest,
            })
            .collect(),
        next_page_token: page.next.map(String::from),
    }))
}

/// `GET /api/v1/files/NAME`: Locate's counts, and a page of the holders.
pub async fn file(
    State(web): State<Web>,
    Path(name): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Refusal> {
    #[derive(Serialize)]
    struct Answer {
        file: FileJson,
        /// Live holders of each chunk, chunk 1 first, capped at 255.
        chunk_holders: Vec<u8>,
        holders: Vec<HolderJson>,
        next_page_token: Option<String>,
    }
    let (found, page) = ops::file(&web.catalog, &name, &page_query(q)?).await?;
    Ok(Json(Answer {
        file: FileJson::of(&found.manifest, found.holder_count),
        chunk_holders: found.chunk_holders,
        holders: page.holders.iter().map(HolderJson::from).collect(),
        next_page_token: page.next.map(|p| p.to_hex()),
    }))
}

/// `GET /api/v1/peers`: live peers, in id order.
pub async fn peers(
    State(web): State<Web>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Refusal> {
    #[derive(Serialize)]
    struct Answer {
        peers: Vec<PeerJson>,
        next_page_token: Option<String>,
    }
    let page = ops::peers(&web.catalog, &page_query(q)?).await?;
    Ok(Json(Answer {
        peers: page.peers.iter().map(PeerJson::from).collect(),
        next_page_token: page.next.map(|p| p.to_hex()),
    }))
}

/// `GET /api/v1/stats`: the catalog's sizes and the calls by RPC.
pub async fn stats(State(web): State<Web>) -> Result<impl IntoResponse, Refusal> {
    #[derive(Serialize)]
    struct Rpc {
        method: String,
        calls: u64,
        failed: u64,
        per_sec: Option<f64>,
    }
    #[derive(Serialize)]
    struct Answer {
        peers: usize,
        files: usize,
        holdings: usize,
        catalog_bytes: u64,
        rpcs: Vec<Rpc>,
        rate_window_secs: f64,
    }
    let stats = ops::stats(&web.catalog).await?;
    let rates = web.rates.now();
    Ok(Json(Answer {
        peers: stats.peers,
        files: stats.files,
        holdings: stats.holdings,
        catalog_bytes: stats.catalog_bytes,
        rpcs: rates
            .rpcs
            .into_iter()
            .map(|r| Rpc {
                method: r.method,
                calls: r.calls.total,
                failed: r.calls.failed,
                per_sec: r.per_sec,
            })
            .collect(),
        rate_window_secs: rates.window.as_secs_f64(),
    }))
}
