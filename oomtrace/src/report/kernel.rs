//! `--kernel`'s part of the report: kernel allocations by kernel stack (`kernel_stacks`), and
//! the text section that shows them.

use std::fmt::Write as _;

use serde::Serialize;

use super::human_bytes;
use crate::model::Model;
use crate::model::growth::{Growth, GrowthClass, GrowthConfig};
use crate::model::kernel::{KernelCounts, source_name};

/// Kernel frames shown per stack in the text report (JSON has them all).
const TEXT_FRAMES: usize = 16;

/// Functions whose presence on a kernel stack means the allocation ran in interrupt context
/// (hardware interrupt, softirq, NMI) on top of the process it is attributed to.
const INTERRUPT_FUNCTIONS: &[&str] = &[
    "handle_softirqs",
    "__do_softirq",
    "do_softirq",
    "common_interrupt",
    "asm_common_interrupt",
    "exc_nmi",
    "asm_exc_nmi",
];

/// Where kernel stacks' frames and names come from: the kernel's stack map and kallsyms live,
/// the recording offline.
pub trait KernelSymbolSource {
    /// The return addresses stored under kernel stack id `stack_id`, innermost first.
    fn walk(&self, stack_id: u32) -> Option<Vec<u64>>;
    /// The named frame of a kernel address.
    fn frame(&mut self, addr: u64) -> KernelFrame;
}

/// One kernel frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelFrame {
    /// The return address.
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    /// The kernel function, if kallsyms knew it.
    pub function: Option<String>,
    /// The loadable module it is in (`null`: the kernel image).
    pub module: Option<String>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// One kernel stack in the report (`kernel_stacks[]`).
#[derive(Clone, Debug, Serialize)]
pub struct KernelStackReport {
    /// The process in whose context the allocations happened.
    pub pid: u32,
    /// `page`, `slab`, `vmalloc` or `gpu`.
    pub source: &'static str,
    /// Its figures when tracing ended (frees are by anyone, not only the process).
    #[serde(flatten)]
    pub counts: KernelCounts,
    /// Made in interrupt context on top of the process (its frames show the interrupt entry).
    pub interrupt: bool,
    /// Growth of its outstanding bytes over time.
    pub growth: Growth,
    /// Innermost first.
    pub frames: Vec<KernelFrame>,
    /// The kernel's stack id (recordings key frames by it).
    #[serde(skip)]
    pub stack_id: i32,
}

/// Every kernel stack of the model, by peak outstanding bytes, then outstanding bytes.
pub fn kernel_stacks(model: &Model, src: &mut dyn KernelSymbolSource) -> Vec<KernelStackReport> {
    let cfg = GrowthConfig::default();
    let mut out: Vec<KernelStackReport> = model
        .kernel
        .stacks()
        .iter()
        .map(|s| {
            let frames: Vec<KernelFrame> = match s.key.stack_id {
                id if id >= 0 => src
                    .walk(id as u32)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| src.frame(a))
                    .collect(),
                _ => Vec::new(),
            };
            let c = s.counts;
            KernelStackReport {
                pid: s.key.pid,
                source: source_name(s.key.source),
                counts: c,
                interrupt: frames.iter().any(in_interrupt),
                growth: model
                    .timeline
                    .stack_growth(s.key.pid, &s.key.series_key(), &cfg),
                frames,
                stack_id: s.key.stack_id,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let (a_c, b_c) = (&a.counts, &b.counts);
        b_c.peak_outstanding_bytes
            .cmp(&a_c.peak_outstanding_bytes)
            .then(b_c.outstanding_bytes.cmp(&a_c.outstanding_bytes))
            .then(b_c.allocated_bytes.cmp(&a_c.allocated_bytes))
            .then(a.pid.cmp(&b.pid))
            .then(a.stack_id.cmp(&b.stack_id))
    });
    out
}

fn in_interrupt(f: &KernelFrame) -> bool {
    f.function.as_deref().is_some_and(|name| {
        INTERRUPT_FUNCTIONS.contains(&name)
            || name.starts_with("asm_sysvec_")
            || name.starts_with("sysvec_")
    })
}

/// Appends the kernel section of the text report (the `top` stacks by peak).
pub fn render_text(s: &mut String, stacks: &[KernelStackReport], top: usize) {
    let shown: Vec<_> = stacks
        .iter()
        .filter(|k| k.counts.allocs > 0)
        .take(top)
        .collect();
    if shown.is_empty() {
        let _ = writeln!(s, "\nKernel: no kernel allocations seen.");
        return;
    }
    let _ = writeln!(
        s,
        "\nTop {} kernel stacks by peak outstanding bytes:",
        shown.len()
    );
    for (i, k) in shown.iter().enumerate() {
        let _ = writeln!(
            s,
            "\n#{:<3} {}{}: {} outstanding, peak {}  [pid {}; {} allocated in {} call(s); {} freed; {}{}]",
            i + 1,
            k.source,
            if k.interrupt { " (interrupt)" } else { "" },
            human_bytes(k.counts.outstanding_bytes),
            human_bytes(k.counts.peak_outstanding_bytes),
            k.pid,
            human_bytes(k.counts.allocated_bytes),
            k.counts.allocs,
            k.counts.frees,
            growth_word(&k.growth),
            if k.frames.is_empty() {
                "; no stack"
            } else {
                ""
            },
        );
        for f in k.frames.iter().take(TEXT_FRAMES) {
            let name = f.function.as_deref().unwrap_or("??");
            match &f.module {
                Some(m) => {
                    let _ = writeln!(s, "       {name} [{m}]");
                }
                None => {
                    let _ = writeln!(s, "       {name}");
                }
            }
        }
        if k.frames.len() > TEXT_FRAMES {
            let _ = writeln!(s, "       … {} more", k.frames.len() - TEXT_FRAMES);
        }
    }
}

