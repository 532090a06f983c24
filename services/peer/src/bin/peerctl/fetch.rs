//! `peerctl fetch`: follows the daemon's Fetch stream, showing progress as a
//! bar on a terminal, as plain lines otherwise, or as JSON events.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use hive::pb::control::{self as ctl, fetch_event::Event};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tonic::Status;

use crate::{
    Failure, Outcome,
    output::{bytes, count, hex, shown},
};

/// What to fetch, and how.
pub struct How {
    pub chunk: Option<u32>,
    pub from: Option<String>,
    pub force: bool,
    pub detach: bool,
    pub fail_fast: bool,
    /// This download's own cap, bytes a second (0: none).
    pub max_rate: u64,
}

pub async fn run(mut client: crate::target::Ctl, file: &str, how: How, json: bool) -> Outcome {
    let chunk = how.chunk;
    let request = ctl::FetchRequest {
        name: file.to_owned(),
        chunk: chunk.unwrap_or(0),
        from: how.from.unwrap_or_default(),
        force: how.force,
        detach: how.detach,
        fail_fast: how.fail_fast,
        max_rate: how.max_rate,
    };
    let mut signals = hive_runtime::shutdown::Signals::install();
    let mut stream = client.fetch(request).await?.into_inner();
    if how.detach {
        if json {
            outln!("{}", json!({ "event": "accepted", "name": file }));
        } else {
            outln!(
                "{file}: transfer accepted; `peerctl transfers` lists it, `peerctl watch {file}` follows it"
            );
        }
        return Ok(());
    }
    let mut view = View::new(json);
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg,
            _ = signals.recv() => {
                view.clear();
                // Only the following stops: the daemon owns the transfer.
                if chunk.is_some() {
                    return Err(Failure::Detached("stopped waiting; the chunk may still be fetched".into()));
                }
                return Err(Failure::Detached(format!(
                    "stopped following; {file} goes on in the daemon (`peerctl watch {file}` follows it, `peerctl pause {file}` pauses it)"
                )));
            }
        };
        let event = match msg {
            Ok(Some(ev)) => ev.event,
            Ok(None) => {
                return Err(Failure::Local(
                    "the daemon ended the fetch without a result".into(),
                ));
            }
            Err(status) if status.code() == tonic::Code::Cancelled && chunk.is_none() => {
                view.clear();
                return Err(Status::cancelled(format!(
                    "the transfer of {file} was paused or cancelled in the daemon; `peerctl resume {file}` or `peerctl fetch {file}` starts it again"
                ))
                .into());
            }
            Err(status) => {
                view.clear();
                return Err(status.into());
            }
        };
        match event {
            Some(Event::Started(s)) => view.started(&s),
            Some(Event::Progress(p)) => view.progress(&p),
            Some(Event::Done(d)) => {
                view.clear();
                view.done(file, chunk, &d);
                return Ok(());
            }
            None => {}
        }
    }
}

/// How progress is shown.
enum View {
    Json,
    Bar(ProgressBar),
    Lines {
        name: String,
        holders: u32,
        last: Instant,
    },
}

/// Plain progress lines come at most this often.
const LINE_EVERY: Duration = Duration::from_secs(1);

impl View {
    fn new(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            Self::Bar(ProgressBar::hidden())
        } else {
            Self::Lines {
                name: String::new(),
                holders: 0,
                last: Instant::now(),
            }
        }
    }

    fn started(&mut self, s: &ctl::Started) {
        match self {
            Self::Json => outln!(
                "{}",
                json!({
                    "event": "started", "name": s.name, "size": s.size, "chunk_count": s.chunk_count,
                    "digest": hex(&s.digest), "holders": s.holders, "chunks_present": s.chunks_present,
                    "bytes_wanted": s.bytes_wanted,
                })
            ),
            Self::Bar(bar) => {
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                *bar = ProgressBar::new(s.bytes_wanted).with_style(style);
                bar.set_message(format!(
                    "{} ({})",
                    shown(&s.name),
                    count(s.holders, "holder")
                ));
            }
            Self::Lines { name, holders, .. } => {
                *name = s.name.clone();
                *holders = s.holders;
                eprintln!(
                    "{}: {} to fetch from {} ({} of {} chunks already here)",
                    shown(&s.name),
                    bytes(s.bytes_wanted),
                    count(s.holders, "holder"),
                    s.chunks_present,
                    s.chunk_count
                );
            }
        }
    }

    fn progress(&mut self, p: &ctl::Progress) {
        match self {
            Self::Json => outln!(
                "{}",
                json!({
                    "event": "progress", "bytes_done": p.bytes_done, "bytes_wanted": p.bytes_wanted,
                    "chunks_done": p.chunks_done, "chunks_wanted": p.chunks_wanted,
                    "holders_active": p.holders_active,
                })
            ),
            Self::Bar(bar) => {
                bar.set_position(p.bytes_done);
                if let Some((name, _)) = bar.message().split_once(" (") {
                    bar.set_message(format!("{name} ({})", count(p.holders_active, "holder")));
                }
            }
            Self::Lines {
                name,
                holders,
                last,
            } => {
                *holders = p.holders_active;
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    let pct = (p.bytes_done * 100)
                        .checked_div(p.bytes_wanted)
                        .unwrap_or(100);
                    eprintln!(
                        "{name}: {pct}% ({} of {}), {} active",
                        bytes(p.bytes_done),
                        bytes(p.bytes_wanted),
                        count(*holders, "holder")
                    );
                }
            }
        }
    }

    fn clear(&mut self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }

    fn done(&self, file: &str, chunk: Option<u32>, d: &ctl::Done) {
        if let Self::Json = self {
            outln!(
                "{}",
                json!({
                    "event": "done", "name": file, "chunk": chunk, "path": d.path, "digest": hex(&d.digest),
                    "bytes_received": d.bytes_received, "chunks_fetched": d.chunks_fetched,
                    "elapsed_us": d.elapsed_us, "source": d.source,
                    "already_present": d.already_present, "holders_banned": d.holders_banned,
                })
            );
            return;
        }
        let elapsed = Duration::from_micros(d.elapsed_us);
        let file = shown(file);
        match chunk {
            _ if d.already_present => {
                outln!("{file}{} is already here ({})", chunk_label(chunk), d.path)
            }
            Some(n) => outln!(
                "chunk {n} of {file} ({}) from {}: verified, stored and registered ({:.1} ms)",
                bytes(d.bytes_received),
                d.source,
                elapsed.as_secs_f64() * 1e3
            ),
            None => {
                let rate = d.bytes_received as f64 / elapsed.as_secs_f64().max(1e-9);
                outln!(
                    "fetched {file}: {} in {:.2} s ({}/s), blake3 {} verified -> {}",
                    bytes(d.bytes_received),
                    elapsed.as_secs_f64(),
                    bytes(rate as u64),
                    hex(&d.digest),
                    d.path
                );
                if d.holders_banned > 0 {
                    outln!(
                        "{} sent bad data and {} dropped",
                        count(d.holders_banned, "holder"),
                        if d.holders_banned == 1 { "was" } else { "were" }
                    );
                }
            }
        }
    }
}

fn chunk_label(chunk: Option<u32>) -> String {
    chunk.map(|n| format!(" chunk {n}")).unwrap_or_default()
}
