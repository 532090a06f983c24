use std::time::{Duration, Instant};

use hive::{ChunkSet, FileName, Manifest};

use super::*;
use crate::auth::Token;

fn limits() -> Limits {
    Limits {
        max_files_per_peer: 3,
        max_files: 1000,
        max_catalog_bytes: u64::MAX,
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
            Caller::New { addr: addr.into() },
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

#[test]
fn conflicting_content_is_refused_and_nothing_changes() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let first = manifest("x", 5000, 1);
    join(&mut reg, "10.0.0.1:1", vec![seeding(&first)], now);
    let before = snapshot(&reg, now);

    let other = manifest("x", 5000, 9);
    let fresh = manifest("fresh", 100, 1);
    let mut changes = Vec::new();
    let err = reg
        .register(
            Caller::New {
                addr: "10.0.0.2:1".into(),
            },
            vec![seeding(&fresh), seeding(&other)],
            now,
            &mut changes,
        )
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::Conflict {
            name: name("x"),
            existing: first.digest()
        }
    );
    assert!(changes.is_empty());
    assert_eq!(
        snapshot(&reg, now),
        before,
        "not even `fresh` was registered"
    );
}

#[test]
fn identical_registration_is_idempotent() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    for _ in 0..100 {
        join(&mut reg, "10.0.0.1:7", vec![seeding(&m)], now);
    }
    assert_eq!(
        reg.peer_count(),
        1,
        "the same address replaces its old session"
    );
    assert_eq!(reg.holding_count(), 1);
    assert_eq!(
        reg.locate(&name("x"), 0, now).unwrap().chunk_holders,
        vec![1; 5]
    );
}

#[test]
fn credentials_are_checked_in_order() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&m)], now);
    let b = join(&mut reg, "10.0.0.2:1", vec![seeding(&m)], now);
    let before = snapshot(&reg, now);
    let stranger = Token::parse(&"ab".repeat(16)).unwrap().hash();
    let unknown = crate::auth::PeerId::from_u64(42);
    let mut changes = Vec::new();

    // A's own token on B's id: permission denied. No token that works: unauthenticated.
    let a_as_b = Credentials {
        peer: b.peer,
        token: a.token,
    };
    assert_eq!(
        reg.leave(&a_as_b, now, &mut changes),
        Err(RegistryError::PermissionDenied(b.peer))
    );
    let wrong = Credentials {
        peer: b.peer,
        token: stranger,
    };
    assert_eq!(
        reg.leave(&wrong, now, &mut changes),
        Err(RegistryError::Unauthenticated)
    );
    assert_eq!(
        reg.register_chunks(&a_as_b, &name("x"), &[], &[1..=5], now, &mut changes),
        Err(RegistryError::PermissionDenied(b.peer))
    );
    // An id the tracker does not know: register again.
    let lost = Credentials {
        peer: unknown,
        token: stranger,
    };
    assert_eq!(
        reg.heartbeat(&lost, now),
        Err(RegistryError::UnknownPeer(unknown))
    );
    // ...unless a valid session is pretending to be it.
    let pretend = Credentials {
        peer: unknown,
        token: a.token,
    };
    assert_eq!(
        reg.heartbeat(&pretend, now),
        Err(RegistryError::PermissionDenied(unknown))
    );
    assert!(changes.is_empty());
    assert_eq!(snapshot(&reg, now), before);

    reg.leave(&b, now, &mut changes).unwrap();
    assert_eq!(changes, vec![Change::RemovePeer(b.peer)]);
    assert_eq!(reg.locate(&name("x"), 0, now).unwrap().holder_count, 1);
}

#[test]
fn bad_chunk_updates_change_nothing() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&m)], now);
    let before = snapshot(&reg, now);
    let mut changes = Vec::new();
    for (add, remove) in [
        (vec![0..=1], vec![]),
        (vec![5..=6], vec![]),
        (vec![], vec![6..=6]),
        (vec![std::ops::RangeInclusive::new(3, 2)], vec![]),
    ] {
        let err = reg.register_chunks(&a, &name("x"), &add, &remove, now, &mut changes);
        assert!(
            matches!(err, Err(RegistryError::Invalid(_))),
            "{add:?} {remove:?}: {err:?}"
        );
    }
    assert_eq!(
        reg.register_chunks(&a, &name("nope"), &[1..=1], &[], now, &mut changes),
        Err(RegistryError::UnknownFile(name("nope")))
    );
    assert!(changes.is_empty());
    assert_eq!(snapshot(&reg, now), before);
}

