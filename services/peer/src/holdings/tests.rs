//! The owner's rules: each change publishes exactly one event, a no-op
//! publishes none, subscribers see changes in order, and only held chunks
//! are served.

use std::{fs::File, io::Write, sync::Arc};

use hive::{ChunkIndex, ChunkSet, ChunkSize, FileName, Manifest};
use tempfile::TempDir;
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};
use tonic::Code;

use super::{Holdings, HoldingsChange, Kind, Stamp};
use crate::fetch::partfile::{self, Mode, PartFile};

/// 1 KiB chunks.
const CHUNK: u64 = 1024;

struct Fixture {
    dir: TempDir,
    holdings: Holdings,
    changes: UnboundedReceiver<HoldingsChange>,
}

fn fixture() -> Fixture {
    let holdings = Holdings::default();
    let changes = holdings.subscribe();
    Fixture {
        dir: tempfile::tempdir().unwrap(),
        holdings,
        changes,
    }
}

fn name(s: &str) -> FileName {
    FileName::new(s).unwrap()
}

fn c(n: u32) -> ChunkIndex {
    ChunkIndex::new(n).unwrap()
}

/// A file of `chunks` 1 KiB chunks, each byte its chunk number.
fn data(chunks: u8) -> Vec<u8> {
    (1..=chunks).flat_map(|n| [n; CHUNK as usize]).collect()
}

fn manifest_of(file_name: &str, data: &[u8]) -> Arc<Manifest> {
    let mut tmp = tempfile::tempfile().unwrap();
    tmp.write_all(data).unwrap();
    let size = ChunkSize::new(CHUNK).unwrap();
    Arc::new(Manifest::from_file(&tmp, data.len() as u64, name(file_name), Some(size)).unwrap())
}

impl Fixture {
    /// A download of `file_name` holding `have` of `data`, written as the
    /// peer writes it.
    fn partial(&self, file_name: &str, data: &[u8], have: &[u32]) -> Arc<Manifest> {
        let m = manifest_of(file_name, data);
        let (part, _) = PartFile::open(self.dir.path(), &m).unwrap();
        let mut set = ChunkSet::empty(m.chunk_count());
        for &n in have {
            let r = m.layout().range(c(n));
            std::os::unix::fs::FileExt::write_all_at(
                &*part.file,
                &data[r.start as usize..r.end as usize],
                r.start,
            )
            .unwrap();
            set.insert(c(n));
        }
        self.holdings.insert_partial(m.clone(), &part, set);
        m
    }

    /// A complete file `file_name` holding `data`.
    fn complete(&self, file_name: &str, data: &[u8]) -> Arc<Manifest> {
        let m = manifest_of(file_name, data);
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        let stamp = Stamp::of(&file.metadata().unwrap());
        let (holdings, file) = (&self.holdings, Arc::new(file));
        holdings
            .insert_complete(m.clone(), path, file, stamp)
            .unwrap();
        m
    }

    /// Every change published so far.
    fn published(&mut self) -> Vec<HoldingsChange> {
        let mut out = Vec::new();
        loop {
            match self.changes.try_recv() {
                Ok(change) => out.push(change),
                Err(TryRecvError::Empty) => return out,
                Err(TryRecvError::Disconnected) => panic!("the holdings stopped publishing"),
            }
        }
    }
}

fn marked(file_name: &str, universe: u32, n: u32) -> HoldingsChange {
    HoldingsChange::Marked {
        name: name(file_name),
        universe,
        chunk: c(n),
    }
}

fn withdrawn(file_name: &str, universe: u32, n: u32) -> HoldingsChange {
    HoldingsChange::Withdrawn {
        name: name(file_name),
        universe,
        chunk: c(n),
    }
}

#[test]
fn a_mark_publishes_one_change_and_a_repeat_none() {
    let mut f = fixture();
    f.partial("f", &data(4), &[]);
    f.published();
    assert!(f.holdings.mark(&name("f"), c(2)));
    assert_eq!(f.published(), [marked("f", 4, 2)]);
    assert!(!f.holdings.mark(&name("f"), c(2)), "already held");
    assert!(!f.holdings.mark(&name("g"), c(1)), "not a file held here");
    assert_eq!(f.published(), []);
}

#[test]
fn a_withdraw_publishes_one_change_and_one_of_a_chunk_not_held_none() {
    let mut f = fixture();
    f.partial("f", &data(4), &[1, 3]);
    f.published();
    assert!(f.holdings.withdraw(&name("f"), c(3)));
    assert_eq!(f.published(), [withdrawn("f", 4, 3)]);
    assert!(!f.holdings.withdraw(&name("f"), c(3)), "withdrawn already");
    assert!(!f.holdings.withdraw(&name("f"), c(2)), "never held");
    assert!(
        !f.holdings.withdraw(&name("g"), c(1)),
        "not a file held here"
    );
    assert_eq!(f.published(), []);
    let (_, have, _) = f.holdings.holding(&name("f")).unwrap();
    assert_eq!(have.iter().collect::<Vec<_>>(), [c(1)]);
}

#[test]
fn subscribers_see_every_change_in_order() {
    let mut f = fixture();
    let mut late = f.holdings.subscribe();
    let m = f.partial("f", &data(3), &[1]);
    f.holdings.mark(&name("f"), c(2));
    f.holdings.withdraw(&name("f"), c(1));
    f.holdings.mark(&name("f"), c(1));
    f.holdings.mark(&name("f"), c(3));
    let path = f.dir.path().join("f");
    let stamp = Stamp::of_parts(3 * CHUNK, (0, 0), 0);
    f.holdings.complete(&name("f"), path, stamp);
    f.holdings.remove(&name("f"));
    f.holdings.remove(&name("f"));
    let want = vec![
        HoldingsChange::Added {
            manifest: m,
            have: ChunkSet::from_ranges(3, [1..=1]).unwrap(),
            kind: Kind::Partial,
        },
        marked("f", 3, 2),
        withdrawn("f", 3, 1),
        marked("f", 3, 1),
        marked("f", 3, 3),
        HoldingsChange::Completed { name: name("f") },
        HoldingsChange::Removed {
            name: name("f"),
            had: ChunkSet::full(3),
        },
    ];
    assert_eq!(f.published(), want);
    let mut second = Vec::new();
    while let Ok(change) = late.try_recv() {
        second.push(change);
    }
    assert_eq!(second, want, "every subscriber sees the same");
}

