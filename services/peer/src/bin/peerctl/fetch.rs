//! `peerctl fetch`: follows the daemon's Fetch stream, showing progress as a
//! bar on a terminal, as plain lines otherwise, or as JSON events.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use hive::pb::control::{self as ctl, control_client::ControlClient, fetch_event::Event};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tonic::{Status, transport::Channel};

use crate::{
    Failure, Outcome,
    output::{bytes, count, hex},
};

pub async fn run(
    mut client: ControlClient<Channel>,
    file: &str,
    chunk: Option<u32>,
    from: Option<String>,
    (force, max_rate): (bool, u64),
    json: bool,
) -> Outcome {
    let request = ctl::FetchRequest {
        name: file.to_owned(),
        chunk: chunk.unwrap_or(0),
        from: from.unwrap_or_default(),
        force,
        max_rate,
    };
    let mut signals = hive_runtime::shutdown::Signals::install();
    let mut stream = client.fetch(request).await?.into_inner();
    let mut view = View::new(json);
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg,
            _ = signals.recv() => {
                view.clear();
                // Dropping the stream tells the daemon to stop this download.
                return Err(Failure::Status(Status::cancelled("fetch cancelled; verified chunks are kept for the next fetch")));
            }
        };
        let event = match msg {
            Ok(Some(ev)) => ev.event,
            Ok(None) => {
                return Err(Failure::Local(
                    "the daemon ended the fetch without a result".into(),
                ));
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
                bar.set_message(format!("{} ({})", s.name, count(s.holders, "holder")));
            }
            Self::Lines { name, holders, .. } => {
                *name = s.name.clone();
                *holders = s.holders;
                eprintln!(
                    "{}: {} to fetch from {} ({} of {} chunks already here)",
                    s.name,
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
