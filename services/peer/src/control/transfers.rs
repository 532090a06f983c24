//! The transfers' RPCs at the wire: a transfer as the proto says it, and
//! WatchTransfer's stream.

use std::{pin::Pin, time::Duration};

use hive::{FileName, pb::control as pb, wire};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;

use crate::{
    error::PeerError,
    transfers::{Info, Shown, Transfers},
};

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Transfer, Status>> + Send>>;

/// A watcher is sent the transfer this often.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub fn name(raw: String) -> Result<FileName, PeerError> {
    Ok(wire::file_name("name", raw)?)
}

/// Follows `name` until it ends, is cancelled, or the caller goes away.
pub async fn watch(transfers: &Transfers, name: FileName) -> Result<WatchStream, PeerError> {
    let Some(first) = transfers.get(name.clone()).await? else {
        return Err(PeerError::NotFound(format!(
            "no transfer of {name:?}; `peerctl transfers` lists them"
        )));
    };
    let (tx, rx) = mpsc::channel(4);
    let transfers = transfers.clone();
    hive_runtime::task::spawn("watch-transfer", async move {
        let mut info = Some(first);
        while let Some(now) = info {
            let ended = now.state.ended();
            if tx.send(Ok(transfer(&now))).await.is_err() || ended {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = tx.closed() => break,
            }
            info = transfers.get(name.clone()).await?;
        }
        Ok::<(), PeerError>(())
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

pub fn transfer(i: &Info) -> pb::Transfer {
    let state = match i.state {
        Shown::Queued => pb::TransferState::Queued,
        Shown::Running => pb::TransferState::Running,
        Shown::Stalled => pb::TransferState::Stalled,
        Shown::Paused => pb::TransferState::Paused,
        Shown::Done => pb::TransferState::Done,
        Shown::Failed => pb::TransferState::Failed,
    };
    pb::Transfer {
        name: i.name.to_string(),
        state: state as i32,
        reason: i.reason.clone(),
        size: i.size,
        chunk_count: i.chunk_count,
        bytes_done: i.bytes_done,
        chunks_done: i.chunks_done,
        rate: i.rate,
        eta_seconds: i.eta.map_or(0, |d| d.as_secs()),
        holders_active: i.holders_active,
        holders: i.holders,
        path: i
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        hook: i.hook.clone().unwrap_or_default(),
    }
}
