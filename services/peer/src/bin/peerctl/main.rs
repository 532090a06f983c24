//! `peerctl`: drives a local hive peer and queries the tracker.

/// `println!` for peerctl's results: a closed pipe on stdout ends peerctl
/// as it ends coreutils (see [`output::line`]). Defined before the modules
/// so that all of them can use it.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

mod certs;
mod cli;
mod fetch;
mod limits;
mod output;
mod target;
mod transfers;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use hive::pb::{
    control as ctl,
    tracker::{self as trk, tracker_client::TrackerClient},
};
use hive_peer::tracker_link::trackers;
use serde_json::json;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    cli::{Cli, Command},
    output::{bytes, hex, holder_ranges, ranges_json, short, table},
    target::{Ctl, Target},
};

/// A failure, and the exit status it gives.
pub enum Failure {
    Status(Status),
    Local(String),
    /// The user interrupted a command that follows a transfer: it goes on
    /// in the daemon. Exits 130, as an interrupted command does.
    Detached(String),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Self::Status(s)
    }
}

pub type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(json, "LOCAL", &format!("cannot start: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Local(msg)) => {
            report(json, "LOCAL", &msg);
            ExitCode::from(1)
        }
        Err(Failure::Detached(msg)) => {
            eprintln!("peerctl: {msg}");
            ExitCode::from(130)
        }
        Err(Failure::Status(s)) => {
            report(json, hive_runtime::grpc::code_name(s.code()), s.message());
            ExitCode::from(64 + s.code() as u8)
        }
    }
}

/// One clear line on stderr; with --json, a JSON object on stdout too. A
/// daemon that refused without a word still gets a message.
fn report(json: bool, code: &str, message: &str) {
    let message = said(message);
    if json {
        outln!(
            "{}",
            json!({ "error": { "code": code, "message": message } })
        );
    }
    eprintln!("peerctl: {} ({code})", output::shown(message));
}

/// A failure's message, never empty.
fn said(message: &str) -> &str {
    match message.trim() {
        "" => "the daemon refused without giving a reason",
        m => m,
    }
}

async fn run(cli: Cli) -> Outcome {
    if let Command::Certs(certs) = &cli.command {
        return certs::run(certs, cli.json);
    }
    let target = match cli.command {
        Command::Files | Command::Locate { .. } => {
            let target = Target::tracker(&cli).await;
            return on_trackers(&cli, &target).await;
        }
        Command::Health {
            addr: Some(ref addr),
        } => Target::any(&cli, addr),
        _ => Target::peer(&cli),
    };
    command(&cli, &target).await.map_err(|f| target.explain(f))
}

/// A tracker command, asked of each of the tracker's replicas in turn
/// until one answers (a refusal is an answer).
async fn on_trackers(cli: &Cli, target: &Target) -> Outcome {
    loop {
        match command(cli, target).await {
            Err(Failure::Status(s)) if trackers::no_answer(&s) && target.next() => {
                eprintln!(
                    "peerctl: no answer ({}); asking the next tracker",
                    s.message()
                );
            }
            outcome => return outcome.map_err(|f| target.explain(f)),
        }
    }
}

async fn command(cli: &Cli, target: &Target) -> Outcome {
    match cli.command {
        Command::Files => files(target, cli.json).await,
        Command::Locate { ref file } => locate(target, file, cli.json).await,
        Command::Fetch {
            ref file,
            chunk,
            ref from,
            force,
            detach,
            fail_fast,
            max_rate,
        } => {
            let client = control(target).await?;
            let how = fetch::How {
                chunk,
                from: from.clone(),
                force,
                detach,
                fail_fast,
                max_rate: max_rate.unwrap_or(0),
            };
            fetch::run(client, file, how, cli.json).await
        }
        Command::Transfers => transfers::list(control(target).await?, cli.json).await,
        Command::Watch { ref file } => {
            transfers::watch(control(target).await?, file, cli.json).await
        }
        Command::Pause { ref file } => {
            transfers::act(
                control(target).await?,
                file,
                transfers::Act::Pause,
                cli.json,
            )
            .await
        }
        Command::Resume { ref file } => {
            transfers::act(
                control(target).await?,
                file,
                transfers::Act::Resume,
                cli.json,
            )
            .await
        }
        Command::Cancel { ref file, remove } => {
            let act = transfers::Act::Cancel { remove };
            transfers::act(control(target).await?, file, act, cli.json).await
        }
        Command::Share {
            ref paths,
            chunk_size,
        } => share(target, paths, chunk_size, cli.json).await,
        Command::Status => status(target, cli.json).await,
        Command::Unshare { ref file } => {
            let req = ctl::UnshareRequest { name: file.clone() };
            control(target).await?.unshare(req).await?;
            if cli.json {
                outln!("{}", json!({ "unshared": file }));
            } else {
                outln!("{file} is no longer shared (the file stays on disk)");
            }
            Ok(())
        }
        Command::Leave => {
            control(target).await?.leave(ctl::LeaveRequest {}).await?;
            if cli.json {
                outln!("{}", json!({ "left": true }));
            } else {
                outln!("left the tracker; the peer is stopping");
            }
            Ok(())
        }
        Command::Health { .. } => health(target, cli.json).await,
        Command::Limits { up, down } => {
            limits::run(control(target).await?, up, down, cli.json).await
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "peerctl", &mut script);
            outln!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(())
        }
        Command::Certs(ref certs) => certs::run(certs, cli.json),
    }
}

