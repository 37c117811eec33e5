//! Bounded time series of one sampled quantity (outstanding bytes of a stack,
//! a process's RSS, thread count, ...).
//!
//! Memory is bounded no matter how long the trace runs:
//!
//! * the most recent `recent` samples (default [`DEFAULT_RECENT`] = 600, ten
//!   minutes at the default 1 s tick) are kept at full resolution in a ring;
//! * samples that fall out of the ring are folded into history buckets of
//!   `stride` consecutive samples. A bucket keeps the minimum and the maximum
//!   together with their timestamps, so peaks and troughs survive (the last
//!   value is always in the ring). When the history reaches `history_cap`
//!   buckets (`max(8, recent / 3)`, 200 by default), neighbouring pairs are
//!   merged and the stride doubles: downsampling by two, repeated as needed.
//!
//! A run samples fast while it is young (see `timeline`): [`Series::coarsen`] merges those dense
//! points, once they are old, into one per coarse step, as a coarse tick would have recorded
//! them: for a series of high-water marks (heap, stacks) the highest value, for a series of
//! readings (RSS, threads, descriptors) the latest; so old and new history weigh alike in a fit.
//!
//! Nothing is ever dropped entirely: the oldest sample is still represented
//! (coarsely), and [`Series::max`] is the maximum of everything ever pushed.
//! [`Series::points`] yields at most [`Series::max_points`] points (1002 with
//! the defaults) and [`Series::heap_bytes`] is at most 16 000 bytes with the
//! defaults (see the `memory_bound_at_full_capacity` test).
//!
//! Example:
//! ```ignore
//! let mut s = Series::new();
//! for t in 0..10 { s.push(t as f64, 1024.0 * t as f64); }
//! assert_eq!(s.last(), Some((9.0, 9216.0)));
//! ```

use std::collections::VecDeque;

/// Full-resolution samples kept by [`Series::new`] (10 min at a 1 s tick).
pub const DEFAULT_RECENT: usize = 600;

/// Smallest accepted ring size; smaller requests are raised to this.
const MIN_RECENT: usize = 4;

/// Smallest number of history buckets (kept even so pairs merge cleanly).
const MIN_HISTORY: usize = 8;

/// How [`Series::coarsen`] merges the points of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The highest value (a series of high-water marks since the previous tick).
    Max,
    /// The latest value (a series of instantaneous readings).
    Last,
}

/// One downsampled stretch of history: its lowest and highest sample.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    /// Time of the lowest sample.
    t_min: f64,
    /// Lowest sample value.
    min: f64,
    /// Time of the highest sample.
    t_max: f64,
    /// Highest sample value.
    max: f64,
}

impl Bucket {
    /// A bucket holding a single sample.
    fn single(t: f64, v: f64) -> Self {
        Bucket {
            t_min: t,
            min: v,
            t_max: t,
            max: v,
        }
    }

    /// Folds a later sample into the bucket. Ties keep the earlier time for
    /// the minimum and the later time for the maximum.
    fn add(&mut self, t: f64, v: f64) {
        if v < self.min {
            self.min = v;
            self.t_min = t;
        }
        if v >= self.max {
            self.max = v;
            self.t_max = t;
        }
    }

    /// Merges a later, adjacent bucket into this one.
    fn merge(&mut self, later: &Bucket) {
        if later.min < self.min {
            self.min = later.min;
            self.t_min = later.t_min;
        }
        if later.max >= self.max {
            self.max = later.max;
            self.t_max = later.t_max;
        }
    }

    /// The bucket's points in time order: one if min and max are the same
    /// sample, two otherwise.
    fn points(&self) -> [Option<(f64, f64)>; 2] {
        let lo = (self.t_min, self.min);
        let hi = (self.t_max, self.max);
        if self.t_min == self.t_max {
            [Some(hi), None]
        } else if self.t_min < self.t_max {
            [Some(lo), Some(hi)]
        } else {
            [Some(hi), Some(lo)]
        }
    }

    /// Number of points [`Bucket::points`] yields.
    fn point_count(&self) -> usize {
        if self.t_min == self.t_max { 1 } else { 2 }
    }
}

