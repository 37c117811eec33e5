//! The user stack above an allocation, unwound with the tables the user side built from each
//! module's `.eh_frame` (frame pointers where a pc has no rows).
//!
//! Each step finds the pc's mapping in the process's sorted mapping list, the module's page
//! entry, then the last row at or below the pc (a binary search over one page's rows). The row
//! gives the caller's frame address (CFA) from `rsp` or `rbp` and where `rbp` was saved; the
//! return address is at CFA - 8 on x86-64. Every search is bounded, every read goes through
//! the probe-read helpers, and the walk stops at the first frame that does not lie above the
//! previous one.

// The table-driven step below is built but not called yet (see `walk`): its items are kept
// compiled so they stay in step with the tables the user side loads.
#![allow(dead_code)]

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use oomtrace_common::{
    ConfigKey, EventKind, MAX_STACK_FRAMES, STACK_WORDS, stack,
    unwind::{
        ExecMapping, MAX_MAPPINGS, MAX_MODULES, MAX_PAGES, MAX_PENDING_RETURNS, MAX_PROC_MAPPINGS,
        MAX_PROCS, MAX_ROWS, ModuleTable, NO_MODULE, PAGE_SHIFT, ProcMaps, kind, row_cfa_off,
        row_kind, row_pc, row_rbp_slot,
    },
};

use crate::config;

/// Written by user space through a shared mapping, not one syscall per row.
const BPF_F_MMAPABLE: u32 = aya_ebpf::bindings::BPF_F_MMAPABLE;

#[map]
pub static UNWIND_MODULES: Array<ModuleTable> =
    Array::with_max_entries(MAX_MODULES, BPF_F_MMAPABLE);
#[map]
pub static UNWIND_PAGES: Array<u64> = Array::with_max_entries(MAX_PAGES, BPF_F_MMAPABLE);
#[map]
pub static UNWIND_ROWS: Array<u64> = Array::with_max_entries(MAX_ROWS, BPF_F_MMAPABLE);
#[map]
pub static EXEC_MAPPINGS: Array<ExecMapping> =
    Array::with_max_entries(MAX_MAPPINGS, BPF_F_MMAPABLE);
/// tgid → its run of `EXEC_MAPPINGS`; written by the user side whenever its maps change.
#[map]
pub static PROC_MAPS: HashMap<u32, ProcMaps> = HashMap::with_max_entries(MAX_PROCS, 0);

/// Processes told to re-read their maps, with when (at most one notice per interval each).
#[map]
pub static MAPS_NOTICED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);
/// A process is told again about code outside its known mappings after this long.
const NOTICE_INTERVAL_NS: u64 = 2_000_000;

/// A forked child unwinds with its parent's mappings until its own are published.
#[inline(always)]
pub fn inherit(parent: u32, child: u32) {
    // SAFETY: copied out.
    if let Some(m) = unsafe { PROC_MAPS.get(parent).copied() } {
        let _ = PROC_MAPS.insert(child, m, 0);
    }
}

/// The process's layout is gone (exec, exit).
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = PROC_MAPS.remove(tgid);
}

/// Tells the user side that `tgid` runs code its published mappings do not cover (a library
/// loaded since, or a new image), at most once per [`NOTICE_INTERVAL_NS`].
#[inline(always)]
fn notice_unknown(tgid: u32, pc: u64) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out.
    if let Some(last) = unsafe { MAPS_NOTICED.get(tgid).copied() }
        && now.saturating_sub(last) < NOTICE_INTERVAL_NS
    {
        return;
    }
    let _ = MAPS_NOTICED.insert(tgid, now, 0);
    let mut ev = crate::event(EventKind::NewCode, tgid, 0);
    ev.addr = pc;
    crate::emit_with(&ev, true);
}

/// Frames the walk can take: the verifier goes through every iteration.
const WALK_FRAMES: usize = 1;

/// Binary-search steps over one process's mappings (2^10 > MAX_PROC_MAPPINGS).
const MAPPING_STEPS: usize = 10;
/// Binary-search steps over one page's rows (a 4 KiB page has at most 4097 rows).
const ROW_STEPS: usize = 13;
/// Offsets in the `ucontext_t` at `rsp` when a signal handler returns into `__restore_rt`:
/// `uc_mcontext` starts at 40, and its rbp, rsp and rip are at 80, 120 and 128.
const UC_RBP: u64 = 40 + 80;
const UC_RSP: u64 = 40 + 120;
const UC_RIP: u64 = 40 + 128;

