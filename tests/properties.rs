//! Property tests (docs/RELIABILITY.md: BI-8) for everything hive validates before it
//! trusts the network: file names, chunk math, chunk sets and their wire
//! ranges, BLAKE3 tree digests and manifests.
//!
//! Each property checks that the code never panics, overflows, allocates
//! out of proportion or hangs on any input, and that it agrees with a plain
//! model of the rule. `cargo test` runs a few hundred cases of each in a few
//! seconds; `scripts/fuzz.sh` runs the same properties with many more cases
//! (PROPTEST_CASES) for a given time. A failing case is shrunk and printed,
//! and its seed saved under `tests/proptest-regressions/`.
//!
//! Hangs: a watchdog aborts the run if no case finishes for
//! `HIVE_PROPTEST_HANG_SECS` (30 s by default).

use std::{
    collections::BTreeSet,
    ops::RangeInclusive,
    path::{Component, Path},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hive::{
    ChunkIndex, ChunkSet, ChunkSize, Digest, FileName, Layout, Manifest,
    chunk::{MAX_CHUNK_SIZE, MAX_CHUNKS, MIN_CHUNK_SIZE, TARGET_CHUNKS},
    digest::{ChunkHasher, chunk_digest, file_digest},
    name::MAX_NAME_LEN,
    pb::types as pb,
    wire,
};
use proptest::{prelude::*, test_runner::Config};
use unicode_normalization::UnicodeNormalization;

// ---- running ---------------------------------------------------------------

/// `cases` per property unless PROPTEST_CASES says otherwise.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Marks one finished case, and starts the hang watchdog on first use.
fn progress() {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| {
        let limit = std::env::var("HIVE_PROPTEST_HANG_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30u64);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let start = *START.get().expect("set before the thread starts");
                let idle = start.elapsed().as_secs() - LAST.load(Ordering::Relaxed);
                if idle > limit {
                    eprintln!("HANG: no property case finished for {idle} s");
                    std::process::abort();
                }
            }
        });
        Instant::now()
    });
    LAST.store(start.elapsed().as_secs(), Ordering::Relaxed);
}

// ---- strategies ------------------------------------------------------------

/// Characters that matter to name validation, and anything else.
fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => prop::sample::select(vec!['/', '\\', '.', ':', '\0', '\n', '\u{7f}', '\u{85}', ' ', 'C', 'é', '名', '\u{2028}', '\u{feff}',
            '\u{202e}', '\u{2067}', '\u{200b}', 'e', '\u{301}', '\u{1100}', '\u{1161}']),
        1 => any::<char>(),
    ]
}

fn name_string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(name_char(), 0..12).prop_map(String::from_iter),
        1 => prop::collection::vec(name_char(), 60..300).prop_map(String::from_iter),
        1 => prop::sample::select(vec![".", "..", "...", "C:", "c:x", "1:x", "ab:", "../x", "..\\x"])
            .prop_map(String::from),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn chunk_size() -> impl Strategy<Value = ChunkSize> {
    (10u32..=24).prop_map(|shift| ChunkSize::new(1 << shift).expect("a power of two in range"))
}

/// File sizes: small ones, ones near chunk boundaries, and anything.
fn file_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..100_000,
        2 => (0u64..=64, 10u32..=24, -2i64..=2).prop_map(|(k, shift, d)| {
            (k << shift).saturating_add_signed(d)
        }),
        2 => (0u64..=u64::from(MAX_CHUNKS) + 2, 10u32..=24)
            .prop_map(|(count, shift)| count << shift),
        1 => any::<u64>(),
        1 => prop::sample::select(vec![u64::MAX, u64::MAX - 1, 1 << 63, u64::from(u32::MAX)]),
    ]
}

/// A chunk count: mostly small, sometimes up to the largest file.
fn universe() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..200, 1 => 0u32..=MAX_CHUNKS]
}

/// A universe and a random subset of it.
fn chunk_subset() -> impl Strategy<Value = (u32, BTreeSet<u32>)> {
    universe().prop_flat_map(|u| {
        let members = if u == 0 {
            Just(BTreeSet::new()).boxed()
        } else {
            prop_oneof![
                prop::collection::btree_set(1..=u, 0..(u as usize).min(300)),
                // Runs, so that ranges are long and word-wide.
                prop::collection::vec((1..=u, 0u32..200), 0..8).prop_map(move |runs| {
                    runs.into_iter()
                        .flat_map(|(a, len)| a..=a.saturating_add(len).min(u))
                        .collect()
                }),
            ]
            .boxed()
        };
        (Just(u), members)
    })
}

