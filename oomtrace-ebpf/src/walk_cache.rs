//! Walks reused: a loop that allocates from the same place walks the same frames every time.
//!
//! A walk's result is a function of its key ([`WalkKey`]: the thread, its registers, which
//! publication of unwind tables is current, the settings) and of the stack words it read ([`WalkLog`]).
//! When a new walk has the same key, one read of the stack span the old one covered shows
//! whether every word it read is unchanged; if so, its stack id is the answer, and the frames'
//! table lookups, the hash and the stored-stack compare are skipped. Any change in a return
//! address or a saved frame pointer on the way, including a uretprobe's trampoline put there
//! since, fails the check, and the stack is walked afresh. Walks that depended on what the log
//! cannot check (the kernel's VMA, a signal frame, a pending uretprobe's fix-up) are never kept.
//!
//! An allocator's entry does not know its call site yet (the return address at `[sp - 8]`):
//! the check's read starts 8 bytes lower and takes it too, so a reused walk costs one read of
//! user memory in all. Entries are therefore found by the rest of the key, two per set, and
//! told apart by the call site once it is read: consecutive `malloc`s of one function share
//! their stack and frame pointers.
//!
//! The entries are per CPU and written by whichever program run walked there; a run preempted
//! while writing one (or a run that preempts a check) must not make a torn entry pass. A keep
//! writes a unique stamp first and the same stamp last; a check needs the two equal, and the
//! first unchanged once it is done.

use core::sync::atomic::{Ordering, compiler_fence};

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, generated},
    macros::map,
    maps::PerCpuArray,
};

use crate::unwind::{self, LOG_SPAN, LOG_WORDS, WALK_STATE, WalkKey};

/// Sets per CPU, chosen by the key's hash (its call site aside): threads that share a CPU
/// rarely evict each other.
const SETS: u32 = 8;

/// One kept walk.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Kept {
    /// Written first by a keep: unique per keep (its clock), never 0.
    stamp: u64,
    key: WalkKey,
    /// Stack id + 1 (0: empty).
    id: u64,
    /// Words logged, and the span they lie in.
    n: u64,
    span: u64,
    offs: [u16; LOG_WORDS],
    vals: [u64; LOG_WORDS],
    /// Written last by a keep: equal to `stamp` once the entry is whole.
    stamp_end: u64,
}

#[map]
pub static WALK_CACHE: PerCpuArray<Kept> = PerCpuArray::with_max_entries(2 * SETS, 0);

/// Walks taken in full, and walks reused, per CPU (summed by the user side for the report).
#[map]
pub static WALK_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Counts a walk taken in full (0) or reused (1).
#[inline(always)]
pub fn count(which: u32) {
    if let Some(c) = WALK_COUNTS.get_ptr_mut(which) {
        // SAFETY: per-CPU slot; a program run does not migrate.
        unsafe { *c += 1 };
    }
}

/// Words of the check's buffer: the span, and the call site below it.
const CHECK_WORDS: usize = (LOG_SPAN / 8) as usize + 1;

/// The stack read to check a kept walk: the call site (when it was unread), then the span.
#[map]
pub static WALK_CHECK: PerCpuArray<[u64; CHECK_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The set of entries a key may be kept in. A start whose pc is its instruction (`mode` bit 0:
/// a page fault, a signal) knows it before the check, and faults of one frame come from many
/// instructions: its pc picks the set too. A return address is known only once read.
#[inline(always)]
fn set_of(k: &WalkKey) -> u32 {
    let pc = if k.mode & 1 != 0 { k.pc } else { 0 };
    let h = (k.pid_tgid ^ k.sp ^ k.bp.rotate_left(17) ^ pc.rotate_left(31))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> 60) as u32 & (SETS - 1)) * 2
}

/// Whether `a` and `b` are the same key apart from the call site.
#[inline(always)]
fn same_but_pc(a: &WalkKey, b: &WalkKey) -> bool {
    a.pid_tgid == b.pid_tgid
        && a.sp == b.sp
        && a.bp == b.bp
        && a.leaf_ret == b.leaf_ret
        && a.mode == b.mode
        && a.epoch == b.epoch
}

/// Whether `e` holds a whole kept walk for `key` (call site aside); its stamp if so.
#[inline(always)]
fn usable(e: &Kept, key: &WalkKey) -> Option<u64> {
    // SAFETY: reads of a map value that a preempting run may be writing.
    let (stamp, end) = unsafe {
        (
            core::ptr::read_volatile(&e.stamp),
            core::ptr::read_volatile(&e.stamp_end),
        )
    };
    // The entry's other fields are read after the stamps.
    compiler_fence(Ordering::SeqCst);
    (stamp != 0 && stamp == end && e.id != 0 && same_but_pc(&e.key, key)).then_some(stamp)
}

