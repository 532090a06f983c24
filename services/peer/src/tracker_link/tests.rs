//! The session against an in-process tracker that records what it hears:
//! what the holdings publish reaches the tracker, a flush covers every
//! change made before it, and nothing is registered twice.

use std::{
    fs::File,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hive::{
    ChunkIndex, ChunkSet, ChunkSize, FileName, Manifest,
    pb::tracker::{
        self as pb,
        tracker_server::{Tracker, TrackerServer},
    },
};
use tempfile::TempDir;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::{Announce, TrackerLink};
use crate::{
    fetch::partfile::PartFile,
    holdings::{Holdings, Stamp},
    scan::{Found, HashCache},
};

/// What the tracker heard, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    /// Register: each file with its chunks, and whether a session was named.
    Register {
        files: Vec<(String, Vec<(u32, u32)>)>,
        renewal: bool,
    },
    /// RegisterChunk: the file, chunks added and withdrawn as ranges.
    Chunks {
        name: String,
        add: Vec<(u32, u32)>,
        remove: Vec<(u32, u32)>,
    },
}

#[derive(Clone)]
struct Recorder {
    heard: Arc<Mutex<Vec<Heard>>>,
    /// The next heartbeat is answered NOT_FOUND (the tracker restarted).
    forget: Arc<AtomicBool>,
    /// The next Register gets no answer (UNAVAILABLE), unheard.
    drop_register: Arc<AtomicBool>,
    /// Every Register is refused (RESOURCE_EXHAUSTED: rate limited).
    refuse_register: Arc<AtomicBool>,
    /// How many Registers arrived, refused or not.
    registers: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            heard: Arc::default(),
            forget: Arc::default(),
            drop_register: Arc::default(),
            refuse_register: Arc::default(),
            registers: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Recorder {
    fn heard(&self) -> Vec<Heard> {
        self.heard.lock().unwrap().clone()
    }

    fn push(&self, h: Heard) {
        self.heard.lock().unwrap().push(h);
    }
}

fn ranges(r: &[hive::pb::types::ChunkRange]) -> Vec<(u32, u32)> {
    r.iter().map(|r| (r.first, r.last)).collect()
}

#[tonic::async_trait]
impl Tracker for Recorder {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.registers.send_modify(|n| *n += 1);
        if self.refuse_register.load(Ordering::SeqCst) {
            return Err(Status::resource_exhausted("rate limited"));
        }
        if self.drop_register.swap(false, Ordering::SeqCst) {
            return Err(Status::unavailable("dropped"));
        }
        let req = req.into_inner();
        let files = req.files.iter();
        self.push(Heard::Register {
            files: files
                .map(|f| (f.manifest.clone().unwrap().name, ranges(&f.chunks)))
                .collect(),
            renewal: !req.peer_id.is_empty(),
        });
        Ok(Response::new(pb::RegisterResponse {
            peer_id: "00000000000000ab".into(),
            token: "0123456789abcdef0123456789abcdef".into(),
            addr: "127.0.0.1:1".into(),
            heartbeat_interval_ms: 20,
            ttl_ms: 3000,
        }))
    }
    async fn list_files(
        &self,
        _: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        Err(Status::unimplemented("recorder"))
    }
    async fn locate(
        &self,
        _: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        Err(Status::unimplemented("recorder"))
    }
    async fn register_chunk(
        &self,
        req: Request<pb::RegisterChunkRequest>,
    ) -> Result<Response<pb::RegisterChunkResponse>, Status> {
        let req = req.into_inner();
        self.push(Heard::Chunks {
            name: req.name,
            add: ranges(&req.chunks),
            remove: ranges(&req.withdrawn),
        });
        Ok(Response::new(pb::RegisterChunkResponse { chunks_held: 1 }))
    }
    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        if self.forget.swap(false, Ordering::SeqCst) {
            return Err(Status::not_found("unknown peer"));
        }
        Ok(Response::new(pb::HeartbeatResponse {
            heartbeat_interval_ms: 20,
            ttl_ms: 3000,
        }))
    }
    async fn leave(
        &self,
        _: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        Ok(Response::new(pb::LeaveResponse {}))
    }
    async fn withdraw(
        &self,
        _: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WithdrawResponse>, Status> {
        Ok(Response::new(pb::WithdrawResponse {}))
    }
}

