//! Entry and return probes on the malloc family.
//!
//! Only the outermost allocator call of a thread is recorded: glibc's `realloc(p, 0)` calls
//! `free`, `reallocarray` calls `realloc`, malloc's own `mmap`/`brk` happen inside it — all of
//! those run with the thread's depth above zero and are ignored. An allocator layer over
//! `malloc` (CPython's `PyObject_*`) nests the same way: its frees open a call too.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_attach_cookie, bpf_get_func_ip, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use oomtrace_common::{
    ConfigKey, DropReason, EventKind, MODE_SAMPLE, MODE_STOPPED, MemEvent, cookie, inject,
};

use crate::inject::Decision;
use crate::{
    Pending, config, count_drop, emit_with, event, event_at, first_of_thread, ids, sample, stack,
    thread, traced,
};

// `Pending::flags`: what the return must do (kernel-internal, never emitted).
/// The call resizes a block: report a `Realloc` of `old_addr`.
const OP_REALLOC_BIT: u16 = 0x1;
/// The block is stored at `*aux` (`memptr`), and the call returns 0 on success.
const OP_MEMPTR_BIT: u16 = 0x2;
/// `--mode sample`: the call was decided at entry (the bits below say what to report).
const SAMPLE_MODE: u16 = 0x100;
/// The new block is sampled.
const SAMPLED_NEW: u16 = 0x200;
/// realloc's old block is a sampled one.
const SAMPLED_OLD: u16 = 0x400;
/// Nothing to report at the return (sample mode, neither block sampled).
const SKIP: u16 = 0x800;

/// An allocator call open for over a second never returns: its uretprobe was missed
/// (for example, the process was attached while the call was in flight).
const STALE_CALL_NS: u64 = 1_000_000_000;

/// Opens an allocator call on thread `tid`: its state, with the call counted in its depth. The
/// caller stamps the call's time ([`now`]) where a return will read it.
#[inline(always)]
fn open_call(tid: u32) -> Option<&'static mut crate::Thread> {
    let t = thread(tid)?;
    // SAFETY: pointer into this thread's map value; only this thread touches it.
    let t = unsafe { &mut *t };
    if t.depth > 0 && now().saturating_sub(t.call.ts_ns) > STALE_CALL_NS {
        // A missed return must not silence this thread for good: start over, and count it.
        count_drop(DropReason::StaleCall);
        t.depth = 0;
    }
    t.depth += 1;
    Some(t)
}

/// The clock calls are stamped with.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// A uprobe session's entry result: run the call's return program.
const RUN_RETURN: u32 = 0;
/// A uprobe session's entry result: no return program for this call (no trampoline either).
const SKIP_RETURN: u32 = 1;

