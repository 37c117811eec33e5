//! Direct `mmap`/`munmap`/`mremap`/`brk` by user code, from the raw syscall tracepoints
//! (`dispatch.rs` calls these with the syscall's arguments).
//!
//! Calls made inside an allocator (malloc's own mmap) arrive with the thread's depth above zero
//! and are ignored: they belong to that allocation.

use aya_ebpf::{
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    programs::TracePointContext,
};
use oomtrace_common::{AllocFn, DropReason, EventKind};

use crate::{PENDING, Pending, count_drop, emit, event, ids, inside_call, stack, traced};

/// Pending-state classes: each pairing syscall can be open at once per thread.
const PEND_MMAP: u64 = 1;
const PEND_MREMAP: u64 = 2;
const PEND_BRK: u64 = 3;
const MAP_ANONYMOUS: u64 = 0x20;
/// `size` of a `Brk` event made inside an allocator call (see `oomtrace_common::BRK_NESTED`).
const BRK_NESTED: u64 = oomtrace_common::BRK_NESTED;
/// Offsets of `sp` and `bp` in x86-64 `struct pt_regs` (an ABI-stable layout).
const PT_REGS_SP: usize = 19 * 8;
const PT_REGS_BP: usize = 4 * 8;

/// Key of a thread's pending syscall of one class.
#[inline(always)]
fn pend_key(tid: u32, class: u64) -> u64 {
    (tid as u64) << 2 | class
}

/// Reads a field of a tracepoint record at its format offset.
#[inline(always)]
pub fn tp<T>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: offsets are the tracepoint format's; read_at bounds-checks via the helper.
    unsafe {
        ctx.read_at::<T>(off)
            .unwrap_or_else(|_| core::mem::zeroed())
    }
}

/// The return address at the syscall's user stack pointer (the call site when the libc wrapper
/// is a leaf, as glibc's mmap/munmap/mremap/brk wrappers are) and the user `rsp` and `rbp`.
#[inline(always)]
fn syscall_call_site() -> (u64, u64, u64) {
    // SAFETY: task and regs come from BTF helpers; every read goes through probe-read helpers.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        let sp: u64 = bpf_probe_read_kernel(regs.add(PT_REGS_SP) as *const u64).unwrap_or(0);
        let bp: u64 = bpf_probe_read_kernel(regs.add(PT_REGS_BP) as *const u64).unwrap_or(0);
        (bpf_probe_read_user(sp as *const u64).unwrap_or(0), sp, bp)
    }
}

/// The syscall's user stack pointer.
#[inline(always)]
fn user_sp() -> u64 {
    crate::signals::user_regs().1
}

#[inline(always)]
fn syscall_enter(class: u64, size: u64, old: u64, aux: u64) {
    let (tgid, tid) = ids();
    if !traced(tgid) || inside_call(tid, user_sp) {
        return;
    }
    let (call_site, rsp, rbp) = syscall_call_site();
    let start = stack::Start {
        pc: call_site,
        sp: rsp + 8,
        bp: rbp,
        exact: false,
        leaf_ret: 0,
    };
    let p = Pending {
        ts_ns: 0,
        size,
        old_addr: old,
        call_site,
        aux,
        stack_id: stack::stack_id(tgid, tid, start),
        alloc_fn: AllocFn::Syscall as u16,
        flags: 0,
    };
    if PENDING.insert(pend_key(tid, class), p, 0).is_err() {
        count_drop(DropReason::PendingFull);
    }
}

#[inline(always)]
fn syscall_exit(ret: i64, class: u64, kind: EventKind) {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return;
    }
    let key = pend_key(tid, class);
    // SAFETY: copied out before removal.
    let Some(p) = (unsafe { PENDING.get(key).copied() }) else {
        return;
    };
    let _ = PENDING.remove(key);
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

/// `mmap(addr, len, prot, flags, ...)` entered.
#[inline(always)]
pub fn mmap_enter(len: u64, prot: u64, flags: u64) {
    if flags & MAP_ANONYMOUS != 0 {
        // aux: the protection, and the flags above (MAP_STACK marks a thread's stack), so the
        // user side can tell reserved address space from memory.
        syscall_enter(PEND_MMAP, len, 0, (prot & 0xffff_ffff) | (flags << 32));
    }
}

/// `mmap` returned `ret`.
#[inline(always)]
pub fn mmap_exit(ret: i64) {
    syscall_exit(ret, PEND_MMAP, EventKind::Mmap);
}

/// `mremap(addr, old_len, new_len, ...)` entered.
#[inline(always)]
pub fn mremap_enter(addr: u64, old_len: u64, new_len: u64) {
    // size = new_len, old_addr = addr, aux = old_len.
    syscall_enter(PEND_MREMAP, new_len, addr, old_len);
}

/// `mremap` returned `ret`.
#[inline(always)]
pub fn mremap_exit(ret: i64) {
    syscall_exit(ret, PEND_MREMAP, EventKind::Mremap);
}

/// `brk(brk)` entered.
#[inline(always)]
pub fn brk_enter(brk: u64) {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return;
    }
    if !inside_call(tid, user_sp) {
        syscall_enter(PEND_BRK, 0, 0, brk);
    } else {
        // malloc moving the break: not an allocation of its own, but the user side must know
        // where the break is, or a later trim from free() would look like growth.
        let p = Pending {
            ts_ns: 0,
            size: BRK_NESTED,
            old_addr: 0,
            call_site: 0,
            aux: brk,
            stack_id: -1,
            alloc_fn: AllocFn::Syscall as u16,
            flags: 0,
        };
        let _ = PENDING.insert(pend_key(tid, PEND_BRK), p, 0);
    }
}

/// `brk` returned `ret`.
#[inline(always)]
pub fn brk_exit(ret: i64) {
    syscall_exit(ret, PEND_BRK, EventKind::Brk);
}

/// `munmap(addr, len)` entered.
#[inline(always)]
pub fn munmap_enter(addr: u64, len: u64) {
    let (tgid, tid) = ids();
    // munmap inside free() (of an mmapped chunk) arrives at depth 0: the user side only
    // trims blocks of kind mmap, so it cannot touch the malloc block freed by that call.
    if !traced(tgid) || inside_call(tid, user_sp) {
        return;
    }
    let mut ev = event(EventKind::Munmap, tgid, tid);
    ev.addr = addr;
    ev.size = len;
    emit(&ev);
}
