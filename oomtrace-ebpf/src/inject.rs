//! Fault injection (`run --fail-*`): which allocator calls fail, decided here at the call's
//! entry.
//!
//! A uprobe program cannot write the registers on this kernel (the verifier refuses any store to
//! the `pt_regs` context), so the failure itself is the user side's: for a chosen call this
//! records the thread's entry registers and real return address in `INJECTS`, then stops the
//! thread with `SIGSTOP` (which no program can block). oomtrace holds every process of the run
//! under `PTRACE_SEIZE`: at that stop it makes the call return as the allocator does when it
//! fails, and suppresses the signal. Only the chosen calls pay the round trip; every other call
//! pays one map lookup here.
//!
//! Site criteria need the process's layout: address ranges of the matching functions, and of
//! the wrappers to look past, in `INJECT_SITES`/`INJECT_WRAPPERS`. The first allocator call of
//! each image stops (`SYNC`) until the user side has put them there, then runs again from its
//! entry registers.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_func_ip, bpf_send_signal_thread},
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::ProbeContext,
};
use oomtrace_common::{
    cookie,
    inject::{self, REGS, Record, Rule, SiteKey},
    stack,
};

use crate::SCRATCH;

/// `SIGSTOP`: the stop the user side rewrites the call at.
const SIGSTOP: u32 = 19;
/// Bits of a trie key that are the tgid.
const TGID_BITS: u32 = 32;

/// The rule (one entry), written by the user side before the command runs.
#[map]
pub static INJECT_RULE: Array<Rule> = Array::with_max_entries(1, 0);
/// Hash maps allocated as they fill: injection is rare, and a preallocated 1 M-entry block
/// table alone would cost every session 92 MB of kernel memory and its load time.
const NO_PREALLOC: u32 = 1;

/// `[0]`: calls that met the rule's other criteria (what `nth` counts); `[1]`: injections made.
#[map]
pub static INJECT_COUNT: Array<u64> = Array::with_max_entries(2, 0);
/// tid → the call it was stopped at; the user side takes it at the stop.
#[map]
pub static INJECTS: HashMap<u32, Record> = HashMap::with_max_entries(4096, NO_PREALLOC);
/// Where [`stop`] builds its record.
#[map]
pub static INJECT_SCRATCH: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);
/// Site functions' address ranges, per process.
#[map]
pub static INJECT_SITES: LpmTrie<[u8; 12], u8> = LpmTrie::with_max_entries(65536, 0);
/// Wrapper functions' (and runtime modules') address ranges, per process.
#[map]
pub static INJECT_WRAPPERS: LpmTrie<[u8; 12], u8> = LpmTrie::with_max_entries(262144, 0);
/// tgid → 1 once its site ranges are in (dropped at exec: a new image needs its own).
#[map]
pub static INJECT_READY: HashMap<u32, u8> = HashMap::with_max_entries(65536, NO_PREALLOC);
/// (tgid << 64 | addr) halves → size of each live block, `--fail-after` only.
#[map]
pub static INJECT_BLOCKS: HashMap<[u64; 2], u64> = HashMap::with_max_entries(1 << 20, NO_PREALLOC);
/// tgid → its outstanding heap bytes, `--fail-after` only.
#[map]
pub static INJECT_HELD: HashMap<u32, u64> = HashMap::with_max_entries(65536, NO_PREALLOC);

/// What [`decide`] found for a call.
pub enum Decision {
    /// Let it run.
    Pass,
    /// Stopped until the user side has the process's site ranges; the call then runs again
    /// from its entry, so this pass must leave no trace.
    Sync,
    /// Stopped to fail: the `seq`-th injection, made to return as `action` says.
    Fail {
        /// 1-based.
        seq: u32,
        /// [`inject::FAIL_NULL`], ...
        action: u32,
    },
}

/// The rule, when armed.
#[inline(always)]
fn rule() -> Option<Rule> {
    INJECT_RULE.get(0).copied()
}

#[inline(always)]
fn in_trie(trie: &LpmTrie<[u8; 12], u8>, tgid: u32, addr: u64) -> bool {
    let key = Key::new(TGID_BITS + 64, SiteKey::new(tgid, addr).data);
    trie.get(&key).is_some()
}

