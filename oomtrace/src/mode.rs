//! Tracing modes (`--mode exact|sample[=BYTES]|growth`): what each counts, how it is written on
//! the command line, in recordings and in reports, and the arithmetic of sampling.
//!
//! - `exact`: every allocator call; figures are exact requested bytes.
//! - `sample[=BYTES]`: the kernel side samples allocations by bytes (a Poisson process with one
//!   point every BYTES on average, 512 KiB by default); a sampled block of `s` bytes stands for
//!   `s / (1 - exp(-s/BYTES))` bytes — an unbiased estimate — and for `1 / (1 - exp(-s/BYTES))`
//!   blocks. Direct mmap/munmap stay exact.
//! - `growth`: no allocator probes at all. User page faults attribute **resident** memory to the
//!   stack that touched it; unmaps, brk shrinks and `madvise(DONTNEED/FREE)` take pages away.

use std::fmt;

use oomtrace_common::{MODE_EXACT, MODE_GROWTH, MODE_SAMPLE};
use serde::Serialize;

/// The default mean bytes between samples.
pub const DEFAULT_SAMPLE_RATE: u64 = 512 * 1024;
/// The largest accepted sample rate (the kernel side's draw arithmetic needs ≤ 2^30).
pub const MAX_SAMPLE_RATE: u64 = 1 << 30;
/// Entries of the kernel side's exponential quantile table (`EXP_BINS + 1`).
const EXP_BINS: usize = 1024;
/// Prefix of the mode's token in a recording's header meta string.
const META_PREFIX: &str = "mode=";

/// How allocations are traced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every allocator call.
    #[default]
    Exact,
    /// Byte-based Poisson sampling, one sample every `rate` bytes on average.
    Sample {
        /// Mean bytes between samples.
        rate: u64,
    },
    /// Page faults and unmaps only: resident growth by stack.
    Growth,
}

impl Mode {
    /// Parses `exact`, `sample`, `sample=BYTES` (4096, 512K, 1M, 1MiB…) or `growth`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "exact" => return Ok(Self::Exact),
            "growth" => return Ok(Self::Growth),
            "sample" => {
                return Ok(Self::Sample {
                    rate: DEFAULT_SAMPLE_RATE,
                });
            }
            _ => {}
        }
        let Some(bytes) = s.strip_prefix("sample=") else {
            return Err(format!(
                "unknown mode {s:?} (use exact, sample, sample=BYTES such as sample=512K, or growth)"
            ));
        };
        let rate = crate::oom::sizes::parse_size(bytes)
            .map_err(|e| format!("invalid sample rate {bytes:?}: {e}"))?;
        if rate > MAX_SAMPLE_RATE {
            return Err(format!(
                "sample rate {bytes} is above the largest, 1G (one sample per GiB)"
            ));
        }
        Ok(Self::Sample { rate })
    }

    /// The mode's name: `exact`, `sample` or `growth`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Sample { .. } => "sample",
            Self::Growth => "growth",
        }
    }

    /// The sample rate in bytes (sample mode only).
    pub fn sample_rate(self) -> Option<u64> {
        match self {
            Self::Sample { rate } => Some(rate),
            _ => None,
        }
    }

    /// The kernel side's `ConfigKey::Mode` word.
    pub fn config_word(self) -> u64 {
        match self {
            Self::Exact => MODE_EXACT,
            Self::Sample { .. } => MODE_SAMPLE,
            Self::Growth => MODE_GROWTH,
        }
    }

    /// Whether allocator uprobes are attached (not in growth mode).
    pub fn probes_allocator(self) -> bool {
        self != Self::Growth
    }

    /// The token stored in a recording's header meta string (`mode=sample:524288`).
    pub fn meta_token(self) -> String {
        match self {
            Self::Sample { rate } => format!("{META_PREFIX}sample:{rate}"),
            other => format!("{META_PREFIX}{}", other.name()),
        }
    }

    /// The mode a recording's header meta string names; `exact` when it names none (recordings
    /// made before modes existed).
    pub fn from_meta(meta: &str) -> Self {
        let Some(token) = meta
            .split_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix(META_PREFIX))
        else {
            return Self::Exact;
        };
        match token.split_once(':') {
            Some(("sample", rate)) => rate
                .parse()
                .ok()
                .filter(|r| (1..=MAX_SAMPLE_RATE).contains(r))
                .map_or(Self::Exact, |rate| Self::Sample { rate }),
            _ if token == "growth" => Self::Growth,
            _ => Self::Exact,
        }
    }

    /// What the report's per-stack byte figures mean in this mode, as a report states it.
    pub fn report(self) -> ModeReport {
        let (stack_bytes, description) = match self {
            Self::Exact => ("requested", "exact requested bytes of every allocator call"),
            Self::Sample { .. } => (
                "estimated_requested",
                "unbiased estimates from byte-sampled allocations (each sampled block of s bytes \
                 weighs s / (1 - exp(-s/rate))); direct mmap/munmap are exact",
            ),
            Self::Growth => (
                "resident",
                "resident bytes faulted in by each stack and not unmapped since \
                 (munmap, brk shrink, madvise DONTNEED/FREE); block counts are pages",
            ),
        };
        ModeReport {
            name: self.name(),
            sample_rate_bytes: self.sample_rate(),
            stack_bytes,
            description,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sample { rate } => {
                write!(f, "sample (~{})", crate::units::human_bytes_with(*rate, 0))
            }
            other => f.write_str(other.name()),
        }
    }
}

