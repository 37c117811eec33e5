//! One traced process: its live blocks and per-stack tables, kept by DESIGN §2's rules.

use super::fasthash::FastMap;

use oomtrace_common::{EventKind, MemEvent};

use super::hist::{LifetimeHist, SizeDist};
use super::leak::LeakCounts;
use super::ranges::Ranges;
use crate::mode::Mode;

pub mod faults;
mod leaks;
mod mapped;
mod resident;
mod sampled;

pub use self::leaks::LeakBlock;
pub use self::mapped::{Mapped, MappedOwner, RegionTotals, resident_events};

/// Stacks kept per process; later distinct stacks are folded into one overflow stack.
pub const MAX_STACKS_PER_PROCESS: usize = 65_536;

/// Allocation statistics, for a stack or a whole process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Requested bytes still allocated.
    pub outstanding_bytes: u64,
    /// Blocks still allocated.
    pub outstanding_allocs: u64,
    /// Requested bytes over all successful allocations.
    pub allocated_bytes: u64,
    /// Successful allocations.
    pub allocs: u64,
    /// Frees of blocks seen allocated.
    pub frees: u64,
    /// Allocations that returned NULL (or failed mmaps).
    pub failed_allocs: u64,
}

impl Counts {
    fn alloc(&mut self, bytes: u64) {
        self.alloc_n(bytes, 1);
    }

    /// `blocks` allocations of `bytes` in all (more than one: a sampled block's weight).
    fn alloc_n(&mut self, bytes: u64, blocks: u64) {
        self.outstanding_bytes += bytes;
        self.outstanding_allocs += blocks;
        self.allocated_bytes += bytes;
        self.allocs += blocks;
    }

    fn release(&mut self, bytes: u64, gone: bool) {
        self.release_n(bytes, u64::from(gone));
    }

    fn release_n(&mut self, bytes: u64, blocks: u64) {
        self.outstanding_bytes = self.outstanding_bytes.saturating_sub(bytes);
        self.outstanding_allocs = self.outstanding_allocs.saturating_sub(blocks);
        self.frees += blocks;
    }
}

/// Identifies a stack within one process: the image it ran in, the exact call site, and the
/// kernel's stack id of the deeper frame-pointer walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    /// Bumped at each exec: addresses of different images must not mix.
    pub generation: u32,
    /// Return address at the allocator's entry (frame 0).
    pub call_site: u64,
    /// Kernel stack id; negative when none could be taken.
    pub stack_id: i32,
}

/// A stack's key and statistics.
#[derive(Clone, Debug)]
pub struct StackStats {
    /// Which stack.
    pub key: StackKey,
    /// Its statistics.
    pub counts: Counts,
    /// Sizes requested.
    pub sizes: SizeDist,
    /// Lifetimes (allocation to free) of its freed heap blocks, once it had a free.
    pub lifetimes: Option<Box<LifetimeHist>>,
    /// The most it held since the last tick: what the tick samples, so a buffer filled and
    /// freed between ticks shows its high-water mark, not wherever the tick happened to fall.
    pub interval_peak: u64,
    /// Direct mappings only: their resident bytes at the last `Resident` sample.
    pub resident: Option<u64>,
    /// What the leak scan at exit found among its blocks.
    pub leak: Option<Box<LeakCounts>>,
}

impl StackStats {
    /// What it holds in memory: the resident bytes of a direct mapping once sampled, else its
    /// outstanding bytes (what the growth and the OOM story use).
    pub fn held_bytes(&self) -> u64 {
        self.resident.unwrap_or(self.counts.outstanding_bytes)
    }
}

/// Stacks per process that keep a lifetime histogram (~21 KiB each).
pub const MAX_LIFETIME_HISTS: usize = 2048;

