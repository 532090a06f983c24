//! Driving and watching downloads: the Control Fetch stream with the time
//! of each event, a peer's counters, what the tracker says a peer holds,
//! and download state built on disk by hand (partial holders, the states a
//! crash leaves behind) through the peer's own part-file code.

use std::{
    net::SocketAddr,
    ops::RangeInclusive,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hive::{
    ChunkSet, ChunkSize, FileName, Manifest,
    pb::control::{
        Done, FetchEvent, FetchRequest, Progress, Started, StatusResponse,
        control_client::ControlClient, fetch_event::Event,
    },
};
use hive_peer::fetch::partfile::{self, Mode, PartFile, ResumeState};
use tonic::{Status, Streaming};

use super::{ControlAddr, Daemon, TestPeer, TestTracker, control_channel, within};

/// A whole-file Fetch in progress, as its caller sees it. Dropping it stops
/// only the following: the transfer goes on in the daemon.
pub struct Fetching {
    stream: Streaming<FetchEvent>,
    /// When the request was sent.
    pub sent: Instant,
    pub started: Option<(Instant, Started)>,
    pub progress: Vec<(Instant, Progress)>,
}

/// Starts fetching all of `name` on the peer whose control port is `control`.
pub async fn fetch(control: ControlAddr, name: &str) -> Result<Fetching, Status> {
    fetch_with(
        control,
        FetchRequest {
            name: name.into(),
            ..Default::default()
        },
    )
    .await
}

/// Like [`fetch`], failing with UNAVAILABLE (as scripts want) rather than
/// waiting when no live holder has a missing chunk.
pub async fn fetch_fail_fast(control: ControlAddr, name: &str) -> Result<Fetching, Status> {
    let req = FetchRequest {
        name: name.into(),
        fail_fast: true,
        ..Default::default()
    };
    fetch_with(control, req).await
}

/// Like [`fetch`]; a peer that cannot be reached is UNAVAILABLE.
pub async fn fetch_with(control: ControlAddr, req: FetchRequest) -> Result<Fetching, Status> {
    let sent = Instant::now();
    let dial = hive_peer::access::connect_socket(control.path());
    let channel = tokio::time::timeout(Duration::from_secs(10), dial)
        .await
        .map_err(|_| Status::unavailable(format!("{control} does not answer")))?
        .map_err(|e| Status::unavailable(format!("cannot reach {control}: {e}")))?;
    let stream = ControlClient::new(channel).fetch(req).await?.into_inner();
    Ok(Fetching {
        stream,
        sent,
        started: None,
        progress: Vec::new(),
    })
}

/// Fetches all of `name` and waits for the outcome.
pub async fn fetch_whole(control: ControlAddr, name: &str) -> Result<Done, Status> {
    fetch(control, name).await?.done().await
}

impl Fetching {
    /// The next event, recorded; `None` when the stream ended without one.
    pub async fn next(&mut self) -> Result<Option<Event>, Status> {
        let Some(msg) = self.stream.message().await? else {
            return Ok(None);
        };
        let event = msg.event.expect("a fetch event carries an event");
        match &event {
            Event::Started(s) => self.started = Some((Instant::now(), s.clone())),
            Event::Progress(p) => self.progress.push((Instant::now(), *p)),
            Event::Done(_) => {}
        }
        Ok(Some(event))
    }

    /// Reads events until this fetch has verified at least `n` chunks.
    /// Panics if the download ends first.
    pub async fn until_chunks(&mut self, n: u32) -> Result<Progress, Status> {
        loop {
            match self.next().await? {
                Some(Event::Progress(p)) if p.chunks_done >= n => return Ok(p),
                Some(Event::Done(d)) => panic!("the download ended before {n} chunks: {d:?}"),
                None => panic!("the fetch stream ended before {n} chunks"),
                Some(_) => {}
            }
        }
    }

    /// Reads events until the download ends.
    pub async fn done(&mut self) -> Result<Done, Status> {
        loop {
            match self.next().await? {
                Some(Event::Done(d)) => return Ok(d),
                Some(_) => {}
                None => return Err(Status::unknown("the fetch stream ended without done")),
            }
        }
    }

    /// Chunks verified so far, as last reported.
    pub fn chunks_done(&self) -> u32 {
        self.progress.last().map_or(0, |(_, p)| p.chunks_done)
    }
}

/// The peer's Status answer.
pub async fn status(control: ControlAddr) -> StatusResponse {
    within(
        30,
        ControlClient::new(control_channel(control).await)
            .status(hive::pb::control::StatusRequest {}),
    )
    .await
    .expect("status")
    .into_inner()
}

pub async fn bytes_served(peer: &TestPeer) -> u64 {
    status(peer.control).await.bytes_served
}

/// The chunks the tracker lists `addr` as holding of `name`.
pub async fn listed_chunks(tracker: &TestTracker, name: &str, addr: SocketAddr) -> u32 {
    tracker
        .locate(name)
        .await
        .holders
        .iter()
        .filter(|h| h.addr == addr.to_string())
        .map(|h| h.chunk_count)
        .sum()
}

/// Whether the tracker lists `addr` as a holder of `name` at all.
pub async fn is_listed(tracker: &TestTracker, name: &str, addr: SocketAddr) -> bool {
    let found = tracker.locate(name).await;
    found.holders.iter().any(|h| h.addr == addr.to_string())
}

/// The domain manifest of `data` under `name`.
pub fn manifest_of(name: &str, data: &[u8], chunk_size: Option<u32>) -> Manifest {
    let mut tmp = tempfile::tempfile().expect("tempfile");
    std::io::Write::write_all(&mut tmp, data).expect("write");
    let chunk_size = chunk_size.map(|c| ChunkSize::new(u64::from(c)).expect("chunk size"));
    Manifest::from_file(
        &tmp,
        data.len() as u64,
        FileName::new(name).expect("name"),
        chunk_size,
    )
    .expect("hash")
}

/// The bytes of chunk `n` (from 1) of `data` in `m`'s layout.
pub fn chunk_bytes<'a>(m: &Manifest, data: &'a [u8], n: u32) -> &'a [u8] {
    let r = m
        .layout()
        .range(m.layout().chunk(u64::from(n)).expect("chunk"));
    &data[r.start as usize..r.end as usize]
}