/// Records an outermost allocator call; nested calls only deepen the thread's depth. With
/// uprobe sessions (`SESSION`), the result says whether the call's return must run: only an
/// outermost call with something to report gets one, and only those deepen the depth; a
/// skipped one is remembered by where it entered ([`crate::Thread::skipped_sp`]).
#[inline(always)]
fn enter<const SESSION: bool>(
    ctx: &ProbeContext,
    c: u64,
    op: u16,
    size: u64,
    old_addr: u64,
    aux: u64,
) -> u32 {
    let f = cookie::alloc_fn(c);
    let (tgid, tid) = ids();
    // Outside `--all` the links are each for one process (the kernel's filter runs the program
    // for nobody else), so no traced-process lookup: once tracing ends, the mode word says so
    // until the links are closed.
    let by_link = config(ConfigKey::TraceAll) == 0;
    let mode = config(ConfigKey::Mode);
    if by_link && mode == MODE_STOPPED || !by_link && !traced(tgid) {
        return SKIP_RETURN;
    }
    let Some(t) = open_call(tid) else {
        return SKIP_RETURN;
    };
    if t.depth > 1 {
        if SESSION {
            t.depth -= 1;
            return SKIP_RETURN;
        }
        return 0;
    }
    if SESSION && t.skipped_sp != 0 {
        // SAFETY: regs is the probe's pt_regs.
        let rsp = unsafe { (*ctx.regs).rsp };
        // A leaf call (no return address kept) makes no probed call inside: not nested.
        if t.skipped_ret != 0 && crate::skipped_still_running(t.skipped_sp, t.skipped_ret, rsp) {
            // Inside a call whose return was skipped: nested.
            t.depth -= 1;
            return SKIP_RETURN;
        }
        t.skipped_sp = 0;
    }
    let mut bits = op;
    // Inside a signal handler? Only a thread that was delivered one pays for the check.
    let handler_sig = if t.handlers > 0 {
        // SAFETY: regs is the probe's pt_regs.
        let rsp = unsafe { (*ctx.regs).rsp };
        crate::signals::running_handler(t, rsp + 8)
    } else {
        0
    };
    if mode == MODE_SAMPLE {
        let new = sample::take(&mut t.countdown, size);
        let old = old_addr != 0 && sample::is_sampled(tgid, old_addr);
        if !new && !old {
            // The common case: no stack walk, and the return only unwinds depth (with uprobe
            // sessions, no return at all).
            t.call.flags = SKIP;
            if !SESSION {
                t.call.ts_ns = now();
            }
            if handler_sig != 0 {
                let stack_id = stack::stack_id(tgid, tid, call_start(ctx));
                handler_alloc(f, size, stack::start_pc(), stack_id, handler_sig);
            }
            if SESSION {
                skip_call(ctx, t, c);
                return SKIP_RETURN;
            }
            return 0;
        }
        bits |= SAMPLE_MODE;
        if new {
            bits |= SAMPLED_NEW;
        }
        if old {
            bits |= SAMPLED_OLD;
        }
    }
    // The call site is read with the walk's stack check: one read of user memory for both.
    let stack_id = stack::stack_id(tgid, tid, call_start(ctx));
    let call_site = stack::start_pc();
    t.call = Pending {
        ts_ns: now(),
        size,
        old_addr,
        call_site,
        aux,
        stack_id,
        alloc_fn: f,
        flags: bits,
    };
    if handler_sig != 0 {
        handler_alloc(f, size, call_site, t.call.stack_id, handler_sig);
    }
    if config(ConfigKey::InjectArmed) != 0 {
        inject(ctx, t, c, size, call_site);
    }
    0
}

/// Uprobe sessions: an unsampled outermost call runs no return program. The thread remembers
/// where it entered, and how to tell later whether it still runs: its return address, or for
/// a leaf allocator's call the function (see `leaf.rs`: reading the return address is most of
/// such a call's cost). A subprogram, to keep `alloc_session`'s frame small for the walk.
#[inline(never)]
fn skip_call(ctx: &ProbeContext, t: &mut crate::Thread, c: u64) {
    t.depth -= 1;
    // SAFETY: regs is the probe's pt_regs.
    t.skipped_sp = unsafe { (*ctx.regs).rsp };
    if c & cookie::LEAF != 0 {
        t.skipped_ret = 0;
        // At an entry the pc is the probed address.
        // SAFETY: regs is the probe's pt_regs.
        t.skipped_fn = unsafe { (*ctx.regs).rip };
    } else {
        let call_site = caller(ctx);
        // Never 0 for a call that still runs (0 marks a leaf call).
        t.skipped_ret = call_site | u64::from(call_site == 0);
    }
}

/// `run --fail-*`: decides whether this call fails, with its stack walked. A subprogram of its
/// own: inlined, its event would sit in `alloc_enter`'s frame, and the stack walk's callbacks
/// need that room (the verifier caps a call chain's frames at 512 bytes together).
#[inline(never)]
fn inject(ctx: &ProbeContext, t: &mut crate::Thread, c: u64, size: u64, call_site: u64) {
    let f = cookie::alloc_fn(c);
    let (tgid, tid) = ids();
    match crate::inject::decide(ctx, tgid, tid, c, size, call_site) {
        Decision::Pass => {}
        Decision::Sync => {
            // The call runs again from its entry once the user side has read the layout.
            t.depth -= 1;
        }
        Decision::Fail { seq, action } => {
            let mut ev = event(EventKind::Injected, tgid, tid);
            ev.alloc_fn = f;
            ev.size = size;
            ev.call_site = call_site;
            ev.stack_id = t.call.stack_id;
            ev.aux = u64::from(seq) | (u64::from(action) << 32);
            emit_with(&ev, true);
            if action == inject::FAIL_THROW {
                // It enters `__throw_bad_alloc` instead: its return probe never runs, so
                // the failure is counted here.
                t.depth -= 1;
                ev.kind = EventKind::Alloc as u16;
                ev.aux = 0;
                emit_with(&ev, false);
            }
        }
    }
}

