//! The engine's rules, driven by the fakes of [`super::fakes`] under paused
//! time: each test is fast and deterministic.

use std::time::Duration;

use tokio::time::Instant;

use super::fakes::{Serve, World, bytes_of, chunk, lock, set};
use crate::error::PeerError;

#[tokio::test(start_paused = true)]
async fn the_rarest_chunk_is_requested_first() {
    let mut w = World::new(4);
    w.holder("a:1", w.full(), &[Serve::Good]);
    // Chunk 2 has one holder, chunk 4 two, chunk 1 three, chunk 3 four.
    w.tracker.counts = Some(vec![3, 1, 4, 2]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(
        w.log().asked_of("a:1"),
        [chunk(2), chunk(4), chunk(1), chunk(3)]
    );
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn the_end_game_asks_a_second_holder_and_cancels_the_loser() {
    let w = World::new(2);
    // Slow, but well within the chunk deadline: only the end-game helps.
    let slow = w.settings.chunk_timeout / 2;
    let fast = Duration::from_millis(10);
    w.holder("slow:1", w.full(), &[Serve::Slow(slow)]);
    w.holder("fast:1", w.full(), &[Serve::Slow(fast)]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    let took = started.elapsed();
    assert!(
        took < slow / 10,
        "the slow holder was not waited for: {took:?}"
    );
    // Let the aborted request wind down while the engine still exists: it
    // is the engine that cancels it, not its drop.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let log = w.log();
    let [last] = log.asked_of("slow:1")[..] else {
        panic!(
            "the slow holder was asked once: {:?}",
            log.asked_of("slow:1")
        );
    };
    let mut fast = log.asked_of("fast:1");
    assert_eq!(fast.len(), 2, "the fast holder was asked both chunks");
    assert_eq!(fast.pop(), Some(last), "the last chunk was asked twice");
    assert_eq!(log.cancelled, [("slow:1".to_owned(), last)]);
    assert_eq!(log.answered_by("slow:1"), []);
    drop(log);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn wrong_bytes_are_refused_struck_and_fetched_from_another_holder() {
    let w = World::new(4);
    w.holder("liar:1", w.full(), &[Serve::Wrong]);
    // A little slower, so the liar's answer arrives first.
    w.holder(
        "honest:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(w.log().answered_by("liar:1").len(), 1, "the liar answered");
    // Someone else has the chunk: banned at the first strike, never asked again.
    assert_eq!(w.strikes(), 1);
    assert_eq!(engine.stats.holders_banned, 1);
    assert_eq!(w.log().asked_of("liar:1").len(), 1);
    assert_eq!(w.log().answered_by("honest:1").len(), 4);
    // Every byte in the sink came from the honest holder, verified.
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn the_only_source_is_banned_at_the_third_strike() {
    let w = World::new(1);
    w.holder("liar:1", w.full(), &[Serve::Wrong]);
    let mut engine = w.engine(w.none());
    let err = w.run(&mut engine).await.expect_err("nobody can supply it");
    assert!(matches!(err, PeerError::Unavailable(_)), "{err:?}");
    assert_eq!(w.log().asked_of("liar:1").len(), 3);
    assert_eq!(w.strikes(), 3);
    assert_eq!(engine.stats.holders_banned, 1);
    assert!(
        w.disk().written.is_empty(),
        "nothing unverified was written"
    );
    assert!(w.disk().held.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_only_source_is_kept_after_two_strikes() {
    let w = World::new(1);
    let script = [Serve::Wrong, Serve::Wrong, Serve::Good];
    w.holder("flaky:1", w.full(), &script);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the third answer is good");
    assert_eq!(w.log().asked_of("flaky:1").len(), 3);
    assert_eq!(w.strikes(), 2);
    assert_eq!(engine.stats.holders_banned, 0);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_chunk_advertised_but_lacking_is_a_strike() {
    let w = World::new(2);
    w.holder("boaster:1", w.full(), &[Serve::Lacks]);
    w.holder(
        "honest:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(w.strikes(), 1);
    assert_eq!(engine.stats.holders_banned, 1);
    assert_eq!(w.log().asked_of("boaster:1").len(), 1);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_dead_holder_fails_over_to_a_live_one() {
    let w = World::new(4);
    w.holder("dead:1", w.full(), &[Serve::Dead]);
    w.holder("live:1", w.full(), &[Serve::Good]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert!(
        !w.log().asked_of("dead:1").is_empty(),
        "the dead holder was tried"
    );
    assert_eq!(w.log().answered_by("live:1").len(), 4);
    assert_eq!(w.strikes(), 0, "being unreachable is no strike");
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_is_given_up_at_the_chunk_deadline() {
    let w = World::new(1);
    w.holder("stuck:1", w.full(), &[Serve::Stall, Serve::Good]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine)
        .await
        .expect("the second request succeeds");
    let took = started.elapsed();
    let deadline = w.settings.chunk_timeout;
    assert!(
        took >= deadline,
        "not abandoned before the deadline: {took:?}"
    );
    assert!(took < deadline * 2, "asked again soon after: {took:?}");
    let log = w.log();
    assert_eq!(log.asked_of("stuck:1"), [chunk(1), chunk(1)]);
    assert_eq!(log.cancelled, [("stuck:1".to_owned(), chunk(1))]);
    drop(log);
    assert_eq!(w.strikes(), 0, "stalling is no strike");
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_appears_later_is_picked_up_by_a_relocate() {
    let w = World::new(20);
    let slow = Duration::from_secs(1);
    w.holder("slow:1", w.full(), &[Serve::Slow(slow)]);
    let appears = Duration::from_secs(3);
    w.tracker.list("new:1", w.full(), appears);
    w.holders.script("new:1", &[Serve::Good]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    let took = started.elapsed();
    assert!(took < slow * 10, "the new holder sped it up: {took:?}");
    assert!(*lock(&w.tracker.calls) >= 1, "the tracker was asked again");
    let log = w.log();
    assert!(
        log.answered_by("new:1").len() >= 10,
        "the new holder served"
    );
    let first = log.asked.iter().find(|(a, _, _)| a == "new:1");
    let (_, _, at) = first.expect("the new holder was asked");
    assert!(*at >= started + appears, "not asked before it was listed");
    drop(log);
    w.assert_complete();
}

#[tokio::test(start_paused = true)]
async fn a_resumed_download_never_requests_chunks_it_holds() {
    let w = World::new(6);
    w.holder("a:1", w.full(), &[Serve::Good]);
    w.holder("b:1", w.full(), &[Serve::Good]);
    let have = set(6, &[1, 2, 5]);
    // The sink already holds those chunks' bytes.
    for c in have.iter() {
        let r = w.manifest.layout().range(c);
        let bytes = bytes_of(&w.data, &w.manifest, c);
        w.disk().data[r.start as usize..r.end as usize].copy_from_slice(&bytes);
    }
    let mut engine = w.engine(have.clone());
    w.run(&mut engine).await.expect("the download completes");
    let log = w.log();
    let mut asked: Vec<_> = log.asked.iter().map(|(_, c, _)| *c).collect();
    asked.sort();
    asked.dedup();
    assert_eq!(asked, [chunk(3), chunk(4), chunk(6)]);
    drop(log);
    let mut written = w.disk().written.clone();
    written.sort();
    // In the end-game both holders may deliver the last chunk.
    written.dedup();
    assert_eq!(written, [chunk(3), chunk(4), chunk(6)]);
    assert!(w.disk().data == *w.data);
    assert!(engine.have().is_full());
    assert_eq!(engine.stats.chunks_fetched, 3);
}

#[tokio::test(start_paused = true)]
async fn a_chunk_forgotten_after_the_run_is_fetched_again() {
    let w = World::new(3);
    w.holder("a:1", w.full(), &[Serve::Good]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    // The finish found chunk 2 damaged on disk.
    engine.forget(&set(3, &[2]));
    assert!(!engine.have().contains(chunk(2)));
    w.run(&mut engine)
        .await
        .expect("the chunk is fetched again");
    let asked = w.log().asked_of("a:1");
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[3], chunk(2), "only the damaged chunk was asked again");
    assert!(engine.have().is_full());
}

#[tokio::test(start_paused = true)]
async fn this_peer_never_asks_itself() {
    let w = World::new(2);
    w.holder("me:1", w.full(), &[Serve::Good]);
    lock(&w.tracker.listed)[0].1.peer_id = "id-me".into();
    w.holder("other:1", w.full(), &[Serve::Good]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(w.log().asked_of("me:1"), []);
    w.assert_complete();
}

/// With nobody holding the missing chunks, a download that may wait reports
/// itself stalled, asks the tracker on its interval, and completes once a
/// holder appears; one that may not fails with UNAVAILABLE.
#[tokio::test(start_paused = true)]
async fn with_no_holder_it_waits_stalled_and_goes_on_when_one_appears() {
    let mut w = World::new(3);
    w.settings.wait_for_holders = true;
    let late = Duration::from_secs(30);
    w.tracker.list("late:1", w.full(), late);
    w.holders.script("late:1", &[Serve::Good]);
    let mut engine = w.engine(w.none());
    let cancel = tokio_util::sync::CancellationToken::new();
    let seen = std::sync::Mutex::new(Vec::new());
    let mut report = |p: &super::Progress| lock(&seen).push((Instant::now(), p.stalled));
    let started = Instant::now();
    let run = engine.run(w.tracker.answer(), &cancel, &mut report);
    tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the engine finished in time")
        .expect("the download completes once a holder appears");
    w.assert_complete();
    let seen = lock(&seen).clone();
    assert!(
        seen.iter().any(|&(_, stalled)| stalled),
        "reported stalled: {seen:?}"
    );
    assert_eq!(
        seen.last().map(|s| s.1),
        Some(false),
        "not stalled at the end"
    );
    let took = started.elapsed();
    assert!(
        took >= late,
        "no chunk before the holder appeared: {took:?}"
    );
    // Asked again on the relocate interval, not in a tight loop.
    let calls = *lock(&w.tracker.calls);
    let most = (late.as_secs() / w.settings.relocate_interval.as_secs()) as u32 + 3;
    assert!(calls <= most, "{calls} Locates in {took:?}");

    // Without waiting: today's UNAVAILABLE.
    let w = World::new(3);
    w.tracker.list("late:1", w.full(), late);
    let mut engine = w.engine(w.none());
    let err = w.run(&mut engine).await.expect_err("nobody can supply it");
    assert!(matches!(err, PeerError::Unavailable(_)), "{err:?}");
}

/// While another downloader's holdings grow, the tracker is asked every
/// FRESH_LOCATE, so its new chunks are used within a fraction of a second,
/// not at the next relocate interval (5 s here).
#[tokio::test(start_paused = true)]
async fn fresh_holdings_are_seen_within_a_fraction_of_a_second() {
    let w = World::new(4);
    // The seeder answers only after 30 s: every chunk must come from the peer.
    w.holder("seed:1", w.full(), &[Serve::Slow(Duration::from_secs(30))]);
    w.holder("peer:1", set(4, &[1]), &[Serve::Good]);
    for (n, at) in [(2, 300), (3, 600), (4, 900)] {
        let chunks: Vec<u32> = (1..=n).collect();
        w.tracker
            .list("peer:1", set(4, &chunks), Duration::from_millis(at));
    }
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let took = started.elapsed();
    let fresh = super::FRESH_LOCATE;
    assert!(
        took <= Duration::from_millis(900) + 2 * fresh,
        "the peer's last chunk was seen within two fresh Locates: {took:?}"
    );
    let calls = *lock(&w.tracker.calls);
    assert!(
        calls as u128 <= took.as_millis() / fresh.as_millis() + 2,
        "{calls} Locates in {took:?}"
    );
}

/// At a swarm's start the first answers list only the seeder: with no news
/// the gap to the next Locate doubles from FRESH_LOCATE, so a downloader
/// whose first chunks come a fraction of a second later is used then, not at
/// the next relocate interval (5 s here); and a swarm that stays quiet is
/// asked about every interval again, not four times a second.
#[tokio::test(start_paused = true)]
async fn a_young_swarm_is_asked_about_again_within_a_second() {
    let w = World::new(4);
    // The seeder answers only after 30 s: the chunks must come from the peer.
    w.holder("seed:1", w.full(), &[Serve::Slow(Duration::from_secs(30))]);
    w.tracker
        .list("peer:1", w.full(), Duration::from_millis(600));
    w.holders.script("peer:1", &[Serve::Good]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(600) + 4 * super::FRESH_LOCATE,
        "the peer was seen within a second: {took:?}"
    );

    // Nothing ever changes: after a few doublings, one Locate an interval.
    let mut w = World::new(2);
    w.settings.chunk_timeout = Duration::from_secs(120);
    w.holder("seed:1", w.full(), &[Serve::Slow(Duration::from_secs(60))]);
    let mut engine = w.engine(w.none());
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut report = |_: &super::Progress| {};
    let run = engine.run(w.tracker.answer(), &cancel, &mut report);
    let quiet = Duration::from_secs(50);
    assert!(
        tokio::time::timeout(quiet, run).await.is_err(),
        "still fetching"
    );
    let calls = *lock(&w.tracker.calls);
    let most = (quiet.as_secs() / w.settings.relocate_interval.as_secs()) as u32 + 6;
    assert!(calls <= most, "{calls} Locates in {quiet:?}");
}

/// The end-game asks a second holder only for a chunk that has been coming
/// for over twice as long as chunks take: holders that are merely busy are
/// not doubled up on, which would spend upload the swarm still needs.
#[tokio::test(start_paused = true)]
async fn the_end_game_leaves_chunks_that_are_on_time_alone() {
    let mut w = World::new(4);
    w.settings.per_holder = 2;
    let took = Duration::from_millis(100);
    w.holder("a:1", w.full(), &[Serve::Slow(took)]);
    w.holder("b:1", w.full(), &[Serve::Slow(took)]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    let log = w.log();
    assert_eq!(log.asked.len(), 4, "no chunk asked twice: {:?}", log.asked);
    assert_eq!(log.cancelled, []);
    drop(log);
    w.assert_complete();
}

/// How many requests to the holder of the whole file were in flight at
/// once, for a download that starts holding `have` (1 KiB chunks no
/// leecher has)
/// beside a leecher holding chunks 1-8 of 512. (Enough chunks that the
/// alternatives each request offers do not cover them all: a chunk offered
/// in a request in flight is not asked for in another.)
async fn seeder_requests_at_once(have: &[u32], saturated_bytes: u64) -> usize {
    let mut w = World::new(512);
    w.settings.per_holder = 4;
    w.settings.saturated_bytes = saturated_bytes;
    let took = Duration::from_millis(10);
    w.holder("seed:1", w.full(), &[Serve::Slow(took)]);
    let theirs: Vec<u32> = (1..=8).collect();
    w.holder("peer:1", set(512, &theirs), &[Serve::Slow(took)]);
    let mut engine = w.engine(set(512, have));
    w.run(&mut engine).await.expect("the download completes");
    let log = w.log();
    let at: Vec<Instant> = log
        .asked
        .iter()
        .filter(|(addr, _, _)| addr == "seed:1")
        .map(|(_, _, at)| *at)
        .collect();
    assert!(!at.is_empty(), "the seeder was asked");
    // Every request takes the same time: those asked at one instant are
    // the ones in flight together.
    at.iter()
        .map(|t| at.iter().filter(|u| *u == t).count())
        .max()
        .unwrap_or(0)
}

/// A leecher holding many chunks that no other leecher has yet (its upload
/// lags behind what it takes in) asks a holder of the whole file for one
/// chunk at a time, so that the seeder's first copies go to leechers that
/// pass theirs on; one with nothing piled up asks for as many as of anyone.
#[tokio::test(start_paused = true)]
async fn a_saturated_leecher_asks_a_seeder_for_one_chunk_at_a_time() {
    // 16 of these 1 KiB chunks, as 16 of 128 KiB are by default.
    let sixteen = 16 << 10;
    assert_eq!(seeder_requests_at_once(&[], sixteen).await, 4);
    let piled_up: Vec<u32> = (481..=512).collect();
    assert_eq!(seeder_requests_at_once(&piled_up, sixteen).await, 1);
    // The bound is in bytes: 32 KiB of small chunks is not a backlog.
    let default = crate::fetch::engine::pick::SATURATED_BYTES;
    assert_eq!(seeder_requests_at_once(&piled_up, default).await, 4);
}

/// A chunk verified in the end-game is not asked for again while the copy
/// it beat is being aborted: the holder that won, free again, gets the next
/// overdue chunk, not the one it has just sent.
#[tokio::test(start_paused = true)]
async fn a_chunk_won_in_the_end_game_is_not_asked_for_again() {
    let mut w = World::new(4);
    let slow = Serve::Slow(w.settings.chunk_timeout / 2);
    w.holder("slow:1", w.full(), &[slow]);
    w.holder("slow:2", w.full(), &[slow]);
    w.holder(
        "fast:1",
        w.full(),
        &[Serve::Slow(Duration::from_millis(10))],
    );
    // Rarest first: the slow holders get chunks 1 and 2, the fast one 3
    // and 4; then the end-game asks it for 1, the rarer, and next for 2.
    w.tracker.counts = Some(vec![1, 2, 3, 4]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    assert_eq!(
        w.log().asked_of("fast:1"),
        [chunk(3), chunk(4), chunk(1), chunk(2)]
    );
    w.assert_complete();
}

/// Requests in flight follow a holder's pace: two at first, then about
/// twice what it delivers in a round trip, up to --per-holder. A holder
/// that answers every request in 40 ms whatever the load (a long round trip,
/// no queue) delivers more the more it is asked, so the count nearly doubles
/// every two round trips (its rate is measured over two) until the cap.
#[tokio::test(start_paused = true)]
async fn requests_in_flight_grow_with_what_a_holder_delivers() {
    let mut w = World::new(256);
    w.settings.per_holder = 16;
    let rtt = Duration::from_millis(40);
    w.holder("far:1", w.full(), &[Serve::Slow(rtt)]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let asks = in_flight_at_each_ask(&w, rtt);
    let first = asks[0].0;
    assert_eq!(asks[0].1, 2, "two at first");
    assert_eq!(
        asks.iter().map(|a| a.1).max(),
        Some(16),
        "up to --per-holder"
    );
    let full_at = asks.iter().find(|a| a.1 == 16).map(|a| a.0).unwrap();
    assert!(
        full_at.duration_since(first) <= rtt * 10,
        "growing by a factor, not one more a round trip (14 of them): {:?}",
        full_at.duration_since(first)
    );
}

/// For a holder that answers every request `rtt` after it is made: each
/// request's time and how many were in flight then (those asked within
/// `rtt` before it), in the order asked.
fn in_flight_at_each_ask(w: &World, rtt: Duration) -> Vec<(Instant, usize)> {
    let asked: Vec<Instant> = w.log().asked.iter().map(|(_, _, at)| *at).collect();
    let in_flight = |at: Instant| asked.iter().filter(|&&t| t <= at && at < t + rtt).count();
    asked.iter().map(|&t| (t, in_flight(t))).collect()
}

/// A request to a holder of the whole file offers alternatives (it may
/// super-seed), and a chunk offered is not asked of it as such: the lists
/// share out what is left, so a download's last chunks from such a holder
/// still come several at a time, not one round trip each.
#[tokio::test(start_paused = true)]
async fn the_last_chunks_from_a_holder_of_the_whole_file_come_several_at_a_time() {
    let mut w = World::new(8);
    w.settings.per_holder = 4;
    let rtt = Duration::from_millis(40);
    w.holder("seed:1", w.full(), &[Serve::Slow(rtt)]);
    let started = Instant::now();
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let took = started.elapsed();
    assert!(took <= rtt * 5, "8 chunks in {took:?}, not one at a time");
    assert!(w.log().most_instead > 0, "alternatives were offered");
}

/// A holder that once says it is busy gets fewer requests for a while, and
/// its requests back one by one as it sends chunks: not one at a time for
/// the rest of the download.
#[tokio::test(start_paused = true)]
async fn a_holder_that_was_busy_once_gets_its_requests_back() {
    let mut w = World::new(256);
    w.settings.per_holder = 16;
    let rtt = Duration::from_millis(40);
    w.holder("far:1", w.full(), &[Serve::Busy, Serve::Slow(rtt)]);
    let mut engine = w.engine(w.none());
    w.run(&mut engine).await.expect("the download completes");
    w.assert_complete();
    let most = in_flight_at_each_ask(&w, rtt).iter().map(|a| a.1).max();
    assert_eq!(most, Some(16), "up to --per-holder again");
}
