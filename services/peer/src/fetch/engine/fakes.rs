//! Fakes for the engine's traits: a tracker with a scripted holder list,
//! holders that answer as each test says (good, wrong, dead, stalled, slow),
//! and an in-memory sink; and a [`World`] that wires them to an engine. Every
//! chunk still passes through the real verification in `request.rs`.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use hive::{ChunkIndex, ChunkSet, ChunkSize, FileName, Layout, Manifest, digest};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use super::{Engine, Settings, Swarm};
use crate::{
    error::PeerError,
    fetch::{
        request::{Ask, Decline, Failure},
        traits::{Answer, Holders, Locator, Sink},
    },
    metrics::Counters,
    server::{self, Tally, Verdict},
    tracker_link::{Holder, Located},
};

const CHUNK: usize = 1024;
/// Virtual time a whole run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(600);

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn chunk(n: u32) -> ChunkIndex {
    ChunkIndex::new(n).expect("chunks count from 1")
}

/// A file of `chunks` 1 KiB chunks, each of different bytes, and its manifest.
pub(crate) fn file(chunks: u32) -> (Arc<Vec<u8>>, Arc<Manifest>) {
    let data: Vec<u8> = (0..chunks as usize * CHUNK)
        .map(|i| (i / CHUNK * 7 + i % 251) as u8)
        .collect();
    let layout = Layout::new(data.len() as u64, ChunkSize::MIN).expect("layout");
    let digests: Vec<_> = layout
        .chunks()
        .map(|c| {
            let r = layout.range(c);
            digest::chunk_digest(&layout, c, &data[r.start as usize..r.end as usize])
                .expect("a chunk's digest")
        })
        .collect();
    let whole = digest::file_digest(&layout, &digests).expect("a file digest");
    let name = FileName::new("film.mkv").expect("a name");
    let manifest = Manifest::new(name, layout, digests, whole).expect("a manifest");
    (Arc::new(data), Arc::new(manifest))
}

pub(super) fn bytes_of(data: &[u8], manifest: &Manifest, c: ChunkIndex) -> Vec<u8> {
    let r = manifest.layout().range(c);
    data[r.start as usize..r.end as usize].to_vec()
}

/// How a fake holder answers one request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Serve {
    Good,
    /// The right length, one byte wrong.
    Wrong,
    Lacks,
    Dead,
    /// Too busy: RESOURCE_EXHAUSTED.
    Busy,
    /// Never answers.
    Stall,
    /// Answers correctly after this long.
    Slow(Duration),
    /// Sends the next chunk after the one asked for, saying so, though it
    /// was not offered instead.
    Unasked,
}

/// The tracker: holders listed from a given (virtual) time on.
#[derive(Clone)]
pub(super) struct FakeTracker {
    manifest: Arc<Manifest>,
    pub(super) listed: Arc<Mutex<Vec<(Instant, Holder)>>>,
    /// Per-chunk holder counts to report instead of the listed holders'.
    pub(super) counts: Option<Vec<u32>>,
    pub(super) calls: Arc<Mutex<u32>>,
}

impl FakeTracker {
    fn new(manifest: &Arc<Manifest>) -> Self {
        Self {
            manifest: manifest.clone(),
            listed: Arc::default(),
            counts: None,
            calls: Arc::default(),
        }
    }

    /// Lists `addr` holding `chunks` from `after` now on.
    pub(super) fn list(&self, addr: &str, chunks: ChunkSet, after: Duration) {
        let holder = Holder {
            peer_id: format!("id-{addr}"),
            addr: addr.to_owned(),
            chunks,
        };
        lock(&self.listed).push((Instant::now() + after, holder));
    }

    fn full(&self) -> ChunkSet {
        ChunkSet::full(self.manifest.chunk_count())
    }

    pub(super) fn answer(&self) -> Located {
        // A holder listed again from a later time is listed as it is then.
        let mut holders: Vec<Holder> = Vec::new();
        for (_, h) in lock(&self.listed)
            .iter()
            .filter(|(from, _)| *from <= Instant::now())
        {
            match holders.iter_mut().find(|known| known.addr == h.addr) {
                Some(known) => *known = h.clone(),
                None => holders.push(h.clone()),
            }
        }
        let chunk_holders = self.counts.clone().unwrap_or_else(|| {
            let mut counts = vec![0; self.manifest.chunk_count() as usize];
            for h in &holders {
                h.chunks.add_to_counts(&mut counts);
            }
            counts
        });
        Located {
            manifest: (*self.manifest).clone(),
            holders,
            chunk_holders,
        }
    }
}

