//! The engine's rules, driven by fakes under paused time: a tracker with a
//! scripted holder list, holders that answer as each test says (good, wrong,
//! dead, stalled, slow), and an in-memory sink. Every chunk still passes
//! through the real verification in `request.rs`.

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
        request::Failure,
        traits::{Holders, Locator, Sink},
    },
    metrics::Counters,
    tracker_link::{Holder, Located},
};

const CHUNK: usize = 1024;
/// Virtual time a whole run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

fn bytes_of(data: &[u8], manifest: &Manifest, c: ChunkIndex) -> Vec<u8> {
    let r = manifest.layout().range(c);
    data[r.start as usize..r.end as usize].to_vec()
}

/// How a fake holder answers one request.
#[derive(Debug, Clone, Copy)]
enum Serve {
    Good,
    /// The right length, one byte wrong.
    Wrong,
    Lacks,
    Dead,
    /// Never answers.
    Stall,
    /// Answers correctly after this long.
    Slow(Duration),
}

/// The tracker: holders listed from a given (virtual) time on.
#[derive(Clone)]
struct FakeTracker {
    manifest: Arc<Manifest>,
    listed: Arc<Mutex<Vec<(Instant, Holder)>>>,
    /// Per-chunk holder counts to report instead of the listed holders'.
    counts: Option<Vec<u32>>,
    calls: Arc<Mutex<u32>>,
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
    fn list(&self, addr: &str, chunks: ChunkSet, after: Duration) {
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

    fn answer(&self) -> Located {
        let holders: Vec<Holder> = lock(&self.listed)
            .iter()
            .filter(|(from, _)| *from <= Instant::now())
            .map(|(_, h)| h.clone())
            .collect();
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
struct Log {
    /// Each request: holder, chunk, when.
    asked: Vec<(String, ChunkIndex, Instant)>,
    /// Requests answered (bytes handed over, right or wrong).
    answered: Vec<(String, ChunkIndex)>,
    /// Requests dropped before they answered.
    cancelled: Vec<(String, ChunkIndex)>,
}

impl Log {
    fn asked_of(&self, addr: &str) -> Vec<ChunkIndex> {
        self.asked
            .iter()
            .filter(|(a, _, _)| a == addr)
            .map(|(_, c, _)| *c)
            .collect()
    }

    fn answered_by(&self, addr: &str) -> Vec<ChunkIndex> {
        self.answered
            .iter()
            .filter(|(a, _)| a == addr)
            .map(|(_, c)| *c)
            .collect()
    }
}

/// Holders by address, each with a script of answers; the last one repeats.
#[derive(Clone)]
struct FakeHolders {
    data: Arc<Vec<u8>>,
    manifest: Arc<Manifest>,
    scripts: Arc<Mutex<HashMap<String, Vec<Serve>>>>,
    log: Arc<Mutex<Log>>,
}

impl FakeHolders {
    fn new(data: &Arc<Vec<u8>>, manifest: &Arc<Manifest>) -> Self {
        Self {
            data: data.clone(),
            manifest: manifest.clone(),
            scripts: Arc::default(),
            log: Arc::default(),
        }
    }

    fn script(&self, addr: &str, answers: &[Serve]) {
        lock(&self.scripts).insert(addr.to_owned(), answers.to_vec());
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
        c: ChunkIndex,
    ) -> impl Future<Output = Result<Frames, Failure>> + Send + use<> {
        assert_eq!(name, self.manifest.name());
        let addr = conn.clone();
        let serve = self.next(&addr);
        let mut bytes = bytes_of(&self.data, &self.manifest, c);
        let log = self.log.clone();
        lock(&log).asked.push((addr.clone(), c, Instant::now()));
        async move {
            let mut pending = Pending {
                log,
                addr,
                chunk: c,
                done: false,
            };
            match serve {
                Serve::Good => {}
                Serve::Wrong => bytes[CHUNK / 2] ^= 0xff,
                Serve::Lacks | Serve::Dead => {
                    pending.done = true;
                    return Err(match serve {
                        Serve::Lacks => Failure::Lacks,
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
            Ok(Box::pin(tokio_stream::iter(frames)) as Frames)
        }
    }
}

/// The download's storage, in memory.
#[derive(Clone)]
struct FakeSink {
    manifest: Arc<Manifest>,
    disk: Arc<Mutex<Disk>>,
}

#[derive(Default)]
struct Disk {
    data: Vec<u8>,
    written: Vec<ChunkIndex>,
    held: Vec<ChunkIndex>,
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
struct World {
    data: Arc<Vec<u8>>,
    manifest: Arc<Manifest>,
    tracker: FakeTracker,
    holders: FakeHolders,
    sink: FakeSink,
    counters: Arc<Counters>,
    settings: Settings,
}

type TestEngine = Engine<FakeTracker, FakeHolders, FakeSink>;

impl World {
    fn new(chunks: u32) -> Self {
        let (data, manifest) = file(chunks);
        Self {
            tracker: FakeTracker::new(&manifest),
            holders: FakeHolders::new(&data, &manifest),
            sink: FakeSink::new(&manifest),
            counters: Arc::default(),
            settings: Settings {
                per_holder: 1,
                chunk_timeout: Duration::from_secs(10),
                relocate_interval: Duration::from_secs(5),
            },
            data,
            manifest,
        }
    }

    /// A holder of `chunks`, listed from the start, answering per `script`.
    fn holder(&self, addr: &str, chunks: ChunkSet, script: &[Serve]) {
        self.tracker.list(addr, chunks, Duration::ZERO);
        self.holders.script(addr, script);
    }

    fn engine(&self, have: ChunkSet) -> TestEngine {
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
    async fn run(&self, engine: &mut TestEngine) -> Result<(), PeerError> {
        let located = self.tracker.answer();
        let cancel = CancellationToken::new();
        let mut report = |_: &super::Progress| {};
        let run = engine.run(located, &cancel, &mut report);
        tokio::time::timeout(RUN_LIMIT, run)
            .await
            .expect("the engine finished in time")
    }

    fn full(&self) -> ChunkSet {
        self.tracker.full()
    }

    fn none(&self) -> ChunkSet {
        ChunkSet::empty(self.manifest.chunk_count())
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        lock(&self.holders.log)
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        lock(&self.sink.disk)
    }

    fn strikes(&self) -> u64 {
        self.counters.snapshot().strikes
    }

    /// The sink holds exactly the file, each chunk written and held once.
    fn assert_complete(&self) {
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

fn set(universe: u32, chunks: &[u32]) -> ChunkSet {
    let mut s = ChunkSet::empty(universe);
    for &c in chunks {
        s.insert(chunk(c));
    }
    s
}

#[tokio::test(start_paused = true)]
async fn the_rarest_chunk_is_requested_first() {
    let mut w = World::new(4);
    w.holder("a:1", w.full(), &[Serve::Good]);
    // Chunk 2 has one holder, chunk 4 two, chunk 1 three, chunk 3 four.
    w.tracker.counts = Some(vec![3, 1, 4, 2]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(
        w.log().asked_of("a:1"),
        [chunk(2), chunk(4), chunk(1), chunk(3)]
    );
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn the_end_game_asks_a_second_holder_and_cancels_the_loser() {
    let w = World::new(2);
    // Slow, but well within the chunk deadline: only the end-game helps.
    let slow = w.settings.chunk_timeout / 2;
    let fast = Duration::from_millis(10);
    w.holder("slow:1", w.full(), &[Serve::Slow(slow)]);
    w.holder("fast:1", w.full(), &[Serve::Slow(fast)]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    let took = started.elapsed();
    assert!(
        took < slow / 10,
        "the slow holder was not waited for: {took:?}"
    );
    // Let the aborted request wind down while the engine still exists: it
    // is the engine that cancels it, not its drop.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let log = w.log();
    let [last] = log.asked_of("slow:1")[..] else {
        panic!(
            "the slow holder was asked once: {:?}",
            log.asked_of("slow:1")
        );
    };
    let mut fast = log.asked_of("fast:1");
    assert_eq!(fast.len(), 2, "the fast holder was asked both chunks");
    assert_eq!(fast.pop(), Some(last), "the last chunk was asked twice");
    assert_eq!(log.cancelled, [("slow:1".to_owned(), last)]);
    assert_eq!(log.answered_by("slow:1"), []);
    drop(log);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn wrong_bytes_are_refused_struck_and_fetched_from_another_holder() {
    let w = World::new(4);
    w.holder("liar:1", w.full(), &[Serve::Wrong]);
    // A little slower, so the liar's answer arrives first.
    w.holder(
        "honest:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(w.log().answered_by("liar:1").len(), 1, "the liar answered");
    // Someone else has the chunk: banned at the first strike, never asked again.
    assert_eq!(w.strikes(), 1);
    assert_eq!(engine.stats.holders_banned, 1);
    assert_eq!(w.log().asked_of("liar:1").len(), 1);
    assert_eq!(w.log().answered_by("honest:1").len(), 4);
    // Every byte in the sink came from the honest holder, verified.
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn the_only_source_is_banned_at_the_third_strike() {
    let w = World::new(1);
    w.holder("liar:1", w.full(), &[Serve::Wrong]);
    let mut engine = w.engine(w.none());
    let err = w.run(&mut engine).await.expect_err("nobody can supply it");
    assert!(matches!(err, PeerError::Unavailable(_)), "{err:?}");
    assert_eq!(w.log().asked_of("liar:1").len(), 3);
    assert_eq!(w.strikes(), 3);
    assert_eq!(engine.stats.holders_banned, 1);
    assert!(
        w.disk().written.is_empty(),
        "nothing unverified was written"
    );
    assert!(w.disk().held.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_only_source_is_kept_after_two_strikes() {
    let w = World::new(1);
    let script = [Serve::Wrong, Serve::Wrong, Serve::Good];
    w.holder("flaky:1", w.full(), &script);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the third answer is good");
    assert_eq!(w.log().asked_of("flaky:1").len(), 3);
    assert_eq!(w.strikes(), 2);
    assert_eq!(engine.stats.holders_banned, 0);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_chunk_advertised_but_lacking_is_a_strike() {
    let w = World::new(2);
    w.holder("boaster:1", w.full(), &[Serve::Lacks]);
    w.holder(
        "honest:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(w.strikes(), 1);
    assert_eq!(engine.stats.holders_banned, 1);
    assert_eq!(w.log().asked_of("boaster:1").len(), 1);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_dead_holder_fails_over_to_a_live_one() {
    let w = World::new(4);
    w.holder("dead:1", w.full(), &[Serve::Dead]);
    w.holder("live:1", w.full(), &[Serve::Good]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert!(
        !w.log().asked_of("dead:1").is_empty(),
        "the dead holder was tried"
    );
    assert_eq!(w.log().answered_by("live:1").len(), 4);
    assert_eq!(w.strikes(), 0, "being unreachable is no strike");
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_is_given_up_at_the_chunk_deadline() {
    let w = World::new(1);
    w.holder("stuck:1", w.full(), &[Serve::Stall, Serve::Good]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine)
        .await
        .expect("the second request succeeds");
    let took = started.elapsed();
    let deadline = w.settings.chunk_timeout;
    assert!(
        took >= deadline,
        "not abandoned before the deadline: {took:?}"
    );
    assert!(took < deadline * 2, "asked again soon after: {took:?}");
    let log = w.log();
    assert_eq!(log.asked_of("stuck:1"), [chunk(1), chunk(1)]);
    assert_eq!(log.cancelled, [("stuck:1".to_owned(), chunk(1))]);
    drop(log);
    assert_eq!(w.strikes(), 0, "stalling is no strike");
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_appears_later_is_picked_up_by_a_relocate() {
    let w = World::new(20);
    let slow = Duration::from_secs(1);
    w.holder("slow:1", w.full(), &[Serve::Slow(slow)]);
    let appears = Duration::from_secs(3);
    w.tracker.list("new:1", w.full(), appears);
    w.holders.script("new:1", &[Serve::Good]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    let took = started.elapsed();
    assert!(took < slow * 10, "the new holder sped it up: {took:?}");
    assert!(*lock(&w.tracker.calls) >= 1, "the tracker was asked again");
    let log = w.log();
    assert!(
        log.answered_by("new:1").len() >= 10,
        "the new holder served"
    );
    let first = log.asked.iter().find(|(a, _, _)| a == "new:1");
    let (_, _, at) = first.expect("the new holder was asked");
    assert!(*at >= started + appears, "not asked before it was listed");
    drop(log);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_resumed_download_never_requests_chunks_it_holds() {
    let w = World::new(6);
    w.holder("a:1", w.full(), &[Serve::Good]);
    w.holder("b:1", w.full(), &[Serve::Good]);
    let have = set(6, &[1, 2, 5]);
    // The sink already holds those chunks' bytes.
    for c in have.iter() {
        let r = w.manifest.layout().range(c);
        let bytes = bytes_of(&w.data, &w.manifest, c);
        w.disk().data[r.start as usize..r.end as usize].copy_from_slice(&bytes);
    }
    let mut engine = w.engine(have.clone());
    w.run(&mut engine).await.expect("the download completes");
    let log = w.log();
    let mut asked: Vec<_> = log.asked.iter().map(|(_, c, _)| *c).collect();
    asked.sort();
    asked.dedup();
    assert_eq!(asked, [chunk(3), chunk(4), chunk(6)]);
    drop(log);
    let mut written = w.disk().written.clone();
    written.sort();
    // In the end-game both holders may deliver the last chunk.
    written.dedup();
    assert_eq!(written, [chunk(3), chunk(4), chunk(6)]);
    assert!(w.disk().data == *w.data);
    assert!(engine.have().is_full());
    assert_eq!(engine.stats.chunks_fetched, 3);
}

#[tokio::test(start_paused = true)]
async fn a_chunk_forgotten_after_the_run_is_fetched_again() {
    let w = World::new(3);
    w.holder("a:1", w.full(), &[Serve::Good]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    // The finish found chunk 2 damaged on disk.
    engine.forget(&set(3, &[2]));
    assert!(!engine.have().contains(chunk(2)));
    w.run(&mut engine)
        .await
        .expect("the chunk is fetched again");
    let asked = w.log().asked_of("a:1");
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[3], chunk(2), "only the damaged chunk was asked again");
    assert!(engine.have().is_full());
}

#[tokio::test(start_paused = true)]
async fn this_peer_never_asks_itself() {
    let w = World::new(2);
    w.holder("me:1", w.full(), &[Serve::Good]);
    lock(&w.tracker.listed)[0].1.peer_id = "id-me".into();
    w.holder("other:1", w.full(), &[Serve::Good]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(w.log().asked_of("me:1"), []);
    w.assert_complete();
}
