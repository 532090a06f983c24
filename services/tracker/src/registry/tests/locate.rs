//! Locate and ListFiles: holder caps, coverage, paging and counts.

use super::*;

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