fn growth_word(g: &Growth) -> String {
    match g.class {
        GrowthClass::Growing => format!("growing {}/s", human_bytes(g.bytes_per_s.max(0.0) as u64)),
        GrowthClass::Bounded => "bounded".to_owned(),
        GrowthClass::Shrinking => "shrinking".to_owned(),
        GrowthClass::Unknown => "growth unknown".to_owned(),
    }
}

/// The live source: the kernel-stack map and kallsyms (addresses stay raw without them).
pub struct LiveKernelSymbols<'a> {
    /// Reads the kernel-stack map.
    pub walk: &'a dyn Fn(u32) -> Option<Vec<u64>>,
    /// The kernel's symbols.
    pub kallsyms: Option<&'a crate::kallsyms::Kallsyms>,
}

impl KernelSymbolSource for LiveKernelSymbols<'_> {
    fn walk(&self, stack_id: u32) -> Option<Vec<u64>> {
        (self.walk)(stack_id)
    }

    fn frame(&mut self, addr: u64) -> KernelFrame {
        let sym = self.kallsyms.and_then(|k| k.lookup(addr));
        KernelFrame {
            addr,
            function: sym.map(|s| s.name.clone()),
            module: sym.and_then(|s| s.module.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomtrace_common::{EventKind, KernelSource, MemEvent};

    struct Fixed;

    impl KernelSymbolSource for Fixed {
        fn walk(&self, stack_id: u32) -> Option<Vec<u64>> {
            match stack_id {
                1 => Some(vec![0x10, 0x20]),
                2 => Some(vec![0x30, 0x40]),
                _ => None,
            }
        }

        fn frame(&mut self, addr: u64) -> KernelFrame {
            let name = match addr {
                0x10 => "__alloc_frozen_pages_noprof",
                0x20 => "anon_pipe_write",
                0x30 => "kmalloc_trace",
                _ => "handle_softirqs",
            };
            KernelFrame {
                addr,
                function: Some(name.to_owned()),
                module: None,
            }
        }
    }

    fn ev(kind: EventKind, source: KernelSource, stack: i32, addr: u64, size: u64) -> MemEvent {
        MemEvent {
            kind: kind as u16,
            alloc_fn: source as u16,
            tgid: 7,
            tid: 7,
            stack_id: stack,
            ts_ns: 1,
            addr,
            size,
            old_addr: 0,
            call_site: 0,
            aux: 0,
        }
    }

    #[test]
    fn sorted_by_peak_with_frames_and_interrupt_flag() {
        let mut model = Model::new();
        // Stack 2 (slab, in a softirq): 3 × 100 bytes, still held. Stack 1: 4 pages, all freed.
        for a in 0..3 {
            model.apply(&ev(
                EventKind::KAlloc,
                KernelSource::Slab,
                2,
                0x100 + a,
                100,
            ));
        }
        for pfn in 0..4 {
            model.apply(&ev(EventKind::KAlloc, KernelSource::Page, 1, pfn, 4096));
        }
        for pfn in 0..4 {
            model.apply(&ev(EventKind::KFree, KernelSource::Page, -1, pfn, 4096));
        }
        let stacks = kernel_stacks(&model, &mut Fixed);
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].source, "page");
        assert_eq!(stacks[0].counts.peak_outstanding_bytes, 4 * 4096);
        assert_eq!(stacks[0].counts.outstanding_bytes, 0);
        assert_eq!(stacks[0].counts.frees, 4);
        assert!(!stacks[0].interrupt);
        assert_eq!(
            stacks[0].frames[1].function.as_deref(),
            Some("anon_pipe_write")
        );
        assert_eq!(stacks[1].source, "slab");
        assert_eq!(stacks[1].counts.outstanding_bytes, 300);
        assert!(stacks[1].interrupt);
        let json = serde_json::to_value(&stacks[0]).unwrap();
        assert_eq!(json["frames"][0]["addr"], "0x10");
        assert!(json.get("stack_id").is_none());
        let mut text = String::new();
        render_text(&mut text, &stacks, 10);
        assert!(text.contains("#1   page: 0 B outstanding, peak 16.00 KiB  [pid 7; 16.00 KiB allocated in 4 call(s); 4 freed;"), "{text}");
        assert!(text.contains("slab (interrupt)"), "{text}");
    }

    #[test]
    fn a_kernel_stack_that_keeps_growing_is_classified_growing() {
        let mut model = Model::new();
        let tick = |ts_ns: u64| MemEvent {
            kind: EventKind::Tick as u16,
            ts_ns,
            ..ev(EventKind::Tick, KernelSource::Page, -1, 0, 0)
        };
        // One page a second for a minute, never freed: a kernel-side leak.
        for s in 0..60u64 {
            let mut a = ev(EventKind::KAlloc, KernelSource::Page, 1, s, 4096);
            a.ts_ns = s * 1_000_000_000;
            model.apply(&a);
            model.apply(&tick(s * 1_000_000_000 + 500_000_000));
        }
        let stacks = kernel_stacks(&model, &mut Fixed);
        assert_eq!(stacks[0].growth.class, GrowthClass::Growing);
        let rate = stacks[0].growth.bytes_per_s;
        assert!((rate - 4096.0).abs() < 1.0, "{rate}");
    }
}
