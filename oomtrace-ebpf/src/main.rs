//! oomtrace's kernel side: allocator uprobes, memory-syscall and lifecycle tracepoints.
//!
//! The programs filter by traced tgid, keep per-thread pending state between an allocator's entry
//! and its return, take the exact call site and a stack id, and emit one [`MemEvent`] per call into
//! a ring buffer. Everything they cannot emit is counted in `DROPS`. Aggregation is user-side.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::tracing::StackIdContext,
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use oomtrace_common::{
    AllocFn, CONFIG_WORDS, ConfigKey, DROP_COUNTERS, DropReason, EventKind, MemEvent,
};

/// Pending-state classes: one allocator call and each pairing syscall can be open at once per thread.
const PEND_ALLOC: u64 = 0;
const PEND_MMAP: u64 = 1;
const PEND_MREMAP: u64 = 2;
const PEND_BRK: u64 = 3;

const MAP_ANONYMOUS: u64 = 0x20;
const CLONE_THREAD: u64 = 0x10000;
/// Wake the reader only once this much is queued; it also polls on a short timer.
const WAKEUP_BYTES: u64 = 256 * 1024;
/// Offset of `sp` in x86-64 `struct pt_regs` (an ABI-stable layout).
const PT_REGS_SP: usize = 19 * 8;

#[derive(Clone, Copy)]
#[repr(C)]
struct Pending {
    ts_ns: u64,
    size: u64,
    old_addr: u64,
    call_site: u64,
    aux: u64,
    stack_id: i32,
    alloc_fn: u16,
    _pad: u16,
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);
#[map]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);
#[map]
static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_WORDS, 0);
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_COUNTERS, 0);
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(65536, 0);
#[map]
static DEPTH: LruHashMap<u32, u32> = LruHashMap::with_max_entries(65536, 0);
#[map]
static CLONE_FLAGS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);
/// Processes whose current image has emitted an allocator event: the first one wakes the
/// reader at once so it reads the process's memory map while the process still lives.
#[map]
static SEEN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

#[inline(always)]
fn config(key: ConfigKey) -> u64 {
    CONFIG.get(key as u32).copied().unwrap_or(0)
}

#[inline(always)]
fn count_drop(which: DropReason) {
    if let Some(p) = DROPS.get_ptr_mut(which as u32) {
        // SAFETY: per-CPU slot, and programs do not migrate CPUs while running.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn traced(tgid: u32) -> bool {
    if tgid as u64 == config(ConfigKey::SelfTgid) {
        return false;
    }
    if config(ConfigKey::TraceAll) != 0 {
        return true;
    }
    // SAFETY: the value is copied out immediately.
    unsafe { TRACED.get(tgid).is_some() }
}

#[inline(always)]
fn ids() -> (u32, u32) {
    let pt = bpf_get_current_pid_tgid();
    ((pt >> 32) as u32, pt as u32)
}

#[inline(always)]
fn depth(tid: u32) -> u32 {
    // SAFETY: copied out.
    unsafe { DEPTH.get(tid).copied().unwrap_or(0) }
}

#[inline(always)]
fn emit(ev: &MemEvent) {
    emit_with(ev, false)
}

#[inline(always)]
fn emit_with(ev: &MemEvent, wake: bool) {
    let flags =
        if wake || EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
    if EVENTS.output::<MemEvent>(ev, flags as u64).is_err() {
        count_drop(DropReason::RingFull);
    }
}

#[inline(always)]
fn event(kind: EventKind, tgid: u32, tid: u32) -> MemEvent {
    MemEvent {
        kind: kind as u16,
        alloc_fn: AllocFn::Syscall as u16,
        tgid,
        tid,
        stack_id: -1,
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        addr: 0,
        size: 0,
        old_addr: 0,
        call_site: 0,
        aux: 0,
    }
}

#[inline(always)]
fn user_stack_id<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(e) => {
            count_drop(DropReason::StackCollision);
            e
        }
    }
}

// ---------------------------------------------------------------- allocator uprobes