/// The allocator call's site: the return address at `[rsp]`.
#[inline(always)]
fn caller(ctx: &ProbeContext) -> u64 {
    // SAFETY: regs is the probe's pt_regs; [rsp] is read from user memory with the helper.
    unsafe { bpf_probe_read_user((*ctx.regs).rsp as *const u64).unwrap_or(0) }
}

/// Where the walk of the allocator's caller starts, its pc (the call site) left for the walk
/// to read (see [`stack::Start::pc`]): the probe sits before the allocator touches rsp, so the
/// caller's stack pointer is just past the return address.
#[inline(always)]
fn call_start(ctx: &ProbeContext) -> stack::Start {
    // SAFETY: regs is the probe's pt_regs.
    let (rsp, rbp) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rbp) };
    stack::Start {
        pc: 0,
        sp: rsp + 8,
        bp: rbp,
        exact: false,
        leaf_ret: 0,
    }
}

/// An allocator call made inside the handler of signal `sig`: a hazard, reported on its own.
// A subprogram of its own: its event would otherwise sit in the entry program's frame, which
// the stack walk's call chain shares (the verifier caps the chain's frames at 512 bytes).
#[inline(never)]
fn handler_alloc(f: u16, size: u64, call_site: u64, stack_id: i32, sig: u64) {
    let (tgid, tid) = ids();
    let mut ev = event(EventKind::HandlerAlloc, tgid, tid);
    ev.alloc_fn = f;
    ev.size = size;
    ev.call_site = call_site;
    ev.stack_id = stack_id;
    ev.aux = sig;
    emit_with(&ev, false);
}

/// Deepens the thread's depth for a layer's free (after [`free`] reported it): nothing is
/// pending, so its return only unwinds the depth. False when the depth was left alone.
#[inline(always)]
fn open_free_call() -> bool {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return false;
    }
    let Some(t) = open_call(tid) else {
        return false;
    };
    if t.depth == 1 {
        t.call.ts_ns = now();
        t.call.flags = SKIP;
    }
    true
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

/// The one entry program of every allocator function: its attach cookie ([`cookie`]) says what
/// the function does, where its size and pointer arguments are, what to report it as and which
/// allocator family it belongs to. One program lets a single multi-uprobe link per process
/// carry every entry point of every allocator.
#[uprobe]
pub fn alloc_enter(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper reads the cookie of the link that ran this program.
    let c = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    entry::<false>(&ctx, c);
    0
}

/// The allocator program of uprobe sessions (`BPF_TRACE_UPROBE_SESSION`, `--mode sample`): it
/// runs at the entry, as [`alloc_enter`], and at the return of the calls whose entry asked for
/// it, as [`alloc_return`]. An unsampled call asks for none: it pays the entry trap only.
/// Written out, not with `#[uprobe]`, whose wrapper returns 0 whatever the function returns.
#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub extern "C" fn alloc_session(ctx: *mut core::ffi::c_void) -> u32 {
    let ctx = ProbeContext::new(ctx);
    // SAFETY: the helper reads the cookie of the link that ran this program.
    let c = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // A plain free never asks for its return: this is its entry. (The probed address, the
    // general test below, is a helper call that costs a free a quarter of its program.)
    if cookie::returns(c) {
        // SAFETY: the helper reads the probed address of the link that ran this program.
        let probed = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
        // SAFETY: regs is the probe's pt_regs.
        let (ip, ax) = unsafe { ((*ctx.regs).rip, (*ctx.regs).rax) };
        // At the entry the pc is the probed address; at the return, the caller's return address.
        if ip != probed {
            returned(ax);
            return 0;
        }
    }
    entry::<true>(&ctx, c)
}