/// Range bounds from the wire: near the interesting values, or anything.
fn wire_bound(universe: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0..=universe.saturating_add(2),
        1 => prop::sample::select(vec![0, 1, u32::MAX, u32::MAX - 1]),
        1 => any::<u32>(),
    ]
}

/// Some bytes of a file and a layout for them, with at least `min_chunks`.
fn file_bytes(max_len: usize) -> impl Strategy<Value = (Vec<u8>, ChunkSize)> {
    (0..=max_len, 10u32..=13, any::<u64>()).prop_map(|(len, shift, seed)| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        (data, ChunkSize::new(1 << shift).expect("valid"))
    })
}

// ---- models ----------------------------------------------------------------

/// The name rule as docs/ARCHITECTURE.md states it: once in NFC, 1-255 bytes of UTF-8, no `/`, `\`,
/// NUL or control character, no bidi control, line or paragraph separator or other
/// default-ignorable code point, not `.` or `..`, no drive prefix.
fn name_is_valid(name: &str) -> bool {
    let name = &name.nfc().collect::<String>();
    let bidi_or_separator = |c: char| matches!(c, '\u{61C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}');
    if name
        .chars()
        .any(|c| bidi_or_separator(c) || hive::name::deceptive(c))
    {
        return false;
    }
    let drive = matches!(name.as_bytes(), [l, b':', ..] if l.is_ascii_alphabetic());
    (1..=MAX_NAME_LEN).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
        && name != "."
        && name != ".."
        && !drive
}

/// The manifest of `data` laid out in `chunk_size` chunks, hashed in memory.
fn manifest_of(name: &str, data: &[u8], chunk_size: ChunkSize) -> Option<Manifest> {
    let layout = Layout::new(data.len() as u64, chunk_size).ok()?;
    let digests = layout
        .chunks()
        .map(|c| {
            let r = layout.range(c);
            chunk_digest(&layout, c, &data[r.start as usize..r.end as usize]).expect("non-empty")
        })
        .collect();
    let name = FileName::new(name).expect("valid name");
    Some(Manifest::new(name, layout, digests, Digest::of(data)).expect("consistent"))
}

// ---- names -----------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    /// Any string: validation agrees with the written rule, and never panics.
    #[test]
    fn names_follow_the_rule(name in name_string()) {
        let got = FileName::new(name.clone());
        prop_assert_eq!(got.is_ok(), name_is_valid(&name), "{:?}: {:?}", name, got);
        progress();
    }

    /// A valid name is one plain path component: joined to a directory it
    /// names a child of that directory, and it survives every conversion.
    #[test]
    fn valid_names_never_leave_their_directory(name in name_string()) {
        if let Ok(valid) = FileName::new(name.clone()) {
            prop_assert!(!valid.as_str().contains(['/', '\\', '\0']));
            let dir = Path::new("/srv/hive/share");
            let joined = dir.join(&valid);
            prop_assert_eq!(joined.parent(), Some(dir));
            prop_assert_eq!(joined.file_name().and_then(|n| n.to_str()), Some(valid.as_str()));
            let parts: Vec<Component> = Path::new(valid.as_str()).components().collect();
            prop_assert!(matches!(parts.as_slice(), [Component::Normal(_)]), "{:?}", parts);
            prop_assert!(joined.starts_with(dir));
            let json = serde_json::to_string(&valid).expect("serialise");
            prop_assert_eq!(serde_json::from_str::<FileName>(&json).ok(), Some(valid.clone()));
            prop_assert_eq!(name.parse::<FileName>().ok(), Some(valid.clone()));
            // NFD and NFC spellings are one name, kept in NFC.
            prop_assert_eq!(FileName::new(name.nfd().collect::<String>()).ok(), Some(valid.clone()));
            prop_assert_eq!(String::from(valid), name.nfc().collect::<String>());
        } else {
            let json = serde_json::to_string(&name).expect("serialise");
            prop_assert!(serde_json::from_str::<FileName>(&json).is_err());
        }
        progress();
    }
}

