//! Growth classifier: is a series (a stack's outstanding bytes, a process's
//! RSS, its thread count, ...) growing without bound, bounded, or shrinking?
//!
//! A snapshot cannot tell a leak from a warm cache or a batch buffer; the
//! shape of the recent history can. [`classify`] looks at the last
//! [`GrowthConfig::window_s`] seconds of a [`Series`] and answers with a
//! [`Growth`]: the class, a robust rate in units/s, a confidence in [0, 1]
//! and, for growing series, how long the growth has lasted.
//!
//! How it decides (all steps are robust to outliers and deterministic):
//!
//! 1. **Trend.** Theil–Sen slope `b` (median of pairwise slopes, at most
//!    `max_pairs` pairs, picked by a fixed-seed generator) and the residual
//!    noise `sigma` (1.4826 × median absolute residual, never below a noise
//!    floor). The slope's standard error is inflated by the residuals' lag-1
//!    autocorrelation `rho` (effective sample size `n (1-rho)/(1+rho)`), so
//!    slow wander and sawtooth teeth do not count as independent evidence.
//!    A trend needs `z = b / se >= min_z` **and** a net rise over the window
//!    of at least `min_rise_to_band` × the residual band (5th–95th
//!    percentile): the series must climb out of its own band of fluctuation.
//! 2. **Sustained.** A trend is only `growing` while it still makes new highs
//!    and has not stopped:
//!    * the last `tail_frac` of the window makes a new high above everything
//!      before it (by `new_high_margin` × sigma): a cache or batch buffer that
//!      refills to the same cap makes none;
//!    * the last sixth of the window still reaches within `drop_tol` × sigma
//!      of the window's maximum (not freed since the peak);
//!    * the tail's own Theil–Sen slope is not confidently (`stop_z` standard
//!      errors) below `stop_ratio` × `b`: a rise that flattened into a
//!      plateau is `bounded`.
//! 3. The same test on the negated series gives `shrinking`. Everything else
//!    with enough data is `bounded`; too few points or too short a span is
//!    `unknown`.
//!
//! `growing_for_s` comes from the best "flat, then linear" hinge fit over
//! the whole retained series (so it can exceed the window).
//!
//! The defaults of [`GrowthConfig`] were chosen from the measurements in the
//! `calibration` test at the end of this file; each field's doc says which.

use super::series::Series;
use serde::Serialize;

/// Class of a series' recent behaviour (report key `growth.class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrowthClass {
    /// Sustained rise that keeps making new highs.
    Growing,
    /// Plateau or oscillation within a band.
    Bounded,
    /// Sustained fall.
    Shrinking,
    /// Too little data to tell.
    Unknown,
}

/// Verdict of [`classify`] (report key `growth`).
#[derive(Clone, Debug, Serialize)]
pub struct Growth {
    /// The class.
    pub class: GrowthClass,
    /// Robust (Theil–Sen) slope over the window in units/s; a growth rate
    /// only for `growing`/`shrinking`, the net drift otherwise, 0 if unknown.
    pub bytes_per_s: f64,
    /// Confidence in the class, in [0, 1].
    pub confidence: f64,
    /// Seconds since the current rise started; `Some` only when growing.
    pub growing_for_s: Option<f64>,
}

impl Growth {
    /// The verdict for too little data.
    fn unknown() -> Self {
        Growth {
            class: GrowthClass::Unknown,
            bytes_per_s: 0.0,
            confidence: 0.0,
            growing_for_s: None,
        }
    }
}