/// Where a walk starts: the frame of the code that made the call.
pub struct Start {
    /// A return address into that frame (or, with `exact`, the pc itself).
    pub pc: u64,
    /// Its stack pointer: the CFA of the frame below.
    pub sp: u64,
    pub bp: u64,
    /// `pc` is the current instruction (a faulting one), not a return address: look it up
    /// as is rather than at `pc - 1`.
    pub exact: bool,
}

/// Pending uretprobes of the current thread: (stack slot, real return address).
struct Pending {
    slots: [u64; MAX_PENDING_RETURNS],
    orig: [u64; MAX_PENDING_RETURNS],
}

/// Unwinds from `start` into `buf[1..]` and returns the stack header (frame count and flags);
/// `buf[0]` is left for the caller to fill with it.
///
/// The kernel-side walk currently follows frame pointers only: the table-driven step
/// ([`step`]) is built and its tables are loaded, but the verifier's complexity limit refuses
/// it inside the allocator entry program past one frame (see `docs/stacks.md`), so it is not
/// called yet. The header says so: every frame is marked as found by frame pointers.
#[inline(always)]
pub fn walk(tgid: u32, start: Start, buf: &mut [u64; STACK_WORDS]) -> u64 {
    let _ = tgid;
    let limit = (config(ConfigKey::StackFrames) as usize).min(MAX_STACK_FRAMES);
    let mut flags = 0u64;
    let mut n = 0usize;
    let mut fp = start.bp;
    // `stack_id_from` (sp 0): a leaf's return address found before the walk.
    let mut first = if start.sp == 0 { start.pc } else { 0 };
    buf[1] = 0;
    for i in 1..STACK_WORDS {
        if i > limit {
            flags |= stack::TRUNCATED;
            break;
        }
        if first != 0 {
            put(buf, i, first);
            n = i;
            first = 0;
            continue;
        }
        if fp == 0 || fp & 7 != 0 {
            break;
        }
        // SAFETY: user memory read through the helper; a bad address just fails.
        let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            break;
        };
        if frame[1] == 0 {
            break;
        }
        flags |= stack::FRAME_POINTERS;
        put(buf, i, frame[1]);
        n = i;
        // Frames live at increasing addresses; anything else is not a frame chain.
        if frame[0] <= fp {
            break;
        }
        fp = frame[0];
    }
    n as u64 | flags
}

/// The walk's state between frames.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct WalkState {
    pc: u64,
    sp: u64,
    bp: u64,
    flags: u64,
    exact: u64,
    n: u64,
    unknown_pc: u64,
    done: u64,
}
use WalkState as Walk;

/// Per-CPU walk state (see [`walk`]).
#[map]
pub static WALK_STATE: PerCpuArray<WalkState> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn get(st: *mut Walk) -> Walk {
    // SAFETY: per-CPU map value, ours for this program run.
    unsafe { core::ptr::read_volatile(st) }
}

#[inline(always)]
fn set(st: *mut Walk, w: Walk) {
    // SAFETY: as in `get`.
    unsafe { core::ptr::write_volatile(st, w) }
}