#[test]
fn withdrawing_every_chunk_drops_the_holding() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&m)], now);
    let held = reg
        .register_chunks(&a, &name("x"), &[], &[1..=2], now, &mut Vec::new())
        .unwrap();
    assert_eq!(held, 3);
    assert_eq!(
        reg.locate(&name("x"), 0, now).unwrap().chunk_holders,
        vec![0, 0, 1, 1, 1]
    );
    reg.register_chunks(&a, &name("x"), &[], &[3..=5], now, &mut Vec::new())
        .unwrap();
    let located = reg.locate(&name("x"), 0, now).unwrap();
    assert_eq!(located.holder_count, 0);
    assert_eq!(reg.holding_count(), 0);
}

#[test]
fn quota_is_enforced_without_side_effects() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let files: Vec<Manifest> = (0..4).map(|i| manifest(&format!("f{i}"), 100, i)).collect();
    let err = reg
        .register(
            Caller::New {
                addr: "10.0.0.1:1".into(),
            },
            files.iter().map(seeding).collect(),
            now,
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::Quota(_)));
    assert_eq!((reg.peer_count(), reg.file_count()), (0, 0));

    let a = join(
        &mut reg,
        "10.0.0.1:1",
        files[..3].iter().map(seeding).collect(),
        now,
    );
    let other = join(&mut reg, "10.0.0.2:1", vec![seeding(&files[3])], now);
    let err = reg.register_chunks(&a, files[3].name(), &[1..=1], &[], now, &mut Vec::new());
    assert!(matches!(err, Err(RegistryError::Quota(_))));
    let err = reg.register(
        Caller::Session(a),
        vec![seeding(&files[3])],
        now,
        &mut Vec::new(),
    );
    assert!(matches!(err, Err(RegistryError::Quota(_))));
    assert_eq!(
        reg.locate(files[3].name(), 0, now).unwrap().holders[0].peer,
        other.peer
    );
    assert_eq!(reg.locate(files[3].name(), 0, now).unwrap().holder_count, 1);
}

#[test]
fn the_catalog_has_a_size_limit() {
    let now = Instant::now();
    let mut reg = Registry::new(Limits {
        max_files: 2,
        ..limits()
    });
    let files: Vec<Manifest> = (0..3).map(|i| manifest(&format!("f{i}"), 100, i)).collect();
    join(
        &mut reg,
        "10.0.0.1:1",
        vec![seeding(&files[0]), seeding(&files[1])],
        now,
    );
    let err = reg.register(
        Caller::New {
            addr: "10.0.0.2:1".into(),
        },
        vec![seeding(&files[2])],
        now,
        &mut Vec::new(),
    );
    assert!(matches!(err, Err(RegistryError::Quota(_))));
    // Known names still register: they add a holder, not a file.
    join(&mut reg, "10.0.0.3:1", vec![seeding(&files[0])], now);
    assert_eq!((reg.file_count(), reg.peer_count()), (2, 2));
}

#[test]
fn the_catalog_has_a_byte_budget() {
    let t0 = Instant::now();
    let (x, y) = (manifest("x", 5000, 1), manifest("y", 5000, 2));
    let one_file = manifest_bytes(&x) + holding_bytes(x.chunk_count());
    let mut reg = Registry::new(Limits {
        max_catalog_bytes: one_file,
        ..limits()
    });
    join(&mut reg, "10.0.0.1:1", vec![seeding(&x)], t0);
    assert_eq!(reg.catalog_bytes(), one_file);
    let before = snapshot(&reg, t0);
    fn quota<T>(r: Result<T, RegistryError>) -> bool {
        matches!(r, Err(RegistryError::Quota(_)))
    }

    // A new file, or a new holder of a known one, would pass the budget.
    let new = |addr: &str| Caller::New { addr: addr.into() };
    let mut changes = Vec::new();
    assert!(quota(reg.register(
        new("10.0.0.2:1"),
        vec![seeding(&y)],
        t0,
        &mut changes
    )));
    assert!(quota(reg.register(
        new("10.0.0.2:1"),
        vec![seeding(&x)],
        t0,
        &mut changes
    )));
    let b = join(&mut reg, "10.0.0.2:1", vec![], t0);
    let before_b = snapshot(&reg, t0);
    assert!(quota(reg.register_chunks(
        &b,
        &name("x"),
        &[1..=1],
        &[],
        t0,
        &mut changes
    )));
    assert!(changes.is_empty(), "nothing is stored for a refusal");
    assert_eq!(snapshot(&reg, t0), before_b);
    assert_ne!(before, before_b, "b itself joined");

    // A peer starting again from its address replaces its old holdings.
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&x)], t0);
    assert_eq!(reg.catalog_bytes(), one_file);

    // What a holder already has costs nothing more.
    reg.register_chunks(&a, &name("x"), &[], &[2..=2], t0, &mut changes)
        .unwrap();
    assert_eq!(reg.catalog_bytes(), one_file);

    // Leaving frees the holding; forgetting the file frees its manifest.
    reg.leave(&a, t0, &mut changes).unwrap();
    assert_eq!(reg.catalog_bytes(), manifest_bytes(&x));
    reg.expire(t0 + limits().forget_after, &mut changes);
    assert_eq!(reg.catalog_bytes(), 0);
    let later = t0 + limits().forget_after;
    join(&mut reg, "10.0.0.3:1", vec![seeding(&y)], later);
    assert_eq!(reg.catalog_bytes(), one_file);
    assert_eq!(reg.catalog_bytes_recounted(), one_file);
}