// ---- chunk math ------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    /// A chunk size is valid exactly when it is a power of two from 1 KiB
    /// to 16 MiB; the adaptive one always is, and is the smallest that keeps
    /// a file to the target chunk count (below the 16 MiB cap).
    #[test]
    fn chunk_sizes_are_checked(bytes in prop_oneof![any::<u64>(), (0u32..64).prop_map(|s| 1u64 << s), 0u64..(32 << 20)], size in file_size()) {
        let valid = bytes.is_power_of_two()
            && (u64::from(MIN_CHUNK_SIZE)..=u64::from(MAX_CHUNK_SIZE)).contains(&bytes);
        prop_assert_eq!(ChunkSize::new(bytes).is_ok(), valid, "{}", bytes);

        let adaptive = u64::from(ChunkSize::for_file(size).get());
        prop_assert!(ChunkSize::new(adaptive).is_ok());
        if adaptive < u64::from(MAX_CHUNK_SIZE) {
            prop_assert!(size.div_ceil(adaptive) <= TARGET_CHUNKS, "{} in {}", size, adaptive);
        }
        if adaptive > u64::from(MIN_CHUNK_SIZE) {
            prop_assert!(size.div_ceil(adaptive / 2) > TARGET_CHUNKS, "{} in {}", size, adaptive);
        }
        progress();
    }

    /// Every layout the math accepts cuts the file into non-empty chunks that
    /// tile it exactly; too many chunks is an error, never an overflow.
    #[test]
    fn chunk_ranges_tile_the_file(size in file_size(), chunk_size in chunk_size(), probe in any::<u64>()) {
        let cs = u64::from(chunk_size.get());
        let want = size.div_ceil(cs);
        let Ok(layout) = Layout::new(size, chunk_size) else {
            prop_assert!(want > u64::from(MAX_CHUNKS), "{} in {} refused", size, cs);
            progress();
            return Ok(());
        };
        prop_assert_eq!(u64::from(layout.count()), want);
        let mut next = 0;
        for chunk in layout.chunks() {
            let r = layout.range(chunk);
            prop_assert_eq!(r.start, next);
            prop_assert!(r.end > r.start);
            let full = r.end - r.start == cs;
            prop_assert!(full || chunk.get() == layout.count(), "short chunk {:?}", chunk);
            prop_assert_eq!(u64::from(layout.chunk_len(chunk)), r.end - r.start);
            next = r.end;
        }
        prop_assert_eq!(next, size);
        for number in [0, 1, u64::from(layout.count()), u64::from(layout.count()) + 1, probe, u64::MAX] {
            let ok = (1..=u64::from(layout.count())).contains(&number);
            prop_assert_eq!(layout.chunk(number).is_ok(), ok, "chunk {}", number);
            let wire = u32::try_from(number).map(|n| wire::chunk("chunk", &layout, n).is_ok());
            prop_assert!(wire.is_err() || wire == Ok(ok));
        }
        prop_assert_eq!(Layout::adaptive(size).is_ok(), size.div_ceil(u64::from(ChunkSize::for_file(size).get())) <= u64::from(MAX_CHUNKS));
        progress();
    }

    #[test]
    fn chunk_positions_round_trip(pos in prop_oneof![0usize..100_000, any::<usize>()]) {
        match ChunkIndex::from_position(pos) {
            Some(c) => {
                prop_assert_eq!(c.position(), pos);
                prop_assert_eq!(c.get() as usize, pos + 1);
            }
            None => prop_assert!(pos >= u32::MAX as usize),
        }
        progress();
    }
}

