//! Credentials, expiry of silent peers and orphaned files, and restore.

use super::*;

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
                member: None,
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
            Change::PutPeer {
                peer,
                addr,
                token,
                member,
            } => catalog.peers.push((peer, addr, token, member)),
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