/// An allocator function's entry (see [`alloc_enter`]); the [`enter`] result.
#[inline(always)]
fn entry<const SESSION: bool>(ctx: &ProbeContext, c: u64) -> u32 {
    let args = args(ctx);
    let ptr = arg_at(&args, cookie::ptr_arg(c));
    let op = cookie::op(c);
    if op == cookie::OP_FREE {
        free(ctx, ptr, cookie::alloc_fn(c));
        // An allocator layer's free (`PyObject_Free`) frees through `free` inside: open a
        // call, so that one is nested and not reported again. Its return closes it.
        if c & cookie::NESTS != 0 && open_free_call() {
            return RUN_RETURN;
        }
        return SKIP_RETURN;
    }
    let mut size = arg_at(&args, cookie::size_arg(c));
    if cookie::mul_arg(c) != cookie::NONE {
        // An overflowing n*m fails in the allocator; record it as a failure of u64::MAX bytes.
        size = mul_or_max(size, arg_at(&args, cookie::mul_arg(c)));
    }
    // One call of `enter`: the stack walk inside it is code the verifier goes through once.
    let (bits, old_addr, aux) = match op {
        cookie::OP_REALLOC => (OP_REALLOC_BIT, ptr, 0),
        // aux keeps `memptr`: the block's address is read from it at return.
        cookie::OP_MEMPTR => (OP_MEMPTR_BIT, 0, ptr),
        _ => (0, 0, 0),
    };
    enter::<SESSION>(ctx, c, bits, size, old_addr, aux)
}

/// The six integer argument registers. Read one by one at fixed offsets: the verifier refuses a
/// context load at a computed offset, which is what indexing the registers would compile to.
#[inline(always)]
fn args(ctx: &ProbeContext) -> [u64; 6] {
    // SAFETY: regs is this probe's pt_regs; volatile keeps each a load at its own offset.
    unsafe {
        let r = ctx.regs;
        [
            core::ptr::read_volatile(&raw const (*r).rdi),
            core::ptr::read_volatile(&raw const (*r).rsi),
            core::ptr::read_volatile(&raw const (*r).rdx),
            core::ptr::read_volatile(&raw const (*r).rcx),
            core::ptr::read_volatile(&raw const (*r).r8),
            core::ptr::read_volatile(&raw const (*r).r9),
        ]
    }
}

/// Argument `i` of the probed function (0 when `i` is [`cookie::NONE`]).
#[inline(always)]
fn arg_at(args: &[u64; 6], i: u64) -> u64 {
    match i {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        5 => args[5],
        _ => 0,
    }
}

/// One return program serves every allocator function: the open call says which it was.
#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    returned(ctx.ret::<u64>())
}

/// An allocator call returned `ret` (see [`alloc_return`]). A subprogram of its own: in
/// [`alloc_session`], its event would otherwise sit in the frame the stack walk's call chain
/// shares (the verifier caps the chain's frames at 512 bytes).
#[inline(never)]
fn returned(ret: u64) -> u32 {
    let (tgid, tid) = ids();
    // Only a traced call's entry raised the depth: no traced-process lookup.
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
    if p.flags & SKIP != 0 {
        return 0;
    }
    // Stamped at the entry: one clock read per call.
    let mut ev = event_at(EventKind::Alloc, tgid, tid, p.ts_ns);
    ev.alloc_fn = p.alloc_fn;
    ev.size = p.size;
    ev.call_site = p.call_site;
    ev.stack_id = p.stack_id;
    ev.addr = ret;
    if p.flags & OP_MEMPTR_BIT != 0 {
        // posix_memalign returns 0 on success and stores the block in *memptr.
        ev.addr = if ret as u32 == 0 {
            // SAFETY: user pointer read through the helper.
            unsafe { bpf_probe_read_user(p.aux as *const u64).unwrap_or(0) }
        } else {
            0
        };
    }
    let is_realloc = p.flags & OP_REALLOC_BIT != 0;
    if is_realloc {
        ev.kind = EventKind::Realloc as u16;
        ev.old_addr = p.old_addr;
    }
    if config(ConfigKey::InjectArmed) & u64::from(inject::AFTER) != 0 {
        if is_realloc && (ev.addr != 0 || ev.size == 0) {
            crate::inject::track_free(tgid, ev.old_addr);
        }
        if ev.addr != 0 {
            crate::inject::track_alloc(tgid, ev.addr, ev.size);
        }
    }
    if p.flags & SAMPLE_MODE != 0 && !sampled_return(&mut ev, p.flags, is_realloc) {
        return 0;
    }
    emit_with(&ev, first_of_thread(t));
    0
}