/// The total length of the chunks in `ranges`.
pub fn bytes_in(m: &Manifest, ranges: &[RangeInclusive<u32>]) -> u64 {
    ranges
        .iter()
        .flat_map(|r| r.clone())
        .map(|n| {
            u64::from(
                m.layout()
                    .chunk_len(m.layout().chunk(u64::from(n)).unwrap()),
            )
        })
        .sum()
}

/// A peer's state directory.
pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join(hive_peer::scan::STATE_DIR)
}

/// Writes the download state of `m` into the share directory `dir`, as the
/// peer itself would: the part file holding `chunks` of `data` (the rest
/// left as zeros), and a resume state in `mode` claiming `claimed`.
pub fn write_partial(
    dir: &Path,
    m: &Manifest,
    data: &[u8],
    chunks: &[RangeInclusive<u32>],
    mode: Mode,
    claimed: &[RangeInclusive<u32>],
) -> PathBuf {
    let (part, _) = PartFile::open(&state_dir(dir), m).expect("open part file");
    for n in chunks.iter().flat_map(|r| r.clone()) {
        let at = m
            .layout()
            .range(m.layout().chunk(u64::from(n)).unwrap())
            .start;
        part.file
            .write_all_at(chunk_bytes(m, data, n), at)
            .expect("write chunk");
    }
    let claimed = ChunkSet::from_ranges(m.chunk_count(), claimed.iter().cloned()).expect("ranges");
    part.save_state(&ResumeState::new(m, mode, &claimed))
        .expect("save state");
    part.path.clone()
}

/// The part file of `name` in `dir`, if there is one (named, as the peer
/// names it, after a hash of the file's name).
pub fn part_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let file_name = FileName::new(name).expect("name");
    PartFile::exists(&state_dir(dir), &file_name).then(|| {
        let stem = &blake3::hash(name.as_bytes()).to_hex()[..32];
        partfile::partial_dir(&state_dir(dir)).join(format!("{stem}.part"))
    })
}

/// The resume states saved in `dir`.
pub fn saved_states(dir: &Path) -> Vec<ResumeState> {
    partfile::saved_states(&state_dir(dir))
}

/// A real peer holding only `chunks` of `data`, as if it had fetched them
/// one at a time (`fetch --chunk`): it serves and registers just those.
pub async fn partial_peer(
    tracker: &TestTracker,
    name: &str,
    data: &[u8],
    chunk_size: Option<u32>,
    chunks: &[RangeInclusive<u32>],
    flags: &[&str],
) -> TestPeer {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("share");
    std::fs::create_dir_all(&dir).expect("share dir");
    let m = manifest_of(name, data, chunk_size);
    write_partial(&dir, &m, data, chunks, Mode::Chunks, chunks);
    let peer = TestPeer::spawn(&tracker.url(), tmp, dir, flags).await;
    peer.registered().await;
    peer
}

/// Waits until `daemon`'s log holds `needle` at least `count` times.
pub async fn until_logged(daemon: &Daemon, needle: &str, count: usize) {
    while daemon.log().matches(needle).count() < count {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The peak resident set of process `pid`, in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Nearest-rank percentile of `samples` (sorted here), `p` in 0..=100.
pub fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let rank = (p * samples.len()).div_ceil(100).max(1);
    samples[rank - 1]
}
