//! `peerctl transfers | watch | pause | resume | cancel`: the transfers the
//! daemon owns.

use std::time::Duration;

use hive::pb::control::{self as ctl, TransferState};
use serde_json::{Value, json};

use crate::{
    Failure, Outcome,
    output::{bytes, table},
};

pub enum Act {
    Pause,
    Resume,
    Cancel { remove: bool },
}

pub async fn list(mut client: crate::target::Ctl, json: bool) -> Outcome {
    let list = client
        .list_transfers(ctl::ListTransfersRequest {})
        .await?
        .into_inner()
        .transfers;
    if json {
        let all: Vec<Value> = list.iter().map(to_json).collect();
        outln!("{}", json!({ "transfers": all }));
        return Ok(());
    }
    if list.is_empty() {
        outln!("no transfers");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list.iter().map(row).collect();
    let header = [
        "NAME", "STATE", "PROGRESS", "RATE", "ETA", "HOLDERS", "NOTE",
    ];
    table(&header, &rows);
    Ok(())
}

pub async fn watch(mut client: crate::target::Ctl, file: &str, json: bool) -> Outcome {
    let request = ctl::TransferRequest {
        name: file.to_owned(),
    };
    let mut signals = hive_runtime::shutdown::Signals::install();
    let mut stream = client.watch_transfer(request).await?.into_inner();
    let mut last = None;
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg?,
            _ = signals.recv() => return Err(Failure::Detached(format!(
                "stopped watching; {file} goes on in the daemon"
            ))),
        };
        let Some(t) = msg else {
            outln!("{file}: cancelled");
            return Ok(());
        };
        if json {
            outln!("{}", to_json(&t));
        } else {
            let line = row(&t).join("  ");
            if last.as_ref() != Some(&line) {
                outln!("{}", line.trim_end());
                last = Some(line);
            }
        }
        match t.state() {
            TransferState::Done => return Ok(()),
            TransferState::Failed => {
                return Err(Failure::Local(format!("{file} failed: {}", t.reason)));
            }
            _ => {}
        }
    }
}

pub async fn act(mut client: crate::target::Ctl, file: &str, act: Act, json: bool) -> Outcome {
    let name = file.to_owned();
    let (t, did) = match act {
        Act::Pause => {
            let t = client.pause_transfer(ctl::TransferRequest { name }).await?;
            (t.into_inner(), "paused")
        }
        Act::Resume => {
            let t = client
                .resume_transfer(ctl::TransferRequest { name })
                .await?;
            (t.into_inner(), "resumed")
        }
        Act::Cancel { remove } => {
            let req = ctl::CancelTransferRequest { name, remove };
            let t = client.cancel_transfer(req).await?.into_inner();
            let did = if remove {
                "cancelled; its verified chunks are deleted"
            } else {
                "cancelled; its verified chunks are kept and served"
            };
            (t, did)
        }
    };
    if json {
        outln!(
            "{}",
            json!({ "action": did.split(';').next(), "transfer": to_json(&t) })
        );
    } else {
        outln!("{file}: {did} ({})", state_word(&t));
    }
    Ok(())
}

fn state_word(t: &ctl::Transfer) -> &'static str {
    match t.state() {
        TransferState::Queued => "queued",
        TransferState::Running => "running",
        TransferState::Stalled => "stalled",
        TransferState::Paused => "paused",
        TransferState::Done => "done",
        TransferState::Failed => "failed",
        TransferState::Unspecified => "unknown",
    }
}

fn progress(t: &ctl::Transfer) -> String {
    if t.size == 0 {
        return "-".into();
    }
    let pct = t.bytes_done.saturating_mul(100) / t.size;
    format!(
        "{pct}% of {} ({}/{} chunks)",
        bytes(t.size),
        t.chunks_done,
        t.chunk_count
    )
}

fn row(t: &ctl::Transfer) -> Vec<String> {
    let running = matches!(t.state(), TransferState::Running | TransferState::Stalled);
    let note = match t.state() {
        TransferState::Failed => t.reason.clone(),
        TransferState::Done if t.hook.is_empty() => t.path.clone(),
        TransferState::Done => format!("{} (on-complete: {})", t.path, t.hook),
        TransferState::Stalled => "waiting for a holder".into(),
        _ => String::new(),
    };
    vec![
        t.name.clone(),
        state_word(t).into(),
        progress(t),
        if running {
            format!("{}/s", bytes(t.rate))
        } else {
            "-".into()
        },
        match t.eta_seconds {
            0 => "-".into(),
            s => humantime::format_duration(Duration::from_secs(s)).to_string(),
        },
        if running {
            format!("{}/{}", t.holders_active, t.holders)
        } else {
            "-".into()
        },
        note,
    ]
}

fn to_json(t: &ctl::Transfer) -> Value {
    json!({
        "name": t.name, "state": state_word(t), "reason": t.reason, "size": t.size,
        "chunk_count": t.chunk_count, "bytes_done": t.bytes_done, "chunks_done": t.chunks_done,
        "rate": t.rate, "eta_seconds": t.eta_seconds, "holders_active": t.holders_active,
        "holders": t.holders, "path": t.path, "hook": t.hook,
    })
}
