//! `--budget SIZE [--warn-at PCT]`: a memory budget checked after the run, for CI.
//!
//! The peak is the larger of the outstanding heap (from the tracer) and the RSS (from the
//! sampler), so memory outside malloc (stacks, direct mmaps the tracer does not see, the
//! binary itself) still counts. Above the budget the run fails with
//! [`EXIT_BUDGET_EXCEEDED`] and the stacks that held most at the peak; at or above the
//! warning level ([`DEFAULT_WARN_AT_PCT`] unless given) a warning is printed and CMD's own
//! exit status is kept.
//!
//! ```text
//! evaluate(70 MiB heap, 90 MiB rss, 100 MiB, 80.0) == Verdict::Warn { pct: 90.0 }
//! ```

use super::sizes::format_size;

/// The exit status of a run whose peak exceeded `--budget`.
pub const EXIT_BUDGET_EXCEEDED: i32 = 3;
/// `--warn-at` when not given, in percent of the budget.
pub const DEFAULT_WARN_AT_PCT: f64 = 80.0;

/// How a run's peak compares with its budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Below the warning level.
    Under,
    /// At or above the warning level, within the budget.
    Warn {
        /// The peak in percent of the budget.
        pct: f64,
    },
    /// Above the budget.
    Exceeded {
        /// The peak in percent of the budget (infinite for a zero budget).
        pct: f64,
    },
}

/// Compares the peak, `max(peak_heap, peak_rss)`, with `budget` and the warning level.
pub fn evaluate(peak_heap: u64, peak_rss: u64, budget: u64, warn_at_pct: f64) -> Verdict {
    let peak = peak_heap.max(peak_rss);
    if budget == 0 {
        return if peak == 0 {
            Verdict::Under
        } else {
            Verdict::Exceeded { pct: f64::INFINITY }
        };
    }
    let (peak_f, budget_f) = (peak as f64, budget as f64);
    let pct = peak_f * 100.0 / budget_f;
    if peak > budget {
        Verdict::Exceeded { pct }
    // Multiplying instead of comparing `pct` keeps "exactly at the threshold" exact.
    } else if peak_f * 100.0 >= warn_at_pct * budget_f {
        Verdict::Warn { pct }
    } else {
        Verdict::Under
    }
}

impl Verdict {
    /// The process exit status to use, given CMD's own.
    pub fn exit_code(&self, cmd_status: i32) -> i32 {
        match self {
            Self::Exceeded { .. } => EXIT_BUDGET_EXCEEDED,
            Self::Under | Self::Warn { .. } => cmd_status,
        }
    }

    /// The one line to print on stderr, if any (no `oomtrace:` prefix).
    pub fn message(&self, peak: u64, budget: u64, warn_at_pct: f64) -> Option<String> {
        let (peak, budget) = (format_size(peak), format_size(budget));
        match *self {
            Self::Under => None,
            Self::Warn { pct } => Some(format!(
                "warning: peak memory {peak} is {pct:.1}% of the {budget} budget \
                 (warning at {warn_at_pct}%)"
            )),
            Self::Exceeded { pct } => Some(format!(
                "memory budget exceeded: peak {peak} is {pct:.1}% of the {budget} budget; \
                 the stacks holding most at the peak follow"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn under_warn_exceeded() {
        let b = 100 * MIB;
        assert_eq!(evaluate(10 * MIB, 20 * MIB, b, 80.0), Verdict::Under);
        assert_eq!(evaluate(80 * MIB - 1, 0, b, 80.0), Verdict::Under);
        // Exactly at the threshold warns.
        assert_eq!(evaluate(80 * MIB, 0, b, 80.0), Verdict::Warn { pct: 80.0 });
        assert_eq!(evaluate(125, 0, 1000, 12.5), Verdict::Warn { pct: 12.5 });
        assert_eq!(evaluate(124, 0, 1000, 12.5), Verdict::Under);
        // Exactly at the budget is not over it.
        assert_eq!(evaluate(b, 0, b, 80.0), Verdict::Warn { pct: 100.0 });
        assert_eq!(
            evaluate(b + 1, 0, b, 80.0),
            Verdict::Exceeded {
                pct: (b + 1) as f64 * 100.0 / b as f64
            }
        );
        assert_eq!(
            evaluate(150 * MIB, 0, b, 80.0),
            Verdict::Exceeded { pct: 150.0 }
        );
    }

    #[test]
    fn rss_larger_than_heap_counts() {
        let b = 100 * MIB;
        assert_eq!(
            evaluate(10 * MIB, 90 * MIB, b, 80.0),
            Verdict::Warn { pct: 90.0 }
        );
        assert_eq!(
            evaluate(10 * MIB, 200 * MIB, b, 80.0),
            Verdict::Exceeded { pct: 200.0 }
        );
        assert_eq!(
            evaluate(200 * MIB, 10 * MIB, b, 80.0),
            Verdict::Exceeded { pct: 200.0 }
        );
    }

    #[test]
    fn edge_levels_and_budgets() {
        assert_eq!(evaluate(0, 0, MIB, 0.0), Verdict::Warn { pct: 0.0 });
        assert_eq!(evaluate(MIB, 0, MIB, 100.0), Verdict::Warn { pct: 100.0 });
        assert_eq!(evaluate(MIB - 1, 0, MIB, 100.0), Verdict::Under);
        assert_eq!(evaluate(0, 0, 0, 80.0), Verdict::Under);
        assert_eq!(
            evaluate(1, 0, 0, 80.0),
            Verdict::Exceeded { pct: f64::INFINITY }
        );
        assert!(matches!(
            evaluate(u64::MAX, 0, u64::MAX - 1, 80.0),
            Verdict::Exceeded { .. }
        ));
        assert!(matches!(
            evaluate(u64::MAX, u64::MAX, u64::MAX, 80.0),
            Verdict::Warn { .. }
        ));
    }

    #[test]
    fn exit_codes_and_messages() {
        let exceeded = evaluate(150 * MIB, 0, 100 * MIB, 80.0);
        assert_eq!(exceeded.exit_code(0), EXIT_BUDGET_EXCEEDED);
        assert_eq!(
            exceeded.message(150 * MIB, 100 * MIB, 80.0).unwrap(),
            "memory budget exceeded: peak 150.00 MiB is 150.0% of the 100.00 MiB budget; \
             the stacks holding most at the peak follow"
        );
        let warn = evaluate(90 * MIB, 0, 100 * MIB, 80.0);
        assert_eq!(warn.exit_code(7), 7);
        assert_eq!(
            warn.message(90 * MIB, 100 * MIB, 80.0).unwrap(),
            "warning: peak memory 90.00 MiB is 90.0% of the 100.00 MiB budget (warning at 80%)"
        );
        assert_eq!(Verdict::Under.exit_code(137), 137);
        assert_eq!(Verdict::Under.message(1, 2, 80.0), None);
    }
}
