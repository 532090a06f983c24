//! `--on-complete CMD`: a program run when a transfer completes, as aria2's
//! on-download-complete and Transmission's script-torrent-done are. CMD is
//! run directly (no shell), with the file's path and name as arguments and
//! as `HIVE_FILE_PATH` / `HIVE_FILE_NAME`; its exit status is logged and
//! shown with the transfer.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use hive::FileName;
use tracing::{info, warn};

/// Runs `cmd` for the completed `name` at `path`; returns what happened, in
/// a few words ("exit status 0", "cannot run …").
pub async fn run(cmd: PathBuf, path: &Path, name: &FileName) -> String {
    let child = tokio::process::Command::new(&cmd)
        .arg(path)
        .arg(name.as_str())
        .env("HIVE_FILE_PATH", path)
        .env("HIVE_FILE_NAME", name.as_str())
        .stdin(Stdio::null())
        .kill_on_drop(false)
        .status()
        .await;
    match child {
        Ok(status) => {
            info!(file = %name, cmd = %cmd.display(), %status, "--on-complete ran");
            status.to_string()
        }
        Err(e) => {
            warn!(file = %name, cmd = %cmd.display(), error = %e, "--on-complete could not run");
            format!("cannot run {}: {e}", cmd.display())
        }
    }
}
