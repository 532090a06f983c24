//! The engine's super-seeding rules, driven by the fakes of
//! [`super::fakes`] under paused time: declines and their hints, insisting,
//! probing a seeder in its first pass, and swaps (a holder sending one of
//! the chunks a request offered instead).

use std::time::Duration;

use tokio::time::Instant;

use super::fakes::{Serve, World, bytes_of, chunk, set};

/// A super-seeding holder declines chunks it sent before, naming the ones it
/// has not: the download asks it for those, and gets the declined chunks
/// from the holder that has them. The seeder sends nothing twice.
#[tokio::test(start_paused = true)]
async fn a_declined_chunk_comes_from_another_holder_and_the_seeder_sends_its_hint() {
    let mut w = World::new(3);
    w.holder("seed:1", w.full(), &[Serve::Good]);
    w.holders.super_seed("seed:1");
    // Chunks 1 and 2 sent twice before: still ahead once 3 is sent.
    w.holders.sent_before("seed:1", &[1, 1, 2, 2]);
    w.holder("peer:1", set(3, &[1, 2]), &[Serve::Good]);
    // Every chunk looks as rare as any other: the picks are at random.
    w.tracker.counts = Some(vec![1, 1, 1]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let log = w.log();
    assert_eq!(
        log.answered_by("seed:1"),
        [chunk(3)],
        "the seeder sent only what nobody else had"
    );
    let mut from_peer = log.answered_by("peer:1");
    from_peer.sort();
    assert_eq!(from_peer, [chunk(1), chunk(2)]);
    assert!(
        log.declined
            .iter()
            .all(|(a, c)| a == "seed:1" && c.get() != 3),
        "{:?}",
        log.declined
    );
}

/// A chunk the seeder declined that nobody else has is asked again, without
/// may_decline, once a Locate has found no other source: served, each chunk
/// declined once at most, and not asked in a loop.
#[tokio::test(start_paused = true)]
async fn a_declined_chunk_nobody_else_has_is_insisted_on_after_a_locate() {
    let w = World::new(3);
    w.holder("seed:1", w.full(), &[Serve::Good]);
    w.holders.super_seed("seed:1");
    // Chunk 1 sent twice, chunk 2 once, chunk 3 never: chunk 1 stays ahead.
    w.holders.sent_before("seed:1", &[1, 1, 2]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let log = w.log();
    let asked_1 = log
        .asked_of("seed:1")
        .iter()
        .filter(|c| c.get() == 1)
        .count();
    assert!(asked_1 <= 2, "chunk 1 asked {asked_1} times");
    // Chunks 1 and 2 are each declined at most once (then chunk 2 is at the
    // least count, or insisted on); chunk 3, never sent, never.
    let mut declined: Vec<_> = log.declined.iter().map(|(_, c)| c.get()).collect();
    declined.sort_unstable();
    assert!(
        matches!(declined[..], [] | [1] | [2] | [1, 2]),
        "{declined:?}"
    );
    let took = started.elapsed();
    assert!(
        took < w.settings.relocate_interval,
        "insisted after a fresh Locate, not the slow one: {took:?}"
    );
}

/// Two super-seeding holders past their first pass both decline chunk 1
/// (each sent it more often than the rest): once both have, one of them is
/// insisted on after a Locate, and the download completes instead of waiting
/// for a third source forever.
#[tokio::test(start_paused = true)]
async fn a_chunk_every_holder_declined_is_insisted_on() {
    let w = World::new(3);
    for seed in ["seed:1", "seed:2"] {
        w.holder(seed, w.full(), &[Serve::Good]);
        w.holders.super_seed(seed);
        w.holders.sent_before(seed, &[1, 1, 2, 3]);
    }
    let mut engine = w.engine(w.none());
    tokio::time::timeout(Duration::from_secs(60), w.run(&mut engine))
        .await
        .expect("chunk 1 is insisted on, not waited for")
        .expect("the download completes");
    w.assert_complete();
}

/// The download holds chunk 3 and wants 1 and 2, which the seeder sent
/// `before`: it declines both (the offered alternative too), and `peer:1`,
/// listed just after the start, holds 1 and 2 and sends them slowly.
/// Returns how often the seeder was asked for 1 or 2, and when after the
/// first time.
async fn probe_world(before: &[u32]) -> (usize, Vec<Duration>) {
    let mut w = World::new(3);
    w.settings.per_holder = 4;
    w.holder("seed:1", w.full(), &[Serve::Good]);
    w.holders.super_seed("seed:1");
    w.holders.sent_before("seed:1", before);
    w.tracker
        .list("peer:1", set(3, &[1, 2]), Duration::from_millis(1));
    w.holders
        .script("peer:1", &[Serve::Slow(Duration::from_secs(1))]);
    let have = set(3, &[3]);
    let r = w.manifest.layout().range(chunk(3));
    let bytes = bytes_of(&w.data, &w.manifest, chunk(3));
    w.disk().data[r.start as usize..r.end as usize].copy_from_slice(&bytes);
    let mut engine = w.engine(have);
    w.run(&mut engine).await.expect("the download completes");
    assert!(w.disk().data == *w.data);
    let log = w.log();
    assert!(log.declined.len() >= 2, "{:?}", log.declined);
    assert!(log.swapped.is_empty(), "{:?}", log.swapped);
    let asked: Vec<_> = log
        .asked
        .iter()
        .filter(|(a, _, _)| a == "seed:1")
        .map(|(_, _, at)| *at)
        .collect();
    let first = asked[0];
    let later = asked[2..].iter().map(|at| *at - first).collect();
    (asked.len(), later)
}

/// In its first pass (some chunk unsent when it declined), a seeder left
/// with only declined chunks that others hold is asked again, as it may
/// decline, once PROBE_AFTER has passed: for the chunk or fresh hints.
#[tokio::test(start_paused = true)]
async fn an_idle_seeder_in_its_first_pass_is_probed_for_fresh_hints() {
    // Chunks 1 and 2 sent once, 3 never: the declines say least_count 0.
    let (asked, probes) = probe_world(&[1, 2]).await;
    assert!(asked > 2, "1 and 2 once each, then a probe: {asked}");
    assert!(
        probes
            .iter()
            .all(|&after| after >= super::pick::PROBE_AFTER),
        "{probes:?}"
    );
}

/// After its first pass (every chunk sent once when it declined), the same
/// seeder is not probed: a probe would be served as a duplicate.
#[tokio::test(start_paused = true)]
async fn a_seeder_past_its_first_pass_is_not_probed() {
    // Chunks 1 and 2 sent twice, 3 once: the declines say least_count 1.
    let (asked, probes) = probe_world(&[1, 2, 3, 1, 2]).await;
    assert_eq!(asked, 2, "1 and 2 once each, no probe: {probes:?}");
}

/// A seeder that has sent chunks 1–4 once (to others) is asked for them
/// first (rarest here): each request offers the other wanted chunks, so it
/// sends 5–8, first copies, in their place, with no decline and no round
/// trip lost; 1–4 then come once each, and every chunk lands where it
/// belongs.
#[tokio::test(start_paused = true)]
async fn a_seeder_sends_first_copies_in_place_of_chunks_it_sent() {
    let mut w = World::new(8);
    w.holder("seed:1", w.full(), &[Serve::Good]);
    w.holders.super_seed("seed:1");
    w.holders.sent_before("seed:1", &[1, 2, 3, 4]);
    w.tracker.counts = Some(vec![1, 1, 1, 1, 2, 2, 2, 2]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let log = w.log();
    assert!(log.declined.is_empty(), "{:?}", log.declined);
    let mut answered: Vec<u32> = log.answered_by("seed:1").iter().map(|c| c.get()).collect();
    assert_eq!(
        answered[..4].iter().filter(|&&c| c > 4).count(),
        4,
        "{answered:?}"
    );
    answered.sort_unstable();
    assert_eq!(
        answered,
        (1..=8).collect::<Vec<_>>(),
        "each chunk sent once"
    );
    assert!(
        log.swapped
            .iter()
            .all(|(_, asked, sent)| asked.get() <= 4 && sent.get() > 4),
        "{:?}",
        log.swapped
    );
    assert_eq!(log.swapped.len(), 4, "{:?}", log.swapped);
}

/// Many requests in flight to one seeder, each offering wanted chunks no
/// other one offers: the seeder's tally hands each a different first copy, the
/// engine moves each request to the chunk it fetches, and no chunk is
/// fetched twice. Offers stay within MAX_INSTEAD.
#[tokio::test(start_paused = true)]
async fn swapped_requests_in_flight_fetch_each_chunk_once() {
    let mut w = World::new(200);
    w.settings.per_holder = 8;
    let slow = Duration::from_millis(40);
    w.holder("seed:1", w.full(), &[Serve::Slow(slow)]);
    w.holders.super_seed("seed:1");
    // Every 4th chunk went out already.
    let sent: Vec<u32> = (1..=200).filter(|c| c % 4 == 0).collect();
    w.holders.sent_before("seed:1", &sent);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let log = w.log();
    let answered = log.answered_by("seed:1");
    assert_eq!(answered.len(), 200, "no chunk fetched twice");
    let most = log.most_instead;
    assert!(
        most > 0 && most <= hive::wire::MAX_INSTEAD,
        "offers: {most}"
    );
    // Every unsent chunk went before any chunk sent already.
    let first_copies = answered
        .iter()
        .take(150)
        .filter(|c| c.get() % 4 != 0)
        .count();
    assert_eq!(first_copies, 150, "{answered:?}");
}

/// A holder that sends a chunk it was not offered, under its own number,
/// is struck like one that sends wrong bytes: nothing it sent is kept.
#[tokio::test(start_paused = true)]
async fn a_chunk_sent_unasked_is_refused_and_struck() {
    let mut w = World::new(3);
    // Not the whole file: it is offered no alternatives.
    w.holder("liar:1", set(3, &[1, 2]), &[Serve::Unasked]);
    w.holder(
        "honest:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    w.tracker.counts = Some(vec![1, 1, 2]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    assert_eq!(w.strikes(), 1);
    assert_eq!(engine.stats.holders_banned, 1);
    assert_eq!(w.log().asked_of("liar:1").len(), 1);
}

/// A holder of the whole file is not asked for chunks a leecher here has,
/// even the rarest: it sends the chunks only it has, and the leecher the
/// rest, so no seeder upload goes to a chunk the swarm spreads itself.
#[tokio::test(start_paused = true)]
async fn a_seeder_is_asked_only_for_chunks_no_leecher_here_has() {
    let mut w = World::new(4);
    w.holder(
        "seed:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    w.holders.super_seed("seed:1");
    w.holder("peer:1", set(4, &[1, 2]), &[Serve::Good]);
    // Chunks 1 and 2 look rarest.
    w.tracker.counts = Some(vec![1, 1, 5, 5]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let log = w.log();
    let mut asked: Vec<u32> = log.asked_of("seed:1").iter().map(|c| c.get()).collect();
    asked.sort_unstable();
    assert_eq!(asked, [3, 4]);
    assert_eq!(log.answered_by("peer:1").len(), 2);
}

/// ...but a leecher that is slow to deliver holds nobody back for long:
/// SPREAD_GRACE after it was first seen with its chunks, the holder of the
/// whole file is asked for them too.
#[tokio::test(start_paused = true)]
async fn a_slow_leecher_holds_nobody_back_past_the_grace() {
    let mut w = World::new(4);
    w.holder("seed:1", w.full(), &[Serve::Good]);
    w.holders.super_seed("seed:1");
    let slow = Duration::from_secs(60);
    w.holder("peer:1", set(4, &[1, 2]), &[Serve::Slow(slow)]);
    w.tracker.counts = Some(vec![1, 1, 5, 5]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let took = started.elapsed();
    let grace = super::pick::SPREAD_GRACE;
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "{took:?}"
    );
    let asked = w.log().asked_of("seed:1");
    assert!(asked[..2].iter().all(|c| c.get() > 2), "{asked:?}");
}