/// A time series with a full-resolution recent ring and downsampled history.
#[derive(Clone, Debug)]
pub struct Series {
    /// Most recent samples, oldest first, at most `recent_cap`.
    recent: VecDeque<(f64, f64)>,
    /// Capacity of the ring.
    recent_cap: usize,
    /// Downsampled history, oldest first, at most `history_cap` buckets.
    history: Vec<Bucket>,
    /// Maximum number of history buckets (even).
    history_cap: usize,
    /// Bucket being filled from samples leaving the ring.
    pending: Option<Bucket>,
    /// Samples folded into `pending` so far.
    pending_count: u64,
    /// Samples per history bucket.
    stride: u64,
    /// Largest value ever pushed.
    max: Option<f64>,
    /// Points at or before this time are coarse already.
    coarse_until: f64,
}

impl Default for Series {
    fn default() -> Self {
        Self::new()
    }
}

impl Series {
    /// A series keeping [`DEFAULT_RECENT`] samples at full resolution.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_RECENT)
    }

    /// A series keeping `recent` samples (at least 4) at full resolution and
    /// `max(8, recent / 3)` (rounded up to even) history buckets.
    pub fn with_capacity(recent: usize) -> Self {
        let recent_cap = recent.max(MIN_RECENT);
        let history_cap = (recent_cap / 3).max(MIN_HISTORY).next_multiple_of(2);
        Series {
            recent: VecDeque::new(),
            recent_cap,
            history: Vec::new(),
            history_cap,
            pending: None,
            pending_count: 0,
            stride: 1,
            max: None,
            coarse_until: f64::NEG_INFINITY,
        }
    }

    /// Appends a sample. Samples with a non-finite time or value, or a time
    /// not after the last sample's, are ignored.
    pub fn push(&mut self, t_s: f64, value: f64) {
        if !t_s.is_finite() || !value.is_finite() {
            return;
        }
        if let Some((last_t, _)) = self.recent.back()
            && t_s <= *last_t
        {
            return;
        }
        if self.recent.len() >= self.recent_cap {
            if let Some((t, v)) = self.recent.pop_front() {
                self.fold_into_history(t, v);
            }
        } else if self.recent.len() == self.recent.capacity() {
            // Grow geometrically but never past the ring size, so a full
            // ring holds exactly `recent_cap` slots.
            let want = (self.recent.len() * 2).clamp(MIN_RECENT, self.recent_cap);
            self.recent.reserve_exact(want - self.recent.len());
        }
        self.recent.push_back((t_s, value));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }

    /// Merges the points up to `anchor` (the newest, the tick just sampled) into one per `step`
    /// seconds, counted back from the anchor (buckets `(anchor - (k + 1) step, anchor - k step]`,
    /// so the merged points fall a whole step apart and the anchor stays the newest): each
    /// bucket becomes its latest time and, by `merge`, its highest or its latest value. Points
    /// merged once are left alone after.
    pub fn coarsen(&mut self, anchor: f64, step: f64, merge: Merge) {
        if step.is_nan() || step <= 0.0 || !anchor.is_finite() {
            return;
        }
        let start = self.recent.partition_point(|p| p.0 <= self.coarse_until);
        let end = self.recent.partition_point(|p| p.0 <= anchor);
        if end <= start {
            return;
        }
        let mut merged: Vec<(f64, f64)> = Vec::new();
        let mut key = i64::MIN;
        for &(t, v) in self.recent.range(start..end) {
            let k = ((anchor - t) / step).floor() as i64;
            match merged.last_mut() {
                Some(last) if k == key => {
                    *last = match merge {
                        Merge::Max => (t, last.1.max(v)),
                        Merge::Last => (t, v),
                    }
                }
                _ => merged.push((t, v)),
            }
            key = k;
        }
        self.coarse_until = anchor;
        if merged.len() == end - start {
            return; // Coarse already.
        }
        let tail: Vec<(f64, f64)> = self.recent.drain(start..).skip(end - start).collect();
        self.recent.extend(merged);
        self.recent.extend(tail);
    }

    /// Adds a sample that left the ring to the pending bucket, completing
    /// and (when needed) compacting the history.
    fn fold_into_history(&mut self, t: f64, v: f64) {
        match &mut self.pending {
            Some(b) => b.add(t, v),
            None => self.pending = Some(Bucket::single(t, v)),
        }
        self.pending_count += 1;
        if self.pending_count < self.stride {
            return;
        }
        if let Some(b) = self.pending.take() {
            if self.history.len() == self.history.capacity() {
                let want = (self.history.len() * 2).clamp(MIN_HISTORY, self.history_cap);
                self.history
                    .reserve_exact(want.saturating_sub(self.history.len()).max(1));
            }
            self.history.push(b);
        }
        self.pending_count = 0;
        if self.history.len() >= self.history_cap {
            self.halve_history();
        }
    }

    /// Merges neighbouring history buckets pairwise and doubles the stride.
    fn halve_history(&mut self) {
        let n = self.history.len();
        for i in 0..n.div_ceil(2) {
            let mut b = self.history[2 * i];
            if let Some(later) = self.history.get(2 * i + 1) {
                b.merge(later);
            }
            self.history[i] = b;
        }
        self.history.truncate(n.div_ceil(2));
        self.stride = self.stride.saturating_mul(2);
    }

    /// All retained points `(t_s, value)`, oldest first. History buckets
    /// contribute their minimum and maximum in time order.
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.history
            .iter()
            .chain(self.pending.iter())
            .flat_map(|b| b.points().into_iter().flatten())
            .chain(self.recent.iter().copied())
    }

    /// The most recent sample.
    pub fn last(&self) -> Option<(f64, f64)> {
        self.recent.back().copied()
    }

    /// The largest value ever pushed (downsampling keeps every maximum).
    pub fn max(&self) -> Option<f64> {
        self.max
    }

    /// Number of points [`Series::points`] yields.
    pub fn len(&self) -> usize {
        let older: usize = self
            .history
            .iter()
            .chain(self.pending.iter())
            .map(Bucket::point_count)
            .sum();
        older + self.recent.len()
    }

    /// True when nothing has been pushed.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Upper bound on [`Series::len`] for this series' capacities.
    pub fn max_points(&self) -> usize {
        self.recent_cap + 2 * (self.history_cap + 1)
    }

    /// Heap memory held by the series, in bytes (excluding `size_of::<Series>()`).
    pub fn heap_bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<(f64, f64)>()
            + self.history.capacity() * std::mem::size_of::<Bucket>()
    }
}