#[derive(Clone, Copy, Debug)]
struct Block {
    /// Bytes it counts for (its requested size; an estimate when sampled).
    size: u64,
    /// Its stack's index (low 24 bits: stacks are capped well below) and the allocator family
    /// that handed it out (high 8 bits): packed, since there is one of these per live block.
    stack_family: u32,
    /// Blocks it counts for (1; an estimate when sampled).
    blocks: u32,
    ts_ns: u64,
}

impl Block {
    fn stack(&self) -> u32 {
        self.stack_family & 0x00ff_ffff
    }

    fn family(&self) -> u8 {
        (self.stack_family >> 24) as u8
    }
}

const _: () = assert!(MAX_STACKS_PER_PROCESS < 1 << 24);

/// Who sent a process a signal (`signal:signal_generate`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignalSender {
    /// The signal.
    pub signal: i32,
    /// The sending process (`None`: the kernel itself — the OOM killer, a fault).
    pub pid: Option<u32>,
    /// Its name (`kernel` when the kernel sent it).
    pub comm: String,
    /// Its uid (`None` for the kernel).
    pub uid: Option<u32>,
}

impl std::fmt::Display for SignalSender {
    /// "from pid 123 (kill, uid 0)", or "from the kernel".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, self.uid) {
            (Some(pid), Some(uid)) => write!(f, "from pid {pid} ({}, uid {uid})", self.comm),
            _ => f.write_str("from the kernel"),
        }
    }
}

/// Signal senders kept per process (the latest of each signal, a few signals).
const MAX_SENDERS: usize = 4;

/// How a process ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitStatus {
    /// `exit()` code, when it exited normally.
    pub code: Option<i32>,
    /// Terminating signal, when one killed it.
    pub signal: Option<i32>,
}

/// Signals whose default action terminates the process.
const FATAL_SIGNALS: &[i32] = &[
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 25, 26, 27, 29, 30, 31,
];

/// A traced process.
#[derive(Debug)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent, when oomtrace saw the fork.
    pub ppid: Option<u32>,
    /// Command name (`/proc/PID/comm` or the kernel's at exec/exit).
    pub comm: String,
    /// Exec count: the image whose addresses the current stacks use.
    pub generation: u32,
    /// Set once the last thread exited.
    pub exit: Option<ExitStatus>,
    /// Whole-process statistics.
    pub totals: Counts,
    /// The most the process held since the last tick (as [`StackStats::interval_peak`]).
    pub interval_peak: u64,
    /// Per-stack statistics, in first-seen order.
    pub stacks: Vec<StackStats>,
    /// Frees of addresses never seen allocated (made before attach).
    pub unknown_frees: u64,
    /// Frees (or reallocs) through another allocator family than the one that allocated the
    /// block (`je_free` of a glibc block, say): never counted as frees; the block stays held.
    pub mismatched_frees: u64,
    /// The latest sender of each signal it was sent (a few).
    pub signal_senders: Vec<SignalSender>,
    /// Injected failures, where a fatal signal struck, hazards.
    pub faults: faults::Faults,
    /// Its heap is not all known: it was forked (the parent's blocks are not its own to the
    /// model) and has not exec'd since, or the block cap dropped some of its blocks. A free of an
    /// unknown address is then no hazard.
    heap_partial: bool,
    /// Recently freed blocks (frees that carry their call site only): a second free of one is a
    /// double free.
    freed: faults::FreedRing,
    /// Mapped regions: direct mappings, thread stacks and reservations, reserved and resident.
    pub mapped: Mapped,
    /// The leak scan at exit, once it ran (`run` holds its processes at their end).
    pub leaks: Option<LeakCounts>,
    index: FastMap<StackKey, u32>,
    blocks: FastMap<u64, Block>,
    ranges: Ranges,
    range_allocs: FastMap<u64, u32>,
    next_range_alloc: u64,
    brk: Option<u64>,
    last_exit_code: Option<i32>,
    last_signal: Option<i32>,
    lifetime_hists: usize,
    /// What its events measure (set by the model).
    pub mode: Mode,
    /// Stacks kept; later ones fold into one overflow stack (set by the model).
    pub max_stacks: usize,
}

