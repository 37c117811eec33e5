//! oomtrace's kernel side: allocator uprobes, memory-syscall and lifecycle tracepoints, and
//! (`--kernel`) kernel allocation tracepoints.
//!
//! The programs filter by traced tgid, keep per-thread state between an allocator's entry and
//! its return, take the exact call site and a stack id, and emit one [`MemEvent`] per call into a
//! ring buffer. Everything they cannot emit is counted in `DROPS`. Aggregation is user-side.
//!
//! Hot-path budget: an allocator call costs a uprobe trap (~0.45 µs) plus a uretprobe (~0.3 µs)
//! whatever we do; the programs themselves avoid LRU maps and map updates on that path (per-thread
//! state is updated in place) and unwind the user stack themselves from tables the user side
//! built from `.eh_frame` ([`unwind`]), frame pointers where no table covers a pc.
#![no_std]
#![no_main]
// `atomic_xadd`, for the sampled-block filter's counts (`sample.rs`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod alloc;
mod dispatch;
mod floor;
mod growth;
mod inject;
mod kgpu;
mod kmem;
mod leaf;
mod lifecycle;
mod python;
mod sample;
mod signals;
mod stack;
mod syscalls;
mod unwind;
mod walk_cache;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use oomtrace_common::{
    AllocFn, CONFIG_WORDS, ConfigKey, DROP_COUNTERS, DropReason, EventKind, MemEvent, STACK_WORDS,
};

/// One open call: what the return (or syscall exit) needs from the entry.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pending {
    pub ts_ns: u64,
    pub size: u64,
    pub old_addr: u64,
    pub call_site: u64,
    pub aux: u64,
    pub stack_id: i32,
    /// What the event reports: the function in the low byte, the allocator family above.
    pub alloc_fn: u16,
    /// Kernel-internal bits (`alloc.rs`): what the return must do.
    pub flags: u16,
}

/// Per-thread allocator state, updated in place.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Thread {
    /// Allocator calls open on this thread (nested ones are the outer call's business).
    pub depth: u32,
    /// Signal handlers running on this thread (nested ones included).
    pub handlers: u32,
    /// The outermost open allocator call.
    pub call: Pending,
    /// `--mode sample`: bytes to this thread's next sample point (0: not drawn yet).
    pub countdown: u64,
    /// The signal of each of the first [`MAX_HANDLERS`] nested handlers, 8 bits each.
    pub handler_sigs: u64,
    /// The interrupted context's stack pointer at each of those deliveries: a handler left by
    /// `siglongjmp` is over once the thread's stack is back above it.
    pub handler_sp: [u64; MAX_HANDLERS],
    /// Uprobe sessions: the stack pointer at the entry of the last outermost call whose return
    /// was skipped (0: none), and the return address found there. While that address is still
    /// in place above the thread's stack pointer, the call is running.
    pub skipped_sp: u64,
    /// 0 for a leaf allocator's call ([`oomtrace_common::cookie::LEAF`]), whose return address
    /// is not read at its entry: [`skipped_fn`](Thread::skipped_fn) stands for it then.
    pub skipped_ret: u64,
    /// The probed address of a skipped leaf call's function.
    pub skipped_fn: u64,
    /// Non-zero once this thread emitted an allocator event (see [`first_of_thread`]).
    pub seen: u64,
}

/// Nested signal handlers tracked per thread.
pub const MAX_HANDLERS: usize = 4;

/// Wake the reader only once this much is queued; it also polls on a short timer.
const WAKEUP_BYTES: u64 = 256 * 1024;

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);
/// tgid → flags (1 = traced, [`SEEN_BIT`]).
#[map]
pub static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_WORDS, 0);
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_COUNTERS, 0);
/// tid → allocator state; removed when the thread exits.
#[map]
pub static THREADS: HashMap<u32, Thread> = HashMap::with_max_entries(65536, 0);
/// (tid, class) → open mmap/mremap/brk syscall (rare: an LRU map is fine here).
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);
/// Distinct stacks kept (native, and each one's Python frames): an interpreter's start-up alone
/// makes about ten thousand. Allocated as they come, not at load: most sessions use few.
pub const MAX_STACKS: u32 = 65536;
/// `BPF_F_NO_PREALLOC`: a hash map's entries allocated on insert.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// Stack id → header word and return addresses, zero-padded.
#[map]
pub static STACKS: HashMap<u32, [u64; STACK_WORDS]> =
    HashMap::with_max_entries(MAX_STACKS, BPF_F_NO_PREALLOC);
/// Per-CPU scratch for the walk (too big for the 512-byte BPF stack).
#[map]
pub static SCRATCH: PerCpuArray<[u64; STACK_WORDS]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn config(key: ConfigKey) -> u64 {
    CONFIG.get(key as u32).copied().unwrap_or(0)
}

