//! The report's faults: per process, the allocator calls `run --fail-*` made fail (each with its
//! stack and what followed), where a fatal signal struck, and the hazards (allocations in signal
//! handlers, double, invalid and cross-allocator frees), in JSON and text.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use oomtrace_common::AllocFn;
use serde::Serialize;

use super::{Report, ResolvedStack, display_name, site};
use crate::model::process::faults::{FailHow, Faults, HazardCounts, HazardKind};
use crate::model::{Model, Process, StackKey};
use crate::symbols::Frame;

/// A process's faults (report key `faults` of a process; absent when it had none).
#[derive(Clone, Debug, Serialize)]
pub struct FaultsReport {
    /// All injected failures (those listed, and any past the cap).
    pub injections_total: u64,
    /// Injected failures, in the order the kernel chose them.
    pub injections: Vec<InjectionReport>,
    /// Where the fatal signal that ended the process struck, when it died of one.
    pub crash: Option<CrashReport>,
    /// Hazards by kind (all of them, those listed and any past the cap).
    pub hazard_counts: HazardCounts,
    /// Hazards, in order.
    pub hazards: Vec<HazardReport>,
}

/// One injected failure.
#[derive(Clone, Debug, Serialize)]
pub struct InjectionReport {
    /// 1-based, in the order the kernel chose them.
    pub seq: u32,
    /// How it failed: `null` (NULL, `errno` ENOMEM), `enomem` (returned), `throw` (bad_alloc).
    pub how: FailHow,
    /// The allocator function made to fail.
    pub function: &'static str,
    /// Requested bytes.
    pub size: u64,
    /// The thread.
    pub tid: u32,
    /// The call's stack; `frames[0]` is the call site.
    pub frames: Vec<Frame>,
    /// Index in `frames` of the allocation site (first frame outside the wrappers).
    pub site: usize,
}

/// Where a fatal signal struck.
#[derive(Clone, Debug, Serialize)]
pub struct CrashReport {
    /// The signal.
    pub signal: i32,
    /// The thread.
    pub tid: u32,
    /// The stack; `frames[0]` is the instruction it struck at.
    pub frames: Vec<Frame>,
}

/// One hazard.
#[derive(Clone, Debug, Serialize)]
pub struct HazardReport {
    /// What.
    pub kind: HazardKind,
    /// The allocator function called.
    pub function: &'static str,
    /// The signal being handled (allocations in handlers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Requested bytes (allocations in handlers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The block's address (bad frees), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The thread.
    pub tid: u32,
    /// The offending call's stack (the allocation, or the bad free).
    pub frames: Vec<Frame>,
    /// Index in `frames` of the first frame outside the allocator's wrappers.
    pub site: usize,
    /// The stack that allocated the block a bad free names, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc_frames: Option<Vec<Frame>>,
    /// The stack of the block's first free (double frees), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_free_frames: Option<Vec<Frame>>,
}

/// Stacks that only the faults name (crash and free stacks), per process: they are resolved
/// with the allocation stacks but are no allocation stacks of their own.
pub fn fault_only_keys(model: &Model) -> HashSet<(u32, StackKey)> {
    let mut out = HashSet::new();
    for p in model.processes() {
        let keys = p.fault_keys();
        if keys.is_empty() {
            continue;
        }
        let own: HashSet<StackKey> = p.stacks.iter().map(|s| s.key).collect();
        out.extend(
            keys.into_iter()
                .filter(|k| !own.contains(k))
                .map(|k| (p.pid, k)),
        );
    }
    out
}

/// Resolved frames by process and key, for the faults to name their stacks.
pub struct Frames<'a>(HashMap<(u32, StackKey), &'a [Frame]>);

impl<'a> Frames<'a> {
    /// Indexes `resolved`, when some process has faults (empty otherwise: nothing looks).
    pub fn index(model: &Model, resolved: &'a [ResolvedStack]) -> Self {
        let any = model.processes().any(|p| has_faults(&p.faults));
        let map = if any {
            resolved
                .iter()
                .map(|r| ((r.pid, r.key), r.frames.as_slice()))
                .collect()
        } else {
            HashMap::new()
        };
        Self(map)
    }

