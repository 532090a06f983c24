use super::*;

fn chunk(n: u32) -> ChunkIndex {
    ChunkIndex::new(n).unwrap()
}

#[test]
fn full_and_empty() {
    for universe in [0, 1, 63, 64, 65, 68, 1024] {
        let full = ChunkSet::full(universe);
        assert_eq!(full.len(), universe);
        assert!(full.is_full());
        assert_eq!(full.iter().count(), universe as usize);
        assert_eq!(full.missing().count(), 0);
        let empty = ChunkSet::empty(universe);
        assert_eq!(empty.missing().count(), universe as usize);
        if universe > 0 {
            assert_eq!(full.ranges(), vec![1..=universe]);
        }
    }
}

#[test]
fn insert_remove_and_ranges() {
    let mut set = ChunkSet::empty(68);
    for n in [1, 2, 3, 7, 9, 10, 11, 12, 68] {
        assert!(set.insert(chunk(n)));
    }
    assert!(!set.insert(chunk(3)), "already there");
    assert!(!set.insert(chunk(69)), "outside the file");
    assert_eq!(set.len(), 9);
    assert_eq!(set.to_string(), "1-3,7,9-12,68");
    assert!(set.remove(chunk(10)));
    assert!(!set.remove(chunk(10)));
    assert!(!set.contains(chunk(10)));
    assert!(!set.contains(chunk(69)));
    assert_eq!(set.to_string(), "1-3,7,9,11-12,68");
    let back = ChunkSet::from_ranges(68, set.ranges()).unwrap();
    assert_eq!(back, set);
}

#[test]
fn bad_ranges_are_refused() {
    assert!(ChunkSet::from_ranges(68, [0..=1]).is_err());
    assert!(ChunkSet::from_ranges(68, [RangeInclusive::new(5, 4)]).is_err());
    assert!(ChunkSet::from_ranges(68, [60..=69]).is_err());
    assert!(ChunkSet::from_ranges(0, [1..=1]).is_err());
    let overlapping = ChunkSet::from_ranges(10, [1..=5, 3..=7]).unwrap();
    assert_eq!(overlapping.len(), 7);
    let too_many = (1..=7).map(|n| n..=n);
    assert!(ChunkSet::from_ranges(10, too_many).is_err());
}

#[test]
fn word_wise_fill_matches_bit_by_bit() {
    for (first, last) in [
        (1, 1),
        (1, 64),
        (64, 65),
        (63, 129),
        (1, 200),
        (200, 200),
        (65, 128),
    ] {
        let set = ChunkSet::from_ranges(200, [first..=last]).unwrap();
        let mut slow = ChunkSet::empty(200);
        for n in first..=last {
            slow.insert(chunk(n));
        }
        assert_eq!(set, slow, "{first}-{last}");
        assert_eq!(set.len(), last - first + 1);
    }
}

#[test]
fn ranges_match_a_bit_by_bit_walk() {
    let mut rng_state = 7u64;
    for universe in [1u32, 63, 64, 65, 130, 1000] {
        for density in [0u64, 1, 2, 4, 7, 8] {
            let mut set = ChunkSet::empty(universe);
            for n in 1..=universe {
                rng_state = rng_state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if (rng_state >> 61) < density {
                    set.insert(chunk(n));
                }
            }
            let mut slow: Vec<RangeInclusive<u32>> = Vec::new();
            for c in set.iter() {
                let n = c.get();
                match slow.last_mut() {
                    Some(r) if *r.end() + 1 == n => *r = *r.start()..=n,
                    _ => slow.push(n..=n),
                }
            }
            assert_eq!(set.ranges(), slow, "universe {universe} density {density}");
            assert_eq!(set.run_count() as usize, slow.len());
            assert_eq!(ChunkSet::from_bitmap(universe, &set.to_bitmap()), Some(set));
        }
    }
}

#[test]
fn bytes_round_trip() {
    for universe in [0, 1, 64, 68, 1024] {
        let set =
            ChunkSet::from_ranges(universe, (universe > 0).then_some(1..=universe.div_ceil(2)))
                .unwrap();
        assert_eq!(ChunkSet::from_bytes(universe, &set.to_bytes()), Some(set));
    }
    assert_eq!(ChunkSet::from_bytes(68, &[0; 8]), None, "too short");
    assert_eq!(
        ChunkSet::from_bytes(68, &[0xff; 16]),
        None,
        "bits past the end"
    );
}