/// Thresholds of the classifier. See the module docs for how they combine.
#[derive(Clone, Debug, PartialEq)]
pub struct GrowthConfig {
    /// Seconds of history examined. 300 s: at 1 Hz the slope's detection
    /// floor is about 4·sqrt(12)/300^1.5 ≈ 0.003 σ/s, and a leak that stopped
    /// becomes `bounded` after `tail_frac` of it (100 s). Fits in the
    /// default 600-sample full-resolution ring.
    pub window_s: f64,
    /// Fewest points in the window for a verdict (else `unknown`).
    pub min_points: usize,
    /// Shortest span of the window in seconds for a verdict (else `unknown`).
    pub min_span_s: f64,
    /// Trend significance: slope / standard error.
    pub min_z: f64,
    /// Net rise over the window relative to the residual band (p95 - p5).
    pub min_rise_to_band: f64,
    /// Fraction of the window, at its end, that must make a new high.
    pub tail_frac: f64,
    /// A new high must beat the earlier maximum by this many sigma.
    pub new_high_margin: f64,
    /// The last sixth of the window must reach within this many sigma of the
    /// window's maximum.
    pub drop_tol: f64,
    /// The tail's slope is "stopped" when confidently below this fraction of
    /// the window's slope (tolerates decelerating growth).
    pub stop_ratio: f64,
    /// Standard errors needed to call the tail stopped.
    pub stop_z: f64,
    /// A rise that started inside the window (after a flat stretch) is
    /// tested on its own, and counts once its maximum beats everything before
    /// it by this many sigmas of that earlier stretch's band.
    pub onset_margin: f64,
    /// Noise floor in units (1: integer series such as thread counts).
    pub noise_floor_abs: f64,
    /// Noise floor relative to the median level (0.1 %).
    pub noise_floor_rel: f64,
    /// Pairs sampled for a Theil–Sen slope (bounds the cost).
    pub max_pairs: usize,
}

impl Default for GrowthConfig {
    fn default() -> Self {
        GrowthConfig {
            window_s: 300.0,
            min_points: 8,
            min_span_s: 5.0,
            min_z: 4.0,
            min_rise_to_band: 0.5,
            tail_frac: 1.0 / 3.0,
            new_high_margin: 0.0,
            drop_tol: 2.0,
            stop_ratio: 0.25,
            stop_z: 2.5,
            onset_margin: 3.0,
            noise_floor_abs: 1.0,
            noise_floor_rel: 1e-3,
            max_pairs: 2000,
        }
    }
}

/// Classifies the last `cfg.window_s` seconds of `series`.
pub fn classify(series: &Series, cfg: &GrowthConfig) -> Growth {
    let Some((t_end, _)) = series.last() else {
        return Growth::unknown();
    };
    let win: Vec<(f64, f64)> = series
        .points()
        .filter(|&(t, _)| t >= t_end - cfg.window_s)
        .collect();
    if !enough(&win, cfg) {
        return Growth::unknown();
    }
    let floor = noise_floor(&win, cfg);
    let Some(mut verdict) = assess(&win, floor, cfg) else {
        return Growth::unknown();
    };
    // A rise that began inside the window after a flat stretch (a leak's
    // onset) is convex and a single line misfits it, so the part after the
    // best "flat, then linear" breakpoint is judged on its own too, once it
    // has climbed `onset_margin` sigmas clear of the band before it (which
    // a refilling batch buffer or a wandering level does not).
    let onset = win.partition_point(|p| p.0 < growth_start(&win));
    let (before, rising) = win.split_at(onset);
    let clear_onset = before.len() >= 3
        && enough(rising, cfg)
        && max_of(rising) >= max_of(before) + cfg.onset_margin * band_sigma(before, floor);
    if clear_onset && let Some(v) = assess(rising, floor, cfg) {
        if verdict.class != GrowthClass::Growing && v.class == GrowthClass::Growing {
            verdict = v;
        } else if verdict.class == GrowthClass::Growing && v.class == GrowthClass::Growing {
            // The rate since the onset, not diluted by the flat start.
            verdict.slope = v.slope;
        }
    }
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    let growing = verdict.class == GrowthClass::Growing;
    Growth {
        class: verdict.class,
        bytes_per_s: finite(verdict.slope),
        confidence: finite(verdict.confidence).clamp(0.0, 1.0),
        growing_for_s: growing.then(|| {
            let all: Vec<(f64, f64)> = series.points().collect();
            finite(t_end - growth_start(&all)).max(0.0)
        }),
    }
}

/// Seconds between the first and last point.
fn span_of(pts: &[(f64, f64)]) -> f64 {
    match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    }
}

/// True when `pts` has enough points and span for a verdict.
fn enough(pts: &[(f64, f64)], cfg: &GrowthConfig) -> bool {
    let span = span_of(pts);
    pts.len() >= cfg.min_points.max(3) && span >= cfg.min_span_s && span > 0.0
}