    fn of(&self, pid: u32, key: &StackKey) -> Vec<Frame> {
        self.0
            .get(&(pid, *key))
            .map(|f| f.to_vec())
            .unwrap_or_default()
    }
}

fn has_faults(f: &Faults) -> bool {
    f.injections_total > 0 || f.crash.is_some() || f.hazard_counts.total() > 0
}

/// The faults of `p` for the report (`None` when it had none).
pub fn build(p: &Process, frames: &Frames) -> Option<FaultsReport> {
    let f = &p.faults;
    if !has_faults(f) {
        return None;
    }
    let injections = f
        .injections
        .iter()
        .map(|i| {
            let frames = frames.of(p.pid, &i.key);
            InjectionReport {
                seq: i.seq,
                how: i.how,
                function: function_name(i.alloc_fn),
                size: i.size,
                tid: i.tid,
                site: site::site_index(&frames),
                frames,
            }
        })
        .collect();
    let crash = f.crash.map(|c| CrashReport {
        signal: c.signal,
        tid: c.tid,
        frames: frames.of(p.pid, &c.key),
    });
    let hazards = f
        .hazards
        .iter()
        .map(|h| {
            let in_handler = h.kind == HazardKind::SignalHandlerAlloc;
            let stack = frames.of(p.pid, &h.key);
            HazardReport {
                kind: h.kind,
                function: function_name(h.alloc_fn),
                signal: in_handler.then_some(h.signal),
                size: in_handler.then_some(h.addr),
                addr: (!in_handler).then(|| format!("{:#x}", h.addr)),
                tid: h.tid,
                site: site::site_index(&stack),
                frames: stack,
                alloc_frames: h.alloc_key.map(|k| frames.of(p.pid, &k)),
                first_free_frames: h.first_free_key.map(|k| frames.of(p.pid, &k)),
            }
        })
        .collect();
    Some(FaultsReport {
        injections_total: f.injections_total,
        injections,
        crash,
        hazard_counts: f.hazard_counts,
        hazards,
    })
}

/// The allocator function an event's `alloc_fn` names (its low byte).
pub fn function_name(alloc_fn: u16) -> &'static str {
    match AllocFn::from_u8((alloc_fn & 0xff) as u8) {
        Some(AllocFn::Malloc) => "malloc",
        Some(AllocFn::Calloc) => "calloc",
        Some(AllocFn::Realloc) => "realloc",
        Some(AllocFn::Reallocarray) => "reallocarray",
        Some(AllocFn::PosixMemalign) => "posix_memalign",
        Some(AllocFn::AlignedAlloc) => "aligned_alloc",
        Some(AllocFn::Memalign) => "memalign",
        Some(AllocFn::Valloc) => "valloc",
        Some(AllocFn::Pvalloc) => "pvalloc",
        Some(AllocFn::Syscall) => "mmap",
        Some(AllocFn::New) => "operator new",
        Some(AllocFn::Free) => "free",
        Some(AllocFn::Other) | None => "allocator call",
    }
}

/// A signal's name (`SIGSEGV`), or its number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// A hazard kind, in words.
pub fn kind_words(k: HazardKind) -> &'static str {
    match k {
        HazardKind::SignalHandlerAlloc => "allocation in a signal handler",
        HazardKind::DoubleFree => "double free",
        HazardKind::InvalidFree => "invalid free",
        HazardKind::CrossAllocatorFree => "cross-allocator free",
    }
}

/// What followed, in words: `exited with 1`, `killed by SIGSEGV`, `still running`.
fn followed(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(sig)) => format!("killed by {}", signal_name(sig)),
        (Some(c), None) => format!("exited with {c}"),
        (None, None) => "still running".to_owned(),
    }
}

fn frames_text(s: &mut String, frames: &[Frame], indent: &str) {
    if frames.is_empty() {
        let _ = writeln!(s, "{indent}(stack unknown)");
    }
    for f in frames {
        let _ = writeln!(s, "{indent}{}", super::text::frame_line(f));
    }
}

