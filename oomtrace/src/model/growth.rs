//! Growth classifier: is a series (a stack's outstanding bytes, a process's
//! RSS, its thread count, ...) growing without bound, bounded, or shrinking?
//!
//! A snapshot cannot tell a leak from a warm cache or a batch buffer; the
//! shape of the recent history can. [`classify`] looks at the last
//! [`GrowthConfig::window_s`] seconds of a [`Series`] and answers with a
//! [`Growth`]: the class, a robust rate in units/s, a confidence in [0, 1]
//! and, when growing, how long the growth has lasted. It is a pure function
//! costing about 40 µs for 300 points (85 µs when growing).
//!
//! How it decides (robust to outliers, deterministic):
//!
//! 1. **Trend.** Theil–Sen slope `b` (median of pairwise slopes over at most
//!    `max_pairs` pairs from a fixed-seed generator). The noise `sigma` is
//!    the standard deviation of the residuals lying within 3 MAD-sigmas of
//!    the line, never below a noise floor. The slope's standard error is
//!    inflated by the residuals' lag-1 autocorrelation `rho` (effective
//!    sample size `n (1 - rho) / (1 + rho)`), so slow wander and sawtooth
//!    teeth do not count as independent evidence. A trend needs
//!    `|b| / se` above `min_z` (raised to the Student-t equivalent for few
//!    points) **and** a net rise over the window of `min_rise_to_band` times
//!    the residual band (p5 to p95): the series must leave its own band.
//! 2. **Still going.** An upward trend is `growing` only if
//!    * the last `tail_frac` of the window makes a new high above everything
//!      before it (a cache or batch buffer refilling to its cap makes none),
//!    * the last sixth of the window comes within `drop_tol` sigmas of the
//!      window's maximum (nothing was freed since the peak), and
//!    * the tail's own slope is not confidently (`stop_z` standard errors)
//!      below `stop_ratio` times `b` (a rise that became a plateau).
//!
//!    Otherwise it is `bounded`. A fall passes the same tests upside down to
//!    be `shrinking`; too few points or too short a span is `unknown`.
//! 3. **Onset.** A leak that starts after a flat stretch is convex, which a
//!    single line misfits. The part after the best "flat, then linear" fit's
//!    breakpoint is therefore judged on its own as well, once it has climbed
//!    `onset_margin` sigmas clear of the band before the breakpoint; the
//!    rate is then measured from the breakpoint. `growing_for_s` is the time
//!    since the breakpoint of the same fit over the whole retained series
//!    (as precise as the downsampled history, once older than the ring).
//!
//! The defaults of [`GrowthConfig`] come from measurements on the synthetic
//! shapes of the tests (1000 seeds each); each field says what was measured.
//! Limits: a fill-and-free cycle longer than about a third of the window,
//! or a wander whose correlation time is a tenth of it, can look like
//! growth (measured: 10 % of 1.2-cycle sawtooths, 0.2-0.3 % of AR(1)
//! wander). Under heavy churn the rate is as good as the data allows: for
//! the hard leak below the median error is 10 % (5 % at 5 Hz); for steady
//! leaks with moderate noise the 99th percentile is 2.4 %.

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
    /// Theil–Sen slope in units/s: the growth rate (since the onset) when
    /// growing, the rate of fall when shrinking, the net drift when bounded,
    /// 0 when unknown.
    pub bytes_per_s: f64,
    /// Confidence in the class, in [0, 1] (0.5 at the decision threshold).
    pub confidence: f64,
    /// Seconds since the current rise started; `Some` only when growing.
    pub growing_for_s: Option<f64>,
}

impl Growth {
    /// The verdict for a series too short to judge.
    pub fn unknown() -> Self {
        Growth {
            class: GrowthClass::Unknown,
            bytes_per_s: 0.0,
            confidence: 0.0,
            growing_for_s: None,
        }
    }
}