/// Records an outermost allocator call; nested calls only deepen the thread's depth.
#[inline(always)]
fn alloc_enter(ctx: &ProbeContext, f: AllocFn, size: u64, old_addr: u64, aux: u64) -> u32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    let mut d = depth(tid);
    if d > 0 && outer_call_is_stale(tid) {
        // A missed return must not silence this thread for good: start over, and count it.
        count_drop(DropReason::StaleCall);
        d = 0;
    }
    let _ = DEPTH.insert(tid, (d + 1), 0);
    if d > 0 {
        return 0;
    }
    // SAFETY: regs points at the probe's pt_regs; [rsp] is read from user memory with the helper.
    let call_site = unsafe {
        let sp = (*ctx.regs).rsp;
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    };
    let pending = Pending {
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        size,
        old_addr,
        call_site,
        aux,
        stack_id: user_stack_id(ctx),
        alloc_fn: f as u16,
        _pad: 0,
    };
    if PENDING
        .insert(((tid as u64) << 2 | PEND_ALLOC), pending, 0)
        .is_err()
    {
        count_drop(DropReason::PendingFull);
    }
    0
}

/// An allocator call open for over a second never returns: its uretprobe was missed.
const STALE_CALL_NS: u64 = 1_000_000_000;

#[inline(always)]
fn outer_call_is_stale(tid: u32) -> bool {
    // SAFETY: copied out.
    match unsafe { PENDING.get(((tid as u64) << 2 | PEND_ALLOC)).copied() } {
        // SAFETY: plain helper call.
        Some(p) => unsafe { bpf_ktime_get_ns() }.saturating_sub(p.ts_ns) > STALE_CALL_NS,
        None => true,
    }
}

#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

/// `a * b`, or `u64::MAX` on overflow (BPF has no 128-bit multiply for `checked_mul`).
#[inline(always)]
fn mul_or_max(a: u64, b: u64) -> u64 {
    // 32-bit limbs: LLVM turns the obvious checks into a 128-bit multiply.
    let (ah, al, bh, bl) = (a >> 32, a & 0xffff_ffff, b >> 32, b & 0xffff_ffff);
    if ah != 0 && bh != 0 {
        return u64::MAX;
    }
    let cross = ah * bl + al * bh;
    if cross >> 32 != 0 {
        return u64::MAX;
    }
    let low = al * bl;
    let sum = low.wrapping_add(cross << 32);
    if sum < low { u64::MAX } else { sum }
}

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    alloc_enter(&ctx, AllocFn::Malloc, arg(&ctx, 0), 0, 0)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    // An overflowing n*m fails in the allocator; record it as a failure of u64::MAX bytes.
    let size = mul_or_max(arg(&ctx, 0), arg(&ctx, 1));
    alloc_enter(&ctx, AllocFn::Calloc, size, 0, 0)
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    alloc_enter(&ctx, AllocFn::Realloc, arg(&ctx, 1), arg(&ctx, 0), 0)
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    let size = mul_or_max(arg(&ctx, 1), arg(&ctx, 2));
    alloc_enter(&ctx, AllocFn::Reallocarray, size, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    // aux keeps `memptr`: the block's address is read from it at return.
    alloc_enter(&ctx, AllocFn::PosixMemalign, arg(&ctx, 2), 0, arg(&ctx, 0))
}

#[uprobe]
pub fn aligned_alloc_enter(ctx: ProbeContext) -> u32 {
    alloc_enter(&ctx, AllocFn::AlignedAlloc, arg(&ctx, 1), 0, 0)
}

#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    alloc_enter(&ctx, AllocFn::Memalign, arg(&ctx, 1), 0, 0)
}

#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    alloc_enter(&ctx, AllocFn::Valloc, arg(&ctx, 0), 0, 0)
}

#[uprobe]
pub fn pvalloc_enter(ctx: ProbeContext) -> u32 {
    alloc_enter(&ctx, AllocFn::Pvalloc, arg(&ctx, 0), 0, 0)
}

