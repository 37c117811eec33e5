//! Short, fixed-style text for numbers in the TUI: sizes (`640 KiB`), rates (`1.25 MiB/s`,
//! `12.3k/s`), durations (`2m05s`) and growth verdicts (`▲ growing 640 KiB/s`).
//!
//! Sizes use binary units with three significant digits, so columns stay narrow and a glance
//! compares them: `512 B`, `1.50 KiB`, `12.3 MiB`, `640 KiB`.

use crate::model::growth::{Growth, GrowthClass};

/// `bytes` as `512 B`, `1.50 KiB`, `12.3 MiB`, `640 KiB`, `2.00 GiB`.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.5 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", three_digits(value), UNITS[unit])
}

/// A byte rate: `640 KiB/s`; negative rates keep their sign.
pub fn byte_rate(per_s: f64) -> String {
    if !per_s.is_finite() {
        return "? B/s".to_string();
    }
    let sign = if per_s < 0.0 { "-" } else { "" };
    format!("{sign}{}/s", bytes(per_s.abs().round() as u64))
}

/// An event or allocation rate: `0.5/s`, `12/s`, `12.3k/s`, `4.56M/s`.
pub fn rate(per_s: f64) -> String {
    if !per_s.is_finite() || per_s < 0.0 {
        return "-".to_string();
    }
    if per_s < 10.0 {
        if per_s == 0.0 {
            return "0/s".to_string();
        }
        return format!("{per_s:.1}/s");
    }
    format!("{}/s", count(per_s))
}

/// A count: `999`, `12.3k`, `4.56M`, `7.89G`.
pub fn count(n: f64) -> String {
    if n < 999.5 {
        return format!("{}", n.round() as u64);
    }
    let mut value = n / 1000.0;
    for unit in ["k", "M", "G"] {
        if value < 999.5 {
            return format!("{}{unit}", three_digits(value));
        }
        value /= 1000.0;
    }
    format!("{}T", three_digits(value))
}

/// A duration: `850ms`, `12.5s`, `2m05s`, `3h12m`, `2d04h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_string();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// A lifetime given in milliseconds (the unit of [`LifetimeSummary`](crate::model::hist)).
pub fn millis(ms: u64) -> String {
    duration(ms as f64 / 1000.0)
}

/// `part` as a percentage of `total`: `12.3%`, `0.1%`, `100%`; `-` when `total` is 0.
pub fn percent(part: u64, total: u64) -> String {
    if total == 0 {
        return "-".to_string();
    }
    let pct = part as f64 * 100.0 / total as f64;
    if pct >= 99.95 {
        format!("{:.0}%", pct.min(999.0))
    } else {
        format!("{pct:.1}%")
    }
}

/// The marker of a growth class: `▲`, `■`, `▼` or `·`.
pub fn growth_marker(class: GrowthClass) -> &'static str {
    match class {
        GrowthClass::Growing => "▲",
        GrowthClass::Bounded => "■",
        GrowthClass::Shrinking => "▼",
        GrowthClass::Unknown => "·",
    }
}

/// A growth verdict as a word with its marker and, when moving, the rate:
/// `▲ growing 640 KiB/s`, `■ bounded`, `▼ shrinking 12.0 KiB/s`, `· unknown`.
pub fn growth(g: &Growth) -> String {
    let marker = growth_marker(g.class);
    match g.class {
        GrowthClass::Growing => format!("{marker} growing {}", byte_rate(g.bytes_per_s.abs())),
        GrowthClass::Shrinking => format!("{marker} shrinking {}", byte_rate(g.bytes_per_s.abs())),
        GrowthClass::Bounded => format!("{marker} bounded"),
        GrowthClass::Unknown => format!("{marker} unknown"),
    }
}

/// Formats `v` (in [1, 1024)) with three significant digits.
fn three_digits(v: f64) -> String {
    if v < 9.995 {
        format!("{v:.2}")
    } else if v < 99.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::growth::Growth;

    #[test]
    fn sizes_have_three_significant_digits() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(640 * 1024), "640 KiB");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1.00 MiB");
        assert_eq!(bytes(2 << 30), "2.00 GiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
    }

    #[test]
    fn rates_and_counts() {
        assert_eq!(byte_rate(640.0 * 1024.0), "640 KiB/s");
        assert_eq!(byte_rate(-2048.0), "-2.00 KiB/s");
        assert_eq!(byte_rate(f64::NAN), "? B/s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(0.25), "0.2/s");
        assert_eq!(rate(12.0), "12/s");
        assert_eq!(rate(12_345.0), "12.3k/s");
        assert_eq!(rate(4_560_000.0), "4.56M/s");
        assert_eq!(rate(-1.0), "-");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1_000.0), "1.00k");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.85), "850ms");
        assert_eq!(duration(12.54), "12.5s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(3.0 * 3600.0 + 12.0 * 60.0), "3h12m");
        assert_eq!(duration(2.0 * 86400.0 + 4.0 * 3600.0), "2d04h");
        assert_eq!(millis(1500), "1.5s");
        assert_eq!(duration(f64::INFINITY), "-");
    }

    #[test]
    fn percents() {
        assert_eq!(percent(1, 0), "-");
        assert_eq!(percent(1, 8), "12.5%");
        assert_eq!(percent(8, 8), "100%");
    }

    #[test]
    fn growth_words() {
        let mut g = Growth::unknown();
        assert_eq!(growth(&g), "· unknown");
        g.class = GrowthClass::Growing;
        g.bytes_per_s = 640.0 * 1024.0;
        assert_eq!(growth(&g), "▲ growing 640 KiB/s");
        g.class = GrowthClass::Shrinking;
        g.bytes_per_s = -12.0 * 1024.0;
        assert_eq!(growth(&g), "▼ shrinking 12.0 KiB/s");
        g.class = GrowthClass::Bounded;
        assert_eq!(growth(&g), "■ bounded");
    }
}