// Global BPF functions (exported by name, see `oomtrace/build.rs`): checked once each.

/// The stack id of a kept walk with the key in [`WALK_STATE`] whose words are all unchanged,
/// or -1. Reads the start's call site with the words when it is still unread (see
/// [`unwind::Start::pc`]), and leaves it in the walk's state either way the check goes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn walk_cached() -> i64 {
    let Some(st) = WALK_STATE.get_ptr_mut(0) else {
        return -1;
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let st = unsafe { &mut *st };
    let key = st.start;
    let set = set_of(&key);
    let (Some(e0), Some(e1), Some(words)) = (
        WALK_CACHE.get_ptr(set),
        WALK_CACHE.get_ptr(set + 1),
        WALK_CHECK.get_ptr_mut(0),
    ) else {
        return -1;
    };
    // SAFETY: per-CPU map values, ours for this program run (a preempting run aside, which
    // the stamps catch).
    let (e0, e1, words) = unsafe { (&*e0, &*e1, &mut *words) };
    let (s0, s1) = (usable(e0, &key), usable(e1, &key));
    // Both spans were read from this very stack pointer: the larger one is readable.
    let span = match (s0, s1) {
        (Some(_), Some(_)) => e0.span.max(e1.span),
        (Some(_), None) => e0.span,
        (None, Some(_)) => e1.span,
        (None, None) => return -1,
    } & (LOG_SPAN - 1);
    // Below the span, the call site when it is unread: word 0, and the span from word 1.
    let below = u64::from(unwind::pc_unread(st)) * 8;
    // SAFETY: at most `LOG_SPAN + 8` bytes into a buffer of that size; the helper fails on a
    // bad address.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            words.as_mut_ptr() as *mut c_void,
            (span + below) as u32,
            (key.sp - below) as *const c_void,
        )
    };
    if rc != 0 {
        return -1;
    }
    let pc = if below != 0 {
        unwind::set_pc(st, words[0]);
        words[0]
    } else {
        key.pc
    };
    let (e, stamp) = match (s0, s1) {
        (Some(s), _) if e0.key.pc == pc => (e0, s),
        (_, Some(s)) if e1.key.pc == pc => (e1, s),
        _ => return -1,
    };
    let first = (below >> 3) as usize;
    for i in 0..LOG_WORDS {
        if i as u64 >= e.n {
            break;
        }
        let at = first + (usize::from(e.offs[i]) >> 3);
        match words.get(at) {
            Some(&w) if w == e.vals[i] => {}
            _ => return -1,
        }
    }
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as in `usable`.
    if unsafe { core::ptr::read_volatile(&e.stamp) } != stamp {
        // Rewritten while it was compared.
        return -1;
    }
    count(1);
    (e.id - 1) as i64
}

/// Keeps the walk in [`WALK_STATE`], whose stack got id `id`, when its log can vouch for it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn walk_keep(id: u64) -> u64 {
    let Some(st) = WALK_STATE.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let st = unsafe { &*st };
    let key = st.start;
    let log = &st.log;
    if st.keep == 0
        || !unwind::had_tables(st)
        || key.pc == 0
        || log.unreusable != 0
        || log.n > LOG_WORDS as u64
    {
        return 0;
    }
    let set = set_of(&key);
    let (Some(e0), Some(e1)) = (WALK_CACHE.get_ptr_mut(set), WALK_CACHE.get_ptr_mut(set + 1))
    else {
        return 0;
    };
    // SAFETY: per-CPU map values, ours for this program run.
    let (e0, e1) = unsafe { (&mut *e0, &mut *e1) };
    // The entry of the same key if there is one, else the one kept longer ago.
    let e = if e1.key == key || e0.key != key && e1.stamp < e0.stamp {
        e1
    } else {
        e0
    };
    // SAFETY: plain helper call.
    let stamp = unsafe { bpf_ktime_get_ns() } | 1;
    // SAFETY: stores into a map value that a preempting run may read; volatile keeps the
    // stamps first and last.
    unsafe { core::ptr::write_volatile(&mut e.stamp, stamp) };
    compiler_fence(Ordering::SeqCst);
    e.key = key;
    e.id = id + 1;
    e.n = log.n;
    e.span = log.span;
    for i in 0..LOG_WORDS {
        if i as u64 >= log.n {
            break;
        }
        e.offs[i] = log.offs[i];
        e.vals[i] = log.vals[i];
    }
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut e.stamp_end, stamp) };
    1
}