struct Fixture {
    dir: TempDir,
    tracker: Recorder,
    holdings: Holdings,
    link: TrackerLink,
}

/// A session with a recording tracker, registered, with `f` (four 1 KiB
/// chunks) held as a download holding chunk 1.
async fn fixture() -> Fixture {
    let tracker = Recorder::default();
    let addr = serve(&tracker).await;
    let dir = tempfile::tempdir().unwrap();
    let holdings = Holdings::default();
    let m = manifest("f", 4);
    let (part, _) = PartFile::open(dir.path(), &m).unwrap();
    holdings.insert_partial(m, &part, ChunkSet::from_ranges(4, [1..=1]).unwrap());
    let cache = Arc::new(Mutex::new(HashCache::load(dir.path())));
    let announce = Announce {
        port: 1,
        host: String::new(),
    };
    let url = [format!("http://{addr}")];
    let link = TrackerLink::start(&url, None, 10, announce, holdings.clone(), cache).unwrap();
    let mut sessions = link.sessions();
    sessions.wait_for(Option::is_some).await.unwrap();
    Fixture {
        dir,
        tracker,
        holdings,
        link,
    }
}

/// A file of `chunks` 1 KiB chunks.
fn manifest(name: &str, chunks: u8) -> Arc<Manifest> {
    let data: Vec<u8> = (1..=chunks).flat_map(|n| [n; 1024]).collect();
    let mut tmp = tempfile::tempfile().unwrap();
    tmp.write_all(&data).unwrap();
    let name = FileName::new(name).unwrap();
    let size = Some(ChunkSize::new(1024).unwrap());
    Arc::new(Manifest::from_file(&tmp, data.len() as u64, name, size).unwrap())
}

fn c(n: u32) -> ChunkIndex {
    ChunkIndex::new(n).unwrap()
}

fn chunks(name: &str, add: &[(u32, u32)], remove: &[(u32, u32)]) -> Heard {
    Heard::Chunks {
        name: name.into(),
        add: add.to_vec(),
        remove: remove.to_vec(),
    }
}

async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn a_flush_sends_every_change_made_before_it() {
    within(async {
        let f = fixture().await;
        let name = FileName::new("f").unwrap();
        let registered = vec![Heard::Register {
            files: vec![("f".into(), vec![(1, 1)])],
            renewal: false,
        }];
        assert_eq!(f.tracker.heard(), registered);
        f.holdings.mark(&name, c(2));
        f.holdings.mark(&name, c(3));
        f.holdings.withdraw(&name, c(1));
        f.link.flush().await.expect("flushed");
        let mut want = registered;
        want.push(chunks("f", &[(2, 3)], &[(1, 1)]));
        assert_eq!(
            f.tracker.heard(),
            want,
            "one call, sent before the flush answered"
        );
        // Nothing queued: a flush sends nothing.
        f.link.flush().await.expect("flushed");
        assert_eq!(f.tracker.heard(), want);
    })
    .await;
}

#[tokio::test]
async fn a_shared_file_is_registered_once() {
    within(async {
        let f = fixture().await;
        let m = manifest("g", 2);
        let path = f.dir.path().join("g");
        std::fs::write(&path, vec![1u8; 2048]).unwrap();
        let file = File::open(&path).unwrap();
        let stamp = Stamp::of(&file.metadata().unwrap());
        let found = Found {
            manifest: m.clone(),
            path,
            file: Arc::new(file),
            stamp,
        };
        f.link.share(vec![found]).await.expect("shared");
        assert!(f.holdings.holding(m.name()).is_some(), "held once accepted");
        f.link.flush().await.expect("flushed");
        let shares = f.tracker.heard().into_iter().filter(
            |h| matches!(h, Heard::Register { files, .. } if files.iter().any(|(n, _)| n == "g")),
        );
        assert_eq!(shares.count(), 1, "{:?}", f.tracker.heard());
    })
    .await;
}