impl Process {
    /// A process first seen now.
    pub fn new(pid: u32, ppid: Option<u32>) -> Self {
        Self {
            pid,
            ppid,
            comm: String::new(),
            generation: 0,
            exit: None,
            totals: Counts::default(),
            interval_peak: 0,
            stacks: Vec::new(),
            unknown_frees: 0,
            mismatched_frees: 0,
            signal_senders: Vec::new(),
            faults: faults::Faults::default(),
            heap_partial: ppid.is_some(),
            freed: faults::FreedRing::default(),
            mapped: Mapped::default(),
            leaks: None,
            index: FastMap::default(),
            blocks: FastMap::default(),
            ranges: Ranges::default(),
            range_allocs: FastMap::default(),
            next_range_alloc: 0,
            brk: None,
            last_exit_code: None,
            last_signal: None,
            lifetime_hists: 0,
            mode: Mode::Exact,
            max_stacks: MAX_STACKS_PER_PROCESS,
        }
    }

    /// Live heap blocks (for the tracer's memory bound).
    pub fn live_blocks(&self) -> usize {
        // (Growth mode's pages are range pieces: counted here too, under the same cap.)
        self.blocks.len() + self.range_allocs.len()
    }

    fn stack(&mut self, ev: &MemEvent) -> u32 {
        let key = StackKey {
            generation: self.generation,
            call_site: ev.call_site,
            stack_id: ev.stack_id,
        };
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let key = if self.stacks.len() >= self.max_stacks.min(MAX_STACKS_PER_PROCESS) {
            StackKey {
                generation: self.generation,
                call_site: 0,
                stack_id: -1,
            }
        } else {
            key
        };
        *self.index.entry(key).or_insert_with(|| {
            self.stacks.push(StackStats {
                key,
                counts: Counts::default(),
                sizes: SizeDist::default(),
                lifetimes: None,
                interval_peak: 0,
                resident: None,
                leak: None,
            });
            (self.stacks.len() - 1) as u32
        })
    }

    fn add_block(&mut self, ev: &MemEvent, addr: u64, size: u64) {
        let stack = self.stack(ev);
        self.freed.forget(addr);
        let (bytes, blocks) = sampled::weigh(ev, size);
        // An address handed out twice means we missed its free (lost event): release it first.
        if let Some(old) = self.blocks.insert(
            addr,
            Block {
                size: bytes,
                stack_family: stack | (u32::from(ev.family()) << 24),
                blocks,
                ts_ns: ev.ts_ns,
            },
        ) {
            self.release_block(old);
        }
        let st = &mut self.stacks[stack as usize];
        st.counts.alloc_n(bytes, blocks.into());
        st.sizes.record(size);
        st.interval_peak = st.interval_peak.max(st.counts.outstanding_bytes);
        self.totals.alloc_n(bytes, blocks.into());
        self.interval_peak = self.interval_peak.max(self.totals.outstanding_bytes);
    }

    /// The tick's samples, (whole process, per stack in order), each the most held since the
    /// previous tick; the next interval starts from what is held now.
    pub fn take_interval_peaks(&mut self) -> (u64, impl Iterator<Item = (StackKey, u64)> + '_) {
        let heap = std::mem::replace(&mut self.interval_peak, self.totals.outstanding_bytes)
            .max(self.totals.outstanding_bytes);
        // Direct mappings count by what is resident once sampled, not by what they reserve.
        let heap = match self.mapped.direct.resident_bytes {
            Some(r) => heap.saturating_sub(self.mapped.direct.reserved_bytes) + r,
            None => heap,
        };
        let stacks = self.stacks.iter_mut().map(|st| {
            let now = st.counts.outstanding_bytes;
            let peak = std::mem::replace(&mut st.interval_peak, now).max(now);
            (st.key, st.resident.unwrap_or(peak))
        });
        (heap, stacks)
    }