/// Class, slope and confidence of one stretch of points.
struct Verdict {
    /// The class (never `Unknown`).
    class: GrowthClass,
    /// Theil–Sen slope of the stretch.
    slope: f64,
    /// Confidence in the class.
    confidence: f64,
}

/// Runs the trend and "still rising" tests on `pts` (see module docs).
fn assess(pts: &[(f64, f64)], floor: f64, cfg: &GrowthConfig) -> Option<Verdict> {
    let fit = Fit::new(pts, floor, cfg.max_pairs)?;
    let rise = fit.slope * span_of(pts);
    let z_crit = fit.z_crit(cfg.min_z);
    let z_ev = evidence(fit.z().abs() / z_crit);
    let q_ev = evidence(rise.abs() / (cfg.min_rise_to_band * fit.band).max(f64::MIN_POSITIVE));
    let verdict = |class, confidence| Some(Verdict { class, slope: fit.slope, confidence });
    if fit.z().abs() < z_crit || rise.abs() < cfg.min_rise_to_band * fit.band {
        return verdict(GrowthClass::Bounded, 1.0 - z_ev.min(q_ev));
    }
    let up = fit.slope > 0.0;
    let s = if up {
        sustained(pts, &fit, floor, cfg)
    } else {
        let flipped: Vec<(f64, f64)> = pts.iter().map(|&(t, v)| (t, -v)).collect();
        sustained(&flipped, &fit.negated(), floor, cfg)
    };
    if let Some(stop_conf) = s.stopped {
        return verdict(GrowthClass::Bounded, stop_conf);
    }
    let confidence = z_ev.min(q_ev) * (0.5 + 0.5 * s.new_high_frac);
    let class = if up { GrowthClass::Growing } else { GrowthClass::Shrinking };
    verdict(class, confidence)
}

/// Maps a ratio to its threshold (`x`, 1 = at threshold) to [0, 1): 0.5 at
/// the threshold, 0.8 at twice it, 0.9 at three times.
fn evidence(x: f64) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    if x.is_infinite() {
        return 1.0;
    }
    x * x / (1.0 + x * x)
}

/// Smallest noise scale believed: `noise_floor_abs` or `noise_floor_rel` of
/// the median absolute level, whichever is larger.
fn noise_floor(pts: &[(f64, f64)], cfg: &GrowthConfig) -> f64 {
    let mut levels: Vec<f64> = pts.iter().map(|p| p.1.abs()).collect();
    let level = quantile(&mut levels, 0.5);
    cfg.noise_floor_abs.max(cfg.noise_floor_rel * level).max(f64::MIN_POSITIVE)
}

/// Residual autocorrelation is clamped to this, so the standard error is
/// inflated at most sqrt(1.98/0.02) ≈ 10 times.
const MAX_RHO: f64 = 0.98;

/// A robust line fit with its noise statistics.
#[derive(Clone, Debug)]
struct Fit {
    /// Theil–Sen slope, units/s.
    slope: f64,
    /// Residual scale (see [`Fit::new`]), at least the noise floor.
    sigma: f64,
    /// Lag-1 autocorrelation of residuals, in [0, MAX_RHO].
    rho: f64,
    /// Residual p95 - p5, at least the noise floor.
    band: f64,
    /// Sum of squared time deviations, s².
    sxx: f64,
    /// Number of points fitted.
    n: usize,
}

