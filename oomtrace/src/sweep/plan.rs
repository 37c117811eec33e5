//! The first run's report, read back: allocation sites (the first frame outside the wrappers),
//! their calls and deep stacks, and what each stack had lost at exit; and the plan of runs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A frame as `run --format json` writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JFrame {
    /// The raw address (hex).
    #[serde(default)]
    pub addr: String,
    /// Function name.
    #[serde(default)]
    pub function: Option<String>,
    /// Module (file name of the object).
    #[serde(default)]
    pub module: Option<String>,
    /// Source file.
    #[serde(default)]
    pub file: Option<String>,
    /// Source line.
    #[serde(default)]
    pub line: Option<u32>,
}

impl JFrame {
    /// Whether it is an allocator wrapper or runtime code ([`crate::report::site::is_wrapper`]).
    pub fn is_wrapper(&self) -> bool {
        crate::report::site::is_wrapper(&crate::symbols::Frame {
            function: self.function.clone(),
            module: self.module.clone(),
            ..crate::symbols::Frame::default()
        })
    }

    /// The name a reader sees: the function, else the module, else the address. Addresses move
    /// between runs (ASLR), so a frame without a function compares by its module only.
    pub fn name(&self) -> String {
        match (&self.function, &self.module) {
            (Some(f), _) => f.clone(),
            (None, Some(m)) => format!("{m}+?"),
            (None, None) => self.addr.clone(),
        }
    }
}

/// What of a run's `oomtrace.report/1` the sweep reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunReport {
    /// Processes.
    #[serde(default)]
    pub processes: Vec<JProcess>,
    /// Stacks.
    #[serde(default)]
    pub stacks: Vec<JStack>,
}

/// A process of a run's report.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JProcess {
    /// Process id.
    pub pid: u32,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Fatal signal.
    pub signal: Option<i32>,
    /// Injected failures and the crash.
    #[serde(default)]
    pub faults: Option<JFaults>,
}

/// A process's faults, as far as the sweep reads them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JFaults {
    /// Injected failures.
    #[serde(default)]
    pub injections_total: u64,
    /// Where the fatal signal struck.
    #[serde(default)]
    pub crash: Option<JCrash>,
}

/// A crash of a run's report.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JCrash {
    /// The signal.
    pub signal: i32,
    /// Its stack.
    #[serde(default)]
    pub frames: Vec<JFrame>,
}

/// A stack of a run's report.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JStack {
    /// Bytes over all allocations.
    #[serde(default)]
    pub allocated_bytes: u64,
    /// Allocations.
    #[serde(default)]
    pub allocs: u64,
    /// Failed allocations.
    #[serde(default)]
    pub failed_allocs: u64,
    /// Frames, call site first.
    #[serde(default)]
    pub frames: Vec<JFrame>,
    /// Index of the allocation site in `frames`.
    #[serde(default)]
    pub site: usize,
    /// The leak scan's figures.
    #[serde(default)]
    pub leak: Option<JLeak>,
}

/// A stack's leak figures.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct JLeak {
    /// Definitely lost bytes.
    #[serde(default)]
    pub definitely_lost_bytes: u64,
    /// Indirectly lost bytes.
    #[serde(default)]
    pub indirectly_lost_bytes: u64,
}

impl JStack {
    /// Definitely and indirectly lost bytes at exit.
    pub fn lost(&self) -> u64 {
        self.leak
            .map_or(0, |l| l.definitely_lost_bytes + l.indirectly_lost_bytes)
    }

    /// The stack's identity across runs: its frames' names.
    pub fn identity(&self) -> Vec<String> {
        self.frames.iter().map(JFrame::name).collect()
    }
}

/// One allocation site: a function that calls the allocator (through wrappers or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Its function name (what `--fail-at-site` matches).
    pub function: String,
    /// Allocator calls from it in the first run (failed ones included).
    pub calls: u64,
    /// Bytes it allocated in the first run.
    pub bytes: u64,
    /// The deep stack of its busiest call stack.
    pub frames: Vec<JFrame>,
}