#[test]
fn silent_peers_expire_after_the_ttl() {
    let t0 = Instant::now();
    let ttl = limits().ttl;
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&m)], t0);
    let b = join(&mut reg, "10.0.0.2:1", vec![seeding(&m)], t0);

    // B keeps heartbeating; A goes silent.
    let t1 = t0 + ttl / 2;
    reg.heartbeat(&b, t1).unwrap();
    let just_before = t0 + ttl - Duration::from_millis(1);
    assert_eq!(
        reg.locate(&name("x"), 0, just_before).unwrap().holder_count,
        2
    );

    // Past the TTL, A is gone from answers even before a sweep...
    let after = t0 + ttl;
    let located = reg.locate(&name("x"), 0, after).unwrap();
    assert_eq!(located.holder_count, 1);
    assert_eq!(located.chunk_holders, vec![1; 5]);
    assert_eq!(
        reg.heartbeat(&a, after),
        Err(RegistryError::UnknownPeer(a.peer))
    );
    // ...and the sweep removes it for good.
    let mut changes = Vec::new();
    assert_eq!(reg.expire(after, &mut changes), 1);
    assert_eq!(changes, vec![Change::RemovePeer(a.peer)]);
    assert_eq!(reg.peer_count(), 1);
}

#[test]
fn orphaned_files_are_forgotten_after_a_while() {
    let t0 = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&m)], t0);
    reg.leave(&a, t0, &mut Vec::new()).unwrap();
    let located = reg.locate(&name("x"), 0, t0).unwrap();
    assert_eq!(located.holder_count, 0, "known, but nobody holds it");

    let mut changes = Vec::new();
    reg.expire(t0 + limits().forget_after, &mut changes);
    assert_eq!(changes, vec![Change::RemoveManifest(name("x"))]);
    assert!(matches!(
        reg.locate(&name("x"), 0, t0),
        Err(RegistryError::UnknownFile(_))
    ));
}

/// The cap (2 here) bounds what a caller may ask for; 0 asks for the cap.
/// Counts cover every holder, listed or not.
#[test]
fn locate_caps_holders_as_asked_but_counts_all() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    for i in 0..5 {
        join(&mut reg, &format!("10.0.0.{i}:1"), vec![seeding(&m)], now);
    }
    for (want, listed) in [(0, 2), (1, 1), (2, 2), (3, 2), (usize::MAX, 2)] {
        let located = reg.locate(&name("x"), want, now).unwrap();
        assert_eq!(located.holders.len(), listed, "asked for {want}");
        assert_eq!(located.holder_count, 5);
        assert_eq!(located.chunk_holders, vec![5; 5]);
    }
    // A cap of 0 (the tracker refuses it as a setting) lists no one.
    let mut reg = Registry::new(Limits {
        locate_holders: 0,
        list_holders: 0,
        ..limits()
    });
    join(&mut reg, "10.0.0.9:1", vec![seeding(&m)], now);
    let located = reg.locate(&name("x"), 0, now).unwrap();
    assert!(located.holders.is_empty());
    assert_eq!(located.holder_count, 1);
}

