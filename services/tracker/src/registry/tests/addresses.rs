//! An address and the member holding it (TLS): a new session replaces the
//! live one at its address only for the same member; a session that left
//! or went silent frees it; without members anyone replaces it; the member
//! holding it is stored and restored with its session.

use super::*;
use crate::auth::Member;

const ADDR: &str = "127.0.0.1:4000";

/// Registers a new session of `member` at `addr`: its credentials and the
/// changes it made; a refusal must have made none.
fn join_as(
    reg: &mut Registry,
    addr: &str,
    member: Option<&Member>,
    offers: Vec<Offer>,
    now: Instant,
) -> Result<(Credentials, Vec<Change>), RegistryError> {
    let caller = Caller::New {
        addr: addr.into(),
        member: member.copied(),
    };
    let mut changes = Vec::new();
    let out = reg.register(caller, offers, now, &mut changes);
    let out = out.inspect_err(|_| assert!(changes.is_empty(), "{changes:?}"))?;
    let token = out.token.expect("a new session's token");
    let cred = Credentials {
        peer: out.peer,
        token: token.hash_for(member),
    };
    Ok((cred, changes))
}

fn held<T>(r: Result<T, RegistryError>) -> bool {
    matches!(r, Err(RegistryError::AddressHeld { .. }))
}

#[test]
fn another_member_cannot_take_a_live_sessions_address() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let (a, b) = (Member::of_cert(b"a"), Member::of_cert(b"b"));
    let ours = vec![seeding(&manifest("a.bin", 5000, 1))];
    let theirs = vec![seeding(&manifest("b.bin", 100, 2))];
    let (a1, _) = join_as(&mut reg, ADDR, Some(&a), ours.clone(), now).unwrap();
    let before = snapshot(&reg, now);

    let err = join_as(&mut reg, ADDR, Some(&b), theirs.clone(), now).unwrap_err();
    let ttl = limits().ttl;
    let addr = ADDR.to_owned();
    assert_eq!(err, RegistryError::AddressHeld { addr, ttl });
    let why = err.to_string();
    assert!(why.contains("--listen") && why.contains("30s"), "{why}");
    assert_eq!(snapshot(&reg, now), before, "nothing changed");
    reg.heartbeat(&a1, now).unwrap();

    // At another address, the other member is welcome.
    join_as(&mut reg, "127.0.0.1:4001", Some(&b), theirs, now).unwrap();

    // The same member again (a restart): its old session is replaced.
    let (a2, _) = join_as(&mut reg, ADDR, Some(&a), ours, now).unwrap();
    assert!(matches!(
        reg.heartbeat(&a1, now),
        Err(RegistryError::UnknownPeer(_))
    ));
    reg.heartbeat(&a2, now).unwrap();
    assert_eq!(reg.peer_count(), 2);
}

#[test]
fn an_address_is_free_once_its_session_left_or_went_silent() {
    let t0 = Instant::now();
    let ttl = limits().ttl;
    let mut reg = Registry::new(limits());
    let (a, b) = (Member::of_cert(b"a"), Member::of_cert(b"b"));
    let join = |reg: &mut Registry, m: &Member, now| join_as(reg, ADDR, Some(m), vec![], now);

    // Left: free at once.
    let (a1, _) = join(&mut reg, &a, t0).unwrap();
    reg.leave(&a1, t0, &mut Vec::new()).unwrap();
    join(&mut reg, &b, t0).unwrap();

    // Silent: held until its TTL is up, free from then on, swept or not.
    assert!(held(join(
        &mut reg,
        &a,
        t0 + ttl - Duration::from_millis(1)
    )));
    join(&mut reg, &a, t0 + ttl).unwrap();
    assert_eq!(reg.peer_count(), 1);
}

#[test]
fn without_members_anyone_replaces_the_session_at_an_address() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let a = Member::of_cert(b"a");
    let mut join = |m: Option<&Member>| join_as(&mut reg, ADDR, m, vec![], now);
    // Plaintext replaces plaintext (a restarted peer gets its address back),
    // a member replaces a session registered in plaintext (its token is no
    // good over TLS), and plaintext replaces a member's (a tracker started
    // again without TLS).
    join(None).unwrap();
    join(None).unwrap();
    join(Some(&a)).unwrap();
    join(None).unwrap();
    assert_eq!(reg.peer_count(), 1);
}

#[test]
fn the_member_holding_an_address_is_restored_with_its_session() {
    let now = Instant::now();
    let mut reg = Registry::new(limits());
    let (a, b) = (Member::of_cert(b"a"), Member::of_cert(b"b"));
    let (a1, changes) = join_as(&mut reg, ADDR, Some(&a), vec![], now).unwrap();
    let mut catalog = Catalog::default();
    for c in changes {
        match c {
            Change::PutPeer {
                peer,
                addr,
                token,
                member,
            } => catalog.peers.push((peer, addr, token, member)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(catalog.peers[0].3, Some(a));

    let later = now + Duration::from_secs(5);
    let mut back = Registry::restore(limits(), catalog, later);
    let theirs = join_as(&mut back, ADDR, Some(&b), vec![], later);
    assert!(held(theirs), "the restored session still holds its address");
    back.heartbeat(&a1, later).unwrap();
}
