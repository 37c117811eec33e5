//! `--mode sample`: byte-based Poisson sampling of allocations (as tcmalloc, jemalloc and Go do).
//!
//! Each thread counts down the bytes to its next sample point; the gaps between points are
//! exponential with mean RATE, so every allocated byte is a sample point with the same tiny
//! probability, independently. An allocation of `s` bytes that reaches the point is sampled:
//! P = 1 - exp(-s/RATE), and the user side weighs it by s / P (unbiased). No floating point
//! here: user space fills [`EXP_TABLE`] with quantiles of the exponential, and a draw
//! interpolates between two of them with random bits.
//!
//! Sampled blocks are remembered in [`SAMPLED`]; `free` of any other block finds nothing there
//! (most often its [`SAMPLED_FILTER`] slot is zero already) and returns at once, without an
//! event.

use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, LruHashMap},
};

/// Quantile bins of the exponential (a power of two: indexed by the top random bits).
pub const EXP_BINS: u32 = 1024;
const BIN_BITS: u32 = 10;
const FRAC_BITS: u32 = 32 - BIN_BITS;

/// `EXP_TABLE[i]` = RATE · -ln(1 - i/EXP_BINS) for i < EXP_BINS; the last entry closes the
/// tail bin at its conditional mean's double (same mean). Written by user space before attaching.
#[map]
pub static EXP_TABLE: Array<u64> = Array::with_max_entries(EXP_BINS + 1, 0);

/// A sampled block: (address, tgid) — forked children share their parent's addresses.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SampledKey {
    pub addr: u64,
    pub tgid: u64,
}

/// Live sampled blocks (~9 MiB of kernel memory; at 512 KiB a full map stands for ~64 GiB).
/// LRU: entries of processes that exited without freeing age out instead of filling the map.
#[map]
pub static SAMPLED: LruHashMap<SampledKey, u8> = LruHashMap::with_max_entries(1 << 17, 0);

/// A counting filter over [`SAMPLED`]: slot [`slot`] counts the live sampled blocks that hash
/// there. Most frees are of blocks never sampled; a zero slot says so without the hash map's
/// lookup, which was half of such a free's cost. A block the LRU evicted leaves its count
/// behind: the slot only sends frees to the map lookup, never wrongly away from it.
#[map]
pub static SAMPLED_FILTER: Array<u64> = Array::with_max_entries(FILTER_SLOTS, 0);

/// Filter slots (a power of two): 256 KiB.
const FILTER_SLOTS: u32 = 1 << 15;

/// The filter slot of block `addr` of process `tgid`: the top bits of a multiplicative hash.
#[inline(always)]
fn slot(tgid: u32, addr: u64) -> u32 {
    let h = (addr ^ (u64::from(tgid) << 48)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - FILTER_SLOTS.trailing_zeros())) as u32
}

/// Adds `delta` (wrapping) to a filter slot, atomically: frees on other CPUs update it too.
#[inline(always)]
fn count(slot: u32, delta: u64) {
    if let Some(p) = SAMPLED_FILTER.get_ptr_mut(slot) {
        // SAFETY: a map value's u64, aligned, valid for this program run. An atomic add (BPF's
        // `lock xadd`): core's atomics offer no `fetch_add` on this target, which has no
        // compare-and-swap in its base instruction set.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                p, delta,
            );
        }
    }
}

/// One draw of the gap to the next sample point, in bytes (≥ 1).
#[inline(always)]
fn draw() -> u64 {
    // SAFETY: plain helper call.
    let r = unsafe { bpf_get_prandom_u32() };
    let bin = r >> FRAC_BITS;
    let frac = u64::from(r & ((1 << FRAC_BITS) - 1));
    let lo = EXP_TABLE.get(bin).copied().unwrap_or(0);
    let hi = EXP_TABLE.get(bin + 1).copied().unwrap_or(lo);
    // hi - lo ≤ 2·RATE ≤ 2^31 (RATE ≤ 1 GiB), times 2^22: no overflow.
    (lo + ((hi.saturating_sub(lo) * frac) >> FRAC_BITS)).max(1)
}

/// Whether an allocation of `size` bytes on this thread is sampled; advances the countdown.
/// A countdown of 0 means "not drawn yet" (a new thread).
#[inline(always)]
pub fn take(countdown: &mut u64, size: u64) -> bool {
    if size == 0 {
        return false;
    }
    if *countdown == 0 {
        *countdown = draw();
    }
    if size < *countdown {
        *countdown -= size;
        return false;
    }
    // Memoryless: the next point lies an exponential gap past this allocation's end.
    *countdown = draw();
    true
}

/// Whether `addr` of process `tgid` is a live sampled block.
#[inline(always)]
pub fn is_sampled(tgid: u32, addr: u64) -> bool {
    let key = SampledKey {
        addr,
        tgid: u64::from(tgid),
    };
    if SAMPLED_FILTER.get(slot(tgid, addr)).copied() == Some(0) {
        return false;
    }
    // SAFETY: presence check only.
    unsafe { SAMPLED.get(key).is_some() }
}

/// Remembers a sampled block; false if it could not be stored.
#[inline(always)]
pub fn remember(tgid: u32, addr: u64) -> bool {
    let key = SampledKey {
        addr,
        tgid: u64::from(tgid),
    };
    let stored = SAMPLED.insert(key, 1, 0).is_ok();
    if stored {
        count(slot(tgid, addr), 1);
    }
    stored
}

/// Forgets a sampled block (freed, or moved by realloc).
#[inline(always)]
pub fn forget(tgid: u32, addr: u64) {
    let key = SampledKey {
        addr,
        tgid: u64::from(tgid),
    };
    if SAMPLED.remove(key).is_ok() {
        count(slot(tgid, addr), u64::MAX);
    }
}
