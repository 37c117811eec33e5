//! Allocation-size and block-lifetime distributions per stack.
//!
//! Both wrap an [`hdrhistogram::Histogram<u64>`] with fixed bounds and two
//! significant digits (values are bucketed to within 1 %), with auto-resize
//! off so memory is fixed at creation:
//!
//! * [`SizeHist`]: bytes in `[0, 2^48]`, 5 504 counters = 44 032 bytes of heap.
//! * [`LifetimeHist`]: milliseconds in `[0, 86 400 000]` (one day),
//!   2 688 counters = 21 504 bytes of heap.
//!
//! Recording never panics: values above the bound are clamped to it. Percentiles are reported as the lowest value of their
//! bucket (so common sizes such as 64 or 4096 come back exactly) and never
//! above the exact maximum, which is tracked separately.
//!
//! Short-lived churn shows up as a low lifetime p50 with many records; see
//! [`LifetimeHist::fraction_at_most`].
//!
//! Example:
//! ```ignore
//! let mut h = SizeHist::new();
//! h.record(64);
//! assert_eq!(h.summary().p50, 64);
//! ```

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest allocation size tracked, in bytes (256 TiB); larger sizes are clamped.
pub const SIZE_MAX_BYTES: u64 = 1 << 48;

/// Longest lifetime tracked, in milliseconds (one day); longer ones are clamped.
pub const LIFETIME_MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// Significant decimal digits kept by both histograms.
const SIGFIG: u8 = 2;

/// A fixed-range histogram with an exact maximum. Shared core of
/// [`SizeHist`] and [`LifetimeHist`].
#[derive(Clone, Debug)]
struct Bounded {
    /// Bucketed counts; `None` only if hdrhistogram refused the bounds,
    /// which the constants above rule out (tested).
    hist: Option<Histogram<u64>>,
    /// Upper bound; recorded values are clamped to it.
    high: u64,
    /// Exact largest recorded (clamped) value.
    max: u64,
}

impl Bounded {
    /// An empty histogram for values in `[0, high]`.
    fn new(high: u64) -> Self {
        let hist = Histogram::new_with_bounds(1, high.max(2), SIGFIG)
            .ok()
            .map(|mut h| {
                h.auto(false);
                h
            });
        Bounded { hist, high, max: 0 }
    }

    /// Records `n` occurrences of one value, clamped to `[0, high]`.
    fn record_n(&mut self, v: u64, n: u64) {
        let v = v.min(self.high);
        if let Some(h) = &mut self.hist {
            h.saturating_record_n(v, n);
        }
        self.max = self.max.max(v);
    }

    /// Records one value, clamped to `[0, high]`.
    fn record(&mut self, v: u64) {
        let v = v.min(self.high);
        if let Some(h) = &mut self.hist {
            h.saturating_record(v);
        }
        self.max = self.max.max(v);
    }

    /// Adds all of `other`'s records.
    fn merge(&mut self, other: &Bounded) {
        let (Some(dst), Some(src)) = (&mut self.hist, &other.hist) else {
            return;
        };
        if dst.add(src).is_err() {
            // Only possible if the bounds differed; re-record value by value.
            for it in src.iter_recorded() {
                dst.saturating_record_n(it.value_iterated_to().min(self.high), it.count_at_value());
            }
        }
        self.max = self.max.max(other.max.min(self.high));
    }

    /// Number of recorded values.
    fn len(&self) -> u64 {
        self.hist.as_ref().map_or(0, Histogram::len)
    }

    /// Value at quantile `q` in `[0, 1]`: the lowest value of its bucket,
    /// capped at the exact maximum; 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        match &self.hist {
            Some(h) if !h.is_empty() => h.lowest_equivalent(h.value_at_quantile(q)).min(self.max),
            _ => 0,
        }
    }

    /// Fraction of records `<= v`; 0 when empty.
    fn fraction_at_most(&self, v: u64) -> f64 {
        match &self.hist {
            Some(h) if !h.is_empty() => {
                let v = v.min(self.high);
                h.count_between(0, v) as f64 / h.len() as f64
            }
            _ => 0.0,
        }
    }

    /// Heap bytes held by the counters.
    fn heap_bytes(&self) -> usize {
        self.hist
            .as_ref()
            .map_or(0, |h| h.distinct_values() * std::mem::size_of::<u64>())
    }
}

/// Percentiles of allocation sizes in bytes (report key `"sizes"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SizeSummary {
    /// Median size.
    pub p50: u64,
    /// 90th percentile size.
    pub p90: u64,
    /// 99th percentile size.
    pub p99: u64,
    /// Largest size seen (exact, up to [`SIZE_MAX_BYTES`]).
    pub max: u64,
}