/// A session label with the mode appended when it is not the default (the TUI header shows it).
pub fn label(label: String, mode: Mode) -> String {
    match mode {
        Mode::Exact => label,
        other if label.is_empty() => format!("[mode {other}]"),
        other => format!("{label} [mode {other}]"),
    }
}

/// The report's top-level `"mode"` object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModeReport {
    /// `exact`, `sample` or `growth`.
    pub name: &'static str,
    /// Mean bytes between samples (sample mode), else null.
    pub sample_rate_bytes: Option<u64>,
    /// What per-stack and per-process byte figures are: `requested` (exact),
    /// `estimated_requested` (sample) or `resident` (growth).
    pub stack_bytes: &'static str,
    /// The same, in a sentence.
    pub description: &'static str,
}

/// The text report's line under its header saying what the figures are (none for exact).
pub fn text_line(m: &ModeReport) -> Option<String> {
    match m.name {
        "sample" => Some(format!(
            "mode: sample — byte and block figures are {} (direct mmap/munmap exact)",
            sample_qualifier(m.sample_rate_bytes.unwrap_or(DEFAULT_SAMPLE_RATE))
        )),
        "growth" => Some(
            "mode: growth — RSS growth by stack: resident bytes faulted in and not unmapped \
             (blocks are pages); no allocator probes"
                .to_owned(),
        ),
        _ => None,
    }
}

/// What the text report's stack table is sorted by (none: the default wording).
pub fn text_table_title(m: &ModeReport) -> Option<String> {
    match m.name {
        "sample" => Some(format!(
            "estimated outstanding bytes ({})",
            sample_qualifier(m.sample_rate_bytes.unwrap_or(DEFAULT_SAMPLE_RATE))
        )),
        "growth" => Some("RSS growth (resident bytes faulted in and not unmapped)".to_owned()),
        _ => None,
    }
}

fn sample_qualifier(rate: u64) -> String {
    format!(
        "estimated, sampled every ~{}",
        crate::units::human_bytes_with(rate, 0)
    )
}

/// The probability that a block of `size` bytes is sampled at `rate`.
pub fn sample_probability(size: u64, rate: u64) -> f64 {
    if rate == 0 {
        return 1.0;
    }
    -(-(size as f64) / rate as f64).exp_m1()
}

/// What one sampled block of `size` bytes stands for: (estimated bytes, estimated blocks).
pub fn sampled_weight(size: u64, rate: u64) -> (f64, f64) {
    let p = sample_probability(size, rate);
    if p <= 0.0 {
        return (0.0, 0.0);
    }
    (size as f64 / p, 1.0 / p)
}

/// Rounds `x` up or down to a whole number with probability given by its fraction, decided by
/// `seed` (so a replay of the same events rounds the same way): unbiased, and deterministic.
pub fn round_unbiased(x: f64, seed: u64) -> u64 {
    let floor = x.floor();
    let frac = x - floor;
    // splitmix64 of the seed, as a uniform number in [0, 1).
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    floor as u64 + u64::from(u < frac)
}

