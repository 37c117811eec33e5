//! `--kernel`: kernel allocations per (process, source, kernel stack): outstanding bytes, the
//! most ever outstanding, bytes and count allocated, frees.
//!
//! The table is model-wide, not per process: a kernel free happens in whatever context
//! releases the memory (another process, a kworker, an interrupt), so it is matched to its
//! allocation by (source, address) alone. Kernel memory can outlive the process that allocated
//! it (a pipe passed on), so stacks stay after the process exits; both tables are capped.

use std::collections::HashMap;

use oomtrace_common::{EventKind, KernelSource, MemEvent};

use super::StackKey;

/// Kernel stacks kept; later distinct ones are folded into one stack per (pid, source).
pub const MAX_KERNEL_STACKS: usize = 65_536;
/// Live kernel allocations tracked; past this they are counted but not tracked.
pub const MAX_KERNEL_LIVE: usize = 4 * 1024 * 1024;
/// Frees seen before their allocation (two CPUs racing to the ring) kept for pairing.
const MAX_EARLY_FREES: usize = 4096;
/// An early free older than this (relative to the allocation) is a stale one, not a race.
const EARLY_FREE_WINDOW_NS: u64 = 1_000_000_000;
/// `StackKey::generation` of kernel stacks in the time series (no exec reaches it).
pub const KERNEL_GENERATION: u32 = u32::MAX;

/// Identifies a kernel stack: process, source and the kernel's stack id (negative: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelKey {
    /// The process in whose context the allocations happened.
    pub pid: u32,
    /// A [`KernelSource`] as `u16`.
    pub source: u16,
    /// Id in the kernel-stack map.
    pub stack_id: i32,
}

impl KernelKey {
    /// The key of this stack's time series (kernel stacks share the timeline with user ones).
    pub fn series_key(&self) -> StackKey {
        StackKey {
            generation: KERNEL_GENERATION,
            call_site: u64::from(self.source),
            stack_id: self.stack_id,
        }
    }
}

/// Statistics of one kernel stack (flattened into the report's `kernel_stacks[]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounts {
    /// Bytes allocated and not freed yet.
    pub outstanding_bytes: u64,
    /// The most bytes ever outstanding at once.
    pub peak_outstanding_bytes: u64,
    /// Allocations not freed yet.
    pub outstanding_allocs: u64,
    /// Bytes over all allocations.
    pub allocated_bytes: u64,
    /// Allocations.
    pub allocs: u64,
    /// Frees of its allocations.
    pub frees: u64,
}

/// A kernel stack and its statistics.
#[derive(Clone, Debug)]
pub struct KernelStack {
    /// Which stack.
    pub key: KernelKey,
    /// Its statistics.
    pub counts: KernelCounts,
}

/// What the kernel table could not account exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLosses {
    /// Frees that matched no allocation (their allocation's event was lost).
    pub unknown_frees: u64,
    /// Allocations counted but not tracked because of [`MAX_KERNEL_LIVE`].
    pub untracked: u64,
    /// Allocations folded into an overflow stack because of [`MAX_KERNEL_STACKS`].
    pub folded: u64,
}

#[derive(Clone, Copy, Debug)]
struct Live {
    stack: u32,
    size: u64,
}

/// All kernel stacks and the live allocations behind them.
#[derive(Debug, Default)]
pub struct KernelTable {
    /// `--kernel` was on: the report shows the kernel section even when it is empty.
    pub enabled: bool,
    stacks: Vec<KernelStack>,
    index: HashMap<KernelKey, u32>,
    live: HashMap<(u16, u64), Live>,
    early: HashMap<(u16, u64), u64>,
    /// What could not be accounted exactly.
    pub losses: KernelLosses,
}

impl KernelTable {
    /// Applies a `KAlloc` or `KFree` (other kinds are ignored).
    pub fn apply(&mut self, ev: &MemEvent) {
        match EventKind::from_u16(ev.kind) {
            Some(EventKind::KAlloc) => self.alloc(ev),
            Some(EventKind::KFree) => self.free(ev),
            _ => {}
        }
    }

