//! A file's availability strip: each chunk's live holder count. A file has
//! up to 16,384 chunks, so past [`MAX_CELLS`] chunks a cell stands for a
//! run of neighbouring chunks and shows the fewest holders any of them has
//! (the number that matters: the run is only as available as its rarest
//! chunk).

/// Most cells a strip has, whatever the file's size.
pub const MAX_CELLS: usize = 512;

/// One cell: chunks `first..=last` (1-based, as chunks are numbered) and
/// the fewest live holders of any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub first: u32,
    pub last: u32,
    pub holders: u8,
    /// Its count is the file's lowest.
    pub rarest: bool,
}

/// The strip of `counts` (chunk 1 first), at most [`MAX_CELLS`] cells.
pub fn cells(counts: &[u8]) -> Vec<Cell> {
    let n = counts.len();
    let cells = n.min(MAX_CELLS);
    let lowest = counts.iter().copied().min().unwrap_or(0);
    (0..cells)
        .map(|i| {
            // Cell i covers chunks [i*n/cells, (i+1)*n/cells): sizes differ
            // by at most one, and every chunk is in exactly one cell.
            let (start, end) = (i * n / cells, (i + 1) * n / cells);
            let holders = counts[start..end].iter().copied().min().unwrap_or(0);
            Cell {
                first: start as u32 + 1,
                last: end as u32,
                holders,
                rarest: holders == lowest,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_get_a_cell_per_chunk_and_the_rarest_marked() {
        let strip = cells(&[2, 1, 3, 1]);
        let holders: Vec<u8> = strip.iter().map(|c| c.holders).collect();
        assert_eq!(holders, [2, 1, 3, 1]);
        let rarest: Vec<u32> = strip.iter().filter(|c| c.rarest).map(|c| c.first).collect();
        assert_eq!(rarest, [2, 4]);
        assert!(strip.iter().all(|c| c.first == c.last));
        assert!(cells(&[]).is_empty());
    }

    #[test]
    fn large_files_are_bucketed_by_their_rarest_chunk() {
        // 16,384 chunks, all held twice but chunk 1,000 once.
        let mut counts = vec![2u8; 16_384];
        counts[999] = 1;
        let strip = cells(&counts);
        assert_eq!(strip.len(), MAX_CELLS);
        // Every chunk in exactly one cell, in order.
        assert_eq!(strip[0].first, 1);
        assert_eq!(strip.last().unwrap().last, 16_384);
        for pair in strip.windows(2) {
            assert_eq!(pair[0].last + 1, pair[1].first);
        }
        let rare: Vec<&Cell> = strip.iter().filter(|c| c.rarest).collect();
        assert_eq!(rare.len(), 1);
        assert_eq!(rare[0].holders, 1);
        assert!((rare[0].first..=rare[0].last).contains(&1000));
        // Uneven sizes differ by one at most: 1,000 chunks in 512 cells.
        let strip = cells(&vec![1; 1000]);
        let sizes: Vec<u32> = strip.iter().map(|c| c.last - c.first + 1).collect();
        assert_eq!(strip.len(), 512);
        assert!(sizes.iter().all(|&s| s == 1 || s == 2));
        assert_eq!(sizes.iter().sum::<u32>(), 1000);
    }
}