/// Deterministic synthetic series for the growth classifier's tests: leaks
/// and bounded shapes (cache, batch buffer, oscillations) under seeded noise.
#[cfg(test)]
pub(crate) mod synth {
    use super::Series;

    /// Bytes per KiB.
    pub const KIB: f64 = 1024.0;
    /// Bytes per MiB.
    pub const MIB: f64 = 1024.0 * 1024.0;

    /// Seeded noise from a 64-bit linear congruential generator.
    pub struct Noise(u64);

    impl Noise {
        /// A generator for `seed`.
        pub fn new(seed: u64) -> Self {
            Noise(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xDEAD_BEEF)
        }
        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 32) as f64 / 4_294_967_296.0
        }
        /// Uniform in [-a, a).
        pub fn pm(&mut self, a: f64) -> f64 {
            (self.unit() * 2.0 - 1.0) * a
        }
        /// Normal with standard deviation `sd` (Box–Muller).
        pub fn normal(&mut self, sd: f64) -> f64 {
            let (u1, u2) = (self.unit().max(1e-12), self.unit());
            sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    /// `f(t)` sampled at `hz` for `secs` seconds (`secs * hz` samples from 0).
    pub fn sample(hz: f64, secs: f64, mut f: impl FnMut(f64) -> f64) -> Series {
        if hz <= 0.0 {
            return scheduled(secs, f);
        }
        let mut s = Series::new();
        for i in 0..(secs * hz).round() as usize {
            let t = i as f64 / hz;
            s.push(t, f(t));
        }
        s
    }

    /// `f(t)` sampled on the session's schedule for `secs` seconds: every 0.1 s for the first
    /// 10 s, then every second, the dense points merged once the 10 s are over (as the
    /// timeline does).
    pub fn scheduled(secs: f64, mut f: impl FnMut(f64) -> f64) -> Series {
        let mut s = Series::new();
        let mut t = 0.0;
        while t < secs - 1e-9 {
            s.push(t, f(t));
            if t >= 10.0 {
                // These are readings, not high-water marks.
                s.coarsen(t, 1.0, super::Merge::Last);
            }
            t += if t < 10.0 - 1e-9 { 0.1 } else { 1.0 };
            t = (t * 10.0).round() / 10.0;
        }
        s
    }

    /// Steady leak of `rate` under uniform ±`churn`, on 16 MiB.
    pub fn leak(seed: u64, hz: f64, secs: f64, rate: f64, churn: f64) -> Series {
        let mut n = Noise::new(seed);
        sample(hz, secs, |t| 16.0 * MIB + rate * t + n.pm(churn))
    }

    /// Names of the shapes of [`bounded`].
    pub const BOUNDED: [&str; 6] = ["flat+gauss", "flat+churn", "lru", "sawtooth", "sine", "ar1"];

    /// (sample rate, seconds) of the false-positive sweeps; a rate of 0 is the session's
    /// schedule ([`scheduled`]: 10 Hz for 10 s, then 1 Hz).
    pub const RUNS: [(f64, f64); 7] = [
        (1.0, 60.0),
        (5.0, 60.0),
        (1.0, 15.0),
        (0.0, 2.0),
        (0.0, 5.0),
        (0.0, 15.0),
        (0.0, 60.0),
    ];

    /// Bounded shapes with noise, `kind` indexing [`BOUNDED`]. Time constants
    /// scale with the window so the bound shows inside it (a cache still
    /// filling, or one slow swing, is growth as far as any data can tell).
    pub fn bounded(kind: usize, seed: u64, hz: f64, secs: f64) -> Series {
        let mut n = Noise::new(seed);
        // The rate of the series the schedule leaves (10 Hz, or 1 Hz once merged), for the
        // shapes' time constants.
        let rate = match hz {
            _ if hz > 0.0 => hz,
            _ if secs < 10.0 => 10.0,
            _ => 1.0,
        };
        let u = n.unit();
        match kind {
            // 64 MiB with 1.5 % Gaussian noise.
            0 => sample(hz, secs, |_| 64.0 * MIB + n.normal(MIB)),
            // 8 MiB under ±2 MiB uniform churn.
            1 => sample(hz, secs, |_| 8.0 * MIB + n.pm(2.0 * MIB)),
            // LRU cache: fills in the first 5-30 % of the window, then stays
            // at its 32 MiB cap with evictions of up to 5 %.
            2 => {
                let fill = secs * (0.05 + 0.25 * u);
                sample(hz, secs, |t| match t < fill {
                    true => 32.0 * MIB * t / fill + n.normal(0.32 * MIB),
                    false => 32.0 * MIB * (1.0 - 0.05 * n.unit()),
                })
            }
            // Batch buffer filling to 16 MiB and freeing all, 3-15 cycles per
            // window (at least 4 samples each), 1 % noise.
            3 => {
                let cycles = 3.0 + ((rate * secs / 4.0).min(15.0) - 3.0).max(0.0) * u;
                let (period, phase) = (secs / cycles, n.unit() * secs);
                sample(hz, secs, |t| {
                    16.0 * MIB * ((t + phase) % period) / period + n.normal(0.16 * MIB).abs()
                })
            }
            // ±8 MiB sine, 2-6 cycles per window, plus noise.
            4 => {
                let (period, phase) = (secs / (2.0 + 4.0 * u), n.unit() * secs);
                sample(hz, secs, |t| {
                    let w = std::f64::consts::TAU * (t + phase) / period;
                    48.0 * MIB + 8.0 * MIB * w.sin() + n.normal(0.2 * MIB)
                })
            }
            // Mean-reverting wander: AR(1), sd 1 MiB, correlation time 1/10
            // or 1/30 of the window.
            _ => {
                let a = (-1.0 / (rate * secs * if u < 0.5 { 0.1 } else { 1.0 / 30.0 })).exp();
                let mut x = 0.0;
                sample(hz, secs, |_| {
                    x = a * x + n.normal(MIB * (1.0 - a * a).sqrt());
                    100.0 * MIB + x
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_series() {
        let s = Series::new();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert_eq!(s.last(), None);
        assert_eq!(s.max(), None);
        assert_eq!(s.points().count(), 0);
        assert_eq!(s.heap_bytes(), 0);
    }

    #[test]
    fn keeps_recent_at_full_resolution() {
        let mut s = Series::with_capacity(10);
        for i in 0..10 {
            s.push(i as f64, (i * i) as f64);
        }
        let pts: Vec<_> = s.points().collect();
        assert_eq!(pts.len(), 10);
        assert_eq!(pts[3], (3.0, 9.0));
        assert_eq!(s.last(), Some((9.0, 81.0)));
        assert_eq!(s.max(), Some(81.0));
    }

    #[test]
    fn ignores_bad_samples() {
        let mut s = Series::new();
        s.push(1.0, 5.0);
        s.push(1.0, 6.0); // same time
        s.push(0.5, 7.0); // earlier
        s.push(2.0, f64::NAN);
        s.push(f64::INFINITY, 1.0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.last(), Some((1.0, 5.0)));
    }

    #[test]
    fn million_points_stay_bounded_and_ordered() {
        let mut s = Series::new();
        let n = 1_000_000u64;
        let peak_at = 123_457u64;
        let trough_at = 777_777u64;
        for i in 0..n {
            let v = match i {
                _ if i == peak_at => 1e12,
                _ if i == trough_at => -1e12,
                _ => (i % 1000) as f64,
            };
            s.push(i as f64, v);
            if i % 4096 == 0 {
                assert!(s.len() <= s.max_points());
            }
        }
        assert!(s.len() <= s.max_points());
        assert!(s.max_points() <= 1024);
        assert!(s.heap_bytes() <= 16_000, "heap {}", s.heap_bytes());
        assert_eq!(s.max(), Some(1e12));
        let pts: Vec<_> = s.points().collect();
        assert_eq!(pts.len(), s.len());
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0), "not oldest first");
        let max_pt = pts
            .iter()
            .copied()
            .fold((0.0, f64::MIN), |a, p| if p.1 > a.1 { p } else { a });
        assert_eq!(max_pt, (peak_at as f64, 1e12));
        assert!(pts.contains(&(trough_at as f64, -1e12)));
        assert_eq!(pts[0].0, 0.0, "oldest sample still represented");
        assert_eq!(s.last(), Some(((n - 1) as f64, ((n - 1) % 1000) as f64)));
        // The last DEFAULT_RECENT points are the raw recent samples.
        let tail = &pts[pts.len() - DEFAULT_RECENT..];
        assert_eq!(tail[0].0, (n - DEFAULT_RECENT as u64) as f64);
    }

    #[test]
    fn memory_bound_at_full_capacity() {
        // The number quoted for "memory per stack" in BENCHMARKS.md.
        let mut s = Series::new();
        for i in 0..100_000 {
            s.push(i as f64, i as f64);
        }
        let heap = s.heap_bytes();
        let total = heap + std::mem::size_of::<Series>();
        println!(
            "Series at full capacity: heap {heap} B + inline {} B = {total} B, {} points",
            std::mem::size_of::<Series>(),
            s.len()
        );
        assert_eq!(heap, 600 * 16 + 200 * 32);
        assert!(total <= 16_200);
    }

    #[test]
    fn small_capacity_still_works() {
        let mut s = Series::with_capacity(0);
        for i in 0..1000 {
            s.push(i as f64, -(i as f64));
        }
        assert!(s.len() <= s.max_points());
        assert_eq!(s.max(), Some(0.0));
        let pts: Vec<_> = s.points().collect();
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(pts.last(), Some(&(999.0, -999.0)));
    }

    #[test]
    fn coarsen_merges_dense_points_once_a_step_apart() {
        let mut s = Series::new();
        for i in 0..150 {
            s.push(f64::from(i) / 10.0, f64::from(i % 7));
        }
        // Up to 10.0: one point per second counted back from it, at 0.0, 1.0, ..., 10.0, each
        // the highest of its second; 10.1 .. 14.9 stay dense.
        s.coarsen(10.0, 1.0, Merge::Max);
        let pts: Vec<_> = s.points().collect();
        assert_eq!(pts.len(), 11 + 49);
        assert_eq!(pts[0], (0.0, 0.0));
        assert_eq!(pts[1], (1.0, 6.0));
        assert_eq!(pts[10], (10.0, 6.0));
        assert_eq!(pts[11], (10.1, f64::from(101 % 7)));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        s.coarsen(10.5, 1.0, Merge::Max);
        assert_eq!(s.len(), 11 + 1 + 44);
        // Merged points are left alone.
        s.coarsen(10.5, 1.0, Merge::Max);
        assert_eq!(s.len(), 56);
        // Readings keep their latest value.
        s.coarsen(12.0, 1.0, Merge::Last);
        let pts: Vec<_> = s.points().collect();
        assert_eq!(pts.len(), 56 - 15 + 2);
        assert_eq!(pts[12], (11.0, f64::from(110 % 7)));
        assert_eq!(pts[13], (12.0, f64::from(120 % 7)));
        assert_eq!(s.last(), Some((14.9, f64::from(149 % 7))));
    }

    #[test]
    fn history_keeps_envelope_of_sawtooth() {
        // A sawtooth 0..=99 repeated: every history bucket must still span
        // the full band once buckets cover several teeth.
        let mut s = Series::with_capacity(30);
        for i in 0..20_000u32 {
            s.push(f64::from(i), f64::from(i % 100));
        }
        let (lo, hi) = s.points().fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| {
            (lo.min(v), hi.max(v))
        });
        assert_eq!((lo, hi), (0.0, 99.0));
    }
}
