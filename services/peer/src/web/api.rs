//! The JSON API under `/api/v1/` (docs/WEB.md lists every endpoint). Each
//! handler converts the request, calls the Control service's own handler
//! (the one gRPC callers reach) and maps its answer to JSON; the operations
//! the pages' forms run are here too ([`Ops`]), so a form and its JSON twin
//! are one code path.

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
    routing::{get, post},
};
use hive::pb::{control as pb, control::control_server::Control, tracker as trk};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Request;

use super::{Web, chunks, events, reply::ApiError};

type Answer = Result<Json<Value>, ApiError>;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/transfers", get(transfers).post(fetch))
        .route("/api/v1/transfers/{name}", get(transfer))
        .route("/api/v1/transfers/{name}/pause", post(pause))
        .route("/api/v1/transfers/{name}/resume", post(resume))
        .route("/api/v1/transfers/{name}/cancel", post(cancel))
        .route("/api/v1/files", get(files))
        .route("/api/v1/files/{name}/unshare", post(unshare))
        .route("/api/v1/files/{name}/chunks", get(chunk_map))
        .route("/api/v1/limits", get(limits).put(set_limits))
        .route("/api/v1/tracker/files", get(tracker_files))
        .route("/api/v1/events", get(events::stream))
}

/// The operations, on the Control service: what the JSON handlers and the
/// pages' forms both run.
pub struct Ops<'a>(pub &'a Web);

impl Ops<'_> {
    pub async fn status(&self) -> Result<pb::StatusResponse, ApiError> {
        Ok(self
            .0
            .control
            .status(Request::new(pb::StatusRequest {}))
            .await?
            .into_inner())
    }

    pub async fn transfers(&self) -> Result<Vec<pb::Transfer>, ApiError> {
        let list = self
            .0
            .control
            .list_transfers(Request::new(pb::ListTransfersRequest {}))
            .await?;
        Ok(list.into_inner().transfers)
    }

    /// Starts a daemon-owned transfer of `name` (nobody follows it here).
    pub async fn fetch(&self, name: String, max_rate: u64) -> Result<(), ApiError> {
        let req = pb::FetchRequest {
            name,
            max_rate,
            detach: true,
            ..Default::default()
        };
        // Detached: the stream ends at once, the transfer runs on.
        self.0.control.fetch(Request::new(req)).await?;
        Ok(())
    }

    pub async fn act(&self, name: String, action: Action) -> Result<pb::Transfer, ApiError> {
        let control = &self.0.control;
        let req = || Request::new(pb::TransferRequest { name: name.clone() });
        let answer = match action {
            Action::Pause => control.pause_transfer(req()).await?,
            Action::Resume => control.resume_transfer(req()).await?,
            Action::Cancel { remove } => {
                let req = pb::CancelTransferRequest {
                    name: name.clone(),
                    remove,
                };
                control.cancel_transfer(Request::new(req)).await?
            }
        };
        Ok(answer.into_inner())
    }

    pub async fn unshare(&self, name: String) -> Result<(), ApiError> {
        let req = Request::new(pb::UnshareRequest { name });
        self.0.control.unshare(req).await?;
        Ok(())
    }

    pub async fn set_limits(
        &self,
        up: Option<u64>,
        down: Option<u64>,
    ) -> Result<pb::SetLimitsResponse, ApiError> {
        let req = pb::SetLimitsRequest {
            max_upload_rate: up,
            max_download_rate: down,
        };
        Ok(self
            .0
            .control
            .set_limits(Request::new(req))
            .await?
            .into_inner())
    }

    /// One page of the tracker's files, as ListFiles pages them.
    pub async fn tracker_files(
        &self,
        page_size: u32,
        page_token: String,
    ) -> Result<trk::ListFilesResponse, ApiError> {
        let req = trk::ListFilesRequest {
            page_size,
            page_token,
        };
        Ok(self.0.control.link.list_files(req).await?)
    }

    /// The chunk map of `name`.
    pub fn chunk_map(&self, raw: String) -> Result<chunks::ChunkMap, ApiError> {
        let name = crate::control::file_name(raw)?;
        let origins = self.0.origins.of(&name);
        chunks::chunk_map(&self.0.control.overview.holdings, &origins, &name)
            .ok_or_else(|| chunks::not_held(&name).into())
    }
}

pub enum Action {
    Pause,
    Resume,
    Cancel { remove: bool },
}

async fn status(State(web): State<Web>) -> Answer {
    let s = Ops(&web).status().await?;
    Ok(Json(status_json(&s, web.guard.csrf())))
}

pub fn status_json(s: &pb::StatusResponse, csrf: &str) -> Value {
    json!({
        "peer_id": s.peer_id, "tracker": s.tracker, "trackers": s.trackers,
        "addr": s.addr, "listen": s.listen, "web_url": s.web_url,
        "bytes_served": s.bytes_served, "bytes_fetched": s.bytes_fetched,
        "uploads_active": s.uploads_active, "downloads_active": s.downloads_active,
        "uploads_queued": s.uploads_queued, "uploads_cut": s.uploads_cut,
        "uploads_refused": s.uploads_refused,
        "max_upload_rate": s.max_upload_rate, "max_download_rate": s.max_download_rate,
        "csrf": csrf,
    })
}

