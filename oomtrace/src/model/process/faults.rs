//! What went wrong in a process, beyond its bytes: the allocator calls `run --fail-*` made fail,
//! where a fatal signal struck, and hazards (allocations in signal handlers, bad frees).

use oomtrace_common::{MemEvent, inject};
use serde::Serialize;

use super::{Process, StackKey};

/// Injected failures kept per process (the rest are counted).
pub const MAX_INJECTIONS: usize = 1000;
/// Hazards kept per process and kind (the rest are counted).
pub const MAX_HAZARDS: usize = 200;
/// Recently freed blocks remembered per process, to tell a double free from an invalid one.
pub const MAX_FREED: usize = 4096;

/// One allocator call made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// 1-based, in the order the kernel chose them.
    pub seq: u32,
    /// How it was made to fail.
    pub how: FailHow,
    /// The call's stack.
    pub key: StackKey,
    /// Requested bytes.
    pub size: u64,
    /// `alloc_fn` of the call (function and family).
    pub alloc_fn: u16,
    /// The thread.
    pub tid: u32,
    /// When.
    pub ts_ns: u64,
}

/// How an injected call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailHow {
    /// Returned NULL with `errno` `ENOMEM`.
    Null,
    /// Returned `ENOMEM` (`posix_memalign`).
    Enomem,
    /// Threw `std::bad_alloc`.
    Throw,
}

impl FailHow {
    fn of(action: u32) -> Self {
        match action {
            inject::FAIL_ENOMEM => Self::Enomem,
            inject::FAIL_THROW => Self::Throw,
            _ => Self::Null,
        }
    }
}

/// Where a fatal signal struck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crash {
    /// The signal.
    pub signal: i32,
    /// The stack: its call site is the instruction it struck at.
    pub key: StackKey,
    /// The thread.
    pub tid: u32,
    /// When.
    pub ts_ns: u64,
}

/// A hazard: something the program did that it must not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hazard {
    /// What.
    pub kind: HazardKind,
    /// The stack of the offending call (the allocation, or the bad free).
    pub key: StackKey,
    /// The stack that allocated the block a bad free names, when known.
    pub alloc_key: Option<StackKey>,
    /// The stack of the block's earlier free (a double free), when known.
    pub first_free_key: Option<StackKey>,
    /// The block's address (bad frees), or the request's size (allocations).
    pub addr: u64,
    /// The signal being handled (allocations in handlers).
    pub signal: i32,
    /// `alloc_fn` of the call (function and family).
    pub alloc_fn: u16,
    /// The block's allocator family (cross-allocator frees).
    pub block_family: u8,
    /// The thread.
    pub tid: u32,
    /// When.
    pub ts_ns: u64,
}

/// Kinds of [`Hazard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HazardKind {
    /// An allocator call inside a signal handler (malloc is not async-signal-safe).
    SignalHandlerAlloc,
    /// A block freed twice.
    DoubleFree,
    /// A free of an address no allocator call returned.
    InvalidFree,
    /// A block freed through another allocator than the one that allocated it.
    CrossAllocatorFree,
}

/// The faults of one process.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Injected failures, in order (at most [`MAX_INJECTIONS`]).
    pub injections: Vec<Injection>,
    /// All injected failures.
    pub injections_total: u64,
    /// Where its fatal signal struck, when it died of one.
    pub crash: Option<Crash>,
    /// Hazards, in order (at most [`MAX_HAZARDS`] of each kind).
    pub hazards: Vec<Hazard>,
    /// All hazards, by kind.
    pub hazard_counts: HazardCounts,
}

/// Hazards counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HazardCounts {
    /// Allocations in signal handlers.
    pub signal_handler_allocs: u64,
    /// Double frees.
    pub double_frees: u64,
    /// Invalid frees.
    pub invalid_frees: u64,
    /// Cross-allocator frees.
    pub cross_allocator_frees: u64,
}

impl HazardCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.signal_handler_allocs
            + self.double_frees
            + self.invalid_frees
            + self.cross_allocator_frees
    }

    fn bump(&mut self, kind: HazardKind) -> u64 {
        let n = match kind {
            HazardKind::SignalHandlerAlloc => &mut self.signal_handler_allocs,
            HazardKind::DoubleFree => &mut self.double_frees,
            HazardKind::InvalidFree => &mut self.invalid_frees,
            HazardKind::CrossAllocatorFree => &mut self.cross_allocator_frees,
        };
        *n += 1;
        *n
    }
}

impl Faults {
    /// Keeps `h` (counted always, kept while its kind is under the cap).
    pub fn add_hazard(&mut self, h: Hazard) {
        if self.hazard_counts.bump(h.kind) as usize <= MAX_HAZARDS {
            self.hazards.push(h);
        }
    }
}

