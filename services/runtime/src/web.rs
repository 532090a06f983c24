//! Presentation shared by the daemons' web pages.

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `3.0 MiB` (powers of 1024,
/// one decimal above bytes).
pub fn byte_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::byte_size;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(byte_size(0), "0 B");
        assert_eq!(byte_size(1023), "1023 B");
        assert_eq!(byte_size(1024), "1.0 KiB");
        assert_eq!(byte_size(1536), "1.5 KiB");
        assert_eq!(byte_size(3 << 20), "3.0 MiB");
        assert_eq!(byte_size(5 << 40), "5.0 TiB");
        assert_eq!(byte_size(u64::MAX), "16777216.0 TiB");
    }
}