/// The text report's sections: injected failures, then hazards, per process.
pub fn render_text(s: &mut String, report: &Report) {
    let with: Vec<_> = report
        .processes
        .iter()
        .filter_map(|p| Some((p, p.faults.as_ref()?)))
        .collect();
    let injected: Vec<_> = with
        .iter()
        .filter(|(_, f)| f.injections_total > 0 || f.crash.is_some())
        .collect();
    if !injected.is_empty() {
        let total: u64 = injected.iter().map(|(_, f)| f.injections_total).sum();
        if total > 0 {
            let _ = writeln!(s, "\nInjected failures: {total}");
        } else {
            let _ = writeln!(s, "\nCrashes:");
        }
        for (p, f) in injected {
            let what = if f.injections_total > 0 {
                format!(
                    "{} injected, then {}",
                    f.injections_total,
                    followed(p.exit_code, p.signal)
                )
            } else {
                followed(p.exit_code, p.signal)
            };
            let _ = writeln!(s, "  pid {} ({}): {what}", p.pid, p.comm);
            for i in &f.injections {
                let site = i.frames.get(i.site).map(display_name);
                let _ = writeln!(
                    s,
                    "    #{} {}({}) failed ({}){}",
                    i.seq,
                    i.function,
                    i.size,
                    how_words(i.how),
                    site.map(|n| format!(" at {n}")).unwrap_or_default()
                );
                frames_text(s, &i.frames, "         ");
            }
            let shown = f.injections.len() as u64;
            if f.injections_total > shown {
                let _ = writeln!(s, "    … and {} more", f.injections_total - shown);
            }
            if let Some(c) = &f.crash {
                let _ = writeln!(
                    s,
                    "    {} struck (thread {}) at:",
                    signal_name(c.signal),
                    c.tid
                );
                frames_text(s, &c.frames, "         ");
            }
        }
    }
    let hazardous: Vec<_> = with
        .iter()
        .filter(|(_, f)| f.hazard_counts.total() > 0)
        .collect();
    if hazardous.is_empty() {
        return;
    }
    let total: u64 = hazardous.iter().map(|(_, f)| f.hazard_counts.total()).sum();
    let _ = writeln!(s, "\nHazards: {total}");
    for (p, f) in hazardous {
        let c = &f.hazard_counts;
        let _ = writeln!(
            s,
            "  pid {} ({}): {} allocation(s) in signal handlers, {} double free(s), {} invalid \
             free(s), {} cross-allocator free(s)",
            p.pid,
            p.comm,
            c.signal_handler_allocs,
            c.double_frees,
            c.invalid_frees,
            c.cross_allocator_frees
        );
        for h in &f.hazards {
            let mut head = format!("    {}: {}", kind_words(h.kind), h.function);
            if let Some(size) = h.size {
                let _ = write!(head, "({size})");
            }
            if let Some(addr) = &h.addr {
                let _ = write!(head, "({addr})");
            }
            if let Some(sig) = h.signal {
                let _ = write!(head, " while handling {}", signal_name(sig));
            }
            let _ = writeln!(s, "{head}, thread {}", h.tid);
            frames_text(s, &h.frames, "         ");
            if let Some(a) = &h.alloc_frames {
                let _ = writeln!(s, "      allocated at:");
                frames_text(s, a, "         ");
            }
            if let Some(ff) = &h.first_free_frames {
                let _ = writeln!(s, "      first freed at:");
                frames_text(s, ff, "         ");
            }
        }
    }
}

fn how_words(h: FailHow) -> &'static str {
    match h {
        FailHow::Null => "NULL, errno ENOMEM",
        FailHow::Enomem => "returned ENOMEM",
        FailHow::Throw => "threw std::bad_alloc",
    }
}