impl Process {
    /// An `Injected` event: the call it names was made to fail.
    pub(super) fn note_injection(&mut self, ev: &MemEvent) {
        let stack = self.stack(ev);
        let key = self.stacks[stack as usize].key;
        let f = &mut self.faults;
        f.injections_total += 1;
        if f.injections.len() < MAX_INJECTIONS {
            f.injections.push(Injection {
                seq: (ev.aux & 0xffff_ffff) as u32,
                how: FailHow::of((ev.aux >> 32) as u32),
                key,
                size: ev.size,
                alloc_fn: ev.alloc_fn,
                tid: ev.tid,
                ts_ns: ev.ts_ns,
            });
        }
    }

    /// A `Crash` event: where the fatal signal struck (the first one counts).
    pub(super) fn note_crash(&mut self, ev: &MemEvent) {
        if self.faults.crash.is_some() {
            return;
        }
        self.faults.crash = Some(Crash {
            signal: ev.aux as i32,
            key: self.key_of(ev),
            tid: ev.tid,
            ts_ns: ev.ts_ns,
        });
    }

    /// A `HandlerAlloc` event: an allocator call inside a signal handler.
    pub(super) fn note_handler_alloc(&mut self, ev: &MemEvent) {
        let key = self.key_of(ev);
        self.faults.add_hazard(Hazard {
            kind: HazardKind::SignalHandlerAlloc,
            key,
            alloc_key: None,
            first_free_key: None,
            addr: ev.size,
            signal: ev.aux as i32,
            alloc_fn: ev.alloc_fn,
            block_family: 0,
            tid: ev.tid,
            ts_ns: ev.ts_ns,
        });
    }

    /// The stack key an event names, in the current image.
    pub(super) fn key_of(&self, ev: &MemEvent) -> StackKey {
        StackKey {
            generation: self.generation,
            call_site: ev.call_site,
            stack_id: ev.stack_id,
        }
    }

    /// Every stack the faults name that is not an allocation stack of its own (crash and free
    /// stacks), for the report to resolve.
    pub fn fault_keys(&self) -> Vec<StackKey> {
        let f = &self.faults;
        let mut keys: Vec<StackKey> = f.crash.iter().map(|c| c.key).collect();
        for h in &f.hazards {
            keys.push(h.key);
            keys.extend(h.alloc_key);
            keys.extend(h.first_free_key);
        }
        keys.sort_by_key(|k| (k.generation, k.call_site, k.stack_id));
        keys.dedup();
        keys
    }
}

/// Recently freed blocks: address → (allocating stack, freeing stack), oldest forgotten first.
#[derive(Clone, Debug, Default)]
pub struct FreedRing {
    map: crate::model::fasthash::FastMap<u64, (StackKey, StackKey)>,
    order: std::collections::VecDeque<u64>,
}

impl FreedRing {
    fn remember(&mut self, addr: u64, alloc: StackKey, free: StackKey) {
        if self.map.insert(addr, (alloc, free)).is_none() {
            self.order.push_back(addr);
        }
        while self.order.len() > MAX_FREED {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// The address was handed out again: a free of it is no double free.
    pub(super) fn forget(&mut self, addr: u64) {
        if !self.map.is_empty() {
            self.map.remove(&addr);
        }
    }
}

impl Process {
    /// Judges a free that carries its call site: `block` is what the address held before (if
    /// anything), `freed` whether the free released it.
    pub(super) fn judge_free(&mut self, ev: &MemEvent, block: Option<super::Block>, freed: bool) {
        let free_key = self.key_of(ev);
        let hazard = |kind, alloc_key, first_free_key, block_family| Hazard {
            kind,
            key: free_key,
            alloc_key,
            first_free_key,
            addr: ev.addr,
            signal: 0,
            alloc_fn: ev.alloc_fn,
            block_family,
            tid: ev.tid,
            ts_ns: ev.ts_ns,
        };
        match block {
            Some(b) => {
                let alloc_key = self.stacks[b.stack() as usize].key;
                if freed {
                    self.freed.remember(ev.addr, alloc_key, free_key);
                } else {
                    let h = hazard(
                        HazardKind::CrossAllocatorFree,
                        Some(alloc_key),
                        None,
                        b.family(),
                    );
                    self.faults.add_hazard(h);
                }
            }
            // CPython's layer: optimized interpreters allocate most small objects through an
            // inlined pymalloc fast path that no probe sees, and free them through the
            // probed `PyObject_Free`. A layer free of an unseen block is no evidence of a bug.
            None if ev.family() == oomtrace_common::family::PY => {}
            None => {
                if let Some(&(alloc_key, first)) = self.freed.map.get(&ev.addr) {
                    let h = hazard(HazardKind::DoubleFree, Some(alloc_key), Some(first), 0);
                    self.faults.add_hazard(h);
                } else if !self.heap_partial {
                    let h = hazard(HazardKind::InvalidFree, None, None, 0);
                    self.faults.add_hazard(h);
                }
            }
        }
    }
}
