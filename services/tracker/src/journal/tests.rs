use std::sync::atomic::{AtomicUsize, Ordering};

use std::fs;

use super::{
    files::{generations, log_path},
    *,
};
use crate::{codec::tests::every_kind, registry::Catalog};

/// Keeps every change it is given, in order; fails every commit after
/// the first `ok`.
#[derive(Default)]
struct Recording {
    changes: Mutex<Vec<Change>>,
    generation: Mutex<Option<u64>>,
    commits: AtomicUsize,
    ok: Option<usize>,
}

impl Store for Recording {
    fn load(&self) -> Result<Catalog, StoreError> {
        Ok(Catalog::default())
    }

    fn commit(&self, changes: &[Change], generation: u64) -> Result<(), StoreError> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst);
        if self.ok.is_some_and(|ok| n >= ok) {
            return Err(StoreError("disk gone".into()));
        }
        self.changes.lock().unwrap().extend_from_slice(changes);
        *self.generation.lock().unwrap() = Some(generation);
        Ok(())
    }

    fn checkpointed(&self) -> Result<Option<u64>, StoreError> {
        Ok(*self.generation.lock().unwrap())
    }
}

impl Recording {
    fn changes(&self) -> Vec<Change> {
        self.changes.lock().unwrap().clone()
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn options(fsync: Fsync) -> Options {
    Options {
        fsync,
        // Checkpoints only when a test asks for one.
        checkpoint_interval: Duration::from_secs(3600),
    }
}

fn open(dir: &Path, store: &Arc<Recording>) -> Journal {
    Journal::open(dir, store.clone(), options(Fsync::Periodic)).unwrap()
}

/// Logs each change of `changes` as a request of its own.
async fn submit_each(journal: &Journal, changes: &[Change]) {
    for change in changes {
        let pending = journal.submit(std::slice::from_ref(change));
        tokio::time::timeout(WAIT, pending.durable())
            .await
            .expect("answered")
            .expect("logged");
    }
}

fn logs(dir: &Path) -> Vec<(u64, u64)> {
    generations(dir)
        .unwrap()
        .into_iter()
        .map(|(g, path)| (g, fs::metadata(path).unwrap().len()))
        .collect()
}

#[tokio::test]
async fn what_a_killed_tracker_logged_is_replayed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Arc::new(Recording::default());
    let journal = open(dir.path(), &first);
    submit_each(&journal, &every_kind()).await;
    // Gone without a checkpoint, as under kill -9: only the log has them.
    drop(journal);
    assert!(first.changes().is_empty());

    let second = Arc::new(Recording::default());
    let _journal = open(dir.path(), &second);
    assert_eq!(second.changes(), every_kind());
    // The replayed log is deleted; a new generation starts empty.
    assert_eq!(logs(dir.path()), vec![(1, 0)]);
}

#[tokio::test]
async fn a_checkpoint_moves_the_log_into_the_store_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording::default());
    let journal = open(dir.path(), &store);
    let changes = every_kind();
    let (early, late) = changes.split_at(3);

    submit_each(&journal, early).await;
    journal.checkpoint().await.unwrap();
    assert_eq!(store.changes(), early);
    assert_eq!(logs(dir.path()), vec![(1, 0)]);

    submit_each(&journal, late).await;
    journal.checkpoint().await.unwrap();
    assert_eq!(store.changes(), changes);
    // Nothing new: no commit, no new generation.
    journal.checkpoint().await.unwrap();
    assert_eq!(store.commits.load(Ordering::SeqCst), 2);
    assert_eq!(logs(dir.path()), vec![(2, 0)]);
    drop(journal);

    // Everything was checkpointed: the next start replays nothing.
    let _journal = open(dir.path(), &store);
    assert_eq!(store.changes(), changes);
    assert_eq!(logs(dir.path()), vec![(3, 0)]);
}

#[tokio::test]
async fn a_generation_the_store_has_is_never_replayed_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording::default());
    let journal = open(dir.path(), &store);
    let changes = every_kind();
    submit_each(&journal, &changes).await;
    let logged = fs::read(log_path(dir.path(), 0)).unwrap();
    journal.checkpoint().await.unwrap();
    // A later change to the same key, in the next generation.
    let removed = Change::RemovePeer(crate::auth::PeerId::from_u64(7));
    submit_each(&journal, std::slice::from_ref(&removed)).await;
    drop(journal);

    // Generation 0 is back, whole or in part, as if its deletion had
    // not lasted through a power cut.
    for kept in [logged.len(), logged.len() / 2] {
        fs::write(log_path(dir.path(), 0), &logged[..kept]).unwrap();
        let before = store.changes().len();
        let _journal = open(dir.path(), &store);
        // Skipped and deleted; only what came after it is replayed.
        let replayed = store.changes()[before..].to_vec();
        let expected = if before == changes.len() {
            vec![removed.clone()]
        } else {
            Vec::new()
        };
        assert_eq!(replayed, expected, "kept {kept} bytes");
        assert!(logs(dir.path()).iter().all(|&(g, _)| g > 1));
    }
}