impl Fit {
    /// Fits `pts` (at least 2 distinct times), or `None`.
    fn new(pts: &[(f64, f64)], floor: f64, max_pairs: usize) -> Option<Fit> {
        let t0 = pts.first()?.0;
        let slope = theil_sen(pts, max_pairs)?;
        let mut off: Vec<f64> = pts.iter().map(|&(t, v)| v - slope * (t - t0)).collect();
        let intercept = quantile(&mut off.clone(), 0.5);
        for r in &mut off {
            *r -= intercept;
        }
        let resid = off;
        let mut abs: Vec<f64> = resid.iter().map(|r| r.abs()).collect();
        let mad_sigma = 1.4826 * quantile(&mut abs, 0.5);
        // Standard deviation of the residuals within 3 MAD-sigmas: as robust
        // to spikes as the MAD but efficient (and unbiased for uniform churn,
        // where the MAD overstates sigma by 28 %). 0.98658 makes it unbiased
        // for Gaussian noise truncated at 3 sigma.
        let (mut ss, mut cnt) = (0.0, 0usize);
        for r in resid.iter().filter(|r| r.abs() <= 3.0 * mad_sigma) {
            ss += r * r;
            cnt += 1;
        }
        let raw_sigma = if cnt > 0 { (ss / cnt as f64).sqrt() / 0.98658 } else { 0.0 };
        let rho = if raw_sigma <= floor {
            // Residuals are below the noise floor: their structure is
            // quantisation, not evidence of correlated noise.
            0.0
        } else {
            let num: f64 = resid.windows(2).map(|w| w[0] * w[1]).sum();
            let den: f64 = resid.iter().map(|r| r * r).sum();
            let n = resid.len() as f64;
            // Plus Kendall's small-sample bias correction (1 + 4 rho) / n.
            let r1 = if den > 0.0 { num / den } else { 0.0 };
            (r1 + (1.0 + 4.0 * r1.max(0.0)) / n).clamp(0.0, MAX_RHO)
        };
        let mut sorted = resid;
        let band = quantile(&mut sorted, 0.95) - quantile(&mut sorted, 0.05);
        let mean_t = pts.iter().map(|p| p.0 - t0).sum::<f64>() / pts.len() as f64;
        let sxx: f64 = pts.iter().map(|p| (p.0 - t0 - mean_t).powi(2)).sum();
        (sxx > 0.0).then_some(Fit {
            slope,
            sigma: raw_sigma.max(floor),
            rho,
            band: band.max(floor),
            sxx,
            n: pts.len(),
        })
    }

    /// Standard error of the slope, inflated for autocorrelation.
    fn se(&self) -> f64 {
        let inflate = ((1.0 + self.rho) / (1.0 - self.rho)).sqrt();
        self.sigma / self.sxx.sqrt() * inflate
    }

    /// Slope in standard errors.
    fn z(&self) -> f64 {
        self.slope / self.se().max(f64::MIN_POSITIVE)
    }

    /// Threshold on `|z|` equivalent to `z` for a normal variable: the
    /// Student-t quantile with `n - 2` degrees of freedom and the same tail
    /// probability (Cornish–Fisher expansion), because sigma is estimated
    /// from the same few points. A `min_z` of 4 becomes 5.7 with 15 points
    /// and 4.3 with 60. (Autocorrelation is already in the standard error;
    /// its estimate is too noisy at small n to also cut the dof.)
    fn z_crit(&self, z: f64) -> f64 {
        let nu = (self.n as f64 - 2.0).max(1.0);
        let z3 = z * z * z;
        z + (z3 + z) / (4.0 * nu) + (5.0 * z3 * z * z + 16.0 * z3 + 3.0 * z) / (96.0 * nu * nu)
    }

    /// The fit of the negated series.
    fn negated(&self) -> Fit {
        Fit {
            slope: -self.slope,
            ..self.clone()
        }
    }
}

/// Outcome of the "still rising" checks on an upward trend.
struct Sustained {
    /// `Some(confidence that it stopped)` when the rise is over.
    stopped: Option<f64>,
    /// Fraction of the window's later sixths that made a new high.
    new_high_frac: f64,
}

/// Checks that an upward trend (on `pts`, fitted by `fit`) is still going.
fn sustained(pts: &[(f64, f64)], fit: &Fit, floor: f64, cfg: &GrowthConfig) -> Sustained {
    let t0 = pts.first().map_or(0.0, |p| p.0);
    let t_end = pts.last().map_or(0.0, |p| p.0);
    let span = t_end - t0;
    let margin = cfg.new_high_margin * fit.sigma;
    let new_high_frac = new_high_fraction(pts, 6, margin);

    let tail_start = t_end - cfg.tail_frac.clamp(0.0, 1.0) * span;
    let split = pts.partition_point(|p| p.0 < tail_start).max(1);
    let (before, tail) = pts.split_at(split.min(pts.len()));
    let new_high = max_of(tail) > max_of(before) + margin;

    let last_start = t_end - span / 6.0;
    let last = &pts[pts.partition_point(|p| p.0 < last_start).min(pts.len() - 1)..];
    let dropped = max_of(last) < max_of(pts) - cfg.drop_tol * fit.sigma;

    let mut stop_conf = None;
    if tail.len() >= 3
        && let Some(tf) = Fit::new(tail, floor, cfg.max_pairs)
    {
        let stat = (cfg.stop_ratio * fit.slope - tf.slope) / tf.se().max(f64::MIN_POSITIVE);
        if stat >= cfg.stop_z {
            stop_conf = Some(evidence(stat / cfg.stop_z.max(f64::MIN_POSITIVE)));
        }
    }
    let stopped = match (stop_conf, new_high && !dropped) {
        (Some(c), _) => Some(c),
        (None, false) => Some(0.5 + 0.5 * (1.0 - new_high_frac)),
        (None, true) => None,
    };
    Sustained { stopped, new_high_frac }
}