/// One frame: from the state's (pc, sp, bp) to the caller's, its return address into `buf[i]`;
/// returns 1 when the walk is over.
/// A function of its own (a BPF subprogram): its stack frame is not the caller's.
#[inline(never)]
#[allow(dead_code)]
fn step(
    st: *mut Walk,
    i: usize,
    maps: &ProcMaps,
    pending: &Pending,
    buf: &mut [u64; STACK_WORDS],
) -> u64 {
    let mut w = get(st);
    if w.pc == 0 {
        w.done = 1;
        set(st, w);
        return 1;
    }
    let lookup = if w.exact != 0 {
        w.pc
    } else {
        w.pc.wrapping_sub(1)
    };
    w.exact = 0;
    let (sp, bp) = (w.sp, w.bp);
    let (cfa, rbp_slot) = match find_row(maps, lookup) {
        Lookup::Row(r) => {
            let off = row_cfa_off(r);
            match row_kind(r) {
                kind::RSP => (sp.wrapping_add(off as u64), row_rbp_slot(r)),
                kind::RBP => (bp.wrapping_add(off as u64), row_rbp_slot(r)),
                kind::RBP_DEREF => (read(bp.wrapping_add(off as u64)), row_rbp_slot(r)),
                kind::PLT => {
                    let past = if lookup & 15 >= 11 { 8 } else { 0 };
                    (sp + 8 + past, 0)
                }
                kind::END => {
                    w.flags |= stack::COMPLETE;
                    w.done = 1;
                    set(st, w);
                    return w.done;
                }
                kind::SIGNAL => {
                    // The interrupted context: its pc is exact, not a return address.
                    w.flags |= stack::SIGNAL_FRAME;
                    let ip = read(sp + UC_RIP);
                    let nsp = read(sp + UC_RSP);
                    w.bp = read(sp + UC_RBP);
                    if ip == 0 || nsp == 0 {
                        w.flags |= stack::STOPPED;
                        w.done = 1;
                        set(st, w);
                        return 1;
                    }
                    // + 1 so that it symbolizes like a return address (at addr - 1).
                    put(buf, i, ip + 1);
                    w.n = i as u64;
                    w.pc = ip;
                    w.sp = nsp;
                    w.exact = 1;
                    set(st, w);
                    return w.done;
                }
                kind::GAP => {
                    w.flags |= stack::FRAME_POINTERS;
                    (0, 0)
                }
                _ => {
                    w.flags |= stack::UNSUPPORTED_RULE;
                    (0, 0)
                }
            }
        }
        Lookup::NoTable => {
            w.flags |= stack::FRAME_POINTERS;
            (0, 0)
        }
        Lookup::Unknown => {
            w.unknown_pc = lookup;
            w.flags |= stack::UNKNOWN_MODULE;
            (0, 0)
        }
    };
    let (cfa, ret, next_bp) = if cfa != 0 {
        let ret = read(cfa - 8);
        let next_bp = if rbp_slot != 0 {
            read(cfa.wrapping_add((rbp_slot * 8) as u64))
        } else {
            bp
        };
        (cfa, ret, next_bp)
    } else {
        // Frame pointers: [rbp] is the caller's rbp, [rbp + 8] the return address.
        // SAFETY: user memory read through the helper; a bad address just fails.
        let frame = if bp == 0 || bp & 7 != 0 || bp < sp {
            [0, 0]
        } else {
            unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }.unwrap_or([0, 0])
        };
        (bp + 16, frame[1], frame[0])
    };
    if cfa <= sp && i > 1 {
        w.flags |= stack::STOPPED;
        w.done = 1;
        set(st, w);
        return 1;
    }
    let ret = fix_trampoline(pending, cfa - 8, ret, &mut w.flags);
    if ret == 0 {
        if w.flags & (stack::FRAME_POINTERS | stack::UNKNOWN_MODULE) != 0 {
            w.flags |= stack::STOPPED;
        }
        w.done = 1;
        set(st, w);
        return 1;
    }
    put(buf, i, ret);
    w.n = i as u64;
    w.pc = ret;
    w.sp = cfa;
    w.bp = next_bp;
    set(st, w);
    0
}

/// Stores frame `i` and the terminating zero after it.
#[inline(always)]
fn put(buf: &mut [u64; STACK_WORDS], i: usize, ret: u64) {
    if let Some(slot) = buf.get_mut(i) {
        *slot = ret;
    }
    if let Some(slot) = buf.get_mut(i + 1) {
        *slot = 0;
    }
}

/// What the tables say about one pc.
enum Lookup {
    /// The row covering it.
    Row(u64),
    /// A mapping without rows (no `.eh_frame`), or a pc its module's rows do not cover.
    NoTable,
    /// No known mapping covers it.
    Unknown,
}

/// The row for `pc` in process `maps`.
#[inline(always)]
fn find_row(maps: &ProcMaps, pc: u64) -> Lookup {
    let Some(m) = find_mapping(maps, pc) else {
        return Lookup::Unknown;
    };
    if m.module == NO_MODULE {
        return Lookup::NoTable;
    }
    let Some(module) = UNWIND_MODULES.get(m.module) else {
        return Lookup::NoTable;
    };
    let rel = pc.wrapping_sub(m.bias);
    let page = rel.wrapping_sub(module.vaddr_lo) >> PAGE_SHIFT;
    if page >= module.pages as u64 {
        return Lookup::NoTable;
    }
    let Some(&entry) = UNWIND_PAGES.get(module.page_base + page as u32) else {
        return Lookup::NoTable;
    };
    let first = (entry >> 32) as u32;
    let count = entry as u32;
    if count == 0 {
        return Lookup::NoTable;
    }
    let target = rel & 0xffff_ffff;
    // The last row whose address is at or below the target, searched without branches (the
    // verifier walks every branch of every step of every frame otherwise).
    let (mut base, mut len) = (first, count);
    for _ in 0..ROW_STEPS {
        let half = len / 2;
        // An index past the map (never, with well-formed tables) reads as "no row here": no
        // early exit, so both outcomes rejoin at once for the verifier.
        let pc = UNWIND_ROWS
            .get(module.row_base.wrapping_add(base + half))
            .map_or(u64::MAX >> 1, |&r| u64::from(row_pc(r)));
        base += half * le(pc, target);
        len -= half;
    }
    let Some(&r) = UNWIND_ROWS.get(module.row_base.wrapping_add(base)) else {
        return Lookup::NoTable;
    };
    if u64::from(row_pc(r)) > target {
        return Lookup::NoTable;
    }
    Lookup::Row(r)
}