// ---- chunk sets and wire ranges ------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// set -> ranges -> set is the identity, and the ranges are the shortest
    /// sorted, disjoint, non-adjacent description of the set. The same holds
    /// through the wire types and the stored bitmap.
    #[test]
    fn ranges_round_trip((universe, members) in chunk_subset()) {
        let mut set = ChunkSet::empty(universe);
        for &n in &members {
            prop_assert!(set.insert(ChunkIndex::new(n).expect("from 1")));
        }
        prop_assert_eq!(set.len() as usize, members.len());
        let ranges = set.ranges();
        for pair in ranges.windows(2) {
            prop_assert!(pair[0].end() + 1 < *pair[1].start(), "{:?}", pair);
        }
        let expanded: BTreeSet<u32> = ranges.iter().flat_map(|r| r.clone()).collect();
        prop_assert_eq!(&expanded, &members);
        prop_assert_eq!(ChunkSet::from_ranges(universe, ranges.clone()), Ok(set.clone()));
        let on_wire = wire::ranges(&set);
        prop_assert_eq!(wire::chunk_set("chunks", universe, &on_wire), Ok(set.clone()));
        prop_assert_eq!(ChunkSet::from_bytes(universe, &set.to_bytes()), Some(set.clone()));
        prop_assert_eq!(set.run_count() as usize, ranges.len());
        let (holder_ranges, bitmap) = wire::holder_chunk_fields(&set);
        prop_assert!(holder_ranges.is_empty() || bitmap.is_empty());
        prop_assert_eq!(wire::holder_chunks(universe, &holder_ranges, &bitmap), Ok(set.clone()));
        let missing: BTreeSet<u32> = set.missing().map(ChunkIndex::get).collect();
        prop_assert_eq!(missing.len() + members.len(), universe as usize);
        prop_assert!(missing.is_disjoint(&members));
        prop_assert_eq!(set.is_full(), members.len() == universe as usize);
        let full = ChunkSet::full(universe);
        let mut rest = full.clone();
        rest.subtract(&set);
        prop_assert_eq!(rest.iter().map(ChunkIndex::get).collect::<BTreeSet<_>>(), missing);
        rest.union_with(&set);
        prop_assert_eq!(rest, full);
        progress();
    }

    /// Arbitrary ranges from the wire: accepted exactly when every range is
    /// within the file, non-empty, and there are not more than a set could
    /// ever need; then the set is their union. Work stays proportional to
    /// the file, whatever the ranges say.
    #[test]
    fn wire_ranges_match_a_model(
        (universe, raw) in universe().prop_flat_map(|u| {
            (Just(u), prop::collection::vec((wire_bound(u), wire_bound(u)), 0..12))
        })
    ) {
        let wire_ranges: Vec<pb::ChunkRange> =
            raw.iter().map(|&(first, last)| pb::ChunkRange { first, last }).collect();
        let got = wire::chunk_set("chunks", universe, &wire_ranges);
        let valid = raw.len() as u64 <= u64::from(universe / 2 + 1)
            && raw.iter().all(|&(first, last)| first >= 1 && first <= last && last <= universe);
        prop_assert_eq!(got.is_ok(), valid, "{:?} of {}: {:?}", raw, universe, got);
        if let Ok(set) = got {
            let want: BTreeSet<u32> = raw.iter().flat_map(|&(f, l)| f..=l).collect();
            prop_assert_eq!(set.iter().map(ChunkIndex::get).collect::<BTreeSet<_>>(), want);
            prop_assert_eq!(set.universe(), universe);
        }
        progress();
    }

    /// A stored bitmap is either refused or read back exactly.
    #[test]
    fn stored_bitmaps_are_checked(universe in universe(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Some(set) = ChunkSet::from_bytes(universe, &bytes) {
            prop_assert_eq!(set.to_bytes(), bytes);
            prop_assert!(set.iter().all(|c| c.get() <= universe));
        }
        progress();
    }

    /// A holder's bitmap from the wire is accepted exactly when it has the
    /// file's length and names no chunk past the last; then it reads back.
    #[test]
    fn wire_bitmaps_are_checked(
        (universe, bitmap) in universe().prop_flat_map(|u| {
            let len = (u as usize).div_ceil(8);
            (Just(u), prop_oneof![
                4 => prop::collection::vec(any::<u8>(), len..=len),
                1 => prop::collection::vec(any::<u8>(), 0..300),
            ])
        })
    ) {
        let got = wire::holder_chunks(universe, &[], &bitmap);
        let past_end = bitmap.iter().enumerate().any(|(i, byte)| {
            (0..8).any(|b| byte & (1 << b) != 0 && i * 8 + b >= universe as usize)
        });
        let valid = !bitmap.is_empty() && bitmap.len() == (universe as usize).div_ceil(8) && !past_end;
        if bitmap.is_empty() {
            prop_assert_eq!(got, Ok(ChunkSet::empty(universe)));
        } else {
            prop_assert_eq!(got.is_ok(), valid, "{:?} of {}", bitmap, universe);
        }
        if let Ok(set) = wire::holder_chunks(universe, &[], &bitmap) && !bitmap.is_empty() {
            prop_assert_eq!(set.to_bitmap(), bitmap);
        }
        progress();
    }
}

// ---- digests and manifests ------------------------------------------------------

