//! User stacks deduplicated into `STACKS`: the walk ([`crate::unwind`]) fills a per-CPU scratch
//! stack, whose hash is its id. Allocator entries, the memory syscalls and growth mode's page
//! faults all take their stacks here.
//!
//! The stored value is the header word (frame count and how the walk ended) and the return
//! addresses *above* the call site, which the event carries separately as frame 0. A Python
//! process's frames ([`crate::python`]) are stored under the same id in `PY_STACKS`, and are
//! part of what the id hashes: the same native stack under other Python frames is another stack.

use oomtrace_common::{ConfigKey, DropReason, python as py, stack};

use crate::python::{PY_SCRATCH, PY_STACKS};
use crate::unwind;
pub use crate::unwind::{Start, start_pc};
use crate::{SCRATCH, STACKS, count_drop};

/// Walks thread `tid` of `tgid` (the current one) from `start`, stores it, and returns its id
/// (-1: none, or it could not be stored). A start without its pc leaves it read for
/// [`start_pc`].
#[inline(always)]
pub fn stack_id(tgid: u32, tid: u32, start: Start) -> i32 {
    unwind::set_start(&start);
    stack_take(u64::from(tgid) << 32 | u64::from(tid)) as i32
}

/// [`stack_id`] from the start in the walk's state: a global BPF function (exported by name,
/// see `oomtrace/build.rs`), checked once per program rather than at every place a stack is
/// taken.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn stack_take(pid_tgid: u64) -> i64 {
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return -1;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let buf = unsafe { &mut *buf };
    let py_header = crate::python::walk(tgid, tid);
    // A kept walk stands for the native frames only, and `--fail-*` reads the walked frames
    // from the scratch.
    let reusable = py_header == 0 && crate::config(ConfigKey::InjectArmed) == 0;
    let walkable = unwind::begin(pid_tgid, reusable);
    if walkable && reusable {
        let id = crate::walk_cache::walk_cached();
        if id >= 0 {
            return id;
        }
    }
    // The caller needs the call site even with no frames to walk.
    let pc = unwind::resolve_pc();
    let header = if walkable && pc != 0 {
        crate::walk_cache::count(0);
        unwind::load_maps(tgid);
        unwind::walk(tgid, buf)
    } else {
        buf[1] = 0;
        0
    };
    buf[0] = header | (py_header & (stack::PYTHON_TRUNCATED | stack::PYTHON_FAILED));
    let py_words = 1 + 2 * (py_header & py::FRAMES_MASK) as usize;
    let py_buf = if py_header & py::FRAMES_MASK != 0 {
        // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
        PY_SCRATCH.get_ptr(0).map(|p| unsafe { &*p })
    } else {
        None
    };
    // The frames end at the first zero word (see `unwind::walk`); what lies past it is not
    // part of the stack.
    let mut hash: u32 = 0x811c_9dc5;
    for (i, &w) in buf.iter().enumerate() {
        if i > 0 && w == 0 {
            break;
        }
        hash = (hash ^ w as u32).wrapping_mul(0x0100_0193);
        hash = (hash ^ (w >> 32) as u32).wrapping_mul(0x0100_0193);
    }
    if py_buf.is_some() {
        hash = python_hash(u64::from(hash), py_words as u64) as u32;
    }
    let id = hash & 0x7fff_ffff;
    if let Some(stored) = STACKS.get_ptr(id) {
        if !same_python(id, py_buf, py_words) {
            count_drop(DropReason::StackCollision);
            return -1;
        }
        // SAFETY: pointer into the map value, valid for this program run.
        let stored = unsafe { &*stored };
        for (i, (a, b)) in stored.iter().zip(buf.iter()).enumerate() {
            if a != b {
                count_drop(DropReason::StackCollision);
                return -1;
            }
            if i > 0 && *b == 0 {
                break;
            }
        }
        crate::walk_cache::walk_keep(u64::from(id));
        return i64::from(id);
    }
    // By reference: a 512-byte copy would not fit the 512-byte BPF stack.
    if let Some(pb) = py_buf
        && PY_STACKS.insert(id, pb, 0).is_err()
    {
        count_drop(DropReason::StackCollision);
        return -1;
    }
    #[allow(clippy::needless_borrows_for_generic_args)]
    let stored = STACKS.insert(id, &*buf, 0);
    if stored.is_err() {
        count_drop(DropReason::StackCollision);
        return -1;
    }
    // Unconditional: it reads `reusable` from the walk's state, so that the verifier does
    // not follow every way through the hash and compare twice.
    crate::walk_cache::walk_keep(u64::from(id));
    i64::from(id)
}

/// Whether the Python frames stored under `id` are `py_buf`'s first `words` words (none
/// stored, when `py_buf` is none).
#[inline(always)]
fn same_python(id: u32, py_buf: Option<&[u64; py::PY_WORDS]>, words: usize) -> bool {
    if py_buf.is_none() {
        // SAFETY: presence check only.
        return unsafe { PY_STACKS.get(id).is_none() };
    }
    python_same(u64::from(id), words as u64) != 0
}

// Global BPF functions (exported by name, see `oomtrace/build.rs`): checked once each, not at
// every place a stack is taken (inlined, their loops multiplied the verifier's work by ten).

/// FNV-1a `hash` continued over the first `words` words of [`PY_SCRATCH`].
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn python_hash(hash: u64, words: u64) -> u64 {
    let mut hash = hash as u32;
    let Some(pb) = PY_SCRATCH.get_ptr(0) else {
        return u64::from(hash);
    };
    // SAFETY: per-CPU scratch slot, ours for this program run.
    let pb = unsafe { &*pb };
    for (i, &w) in pb.iter().enumerate() {
        if i as u64 >= words {
            break;
        }
        hash = (hash ^ w as u32).wrapping_mul(0x0100_0193);
        hash = (hash ^ (w >> 32) as u32).wrapping_mul(0x0100_0193);
    }
    u64::from(hash)
}

/// 1 when the Python frames stored under `id` are [`PY_SCRATCH`]'s first `words` words.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn python_same(id: u64, words: u64) -> u64 {
    let Some(pb) = PY_SCRATCH.get_ptr(0) else {
        return 0;
    };
    let Some(stored) = PY_STACKS.get_ptr(id as u32) else {
        return 0;
    };
    // SAFETY: per-CPU scratch slot and a map value, valid for this program run.
    let (pb, stored) = unsafe { (&*pb, &*stored) };
    for (i, (a, b)) in stored.iter().zip(pb.iter()).enumerate() {
        if i as u64 >= words {
            break;
        }
        if a != b {
            return 0;
        }
    }
    1
}
