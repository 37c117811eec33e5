//! Parsing of byte sizes (`--memory-max`, `--budget`) and percentages (`--warn-at`).
//!
//! # Sizes
//!
//! A size is a number followed by an optional unit, case-insensitive, optionally separated by
//! spaces. **Every unit is binary** (powers of 1024), whichever spelling is used, as in
//! `docker --memory` and `ulimit`:
//!
//! | unit | multiplier |
//! |---|---|
//! | none, `B` | 1 |
//! | `K`, `KB`, `KiB` | 1024 |
//! | `M`, `MB`, `MiB` | 1024² |
//! | `G`, `GB`, `GiB` | 1024³ |
//! | `T`, `TB`, `TiB` | 1024⁴ |
//!
//! A fraction is accepted with a unit of at least `K` (`1.5G` = 1610612736, `0.5K` = 512) and
//! rounded down to a whole byte; a plain byte count must be whole (`1.5` and `1.5B` are errors).
//! Rejected: empty input, a sign (`-1`, `+1`), zero (no command runs in 0 bytes), exponents,
//! separators (`1_000`, `1,000`), hex, unknown units, and anything above `u64::MAX` bytes.
//!
//! ```text
//! parse_size("64M")    == Ok(67108864)
//! parse_size("512MiB") == Ok(536870912)
//! parse_size("1.5g")   == Ok(1610612736)
//! parse_size("-1")     == Err(SizeError::Negative { .. })
//! ```

use std::fmt;

/// Why a size string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeError {
    /// The input was empty or only whitespace.
    Empty,
    /// The input starts with `-`.
    Negative {
        /// The input as given.
        input: String,
    },
    /// The number part is missing or malformed.
    BadNumber {
        /// The input as given.
        input: String,
    },
    /// The unit is not one of B, K, M, G, T (with optional `B`/`iB`).
    UnknownUnit {
        /// The input as given.
        input: String,
        /// The unit as written.
        unit: String,
    },
    /// A fraction of a byte (`1.5` or `1.5B`).
    FractionalBytes {
        /// The input as given.
        input: String,
    },
    /// The size is zero.
    Zero {
        /// The input as given.
        input: String,
    },
    /// The size does not fit in 64 bits.
    Overflow {
        /// The input as given.
        input: String,
    },
}

const EXAMPLES: &str = "e.g. 4096, 64K, 512MiB, 2G, 1.5GiB (units are binary: M = MiB)";

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(
                f,
                "empty size: give a number of bytes or a unit, {EXAMPLES}"
            ),
            Self::Negative { input } => {
                write!(
                    f,
                    "invalid size {input:?}: sizes cannot be negative; {EXAMPLES}"
                )
            }
            Self::BadNumber { input } => write!(
                f,
                "invalid size {input:?}: expected a plain decimal number with an optional unit, \
                 {EXAMPLES}"
            ),
            Self::UnknownUnit { input, unit } => write!(
                f,
                "invalid size {input:?}: unknown unit {unit:?}; use B, K, M, G or T \
                 (optionally KB/KiB, ...), {EXAMPLES}"
            ),
            Self::FractionalBytes { input } => write!(
                f,
                "invalid size {input:?}: a fraction needs a unit of at least K (1.5K), \
                 bytes must be whole"
            ),
            Self::Zero { input } => {
                write!(f, "invalid size {input:?}: the size must be greater than 0")
            }
            Self::Overflow { input } => {
                write!(f, "invalid size {input:?}: too large (more than 16 EiB)")
            }
        }
    }
}

impl std::error::Error for SizeError {}