/// The first run's sites, largest (bytes, then calls) first; and how many stacks had a site
/// without a function name (those cannot be named to `--fail-at-site`).
pub fn sites(report: &RunReport) -> (Vec<Site>, usize) {
    let mut by_name: HashMap<String, (Site, u64)> = HashMap::new();
    let mut unnamed = 0;
    for st in &report.stacks {
        let Some(frame) = st.frames.get(st.site) else {
            continue;
        };
        // A stack of wrappers only (the dynamic loader's, the C runtime's own buffers) has no
        // site of the program's: `--fail-at-site` could not name it.
        let Some(function) = frame.function.clone().filter(|_| !frame.is_wrapper()) else {
            unnamed += 1;
            continue;
        };
        let calls = st.allocs + st.failed_allocs;
        let e = by_name.entry(function.clone()).or_insert_with(|| {
            let site = Site {
                function,
                calls: 0,
                bytes: 0,
                frames: st.frames.clone(),
            };
            (site, 0)
        });
        e.0.calls += calls;
        e.0.bytes += st.allocated_bytes;
        // The site's stack shown is its busiest one.
        if calls > e.1 {
            e.0.frames = st.frames.clone();
            e.1 = calls;
        }
    }
    let mut out: Vec<Site> = by_name.into_values().map(|(s, _)| s).collect();
    out.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.calls.cmp(&a.calls))
            .then(a.function.cmp(&b.function))
    });
    (out, unnamed)
}

/// One planned run: fail the `occurrence`-th call made at `site`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Index into the sites.
    pub site: usize,
    /// k: the k-th call from the site fails.
    pub occurrence: u64,
}

/// The runs: every site's first listed occurrence before any site's next one (coverage first),
/// largest sites first within each; occurrences a site never reached in the first run are left
/// out. At most `max_runs`; the second value counts those left out by that bound.
pub fn plan(sites: &[Site], occurrences: &[u64], max_runs: usize) -> (Vec<Planned>, usize) {
    let mut occ: Vec<u64> = occurrences.iter().copied().filter(|&k| k > 0).collect();
    occ.sort_unstable();
    occ.dedup();
    let mut all = Vec::new();
    for &k in &occ {
        for (i, s) in sites.iter().enumerate() {
            if k <= s.calls {
                all.push(Planned {
                    site: i,
                    occurrence: k,
                });
            }
        }
    }
    let over = all.len().saturating_sub(max_runs);
    all.truncate(max_runs);
    (all, over)
}

/// Lost bytes at exit per stack identity, over all processes of a run.
pub fn lost_by_stack(report: &RunReport) -> HashMap<Vec<String>, (u64, Vec<JFrame>)> {
    let mut out: HashMap<Vec<String>, (u64, Vec<JFrame>)> = HashMap::new();
    for st in &report.stacks {
        let lost = st.lost();
        if lost == 0 {
            continue;
        }
        out.entry(st.identity())
            .or_insert_with(|| (0, st.frames.clone()))
            .0 += lost;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: &str) -> JFrame {
        JFrame {
            function: Some(f.into()),
            ..JFrame::default()
        }
    }

    fn stack(fns: &[&str], site: usize, allocs: u64, bytes: u64) -> JStack {
        JStack {
            allocated_bytes: bytes,
            allocs,
            frames: fns.iter().map(|f| frame(f)).collect(),
            site,
            ..JStack::default()
        }
    }

    #[test]
    fn sites_merge_stacks_and_sort_by_bytes() {
        let r = RunReport {
            stacks: vec![
                stack(&["malloc", "small", "main"], 1, 10, 100),
                stack(&["big", "main"], 0, 1, 1000),
                stack(&["malloc", "small", "other"], 1, 30, 300),
            ],
            ..RunReport::default()
        };
        let (s, unnamed) = sites(&r);
        assert_eq!(unnamed, 0);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].function.as_str(), s[0].calls), ("big", 1));
        assert_eq!(
            (s[1].function.as_str(), s[1].calls, s[1].bytes),
            ("small", 40, 400)
        );
        assert_eq!(s[1].frames[2].name(), "other");
    }

    #[test]
    fn plan_covers_first_occurrences_first_and_skips_unreached() {
        let site = |calls| Site {
            function: "f".into(),
            calls,
            bytes: 0,
            frames: vec![],
        };
        let sites = [site(5), site(1)];
        let (p, over) = plan(&sites, &[3, 1, 37], 10);
        let got: Vec<(usize, u64)> = p.iter().map(|p| (p.site, p.occurrence)).collect();
        assert_eq!(got, vec![(0, 1), (1, 1), (0, 3)]);
        assert_eq!(over, 0);
        let (p, over) = plan(&sites, &[1, 3], 2);
        assert_eq!(p.len(), 2);
        assert_eq!(over, 1);
    }
}