/// `--mode sample` at an allocator's return: keeps `SAMPLED` in step and turns `ev` into what
/// the user side must see. False: nothing to emit. The four realloc cases — old block sampled
/// or not, new block sampled or not — each get their own event.
#[inline(always)]
fn sampled_return(ev: &mut MemEvent, bits: u16, is_realloc: bool) -> bool {
    let tgid = ev.tgid;
    let (new, old) = (bits & SAMPLED_NEW != 0, bits & SAMPLED_OLD != 0);
    // Success, or glibc's realloc(p, 0) freeing p: either way the old block is gone.
    let old_gone = is_realloc && old && (ev.addr != 0 || ev.size == 0);
    if old_gone {
        sample::forget(tgid, ev.old_addr);
    }
    if new {
        if ev.addr != 0 && !sample::remember(tgid, ev.addr) {
            count_drop(DropReason::PendingFull);
        }
        if is_realloc && !old {
            // An unsampled old block is not the user side's to free.
            ev.old_addr = 0;
        }
        // The mark of a sampled event: its rate, from which the user side weighs it.
        ev.aux = config(ConfigKey::SampleRate);
        return true;
    }
    if old_gone {
        // Old block sampled, new one not: to the user side that is a free.
        ev.kind = EventKind::Free as u16;
        ev.addr = ev.old_addr;
        ev.old_addr = 0;
        ev.size = 0;
        ev.call_site = 0;
        ev.stack_id = -1;
        return true;
    }
    // An old sampled block kept by a failed realloc: nothing changed.
    false
}

/// A block returned (`free`, `operator delete`, `sdallocx`, ...), from [`alloc_enter`]; `f`
/// carries its allocator family.
#[inline(always)]
fn free(ctx: &ProbeContext, addr: u64, f: u16) {
    // free(NULL) is a no-op.
    if addr == 0 {
        return;
    }
    let (tgid, tid) = ids();
    let mode = config(ConfigKey::Mode);
    let sampling = mode == MODE_SAMPLE;
    // Sample mode: a block that was not sampled is none of our business — one lookup, no event
    // (first: a process's sampled blocks are its own, so only traced ones have any).
    if sampling && !sample::is_sampled(tgid, addr) {
        return;
    }
    // As at an entry: outside `--all` the link says the process is traced.
    let by_link = config(ConfigKey::TraceAll) == 0;
    if by_link && mode == MODE_STOPPED || !by_link && !traced(tgid) {
        return;
    }
    // Without room for its state (counted), a thread has no open call: its free still counts.
    // SAFETY: pointer into this thread's map value; only this thread touches it.
    let mut t = thread(tid).map(|t| unsafe { &mut *t });
    // A free inside another allocator call is that call's business (without uprobe sessions
    // the depth alone says so; nothing is ever skipped then).
    // SAFETY: regs is the probe's pt_regs.
    if let Some(t) = &t
        && crate::inside_call_of(t, || unsafe { (*ctx.regs).rsp })
    {
        return;
    }
    if sampling {
        sample::forget(tgid, addr);
    }
    if config(ConfigKey::InjectArmed) & u64::from(inject::AFTER) != 0 {
        crate::inject::track_free(tgid, addr);
    }
    let mut ev = event(EventKind::Free, tgid, tid);
    ev.addr = addr;
    ev.alloc_fn = f;
    if config(ConfigKey::FreeSites) != 0 {
        // Traced from its start: the user side judges each free (double, invalid, through the
        // wrong allocator), and names where it was made.
        // SAFETY: regs is the probe's pt_regs; [rsp] is read from user memory with the helper.
        ev.call_site = unsafe { bpf_probe_read_user((*ctx.regs).rsp as *const u64).unwrap_or(0) };
    }
    emit_with(&ev, t.as_mut().is_some_and(|t| first_of_thread(t)));
}