/// Thresholds of the classifier (see the module docs for how they combine).
///
/// Measured with the synthetic shapes of the tests, 1000 seeds each. "FP":
/// growing verdicts on 18 000 bounded series (6 shapes x {1 Hz 60 s, 5 Hz
/// 60 s, 1 Hz 15 s}); the defaults give 7, all on AR(1) wander.
/// "Hard leak": share of 64 KiB/s leaks under ±2 MiB churn found in 60 s at
/// 1 Hz (the whole rise is about the churn band); the defaults find 98.3 %.
///
/// Re-measured for the session's schedule (10 Hz for the first 10 s, then
/// 1 Hz with the dense points merged; `series::synth::scheduled`), runs of
/// 2, 5, 15 and 60 s: 15 growing verdicts on 24 000 bounded series (12 on
/// AR(1) wander, 3 on 15-s runs, whose merged series are 1-Hz series: the
/// 1-Hz rows' rate within their sampling error), against 7 of 18 000 above.
/// Leaks found: 1 MiB/s under ±256 KiB in 2 s 99.9 %, 256 KiB/s under
/// ±512 KiB in 5 s 99.8 %, the hard leak in 60 s 98.4 %.
#[derive(Clone, Debug, PartialEq)]
pub struct GrowthConfig {
    /// Seconds of history examined: 300. Longer finds slower leaks (the hard
    /// leak has z ≈ 7 after 60 s, ≈ 79 after 300 s) but notices a stop later:
    /// after 72-108 s at 300 s, 16-42 s with a 60-s window. Onsets are seen
    /// after 8-12 s (256 KiB/s), 12-26 s (64 KiB/s) or 50-78 s (16 KiB/s, all
    /// under 256 KiB noise) at 300 s.
    pub window_s: f64,
    /// Fewest points for a verdict: 10. Growing verdicts on bounded shapes
    /// n samples long, n = 5 / 6 / 8 / 10 / 15: 5.7 / 1.0 / 0.27 / 0.20 /
    /// 0.05 %; a 1 MiB/s leak under ±256 KiB is found 95 / 95 / 99.6 / 100
    /// / 100 %.
    pub min_points: usize,
    /// Shortest span for a verdict, seconds: 0.9, so ten 100-ms ticks decide
    /// (a run's first second). It was 5 while ticks were 1 s, so that a fast
    /// tick could not decide on a two-second burst; a burst that short now
    /// is judged like any run, with the Student-t threshold of its few points
    /// (a `min_z` of 4 is 7.1 with 10 points) and the tail tests.
    pub min_span_s: f64,
    /// Trend significance, slope / standard error: 4. FP / hard leak at 3.5:
    /// 13 / 99.1 %, 4: 7 / 98.3 %, 4.5: 4 / 94.6 %, 5: 2 / 84.6 %.
    pub min_z: f64,
    /// Net rise over the window / residual band (p95 - p5): 0.5, a guard for
    /// sawtooth-like bands. From 0 to 0.5 FP goes 9 -> 7 at no cost; 0.75 /
    /// 1.0 take the hard leak to 96.7 / 67.8 %.
    pub min_rise_to_band: f64,
    /// Fraction of the window, at its end, that must make a new high: 1/3.
    /// 1/4 loses 2 points of hard leak, 1/2 has FP 12.
    pub tail_frac: f64,
    /// Sigmas by which that new high must beat the earlier maximum: 0.
    /// 0.25 / 0.5 cost 0.8 / 4.8 points of hard leak for FP 7 / 6 and 8 / 6 %
    /// (instead of 10 %) of batch buffers seen for only 1.2 cycles.
    pub new_high_margin: f64,
    /// Sigmas the last sixth may stay below the window's maximum: 2. Without
    /// this check 29 % of batch buffers seen for only 1.2 cycles are growing
    /// (10 % with it); 1.0 costs 0.2 points of hard leak.
    pub drop_tol: f64,
    /// The tail is "stopped" when its slope is confidently below this
    /// fraction of the window's: 0.25. At 0.75, 8 % of square-root shaped
    /// (decelerating) growth would count as stopped.
    pub stop_ratio: f64,
    /// Standard errors for "confidently": 2.5. Growth that stopped halfway
    /// is never growing from 1.5 to 3; 1.5 costs 0.6 points of hard leak.
    pub stop_z: f64,
    /// Band sigmas an onset must climb above everything before it: 3. FP at
    /// 0 / 1 / 2 / 3: 48 / 13 / 7 / 7; without the onset test (infinite) a
    /// leak starting at half the window is never found in it.
    pub onset_margin: f64,
    /// Noise floor in units: 1, the step of integer series (thread counts).
    pub noise_floor_abs: f64,
    /// Noise floor relative to the median level: 0.001.
    pub noise_floor_rel: f64,
    /// Pairs sampled for a Theil–Sen slope: 2000 (500 changes no verdict
    /// rate by more than 0.4 points).
    pub max_pairs: usize,
}