proptest! {
    #![proptest_config(config(128))]

    /// Chunk digests of any bytes, hashed whole or in pieces, combine into
    /// the file's plain BLAKE3 hash (what `b3sum` prints).
    #[test]
    fn chunk_digests_combine_into_b3sum((data, chunk_size) in file_bytes(40_000), cut in any::<prop::sample::Index>()) {
        let layout = Layout::new(data.len() as u64, chunk_size).expect("small file");
        let mut digests = Vec::new();
        for chunk in layout.chunks() {
            let r = layout.range(chunk);
            let bytes = &data[r.start as usize..r.end as usize];
            let whole = chunk_digest(&layout, chunk, bytes).expect("non-empty");
            let at = cut.index(bytes.len() + 1);
            let mut hasher = ChunkHasher::new(&layout, chunk);
            hasher.update(&bytes[..at]);
            hasher.update(&bytes[at..]);
            prop_assert_eq!(hasher.finalize(), Some(whole));
            digests.push(whole);
        }
        let file = file_digest(&layout, &digests);
        prop_assert_eq!(file, Some(Digest::of(&data)));
        prop_assert_eq!(file.map(|d| *d.as_bytes()), Some(*blake3::hash(&data).as_bytes()));
        progress();
    }

    /// A manifest made from random bytes validates, round-trips through the
    /// wire type, and verifies every one of its chunks; `from_file` agrees.
    #[test]
    fn manifests_of_real_bytes_validate((data, chunk_size) in file_bytes(20_000)) {
        let m = manifest_of("f", &data, chunk_size).expect("small file");
        let wire = pb::Manifest::from(&m);
        prop_assert_eq!(Manifest::try_from(wire).ok(), Some(m.clone()));
        for chunk in m.layout().chunks() {
            let r = m.layout().range(chunk);
            prop_assert!(m.verify_chunk(chunk, &data[r.start as usize..r.end as usize]));
        }
        let mut tmp = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut tmp, &data).expect("write");
        let from_file = Manifest::from_file(&tmp, data.len() as u64, m.name().clone(), Some(chunk_size));
        prop_assert_eq!(from_file.ok(), Some(m));
        progress();
    }
}

/// One change to one field of a wire manifest.
#[derive(Debug, Clone)]
enum Mutation {
    Name(String),
    /// Adds this (non-zero) amount to the size, wrapping.
    Size(u64),
    ChunkSize(u32),
    /// Flips bit `bit` of chunk digest `index`.
    FlipChunkDigest {
        index: prop::sample::Index,
        bit: u8,
    },
    ResizeChunkDigest {
        index: prop::sample::Index,
        len: usize,
    },
    DropChunkDigest(prop::sample::Index),
    AddChunkDigest([u8; 32]),
    SwapChunkDigests(prop::sample::Index, prop::sample::Index),
    FlipDigest(u8),
    ResizeDigest(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        name_string()
            .prop_filter("invalid names only", |n| !name_is_valid(n))
            .prop_map(Mutation::Name),
        prop_oneof![
            1u64..5000,
            any::<u64>().prop_filter("non-zero", |d| *d != 0)
        ]
        .prop_map(Mutation::Size),
        prop_oneof![any::<u32>(), (0u32..32).prop_map(|s| 1 << s)].prop_map(Mutation::ChunkSize),
        (any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(index, bit)| Mutation::FlipChunkDigest { index, bit }),
        (
            any::<prop::sample::Index>(),
            prop_oneof![0usize..32, 33usize..80]
        )
            .prop_map(|(index, len)| Mutation::ResizeChunkDigest { index, len }),
        any::<prop::sample::Index>().prop_map(Mutation::DropChunkDigest),
        any::<[u8; 32]>().prop_map(Mutation::AddChunkDigest),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::SwapChunkDigests(a, b)),
        any::<u8>().prop_map(Mutation::FlipDigest),
        prop_oneof![0usize..32, 33usize..80].prop_map(Mutation::ResizeDigest),
    ]
}

