//! What one sweep run did after its injected failure: the outcome, and what it lost at exit
//! that the first run did not.

use serde::Serialize;

use super::plan::{JFrame, RunReport, lost_by_stack};

/// How a run ended, best first (the text table shows the worst first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The injection never fired: the site was not reached that many times.
    NotReached,
    /// It exited, normally or with an error of its own.
    Handled,
    /// `SIGABRT`: infallible allocation (Rust's `handle_alloc_error`, an uncaught
    /// `std::bad_alloc`, an out-of-memory `abort()`).
    Aborted,
    /// Killed by another fatal signal (a NULL dereference).
    Crashed,
    /// Still running at `--timeout`: killed.
    Hung,
    /// oomtrace could not run or read it (the message says why).
    Error,
}

impl Outcome {
    /// The word, as in JSON.
    pub fn word(self) -> &'static str {
        match self {
            Self::NotReached => "not_reached",
            Self::Handled => "handled",
            Self::Aborted => "aborted",
            Self::Crashed => "crashed",
            Self::Hung => "hung",
            Self::Error => "error",
        }
    }

    /// How bad, for sorting: hung and crashed first, not reached last.
    pub fn severity(self) -> u8 {
        match self {
            Self::Hung => 5,
            Self::Crashed => 4,
            Self::Aborted => 3,
            Self::Error => 2,
            Self::Handled => 1,
            Self::NotReached => 0,
        }
    }
}

/// Memory one stack lost at exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeakStack {
    /// Definitely and indirectly lost bytes, beyond the first run's on this stack.
    pub bytes: u64,
    /// Its frames, call site first.
    pub frames: Vec<JFrame>,
}

/// How the traced command ended, as the run saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Fatal signal, when one killed it.
    pub signal: Option<i32>,
    /// It ran past the timeout and was killed.
    pub timed_out: bool,
}

/// The run's end from `run`'s exit code (the command's, or 128 + its signal) and its report:
/// a code past 128 is a signal when a traced process died of that signal.
pub fn ended(code: Option<i32>, report: Option<&RunReport>) -> Ended {
    let Some(code) = code else {
        return Ended::default();
    };
    let by_signal = code > 128
        && report.is_some_and(|r| r.processes.iter().any(|p| p.signal == Some(code - 128)));
    if by_signal {
        Ended {
            exit_code: None,
            signal: Some(code - 128),
            timed_out: false,
        }
    } else {
        Ended {
            exit_code: Some(code),
            signal: None,
            timed_out: false,
        }
    }
}

/// Whether the run's injection fired at all.
pub fn fired(report: &RunReport) -> bool {
    report
        .processes
        .iter()
        .filter_map(|p| p.faults.as_ref())
        .any(|f| f.injections_total > 0)
}

/// The outcome of a run that ended as `end`, with `report` when one was written.
pub fn outcome(end: Ended, report: Option<&RunReport>) -> Outcome {
    if end.timed_out {
        return Outcome::Hung;
    }
    let Some(report) = report else {
        return Outcome::Error;
    };
    if !fired(report) {
        return Outcome::NotReached;
    }
    match end.signal {
        Some(libc::SIGABRT) => Outcome::Aborted,
        Some(_) => Outcome::Crashed,
        None => Outcome::Handled,
    }
}

/// The crash stack of the process the signal killed (the first with one).
pub fn crash_frames(report: &RunReport) -> Vec<JFrame> {
    report
        .processes
        .iter()
        .filter_map(|p| p.faults.as_ref()?.crash.as_ref())
        .map(|c| c.frames.clone())
        .next()
        .unwrap_or_default()
}

/// What `run` lost at exit beyond `base`, per stack (largest first), and the total.
pub fn new_leaks(base: &RunReport, run: &RunReport) -> (u64, Vec<LeakStack>) {
    let before = lost_by_stack(base);
    let mut stacks: Vec<LeakStack> = lost_by_stack(run)
        .into_iter()
        .filter_map(|(id, (bytes, frames))| {
            let was = before.get(&id).map_or(0, |b| b.0);
            (bytes > was).then(|| LeakStack {
                bytes: bytes - was,
                frames,
            })
        })
        .collect();
    stacks.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.frames.len().cmp(&b.frames.len()))
    });
    (stacks.iter().map(|s| s.bytes).sum(), stacks)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{JFaults, JLeak, JProcess, JStack};
    use super::*;

    fn report(signal: Option<i32>, injected: u64, leaks: &[(&str, u64)]) -> RunReport {
        RunReport {
            processes: vec![JProcess {
                pid: 1,
                exit_code: None,
                signal,
                faults: Some(JFaults {
                    injections_total: injected,
                    crash: None,
                }),
            }],
            stacks: leaks
                .iter()
                .map(|&(f, lost)| JStack {
                    frames: vec![JFrame {
                        function: Some(f.into()),
                        ..JFrame::default()
                    }],
                    leak: Some(JLeak {
                        definitely_lost_bytes: lost,
                        indirectly_lost_bytes: 0,
                    }),
                    ..JStack::default()
                })
                .collect(),
        }
    }

    #[test]
    fn outcomes() {
        let r = report(Some(11), 1, &[]);
        assert_eq!(ended(Some(139), Some(&r)).signal, Some(11));
        assert_eq!(
            outcome(ended(Some(139), Some(&r)), Some(&r)),
            Outcome::Crashed
        );
        let r = report(Some(6), 1, &[]);
        assert_eq!(
            outcome(ended(Some(134), Some(&r)), Some(&r)),
            Outcome::Aborted
        );
        let r = report(None, 1, &[]);
        assert_eq!(ended(Some(130), Some(&r)).exit_code, Some(130));
        assert_eq!(
            outcome(ended(Some(1), Some(&r)), Some(&r)),
            Outcome::Handled
        );
        let r = report(None, 0, &[]);
        assert_eq!(
            outcome(ended(Some(0), Some(&r)), Some(&r)),
            Outcome::NotReached
        );
        let hung = Ended {
            timed_out: true,
            ..Ended::default()
        };
        assert_eq!(outcome(hung, None), Outcome::Hung);
        assert_eq!(outcome(Ended::default(), None), Outcome::Error);
    }

    #[test]
    fn leaks_beyond_the_first_run() {
        let base = report(None, 0, &[("cache", 100)]);
        let run = report(None, 1, &[("cache", 100), ("step_one", 64)]);
        let (bytes, stacks) = new_leaks(&base, &run);
        assert_eq!(bytes, 64);
        assert_eq!(stacks.len(), 1);
        assert_eq!(stacks[0].frames[0].name(), "step_one");
    }
}