#[tokio::test]
async fn a_forgotten_session_registers_everything_held_again() {
    within(async {
        let f = fixture().await;
        let name = FileName::new("f").unwrap();
        f.holdings.mark(&name, c(4));
        f.link.flush().await.expect("flushed");
        let mut sessions = f.link.sessions();
        sessions.borrow_and_update();
        f.tracker.forget.store(true, Ordering::SeqCst);
        // Dropped by the heartbeat's NOT_FOUND (a change, however soon it
        // is accepted again), then accepted again.
        sessions.changed().await.unwrap();
        sessions.wait_for(Option::is_some).await.unwrap();
        let heard = f.tracker.heard();
        let again = Heard::Register {
            files: vec![("f".into(), vec![(1, 1), (4, 4)])],
            renewal: false,
        };
        assert_eq!(heard.last(), Some(&again), "{heard:?}");
    })
    .await;
}

/// Serves `tracker` on a port of its own; its address.
async fn serve(tracker: &Recorder) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TrackerServer::new(tracker.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test(start_paused = true)]
async fn a_queued_change_does_not_hurry_the_registration_retries() {
    within(async {
        let tracker = Recorder::default();
        tracker.refuse_register.store(true, Ordering::SeqCst);
        let mut registers = tracker.registers.subscribe();
        let addr = serve(&tracker).await;
        let dir = tempfile::tempdir().unwrap();
        let holdings = Holdings::default();
        let m = manifest("f", 4);
        let (part, _) = PartFile::open(dir.path(), &m).unwrap();
        holdings.insert_partial(m, &part, ChunkSet::empty(4));
        let cache = Arc::new(Mutex::new(HashCache::load(dir.path())));
        let announce = Announce {
            port: 1,
            host: String::new(),
        };
        let url = [format!("http://{addr}")];
        let _link = TrackerLink::start(&url, None, 10, announce, holdings.clone(), cache).unwrap();
        holdings.mark(&FileName::new("f").unwrap(), c(2));
        // Retries 200 ms, 400 ms, 800 ms... apart: four or so in 2 s. A loop
        // that registers whenever the change is due makes thousands; stop
        // counting well before that.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = registers.wait_for(|n| *n > 10) => {}
        }
        let n = *registers.borrow();
        assert!((1..=5).contains(&n), "{n} Registers in 2 s");
    })
    .await;
}

#[tokio::test]
async fn a_file_no_longer_held_is_withdrawn_from_the_tracker() {
    within(async {
        let f = fixture().await;
        let name = FileName::new("f").unwrap();
        f.holdings.mark(&name, c(3));
        f.holdings.remove(&name);
        f.link.flush().await.expect("flushed");
        let heard = f.tracker.heard();
        assert_eq!(
            heard.last(),
            Some(&chunks("f", &[], &[(1, 1), (3, 3)])),
            "{heard:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_file_held_anew_in_another_layout_drops_what_was_queued_for_the_old() {
    within(async {
        let f = fixture().await;
        let name = FileName::new("f").unwrap();
        f.holdings.mark(&name, c(3));
        let m = manifest("f", 2);
        let (part, _) = PartFile::open(f.dir.path(), &m).unwrap();
        f.holdings.insert_partial(m, &part, ChunkSet::empty(2));
        f.link.flush().await.expect("flushed");
        let heard = f.tracker.heard();
        let chunk_calls = heard.iter().filter(|h| matches!(h, Heard::Chunks { .. }));
        assert_eq!(chunk_calls.count(), 0, "{heard:?}");
    })
    .await;
}

#[tokio::test]
async fn an_added_file_whose_registration_got_no_answer_goes_out_at_the_next_flush() {
    within(async {
        let f = fixture().await;
        let m = manifest("g", 2);
        let path = f.dir.path().join("g");
        std::fs::write(&path, vec![1u8; 2048]).unwrap();
        let file = File::open(&path).unwrap();
        let stamp = Stamp::of(&file.metadata().unwrap());
        f.tracker.drop_register.store(true, Ordering::SeqCst);
        f.holdings
            .insert_complete(m, path, Arc::new(file), stamp)
            .unwrap();
        // The flush takes the addition in (its Register dropped), then
        // sends the queue, the file with it.
        f.link.flush().await.expect("flushed");
        let registered = f.tracker.heard().into_iter().filter(
            |h| matches!(h, Heard::Register { files, .. } if files.iter().any(|(n, _)| n == "g")),
        );
        assert_eq!(registered.count(), 1, "{:?}", f.tracker.heard());
    })
    .await;
}