    fn release_block(&mut self, b: Block) {
        self.stacks[b.stack() as usize]
            .counts
            .release_n(b.size, b.blocks.into());
        self.totals.release_n(b.size, b.blocks.into());
    }

    /// A block freed at `ts_ns`: released, and its lifetime recorded.
    fn free_block(&mut self, b: Block, ts_ns: u64) {
        self.release_block(b);
        let room = self.lifetime_hists < MAX_LIFETIME_HISTS;
        let st = &mut self.stacks[b.stack() as usize];
        if st.lifetimes.is_none() && room {
            st.lifetimes = Some(Box::default());
            self.lifetime_hists += 1;
        }
        if let Some(h) = &mut st.lifetimes {
            h.record(ts_ns.saturating_sub(b.ts_ns) / 1_000_000);
        }
    }

    /// A free through allocator `family`; false when nothing was freed.
    fn free(&mut self, addr: u64, ts_ns: u64, family: u8) -> bool {
        match self.blocks.remove(&addr) {
            Some(b) if !oomtrace_common::family::same_heap(b.family(), family) => {
                // Another heap's block: the allocator never freed it.
                self.blocks.insert(addr, b);
                self.mismatched_frees += 1;
                false
            }
            Some(b) => {
                self.free_block(b, ts_ns);
                true
            }
            None => {
                self.unknown_frees += 1;
                false
            }
        }
    }

    /// A `Free` event: freed, and judged when it carries its call site (`run`).
    fn free_event(&mut self, ev: &MemEvent) {
        if ev.call_site == 0 {
            self.free(ev.addr, ev.ts_ns, ev.family());
            return;
        }
        let block = self.blocks.get(&ev.addr).copied();
        let freed = self.free(ev.addr, ev.ts_ns, ev.family());
        self.judge_free(ev, block, freed);
    }

    fn fail(&mut self, ev: &MemEvent) {
        let stack = self.stack(ev);
        self.stacks[stack as usize].counts.failed_allocs += 1;
        self.totals.failed_allocs += 1;
    }

    pub(super) fn add_range(&mut self, ev: &MemEvent, start: u64, len: u64) {
        let stack = self.stack(ev);
        let id = self.next_range_alloc;
        self.next_range_alloc += 1;
        self.ranges.insert(start, len, id);
        self.range_allocs.insert(id, stack);
        if self.mode != Mode::Growth {
            self.mapped.direct.count += 1;
            self.mapped.direct.reserved_bytes += len;
        }
        let st = &mut self.stacks[stack as usize];
        st.counts.alloc(len);
        st.sizes.record(len);
        st.interval_peak = st.interval_peak.max(st.counts.outstanding_bytes);
        self.totals.alloc(len);
        self.interval_peak = self.interval_peak.max(self.totals.outstanding_bytes);
    }

    pub(super) fn remove_range(&mut self, start: u64, len: u64) {
        for r in self.ranges.remove(start, len) {
            let stack = if r.gone {
                self.range_allocs.remove(&r.alloc)
            } else {
                self.range_allocs.get(&r.alloc).copied()
            };
            match stack {
                Some(region @ (mapped::THREAD_STACK | mapped::RESERVATION)) => {
                    self.release_region(region, r.bytes, r.gone);
                }
                Some(stack) => {
                    self.stacks[stack as usize].counts.release(r.bytes, r.gone);
                    self.totals.release(r.bytes, r.gone);
                    if self.mode != Mode::Growth {
                        self.release_direct(stack, r.bytes, r.gone);
                    }
                }
                None => {}
            }
        }
    }