/// One return program serves every allocator function: the pending record says which it was.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    let d = depth(tid);
    if d == 0 {
        // Entered before we attached.
        return 0;
    }
    let _ = DEPTH.insert(tid, (d - 1), 0);
    if d > 1 {
        return 0;
    }
    let key = (tid as u64) << 2 | PEND_ALLOC;
    // SAFETY: copied out before removal.
    let Some(p) = (unsafe { PENDING.get(key).copied() }) else {
        return 0;
    };
    let _ = PENDING.remove(key);
    let ret: u64 = ctx.ret::<u64>();
    let mut ev = event(EventKind::Alloc, tgid, tid);
    ev.alloc_fn = p.alloc_fn;
    ev.size = p.size;
    ev.call_site = p.call_site;
    ev.stack_id = p.stack_id;
    ev.addr = ret;
    if p.alloc_fn == AllocFn::PosixMemalign as u16 {
        // posix_memalign returns 0 on success and stores the block in *memptr.
        ev.addr = if ret as u32 == 0 {
            // SAFETY: user pointer read through the helper.
            unsafe { bpf_probe_read_user(p.aux as *const u64).unwrap_or(0) }
        } else {
            0
        };
    }
    if p.alloc_fn == AllocFn::Realloc as u16 || p.alloc_fn == AllocFn::Reallocarray as u16 {
        ev.kind = EventKind::Realloc as u16;
        ev.old_addr = p.old_addr;
    }
    // SAFETY: presence check only.
    let first = unsafe { SEEN.get(tgid).is_none() };
    if first {
        let _ = SEEN.insert(tgid, 1, 0);
    }
    emit_with(&ev, first);
    0
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    let addr = arg(&ctx, 0);
    // free(NULL) is a no-op; a free inside another allocator call is that call's business.
    if addr == 0 || depth(tid) > 0 {
        return 0;
    }
    let mut ev = event(EventKind::Free, tgid, tid);
    ev.addr = addr;
    emit(&ev);
    0
}

// ---------------------------------------------------------------- memory syscalls

/// The return address at the syscall's user stack pointer: the call site when the libc
/// wrapper is a leaf (glibc's mmap/munmap/mremap/brk wrappers are).
#[inline(always)]
fn syscall_call_site() -> u64 {
    // SAFETY: task and regs come from BTF helpers; both reads go through probe-read helpers.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        let sp: u64 = bpf_probe_read_kernel(regs.add(PT_REGS_SP) as *const u64).unwrap_or(0);
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

#[inline(always)]
fn tp<T>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: offsets are the tracepoint format's; read_at bounds-checks via the helper.
    unsafe {
        ctx.read_at::<T>(off)
            .unwrap_or_else(|_| core::mem::zeroed())
    }
}

#[inline(always)]
fn syscall_enter(ctx: &TracePointContext, class: u64, size: u64, old: u64, aux: u64) {
    let (tgid, tid) = ids();
    if !traced(tgid) || depth(tid) > 0 {
        return;
    }
    let p = Pending {
        ts_ns: 0,
        size,
        old_addr: old,
        call_site: syscall_call_site(),
        aux,
        stack_id: user_stack_id(ctx),
        alloc_fn: AllocFn::Syscall as u16,
        _pad: 0,
    };
    if PENDING.insert(((tid as u64) << 2 | class), p, 0).is_err() {
        count_drop(DropReason::PendingFull);
    }
}

#[inline(always)]
fn syscall_exit(ctx: &TracePointContext, class: u64, kind: EventKind) {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return;
    }
    let key = (tid as u64) << 2 | class;
    // SAFETY: copied out before removal.
    let Some(p) = (unsafe { PENDING.get(key).copied() }) else {
        return;
    };
    let _ = PENDING.remove(key);
    let ret: i64 = tp(ctx, 16);
    let mut ev = event(kind, tgid, tid);
    // A negative errno is a failure: address 0.
    ev.addr = if (-4095..0).contains(&ret) {
        0
    } else {
        ret as u64
    };
    ev.size = p.size;
    ev.old_addr = p.old_addr;
    ev.aux = p.aux;
    ev.call_site = p.call_site;
    ev.stack_id = p.stack_id;
    emit(&ev);
}

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    let flags: u64 = tp(&ctx, 40);
    if flags & MAP_ANONYMOUS != 0 {
        syscall_enter(&ctx, PEND_MMAP, tp(&ctx, 24), 0, 0);
    }
    0
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, PEND_MMAP, EventKind::Mmap);
    0
}