impl Locator for FakeTracker {
    fn relocate(
        &self,
        known: Arc<Manifest>,
    ) -> impl Future<Output = Result<Located, PeerError>> + Send + use<> {
        assert_eq!(known.digest(), self.manifest.digest());
        *lock(&self.calls) += 1;
        let found = self.answer();
        async move { Ok(found) }
    }

    fn me(&self) -> Option<String> {
        Some("id-me".into())
    }
}

/// What the fake holders were asked and did.
#[derive(Default)]
pub(super) struct Log {
    /// Each request: holder, chunk, when.
    pub(super) asked: Vec<(String, ChunkIndex, Instant)>,
    /// Requests answered (bytes handed over, right or wrong).
    answered: Vec<(String, ChunkIndex)>,
    /// Requests dropped before they answered.
    pub(super) cancelled: Vec<(String, ChunkIndex)>,
    /// Requests a super-seeding holder declined.
    pub(super) declined: Vec<(String, ChunkIndex)>,
    /// Requests a super-seeding holder answered with another chunk: holder,
    /// chunk asked for, chunk sent.
    pub(super) swapped: Vec<(String, ChunkIndex, ChunkIndex)>,
    /// The most alternatives one request offered.
    pub(super) most_instead: usize,
}

impl Log {
    pub(super) fn asked_of(&self, addr: &str) -> Vec<ChunkIndex> {
        self.asked
            .iter()
            .filter(|(a, _, _)| a == addr)
            .map(|(_, c, _)| *c)
            .collect()
    }

    pub(super) fn answered_by(&self, addr: &str) -> Vec<ChunkIndex> {
        self.answered
            .iter()
            .filter(|(a, _)| a == addr)
            .map(|(_, c)| *c)
            .collect()
    }
}

/// Holders by address, each with a script of answers; the last one repeats.
#[derive(Clone)]
pub(super) struct FakeHolders {
    data: Arc<Vec<u8>>,
    manifest: Arc<Manifest>,
    scripts: Arc<Mutex<HashMap<String, Vec<Serve>>>>,
    /// Holders that super-seed, with the server's own tally.
    tallies: Arc<Mutex<HashMap<String, Tally>>>,
    pub(super) log: Arc<Mutex<Log>>,
}

impl FakeHolders {
    pub(super) fn new(data: &Arc<Vec<u8>>, manifest: &Arc<Manifest>) -> Self {
        Self {
            data: data.clone(),
            manifest: manifest.clone(),
            scripts: Arc::default(),
            tallies: Arc::default(),
            log: Arc::default(),
        }
    }

    pub(super) fn script(&self, addr: &str, answers: &[Serve]) {
        lock(&self.scripts).insert(addr.to_owned(), answers.to_vec());
    }

    /// `addr` super-seeds, as a daemon holding the whole file does.
    pub(super) fn super_seed(&self, addr: &str) {
        lock(&self.tallies).insert(addr.to_owned(), Tally::default());
    }

    /// `addr`, super-seeding, sent these chunks before this download began.
    pub(super) fn sent_before(&self, addr: &str, chunks: &[u32]) {
        let tallies = lock(&self.tallies);
        let tally = tallies.get(addr).expect("a super-seeding holder");
        let m = &self.manifest;
        for &c in chunks {
            let verdict = tally.decide(
                m.name(),
                (m.digest(), m.chunk_count()),
                server::Ask::only(chunk(c), false),
                Instant::now(),
            );
            assert_eq!(verdict, Verdict::Serve(chunk(c)));
        }
    }

    fn next(&self, addr: &str) -> Serve {
        let mut scripts = lock(&self.scripts);
        let script = scripts.get_mut(addr).expect("a scripted holder");
        match script.len() {
            1 => script[0],
            _ => script.remove(0),
        }
    }
}

/// Logs a request dropped before it answered.
struct Pending {
    log: Arc<Mutex<Log>>,
    addr: String,
    chunk: ChunkIndex,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let entry = (self.addr.clone(), self.chunk);
            lock(&self.log).cancelled.push(entry);
        }
    }
}

