//! Rendering results: aligned tables for people, JSON for scripts.

use hive::pb::types::ChunkRange;
use indicatif::HumanBytes;
use serde_json::{Value, json};

/// `n` followed by `noun`, with an "s" unless `n` is 1.
pub fn count(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `text` (a name, an address, a message from a daemon) as it is safe to
/// show: control characters, bidi controls and invisible code points as
/// `\u{...}` escapes, so a name cannot reorder or hide what is printed
/// around it (BI-9). JSON output is left as sent: scripts get exact names.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    hive::name::escape_for_display(text)
}

/// Prints rows as left-aligned columns under a header; every cell is
/// [`shown`].
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| shown(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// A holder's chunks (of a file of `chunk_count`) as ranges, whichever form
/// the tracker sent them in; the ranges as sent if the set is malformed.
pub fn holder_ranges(h: &hive::pb::tracker::Holder, chunk_count: u32) -> Vec<ChunkRange> {
    match hive::wire::holder_chunks(chunk_count, &h.chunks, &h.chunk_bitmap) {
        Ok(set) => hive::wire::ranges(&set),
        Err(_) => h.chunks.clone(),
    }
}

/// Wire ranges as users read them: `1-3,7`.
pub fn ranges(r: &[ChunkRange]) -> String {
    if r.is_empty() {
        return "-".into();
    }
    r.iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Wire ranges as users read them, cut to at most `max` columns with a
/// count of them all: `1-3,5-10,… (612 ranges)`.
pub fn ranges_within(r: &[ChunkRange], max: usize) -> String {
    let full = ranges(r);
    if full.chars().count() <= max {
        return full;
    }
    let rest = format!("… ({} ranges)", r.len());
    let mut out = String::new();
    for part in full.split(',') {
        // The part, its comma and the rest must still fit.
        if out.len() + part.len() + 1 + rest.chars().count() > max {
            break;
        }
        out.push_str(part);
        out.push(',');
    }
    out + &rest
}

/// Columns a line of a table may take: $COLUMNS if set, else the width of
/// the terminal on stdout, else 80.
pub fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .or_else(|| {
            rustix::termios::tcgetwinsize(std::io::stdout())
                .ok()
                .map(|w| usize::from(w.ws_col))
        })
        .filter(|&w| w > 0)
        .unwrap_or(80)
}

/// Chunk ranges get at least this many columns, however wide the others are.
const MIN_RANGES_WIDTH: usize = 24;

/// Fills column `col` of each row with its chunk ranges (if it has any),
/// cut so that the table fits [`width`]: a holder of a file fetched in bits
/// may hold hundreds of ranges. `--json` shows them all.
pub fn fill_ranges(
    header: &[&str],
    rows: &mut [Vec<String>],
    col: usize,
    ranges: &[Option<Vec<ChunkRange>>],
) {
    let others: usize = (0..header.len())
        .filter(|&i| i != col)
        .map(|i| {
            let cells = rows.iter().filter_map(|r| r.get(i));
            let widest = cells.map(|c| c.chars().count()).max().unwrap_or(0);
            widest.max(header[i].len()) + 2
        })
        .sum();
    let budget = width().saturating_sub(others).max(MIN_RANGES_WIDTH);
    for (row, r) in rows.iter_mut().zip(ranges) {
        if let Some(r) = r {
            row[col] = ranges_within(r, budget);
        }
    }
}

/// Wire ranges for JSON: `[[1, 3], [7, 7]]`.
pub fn ranges_json(r: &[ChunkRange]) -> Value {
    json!(r.iter().map(|r| [r.first, r.last]).collect::<Vec<_>>())
}

pub use hive_peer::json::digest_hex as hex;

pub fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// Per-chunk holder counts as a one-line summary: how rare the rarest is.
/// `counts` as Locate sends them: a byte per chunk, capped at 255.
pub fn availability(counts: &[u8]) -> String {
    let Some(&min) = counts.iter().min() else {
        return "no chunks".into();
    };
    let missing = counts.iter().filter(|&&c| c == 0).count();
    let max = counts.iter().max().copied().unwrap_or(min);
    // 255 stands for "255 or more".
    let shown = |c: u8| match c {
        u8::MAX => "255 or more".to_owned(),
        c => c.to_string(),
    };
    let holders = |c: u8| match c {
        1 => "1 live holder".to_owned(),
        c => format!("{} live holders", shown(c)),
    };
    match (missing, min == max) {
        (0, true) => format!("every chunk has {}", holders(min)),
        (0, false) => format!("every chunk has {} to {}", shown(min), holders(max)),
        _ => format!("{missing} of {} chunks have no live holder", counts.len()),
    }
}

/// Writes one line of output. Output into a closed pipe (`peerctl files |
/// head -1`) ends peerctl quietly, killed by SIGPIPE as coreutils are (the
/// shell shows 141), instead of `println!`'s panic (exit 101). SIGPIPE stays
/// ignored otherwise, as Rust sets it: h2 writes its frames with plain
/// `writev`, so a connection reset by a daemon must come back as an error
/// (UNAVAILABLE), not kill peerctl.
pub fn line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        die_of_sigpipe();
    }
    eprintln!("peerctl: cannot write the output: {e}");
    std::process::exit(1);
}

fn die_of_sigpipe() -> ! {
    #[cfg(unix)]
    // SAFETY: restores SIGPIPE's default disposition and raises it, which
    // ends the process; nothing runs after it that relies on SIGPIPE
    // being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

/// " (replica 2 of 3)" for a daemon given several tracker replicas.
pub fn replica_of(tracker: &str, trackers: &[String]) -> String {
    match trackers.iter().position(|t| t == tracker) {
        Some(i) if trackers.len() > 1 => format!(" (replica {} of {})", i + 1, trackers.len()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{availability, ranges_within, shown};
    use hive::pb::types::ChunkRange;

    /// Chunks 1, 3, 5, ... : `n` ranges of one chunk each.
    fn odd(n: u32) -> Vec<ChunkRange> {
        (0..n)
            .map(|i| ChunkRange {
                first: 2 * i + 1,
                last: 2 * i + 1,
            })
            .collect()
    }

    #[test]
    fn names_are_shown_with_what_deceives_escaped() {
        assert_eq!(shown("café"), "café");
        assert_eq!(shown("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(shown("a\u{2028}b\u{200b}"), "a\\u{2028}b\\u{200b}");
        assert_eq!(shown("bell\u{7}"), "bell\\u{0007}");
    }

    #[test]
    fn long_range_lists_are_cut_to_the_width() {
        assert_eq!(ranges_within(&odd(3), 80), "1,3,5");
        assert_eq!(ranges_within(&odd(3), 5), "1,3,5");
        // 1,3,5,7,9,... is 2 columns a range; the tail "… (612 ranges)" 14.
        let cut = ranges_within(&odd(612), 30);
        assert_eq!(cut, "1,3,5,7,9,11,13,… (612 ranges)");
        assert!(cut.chars().count() <= 30);
        // Too narrow for any range: just the count.
        assert_eq!(ranges_within(&odd(612), 10), "… (612 ranges)");
    }

    #[test]
    fn availability_reads_as_a_sentence() {
        assert_eq!(availability(&[]), "no chunks");
        assert_eq!(availability(&[1, 1]), "every chunk has 1 live holder");
        assert_eq!(availability(&[1, 3]), "every chunk has 1 to 3 live holders");
        assert_eq!(
            availability(&[2, 255]),
            "every chunk has 2 to 255 or more live holders"
        );
        assert_eq!(
            availability(&[0, 2, 0]),
            "2 of 3 chunks have no live holder"
        );
    }
}
