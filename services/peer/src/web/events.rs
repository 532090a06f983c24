//! `GET /api/v1/events[?file=NAME]`: the live event stream, one connection
//! per page (server-sent events). A producer task sends, over a small
//! channel:
//!
//! - `transfers`: every transfer (as `GET /api/v1/transfers`), at once and
//!   then whenever one changes;
//! - `status`: the totals and rate caps, at once and when they change;
//! - `chunks`: with `file`, that file's chunks as they are asked for and
//!   arrive (`{name, chunks: [{chunk, state, from, title}]}`), batched;
//! - `resync`: chunk changes were missed; read the chunk map again.
//!
//! The stream ends when the daemon stops, so it never holds the server open.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Query, State},
    response::sse::{Event, KeepAlive, Sse},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};

use crate::fetch::origins::ChunkEvent;

use super::{
    Web,
    api::{Ops, status_json, transfer_json},
    chunks::{Cell, event_cell},
    reply::ApiError,
};

/// Chunk changes are sent at most this often, batched.
const CHUNKS_EVERY: Duration = Duration::from_millis(200);
/// Transfers and totals are looked at this often, and sent if changed.
const STATE_EVERY: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
pub struct EventsQuery {
    file: Option<String>,
}

pub async fn stream(
    State(web): State<Web>,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let file = q.file.map(crate::control::file_name).transpose()?;
    // Subscribed before answering: no change after the first event is missed.
    let chunks = web.origins.subscribe();
    let (tx, rx) = mpsc::channel(8);
    hive_runtime::task::spawn("web-events", produce(web, file, chunks, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

type Tx = mpsc::Sender<Result<Event, Infallible>>;

async fn produce(
    web: Web,
    file: Option<hive::FileName>,
    mut chunks: broadcast::Receiver<ChunkEvent>,
    tx: Tx,
) -> Result<(), ApiError> {
    let mut batch: Vec<Cell> = Vec::new();
    let mut last = (Value::Null, Value::Null);
    let mut state_tick = tokio::time::interval(STATE_EVERY);
    let mut chunk_tick = tokio::time::interval(CHUNKS_EVERY);
    loop {
        tokio::select! {
            _ = web.stop.cancelled() => return Ok(()),
            _ = tx.closed() => return Ok(()),
            _ = state_tick.tick() => {
                if !send_state(&web, &tx, &mut last).await? {
                    return Ok(());
                }
            }
            _ = chunk_tick.tick(), if !batch.is_empty() => {
                let name = file.as_ref().map(|f| f.as_str()).unwrap_or_default();
                let data = json!({ "name": name, "chunks": std::mem::take(&mut batch) });
                if !send(&tx, "chunks", &data).await {
                    return Ok(());
                }
            }
            got = chunks.recv() => match got {
                Ok(e) if file.as_ref() == Some(&e.name) => batch.push(event_cell(&e)),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    batch.clear();
                    if file.is_some() && !send(&tx, "resync", &json!({})).await {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Sends the transfers and the totals if they changed since `last`; false
/// once the page has gone.
async fn send_state(web: &Web, tx: &Tx, last: &mut (Value, Value)) -> Result<bool, ApiError> {
    let ops = Ops(web);
    let list = ops.transfers().await?;
    let transfers = json!(list.iter().map(transfer_json).collect::<Vec<_>>());
    if transfers != last.0 {
        if !send(tx, "transfers", &transfers).await {
            return Ok(false);
        }
        last.0 = transfers;
    }
    let mut status = status_json(&ops.status().await?, "");
    if let Some(s) = status.as_object_mut() {
        s.remove("csrf");
    }
    if status != last.1 {
        if !send(tx, "status", &status).await {
            return Ok(false);
        }
        last.1 = status;
    }
    Ok(true)
}

async fn send(tx: &Tx, name: &str, data: &Value) -> bool {
    let event = Event::default().event(name).data(data.to_string());
    tx.send(Ok(event)).await.is_ok()
}
