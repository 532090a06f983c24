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

/// Prints rows as left-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
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
        println!("{}", out.trim_end());
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

/// Wire ranges for JSON: `[[1, 3], [7, 7]]`.
pub fn ranges_json(r: &[ChunkRange]) -> Value {
    json!(r.iter().map(|r| [r.first, r.last]).collect::<Vec<_>>())
}

/// A digest's hex, from wire bytes.
pub fn hex(d: &[u8]) -> String {
    hive::Digest::from_bytes(d)
        .map(|d| d.to_hex())
        .unwrap_or_default()
}

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

#[cfg(test)]
mod tests {
    use super::availability;

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
