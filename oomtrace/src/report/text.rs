//! The human-readable report: losses first, then processes, then the top stacks.

use std::fmt::Write as _;

use super::{Report, human_bytes};
use crate::model::growth::GrowthClass;
use crate::symbols::Frame;

/// Renders `report` with the `top` largest stacks.
pub fn render(report: &Report, top: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "oomtrace: {} process(es) traced for {:.2} s — lost events: {}, unknown frees: {}, stack collisions: {}",
        report.processes.len(),
        report.duration_s,
        report.lost_events,
        report.unknown_frees,
        report.stack_collisions
    );
    if let Some(line) = crate::mode::text_line(&report.mode) {
        let _ = writeln!(s, "{line}");
    }
    if let Some(cost) = &report.tracer_cost {
        s.push_str(&cost.render_text());
    }
    if report.mismatched_frees > 0 {
        let _ = writeln!(
            s,
            "warning: {} free(s) went to another allocator than the one that allocated the block \
             (a mix-up such as je_free of a glibc block): those blocks are still counted as held",
            report.mismatched_frees
        );
    }
    if let Some(limit) = &report.self_limit {
        let _ = writeln!(
            s,
            "warning: tracing stopped when oomtrace's own memory reached {} (--self-max {}): \
             the figures below cover what was traced until then",
            human_bytes(limit.resident_bytes),
            human_bytes(limit.limit_bytes)
        );
    }
    if let Some(late) = &report.late_attach {
        let _ = writeln!(
            s,
            "late attach: {} process(es) were probed {:.1} ms (median, max {:.1} ms) after their \
             fork: what they allocated before that is not counted",
            late.processes, late.median_ms, late.max_ms
        );
    }
    if report.stacks_truncated + report.stacks_incomplete > 0 {
        let _ = writeln!(
            s,
            "stacks: {} cut at --stack-depth, {} whose unwinding stopped early (marked per stack)",
            report.stacks_truncated, report.stacks_incomplete
        );
    }
    if report.python_truncated + report.python_failed > 0 {
        let _ = writeln!(
            s,
            "python stacks: {} cut at --python-depth, {} whose Python frames could not all be read \
             (marked per stack)",
            report.python_truncated, report.python_failed
        );
    }
    if report.lost_events > 0 {
        let _ = writeln!(
            s,
            "warning: {} events were lost (ring buffer full: try a larger --ring-buffer-kib): the figures below are incomplete",
            report.lost_events
        );
    }
    let _ = writeln!(
        s,
        "\n{:>8}  {:<16} {:>12} {:>9} {:>12} {:>9} {:>9} {:>7}  EXIT",
        "PID", "COMM", "OUTSTANDING", "BLOCKS", "ALLOCATED", "ALLOCS", "FREES", "FAILED"
    );
    for p in &report.processes {
        let exit = match (p.exit_code, p.signal) {
            (_, Some(sig)) => match &p.killed_by {
                Some(k) => format!("signal {sig} {k}"),
                None => format!("signal {sig}"),
            },
            (Some(code), None) => format!("{code}"),
            (None, None) => "running".to_owned(),
        };
        let c = &p.counts;
        let _ = writeln!(
            s,
            "{:>8}  {:<16} {:>12} {:>9} {:>12} {:>9} {:>9} {:>7}  {}",
            p.pid,
            p.comm,
            human_bytes(c.outstanding_bytes),
            c.outstanding_allocs,
            human_bytes(c.allocated_bytes),
            c.allocs,
            c.frees,
            c.failed_allocs,
            exit
        );
    }
    super::vitals::render_text(&mut s, &report.processes);
    super::leaks::render_text(&mut s, report);
    super::faults::render_text(&mut s, report);
    if let Some(gpu) = &report.gpu {
        gpu.render(&mut s, growth_word);
    }
    let shown: Vec<_> = report
        .stacks
        .iter()
        .filter(|st| st.outstanding_bytes > 0 || st.failed_allocs > 0)
        .take(top)
        .collect();
    if shown.is_empty() {
        let _ = writeln!(s, "\nNo memory outstanding.");
        return with_kernel(s, report, top);
    }
    match crate::mode::text_table_title(&report.mode) {
        Some(title) => {
            let _ = writeln!(s, "\nTop {} stacks by {title}:", shown.len());
        }
        None => {
            let _ = writeln!(s, "\nTop {} stacks by outstanding bytes:", shown.len());
        }
    }
    for (i, st) in shown.iter().enumerate() {
        let _ = write!(
            s,
            "\n#{:<3} {} in {} block(s)  [pid {}; {} allocated in {} call(s)",
            i + 1,
            human_bytes(st.outstanding_bytes),
            st.outstanding_allocs,
            st.pid,
            human_bytes(st.allocated_bytes),
            st.allocs
        );
        if st.failed_allocs > 0 {
            let _ = write!(s, "; {} failed", st.failed_allocs);
        }
        let _ = write!(s, "; {}", growth_word(&st.growth));
        if let Some(z) = st.sizes {
            let _ = write!(s, "; size p50 {}", human_bytes(z.p50));
        }
        if let Some(r) = st.resident_bytes {
            let _ = write!(s, "; {} resident", human_bytes(r));
        }
        if let Some(l) = &st.leak {
            s.push_str(&super::leaks::stack_words(l));
        }
        let _ = writeln!(s, "]");
        for f in &st.frames {
            let _ = writeln!(s, "       {}", frame_line(f));
        }
        if st.site > 0
            && let Some(site) = st.frames.get(st.site)
        {
            let _ = writeln!(
                s,
                "       [site: {} via {}]",
                super::display_name(site),
                st.via.join(" ← ")
            );
        }
        let notes: Vec<&str> = st
            .walk
            .iter()
            .copied()
            .filter(|w| !matches!(*w, "complete" | "frame_pointers"))
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(s, "       [stack: {}]", notes.join(", "));
        }
    }
    with_kernel(s, report, top)
}

/// Appends the `--kernel` section, when the report has one.
fn with_kernel(mut s: String, report: &Report, top: usize) -> String {
    if let Some(k) = &report.kernel_stacks {
        super::kernel::render_text(&mut s, k, top);
    }
    s
}

fn growth_word(g: &crate::model::growth::Growth) -> String {
    match g.class {
        GrowthClass::Growing => {
            format!("▲ growing {}/s", human_bytes(g.bytes_per_s.max(0.0) as u64))
        }
        GrowthClass::Bounded => "■ bounded".to_owned(),
        GrowthClass::Shrinking => "▼ shrinking".to_owned(),
        GrowthClass::Unknown => "· growth unknown".to_owned(),
    }
}

/// One frame as the text reports print it: `function (file:line) [module]` (an unnamed one as
/// `module+0xoffset`).
pub fn frame_line(f: &Frame) -> String {
    let mut line = super::display_name(f);
    if let (Some(file), Some(l)) = (&f.file, f.line) {
        let short = file.rsplit('/').next().unwrap_or(file);
        let _ = write!(line, " ({short}:{l})");
    }
    match &f.module {
        Some(m) => {
            let _ = write!(line, " [{m}]");
        }
        None => {
            let _ = write!(line, " [{:#x}]", f.addr);
        }
    }
    line
}