/// Applies `mutation`; false if it would not change anything (a swap of two
/// equal digests, an edit of a manifest with no chunk digests).
fn mutate(m: &mut pb::Manifest, mutation: &Mutation) -> bool {
    let flip = |b: &Bytes, bit: u8| {
        let mut v = b.to_vec();
        let at = usize::from(bit / 8) % v.len();
        v[at] ^= 1 << (bit % 8);
        Bytes::from(v)
    };
    let resize = |b: &Bytes, len: usize| {
        let mut v = b.to_vec();
        v.resize(len, 0xa5);
        Bytes::from(v)
    };
    // The digests travel back to back; mutate them one by one, then pack.
    let mut digests: Vec<Bytes> = m
        .chunk_digests
        .chunks(32)
        .map(Bytes::copy_from_slice)
        .collect();
    let n = digests.len();
    match mutation {
        Mutation::Name(name) => m.name = name.clone(),
        Mutation::Size(d) => m.size = m.size.wrapping_add(*d),
        Mutation::ChunkSize(c) if *c != m.chunk_size => m.chunk_size = *c,
        Mutation::FlipChunkDigest { index, bit } if n > 0 => {
            let i = index.index(n);
            digests[i] = flip(&digests[i], *bit);
        }
        Mutation::ResizeChunkDigest { index, len } if n > 0 => {
            let i = index.index(n);
            digests[i] = resize(&digests[i], *len);
        }
        Mutation::DropChunkDigest(index) if n > 0 => {
            digests.remove(index.index(n));
        }
        Mutation::AddChunkDigest(d) => digests.push(Bytes::copy_from_slice(d)),
        Mutation::SwapChunkDigests(a, b) if n > 1 => {
            let (a, b) = (a.index(n), b.index(n));
            if digests[a] == digests[b] {
                return false;
            }
            digests.swap(a, b);
        }
        Mutation::FlipDigest(bit) => m.digest = flip(&m.digest, *bit),
        Mutation::ResizeDigest(len) => m.digest = resize(&m.digest, *len),
        _ => return false,
    }
    m.chunk_digests = digests.concat().into();
    true
}

/// Whether the mutated manifest still tells the truth about `data`: the
/// same bytes, hashed with the layout it now claims, give what it says.
fn truthful(m: &pb::Manifest, data: &[u8]) -> bool {
    let Ok(chunk_size) = ChunkSize::new(u64::from(m.chunk_size)) else {
        return false;
    };
    m.size == data.len() as u64
        && name_is_valid(&m.name)
        && manifest_of(&m.name, data, chunk_size).is_some_and(|t| pb::Manifest::from(&t) == *m)
}

/// Whether `m` differs from the truth only in a size that keeps the chunk
/// count, which chunk digests cannot reveal (see the ignored property below).
fn size_within_last_chunk(m: &pb::Manifest, data: &[u8]) -> bool {
    let Ok(chunk_size) = ChunkSize::new(u64::from(m.chunk_size)) else {
        return false;
    };
    let cs = u64::from(chunk_size.get());
    m.size != data.len() as u64 && m.size.div_ceil(cs) == (data.len() as u64).div_ceil(cs)
}