    /// Applies one event of this process. Returns whether a block was allocated (so the caller
    /// can keep the global block count bounded).
    pub fn apply(&mut self, ev: &MemEvent, track_blocks: bool) {
        let Some(kind) = EventKind::from_u16(ev.kind) else {
            return;
        };
        if self.mode == Mode::Growth && self.apply_resident(kind, ev, track_blocks) {
            return;
        }
        match kind {
            EventKind::Alloc if ev.addr == 0 => self.fail(ev),
            EventKind::Alloc if track_blocks => self.add_block(ev, ev.addr, ev.size),
            EventKind::Alloc => self.count_untracked(ev),
            EventKind::Free => self.free_event(ev),
            EventKind::Injected => self.note_injection(ev),
            EventKind::Crash => self.note_crash(ev),
            EventKind::HandlerAlloc => self.note_handler_alloc(ev),
            EventKind::Realloc => self.realloc(ev, track_blocks),
            EventKind::Mmap if ev.addr == 0 => self.fail(ev),
            EventKind::Mmap => self.add_mapping(ev),
            // A non-zero aux is madvise dropping pages (growth mode's business): still mapped.
            EventKind::Munmap if ev.aux != 0 => {}
            EventKind::Munmap => self.remove_range(ev.addr, ev.size),
            EventKind::Mremap if ev.addr == 0 => self.fail(ev),
            EventKind::Mremap => {
                self.remove_range(ev.old_addr, ev.aux);
                self.add_range(ev, ev.addr, ev.size);
            }
            EventKind::Brk => self.brk(ev),
            EventKind::Exec => {
                self.set_comm(ev);
                self.exec();
            }
            EventKind::ExitGroup => self.last_exit_code = Some((ev.aux & 0xff) as i32),
            EventKind::Signal => {
                let sig = ev.aux as i32;
                if FATAL_SIGNALS.contains(&sig) {
                    self.last_signal = Some(sig);
                }
            }
            EventKind::Exit => {
                if self.comm.is_empty() {
                    self.set_comm(ev);
                }
                self.exit();
            }
            EventKind::Comm => self.set_comm(ev),
            EventKind::Status => {
                let low = (ev.aux & 0xffff_ffff) as i32;
                self.set_exit_status(if ev.aux & oomtrace_common::STATUS_SIGNALED != 0 {
                    ExitStatus {
                        code: None,
                        signal: Some(low),
                    }
                } else if ev.aux & oomtrace_common::STATUS_EXITED != 0 {
                    ExitStatus {
                        code: Some(low),
                        signal: None,
                    }
                } else {
                    // Ended, but how is unknown (its exit event was lost).
                    ExitStatus::default()
                });
            }
            EventKind::Leak => self.apply_leak(ev),
            EventKind::Resident => self.apply_resident_sample(ev),
            EventKind::Fork
            | EventKind::Oom
            | EventKind::OomComm
            | EventKind::Tick
            | EventKind::ProcSample
            | EventKind::KAlloc
            | EventKind::KFree
            | EventKind::Fault
            | EventKind::Unfollowed
            | EventKind::NewCode => {}
            EventKind::SignalSent => self.note_sender(ev),
        }
    }

    fn set_comm(&mut self, ev: &MemEvent) {
        let raw = ev.packed_comm();
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if len > 0 {
            self.comm = String::from_utf8_lossy(&raw[..len]).into_owned();
        }
    }

    /// Counted in the statistics, not tracked as a block (the block cap was reached).
    pub(super) fn count_untracked(&mut self, ev: &MemEvent) {
        self.heap_partial = true;
        let stack = self.stack(ev);
        let (bytes, blocks) = sampled::weigh(ev, ev.size);
        let blocks = u64::from(blocks);
        self.stacks[stack as usize].counts.allocated_bytes += bytes;
        self.stacks[stack as usize].counts.allocs += blocks;
        self.totals.allocated_bytes += bytes;
        self.totals.allocs += blocks;
    }

    fn realloc(&mut self, ev: &MemEvent, track_blocks: bool) {
        match (ev.old_addr, ev.addr) {
            (0, 0) => self.fail(ev),
            (0, new) if track_blocks => self.add_block(ev, new, ev.size),
            (0, _) => self.count_untracked(ev),
            // glibc's realloc(p, 0) frees p and returns NULL.
            (old, 0) if ev.size == 0 => {
                self.free(old, ev.ts_ns, ev.family());
            }
            (_, 0) => self.fail(ev),
            (old, new) => {
                self.free(old, ev.ts_ns, ev.family());
                if track_blocks {
                    self.add_block(ev, new, ev.size);
                } else {
                    self.count_untracked(ev);
                }
            }
        }
    }