#[inline(always)]
pub fn count_drop(which: DropReason) {
    if let Some(p) = DROPS.get_ptr_mut(which as u32) {
        // SAFETY: per-CPU slot, and programs do not migrate CPUs while running.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn traced(tgid: u32) -> bool {
    if tgid as u64 == config(ConfigKey::SelfTgid) {
        return false;
    }
    if config(ConfigKey::TraceAll) != 0 {
        return true;
    }
    // SAFETY: presence check only.
    unsafe { TRACED.get(tgid).is_some() }
}

/// Whether this is the thread's first allocator event (and marks it): that one wakes the
/// reader at once, so it reads the process's memory map while the process still lives. A
/// thread's state starts afresh at its process's exec, so a new image's first event is a first.
#[inline(always)]
pub fn first_of_thread(t: &mut Thread) -> bool {
    if t.seen != 0 {
        return false;
    }
    t.seen = 1;
    true
}

#[inline(always)]
pub fn ids() -> (u32, u32) {
    let pt = bpf_get_current_pid_tgid();
    ((pt >> 32) as u32, pt as u32)
}

/// The thread's state, created on first use; `None` only if the map is full.
#[inline(always)]
pub fn thread(tid: u32) -> Option<*mut Thread> {
    if let Some(t) = THREADS.get_ptr_mut(tid) {
        return Some(t);
    }
    if !new_thread(tid) {
        return None;
    }
    THREADS.get_ptr_mut(tid)
}

/// Adds thread `tid`'s state; false if there is no room. A subprogram: the fresh value is
/// built on the stack, which would otherwise sit in every caller's frame (a stack walk's call
/// chain has 512 bytes of stack for all its frames).
#[inline(never)]
fn new_thread(tid: u32) -> bool {
    let fresh = Thread {
        depth: 0,
        handlers: 0,
        call: Pending {
            ts_ns: 0,
            size: 0,
            old_addr: 0,
            call_site: 0,
            aux: 0,
            stack_id: -1,
            alloc_fn: 0,
            flags: 0,
        },
        countdown: 0,
        handler_sigs: 0,
        handler_sp: [0; MAX_HANDLERS],
        skipped_sp: 0,
        skipped_ret: 0,
        skipped_fn: 0,
        seen: 0,
    };
    if THREADS.insert(tid, fresh, 0).is_err() {
        count_drop(DropReason::PendingFull);
        return false;
    }
    true
}

/// Whether thread `tid` is inside an allocator call (see [`inside_call_of`]).
#[inline(always)]
pub fn inside_call(tid: u32, sp: impl FnOnce() -> u64) -> bool {
    match THREADS.get_ptr(tid) {
        // SAFETY: pointer into this thread's map value, valid for this program run.
        Some(t) => inside_call_of(unsafe { &*t }, sp),
        None => false,
    }
}

/// Whether the thread whose state is `t` is inside an allocator call: an open one, or (uprobe
/// sessions) one whose return was skipped and that still runs below its entry. `sp` gives the
/// thread's user stack pointer, read only when that second case needs it.
#[inline(always)]
pub fn inside_call_of(t: &Thread, sp: impl FnOnce() -> u64) -> bool {
    if t.depth > 0 {
        return true;
    }
    let (skipped_sp, skipped_ret, skipped_fn) = (t.skipped_sp, t.skipped_ret, t.skipped_fn);
    if skipped_sp == 0 {
        return false;
    }
    let sp = sp();
    if skipped_ret == 0 {
        return sp < skipped_sp && leaf::still_running(skipped_sp, skipped_fn);
    }
    skipped_still_running(skipped_sp, skipped_ret, sp)
}

/// Whether the skipped call that entered at `skipped_sp` with return address `ret` still runs
/// for a thread at `sp`: deeper than its entry, with its return address still in place.
#[inline(always)]
pub fn skipped_still_running(skipped_sp: u64, ret: u64, sp: u64) -> bool {
    // SAFETY: user memory read through the helper.
    sp < skipped_sp && unsafe { bpf_probe_read_user(skipped_sp as *const u64).unwrap_or(0) } == ret
}

#[inline(always)]
pub fn emit(ev: &MemEvent) {
    emit_with(ev, false)
}

/// Events a CPU emits between two looks at how much the ring holds: the look is a helper
/// call, a tenth of an event's cost, and 64 events are 4.5 KiB, far below [`WAKEUP_BYTES`].
const EMITS_PER_QUERY: u64 = 64;

/// Events emitted per CPU, for [`EMITS_PER_QUERY`].
#[map]
pub static EMITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn emit_with(ev: &MemEvent, wake: bool) {
    let look = match EMITS.get_ptr_mut(0) {
        Some(n) => {
            // SAFETY: per-CPU slot; a program run does not migrate.
            let n = unsafe { &mut *n };
            *n += 1;
            *n % EMITS_PER_QUERY == 0
        }
        None => true,
    };
    let flags = if wake || (look && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<MemEvent>(ev, flags as u64).is_err() {
        count_drop(DropReason::RingFull);
    }
}

#[inline(always)]
pub fn event(kind: EventKind, tgid: u32, tid: u32) -> MemEvent {
    // SAFETY: plain helper call.
    event_at(kind, tgid, tid, unsafe { bpf_ktime_get_ns() })
}

/// An event stamped `ts_ns`, its other fields empty.
#[inline(always)]
pub fn event_at(kind: EventKind, tgid: u32, tid: u32, ts_ns: u64) -> MemEvent {
    let zero = opaque_zero();
    MemEvent {
        kind: kind as u16,
        alloc_fn: AllocFn::Syscall as u16,
        tgid,
        tid,
        stack_id: -1,
        ts_ns,
        addr: zero,
        size: zero,
        old_addr: zero,
        call_site: zero,
        aux: zero,
    }
}

/// 0, which the compiler cannot see is 0. LLVM merges neighbouring stores of a known 0 into a
/// `memset` call, and this target runs `memset` as a subprogram that stores a byte per loop
/// turn: a fifth of a free's program time went to zeroing its event that way.
#[inline(always)]
pub fn opaque_zero() -> u64 {
    let zero = 0u64;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&zero) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
