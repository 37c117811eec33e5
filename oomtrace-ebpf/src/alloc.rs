//! Entry and return probes on the malloc family.
//!
//! Only the outermost allocator call of a thread is recorded: glibc's `realloc(p, 0)` calls
//! `free`, `reallocarray` calls `realloc`, malloc's own `mmap`/`brk` happen inside it — all of
//! those run with the thread's depth above zero and are ignored.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use oomtrace_common::{AllocFn, DropReason, EventKind};

use crate::{
    Pending, count_drop, depth, emit_with, event, first_of_image, ids, stack, thread, traced,
    traced_flags,
};

/// An allocator call open for over a second never returns: its uretprobe was missed
/// (for example, the process was attached while the call was in flight).
const STALE_CALL_NS: u64 = 1_000_000_000;

/// Records an outermost allocator call; nested calls only deepen the thread's depth.
#[inline(always)]
fn enter(ctx: &ProbeContext, f: AllocFn, size: u64, old_addr: u64, aux: u64) -> u32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    let Some(t) = thread(tid) else { return 0 };
    // SAFETY: pointer into this thread's map value; only this thread touches it.
    let t = unsafe { &mut *t };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if t.depth > 0 && now.saturating_sub(t.call.ts_ns) > STALE_CALL_NS {
        // A missed return must not silence this thread for good: start over, and count it.
        count_drop(DropReason::StaleCall);
        t.depth = 0;
    }
    t.depth += 1;
    if t.depth > 1 {
        return 0;
    }
    // SAFETY: regs is the probe's pt_regs; [rsp] is read from user memory with the helper.
    let (call_site, rbp) = unsafe {
        let regs = &*ctx.regs;
        (
            bpf_probe_read_user(regs.rsp as *const u64).unwrap_or(0),
            regs.rbp,
        )
    };
    t.call = Pending {
        ts_ns: now,
        size,
        old_addr,
        call_site,
        aux,
        stack_id: stack::stack_id(rbp),
        alloc_fn: f as u16,
        _pad: 0,
    };
    0
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
    enter(&ctx, AllocFn::Malloc, arg(&ctx, 0), 0, 0)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    // An overflowing n*m fails in the allocator; record it as a failure of u64::MAX bytes.
    let size = mul_or_max(arg(&ctx, 0), arg(&ctx, 1));
    enter(&ctx, AllocFn::Calloc, size, 0, 0)
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, AllocFn::Realloc, arg(&ctx, 1), arg(&ctx, 0), 0)
}

#[uprobe]
pub fn reallocarray_enter(ctx: ProbeContext) -> u32 {
    let size = mul_or_max(arg(&ctx, 1), arg(&ctx, 2));
    enter(&ctx, AllocFn::Reallocarray, size, arg(&ctx, 0), 0)
}

#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    // aux keeps `memptr`: the block's address is read from it at return.
    enter(&ctx, AllocFn::PosixMemalign, arg(&ctx, 2), 0, arg(&ctx, 0))
}

#[uprobe]
pub fn aligned_alloc_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, AllocFn::AlignedAlloc, arg(&ctx, 1), 0, 0)
}

#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, AllocFn::Memalign, arg(&ctx, 1), 0, 0)
}

#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, AllocFn::Valloc, arg(&ctx, 0), 0, 0)
}

#[uprobe]
pub fn pvalloc_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, AllocFn::Pvalloc, arg(&ctx, 0), 0, 0)
}

/// One return program serves every allocator function: the open call says which it was.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    let (tgid, tid) = ids();
    let Some(flags) = traced_flags(tgid) else {
        return 0;
    };
    let Some(t) = crate::THREADS.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: pointer into this thread's map value; only this thread touches it.
    let t = unsafe { &mut *t };
    if t.depth == 0 {
        // Entered before we attached.
        return 0;
    }
    t.depth -= 1;
    if t.depth > 0 {
        return 0;
    }
    let p = t.call;
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
    emit_with(&ev, first_of_image(flags));
    0
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let (tgid, tid) = ids();
    let Some(flags) = traced_flags(tgid) else {
        return 0;
    };
    let addr = arg(&ctx, 0);
    // free(NULL) is a no-op; a free inside another allocator call is that call's business.
    if addr == 0 || depth(tid) > 0 {
        return 0;
    }
    let mut ev = event(EventKind::Free, tgid, tid);
    ev.addr = addr;
    emit_with(&ev, first_of_image(flags));
    0
}