/// Robust spread (1.4826 × MAD about the median) of the values in `pts`,
/// at least `floor`.
fn band_sigma(pts: &[(f64, f64)], floor: f64) -> f64 {
    let mut v: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let mid = quantile(&mut v, 0.5);
    for x in &mut v {
        *x = (*x - mid).abs();
    }
    (1.4826 * quantile(&mut v, 0.5)).max(floor)
}

/// Largest value in `pts` (negative infinity when empty).
fn max_of(pts: &[(f64, f64)]) -> f64 {
    pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max)
}

/// Splits `pts` into `k` equal time segments and returns the fraction of
/// segments after the first whose maximum beats every earlier one by `margin`.
fn new_high_fraction(pts: &[(f64, f64)], k: usize, margin: f64) -> f64 {
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return 0.0;
    };
    let span = last.0 - first.0;
    if span <= 0.0 || k < 2 {
        return 0.0;
    }
    let mut seg_max = vec![f64::NEG_INFINITY; k];
    for &(t, v) in pts {
        let i = (((t - first.0) / span * k as f64) as usize).min(k - 1);
        seg_max[i] = seg_max[i].max(v);
    }
    let mut running = seg_max[0];
    let mut highs = 0;
    for &m in &seg_max[1..] {
        if m > running + margin {
            highs += 1;
        }
        running = running.max(m);
    }
    highs as f64 / (k - 1) as f64
}

/// Theil–Sen slope: the median of pairwise slopes. Uses every pair when
/// there are at most `max_pairs`, else `max_pairs` pairs from a fixed-seed
/// generator. `None` when no pair has distinct times.
fn theil_sen(pts: &[(f64, f64)], max_pairs: usize) -> Option<f64> {
    let n = pts.len();
    let slope = |i: usize, j: usize| {
        let (a, b) = (pts[i], pts[j]);
        let dt = b.0 - a.0;
        (dt != 0.0).then(|| (b.1 - a.1) / dt)
    };
    let all_pairs = n * n.saturating_sub(1) / 2;
    let mut slopes = Vec::with_capacity(all_pairs.min(max_pairs.max(1)));
    if all_pairs <= max_pairs.max(1) {
        for i in 0..n {
            slopes.extend((i + 1..n).filter_map(|j| slope(i, j)));
        }
    } else {
        let mut rng = Lcg(0x9E37_79B9_7F4A_7C15);
        for _ in 0..max_pairs.saturating_mul(4) {
            if slopes.len() >= max_pairs {
                break;
            }
            let (i, j) = (rng.below(n), rng.below(n));
            if i != j {
                slopes.extend(slope(i.min(j), i.max(j)));
            }
        }
    }
    (!slopes.is_empty()).then(|| quantile(&mut slopes, 0.5))
}

