//! Churn (docs/RELIABILITY.md: CP-1) on loopback: a swarm of real peers, one stable
//! seeder keeping at least one live holder of every chunk, and a random
//! other peer SIGKILLed and restarted every couple of seconds while
//! several downloads run. Every download must complete with the right
//! bytes; the figure compares completion rate and p50/p95 download time
//! with the same workload run without churn.
//!
//! A leecher killed mid-download resumes it by itself after the restart;
//! its driver here follows the resumed download (a new Fetch of the same
//! name) and counts the download once, from its first request to done.
//!
//! The default run is short (10 peers, a restart about every second, about
//! 15 s in all). Set
//! `HIVE_LONG_TESTS=1` for a longer one (20 peers, more and larger files,
//! more restarts). `HIVE_CHURN_SEED=N` replays the choice of victims of a
//! run (printed with its figure).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use common::{
    download::{fetch_whole, percentile},
    *,
};
use tokio::sync::{Mutex, watch};

struct Plan {
    seeders: usize,
    leechers: usize,
    files: usize,
    file_len: usize,
    churn_every: Duration,
}

impl Plan {
    fn from_env() -> Self {
        if std::env::var_os("HIVE_LONG_TESTS").is_some() {
            Plan {
                seeders: 5,
                leechers: 14,
                files: 6,
                file_len: 4 << 20,
                churn_every: Duration::from_secs(2),
            }
        } else {
            Plan {
                seeders: 3,
                leechers: 6,
                files: 4,
                file_len: 1 << 20,
                churn_every: Duration::from_secs(1),
            }
        }
    }
}

/// One churnable peer: the running process, and where to reach it. The
/// generation counts restarts; the address is `None` while it is down.
struct Slot {
    peer: Mutex<Option<TestPeer>>,
    at: watch::Sender<(u64, Option<common::ControlAddr>)>,
    dir: std::path::PathBuf,
}

impl Slot {
    fn new(peer: TestPeer) -> Arc<Self> {
        Arc::new(Self {
            at: watch::Sender::new((0, Some(peer.control))),
            dir: peer.dir.clone(),
            peer: Mutex::new(Some(peer)),
        })
    }

    /// SIGKILL, then start again on the same directory.
    async fn restart(&self) {
        let mut guard = self.peer.lock().await;
        let peer = guard.take().expect("running");
        let generation = self.at.borrow().0 + 1;
        self.at.send_replace((generation, None));
        let peer = peer.restart_hard(&[]).await;
        self.at.send_replace((generation, Some(peer.control)));
        *guard = Some(peer);
    }
}

#[derive(Default)]
struct Outcome {
    times: std::sync::Mutex<Vec<Duration>>,
    completed: AtomicU32,
    interrupted: AtomicU32,
}

/// Downloads `names` one after the other on `slot`, following a download
/// across restarts of its peer. Panics on any failure churn does not
/// explain.
async fn drive(slot: Arc<Slot>, names: Vec<String>, files: Arc<Vec<Vec<u8>>>, out: Arc<Outcome>) {
    for name in names {
        let started = Instant::now();
        let mut at = slot.at.subscribe();
        loop {
            let (generation, control) = *at
                .wait_for(|(_, addr)| addr.is_some())
                .await
                .expect("slot alive");
            let control = control.expect("waited for an address");
            match fetch_whole(control, &name).await {
                Ok(done) => {
                    let want = &files[name[1..].parse::<usize>().unwrap()];
                    let got = std::fs::read(slot.dir.join(&name)).expect("downloaded file");
                    assert!(got == *want, "{name}: wrong bytes");
                    assert_eq!(hex(&done.digest), blake3::hash(want).to_hex().as_str());
                    break;
                }
                Err(_) if at.borrow().0 != generation => {
                    // Its own peer was killed under it: follow the resumed download.
                    out.interrupted.fetch_add(1, Relaxed);
                }
                Err(e) => panic!("{name}: failed without its peer being killed: {e}"),
            }
        }
        out.completed.fetch_add(1, Relaxed);
        out.times.lock().unwrap().push(started.elapsed());
    }
}