#[tokio::test]
async fn the_log_ends_at_the_first_record_that_cannot_be_read() {
    let changes = every_kind();
    // Three generations of two records each, none checkpointed.
    let dir = tempfile::tempdir().unwrap();
    for (g, pair) in changes.chunks(2).enumerate() {
        let journal = open(dir.path(), &Arc::new(Recording::default()));
        submit_each(&journal, pair).await;
        // Left behind, as by a crash; kept aside so that the next open
        // does not replay it yet.
        drop(journal);
        fs::rename(
            log_path(dir.path(), 0),
            dir.path().join(format!("kept-{g}")),
        )
        .unwrap();
    }
    let restore = |dir: &Path| {
        for g in 0..3 {
            let kept = dir.join(format!("kept-{g}"));
            fs::copy(&kept, log_path(dir, g)).unwrap();
        }
    };
    let replayed = |dir: &Path| {
        let store = Arc::new(Recording::default());
        drop(open(dir, &store));
        assert!(generations(dir).unwrap().iter().all(|(g, _)| *g == 3));
        fs::remove_file(log_path(dir, 3)).unwrap();
        store.changes()
    };

    restore(dir.path());
    assert_eq!(replayed(dir.path()), changes, "intact");

    // The last record cut short, as by kill -9 in the middle of a write.
    restore(dir.path());
    let newest = log_path(dir.path(), 2);
    let len = fs::metadata(&newest).unwrap().len();
    File::options()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert_eq!(replayed(dir.path()), changes[..5]);

    // A damaged byte in generation 1's second record: the log ends
    // there, and generation 2 is dropped with it.
    restore(dir.path());
    let middle = log_path(dir.path(), 1);
    let mut bytes = fs::read(&middle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&middle, bytes).unwrap();
    assert_eq!(replayed(dir.path()), changes[..3]);
}

#[tokio::test]
async fn a_failed_checkpoint_breaks_the_journal_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording {
        ok: Some(1),
        ..Recording::default()
    });
    let journal = open(dir.path(), &store);
    let changes = every_kind();
    submit_each(&journal, &changes[..1]).await;
    journal.checkpoint().await.unwrap();
    assert!(!journal.broken().is_cancelled());

    submit_each(&journal, &changes[1..2]).await;
    assert!(journal.checkpoint().await.is_err());
    tokio::time::timeout(WAIT, journal.broken().cancelled())
        .await
        .expect("the journal reports itself broken");
    // Nothing is accepted after the failure, and nothing more committed.
    let refused = journal.submit(&changes[2..3]);
    assert!(refused.durable().await.is_err());
    assert!(journal.checkpoint().await.is_err());
    assert_eq!(store.commits.load(Ordering::SeqCst), 2);
    // What failed to reach the store is still in the log for the next
    // start; the refused change is not.
    drop(journal);
    let next = Arc::new(Recording::default());
    let _journal = open(dir.path(), &next);
    assert_eq!(next.changes(), changes[1..2]);
}

#[tokio::test]
async fn a_checkpoint_that_cannot_read_back_its_log_breaks_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording::default());
    let journal = open(dir.path(), &store);
    submit_each(&journal, &every_kind()[..2]).await;
    // The file loses its last record under the journal (a disk fault).
    let (_, path) = generations(dir.path()).unwrap().pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let e = journal.checkpoint().await.expect_err("a short log");
    assert!(
        e.to_string().contains("read back 1 of the 2 changes"),
        "{e}"
    );
    assert!(journal.broken().is_cancelled());
    assert_eq!(
        store.commits.load(Ordering::SeqCst),
        0,
        "nothing half-committed"
    );
}

#[tokio::test]
async fn a_failed_write_refuses_its_request_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording::default());
    let journal = open(dir.path(), &store);
    let changes = every_kind();
    submit_each(&journal, &changes[..1]).await;
    journal.fail_log_with("/dev/full"); // ENOSPC
    assert!(journal.submit(&changes[1..2]).durable().await.is_err());
    assert!(journal.broken().is_cancelled());
    // Refused without touching the log, and never checkpointed.
    assert!(journal.submit(&changes[2..3]).durable().await.is_err());
    assert!(journal.checkpoint().await.is_err());
    assert_eq!(store.commits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn with_fsync_always_a_failed_fsync_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording::default());
    let journal = Journal::open(dir.path(), store.clone(), options(Fsync::Always)).unwrap();
    let durable = journal.handle.as_ref().unwrap().shared.durable.subscribe();
    let changes = every_kind();
    submit_each(&journal, &changes[..1]).await;
    journal.fail_log_with("/dev/null"); // writes, but fsync fails (EINVAL)
    let pending = journal.submit(&changes[1..2]);
    let answer = tokio::time::timeout(WAIT, pending.durable()).await;
    assert!(answer.expect("answered").is_err());
    assert!(journal.broken().is_cancelled());
    assert_eq!(*durable.borrow(), 1, "only the first request is durable");
    assert!(journal.submit(&changes[2..3]).durable().await.is_err());
}

#[tokio::test]
async fn with_fsync_always_an_answer_waits_for_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Recording::default());
    let journal = Journal::open(dir.path(), store.clone(), options(Fsync::Always)).unwrap();
    let durable = journal.handle.as_ref().unwrap().shared.durable.subscribe();
    let changes = every_kind();
    // Many requests at once share fsyncs; each is answered only once
    // the durable count covers it.
    let pending: Vec<_> = changes
        .iter()
        .map(|c| journal.submit(std::slice::from_ref(c)))
        .collect();
    for p in pending {
        tokio::time::timeout(WAIT, p.durable())
            .await
            .expect("answered")
            .expect("fsynced");
    }
    assert_eq!(*durable.borrow(), changes.len() as u64);
    // Across a checkpoint too, into a new generation.
    journal.checkpoint().await.unwrap();
    submit_each(&journal, &changes[..1]).await;
    assert_eq!(*durable.borrow(), changes.len() as u64 + 1);
    assert_eq!(store.changes(), changes);
}