type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, Failure>> + Send>>;

impl Holders for FakeHolders {
    type Conn = String;
    type Frames = Frames;

    fn connect(&self, addr: &str) -> Result<String, PeerError> {
        Ok(addr.to_owned())
    }

    fn get_chunk(
        &self,
        conn: &String,
        name: &FileName,
        ask: &Ask,
    ) -> impl Future<Output = Result<Answer<Frames>, Failure>> + Send + use<> {
        assert_eq!(name, self.manifest.name());
        let addr = conn.clone();
        let (verdict, log) = self.decide(&addr, ask);
        let serve = self.next(&addr);
        let sent = match (&verdict, serve) {
            // The chunk after the one asked for, which was not offered.
            (Ok(_), Serve::Unasked) => {
                ChunkIndex::new(ask.chunk.get() % self.manifest.chunk_count() + 1).expect("a chunk")
            }
            (Ok(sent), _) => *sent,
            (Err(_), _) => ask.chunk,
        };
        let mut bytes = bytes_of(&self.data, &self.manifest, sent);
        async move {
            verdict.map_err(Failure::Declined)?;
            let mut pending = Pending {
                log,
                addr,
                chunk: sent,
                done: false,
            };
            match serve {
                Serve::Good | Serve::Unasked => {}
                Serve::Wrong => bytes[CHUNK / 2] ^= 0xff,
                Serve::Lacks | Serve::Dead | Serve::Busy => {
                    pending.done = true;
                    return Err(match serve {
                        Serve::Lacks => Failure::Lacks,
                        Serve::Busy => Failure::Busy,
                        _ => Failure::Unreachable("connection refused".into()),
                    });
                }
                Serve::Stall => std::future::pending::<()>().await,
                Serve::Slow(after) => tokio::time::sleep(after).await,
            }
            pending.done = true;
            let entry = (pending.addr.clone(), pending.chunk);
            lock(&pending.log).answered.push(entry);
            // In two frames, as a holder streams it.
            let second = Bytes::from(bytes.split_off(CHUNK / 3));
            let frames = [Ok(Bytes::from(bytes)), Ok(second)];
            Ok(Answer {
                chunk: sent,
                frames: Box::pin(tokio_stream::iter(frames)) as Frames,
                at: Instant::now(),
            })
        }
    }
}

impl FakeHolders {
    /// Logs the request and, for a super-seeding holder, decides it as the
    /// server does: the chunk to send, or a decline.
    fn decide(&self, addr: &str, ask: &Ask) -> (Result<ChunkIndex, Decline>, Arc<Mutex<Log>>) {
        let m = &self.manifest;
        let verdict = lock(&self.tallies).get(addr).map(|t| {
            let server_ask = server::Ask {
                chunk: ask.chunk,
                instead: &ask.instead,
                may_decline: ask.may_decline,
            };
            t.decide(
                m.name(),
                (m.digest(), m.chunk_count()),
                server_ask,
                Instant::now(),
            )
        });
        let mut log = lock(&self.log);
        log.asked.push((addr.to_owned(), ask.chunk, Instant::now()));
        log.most_instead = log.most_instead.max(ask.instead.len());
        let decided = match verdict {
            Some(Verdict::Decline {
                least_sent,
                least_count,
            }) => {
                log.declined.push((addr.to_owned(), ask.chunk));
                Err(Decline {
                    hints: least_sent.into_iter().filter_map(ChunkIndex::new).collect(),
                    first_pass: least_count == 0,
                })
            }
            Some(Verdict::Serve(sent)) if sent != ask.chunk => {
                log.swapped.push((addr.to_owned(), ask.chunk, sent));
                Ok(sent)
            }
            _ => Ok(ask.chunk),
        };
        (decided, self.log.clone())
    }
}

/// The download's storage, in memory.
#[derive(Clone)]
pub(super) struct FakeSink {
    manifest: Arc<Manifest>,
    disk: Arc<Mutex<Disk>>,
}

#[derive(Default)]
pub(super) struct Disk {
    pub(super) data: Vec<u8>,
    pub(super) written: Vec<ChunkIndex>,
    pub(super) held: Vec<ChunkIndex>,
}