/// Runs every leecher's downloads of `names`; with `churn`, kills and
/// restarts a random non-stable peer every `churn` until all are done.
async fn phase(
    slots: &[Arc<Slot>],
    leechers: &[Arc<Slot>],
    names: &[String],
    files: &Arc<Vec<Vec<u8>>>,
    churn: Option<Duration>,
) -> (Arc<Outcome>, u32, Duration) {
    let out = Arc::new(Outcome::default());
    let started = Instant::now();
    let mut drivers = tokio::task::JoinSet::new();
    for (i, slot) in leechers.iter().enumerate() {
        let mut order = names.to_vec();
        order.rotate_left(i % names.len());
        drivers.spawn(drive(slot.clone(), order, files.clone(), out.clone()));
    }
    let mut restarts = 0;
    let mut rng = fastrand::Rng::with_seed(seed());
    loop {
        let tick = async {
            match churn {
                Some(every) => tokio::time::sleep(every.mul_f64(0.75 + rng.f64() / 2.0)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = drivers.join_next() => match joined {
                Some(r) => r.expect("driver"),
                None => break,
            },
            _ = tick => {
                slots[rng.usize(..slots.len())].restart().await;
                restarts += 1;
            }
        }
    }
    (out, restarts, started.elapsed())
}

/// Which peers die when: `HIVE_CHURN_SEED` replays a run.
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("HIVE_CHURN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp1_downloads_complete_while_peers_churn() {
    let plan = Plan::from_env();
    within(600, async {
        let tracker = TestTracker::start_with(&[
            "--in-memory",
            "--heartbeat-interval",
            "1s",
            "--ttl",
            "3s",
        ])
        .await;
        // Files f0.. for the calm phase, then as many for the churn phase.
        let files: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..2 * plan.files)
                .map(|i| data(plan.file_len, 500 + i as u64))
                .collect(),
        );
        let names: Vec<String> = (0..files.len()).map(|i| format!("f{i}")).collect();
        let shared: Vec<(&str, &[u8])> = names
            .iter()
            .zip(files.iter())
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let _stable = TestPeer::start(&tracker, &shared).await;
        let mut slots = Vec::new();
        for _ in 0..plan.seeders {
            slots.push(Slot::new(TestPeer::start(&tracker, &shared).await));
        }
        let mut leechers = Vec::new();
        for _ in 0..plan.leechers {
            let slot = Slot::new(TestPeer::start(&tracker, &[]).await);
            slots.push(slot.clone());
            leechers.push(slot);
        }
        let peers = 1 + slots.len();

        let (calm, _, calm_total) =
            phase(&slots, &leechers, &names[..plan.files], &files, None).await;
        let (churned, restarts, churn_total) = phase(
            &slots,
            &leechers,
            &names[plan.files..],
            &files,
            Some(plan.churn_every),
        )
        .await;

        let wanted = (plan.leechers * plan.files) as u32;
        assert_eq!(calm.completed.load(Relaxed), wanted);
        assert_eq!(churned.completed.load(Relaxed), wanted, "every download completes");
        assert!(restarts >= 3, "only {restarts} restarts happened");
        let mut calm_times = calm.times.lock().unwrap().clone();
        let mut churn_times = churned.times.lock().unwrap().clone();
        eprintln!(
            "FIGURE CP-1: {peers} peers (1 stable seeder), {wanted} downloads of {} KiB per phase; with churn (SIGKILL + restart every ~{:?}): completion {}/{wanted} (100%), p50 {:?}, p95 {:?}, {restarts} restarts survived ({} downloads interrupted by their own peer's death and resumed), phase {churn_total:?}; without churn: p50 {:?}, p95 {:?}, phase {calm_total:?} (HIVE_CHURN_SEED={})",
            plan.file_len / 1024,
            plan.churn_every,
            churned.completed.load(Relaxed),
            percentile(&mut churn_times, 50),
            percentile(&mut churn_times, 95),
            churned.interrupted.load(Relaxed),
            percentile(&mut calm_times, 50),
            percentile(&mut calm_times, 95),
            seed(),
        );
    })
    .await;
}