/// Start time of the current rise: the breakpoint `tau` (one of the points'
/// times) of the best least-squares fit of the hinge
/// `c + b * max(0, t - tau)` with `b >= 0`, i.e. "flat, then linear".
/// Every breakpoint is tried in O(n) total using suffix sums.
fn growth_start(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len();
    let Some(&(t0, _)) = pts.first() else {
        return 0.0;
    };
    if n < 3 {
        return t0;
    }
    let nf = n as f64;
    let v_mean = pts.iter().map(|p| p.1).sum::<f64>() / nf;
    // Centred copies keep the sums small for numerical accuracy.
    let c: Vec<(f64, f64)> = pts.iter().map(|&(t, v)| (t - t0, v - v_mean)).collect();
    let syy: f64 = c.iter().map(|p| p.1 * p.1).sum();
    // Suffix sums over points strictly after the breakpoint.
    let (mut cnt, mut st, mut stt, mut sv, mut stv) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut best = (syy, 0usize);
    for k in (0..n - 1).rev() {
        let (t, v) = c[k + 1];
        cnt += 1.0;
        st += t;
        stt += t * t;
        sv += v;
        stv += t * v;
        let tau = c[k].0;
        let sx = st - cnt * tau;
        let sxx = stt - 2.0 * tau * st + cnt * tau * tau - sx * sx / nf;
        // sum(v) over all points is 0 after centring.
        let sxy = stv - tau * sv;
        let sse = if sxx > 0.0 && sxy > 0.0 { syy - sxy * sxy / sxx } else { syy };
        if sse <= best.0 {
            best = (sse, k);
        }
    }
    pts[best.1].0
}

/// The `q`-quantile (nearest rank) of `xs`, reordering it; 0 when empty.
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let k = ((xs.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, v, _) = xs.select_nth_unstable_by(k, f64::total_cmp);
    *v
}

/// Small deterministic linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    /// Next 32 high-quality bits.
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// Uniform integer in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        ((u64::from(self.next_u32()) * n as u64) >> 32) as usize
    }
}