impl Default for GrowthConfig {
    fn default() -> Self {
        GrowthConfig {
            window_s: 300.0,
            min_points: 10,
            min_span_s: 0.9,
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
    let unknown = Growth {
        class: GrowthClass::Unknown,
        bytes_per_s: 0.0,
        confidence: 0.0,
        growing_for_s: None,
    };
    let Some((t_end, _)) = series.last() else {
        return unknown;
    };
    let win: Vec<(f64, f64)> = series
        .points()
        .filter(|&(t, _)| t >= t_end - cfg.window_s)
        .collect();
    let floor = noise_floor(&win, cfg);
    let Some(mut verdict) = enough(&win, cfg)
        .then(|| assess(&win, floor, cfg))
        .flatten()
    else {
        return unknown;
    };
    // Step 3 of the module docs: a leak's onset after a flat stretch.
    let onset = win.partition_point(|p| p.0 < growth_start(&win));
    let (before, rising) = win.split_at(onset);
    let clear_onset = before.len() >= 3
        && enough(rising, cfg)
        && max_of(rising) >= max_of(before) + cfg.onset_margin * band_sigma(before, floor);
    if clear_onset
        && let Some(v) = assess(rising, floor, cfg)
        && v.class == GrowthClass::Growing
    {
        if verdict.class == GrowthClass::Growing {
            verdict.slope = v.slope; // the rate since the onset, undiluted
        } else {
            verdict = v;
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

/// Runs the trend and "still going" tests on `pts` (see module docs).
fn assess(pts: &[(f64, f64)], floor: f64, cfg: &GrowthConfig) -> Option<Verdict> {
    let fit = Fit::new(pts, floor, cfg.max_pairs)?;
    let rise = fit.slope * span_of(pts);
    let z_crit = fit.z_crit(cfg.min_z);
    let trend = evidence(fit.z().abs() / z_crit)
        .min(evidence(rise.abs() / (cfg.min_rise_to_band * fit.band)));
    let (class, confidence) =
        if fit.z().abs() < z_crit || rise.abs() < cfg.min_rise_to_band * fit.band {
            (GrowthClass::Bounded, 1.0 - trend)
        } else if fit.slope > 0.0 {
            match stopped(pts, &fit, floor, cfg) {
                Some(c) => (GrowthClass::Bounded, c),
                None => (GrowthClass::Growing, trend),
            }
        } else {
            let flipped: Vec<(f64, f64)> = pts.iter().map(|&(t, v)| (t, -v)).collect();
            let up = Fit {
                slope: -fit.slope,
                ..fit
            };
            match stopped(&flipped, &up, floor, cfg) {
                Some(c) => (GrowthClass::Bounded, c),
                None => (GrowthClass::Shrinking, trend),
            }
        };
    Some(Verdict {
        class,
        slope: fit.slope,
        confidence,
    })
}

/// For an upward trend on `pts` (fitted by `fit`): `None` while it is still
/// going, else `Some(confidence that it stopped)`.
fn stopped(pts: &[(f64, f64)], fit: &Fit, floor: f64, cfg: &GrowthConfig) -> Option<f64> {
    let t_end = pts.last().map_or(0.0, |p| p.0);
    let span = span_of(pts);
    let split = pts.partition_point(|p| p.0 < t_end - cfg.tail_frac.clamp(0.0, 1.0) * span);
    let (before, tail) = pts.split_at(split.clamp(1, pts.len()));
    if tail.len() >= 3
        && let Some(tf) = Fit::new(tail, floor, cfg.max_pairs)
    {
        let stat = (cfg.stop_ratio * fit.slope - tf.slope) / tf.se();
        if stat >= cfg.stop_z {
            return Some(evidence(stat / cfg.stop_z));
        }
    }
    let shortfall = max_of(before) + cfg.new_high_margin * fit.sigma - max_of(tail);
    let last = &pts[pts
        .partition_point(|p| p.0 < t_end - span / 6.0)
        .min(pts.len() - 1)..];
    let drop = max_of(pts) - cfg.drop_tol * fit.sigma - max_of(last);
    (shortfall >= 0.0 || drop > 0.0).then(|| evidence(1.0 + shortfall.max(drop) / fit.sigma))
}

/// Maps a statistic over its threshold (1 = at threshold) to [0, 1]: 0.5 at
/// the threshold, 0.8 at twice it, 0.9 at three times; NaN maps to 0.
fn evidence(x: f64) -> f64 {
    let x = if x.is_nan() { 0.0 } else { x.abs().min(1e100) };
    x * x / (1.0 + x * x)
}

/// Smallest noise scale believed: `noise_floor_abs`, or `noise_floor_rel`
/// of the median absolute level if larger.
fn noise_floor(pts: &[(f64, f64)], cfg: &GrowthConfig) -> f64 {
    let mut levels: Vec<f64> = pts.iter().map(|p| p.1.abs()).collect();
    let rel = cfg.noise_floor_rel * quantile(&mut levels, 0.5);
    cfg.noise_floor_abs.max(rel).max(f64::MIN_POSITIVE)
}

/// Residual autocorrelation is clamped to this, so the standard error is
/// inflated at most sqrt(1.98 / 0.02) ≈ 10 times.
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
        let mut resid: Vec<f64> = pts.iter().map(|&(t, v)| v - slope * (t - t0)).collect();
        let intercept = quantile(&mut resid.clone(), 0.5);
        resid.iter_mut().for_each(|r| *r -= intercept);
        let mut abs: Vec<f64> = resid.iter().map(|r| r.abs()).collect();
        let mad_sigma = 1.4826 * quantile(&mut abs, 0.5);
        // The standard deviation of residuals within 3 MAD-sigmas is as
        // robust to spikes as the MAD but efficient, and unbiased for uniform
        // churn (where the MAD overstates sigma by 28 %). 0.98658 corrects
        // for Gaussian noise truncated at 3 sigma.
        let kept: Vec<f64> = resid
            .iter()
            .copied()
            .filter(|r| r.abs() <= 3.0 * mad_sigma)
            .collect();
        let raw_sigma = match kept.len() {
            0 => 0.0,
            k => (kept.iter().map(|r| r * r).sum::<f64>() / k as f64).sqrt() / 0.98658,
        };
        // Residuals below the noise floor are quantisation, not correlated
        // noise. Otherwise: lag-1 autocorrelation plus Kendall's small-sample
        // bias correction (1 + 4 rho) / n.
        let den: f64 = resid.iter().map(|r| r * r).sum();
        let rho = if raw_sigma <= floor || den <= 0.0 {
            0.0
        } else {
            let r1 = resid.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / den;
            (r1 + (1.0 + 4.0 * r1.max(0.0)) / resid.len() as f64).clamp(0.0, MAX_RHO)
        };
        let band = quantile(&mut resid, 0.95) - quantile(&mut resid, 0.05);
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
        (self.sigma / self.sxx.sqrt() * inflate).max(f64::MIN_POSITIVE)
    }

    /// Slope in standard errors.
    fn z(&self) -> f64 {
        self.slope / self.se()
    }

    /// Threshold on `|z|` with the tail probability that `z` has for a
    /// normal variable: the Student-t quantile with `n - 2` degrees of
    /// freedom (Cornish–Fisher expansion), since sigma comes from the same
    /// few points. A `min_z` of 4 becomes 5.7 with 15 points and 4.3 with
    /// 60. (The autocorrelation is in the standard error already; its
    /// estimate is too noisy at small n to also cut the degrees of freedom.)
    fn z_crit(&self, z: f64) -> f64 {
        let nu = (self.n as f64 - 2.0).max(1.0);
        let z3 = z * z * z;
        z + (z3 + z) / (4.0 * nu) + (5.0 * z3 * z * z + 16.0 * z3 + 3.0 * z) / (96.0 * nu * nu)
    }
}

/// Robust spread (1.4826 × MAD about the median) of the values in `pts`,
/// at least `floor`.
fn band_sigma(pts: &[(f64, f64)], floor: f64) -> f64 {
    let mut v: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let mid = quantile(&mut v, 0.5);
    v.iter_mut().for_each(|x| *x = (*x - mid).abs());
    (1.4826 * quantile(&mut v, 0.5)).max(floor)
}

/// Largest value in `pts` (negative infinity when empty).
fn max_of(pts: &[(f64, f64)]) -> f64 {
    pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max)
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
        let sse = if sxx > 0.0 && sxy > 0.0 {
            syy - sxy * sxy / sxx
        } else {
            syy
        };
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
mod tests {
    use super::super::series::synth::{BOUNDED, KIB, MIB, Noise, RUNS, bounded, leak, sample};
    use super::*;
    use GrowthClass::{Bounded, Growing, Shrinking, Unknown};

    fn run(s: &Series) -> Growth {
        classify(s, &GrowthConfig::default())
    }

    /// Fraction of seeds `0..n` for which `f(seed)` is growing.
    fn growing_rate(n: u64, f: impl Fn(u64) -> Series) -> f64 {
        (0..n).filter(|&s| run(&f(s)).class == Growing).count() as f64 / n as f64
    }

    #[test]
    fn leaks_are_growing_at_their_rate() {
        // (what, series, true rate, tolerance)
        let mut cases = vec![
            (
                "exact, 1 Hz",
                sample(1.0, 30.0, |t| 1e3 + 4096.0 * t),
                4096.0,
                1e-9,
            ),
            (
                "exact, 5 Hz",
                sample(5.0, 30.0, |t| 1e3 + 4096.0 * t),
                4096.0,
                1e-9,
            ),
            ("threads +1/s", sample(1.0, 20.0, |t| 4.0 + t), 1.0, 1e-9),
            // 64 KiB/s under ±2 MiB for 60 s: the rise is about the band.
            (
                "churn, 1 Hz",
                leak(7, 1.0, 60.0, 64.0 * KIB, 2.0 * MIB),
                64.0 * KIB,
                0.2,
            ),
            (
                "churn, 5 Hz",
                leak(7, 5.0, 60.0, 64.0 * KIB, 2.0 * MIB),
                64.0 * KIB,
                0.2,
            ),
        ];
        for seed in 0..20 {
            for hz in [1.0, 5.0] {
                let s = leak(seed, hz, 60.0, 256.0 * KIB, 512.0 * KIB);
                cases.push(("noisy", s, 256.0 * KIB, 0.05));
            }
        }
        // The end-to-end test's shape: 15 samples, 1 MiB/s under ±256 KiB.
        for seed in 0..100 {
            cases.push(("short", leak(seed, 1.0, 15.0, MIB, 256.0 * KIB), MIB, 0.05));
        }
        for (what, s, rate, tol) in cases {
            let g = run(&s);
            let err = (g.bytes_per_s / rate - 1.0).abs();
            assert!(
                g.class == Growing && err <= tol,
                "{what}: want {rate}/s, got {g:?}"
            );
        }
    }

    #[test]
    fn growing_for_counts_from_the_onset() {
        let g = run(&sample(5.0, 30.0, |t| 1e3 + 4096.0 * t));
        assert!(
            g.growing_for_s == Some(29.8) && g.confidence > 0.95,
            "{g:?}"
        );
        // Flat for 50 s, then 128 KiB/s: the rate is measured from the onset.
        let mut n = Noise::new(11);
        let s = sample(1.0, 120.0, |t| {
            8.0 * MIB + 128.0 * KIB * (t - 50.0).max(0.0) + n.normal(32.0 * KIB)
        });
        let g = run(&s);
        let (rate_err, since) = (g.bytes_per_s / (128.0 * KIB) - 1.0, g.growing_for_s);
        assert!(
            rate_err.abs() < 0.05 && since.is_some_and(|s| (s - 69.0).abs() <= 3.0),
            "{g:?}"
        );
    }

    #[test]
    fn other_shapes_get_their_class() {
        let mut n = Noise::new(3);
        let falling = sample(1.0, 40.0, |t| {
            64.0 * MIB - 512.0 * KIB * t + n.pm(256.0 * KIB)
        });
        let cases = [
            ("lru cache, 1 Hz", bounded(2, 1, 1.0, 60.0), Bounded),
            ("lru cache, 5 Hz", bounded(2, 1, 5.0, 60.0), Bounded),
            ("batch buffer, 1 Hz", bounded(3, 1, 1.0, 60.0), Bounded),
            ("batch buffer, 5 Hz", bounded(3, 1, 5.0, 60.0), Bounded),
            ("flat", sample(1.0, 60.0, |_| 5e6), Bounded),
            (
                "one spike",
                sample(1.0, 60.0, |t| if t == 30.0 { 1e12 } else { 5e6 }),
                Bounded,
            ),
            ("falling", falling, Shrinking),
            ("9 points", sample(1.0, 9.0, |t| t * 1e6), Unknown),
            ("0.8 seconds", sample(10.0, 0.85, |t| t * 1e6), Unknown),
            ("empty", Series::new(), Unknown),
        ];
        for (what, s, want) in cases {
            let g = run(&s);
            assert!(
                g.class == want && g.growing_for_s.is_none(),
                "{what}: {g:?}"
            );
            if want == Shrinking {
                assert!((g.bytes_per_s / (-512.0 * KIB) - 1.0).abs() < 0.05, "{g:?}");
            }
        }
    }

    /// Issue 19: verdicts on a run of seconds, on the session's schedule (10 Hz while young).
    #[test]
    fn short_runs_get_verdicts() {
        for seed in 0..200 {
            // A 2-second linear leak under churn: growing, at its rate.
            let s = leak(seed, 0.0, 2.0, 4.0 * MIB, 256.0 * KIB);
            let g = run(&s);
            assert!(
                g.class == Growing && (g.bytes_per_s / (4.0 * MIB) - 1.0).abs() < 0.1,
                "seed {seed}: {g:?}"
            );
            // A cache that fills in 1 s and then stays at its cap (evicting), seen for 2-3 s.
            let mut n = Noise::new(seed);
            let secs = 2.0 + n.unit();
            let s = sample(0.0, secs, |t| {
                16.0 * MIB * t.min(1.0) - if t > 1.0 { n.unit() * 0.3 * MIB } else { 0.0 }
            });
            assert_ne!(run(&s).class, Growing, "seed {seed}: cache {s:?}");
        }
        // A thread per 333 ms and 10 descriptors a second for 3 s: steps, found with their rate.
        let threads = sample(0.0, 3.0, |t| 4.0 + (t * 3.0).floor());
        let g = run(&threads);
        assert!(
            g.class == Growing && (g.bytes_per_s - 3.0).abs() < 0.6,
            "{g:?}"
        );
        let fds = sample(0.0, 3.0, |t| 5.0 + (t * 10.0).floor());
        let g = run(&fds);
        assert!(
            g.class == Growing && (g.bytes_per_s - 10.0).abs() < 2.0,
            "{g:?}"
        );
        // One second is enough; less is not.
        assert_eq!(run(&sample(0.0, 1.1, |t| t * 1e6)).class, Growing);
        assert_eq!(run(&sample(0.0, 0.8, |t| t * 1e6)).class, Unknown);
    }

    #[test]
    fn growth_that_stopped_halfway_is_bounded() {
        for seed in 0..50 {
            for hz in [1.0, 5.0] {
                let mut n = Noise::new(seed);
                let s = sample(hz, 60.0, |t| {
                    256.0 * KIB * t.min(30.0) + n.normal(64.0 * KIB)
                });
                assert_eq!(run(&s).class, Bounded, "seed {seed} at {hz} Hz");
            }
        }
    }

    #[test]
    fn bounded_shapes_are_never_growing() {
        // 250 seeds of each shape but the AR(1) wander (see `calibration`), at 1 and 5 Hz and
        // on the session's schedule while it is dense (the 15-s and 60-s schedules leave 1-Hz
        // series, which `calibration` bounds).
        for (kind, name) in BOUNDED.iter().enumerate().take(5) {
            for (hz, secs) in RUNS
                .into_iter()
                .filter(|&(hz, secs)| hz > 0.0 || secs < 10.0)
            {
                for seed in 0..250 {
                    let g = run(&bounded(kind, seed, hz, secs));
                    assert_ne!(g.class, Growing, "{name} {seed} {hz} Hz {secs} s: {g:?}");
                }
            }
        }
    }

    /// The measurements behind the defaults: the share of 1000 seeds found
    /// growing, per shape. Run with `--nocapture` to see them.
    #[test]
    fn calibration() {
        for (kind, name) in BOUNDED.iter().enumerate() {
            for (hz, secs) in RUNS {
                let r = growing_rate(1000, |s| bounded(kind, s, hz, secs));
                println!(
                    "bounded {name:10} {hz} Hz {secs} s: {:5.1} % growing",
                    r * 100.0
                );
                assert!(r <= if kind == 5 { 0.01 } else { 0.002 }, "{name}: {r}");
            }
        }
        let leaks = [
            ("64 KiB/s ±2 MiB", 1.0, 60.0, 64.0 * KIB, 2.0 * MIB, 0.95),
            ("64 KiB/s ±2 MiB", 5.0, 60.0, 64.0 * KIB, 2.0 * MIB, 1.0),
            ("1 MiB/s ±256 KiB", 1.0, 15.0, MIB, 256.0 * KIB, 1.0),
            (
                "256 KiB/s ±512 KiB",
                1.0,
                15.0,
                256.0 * KIB,
                512.0 * KIB,
                0.99,
            ),
            // The session's schedule (10 Hz, then 1 Hz): runs of seconds.
            ("1 MiB/s ±256 KiB", 0.0, 2.0, MIB, 256.0 * KIB, 0.99),
            (
                "256 KiB/s ±512 KiB",
                0.0,
                5.0,
                256.0 * KIB,
                512.0 * KIB,
                0.9,
            ),
            ("64 KiB/s ±2 MiB", 0.0, 60.0, 64.0 * KIB, 2.0 * MIB, 0.95),
        ];
        for (name, hz, secs, rate, churn, want) in leaks {
            let r = growing_rate(1000, |s| leak(s, hz, secs, rate, churn));
            println!(
                "leak {name:18} {hz} Hz {secs} s: {:5.1} % growing",
                r * 100.0
            );
            assert!(r >= want, "{name} {hz} Hz: {r}");
        }
    }

    #[test]
    fn json_matches_report_contract() {
        let g = Growth {
            class: Growing,
            bytes_per_s: 1.5,
            confidence: 0.25,
            growing_for_s: None,
        };
        let want =
            r#"{"class":"growing","bytes_per_s":1.5,"confidence":0.25,"growing_for_s":null}"#;
        assert_eq!(serde_json::to_string(&g).ok().as_deref(), Some(want));
        let names: Vec<String> = [Bounded, Shrinking, Unknown]
            .iter()
            .filter_map(|c| serde_json::to_string(c).ok())
            .collect();
        assert_eq!(names, ["\"bounded\"", "\"shrinking\"", "\"unknown\""]);
    }

    #[test]
    fn cost_per_classify() {
        // Printed for BENCHMARKS.md; the bound only catches pathologies.
        for (name, s) in [
            ("300 s flat", bounded(0, 1, 1.0, 300.0)),
            ("300 s leak", leak(1, 1.0, 300.0, 64.0 * KIB, 2.0 * MIB)),
            ("full series", leak(1, 5.0, 3000.0, 64.0 * KIB, 2.0 * MIB)),
        ] {
            let start = std::time::Instant::now();
            for _ in 0..200 {
                std::hint::black_box(run(std::hint::black_box(&s)));
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / 200.0;
            println!("classify {name} ({} points): {us:.0} us", s.len());
            assert!(us < 20_000.0);
        }
    }
}