    fn brk(&mut self, ev: &MemEvent) {
        let new = ev.addr;
        if ev.size == oomtrace_common::BRK_NESTED {
            // The allocator moved the break: follow it, count nothing.
            if new != 0 {
                self.brk = Some(new);
            }
            return;
        }
        let Some(cur) = self.brk else {
            self.brk = Some(new);
            return;
        };
        if ev.aux == 0 || new == 0 {
            // A query (brk(0)) or a failure.
            self.brk = Some(cur.max(new));
            return;
        }
        if new > cur {
            self.add_range(ev, cur, new - cur);
        } else if new < cur {
            self.remove_range(new, cur - new);
        }
        self.brk = Some(new);
    }

    fn exec(&mut self) {
        // The old image's memory is gone with it.
        for b in std::mem::take(&mut self.blocks).into_values() {
            self.release_block(b);
        }
        self.release_all_ranges();
        self.brk = None;
        self.generation += 1;
        // A fresh heap, all of it seen from here.
        self.heap_partial = false;
        self.freed = faults::FreedRing::default();
    }

    fn release_all_ranges(&mut self) {
        self.ranges.clear();
        self.mapped.clear_live();
        for stack in std::mem::take(&mut self.range_allocs).into_values() {
            if stack == mapped::THREAD_STACK || stack == mapped::RESERVATION {
                continue;
            }
            self.stacks[stack as usize].resident = None;
            let counts = &mut self.stacks[stack as usize].counts;
            let bytes = counts.outstanding_bytes;
            // Pieces of one stack share its counter; drop the whole remainder once.
            counts.release(bytes, true);
            self.totals.release(bytes, true);
        }
    }

    /// Freezes the tables (for the report) and releases per-block memory.
    fn exit(&mut self) {
        self.exit = Some(match self.last_signal {
            Some(sig) if self.last_exit_code.is_none() => ExitStatus {
                code: None,
                signal: Some(sig),
            },
            _ => ExitStatus {
                code: Some(self.last_exit_code.unwrap_or(0)),
                signal: None,
            },
        });
        self.blocks = FastMap::default();
        self.ranges = Ranges::default();
        self.range_allocs = FastMap::default();
    }

    fn note_sender(&mut self, ev: &MemEvent) {
        let signal = (ev.aux & 0xff) as i32;
        let sender = if ev.aux & oomtrace_common::SIGNAL_FROM_KERNEL != 0 {
            SignalSender {
                signal,
                pid: None,
                comm: "kernel".into(),
                uid: None,
            }
        } else {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&ev.old_addr.to_le_bytes());
            raw[8..].copy_from_slice(&ev.call_site.to_le_bytes());
            let len = raw.iter().position(|&b| b == 0).unwrap_or(16);
            SignalSender {
                signal,
                pid: Some(ev.addr as u32),
                comm: String::from_utf8_lossy(&raw[..len]).into_owned(),
                uid: Some(ev.size as u32),
            }
        };
        self.signal_senders.retain(|s| s.signal != signal);
        if self.signal_senders.len() >= MAX_SENDERS {
            self.signal_senders.remove(0);
        }
        self.signal_senders.push(sender);
    }

    /// Who sent the signal that ended it, when a signal did and the sending was seen.
    pub fn killed_by(&self) -> Option<&SignalSender> {
        let sig = self.exit?.signal?;
        self.signal_senders.iter().rev().find(|s| s.signal == sig)
    }

    /// Overrides the exit status with what `waitpid` reported (exact for our own child).
    pub fn set_exit_status(&mut self, status: ExitStatus) {
        self.exit = Some(status);
    }
}