#[cfg(test)]
#[path = "/tmp/growth-scratch/explore.rs"]
mod explore;

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const KIB: f64 = 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;

    /// Deterministic noise for synthetic shapes.
    pub(crate) struct Noise(Lcg);

    impl Noise {
        pub(crate) fn new(seed: u64) -> Self {
            let mut l = Lcg(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xDEAD_BEEF);
            l.next_u32();
            Noise(l)
        }
        /// Uniform in [0, 1).
        pub(crate) fn unit(&mut self) -> f64 {
            f64::from(self.0.next_u32()) / 4_294_967_296.0
        }
        /// Uniform in [-a, a).
        pub(crate) fn pm(&mut self, a: f64) -> f64 {
            (self.unit() * 2.0 - 1.0) * a
        }
        /// Normal with standard deviation `sd` (Box–Muller).
        pub(crate) fn normal(&mut self, sd: f64) -> f64 {
            let u1 = self.unit().max(1e-12);
            let u2 = self.unit();
            sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    /// Samples `f(t)` at `hz` for `secs` seconds (`secs * hz` samples).
    pub(crate) fn sample(hz: f64, secs: f64, mut f: impl FnMut(f64) -> f64) -> Series {
        let mut s = Series::new();
        let n = (secs * hz).round() as usize;
        for i in 0..n {
            let t = i as f64 / hz;
            s.push(t, f(t));
        }
        s
    }

    /// Bounded shapes with noise, `kind` indexing [`BOUNDED_KINDS`]. Time
    /// constants scale with the window so that the bound is visible in it:
    /// a cache still filling, or a single slow oscillation, is growth as far
    /// as the data can tell.
    pub(crate) fn bounded_shape(kind: usize, seed: u64, hz: f64, secs: f64) -> Series {
        let mut n = Noise::new(seed);
        let u = n.unit();
        match kind {
            // Flat level with 1.5 % Gaussian noise.
            0 => sample(hz, secs, |_| 64.0 * MIB + n.normal(MIB)),
            // Flat level with heavy uniform churn (±2 MiB on 8 MiB).
            1 => sample(hz, secs, |_| 8.0 * MIB + n.pm(2.0 * MIB)),
            // LRU cache: fills in the first 5..30 % of the window to a cap,
            // then stays there with evictions of up to 5 %.
            2 => {
                let fill = secs * (0.05 + 0.25 * u);
                let cap = 32.0 * MIB;
                sample(hz, secs, |t| {
                    if t < fill {
                        cap * t / fill + n.normal(0.01 * cap)
                    } else {
                        cap - n.unit() * 0.05 * cap
                    }
                })
            }
            // Batch buffer: fills then frees all, 3..15 cycles per window
            // and at least 4 samples per cycle.
            3 => {
                let max_cycles = (hz * secs / 4.0).min(15.0);
                let period = secs / (3.0 + (max_cycles - 3.0).max(0.0) * u);
                let phase = n.unit() * period;
                sample(hz, secs, |t| {
                    let level = 16.0 * MIB * (((t + phase) % period) / period);
                    level + n.normal(0.01 * 16.0 * MIB).abs()
                })
            }
            // Mean-reverting wander: AR(1) with a correlation time of 1/10
            // or 1/30 of the window, sd 1 MiB, on 100 MiB.
            4 => {
                let a = (-1.0 / (hz * secs * (0.1 - 0.07 * u.round()))).exp();
                let mut x = 0.0;
                sample(hz, secs, |_| {
                    x = a * x + n.normal(MIB * (1.0 - a * a).sqrt());
                    100.0 * MIB + x
                })
            }
            // Sine oscillation, 2..6 cycles per window, plus noise.
            _ => {
                let period = secs / (2.0 + 4.0 * u);
                let phase = n.unit() * period;
                sample(hz, secs, |t| {
                    let w = std::f64::consts::TAU * (t + phase) / period;
                    48.0 * MIB + 8.0 * MIB * w.sin() + n.normal(0.2 * MIB)
                })
            }
        }
    }

    /// Names of the shapes of [`bounded_shape`].
    pub(crate) const BOUNDED_KINDS: [&str; 6] =
        ["flat+gauss", "flat+churn", "lru-cache", "sawtooth", "ar1-wander", "sine"];

    /// Steady leak of `rate` with uniform ±`churn`, as the issue's shapes.
    pub(crate) fn leak(seed: u64, hz: f64, secs: f64, rate: f64, churn: f64) -> Series {
        let mut n = Noise::new(seed);
        sample(hz, secs, |t| 16.0 * MIB + rate * t + n.pm(churn))
    }

    fn cfg() -> GrowthConfig {
        GrowthConfig::default()
    }

    fn assert_rate(g: &Growth, truth: f64, tol: f64) {
        let err = (g.bytes_per_s - truth).abs() / truth.abs();
        assert!(err <= tol, "rate {} vs truth {truth} (err {:.1}%)", g.bytes_per_s, err * 100.0);
    }

    #[test]
    fn exact_linear_leak_at_1hz_and_5hz() {
        for hz in [1.0, 5.0] {
            let s = sample(hz, 30.0, |t| 1000.0 + 4096.0 * t);
            let g = classify(&s, &cfg());
            assert_eq!(g.class, GrowthClass::Growing, "{hz} Hz: {g:?}");
            assert_rate(&g, 4096.0, 1e-9);
            assert!(g.confidence > 0.9, "{g:?}");
            let gf = g.growing_for_s.unwrap_or(0.0);
            assert!((gf - (30.0 - 1.0 / hz)).abs() < 1e-9, "{g:?}");
        }
    }

    #[test]
    fn noisy_leak_rate_within_5_percent() {
        for hz in [1.0, 5.0] {
            for seed in 0..20 {
                let s = leak(seed, hz, 60.0, 256.0 * KIB, 512.0 * KIB);
                let g = classify(&s, &cfg());
                assert_eq!(g.class, GrowthClass::Growing, "seed {seed} {hz} Hz: {g:?}");
                assert_rate(&g, 256.0 * KIB, 0.05);
            }
        }
    }

    #[test]
    fn leak_hidden_under_heavy_churn() {
        // 64 KiB/s under ±2 MiB churn over 60 s: the rise (3.75 MiB) is
        // about the churn band (4 MiB).
        for hz in [1.0, 5.0] {
            let s = leak(7, hz, 60.0, 64.0 * KIB, 2.0 * MIB);
            let g = classify(&s, &cfg());
            assert_eq!(g.class, GrowthClass::Growing, "{hz} Hz: {g:?}");
            assert_rate(&g, 64.0 * KIB, 0.20);
        }
    }

    #[test]
    fn short_leak_of_integration_test() {
        // 15 samples, 1 MiB/s, ±256 KiB churn (the end-to-end test's shape).
        for seed in 0..50 {
            let s = leak(seed, 1.0, 15.0, MIB, 256.0 * KIB);
            let g = classify(&s, &cfg());
            assert_eq!(g.class, GrowthClass::Growing, "seed {seed}: {g:?}");
            assert_rate(&g, MIB, 0.05);
        }
    }

    #[test]
    fn lru_cache_is_bounded() {
        for hz in [1.0, 5.0] {
            let g = classify(&bounded_shape(2, 1, hz, 60.0), &cfg());
            assert_eq!(g.class, GrowthClass::Bounded, "{hz} Hz: {g:?}");
            assert_eq!(g.growing_for_s, None);
        }
    }

    #[test]
    fn batch_buffer_sawtooth_is_bounded() {
        for hz in [1.0, 5.0] {
            let g = classify(&bounded_shape(3, 1, hz, 60.0), &cfg());
            assert_eq!(g.class, GrowthClass::Bounded, "{hz} Hz: {g:?}");
        }
    }

    #[test]
    fn growth_that_stopped_halfway_is_not_growing() {
        for hz in [1.0, 5.0] {
            for seed in 0..50 {
                let mut n = Noise::new(seed);
                let s = sample(hz, 60.0, |t| 256.0 * KIB * t.min(30.0) + n.normal(64.0 * KIB));
                let g = classify(&s, &cfg());
                assert_eq!(g.class, GrowthClass::Bounded, "seed {seed} {hz} Hz: {g:?}");
            }
        }
    }

    #[test]
    fn decreasing_is_shrinking() {
        let mut n = Noise::new(3);
        let s = sample(1.0, 40.0, |t| 64.0 * MIB - 512.0 * KIB * t + n.pm(256.0 * KIB));
        let g = classify(&s, &cfg());
        assert_eq!(g.class, GrowthClass::Shrinking, "{g:?}");
        assert_rate(&g, -512.0 * KIB, 0.05);
        assert_eq!(g.growing_for_s, None);
    }

    #[test]
    fn too_little_data_is_unknown() {
        let c = cfg();
        let few = sample(1.0, (c.min_points - 1) as f64, |t| t * 1e6);
        assert_eq!(classify(&few, &c).class, GrowthClass::Unknown);
        let short = sample(10.0, c.min_span_s - 1.0, |t| t * 1e6);
        assert_eq!(classify(&short, &c).class, GrowthClass::Unknown);
        assert_eq!(classify(&Series::new(), &c).class, GrowthClass::Unknown);
    }

    #[test]
    fn thread_count_rising_by_one_per_second() {
        let s = sample(1.0, 20.0, |t| 4.0 + t.floor());
        let g = classify(&s, &cfg());
        assert_eq!(g.class, GrowthClass::Growing, "{g:?}");
        assert_rate(&g, 1.0, 1e-9);
    }

    #[test]
    fn growing_for_counts_from_the_start_of_the_rise() {
        let mut n = Noise::new(11);
        let s = sample(1.0, 120.0, |t| 8.0 * MIB + 128.0 * KIB * (t - 50.0).max(0.0) + n.normal(32.0 * KIB));
        let g = classify(&s, &cfg());
        assert_eq!(g.class, GrowthClass::Growing, "{g:?}");
        let gf = g.growing_for_s.unwrap_or(0.0);
        assert!((gf - 69.0).abs() <= 3.0, "{g:?}");
    }

    #[test]
    fn bounded_shapes_are_never_growing() {
        // 6 shapes x 250 seeds x {1 Hz 60 s, 5 Hz 60 s, 1 Hz 15 s}.
        for kind in 0..BOUNDED_KINDS.len() {
            for seed in 0..250 {
                for (hz, secs) in [(1.0, 60.0), (5.0, 60.0), (1.0, 15.0)] {
                    let g = classify(&bounded_shape(kind, seed, hz, secs), &cfg());
                    assert_ne!(
                        g.class,
                        GrowthClass::Growing,
                        "{} seed {seed} {hz} Hz {secs} s: {g:?}",
                        BOUNDED_KINDS[kind]
                    );
                }
            }
        }
    }

    #[test]
    fn json_matches_report_contract() {
        let g = Growth {
            class: GrowthClass::Growing,
            bytes_per_s: 1.5,
            confidence: 0.25,
            growing_for_s: None,
        };
        assert_eq!(
            serde_json::to_string(&g).ok().as_deref(),
            Some(r#"{"class":"growing","bytes_per_s":1.5,"confidence":0.25,"growing_for_s":null}"#)
        );
    }
}