/// The longest fraction accepted; more digits cannot change a result rounded down to bytes
/// for any unit up to TiB (1024⁴ < 10¹³), and keeps the arithmetic inside `u128`.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a size such as `64M`, `2G`, `512MiB`, `1GiB` or `4096` into bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let input = s.to_string();
    let s = s.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative { input });
    }
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..num_end], s[num_end..].trim_start());
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    let frac_ok = frac_part.is_none_or(|f| !f.is_empty() && !f.contains('.'));
    if int_part.is_empty() || !frac_ok {
        return Err(SizeError::BadNumber { input });
    }
    let multiplier = unit_multiplier(unit).ok_or_else(|| SizeError::UnknownUnit {
        input: input.clone(),
        unit: unit.to_string(),
    })?;
    let overflow = || SizeError::Overflow {
        input: input.clone(),
    };
    // The integer part alone may already exceed u128; more than 39 digits surely does.
    let int: u128 = int_part.parse().map_err(|_| overflow())?;
    let mut bytes = int.checked_mul(multiplier).ok_or_else(overflow)?;
    if let Some(frac) = frac_part {
        if multiplier == 1 {
            return Err(SizeError::FractionalBytes { input });
        }
        let digits = &frac[..frac.len().min(MAX_FRACTION_DIGITS)];
        let numerator: u128 = digits.parse().map_err(|_| SizeError::BadNumber {
            input: input.clone(),
        })?;
        let denominator = 10u128.pow(digits.len() as u32);
        // numerator < 10^18 and multiplier ≤ 2^40: the product fits in u128.
        bytes = bytes
            .checked_add(numerator * multiplier / denominator)
            .ok_or_else(overflow)?;
    }
    let bytes = u64::try_from(bytes).map_err(|_| overflow())?;
    if bytes == 0 {
        return Err(SizeError::Zero { input });
    }
    Ok(bytes)
}

fn unit_multiplier(unit: &str) -> Option<u128> {
    let unit = unit.to_ascii_lowercase();
    let power = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 1,
        "m" | "mb" | "mib" => 2,
        "g" | "gb" | "gib" => 3,
        "t" | "tb" | "tib" => 4,
        _ => return None,
    };
    Some(1024u128.pow(power))
}

/// Formats bytes for messages: `4096 B`, `64.00 MiB`, `1.50 GiB` (binary units).
pub fn format_size(bytes: u64) -> String {
    crate::report::human_bytes(bytes)
}

/// [`parse_size`] for clap's `value_parser`: the error as its one-line message.
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// Parses `--max-leaked`: a size as [`parse_size_arg`], or 0 (no leak allowed at all).
pub fn parse_limit_arg(s: &str) -> Result<u64, String> {
    match parse_size(s) {
        Err(SizeError::Zero { .. }) => Ok(0),
        other => other.map_err(|e| e.to_string()),
    }
}