#[test]
fn holders_are_chosen_to_cover_every_chunk_held() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let holding = |first, last| Offer {
        chunks: ChunkSet::from_ranges(m.chunk_count(), [first..=last]).unwrap(),
        manifest: m.clone(),
    };
    // Eight holders of chunks 1-4, and one holder of chunk 5 alone.
    for i in 0..8 {
        join(&mut reg, &format!("10.0.0.{i}:1"), vec![holding(1, 4)], now);
    }
    let sole = join(&mut reg, "10.0.0.9:1", vec![holding(5, 5)], now).peer;
    for _ in 0..50 {
        let located = reg.locate(&name("x"), 0, now).unwrap();
        assert_eq!(located.holders.len(), 2);
        assert!(located.holders.iter().any(|h| h.peer == sole));
        let mut listed = ChunkSet::empty(m.chunk_count());
        for h in &located.holders {
            listed.union_with(&h.chunks);
        }
        assert!(listed.is_full());
    }
    // One holder asked for: one, whichever.
    assert_eq!(reg.locate(&name("x"), 1, now).unwrap().holders.len(), 1);

    // Any holders, any cap: the listed ones cover every chunk held, or the
    // cap is reached.
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..200 {
        let mut reg = Registry::new(limits());
        let mut held = ChunkSet::empty(m.chunk_count());
        for i in 0..rng.usize(1..8) {
            let mut chunks = ChunkSet::empty(m.chunk_count());
            for pos in 0..m.chunk_count() as usize {
                if rng.bool() {
                    chunks.insert(hive::ChunkIndex::from_position(pos).unwrap());
                }
            }
            if chunks.is_empty() {
                continue;
            }
            held.union_with(&chunks);
            let offer = Offer {
                chunks,
                manifest: m.clone(),
            };
            join(&mut reg, &format!("10.0.1.{i}:1"), vec![offer], now);
        }
        let want = rng.usize(0..5);
        let Ok(located) = reg.locate(&name("x"), want, now) else {
            continue;
        };
        let mut listed = ChunkSet::empty(m.chunk_count());
        for h in &located.holders {
            listed.union_with(&h.chunks);
        }
        let cap = if want == 0 { 2 } else { want.min(2) };
        assert!(
            listed == held || located.holders.len() == cap,
            "round {round}: listed {listed}, held {held}"
        );
    }
}

#[test]
fn listing_pages_through_every_file() {
    let now = Instant::now();
    let mut reg = Registry::new(Limits {
        max_files_per_peer: 100,
        ..limits()
    });
    let files: Vec<Offer> = (0..25)
        .map(|i| seeding(&manifest(&format!("f{i:02}"), 10, i)))
        .collect();
    join(&mut reg, "10.0.0.1:1", files, now);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = reg.list(after.as_ref(), 10, now);
        seen.extend(page.files.iter().map(|f| f.manifest.name().to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("f{i:02}")).collect();
    assert_eq!(seen, want);
}

#[test]
fn restore_brings_back_unconfirmed_holders() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let m = manifest("x", 5000, 1);
    let mut changes = Vec::new();
    let out = reg
        .register(
            Caller::New {
                addr: "10.0.0.1:1".into(),
            },
            vec![seeding(&m)],
            now,
            &mut changes,
        )
        .unwrap();
    let cred = Credentials {
        peer: out.peer,
        token: out.token.unwrap().hash(),
    };

    // Replay the changes into a catalog, as a store would.
    let mut catalog = Catalog::default();
    for c in changes {
        match c {
            Change::PutManifest(m) => catalog.manifests.push((*m).clone()),
            Change::PutPeer { peer, addr, token } => catalog.peers.push((peer, addr, token)),
            Change::PutHolding { peer, name, chunks } => {
                catalog.holdings.push((peer, name, (*chunks).clone()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let later = now + Duration::from_secs(5);
    let mut back = Registry::restore(limits(), catalog, later);
    let located = back.locate(&name("x"), 0, later).unwrap();
    assert_eq!(located.holder_count, 1);
    assert!(!located.holders[0].confirmed);
    back.heartbeat(&cred, later).unwrap();
    assert!(back.locate(&name("x"), 0, later).unwrap().holders[0].confirmed);
}

#[test]
fn counts_past_255_holders_are_capped_but_the_holder_count_is_not() {
    let mut reg = Registry::new(limits());
    let now = Instant::now();
    let m = manifest("x", 1822, 1);
    for i in 0..300 {
        join(
            &mut reg,
            &format!("10.0.{}.{}:1", i / 250, i % 250),
            vec![seeding(&m)],
            now,
        );
    }
    let located = reg.locate(&name("x"), 0, now).unwrap();
    assert_eq!(located.holder_count, 300);
    assert_eq!(located.chunk_holders, vec![255; 2]);
    assert_eq!(located.holders.len(), 2, "still at most the cap");
}