/// Percentiles of block lifetimes in milliseconds (report key `"lifetime_ms"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LifetimeSummary {
    /// Median lifetime.
    pub p50: u64,
    /// 99th percentile lifetime.
    pub p99: u64,
}

/// Distribution of allocation sizes for one stack.
#[derive(Clone, Debug)]
pub struct SizeHist(Bounded);

impl Default for SizeHist {
    fn default() -> Self {
        Self::new()
    }
}

impl SizeHist {
    /// An empty size histogram covering `[0, SIZE_MAX_BYTES]`.
    pub fn new() -> Self {
        SizeHist(Bounded::new(SIZE_MAX_BYTES))
    }

    /// Records one allocation of `bytes` (clamped to [`SIZE_MAX_BYTES`]).
    pub fn record(&mut self, bytes: u64) {
        self.0.record(bytes);
    }

    /// Adds all allocations recorded in `other`.
    pub fn merge(&mut self, other: &SizeHist) {
        self.0.merge(&other.0);
    }

    /// Number of allocations recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// p50/p90/p99/max; all zero when empty.
    pub fn summary(&self) -> SizeSummary {
        SizeSummary {
            p50: self.0.quantile(0.50),
            p90: self.0.quantile(0.90),
            p99: self.0.quantile(0.99),
            max: self.0.max,
        }
    }

    /// Heap bytes held (fixed at creation).
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

/// Distribution of block lifetimes (allocation to free) for one stack.
#[derive(Clone, Debug)]
pub struct LifetimeHist(Bounded);

impl Default for LifetimeHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LifetimeHist {
    /// An empty lifetime histogram covering `[0, LIFETIME_MAX_MS]`.
    pub fn new() -> Self {
        LifetimeHist(Bounded::new(LIFETIME_MAX_MS))
    }

    /// Records one freed block that lived `ms` milliseconds (clamped to a day).
    pub fn record(&mut self, ms: u64) {
        self.0.record(ms);
    }

    /// Adds all lifetimes recorded in `other`.
    pub fn merge(&mut self, other: &LifetimeHist) {
        self.0.merge(&other.0);
    }

    /// Number of lifetimes recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// p50/p99; both zero when empty.
    pub fn summary(&self) -> LifetimeSummary {
        LifetimeSummary {
            p50: self.0.quantile(0.50),
            p99: self.0.quantile(0.99),
        }
    }

    /// Fraction of blocks that lived at most `ms` milliseconds (short-lived
    /// churn); 0 when empty.
    pub fn fraction_at_most(&self, ms: u64) -> f64 {
        self.0.fraction_at_most(ms)
    }

    /// Heap bytes held (fixed at creation).
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_accepted() {
        assert!(SizeHist::new().0.hist.is_some());
        assert!(LifetimeHist::new().0.hist.is_some());
    }

    #[test]
    fn empty_summaries_are_zero() {
        let s = SizeHist::new();
        assert!(s.is_empty());
        assert_eq!(s.summary(), SizeSummary::default());
        let l = LifetimeHist::new();
        assert_eq!(l.summary(), LifetimeSummary::default());
        assert_eq!(l.fraction_at_most(10), 0.0);
    }