async fn control(target: &Target) -> Result<Ctl, Failure> {
    target.control().await
}

async fn tracker(target: &Target) -> Result<TrackerClient<Channel>, Failure> {
    Ok(TrackerClient::new(target.connect().await?))
}

/// Seed message 2: every file, every page.
async fn files(target: &Target, json: bool) -> Outcome {
    let mut client = tracker(target).await?;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_files(trk::ListFilesRequest {
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.files);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if json {
        let files: Vec<_> = all
            .iter()
            .map(|f| {
                let mut file = hive_peer::json::tracker_file(f);
                file["holders"] = f
                    .holders
                    .iter()
                    .map(|h| holder_json(h, f.chunk_count))
                    .collect();
                file
            })
            .collect();
        outln!("{}", json!({ "files": files }));
        return Ok(());
    }
    if all.is_empty() {
        outln!("no files");
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut chunks = Vec::new();
    for f in &all {
        rows.push(vec![
            f.name.clone(),
            bytes(f.size),
            f.chunk_count.to_string(),
            f.holder_count.to_string(),
            short(&hex(&f.digest)).to_owned(),
        ]);
        chunks.push(None);
        for h in &f.holders {
            rows.push(vec![
                format!("  {}", h.addr),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            chunks.push(Some(holder_ranges(h, f.chunk_count)));
        }
    }
    let header = ["NAME", "SIZE", "CHUNKS", "HOLDERS", "DIGEST"];
    output::fill_ranges(&header, &mut rows, 2, &chunks);
    table(&header, &rows);
    Ok(())
}

fn holder_json(h: &trk::Holder, chunk_count: u32) -> serde_json::Value {
    json!({
        "peer_id": h.peer_id, "addr": h.addr, "chunk_count": h.chunk_count,
        "chunks": ranges_json(&holder_ranges(h, chunk_count)), "confirmed": h.confirmed,
    })
}

/// Seed message 3.
async fn locate(target: &Target, file: &str, json: bool) -> Outcome {
    let found = tracker(target)
        .await?
        .locate(trk::LocateRequest {
            name: file.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let m = found.manifest.unwrap_or_default();
    let chunk_count = (m.chunk_digests.len() / 32) as u32;
    if json {
        outln!(
            "{}",
            json!({
                "name": m.name, "size": m.size, "chunk_size": m.chunk_size,
                "chunk_count": chunk_count, "digest": hex(&m.digest),
                "holder_count": found.holder_count,
                "holders": found.holders.iter().map(|h| holder_json(h, chunk_count)).collect::<Vec<_>>(),
                "chunk_holders": found.chunk_holders.to_vec(),
            })
        );
        return Ok(());
    }
    outln!(
        "{}  {}  {} chunks of {}  blake3 {}",
        output::shown(&m.name),
        bytes(m.size),
        chunk_count,
        bytes(u64::from(m.chunk_size)),
        hex(&m.digest)
    );
    outln!(
        "{}; {}",
        output::count(found.holder_count, "live holder"),
        output::availability(&found.chunk_holders)
    );
    let mut rows: Vec<Vec<String>> = found
        .holders
        .iter()
        .map(|h| {
            vec![
                h.addr.clone(),
                h.peer_id.clone(),
                format!("{}/{chunk_count}", h.chunk_count),
                String::new(),
            ]
        })
        .collect();
    let chunks: Vec<_> = found
        .holders
        .iter()
        .map(|h| Some(holder_ranges(h, chunk_count)))
        .collect();
    if !rows.is_empty() {
        let header = ["HOLDER", "PEER", "HELD", "CHUNKS"];
        output::fill_ranges(&header, &mut rows, 3, &chunks);
        table(&header, &rows);
    }
    Ok(())
}

async fn share(
    target: &Target,
    paths: &[std::path::PathBuf],
    chunk_size: Option<u64>,
    json: bool,
) -> Outcome {
    let paths = paths
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .map(|p| p.display().to_string())
                .map_err(|e| Failure::Local(format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let chunk_size = match chunk_size {
        None => 0,
        Some(n) => {
            u32::try_from(n).map_err(|_| Failure::Local(format!("chunk size {n} is too large")))?
        }
    };
    let shared = control(target)
        .await?
        .share(ctl::ShareRequest { paths, chunk_size })
        .await?
        .into_inner();
    print_local(&shared.files, json, "shared");
    Ok(())
}

async fn status(target: &Target, json: bool) -> Outcome {
    let s = control(target)
        .await?
        .status(ctl::StatusRequest {})
        .await?
        .into_inner();
    if json {
        outln!(
            "{}",
            json!({
                "peer_id": s.peer_id, "tracker": s.tracker, "trackers": s.trackers,
                "addr": s.addr, "listen": s.listen,
                "files": s.files.iter().map(hive_peer::json::local_file).collect::<Vec<_>>(),
                "bytes_served": s.bytes_served, "bytes_fetched": s.bytes_fetched,
                "uploads_active": s.uploads_active, "downloads_active": s.downloads_active,
                "max_upload_rate": s.max_upload_rate, "max_download_rate": s.max_download_rate,
                "uploads_queued": s.uploads_queued, "uploads_cut": s.uploads_cut,
                "uploads_refused": s.uploads_refused, "web_url": s.web_url,
            })
        );
        return Ok(());
    }
    let id = if s.peer_id.is_empty() {
        "not registered".to_owned()
    } else {
        format!("peer {}", s.peer_id)
    };
    outln!(
        "{id} at {} (listening on {}), tracker {}{}",
        s.addr,
        s.listen,
        s.tracker,
        output::replica_of(&s.tracker, &s.trackers)
    );
    outln!(
        "served {}, fetched {}, {} uploads and {} downloads running",
        bytes(s.bytes_served),
        bytes(s.bytes_fetched),
        s.uploads_active,
        s.downloads_active
    );
    outln!("{}", limits::line(&s));
    if !s.web_url.is_empty() {
        outln!("web UI at {}", s.web_url);
    }
    print_local(&s.files, false, "files");
    Ok(())
}

fn print_local(files: &[ctl::LocalFile], json: bool, key: &str) {
    if json {
        outln!(
            "{}",
            json!({ key: files.iter().map(hive_peer::json::local_file).collect::<Vec<_>>() })
        );
        return;
    }
    if files.is_empty() {
        outln!("no files");
        return;
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                hive_peer::json::file_state_name(f.state).to_owned(),
                format!("{}/{}", f.chunks_held, f.chunk_count),
                bytes(f.size),
                short(&hex(&f.digest)).to_owned(),
                match f.reason.as_str() {
                    "" => f.path.clone(),
                    why => format!("{} ({why})", f.path),
                },
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "CHUNKS", "SIZE", "DIGEST", "PATH"],
        &rows,
    );
}

async fn health(target: &Target, json: bool) -> Outcome {
    let addr = target.url();
    let channel = target.connect().await?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    if json {
        outln!("{}", json!({ "status": status.as_str_name() }));
    } else {
        outln!("{}", status.as_str_name());
    }
    match status {
        ServingStatus::Serving => Ok(()),
        _ => Err(Failure::Status(Status::new(
            Code::Unavailable,
            format!("{addr} is {}", status.as_str_name()),
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_message_is_empty() {
        assert_eq!(super::said("gone"), "gone");
        assert!(!super::said("").is_empty());
        assert!(!super::said(" ").trim().is_empty());
    }
}