impl FakeSink {
    fn new(manifest: &Arc<Manifest>) -> Self {
        let disk = Disk {
            data: vec![0; manifest.size() as usize],
            ..Disk::default()
        };
        Self {
            manifest: manifest.clone(),
            disk: Arc::new(Mutex::new(disk)),
        }
    }
}

impl Sink for FakeSink {
    fn write(
        &self,
        c: ChunkIndex,
        pieces: Vec<Bytes>,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + use<> {
        let mut disk = lock(&self.disk);
        let mut at = self.manifest.layout().range(c).start as usize;
        for piece in pieces {
            disk.data[at..at + piece.len()].copy_from_slice(&piece);
            at += piece.len();
        }
        disk.written.push(c);
        std::future::ready(Ok(()))
    }

    fn held(&self, c: ChunkIndex) {
        lock(&self.disk).held.push(c);
    }
}

/// One download against fakes.
pub(super) struct World {
    pub(super) data: Arc<Vec<u8>>,
    pub(super) manifest: Arc<Manifest>,
    pub(super) tracker: FakeTracker,
    pub(super) holders: FakeHolders,
    sink: FakeSink,
    counters: Arc<Counters>,
    pub(super) settings: Settings,
}

pub(super) type TestEngine = Engine<FakeTracker, FakeHolders, FakeSink>;

impl World {
    pub(super) fn new(chunks: u32) -> Self {
        let (data, manifest) = file(chunks);
        Self {
            tracker: FakeTracker::new(&manifest),
            holders: FakeHolders::new(&data, &manifest),
            sink: FakeSink::new(&manifest),
            counters: Arc::default(),
            settings: Settings {
                per_holder: 1,
                chunk_timeout: Duration::from_secs(10),
                caps: Default::default(),
                relocate_interval: Duration::from_secs(5),
                wait_for_holders: false,
                saturated_bytes: super::pick::SATURATED_BYTES,
            },
            data,
            manifest,
        }
    }

    /// A holder of `chunks`, listed from the start, answering per `script`.
    pub(super) fn holder(&self, addr: &str, chunks: ChunkSet, script: &[Serve]) {
        self.tracker.list(addr, chunks, Duration::ZERO);
        self.holders.script(addr, script);
    }

    pub(super) fn engine(&self, have: ChunkSet) -> TestEngine {
        let swarm = Swarm {
            locator: self.tracker.clone(),
            holders: self.holders.clone(),
            sink: self.sink.clone(),
        };
        Engine::new(
            swarm,
            self.settings.clone(),
            self.counters.clone(),
            self.manifest.clone(),
            have,
            None,
        )
    }

    /// Runs `engine` with the tracker's answer of now, to the end.
    pub(super) async fn run(&self, engine: &mut TestEngine) -> Result<(), PeerError> {
        let located = self.tracker.answer();
        let cancel = CancellationToken::new();
        let mut report = |_: &super::Progress| {};
        let run = engine.run(located, &cancel, &mut report);
        tokio::time::timeout(RUN_LIMIT, run)
            .await
            .expect("the engine finished in time")
    }

    pub(super) fn full(&self) -> ChunkSet {
        self.tracker.full()
    }

    pub(super) fn none(&self) -> ChunkSet {
        ChunkSet::empty(self.manifest.chunk_count())
    }

    pub(super) fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        lock(&self.holders.log)
    }

    pub(super) fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        lock(&self.sink.disk)
    }

    pub(super) fn strikes(&self) -> u64 {
        self.counters.snapshot().strikes
    }

    /// The sink holds exactly the file, each chunk written and held once.
    pub(super) fn assert_complete(&self) {
        let disk = self.disk();
        assert!(disk.data == *self.data, "the sink holds the file's bytes");
        let mut written = disk.written.clone();
        written.sort();
        let all: Vec<_> = self.manifest.layout().chunks().collect();
        assert_eq!(written, all, "each chunk written once");
        let mut held = disk.held.clone();
        held.sort();
        assert_eq!(held, all, "each chunk held once");
    }
}

pub(super) fn set(universe: u32, chunks: &[u32]) -> ChunkSet {
    let mut s = ChunkSet::empty(universe);
    for &c in chunks {
        s.insert(chunk(c));
    }
    s
}