    /// Stacks in first-seen order.
    pub fn stacks(&self) -> &[KernelStack] {
        &self.stacks
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Live kernel allocations tracked now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    fn stack(&mut self, key: KernelKey) -> u32 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let key = if self.stacks.len() >= MAX_KERNEL_STACKS {
            self.losses.folded += 1;
            KernelKey {
                stack_id: -1,
                ..key
            }
        } else {
            key
        };
        *self.index.entry(key).or_insert_with(|| {
            self.stacks.push(KernelStack {
                key,
                counts: KernelCounts::default(),
            });
            (self.stacks.len() - 1) as u32
        })
    }

    fn alloc(&mut self, ev: &MemEvent) {
        let source = ev.alloc_fn;
        let stack = self.stack(KernelKey {
            pid: ev.tgid,
            source,
            stack_id: ev.stack_id,
        });
        let c = &mut self.stacks[stack as usize].counts;
        c.allocated_bytes += ev.size;
        c.allocs += 1;
        let addr = (source, ev.addr);
        if let Some(freed_ns) = self.early.remove(&addr)
            && freed_ns.saturating_add(EARLY_FREE_WINDOW_NS) >= ev.ts_ns
        {
            // Its free overtook it on the way through the ring: allocated and gone.
            c.frees += 1;
            c.peak_outstanding_bytes = c.peak_outstanding_bytes.max(c.outstanding_bytes + ev.size);
            self.losses.unknown_frees = self.losses.unknown_frees.saturating_sub(1);
            return;
        }
        if self.live.len() >= MAX_KERNEL_LIVE && !self.live.contains_key(&addr) {
            self.losses.untracked += 1;
            return;
        }
        // An address handed out twice means its free was lost: release the old one first.
        if let Some(old) = self.live.insert(
            addr,
            Live {
                stack,
                size: ev.size,
            },
        ) {
            self.release(old);
        }
        let c = &mut self.stacks[stack as usize].counts;
        c.outstanding_bytes += ev.size;
        c.outstanding_allocs += 1;
        c.peak_outstanding_bytes = c.peak_outstanding_bytes.max(c.outstanding_bytes);
    }

    fn release(&mut self, l: Live) {
        let c = &mut self.stacks[l.stack as usize].counts;
        c.outstanding_bytes = c.outstanding_bytes.saturating_sub(l.size);
        c.outstanding_allocs = c.outstanding_allocs.saturating_sub(1);
        c.frees += 1;
    }

    fn free(&mut self, ev: &MemEvent) {
        match self.live.remove(&(ev.alloc_fn, ev.addr)) {
            Some(l) => self.release(l),
            None => {
                self.losses.unknown_frees += 1;
                if self.early.len() < MAX_EARLY_FREES {
                    self.early.insert((ev.alloc_fn, ev.addr), ev.ts_ns);
                }
            }
        }
    }

    /// Every stack's (pid, series key, outstanding bytes), for the time series.
    pub fn samples(&self) -> impl Iterator<Item = (u32, StackKey, u64)> + '_ {
        self.stacks
            .iter()
            .map(|s| (s.key.pid, s.key.series_key(), s.counts.outstanding_bytes))
    }
}

/// The report name of a [`KernelSource`] code.
pub fn source_name(source: u16) -> &'static str {
    match KernelSource::from_u16(source) {
        Some(KernelSource::Page) => "page",
        Some(KernelSource::Slab) => "slab",
        Some(KernelSource::Vmalloc) => "vmalloc",
        Some(KernelSource::Gpu) => "gpu",
        None => "unknown",
    }
}