/// Parses a percentage for `--warn-at`: `80`, `80%`, `12.5%`, within 0..=100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim_end();
    let well_formed = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let value = well_formed
        .then(|| number.parse::<f64>().ok())
        .flatten()
        .filter(|v| (0.0..=100.0).contains(v));
    value.ok_or_else(|| {
        format!("invalid percentage {s:?}: expected a number from 0 to 100, e.g. 80 or 12.5%")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: u64 = 1024;
    const MI: u64 = 1024 * KI;
    const GI: u64 = 1024 * MI;
    const TI: u64 = 1024 * GI;

    #[test]
    fn valid_sizes() {
        let table: &[(&str, u64)] = &[
            ("4096", 4096),
            ("1", 1),
            ("4096B", 4096),
            ("4096b", 4096),
            ("64K", 64 * KI),
            ("64k", 64 * KI),
            ("64KB", 64 * KI),
            ("64KiB", 64 * KI),
            ("64kib", 64 * KI),
            ("64M", 67_108_864),
            ("64m", 67_108_864),
            ("64mb", 67_108_864),
            ("64MB", 67_108_864),
            ("512MiB", 536_870_912),
            ("2G", 2_147_483_648),
            ("1GiB", 1_073_741_824),
            ("1gb", GI),
            ("3T", 3 * TI),
            ("1TiB", TI),
            ("1.5G", 1_610_612_736),
            ("1.5GiB", 1_610_612_736),
            ("0.5K", 512),
            ("0.5M", 512 * KI),
            ("1.0M", MI),
            ("0.001K", 1), // 1.024 bytes, rounded down
            ("2.25m", 2 * MI + MI / 4),
            ("007M", 7 * MI),
            (" 64M ", 64 * MI),
            ("512 MiB", 512 * MI),
            ("18446744073709551615", u64::MAX),
            ("16777215.999999T", 18_446_744_073_708_452_104),
        ];
        for &(input, want) in table {
            assert_eq!(parse_size(input), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn invalid_sizes() {
        use SizeError as E;
        let s = String::from;
        let table: Vec<(&str, SizeError)> = vec![
            ("", E::Empty),
            ("   ", E::Empty),
            ("-1", E::Negative { input: s("-1") }),
            ("-64M", E::Negative { input: s("-64M") }),
            ("+1", E::BadNumber { input: s("+1") }),
            ("M", E::BadNumber { input: s("M") }),
            (".5G", E::BadNumber { input: s(".5G") }),
            ("1.G", E::BadNumber { input: s("1.G") }),
            ("1.2.3M", E::BadNumber { input: s("1.2.3M") }),
            ("0", E::Zero { input: s("0") }),
            ("0M", E::Zero { input: s("0M") }),
            (
                "0.0001K",
                E::Zero {
                    input: s("0.0001K"),
                },
            ),
            ("1.5", E::FractionalBytes { input: s("1.5") }),
            ("1.5B", E::FractionalBytes { input: s("1.5B") }),
            (
                "18446744073709551616",
                E::Overflow {
                    input: s("18446744073709551616"),
                },
            ),
            (
                "16E",
                E::UnknownUnit {
                    input: s("16E"),
                    unit: s("E"),
                },
            ),
            (
                "16777216T",
                E::Overflow {
                    input: s("16777216T"),
                },
            ),
            (
                "99999999999999999999999999999999999999999",
                E::Overflow {
                    input: s("99999999999999999999999999999999999999999"),
                },
            ),
            (
                "64X",
                E::UnknownUnit {
                    input: s("64X"),
                    unit: s("X"),
                },
            ),
            (
                "64 M B",
                E::UnknownUnit {
                    input: s("64 M B"),
                    unit: s("M B"),
                },
            ),
            (
                "1e9",
                E::UnknownUnit {
                    input: s("1e9"),
                    unit: s("e9"),
                },
            ),
            (
                "0x10",
                E::UnknownUnit {
                    input: s("0x10"),
                    unit: s("x10"),
                },
            ),
            (
                "1_000",
                E::UnknownUnit {
                    input: s("1_000"),
                    unit: s("_000"),
                },
            ),
            (
                "1,000",
                E::UnknownUnit {
                    input: s("1,000"),
                    unit: s(",000"),
                },
            ),
            (
                "64MiBs",
                E::UnknownUnit {
                    input: s("64MiBs"),
                    unit: s("MiBs"),
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse_size(input), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn size_errors_read_as_one_line() {
        let cases = [
            (
                "",
                "empty size: give a number of bytes or a unit, e.g. 4096, 64K",
            ),
            ("-1", "invalid size \"-1\": sizes cannot be negative"),
            (
                "1.5",
                "invalid size \"1.5\": a fraction needs a unit of at least K",
            ),
            (
                "64X",
                "invalid size \"64X\": unknown unit \"X\"; use B, K, M, G or T",
            ),
            ("0", "invalid size \"0\": the size must be greater than 0"),
            (
                "99999999999999999999",
                "invalid size \"99999999999999999999\": too large",
            ),
            (
                "abc",
                "invalid size \"abc\": expected a plain decimal number",
            ),
        ];
        for (input, prefix) in cases {
            let msg = parse_size_arg(input).unwrap_err();
            assert!(msg.starts_with(prefix), "input {input:?}: got {msg:?}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }

    #[test]
    fn formatted_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.00 KiB");
        assert_eq!(format_size(64 * MI), "64.00 MiB");
        assert_eq!(format_size(1_610_612_736), "1.50 GiB");
        assert_eq!(format_size(u64::MAX), "16.00 EiB");
        for bytes in [KI, 64 * MI, 3 * GI, 2 * TI] {
            let text = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn percentages() {
        for (input, want) in [
            ("80", 80.0),
            ("80%", 80.0),
            ("12.5%", 12.5),
            ("0", 0.0),
            ("100%", 100.0),
            (" 90 % ", 90.0),
            ("7.", 7.0),
            (".5", 0.5),
        ] {
            assert_eq!(parse_percent(input), Ok(want), "input {input:?}");
        }
        for input in [
            "", "%", "-1", "100.1", "101%", "abc", "1e2", "nan", "inf", "8 0", "1.2.3", ".", "80%%",
        ] {
            let err = parse_percent(input).unwrap_err();
            assert!(
                err.contains("expected a number from 0 to 100"),
                "{input:?}: {err}"
            );
        }
    }
}