/// One stderr line per process that had injected failures, for `run --fail-*`.
pub fn summary_lines(report: &Report) -> Vec<String> {
    report
        .processes
        .iter()
        .filter_map(|p| {
            let f = p.faults.as_ref()?;
            if f.injections_total == 0 {
                return None;
            }
            let mut sites: Vec<String> = f
                .injections
                .iter()
                .filter_map(|i| i.frames.get(i.site).map(display_name))
                .collect();
            sites.dedup();
            sites.truncate(3);
            let mut line = format!(
                "oomtrace: injected {} allocation failure(s) in pid {} ({})",
                f.injections_total, p.pid, p.comm
            );
            if !sites.is_empty() {
                let _ = write!(line, " at {}", sites.join(", "));
            }
            let _ = write!(line, "; then {}", followed(p.exit_code, p.signal));
            if let Some(c) = &f.crash
                && let Some(top) = c.frames.first()
            {
                let _ = write!(line, " in {}", display_name(top));
            }
            Some(line)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use oomtrace_common::{EventKind, MemEvent};

    use super::*;
    use crate::report::{Losses, StackSource, SymbolSource};

    struct NoWalk;
    impl StackSource for NoWalk {
        fn walk(&self, _: u32) -> Option<crate::unwind::UserStack> {
            None
        }
    }

    /// Call sites 1, 2, 3, 4 are `ordinary`, `site`, `crashed_here`, `on_alarm`.
    struct Names;
    impl SymbolSource for Names {
        fn is_code(&self, _: u32, _: u32, _: u64) -> bool {
            true
        }
        fn frame(&mut self, _: u32, _: u32, addr: u64) -> Frame {
            let name = ["?", "ordinary", "site", "crashed_here", "on_alarm"][addr as usize];
            Frame {
                addr,
                function: Some(name.into()),
                module: Some("app".into()),
                ..Frame::default()
            }
        }
    }

    fn ev(kind: EventKind, addr: u64, size: u64, site: u64, aux: u64) -> MemEvent {
        MemEvent {
            kind: kind as u16,
            alloc_fn: AllocFn::Malloc as u16,
            tgid: 100,
            tid: 100,
            stack_id: -1,
            ts_ns: 0,
            addr,
            size,
            old_addr: 0,
            call_site: site,
            aux,
        }
    }

    #[test]
    fn injections_crash_and_hazards_with_their_stacks() {
        let mut m = Model::new();
        m.apply(&ev(EventKind::Alloc, 0x1000, 100, 1, 0));
        m.apply(&ev(EventKind::Injected, 0, 32, 2, 1));
        m.apply(&ev(EventKind::HandlerAlloc, 0, 48, 4, 14));
        m.apply(&ev(EventKind::Crash, 0, 0, 3, 11));
        let r = Report::build(&m, &NoWalk, &mut Names, 0, 1.0, Losses::default());
        // The crash and handler stacks are no allocation stacks of their own.
        let names: Vec<&str> = r
            .stacks
            .iter()
            .filter_map(|s| s.frames[0].function.as_deref())
            .collect();
        assert!(!names.contains(&"crashed_here"), "{names:?}");
        assert!(!names.contains(&"on_alarm"), "{names:?}");
        let f = r.processes[0].faults.as_ref().expect("faults");
        assert_eq!(f.injections_total, 1);
        let i = &f.injections[0];
        assert_eq!((i.seq, i.size, i.function), (1, 32, "malloc"));
        assert_eq!(i.frames[0].function.as_deref(), Some("site"));
        let c = f.crash.as_ref().expect("crash");
        assert_eq!(c.signal, 11);
        assert_eq!(c.frames[0].function.as_deref(), Some("crashed_here"));
        assert_eq!(f.hazard_counts.signal_handler_allocs, 1);
        let h = &f.hazards[0];
        assert_eq!((h.signal, h.size), (Some(14), Some(48)));
        assert_eq!(h.frames[0].function.as_deref(), Some("on_alarm"));

        let text = crate::report::text::render(&r, 10);
        assert!(text.contains("Injected failures: 1"), "{text}");
        assert!(
            text.contains("#1 malloc(32) failed (NULL, errno ENOMEM) at site"),
            "{text}"
        );
        assert!(text.contains("SIGSEGV struck (thread 100) at:"), "{text}");
        assert!(
            text.contains("allocation in a signal handler: malloc(48) while handling SIGALRM"),
            "{text}"
        );
        let json = r.to_json();
        assert!(json.contains("\"injections_total\": 1"), "{json}");
        let lines = summary_lines(&r);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("injected 1 allocation failure(s) in pid 100"),
            "{lines:?}"
        );
        assert!(lines[0].contains(" at site; then "), "{lines:?}");
    }

    #[test]
    fn processes_without_faults_have_no_section() {
        let mut m = Model::new();
        m.apply(&ev(EventKind::Alloc, 0x1000, 100, 1, 0));
        let r = Report::build(&m, &NoWalk, &mut Names, 0, 1.0, Losses::default());
        assert!(r.processes[0].faults.is_none());
        assert!(!r.to_json().contains("faults"));
        assert!(summary_lines(&r).is_empty());
    }
}
