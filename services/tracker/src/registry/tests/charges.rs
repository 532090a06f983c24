//! RE-9: one address cannot fill the catalog. Names are charged to the host
//! that created them until released; the quotas are per host.

use super::*;

fn quota_limits() -> Limits {
    Limits {
        max_files_per_peer: 100,
        max_files_per_address: 3,
        forget_after: Duration::from_secs(600),
        ..limits()
    }
}

fn why<T>(r: Result<T, RegistryError>) -> String {
    match r {
        Err(RegistryError::Quota(why)) => why,
        Err(other) => panic!("refused otherwise: {other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn one_address_fills_its_quota_not_the_catalog_and_gets_it_back() {
    let t0 = Instant::now();
    let mut reg = Registry::new(quota_limits());
    let ms: Vec<Manifest> = (0..6).map(|i| manifest(&format!("f{i}"), 100, i)).collect();
    // Three names from 10.0.0.1, over two sessions (two ports).
    let a = join(
        &mut reg,
        "10.0.0.1:1",
        vec![seeding(&ms[0]), seeding(&ms[1])],
        t0,
    );
    let a2 = join(&mut reg, "10.0.0.1:2", vec![seeding(&ms[2])], t0);
    assert_eq!(reg.usage("10.0.0.1").files, 3);
    // A fourth, from any session or port there, is refused whole.
    let before = snapshot(&reg, t0);
    let mut changes = Vec::new();
    let refused = reg.register(Caller::Session(a), vec![seeding(&ms[3])], t0, &mut changes);
    assert!(why(refused).contains("--max-files-per-address"));
    let refused = reg.register(
        Caller::New {
            addr: "10.0.0.1:3".into(),
            member: None,
        },
        vec![seeding(&ms[3])],
        t0,
        &mut changes,
    );
    assert!(why(refused).contains("at most 3"));
    assert!(changes.is_empty());
    assert_eq!(snapshot(&reg, t0), before);
    // Names it already has still register (a holder, not a name).
    join(&mut reg, "10.0.0.1:4", vec![seeding(&ms[0])], t0);
    // Another address registers new names.
    join(&mut reg, "10.0.0.2:1", vec![seeding(&ms[3])], t0);
    assert_eq!(reg.usage("10.0.0.2").files, 1);

    // The attacker's sessions go (here by Leave; expiry is the same path):
    // its names stay charged through the grace, then are released.
    for cred in [a, a2] {
        reg.leave(&cred, t0, &mut changes).unwrap();
    }
    let t1 = t0 + Duration::from_secs(1);
    reg.expire(t1, &mut changes);
    assert_eq!(reg.usage("10.0.0.1").files, 3, "f0 is still held by :4");
    let done = t1 + quota_limits().forget_after + quota_limits().ttl;
    // Every session is silent by then; one sweep drops them, the next
    // (a grace later) releases their names.
    reg.expire(t1 + quota_limits().ttl, &mut changes);
    reg.expire(done, &mut changes);
    assert_eq!(reg.usage("10.0.0.1"), rules::Usage::default());
    assert_eq!(reg.file_count(), 0);
    join(
        &mut reg,
        "10.0.0.1:1",
        vec![seeding(&ms[4]), seeding(&ms[5])],
        done,
    );
    assert_eq!(reg.usage("10.0.0.1").files, 2);
}

#[test]
fn manifest_bytes_are_charged_per_address() {
    let t0 = Instant::now();
    let (x, y) = (manifest("x", 5000, 1), manifest("y", 5000, 2));
    let mut reg = Registry::new(Limits {
        max_bytes_per_address: manifest_bytes(&x),
        ..quota_limits()
    });
    join(&mut reg, "10.0.0.1:1", vec![seeding(&x)], t0);
    let refused = reg.register(
        Caller::New {
            addr: "10.0.0.1:2".into(),
            member: None,
        },
        vec![seeding(&y)],
        t0,
        &mut Vec::new(),
    );
    assert!(why(refused).contains("--max-catalog-mib-per-address"));
    join(&mut reg, "10.0.0.2:1", vec![seeding(&y)], t0);
}

#[test]
fn a_restart_keeps_charges_for_held_names_and_releases_the_rest_after_the_grace() {
    let t0 = Instant::now();
    let mut reg = Registry::new(quota_limits());
    let (x, y) = (manifest("x", 100, 1), manifest("y", 100, 2));
    let mut changes = Vec::new();
    let a = join(&mut reg, "10.0.0.1:1", vec![seeding(&x), seeding(&y)], t0);
    reg.register_chunks(&a, &name("y"), &[], &[1..=1], t0, &mut changes)
        .unwrap();
    let catalog = Catalog {
        manifests: vec![x.clone(), y.clone()],
        peers: vec![(a.peer, "10.0.0.1:1".into(), a.token, None)],
        holdings: vec![(a.peer, name("x"), ChunkSet::full(x.chunk_count()))],
    };
    let t1 = t0 + Duration::from_secs(5);
    let mut reg = Registry::restore(quota_limits(), catalog, t1);
    assert_eq!(reg.usage("10.0.0.1").files, 1, "x, through its holder");
    // Nobody comes back: after the TTL and the grace, both are released.
    reg.expire(t1 + quota_limits().ttl, &mut changes);
    reg.expire(
        t1 + quota_limits().ttl + quota_limits().forget_after,
        &mut changes,
    );
    assert_eq!(reg.file_count(), 0);
    assert_eq!(reg.usage("10.0.0.1"), rules::Usage::default());
}
