//! Byte counts for people: one formatter, shared by every layer that prints sizes.

/// Human-readable byte count in B, KiB, MiB or GiB, two decimals.
pub fn human_bytes(n: u64) -> String {
    human_bytes_with(n, 2)
}

/// Human-readable byte count with `decimals` decimals (`512 B`, `1.5 KiB`, `2.00 MiB`).
pub fn human_bytes_with(n: u64, decimals: usize) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.decimals$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 20), "3.00 MiB");
    }
}