/// The kernel side's exponential quantile table for `rate`: entry i is `rate · -ln(1 - i/N)`
/// for i < N; the last closes the tail bin at `entry[N-1] + 2·rate`, so a uniform draw in it
/// has the tail's conditional mean.
pub fn exp_table(rate: u64) -> Vec<u64> {
    let r = rate as f64;
    let mut t: Vec<u64> = (0..EXP_BINS)
        .map(|i| (r * -(1.0 - i as f64 / EXP_BINS as f64).ln()).round() as u64)
        .collect();
    let last = *t.last().unwrap_or(&0);
    t.push(last + 2 * rate);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!(Mode::parse("exact"), Ok(Mode::Exact));
        assert_eq!(Mode::parse("growth"), Ok(Mode::Growth));
        assert_eq!(Mode::parse("sample"), Ok(Mode::Sample { rate: 512 * 1024 }));
        for (s, rate) in [
            ("sample=4096", 4096),
            ("sample=512K", 512 * 1024),
            ("sample=1M", 1 << 20),
            ("sample=1MiB", 1 << 20),
        ] {
            assert_eq!(Mode::parse(s), Ok(Mode::Sample { rate }), "{s}");
        }
        for bad in [
            "",
            "fast",
            "sample=",
            "sample=0",
            "sample=-1",
            "sample=2G",
            "exact=1",
        ] {
            let err = Mode::parse(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn meta_round_trips() {
        for m in [
            Mode::Exact,
            Mode::Growth,
            Mode::Sample { rate: 4096 },
            Mode::Sample { rate: 512 * 1024 },
        ] {
            let meta = format!("oomtrace Run([\"ls\"]) {}", m.meta_token());
            assert_eq!(Mode::from_meta(&meta), m);
        }
        assert_eq!(Mode::from_meta("oomtrace All"), Mode::Exact);
        assert_eq!(Mode::from_meta("x mode=sample:0"), Mode::Exact);
    }

    #[test]
    fn weights_are_inverse_probabilities() {
        // Tiny blocks stand for ~rate bytes each; huge blocks for themselves.
        let (b, n) = sampled_weight(64, 512 * 1024);
        assert!((b - (512.0 * 1024.0 + 32.0)).abs() < 1.0, "{b}");
        assert!((n - b / 64.0).abs() < 1e-6);
        let (b, n) = sampled_weight(64 << 20, 512 * 1024);
        assert_eq!(b, (64 << 20) as f64);
        assert_eq!(n, 1.0);
        // At the rate itself: P = 1 - 1/e.
        let p = sample_probability(4096, 4096);
        assert!((p - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn unbiased_rounding_averages_to_the_value() {
        let n = 100_000u64;
        let sum: u64 = (0..n).map(|i| round_unbiased(1.25, i)).sum();
        let mean = sum as f64 / n as f64;
        assert!((mean - 1.25).abs() < 0.01, "{mean}");
        assert_eq!(round_unbiased(3.0, 7), 3);
    }

    #[test]
    fn mode_events_round_trip_through_the_codec() {
        use crate::record::{EventEncoder, SiteTable, decode_events};
        use oomtrace_common::{EventKind, MemEvent};
        let base = MemEvent {
            kind: EventKind::Alloc as u16,
            alloc_fn: 0,
            tgid: 42,
            tid: 43,
            stack_id: 5,
            ts_ns: 1_000,
            addr: 0x5555_0000_1000,
            size: 64,
            old_addr: 0,
            call_site: 0x5555_0000_0123,
            aux: 512 * 1024,
        };
        let events = [
            // A sampled allocation carries its rate in aux.
            base,
            MemEvent {
                kind: EventKind::Realloc as u16,
                old_addr: base.addr,
                addr: base.addr + 0x1000,
                ts_ns: 2_000,
                ..base
            },
            // A fault (kind 21: the escape code path) and a madvise-marked unmap.
            MemEvent {
                kind: EventKind::Fault as u16,
                alloc_fn: 9,
                addr: 0x7f00_0000_0000,
                size: 4096,
                aux: 0,
                ts_ns: 3_000,
                ..base
            },
            MemEvent {
                kind: EventKind::Munmap as u16,
                alloc_fn: 9,
                stack_id: -1,
                call_site: 0,
                addr: 0x7f00_0000_0000,
                size: 8192,
                aux: 4,
                ts_ns: 4_000,
                ..base
            },
        ];
        let mut enc = EventEncoder::new();
        for e in &events {
            enc.push(e);
        }
        let mut buf = bytes::BytesMut::new();
        enc.take_chunk(&mut buf);
        let (mut sites, mut out) = (SiteTable::new(), Vec::new());
        decode_events(&mut &buf[..], &mut sites, &mut out).unwrap();
        assert_eq!(out, events);
    }

    #[test]
    fn table_mean_is_the_rate() {
        // The kernel draws bin i uniformly, then uniformly between entries i and i+1.
        let rate = 512 * 1024;
        let t = exp_table(rate);
        assert_eq!(t.len(), EXP_BINS + 1);
        assert_eq!(t[0], 0);
        let mean: f64 = t
            .windows(2)
            .map(|w| (w[0] + w[1]) as f64 / 2.0)
            .sum::<f64>()
            / EXP_BINS as f64;
        let rel = (mean - rate as f64).abs() / rate as f64;
        assert!(rel < 0.002, "table mean {mean} vs rate {rate}");
    }
}