#[test]
fn sharing_the_same_file_again_publishes_nothing() {
    let mut f = fixture();
    let d = data(2);
    let m = f.complete("f", &d);
    assert_eq!(
        f.published(),
        [HoldingsChange::Added {
            manifest: m,
            have: ChunkSet::full(2),
            kind: Kind::Complete,
        }]
    );
    f.complete("f", &d);
    assert_eq!(f.published(), [], "the same content in the same layout");
    // Other content under the name is refused, and nothing changes.
    let other = manifest_of("f", &data(3));
    let file = Arc::new(File::open(f.dir.path().join("f")).unwrap());
    let stamp = Stamp::of(&file.metadata().unwrap());
    let path = f.dir.path().join("f");
    let err = f.holdings.insert_complete(other, path, file, stamp);
    assert_eq!(err.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(f.published(), []);
}

/// A partial holder serves the chunks it holds and nothing else: the bytes
/// of a chunk it lacks are zeros in its part file, never to be sent.
#[test]
fn only_held_chunks_are_served() {
    let f = fixture();
    let d = data(4);
    f.partial("f", &d, &[2]);
    let source = f.holdings.source(&name("f"), 2).expect("chunk 2 is held");
    let frames = source.read(source.range(), 4096).unwrap();
    assert_eq!(frames.concat(), &d[1024..2048]);
    for n in [1, 3, 4] {
        let err = f.holdings.source(&name("f"), n).err().expect("not held");
        assert_eq!(err.code(), Code::NotFound, "chunk {n}: {err}");
    }
    let err = f
        .holdings
        .source(&name("f"), 5)
        .err()
        .expect("past the end");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = f
        .holdings
        .source(&name("g"), 1)
        .err()
        .expect("no such file");
    assert_eq!(err.code(), Code::NotFound);
    // A withdrawn chunk is no longer served.
    f.holdings.withdraw(&name("f"), c(2));
    let err = f.holdings.source(&name("f"), 2).err().expect("withdrawn");
    assert_eq!(err.code(), Code::NotFound);
}

#[test]
fn the_resume_state_is_what_the_holdings_hold() {
    let f = fixture();
    f.partial("f", &data(4), &[1]);
    f.holdings.mark(&name("f"), c(3));
    f.holdings
        .save_resume(&name("f"), Mode::Chunks, true)
        .unwrap();
    let states = partfile::saved_states(f.dir.path());
    assert_eq!(states.len(), 1);
    assert_eq!(
        states[0].written(4),
        ChunkSet::from_ranges(4, [1..=1, 3..=3]).unwrap()
    );
    assert_eq!(states[0].mode, Mode::Chunks);
    assert!(states[0].paused);
    // A complete file has no resume state to save.
    f.complete("g", &data(1));
    f.holdings
        .save_resume(&name("g"), Mode::Whole, false)
        .unwrap();
    assert_eq!(partfile::saved_states(f.dir.path()).len(), 1);
}

#[test]
fn a_withdrawal_for_an_entry_replaced_meanwhile_is_ignored() {
    let mut f = fixture();
    let old = f.partial("f", &data(4), &[1, 2]);
    // Adopted in the meantime: held anew in another chunk size.
    let data = data(4);
    let mut tmp = tempfile::tempfile().unwrap();
    tmp.write_all(&data).unwrap();
    let size = ChunkSize::new(2 * CHUNK).unwrap();
    let new = Manifest::from_file(&tmp, data.len() as u64, name("f"), Some(size)).unwrap();
    let new = Arc::new(new);
    let (part, _) = PartFile::open(f.dir.path(), &new).unwrap();
    f.holdings
        .insert_partial(new.clone(), &part, ChunkSet::full(2));
    f.published();
    assert!(!f.holdings.withdraw_if(&name("f"), &old, c(2)));
    assert_eq!(f.published(), []);
    let (m, have, _) = f.holdings.holding(&name("f")).unwrap();
    assert_eq!((m, have), (new.clone(), ChunkSet::full(2)));
    assert!(
        f.holdings.withdraw_if(&name("f"), &new, c(2)),
        "the entry read"
    );
    assert_eq!(f.published(), [withdrawn("f", 2, 2)]);
}

/// Super-seeding is for a file shared from disk: a download that finished
/// here got every chunk from the swarm, and a partial file holds no whole
/// file to seed.
#[test]
fn only_a_file_shared_from_disk_is_super_seeded() {
    let f = fixture();
    f.complete("shared", &data(2));
    assert!(f.holdings.super_seeds(&name("shared")));

    f.partial("fetched", &data(2), &[1, 2]);
    assert!(
        !f.holdings.super_seeds(&name("fetched")),
        "a part file holding every chunk is still a download"
    );
    let path = f.dir.path().join("fetched");
    let stamp = Stamp::of_parts(2 * CHUNK, (0, 0), 0);
    f.holdings.complete(&name("fetched"), path, stamp);
    assert!(
        !f.holdings.super_seeds(&name("fetched")),
        "a download completed here holds no first copies"
    );
    assert!(!f.holdings.super_seeds(&name("absent")));
}
