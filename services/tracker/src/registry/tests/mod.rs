use std::time::{Duration, Instant};

use hive::{ChunkSet, FileName, Manifest};

use super::*;
use crate::auth::Token;

mod addresses;
mod charges;
mod locate;
mod register;
mod sessions;

fn limits() -> Limits {
    Limits {
        max_files_per_peer: 3,
        max_files: 1000,
        max_catalog_bytes: u64::MAX,
        max_files_per_address: usize::MAX,
        max_bytes_per_address: u64::MAX,
        locate_holders: 2,
        list_holders: 2,
        ttl: Duration::from_secs(30),
        forget_after: Duration::from_secs(3600),
    }
}

fn manifest(name: &str, size: usize, salt: u8) -> Manifest {
    let bytes: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(7) ^ salt)
        .collect();
    let mut tmp = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut tmp, &bytes).unwrap();
    Manifest::from_file(&tmp, size as u64, FileName::new(name).unwrap(), None).unwrap()
}

fn seeding(m: &Manifest) -> Offer {
    Offer {
        chunks: ChunkSet::full(m.chunk_count()),
        manifest: m.clone(),
    }
}

fn name(s: &str) -> FileName {
    FileName::new(s).unwrap()
}

/// Registers a new session at `addr`; returns its credentials.
fn join(reg: &mut Registry, addr: &str, offers: Vec<Offer>, now: Instant) -> Credentials {
    let out = reg
        .register(
            Caller::New {
                addr: addr.into(),
                member: None,
            },
            offers,
            now,
            &mut Vec::new(),
        )
        .unwrap();
    Credentials {
        peer: out.peer,
        token: out.token.unwrap().hash(),
    }
}

/// Everything an answer can show, to compare before and after a refusal.
fn snapshot(reg: &Registry, now: Instant) -> String {
    assert_eq!(reg.catalog_bytes(), reg.catalog_bytes_recounted());
    let page = reg.list(None, 1000, now);
    let mut out = format!(
        "{} peers {} holdings {} bytes\n",
        reg.peer_count(),
        reg.holding_count(),
        reg.catalog_bytes()
    );
    for f in page.files {
        let mut holders: Vec<String> = f
            .holders
            .iter()
            .map(|h| format!("{}@{}:{}", h.peer, h.addr, h.chunks))
            .collect();
        holders.sort();
        let located = reg.locate(f.manifest.name(), 0, now).unwrap();
        out += &format!(
            "{} {} {:?} {:?}\n",
            f.manifest.name(),
            f.manifest.digest(),
            holders,
            located.chunk_holders
        );
    }
    out
}

#[test]
fn seed_scenario() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let f23 = manifest("23", 69630, 1);
    let bse = manifest("bse", 1822, 2);
    let client2 = join(&mut reg, "127.0.0.1:65051", vec![seeding(&f23)], now);
    let client1 = join(&mut reg, "127.0.0.1:65050", vec![seeding(&bse)], now);

    let page = reg.list(None, 10, now);
    let names: Vec<&str> = page
        .files
        .iter()
        .map(|f| f.manifest.name().as_str())
        .collect();
    assert_eq!(names, ["23", "bse"]);
    assert_eq!(page.files[0].holders[0].chunks.to_string(), "1-68");
    assert_eq!(page.files[1].holders[0].chunks.to_string(), "1-2");

    let held = reg
        .register_chunks(&client1, &name("23"), &[2..=2], &[], now, &mut Vec::new())
        .unwrap();
    assert_eq!(held, 1);
    let located = reg.locate(&name("23"), 0, now).unwrap();
    assert_eq!(located.holder_count, 2);
    assert_eq!(located.chunk_holders[0], 1);
    assert_eq!(located.chunk_holders[1], 2, "chunk 2 now has two holders");
    let c1 = located
        .holders
        .iter()
        .find(|h| h.peer == client1.peer)
        .unwrap();
    assert_eq!(c1.addr, "127.0.0.1:65050");
    assert_eq!(c1.chunks.to_string(), "2");
    assert!(located.holders.iter().any(|h| h.peer == client2.peer));
}
