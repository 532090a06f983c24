//! A full disk (docs/RELIABILITY.md: FS-3), on a small tmpfs mounted as the leecher's
//! directory (the tests need root, or CAP_SYS_ADMIN, to mount; without it
//! each test says so loudly on stderr and stops there).
//!
//! hive reserves a whole download's space with a real `fallocate` before
//! the first request, so:
//! - (a) too little free space is RESOURCE_EXHAUSTED at once, nothing
//!   transferred, and the same fetch succeeds once there is room;
//! - (b) the disk filling up *after* the reservation does not touch the
//!   download: its chunks land in space already reserved, and it completes;
//! - (c) a single-chunk fetch reserves nothing, and on a full disk it is
//!   RESOURCE_EXHAUSTED, with what the peer already held still served.

mod common;

use std::{
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use common::{
    download::{self, fetch, fetch_whole},
    evil::EvilPeer,
    *,
};
use tempfile::TempDir;
use tonic::Code;

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (as mount(8) takes it: 4m, 512k), or says why not.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path))?;
        Ok(Self { path, _dir: dir })
    }

    fn resize(&self, size: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path))
        .expect("remount");
    }

    /// Fills the file system to the last byte; returns the filler's size.
    fn fill(&self) -> u64 {
        let mut filler = std::fs::File::create(self.path.join("filler")).expect("filler");
        let block = vec![0xee_u8; 64 * 1024];
        let mut written = 0;
        loop {
            match filler.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        filler.sync_all().ok();
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a peer killed a moment ago may still hold files open.
        if let Err(e) = run(Command::new("umount").arg("-l").arg(&self.path)) {
            eprintln!("cannot unmount {}: {e}", self.path.display());
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs, or `None` after saying loudly that this test cannot run here.
fn tmpfs_or_skip(size: &str, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!(
                "\n!!!! FIGURE FS-3 {test}: SKIPPED, NOT RUN: cannot mount a tmpfs ({e}). Run the tests as root (or with CAP_SYS_ADMIN) to cover FS-3. !!!!\n"
            );
            None
        }
    }
}

/// A leecher whose share directory is the mount point.
async fn leecher_on(tracker: &TestTracker, mnt: &Path) -> TestPeer {
    let tmp = tempfile::tempdir().expect("tempdir for the log");
    let peer = TestPeer::spawn(&tracker.url(), tmp, mnt.to_owned(), &[]).await;
    peer.registered().await;
    peer
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs3a_too_little_space_fails_fast_then_fetches_once_there_is_room() {
    let Some(mnt) = tmpfs_or_skip("4m", "(a)") else {
        return;
    };
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(8 << 20, 31);
        let seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let leecher = leecher_on(&tracker, &mnt.path).await;

        let started = Instant::now();
        let err = fetch_whole(leecher.control, "f").await.unwrap_err();
        let time_to_fail = started.elapsed();
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert_eq!(
            download::bytes_served(&seeder).await,
            0,
            "refused before any transfer"
        );
        assert!(!mnt.path.join("f").exists(), "no final file");
        let part = download::part_file(&mnt.path, "f").expect("the part file is kept");
        let on_disk = allocated(&part);

        mnt.resize("32m");
        let done = fetch_whole(leecher.control, "f").await.expect("room now");
        assert!(std::fs::read(mnt.path.join("f")).unwrap() == f);
        assert_eq!(done.bytes_received, f.len() as u64);
        eprintln!(
            "FIGURE FS-3 (a): 8 MiB into 4 MiB: RESOURCE_EXHAUSTED after {time_to_fail:?}, 0 bytes transferred, {on_disk} bytes allocated by the part file; after growing the disk the fetch completed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs3b_the_disk_filling_after_the_reservation_does_not_stop_the_download() {
    let Some(mnt) = tmpfs_or_skip("12m", "(b)") else {
        return;
    };
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(8 << 20, 32);
        let source = EvilPeer::builder("f", &f)
            .chunk_size(64 * 1024)
            .gated()
            .start(&tracker)
            .await;
        let leecher = leecher_on(&tracker, &mnt.path).await;
        let mut run = fetch(leecher.control, "f").await.expect("fetch");
        source.gate().release(40);
        run.until_chunks(40).await.expect("40 of 128 chunks");

        // Something else takes every byte left.
        let filler = mnt.fill();
        let part = download::part_file(&mnt.path, "f").expect("part file");
        assert_eq!(allocated(&part), f.len() as u64, "the whole file was reserved");

        source.gate().open();
        let done = within(60, run.done()).await.expect("completes in its reserved space");
        assert!(std::fs::read(mnt.path.join("f")).unwrap() == f);
        assert_eq!(done.chunks_fetched, 128);
        // Still seeding what it has, from a full disk.
        assert_eq!(
            get_chunk(leecher.listen, "f", 1).await.unwrap(),
            &f[..64 * 1024]
        );
        let cache_failures = leecher
            .daemon
            .log()
            .matches("cannot save the hash cache")
            .count();
        // Restarted on the still-full disk, it seeds the file in the swarm's
        // 64 KiB chunks (not its own default), all 128 of them.
        let leecher = leecher.restart_hard(&[]).await;
        leecher.registered().await;
        assert_eq!(
            download::listed_chunks(&tracker, "f", leecher.listen).await,
            128
        );
        eprintln!(
            "FIGURE FS-3 (b): disk filled ({} KiB filler, 0 bytes free) at 40/128 chunks: the download completed in its reserved space and kept seeding, also after a restart; hash-cache saves refused by the full disk: {cache_failures} (logged, not fatal)",
            filler / 1024,
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs3c_a_single_chunk_on_a_full_disk_is_resource_exhausted() {
    let Some(mnt) = tmpfs_or_skip("2m", "(c)") else {
        return;
    };
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(1 << 20, 33);
        let _seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let leecher = leecher_on(&tracker, &mnt.path).await;
        let out = leecher.peerctl(&["fetch", "f", "--chunk", "1"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        // Chunk 100 lies in pages of the part file that hold nothing yet,
        // so storing it needs space the disk no longer has.
        mnt.fill();
        let started = Instant::now();
        let out = leecher.peerctl(&["fetch", "f", "--chunk", "100"]).await;
        let time_to_fail = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(64 + Code::ResourceExhausted as i32),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            get_chunk(leecher.listen, "f", 1).await.unwrap(),
            &f[..1024],
            "what it holds is still served"
        );
        assert_eq!(
            get_chunk(leecher.listen, "f", 100).await.unwrap_err().code(),
            Code::NotFound
        );

        std::fs::remove_file(mnt.path.join("filler")).unwrap();
        let out = leecher.peerctl(&["fetch", "f", "--chunk", "100"]).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(get_chunk(leecher.listen, "f", 100).await.unwrap(), &f[99 * 1024..100 * 1024]);
        eprintln!(
            "FIGURE FS-3 (c): single chunk on a full disk: RESOURCE_EXHAUSTED after {time_to_fail:?} (peerctl exit 72); held chunks still served; fetched once space was freed"
        );
    })
    .await;
}
