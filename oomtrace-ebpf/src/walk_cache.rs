//! Walks reused: a loop that allocates from the same place walks the same frames every time.
//!
//! A walk's result is a function of its key ([`WalkKey`]: the thread, its registers, the
//! process's published tables, the settings) and of the stack words it read ([`WalkLog`]).
//! When a new walk has the same key, one read of the stack span the old one covered shows
//! whether every word it read is unchanged; if so, its stack id is the answer, and the frames'
//! table lookups, the hash and the stored-stack compare are skipped. Any change in a return
//! address or a saved frame pointer on the way, including a uretprobe's trampoline put there
//! since, fails the check, and the stack is walked afresh. Walks that depended on what the log
//! cannot check (the kernel's VMA, a signal frame, a pending uretprobe's fix-up) are never kept.
//!
//! The entries are per CPU and written by whichever program run walked there; a run preempted
//! while writing one leaves it torn, so each entry carries a check over all it holds.

use aya_ebpf::{cty::c_void, helpers::generated, macros::map, maps::PerCpuArray};

use crate::unwind::{LOG_SPAN, LOG_WORDS, WALK_STATE, WalkKey};

/// Entries per CPU, chosen by the key's hash: threads that share a CPU rarely evict each other.
const WAYS: u32 = 16;

/// One kept walk.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Kept {
    key: WalkKey,
    /// Stack id + 1 (0: empty).
    id: u64,
    /// Words logged, and the span they lie in.
    n: u64,
    span: u64,
    /// Over everything above: a torn entry never matches.
    check: u64,
    offs: [u16; LOG_WORDS],
    vals: [u64; LOG_WORDS],
}

#[map]
pub static WALK_CACHE: PerCpuArray<Kept> = PerCpuArray::with_max_entries(WAYS, 0);

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

/// The stack span read to check a kept walk.
#[map]
pub static WALK_CHECK: PerCpuArray<[u64; (LOG_SPAN / 8) as usize]> =
    PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3)
}

#[inline(always)]
fn key_hash(k: &WalkKey) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for v in [
        k.pid_tgid,
        k.pc,
        k.sp,
        k.bp,
        k.leaf_ret,
        k.mode,
        k.generation,
    ] {
        h = mix(h, v);
    }
    h
}

#[inline(always)]
fn way(k: &WalkKey) -> u32 {
    ((k.pid_tgid ^ k.pc ^ k.sp).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as u32 & (WAYS - 1)
}

// Global BPF functions (exported by name, see `oomtrace/build.rs`): checked once each.

/// The stack id of a kept walk with the key in [`WALK_STATE`] whose words are all unchanged,
/// or -1.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn walk_cached() -> i64 {
    let Some(st) = WALK_STATE.get_ptr(0) else {
        return -1;
    };
    // SAFETY: per-CPU map value, ours for this program run; copied out.
    let key = unsafe { (*st).start };
    if key.generation == 0 {
        return -1;
    }
    let (Some(e), Some(words)) = (WALK_CACHE.get_ptr(way(&key)), WALK_CHECK.get_ptr_mut(0)) else {
        return -1;
    };
    // SAFETY: per-CPU map values, ours for this program run.
    let (e, words) = unsafe { (&*e, &mut *words) };
    if e.id == 0 || e.key != key {
        return -1;
    }
    let span = e.span & (LOG_SPAN - 1);
    // SAFETY: `span` is below the buffer's size; the helper fails on a bad address.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            words.as_mut_ptr() as *mut c_void,
            span as u32,
            key.sp as *const c_void,
        )
    };
    if rc != 0 {
        return -1;
    }
    let mut h = mix(mix(mix(key_hash(&key), e.id), e.n), e.span);
    for i in 0..LOG_WORDS {
        if i as u64 >= e.n {
            break;
        }
        let off = usize::from(e.offs[i]);
        let v = e.vals[i];
        if words[(off >> 3) & ((LOG_SPAN / 8) as usize - 1)] != v {
            return -1;
        }
        h = mix(mix(h, off as u64), v);
    }
    if h != e.check {
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
    if st.keep == 0 || key.generation == 0 || log.unreusable != 0 || log.n > LOG_WORDS as u64 {
        return 0;
    }
    let Some(e) = WALK_CACHE.get_ptr_mut(way(&key)) else {
        return 0;
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let e = unsafe { &mut *e };
    // Emptied first: a run that preempts this one meets no half-written entry as a whole one
    // (and the check catches the rest).
    e.id = 0;
    e.key = key;
    e.n = log.n;
    e.span = log.span;
    let id = id + 1;
    let mut h = mix(mix(mix(key_hash(&key), id), log.n), log.span);
    for i in 0..LOG_WORDS {
        if i as u64 >= log.n {
            break;
        }
        e.offs[i] = log.offs[i];
        e.vals[i] = log.vals[i];
        h = mix(mix(h, u64::from(log.offs[i])), log.vals[i]);
    }
    e.check = h;
    e.id = id;
    1
}