#[tracepoint]
pub fn mremap_enter(ctx: TracePointContext) -> u32 {
    // size = new_len, old_addr = addr, aux = old_len.
    syscall_enter(&ctx, PEND_MREMAP, tp(&ctx, 32), tp(&ctx, 16), tp(&ctx, 24));
    0
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, PEND_MREMAP, EventKind::Mremap);
    0
}

#[tracepoint]
pub fn brk_enter(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, PEND_BRK, 0, 0, tp(&ctx, 16));
    0
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, PEND_BRK, EventKind::Brk);
    0
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    // munmap inside free() (of an mmapped chunk) arrives at depth 0: the user side only
    // trims blocks of kind mmap, so it cannot touch the malloc block freed by that call.
    if !traced(tgid) || depth(tid) > 0 {
        return 0;
    }
    let mut ev = event(EventKind::Munmap, tgid, tid);
    ev.addr = tp(&ctx, 16);
    ev.size = tp(&ctx, 24);
    emit(&ev);
    0
}

// ---------------------------------------------------------------- process lifecycle

#[tracepoint]
pub fn clone_enter(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        let flags: u64 = tp(&ctx, 16);
        let _ = CLONE_FLAGS.insert(tid, flags, 0);
    }
    0
}

#[tracepoint]
pub fn clone3_enter(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        let uargs: u64 = tp(&ctx, 16);
        // SAFETY: struct clone_args starts with the u64 flags; read from user memory.
        let flags = unsafe { bpf_probe_read_user(uargs as *const u64).unwrap_or(0) };
        let _ = CLONE_FLAGS.insert(tid, flags, 0);
    }
    0
}

#[tracepoint]
pub fn clone_exit(_ctx: TracePointContext) -> u32 {
    let (_, tid) = ids();
    let _ = CLONE_FLAGS.remove(tid);
    0
}

/// Runs in the parent before the child is first scheduled, so a followed child is traced
/// from its very first instruction.
#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    // SAFETY: copied out.
    let flags = unsafe { CLONE_FLAGS.get(tid).copied().unwrap_or(0) };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let child: i32 = tp(&ctx, 20);
    let child = child as u32;
    if config(ConfigKey::TraceAll) == 0 {
        if config(ConfigKey::FollowForks) == 0 {
            return 0;
        }
        if TRACED.insert(child, 1, 0).is_err() {
            count_drop(DropReason::TracedFull);
        }
    }
    let mut ev = event(EventKind::Fork, tgid, tid);
    ev.aux = child as u64;
    emit(&ev);
    0
}

/// Packs the task's comm into `addr` and `size` (16 bytes, little-endian).
#[inline(always)]
fn with_comm(mut ev: MemEvent) -> MemEvent {
    if let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm() {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&comm[..8]);
        hi.copy_from_slice(&comm[8..16]);
        ev.addr = u64::from_le_bytes(lo);
        ev.size = u64::from_le_bytes(hi);
    }
    ev
}

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        // The old image's pending calls and depth died with it.
        let _ = DEPTH.remove(tid);
        let _ = SEEN.remove(tgid);
        emit(&with_comm(event(EventKind::Exec, tgid, tid)));
    }
    0
}

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    let _ = DEPTH.remove(tid);
    if !traced(tgid) {
        return 0;
    }
    let group_dead: u8 = tp(&ctx, 32);
    if group_dead != 0 {
        emit_with(&with_comm(event(EventKind::Exit, tgid, tid)), true);
        let _ = TRACED.remove(tgid);
        let _ = SEEN.remove(tgid);
    }
    0
}

#[tracepoint]
pub fn exit_group_enter(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        let code: i32 = tp(&ctx, 16);
        let mut ev = event(EventKind::ExitGroup, tgid, tid);
        ev.aux = code as u32 as u64;
        emit(&ev);
    }
    0
}

#[tracepoint]
pub fn signal_deliver(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        let handler: u64 = tp(&ctx, 24);
        if handler == 0 {
            let sig: i32 = tp(&ctx, 8);
            let mut ev = event(EventKind::Signal, tgid, tid);
            ev.aux = sig as u32 as u64;
            emit(&ev);
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