    #[test]
    fn exact_sizes_come_back_exact() {
        let mut h = SizeHist::new();
        for _ in 0..50 {
            h.record(64);
        }
        for _ in 0..40 {
            h.record(4096);
        }
        for _ in 0..9 {
            h.record(1 << 20);
        }
        h.record(123_456_789);
        let s = h.summary();
        assert_eq!(
            s,
            SizeSummary {
                p50: 64,
                p90: 4096,
                p99: 1 << 20,
                max: 123_456_789
            }
        );
    }

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = SizeHist::new();
        for v in 1..=10_000u64 {
            h.record(v * 37);
        }
        let s = h.summary();
        for (got, want) in [
            (s.p50, 5_000 * 37),
            (s.p90, 9_000 * 37),
            (s.p99, 9_900 * 37),
        ] {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 0.01, "got {got} want {want}");
        }
        assert_eq!(s.max, 370_000);
    }

    #[test]
    fn out_of_range_is_clamped_not_panicking() {
        let mut h = SizeHist::new();
        h.record(0);
        h.record(u64::MAX);
        h.record(SIZE_MAX_BYTES + 1);
        assert_eq!(h.len(), 3);
        assert_eq!(h.summary().max, SIZE_MAX_BYTES);
        assert!(h.summary().p99 <= SIZE_MAX_BYTES);
        let mut l = LifetimeHist::new();
        l.record(u64::MAX);
        l.record(0);
        assert!(l.summary().p99 <= LIFETIME_MAX_MS);
        assert!(l.summary().p99 >= LIFETIME_MAX_MS * 99 / 100);
    }

    #[test]
    fn merge_adds_counts_and_max() {
        let mut a = SizeHist::new();
        let mut b = SizeHist::new();
        for _ in 0..10 {
            a.record(32);
        }
        for _ in 0..30 {
            b.record(2048);
        }
        b.record(1 << 30);
        a.merge(&b);
        assert_eq!(a.len(), 41);
        let s = a.summary();
        assert_eq!((s.p50, s.max), (2048, 1 << 30));
        let mut l = LifetimeHist::new();
        let mut m = LifetimeHist::new();
        l.record(1);
        m.record(1000);
        m.record(1000);
        l.merge(&m);
        assert_eq!(
            l.summary(),
            LifetimeSummary {
                p50: 1000,
                p99: 1000
            }
        );
    }

    #[test]
    fn short_lived_churn_fraction() {
        let mut l = LifetimeHist::new();
        for _ in 0..900 {
            l.record(0);
        }
        for _ in 0..100 {
            l.record(60_000);
        }
        assert_eq!(l.summary().p50, 0);
        assert!((l.fraction_at_most(1) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn json_keys_match_report_contract() {
        let s = SizeSummary {
            p50: 1,
            p90: 2,
            p99: 3,
            max: 4,
        };
        let l = LifetimeSummary { p50: 5, p99: 6 };
        assert_eq!(
            serde_json::to_string(&s).ok().as_deref(),
            Some(r#"{"p50":1,"p90":2,"p99":3,"max":4}"#)
        );
        assert_eq!(
            serde_json::to_string(&l).ok().as_deref(),
            Some(r#"{"p50":5,"p99":6}"#)
        );
    }

    #[test]
    fn memory_per_histogram() {
        // The numbers quoted in the module docs and BENCHMARKS.md.
        let (s, l) = (
            SizeHist::new().heap_bytes(),
            LifetimeHist::new().heap_bytes(),
        );
        println!("SizeHist heap {s} B, LifetimeHist heap {l} B");
        assert_eq!((s, l), (44_032, 21_504));
    }
}

/// Distinct sizes kept exactly per stack before switching to a [`SizeHist`].
const EXACT_SIZES: usize = 16;

/// Allocation sizes of one stack: exact while it has few distinct sizes (the usual case: a call
/// site allocates one or a few sizes), a histogram past that. Small until it needs more.
#[derive(Clone, Debug, Default)]
pub struct SizeDist {
    exact: Vec<(u64, u64)>,
    hist: Option<Box<SizeHist>>,
}

impl SizeDist {
    /// Records one allocation of `bytes`.
    pub fn record(&mut self, bytes: u64) {
        if let Some(h) = &mut self.hist {
            h.record(bytes);
            return;
        }
        if let Some(e) = self.exact.iter_mut().find(|(size, _)| *size == bytes) {
            e.1 += 1;
            return;
        }
        if self.exact.len() < EXACT_SIZES {
            self.exact.push((bytes, 1));
            return;
        }
        let mut h = SizeHist::new();
        for (size, n) in self.exact.drain(..) {
            h.0.record_n(size, n);
        }
        h.record(bytes);
        self.hist = Some(Box::new(h));
    }

    /// Percentiles, exact while few sizes were seen; `None` before any allocation.
    pub fn summary(&self) -> Option<SizeSummary> {
        if let Some(h) = &self.hist {
            return Some(h.summary());
        }
        let mut sizes = self.exact.clone();
        if sizes.is_empty() {
            return None;
        }
        sizes.sort_unstable();
        let total: u64 = sizes.iter().map(|&(_, n)| n).sum();
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            sizes
                .iter()
                .find(|&&(_, n)| {
                    seen += n;
                    seen >= rank
                })
                .map_or(0, |&(size, _)| size)
        };
        Some(SizeSummary {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: sizes.last().map_or(0, |&(size, _)| size),
        })
    }
}

#[cfg(test)]
mod size_dist_tests {
    use super::*;

    #[test]
    fn exact_percentiles_for_few_sizes() {
        let mut d = SizeDist::default();
        for _ in 0..90 {
            d.record(64);
        }
        for _ in 0..10 {
            d.record(1000);
        }
        let s = d.summary().unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (64, 64, 1000, 1000));
    }

    #[test]
    fn many_sizes_fall_back_to_the_histogram() {
        let mut d = SizeDist::default();
        for i in 1..=1000u64 {
            d.record(i * 8);
        }
        let s = d.summary().unwrap();
        assert_eq!(s.max, 8000);
        assert!((3900..=4100).contains(&s.p50), "{s:?}");
    }
}
