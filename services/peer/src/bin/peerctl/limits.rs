//! `peerctl limits`: the daemon's rate caps, shown or changed.

use hive::pb::control as ctl;
use serde_json::json;

use crate::{Outcome, output::bytes};

/// Sets the caps given (none: only reads them) and prints those in force.
pub async fn run(
    mut client: crate::target::Ctl,
    up: Option<u64>,
    down: Option<u64>,
    json: bool,
) -> Outcome {
    let request = ctl::SetLimitsRequest {
        max_upload_rate: up,
        max_download_rate: down,
    };
    let now = client.set_limits(request).await?.into_inner();
    if json {
        outln!(
            "{}",
            json!({
                "max_upload_rate": now.max_upload_rate,
                "max_download_rate": now.max_download_rate,
            })
        );
    } else {
        outln!(
            "upload cap {}, download cap {}",
            rate(now.max_upload_rate),
            rate(now.max_download_rate)
        );
    }
    Ok(())
}

/// `peerctl status`'s line about caps and upload slots.
pub fn line(s: &ctl::StatusResponse) -> String {
    format!(
        "upload cap {}, download cap {}; {} chunk requests waiting for an upload slot, \
         {} refused, {} slow uploads cut",
        rate(s.max_upload_rate),
        rate(s.max_download_rate),
        s.uploads_queued,
        s.uploads_refused,
        s.uploads_cut
    )
}

fn rate(r: u64) -> String {
    match r {
        0 => "none".into(),
        r => format!("{}/s", bytes(r)),
    }
}