proptest! {
    #![proptest_config(config(512))]

    /// Any single-field change to a valid manifest is refused, unless the
    /// result still tells the truth (a one-chunk file described with another
    /// chunk size is the same file). Sizes within the last chunk are left to
    /// the property below, which hive cannot meet; what is checked for them
    /// here is that such a manifest can never accept the real last chunk,
    /// nor any other bytes of the claimed length.
    #[test]
    fn single_field_mutations_are_refused((data, chunk_size) in file_bytes(6_000), mutation in mutation()) {
        let good = pb::Manifest::from(&manifest_of("f", &data, chunk_size).expect("small"));
        let mut bad = good.clone();
        if !mutate(&mut bad, &mutation) {
            progress();
            return Ok(());
        }
        let got = Manifest::try_from(bad.clone());
        if size_within_last_chunk(&bad, &data) {
            if let Ok(m) = got {
                let last = m.layout().chunks().next_back().expect("a chunk");
                let r = m.layout().range(last);
                let real = &data[r.start as usize..(r.end as usize).min(data.len())];
                prop_assert!(!m.verify_chunk(last, real));
                let mut padded = real.to_vec();
                padded.resize((r.end - r.start) as usize, 0);
                prop_assert!(!m.verify_chunk(last, &padded));
            }
        } else {
            prop_assert_eq!(got.is_ok(), truthful(&bad, &data), "{:?} gave {:?}", mutation, got);
        }
        progress();
    }

    /// Every wire manifest, however malformed, is converted without panic,
    /// and one that passes is internally consistent.
    #[test]
    fn arbitrary_wire_manifests_never_panic(
        name in name_string(),
        size in file_size(),
        chunk_size in prop_oneof![any::<u32>(), (10u32..=24).prop_map(|s| 1 << s)],
        digests in prop::collection::vec(prop_oneof![
            4 => any::<[u8; 32]>().prop_map(|d| d.to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..40),
        ], 0..40),
        digest in prop::collection::vec(any::<u8>(), 30..34),
    ) {
        let m = pb::Manifest {
            name,
            size,
            chunk_size,
            chunk_digests: digests.concat().into(),
            digest: Bytes::from(digest),
        };
        if let Ok(valid) = Manifest::try_from(m.clone()) {
            prop_assert_eq!(pb::Manifest::from(&valid), m);
            prop_assert_eq!(file_digest(valid.layout(), valid.chunk_digests()), Some(valid.digest()));
        }
        progress();
    }

    /// Random bytes decoded as a wire manifest (what a tracker receives):
    /// either a decode error or a conversion result, never a panic.
    #[test]
    fn random_bytes_as_a_manifest(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = <pb::Manifest as prost::Message>::decode(bytes.as_slice()) {
            let _ = Manifest::try_from(m);
        }
        progress();
    }

    /// The tree combination on any number of arbitrary digests, for any
    /// layout up to the largest: a digest exactly when there is one per chunk.
    #[test]
    fn file_digest_of_arbitrary_digests(
        size in file_size(),
        chunk_size in chunk_size(),
        extra in -2i64..=2,
        seed in any::<u8>(),
    ) {
        let Ok(layout) = Layout::new(size, chunk_size) else {
            progress();
            return Ok(());
        };
        let n = (i64::from(layout.count()) + extra).max(0) as usize;
        let digests: Vec<Digest> = (0..n)
            .map(|i| Digest::from_bytes(&[seed.wrapping_add(i as u8); 32]).expect("32 bytes"))
            .collect();
        let got = file_digest(&layout, &digests);
        prop_assert_eq!(got.is_some(), n == layout.count() as usize);
        progress();
    }
}

proptest! {
    // Known to fail: keep its failures out of tests/proptest-regressions.
    #![proptest_config(Config { failure_persistence: None, ..config(256) })]

    /// The full-strength rule: a manifest whose size is not the size of the
    /// bytes its digests describe is refused. hive cannot check this when
    /// the wrong size keeps the chunk count: a BLAKE3 chaining value does
    /// not reveal the length of the chunk it covers, and the tree's shape
    /// depends only on the chunk count. Such a manifest can never verify its
    /// last chunk (checked above), so no wrong bytes are ever accepted.
    #[test]
    #[ignore = "a size within the last chunk cannot be checked from digests alone (BLAKE3 chaining values do not reveal a chunk's length)"]
    fn sizes_within_the_last_chunk_are_refused((data, chunk_size) in file_bytes(6_000), delta in 1u64..1024) {
        let good = pb::Manifest::from(&manifest_of("f", &data, chunk_size).expect("small"));
        for size in [good.size.wrapping_add(delta), good.size.wrapping_sub(delta)] {
            let bad = pb::Manifest { size, ..good.clone() };
            if size_within_last_chunk(&bad, &data) {
                prop_assert!(Manifest::try_from(bad).is_err(), "size {} accepted for {} bytes", size, data.len());
            }
        }
        progress();
    }
}

/// The wire conversions a handler relies on, on hand-picked extremes.
#[test]
fn wire_extremes() {
    let layout = Layout::new(u64::from(MAX_CHUNKS) << 24, ChunkSize::MAX).expect("largest");
    assert_eq!(layout.count(), MAX_CHUNKS);
    let all = [pb::ChunkRange {
        first: 1,
        last: MAX_CHUNKS,
    }];
    assert!(
        wire::chunk_set("chunks", MAX_CHUNKS, &all)
            .expect("every chunk")
            .is_full()
    );
    let too_many: Vec<pb::ChunkRange> = (0..=MAX_CHUNKS / 2 + 1)
        .map(|_| pb::ChunkRange { first: 1, last: 1 })
        .collect();
    assert!(wire::chunk_set("chunks", MAX_CHUNKS, &too_many).is_err());
    let r: RangeInclusive<u32> = 1..=u32::MAX;
    assert!(ChunkSet::from_ranges(MAX_CHUNKS, [r]).is_err());
    assert!(wire::digest("d", &[0; 31]).is_err());
    assert!(wire::file_name("n", String::new()).is_err());
}