/// What became of one DRM/TTM probe (report key `kernel_probes`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelProbe {
    /// Kernel function or `category:tracepoint`.
    pub name: String,
    /// `fentry`, `fexit` or `tracepoint`.
    pub kind: &'static str,
    /// `attached`, `absent`, `refused` or `unused`.
    pub status: &'static str,
    /// Why, in a few words.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        kind: EventKind,
        pid: u32,
        source: KernelSource,
        stack: i32,
        addr: u64,
        size: u64,
    ) -> MemEvent {
        MemEvent {
            kind: kind as u16,
            alloc_fn: source as u16,
            tgid: pid,
            tid: pid,
            stack_id: stack,
            ts_ns: 1000,
            addr,
            size,
            old_addr: 0,
            call_site: 0,
            aux: 0,
        }
    }

    fn alloc(pid: u32, source: KernelSource, stack: i32, addr: u64, size: u64) -> MemEvent {
        ev(EventKind::KAlloc, pid, source, stack, addr, size)
    }

    fn free(pid: u32, source: KernelSource, addr: u64) -> MemEvent {
        ev(EventKind::KFree, pid, source, -1, addr, 0)
    }

    #[test]
    fn peak_outstanding_and_frees_from_any_context() {
        let mut t = KernelTable::default();
        for pfn in 0..8 {
            t.apply(&alloc(10, KernelSource::Page, 3, 0x1000 + pfn, 4096));
        }
        // Freed by another process (pid 99): still matched to pid 10's stack.
        for pfn in 0..8 {
            t.apply(&free(99, KernelSource::Page, 0x1000 + pfn));
        }
        t.apply(&alloc(10, KernelSource::Page, 3, 0x2000, 8192));
        let s = &t.stacks()[0];
        assert_eq!(t.stacks().len(), 1);
        assert_eq!(
            s.key,
            KernelKey {
                pid: 10,
                source: 0,
                stack_id: 3
            }
        );
        assert_eq!(
            s.counts,
            KernelCounts {
                outstanding_bytes: 8192,
                peak_outstanding_bytes: 8 * 4096,
                outstanding_allocs: 1,
                allocated_bytes: 8 * 4096 + 8192,
                allocs: 9,
                frees: 8,
            }
        );
        assert_eq!(t.losses, KernelLosses::default());
    }

    #[test]
    fn sources_do_not_pair_with_each_other() {
        let mut t = KernelTable::default();
        t.apply(&alloc(1, KernelSource::Slab, 1, 0xffff_8880_0000_1000, 64));
        // A page free with the same number is another thing entirely.
        t.apply(&free(1, KernelSource::Page, 0xffff_8880_0000_1000));
        assert_eq!(t.stacks()[0].counts.outstanding_bytes, 64);
        assert_eq!(t.losses.unknown_frees, 1);
    }

    #[test]
    fn a_free_that_overtook_its_allocation_pairs_with_it() {
        let mut t = KernelTable::default();
        t.apply(&free(1, KernelSource::Page, 7));
        t.apply(&alloc(1, KernelSource::Page, 2, 7, 4096));
        let c = t.stacks()[0].counts;
        assert_eq!(
            (c.outstanding_bytes, c.peak_outstanding_bytes, c.frees),
            (0, 4096, 1)
        );
        assert_eq!(t.losses.unknown_frees, 0);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn a_reused_address_releases_the_lost_one() {
        let mut t = KernelTable::default();
        t.apply(&alloc(1, KernelSource::Vmalloc, 1, 0x10, 100));
        t.apply(&alloc(1, KernelSource::Vmalloc, 2, 0x10, 300));
        assert_eq!(t.stacks()[0].counts.outstanding_bytes, 0);
        assert_eq!(t.stacks()[1].counts.outstanding_bytes, 300);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn stacks_are_per_process_and_source() {
        let mut t = KernelTable::default();
        t.apply(&alloc(1, KernelSource::Page, 5, 1, 4096));
        t.apply(&alloc(2, KernelSource::Page, 5, 2, 4096));
        t.apply(&alloc(1, KernelSource::Slab, 5, 3, 32));
        assert_eq!(t.stacks().len(), 3);
        let samples: Vec<_> = t.samples().collect();
        assert_eq!(samples[2].1.generation, KERNEL_GENERATION);
        assert_eq!(samples[2].2, 32);
        assert_eq!(source_name(samples[2].1.call_site as u16), "slab");
    }
}