/// 1 if `a <= b`, else 0, for values below 2^63, computed without a branch. The difference
/// and the bit both go through memory: LLVM would otherwise turn the sign test, or the product
/// the bit feeds, back into a compare-and-branch, and the verifier would follow both ways of
/// every step of every search.
#[inline(always)]
fn le(a: u64, b: u64) -> u32 {
    let d = b.wrapping_sub(a);
    // SAFETY: volatile reads of locals we own.
    let d = unsafe { core::ptr::read_volatile(&d) };
    let bit = ((d >> 63) ^ 1) as u32;
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&bit) }
}

/// The mapping of `pc` among the process's (sorted, non-overlapping) mappings.
#[inline(always)]
fn find_mapping(maps: &ProcMaps, pc: u64) -> Option<&'static ExecMapping> {
    // Masked, not clamped: a clamp is a branch that leaves a constant on one side.
    let count = maps.count & (2 * MAX_PROC_MAPPINGS - 1);
    if count == 0 {
        return None;
    }
    // The last mapping starting at or below pc, without branches (see `find_row`).
    let (mut base, mut len) = (0u32, count);
    for _ in 0..MAPPING_STEPS {
        let half = len / 2;
        // As in `find_row`: a miss (never, in bounds) joins the other outcome at once.
        let start = EXEC_MAPPINGS
            .get(maps.base.wrapping_add(base + half))
            .map_or(u64::MAX >> 1, |m| m.start);
        base += half * le(start, pc & (u64::MAX >> 1));
        len -= half;
    }
    let m = EXEC_MAPPINGS.get(maps.base.wrapping_add(base))?;
    (m.start <= pc && pc < m.end).then_some(m)
}

/// One word of user memory (0 when unreadable).
#[inline(always)]
fn read(addr: u64) -> u64 {
    // SAFETY: user memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_user(addr as *const u64).unwrap_or(0) }
}

/// Reads `*(base + off)` from kernel memory (0 when unreadable).
#[inline(always)]
fn kread(base: u64, off: u64) -> u64 {
    // SAFETY: kernel memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_kernel((base + off) as *const u64).unwrap_or(0) }
}

/// The current thread's pending uretprobes, innermost first: where each one replaced a return
/// address on the stack, and the address it replaced. Offsets come from the kernel's BTF
/// through the config words; without them there is no fix-up.
#[inline(always)]
fn pending_returns() -> Pending {
    let mut p = Pending {
        slots: [0; MAX_PENDING_RETURNS],
        orig: [0; MAX_PENDING_RETURNS],
    };
    let utask_off = config(ConfigKey::TaskUtask);
    if utask_off == 0 {
        return p;
    }
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let utask = kread(task, utask_off);
    if utask == 0 {
        return p;
    }
    let mut ri = kread(utask, config(ConfigKey::UtaskReturns));
    let (stack_off, orig_off, next_off) = (
        config(ConfigKey::ReturnStack),
        config(ConfigKey::ReturnOrig),
        config(ConfigKey::ReturnNext),
    );
    for i in 0..MAX_PENDING_RETURNS {
        if ri == 0 {
            break;
        }
        p.slots[i] = kread(ri, stack_off);
        p.orig[i] = kread(ri, orig_off);
        ri = kread(ri, next_off);
    }
    p
}

/// The real return address of the frame whose return address sits at `slot`, when a pending
/// uretprobe replaced it with the trampoline.
#[inline(always)]
fn fix_trampoline(p: &Pending, slot: u64, ret: u64, flags: &mut u64) -> u64 {
    if p.slots[0] == 0 {
        return ret;
    }
    for i in 0..MAX_PENDING_RETURNS {
        if p.slots[i] == slot && p.orig[i] != 0 && p.orig[i] != ret {
            *flags |= stack::TRAMPOLINE_FIXED;
            return p.orig[i];
        }
    }
    ret
}
