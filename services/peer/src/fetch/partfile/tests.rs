//! The finish: a download takes its name only if its bytes on disk are the
//! file's.

use std::os::unix::fs::FileExt;

use hive::ChunkSet;

use super::PartFile;
use crate::fetch::engine::fakes::{chunk, file};

#[test]
fn the_finish_finds_a_chunk_damaged_on_disk_and_renames_nothing() {
    let (data, manifest) = file(3);
    let dir = tempfile::tempdir().expect("a temp dir");
    let dest = dir.path().join(manifest.name().as_str());
    let (part, existed) = PartFile::open(&dir.path().join(".hive"), &manifest).expect("open");
    assert!(!existed);
    part.file.write_all_at(&data, 0).expect("write");
    let all = ChunkSet::full(3);
    // Chunk 2 was verified and written, then damaged on its way to disk.
    let at = manifest.layout().range(chunk(2)).start + 100;
    let byte = data[at as usize];
    part.file.write_all_at(&[!byte], at).expect("damage");

    let finished = part.finish(&manifest, &all, &dest, false, true);
    let mut damaged = ChunkSet::empty(3);
    damaged.insert(chunk(2));
    assert_eq!(finished, Ok(Err(damaged)), "the damaged chunk is found");
    assert!(!dest.exists(), "no file under its name");
    assert!(part.path.exists(), "the part file stays, to be repaired");

    // Fetched again, the file is finished.
    part.file.write_all_at(&[byte], at).expect("repair");
    let finished = part.finish(&manifest, &all, &dest, false, true);
    assert_eq!(finished, Ok(Ok(())));
    assert!(std::fs::read(&dest).expect("the final file") == *data);
    assert!(!part.path.exists(), "the part file took its name");
}