async fn transfers(State(web): State<Web>) -> Answer {
    let list = Ops(&web).transfers().await?;
    Ok(Json(json!({
        "transfers": list.iter().map(transfer_json).collect::<Vec<_>>()
    })))
}

async fn transfer(State(web): State<Web>, Path(name): Path<String>) -> Answer {
    let name = crate::control::file_name(name)?;
    let list = Ops(&web).transfers().await?;
    let found = list
        .iter()
        .find(|t| t.name == name.as_str())
        .ok_or_else(|| {
            crate::error::PeerError::NotFound(format!(
                "no transfer of {name:?}; GET /api/v1/transfers lists them"
            ))
        })?;
    Ok(Json(transfer_json(found)))
}

#[derive(Deserialize)]
struct FetchBody {
    name: String,
    #[serde(default)]
    max_rate: u64,
}

async fn fetch(
    State(web): State<Web>,
    body: Result<Json<FetchBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let ops = Ops(&web);
    let name = crate::control::file_name(body.name.clone())?;
    ops.fetch(body.name, body.max_rate).await?;
    let list = ops.transfers().await?;
    let t = list.iter().find(|t| t.name == name.as_str());
    Ok((
        StatusCode::ACCEPTED,
        Json(
            t.map(transfer_json)
                .unwrap_or(json!({ "name": name.as_str() })),
        ),
    ))
}

async fn pause(State(web): State<Web>, Path(name): Path<String>) -> Answer {
    let t = Ops(&web).act(name, Action::Pause).await?;
    Ok(Json(transfer_json(&t)))
}

async fn resume(State(web): State<Web>, Path(name): Path<String>) -> Answer {
    let t = Ops(&web).act(name, Action::Resume).await?;
    Ok(Json(transfer_json(&t)))
}

#[derive(Deserialize)]
struct CancelQuery {
    #[serde(default)]
    remove: bool,
}

async fn cancel(
    State(web): State<Web>,
    Path(name): Path<String>,
    Query(q): Query<CancelQuery>,
) -> Answer {
    let t = Ops(&web)
        .act(name, Action::Cancel { remove: q.remove })
        .await?;
    Ok(Json(transfer_json(&t)))
}

async fn files(State(web): State<Web>) -> Answer {
    let s = Ops(&web).status().await?;
    Ok(Json(json!({
        "files": s.files.iter().map(crate::json::local_file).collect::<Vec<_>>()
    })))
}

async fn unshare(State(web): State<Web>, Path(name): Path<String>) -> Answer {
    Ops(&web).unshare(name).await?;
    Ok(Json(json!({})))
}

async fn chunk_map(State(web): State<Web>, Path(name): Path<String>) -> Answer {
    let map = Ops(&web).chunk_map(name)?;
    Ok(Json(json!(map)))
}

async fn limits(State(web): State<Web>) -> Answer {
    let s = Ops(&web).status().await?;
    Ok(Json(json!({
        "max_upload_rate": s.max_upload_rate,
        "max_download_rate": s.max_download_rate,
    })))
}

#[derive(Deserialize)]
struct LimitsBody {
    max_upload_rate: Option<u64>,
    max_download_rate: Option<u64>,
}

async fn set_limits(
    State(web): State<Web>,
    body: Result<Json<LimitsBody>, JsonRejection>,
) -> Answer {
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let set = Ops(&web)
        .set_limits(body.max_upload_rate, body.max_download_rate)
        .await?;
    Ok(Json(json!({
        "max_upload_rate": set.max_upload_rate,
        "max_download_rate": set.max_download_rate,
    })))
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

async fn tracker_files(State(web): State<Web>, Query(q): Query<PageQuery>) -> Answer {
    let page = Ops(&web).tracker_files(q.page_size, q.page_token).await?;
    let files: Vec<Value> = page.files.iter().map(crate::json::tracker_file).collect();
    Ok(Json(json!({
        "files": files,
        "next_page_token": page.next_page_token,
    })))
}

/// A transfer as the API shows it; `state` is the proto's name without its
/// prefix, lower case (`running`).
pub fn transfer_json(t: &pb::Transfer) -> Value {
    let state = pb::TransferState::try_from(t.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TRANSFER_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    json!({
        "name": t.name, "state": state, "reason": t.reason, "size": t.size,
        "chunk_count": t.chunk_count, "bytes_done": t.bytes_done,
        "chunks_done": t.chunks_done, "rate": t.rate, "eta_seconds": t.eta_seconds,
        "holders_active": t.holders_active, "holders": t.holders, "path": t.path,
        "hook": t.hook,
    })
}
