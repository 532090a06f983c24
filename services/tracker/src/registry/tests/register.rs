//! Register and RegisterChunk: conflicts, quotas and the byte budget, each
//! refusal leaving the registry as it was.

use super::*;

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
                member: None,
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
                member: None,
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
            member: None,
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
    let new = |addr: &str| Caller::New {
        addr: addr.into(),
        member: None,
    };
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