#[test]
fn bitmaps_are_bit_n_minus_1_least_significant_first() {
    let set = ChunkSet::from_ranges(68, [1..=1, 10..=10, 68..=68]).unwrap();
    let bitmap = set.to_bitmap();
    assert_eq!(bitmap.len(), 9);
    assert_eq!((bitmap[0], bitmap[1], bitmap[8]), (0b1, 0b10, 0b1000));
    assert_eq!(bitmap.iter().map(|b| b.count_ones()).sum::<u32>(), 3);
    assert_eq!(ChunkSet::from_bitmap(68, &bitmap), Some(set));
    assert_eq!(ChunkSet::from_bitmap(68, &[0; 8]), None, "too short");
    assert_eq!(ChunkSet::from_bitmap(68, &[0; 16]), None, "too long");
    assert_eq!(ChunkSet::from_bitmap(68, &[0xff; 9]), None, "chunk 69");
    assert_eq!(ChunkSet::from_bitmap(0, &[]), Some(ChunkSet::empty(0)));
}

#[test]
fn union_subtract_and_counts() {
    let mut a = ChunkSet::from_ranges(100, [1..=50]).unwrap();
    let b = ChunkSet::from_ranges(100, [40..=100]).unwrap();
    a.union_with(&b);
    assert!(a.is_full());
    a.subtract(&b);
    assert_eq!(a.ranges(), vec![1..=39]);
    let mut counts = vec![0; 100];
    a.add_to_counts(&mut counts);
    b.add_to_counts(&mut counts);
    assert_eq!((counts[0], counts[45], counts[99]), (1, 1, 1));
    assert_eq!(counts.iter().sum::<u32>(), 39 + 61);
    b.sub_from_counts(&mut counts);
    assert_eq!(counts[99], 0);
}

#[test]
fn replacing_a_set_in_counts_is_subtracting_the_old_and_adding_the_new() {
    let old = ChunkSet::from_ranges(130, [1..=70, 100..=101, 129..=130]).unwrap();
    let new = ChunkSet::from_ranges(130, [60..=100, 128..=128]).unwrap();
    let other = ChunkSet::from_ranges(130, [50..=130]).unwrap();
    let mut expected = vec![0; 130];
    old.add_to_counts(&mut expected);
    other.add_to_counts(&mut expected);
    let mut counts = expected.clone();
    old.sub_from_counts(&mut expected);
    new.add_to_counts(&mut expected);
    new.replace_in_counts(&old, &mut counts);
    assert_eq!(counts, expected);
    new.replace_in_counts(&new, &mut counts);
    assert_eq!(counts, expected, "no change, no count moves");
}

/// Membership chunk by chunk, against the ranges that built the set, across
/// a word boundary and up to the last chunk.
#[test]
fn contains_is_exactly_the_chunks_put_in() {
    let set = ChunkSet::from_ranges(130, [2..=3, 64..=65, 130..=130]).unwrap();
    for n in 1..=130 {
        let want = matches!(n, 2 | 3 | 64 | 65 | 130);
        assert_eq!(set.contains(chunk(n)), want, "chunk {n}");
    }
    assert!(!set.contains(chunk(131)), "past the file");
    assert!(ChunkSet::full(130).contains(chunk(1)));
}

#[test]
fn subsets() {
    let small = ChunkSet::from_ranges(100, [10..=20]).unwrap();
    let big = ChunkSet::from_ranges(100, [1..=50]).unwrap();
    assert!(small.is_subset(&big));
    assert!(!big.is_subset(&small));
    assert!(small.is_subset(&small));
    assert!(ChunkSet::empty(100).is_subset(&small));
    assert!(!ChunkSet::full(100).is_subset(&big));
}

/// A full set (a seeder) takes the short path; it must count the same.
#[test]
fn a_full_set_adds_one_to_every_count() {
    let mut counts = vec![1; 70];
    ChunkSet::full(70).add_to_counts(&mut counts);
    assert_eq!(counts, vec![2; 70]);
    ChunkSet::full(70).sub_from_counts(&mut counts);
    assert_eq!(counts, vec![1; 70]);
}

/// More ranges than a set can need are refused as that, not as a bad range
/// (the message once blamed a valid range, "8462-8465 is empty or reversed").
#[test]
fn too_many_ranges_are_refused_as_too_many() {
    // 8 chunks: at most 5 ranges. Six valid single-chunk ranges.
    let six = [1..=1, 3..=3, 5..=5, 7..=7, 8..=8, 2..=2];
    let err = ChunkSet::from_ranges(8, six).unwrap_err();
    assert_eq!(err, ChunkError::TooManyRanges { max: 5, count: 8 });
    assert!(
        err.to_string().contains("more than 5 chunk ranges"),
        "{err}"
    );
    assert!(ChunkSet::from_ranges(8, [1..=1, 3..=3, 5..=5, 7..=7, 8..=8]).is_ok());
    // A reversed range is still named as such.
    let (first, last) = (5, 4);
    assert_eq!(
        ChunkSet::from_ranges(8, [first..=last]).unwrap_err(),
        ChunkError::BadRange { first: 5, last: 4 }
    );
}