/// Whether any frame of the call's stack (its call site, then the frames the walk left in the
/// per-CPU scratch) lies in a site range.
#[inline(always)]
fn any_frame_matches(tgid: u32, call_site: u64) -> bool {
    if in_trie(&INJECT_SITES, tgid, call_site.wrapping_sub(1)) {
        return true;
    }
    let Some(buf) = SCRATCH.get_ptr(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch slot, filled by this program run's walk.
    let buf = unsafe { &*buf };
    let frames = (buf[0] & stack::FRAMES_MASK) as usize;
    for (i, &ret) in buf.iter().enumerate().skip(1) {
        if i > frames || ret == 0 {
            return false;
        }
        // A return address points past the call: look up the call instruction's last byte.
        if in_trie(&INJECT_SITES, tgid, ret - 1) {
            return true;
        }
    }
    false
}

/// Whether the call's site, its first frame outside the wrapper ranges, lies in a site range.
#[inline(always)]
fn site_frame_matches(tgid: u32, call_site: u64) -> bool {
    let site = call_site.wrapping_sub(1);
    if !in_trie(&INJECT_WRAPPERS, tgid, site) {
        return in_trie(&INJECT_SITES, tgid, site);
    }
    let Some(buf) = SCRATCH.get_ptr(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch slot, filled by this program run's walk.
    let buf = unsafe { &*buf };
    let frames = (buf[0] & stack::FRAMES_MASK) as usize;
    for (i, &ret) in buf.iter().enumerate().skip(1) {
        if i > frames || ret == 0 {
            return false;
        }
        let pc = ret - 1;
        if !in_trie(&INJECT_WRAPPERS, tgid, pc) {
            return in_trie(&INJECT_SITES, tgid, pc);
        }
    }
    false
}

/// SplitMix64: the rate's draw for matching call `n`, repeatable from the seed.
#[inline(always)]
fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Adds one to counter `i` and returns the new value.
#[inline(always)]
fn bump(i: u32) -> u64 {
    match INJECT_COUNT.get_ptr_mut(i) {
        // SAFETY: pointer into the map value, valid for this program run. Threads of the process
        // racing here may both read one value: `nth` counts calls, and a race is two calls at
        // the same instant, whose order no run could repeat anyway.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    }
}

/// The outermost allocator call of thread `tid` (cookie `c`) requesting `size` bytes, its stack
/// walked: stops it when the rule says it fails, or when the rule needs the process's layout
/// first.
#[inline(always)]
pub fn decide(
    ctx: &ProbeContext,
    tgid: u32,
    tid: u32,
    c: u64,
    size: u64,
    call_site: u64,
) -> Decision {
    let Some(r) = rule() else {
        return Decision::Pass;
    };
    let sites = r.when & (inject::SITE_ANY | inject::SITE_ONLY) != 0;
    // SAFETY: presence check only.
    if sites && unsafe { INJECT_READY.get(tgid).is_none() } {
        return if stop(ctx, tid, inject::SYNC, 0, call_site) {
            Decision::Sync
        } else {
            Decision::Pass
        };
    }
    if r.when & inject::SIZE != 0 && (size < r.size_min || size > r.size_max) {
        return Decision::Pass;
    }
    if r.when & inject::SITE_ANY != 0 && !any_frame_matches(tgid, call_site) {
        return Decision::Pass;
    }
    if r.when & inject::SITE_ONLY != 0 && !site_frame_matches(tgid, call_site) {
        return Decision::Pass;
    }
    if r.when & inject::AFTER != 0 {
        // SAFETY: copied out.
        let held = unsafe { INJECT_HELD.get(tgid).copied().unwrap_or(0) };
        if held.saturating_add(size) <= r.after {
            return Decision::Pass;
        }
    }
    let n = bump(0);
    if r.when & inject::NTH != 0 && n != r.nth {
        return Decision::Pass;
    }
    if r.when & inject::RATE != 0 && (draw(r.seed, n) >> 32) >= r.rate {
        return Decision::Pass;
    }
    let action = if cookie::throws(c) {
        inject::FAIL_THROW
    } else if cookie::op(c) == cookie::OP_MEMPTR {
        inject::FAIL_ENOMEM
    } else {
        inject::FAIL_NULL
    };
    let seq = bump(1) as u32;
    if stop(ctx, tid, action, seq, call_site) {
        Decision::Fail { seq, action }
    } else {
        Decision::Pass
    }
}

/// Records the call's entry state for the user side and stops the thread.
#[inline(always)]
fn stop(ctx: &ProbeContext, tid: u32, action: u32, seq: u32, ret_addr: u64) -> bool {
    // Built in a per-CPU slot, not on the stack: the stack walk's subprograms need that room
    // (the verifier caps a call chain's frames at 512 bytes together).
    let Some(rec) = INJECT_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let rec = unsafe { &mut *rec };
    rec.action = action;
    rec.seq = seq;
    rec.ret_addr = ret_addr;
    copy_regs(ctx, &mut rec.regs);
    // The probe address (regs' ip is past the breakpoint on some kernels).
    // SAFETY: plain helper call on this program's context.
    rec.regs[inject::reg::RIP] = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    // By reference: a copy would sit on the stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    if INJECTS.insert(tid, &*rec, 0).is_err() {
        return false;
    }
    // SAFETY: plain helper call: signals the current thread.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        let _ = INJECTS.remove(tid);
        return false;
    }
    true
}

/// The probe's registers, one fixed-offset load each (the verifier refuses computed ones).
#[inline(always)]
fn copy_regs(ctx: &ProbeContext, out: &mut [u64; REGS]) {
    // SAFETY: regs is this probe's pt_regs; volatile keeps each a load at its own offset.
    unsafe {
        let r = ctx.regs;
        out[0] = core::ptr::read_volatile(&raw const (*r).r15);
        out[1] = core::ptr::read_volatile(&raw const (*r).r14);
        out[2] = core::ptr::read_volatile(&raw const (*r).r13);
        out[3] = core::ptr::read_volatile(&raw const (*r).r12);
        out[4] = core::ptr::read_volatile(&raw const (*r).rbp);
        out[5] = core::ptr::read_volatile(&raw const (*r).rbx);
        out[6] = core::ptr::read_volatile(&raw const (*r).r11);
        out[7] = core::ptr::read_volatile(&raw const (*r).r10);
        out[8] = core::ptr::read_volatile(&raw const (*r).r9);
        out[9] = core::ptr::read_volatile(&raw const (*r).r8);
        out[10] = core::ptr::read_volatile(&raw const (*r).rax);
        out[11] = core::ptr::read_volatile(&raw const (*r).rcx);
        out[12] = core::ptr::read_volatile(&raw const (*r).rdx);
        out[13] = core::ptr::read_volatile(&raw const (*r).rsi);
        out[14] = core::ptr::read_volatile(&raw const (*r).rdi);
        out[15] = core::ptr::read_volatile(&raw const (*r).orig_rax);
        out[16] = core::ptr::read_volatile(&raw const (*r).rip);
        out[17] = core::ptr::read_volatile(&raw const (*r).cs);
        out[18] = core::ptr::read_volatile(&raw const (*r).eflags);
        out[19] = core::ptr::read_volatile(&raw const (*r).rsp);
        out[20] = core::ptr::read_volatile(&raw const (*r).ss);
    }
}

/// `--fail-after`: a block of `size` bytes at `addr` is now live in `tgid`.
#[inline(always)]
pub fn track_alloc(tgid: u32, addr: u64, size: u64) {
    if INJECT_BLOCKS
        .insert([u64::from(tgid), addr], size, 0)
        .is_err()
    {
        return;
    }
    match INJECT_HELD.get_ptr_mut(tgid) {
        // SAFETY: pointer into the map value, valid for this program run.
        Some(p) => unsafe { *p += size },
        None => {
            let _ = INJECT_HELD.insert(tgid, size, 0);
        }
    }
}

/// `--fail-after`: the block at `addr` is gone.
#[inline(always)]
pub fn track_free(tgid: u32, addr: u64) {
    let key = [u64::from(tgid), addr];
    // SAFETY: copied out.
    let Some(size) = (unsafe { INJECT_BLOCKS.get(key).copied() }) else {
        return;
    };
    let _ = INJECT_BLOCKS.remove(key);
    if let Some(p) = INJECT_HELD.get_ptr_mut(tgid) {
        // SAFETY: pointer into the map value, valid for this program run.
        unsafe { *p = (*p).saturating_sub(size) };
    }
}
