//! The CPython frames of the allocating thread, for a process the user side marked as Python
//! (`PY_PROCS`: where its `_PyRuntime` is, and its version's offsets).
//!
//! The thread's `PyThreadState` is found once and cached per thread (`PY_TSTATES`), checked on
//! each use against the thread's identity (its kernel tid in `native_thread_id`, 3.11+; its
//! `pthread_self()`, the task's fsbase, in `thread_id` before). On a miss: the GIL holder first
//! (`gilstate.tstate_current`, 3.8–3.11), else the main interpreter's thread list, bounded.
//! Then its frames, innermost first, are walked by `bpf_loop` (one global function per frame,
//! checked once by the verifier, as in [`crate::unwind`]): per frame the code object's address
//! and the raw instruction value, which the user side resolves to a name and a line while the
//! process lives. Shim frames owned by the C stack (3.12+) are skipped and mark the frame above
//! them as the first of its eval call.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_task, bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_user, generated,
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use oomtrace_common::{
    ConfigKey,
    python::{
        ENTRY, FRAMES_MASK, HAS_CFRAME, HAS_IS_ENTRY, HAS_NATIVE_TID, HAS_OWNER,
        HAS_TSTATE_CURRENT, INSTR_POINTER, Layout, MAX_PY_FRAMES, MAX_PY_PROCS, MAX_THREADS,
        PY_WORDS,
    },
    stack,
};

use crate::config;

/// tgid → where its interpreter keeps its frames; written by the user side.
#[map]
pub static PY_PROCS: HashMap<u32, Layout> = HashMap::with_max_entries(MAX_PY_PROCS, 0);

/// A thread's thread state as last found (0: none then, at `scanned_ns`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct TstateHit {
    tstate: u64,
    scanned_ns: u64,
}

/// tid → its thread state. Written only on a miss; an LRU map, so exited threads age out.
#[map]
pub static PY_TSTATES: LruHashMap<u32, TstateHit> = LruHashMap::with_max_entries(16384, 0);
/// A thread without a thread state (a C thread, or before the runtime is up) is looked for
/// again after this long, not at every allocation.
const RESCAN_NS: u64 = 10_000_000;

/// Stack id → its Python frames (see [`oomtrace_common::python`]).
#[map]
pub static PY_STACKS: HashMap<u32, [u64; PY_WORDS]> =
    HashMap::with_max_entries(crate::MAX_STACKS, crate::BPF_F_NO_PREALLOC);
/// Per-CPU scratch for the walk's frames.
#[map]
pub static PY_SCRATCH: PerCpuArray<[u64; PY_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The walk's state between frames (per CPU; see [`crate::unwind::WalkState`] for why).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PyWalk {
    /// The next frame to look at (0: the chain's end).
    frame: u64,
    /// Frames stored.
    n: u64,
    /// Frames to store at most.
    limit: u64,
    /// [`stack`] Python flags gathered.
    status: u64,
    /// The chain ended before the limit.
    done: u64,
    layout: Layout,
    /// The first [`FRAME_WINDOW`] bytes of the current frame, read at once (every field the
    /// walk needs lies there in 3.8–3.13); `window_ok` 0: that read failed, fields are read
    /// one by one.
    window: [u64; FRAME_WINDOW / 8],
    window_ok: u64,
}

/// Bytes of a frame read with one helper call.
const FRAME_WINDOW: usize = 128;

#[map]
pub static PY_WALK: PerCpuArray<PyWalk> = PerCpuArray::with_max_entries(1, 0);

/// Walks the Python frames of the calling thread of `tgid` into [`PY_SCRATCH`]. Returns the
/// header (frame count | [`stack`] Python flags), 0 for a process not marked as Python.
#[inline(always)]
pub fn walk(tgid: u32, tid: u32) -> u64 {
    // No Python process yet: not even the lookup.
    if config(ConfigKey::PythonFrames) == 0 || config(ConfigKey::PythonLoaded) == 0 {
        return 0;
    }
    // SAFETY: presence check only.
    if unsafe { PY_PROCS.get(tgid).is_none() } {
        return 0;
    }
    python_walk(u64::from(tgid), u64::from(tid))
}

/// A forked child runs its parent's interpreter, at the same addresses.
#[inline(always)]
pub fn inherit(parent: u32, child: u32) {
    // SAFETY: copied out.
    if let Some(l) = unsafe { PY_PROCS.get(parent).copied() } {
        let _ = PY_PROCS.insert(child, l, 0);
    }
}

/// The process's interpreter is gone (exec, exit).
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = PY_PROCS.remove(tgid);
}

// The functions below are *global* BPF functions (exported by name, see `oomtrace/build.rs`):
// checked once each, whatever calls them.

/// The walk for thread `tid` of `tgid` (see [`walk`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn python_walk(tgid: u64, tid: u64) -> u64 {
    let (Some(st), Some(out)) = (PY_WALK.get_ptr_mut(0), PY_SCRATCH.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: copied out.
    let Some(layout) = (unsafe { PY_PROCS.get(tgid as u32).copied() }) else {
        return 0;
    };
    let limit = config(ConfigKey::PythonFrames).min(MAX_PY_FRAMES as u64);
    // SAFETY: per-CPU map values, ours for this program run.
    unsafe {
        (*out)[0] = 0;
        (*st).n = 0;
        (*st).status = 0;
        (*st).done = 0;
        (*st).limit = limit;
        (*st).layout = layout;
        (*st).frame = 0;
    }
    let tstate = python_tstate(tid);
    if tstate == 0 {
        // The thread has no thread state: it runs no Python (a C thread, the interpreter
        // starting or ending).
        return 0;
    }
    if tstate == TSTATE_NOT_FOUND {
        return stack::PYTHON_FAILED;
    }
    let Some(mut frame) = try_read(tstate + u64::from(layout.tstate_frame)) else {
        return stack::PYTHON_FAILED;
    };
    if layout.flags & HAS_CFRAME != 0 && frame != 0 {
        let Some(f) = try_read(frame + u64::from(layout.cframe_current_frame)) else {
            return stack::PYTHON_FAILED;
        };
        frame = f;
    }
    if frame == 0 {
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*st).frame = frame };
    // Shims (3.12+) take a step each without being stored: twice the frames, and one more.
    // SAFETY: `python_loop_step` is a BPF subprogram with the callback's signature; it takes
    // its state from the per-CPU maps.
    unsafe {
        bpf_loop(
            (2 * limit + 1) as u32,
            python_loop_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: as above, read after the loop changed them.
    let (n, mut status, done, frame) = unsafe {
        (
            core::ptr::read_volatile(&(*st).n) & FRAMES_MASK,
            core::ptr::read_volatile(&(*st).status),
            core::ptr::read_volatile(&(*st).done),
            core::ptr::read_volatile(&(*st).frame),
        )
    };
    if done == 0 && frame != 0 {
        status |= stack::PYTHON_TRUNCATED;
    }
    let header = n | status;
    // SAFETY: as above.
    unsafe { (*out)[0] = header };
    header
}

/// [`python_tstate`]: the thread list was longer than the scan.
const TSTATE_NOT_FOUND: u64 = 1;

/// The thread state of thread `tid` in the process of [`PY_WALK`]'s layout (0: none,
/// [`TSTATE_NOT_FOUND`]: not among the threads scanned).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn python_tstate(tid: u64) -> u64 {
    let Some(st) = PY_WALK.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value; copied out. `python_walk` wrote the layout before the call.
    let l = unsafe { (*st).layout };
    let fsbase = fsbase();
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out.
    if let Some(hit) = unsafe { PY_TSTATES.get(tid as u32).copied() } {
        if hit.tstate != 0 && owns(&l, hit.tstate, tid, fsbase) == Owner::Yes {
            return hit.tstate;
        }
        if hit.tstate == 0 && now.wrapping_sub(hit.scanned_ns) < RESCAN_NS {
            return 0;
        }
    }
    let mut found = 0;
    if l.flags & HAS_TSTATE_CURRENT != 0 {
        // The GIL holder: the allocating thread, nearly always, when it runs Python.
        let t = read(l.runtime + u64::from(l.tstate_current));
        if t != 0 && owns(&l, t, tid, fsbase) != Owner::No {
            found = t;
        }
    }
    if found == 0 {
        let interp = read(l.runtime + u64::from(l.interpreters_head));
        let mut t = if interp != 0 {
            read(interp + u64::from(l.threads_head))
        } else {
            0
        };
        for _ in 0..MAX_THREADS {
            if t == 0 {
                break;
            }
            if owns(&l, t, tid, fsbase) == Owner::Yes {
                found = t;
                t = 0;
                break;
            }
            t = read(t + u64::from(l.tstate_next));
        }
        if t != 0 {
            // More threads than the scan looks at: this one's may be among the rest.
            return TSTATE_NOT_FOUND;
        }
    }
    // Only a thread state known to be the thread's is kept (the GIL holder unchecked is not).
    let keep = if found != 0 && owns(&l, found, tid, fsbase) != Owner::Yes {
        0
    } else {
        found
    };
    if keep != 0 || found == 0 {
        let hit = TstateHit {
            tstate: keep,
            scanned_ns: now,
        };
        let _ = PY_TSTATES.insert(tid as u32, hit, 0);
    }
    found
}

/// Whether a thread state belongs to a thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Yes,
    No,
    /// Neither the thread's tid nor its fsbase is known to compare with.
    Unknown,
}

/// Whether thread state `t` is that of thread `tid` (whose fsbase is `fsbase`, 0: unknown).
#[inline(always)]
fn owns(l: &Layout, t: u64, tid: u64, fsbase: u64) -> Owner {
    let (field, want) = if l.flags & HAS_NATIVE_TID != 0 {
        (l.tstate_native_thread_id, tid)
    } else if fsbase != 0 {
        (l.tstate_thread_id, fsbase)
    } else {
        return Owner::Unknown;
    };
    if try_read(t + u64::from(field)) == Some(want) {
        Owner::Yes
    } else {
        Owner::No
    }
}

/// The current task's fsbase (its `pthread_self()` on x86-64 glibc), 0 when not known.
#[inline(always)]
fn fsbase() -> u64 {
    let off = config(ConfigKey::TaskFsbase);
    if off == 0 {
        return 0;
    }
    // SAFETY: plain helper call; kernel memory read through the helper, a bad address fails.
    unsafe {
        let task = bpf_get_current_task();
        bpf_probe_read_kernel((task + (off & 0xffff)) as *const u64).unwrap_or(0)
    }
}

/// `bpf_loop`'s callback: one frame. Returns 1 to end the loop.
#[inline(never)]
extern "C" fn python_loop_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let done = python_step();
    // SAFETY: a volatile read of a local (see `unwind::walk_step`).
    (unsafe { core::ptr::read_volatile(&done) } & 1) as i64
}

/// One frame of the walk in [`PY_WALK`] into [`PY_SCRATCH`]. Returns 1 when the walk is over.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn python_step() -> u64 {
    let (Some(st), Some(out)) = (PY_WALK.get_ptr_mut(0), PY_SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: per-CPU map values, ours for this program run.
    let (w, out) = unsafe { (&mut *st, &mut *out) };
    if step(w, out) {
        w.done = 1;
        1
    } else {
        0
    }
}

/// One frame: stores it (or skips a shim) and moves to its caller. True when the walk is over
/// (the limit is checked by the caller through `done`).
#[inline(always)]
fn step(w: &mut PyWalk, out: &mut [u64; PY_WORDS]) -> bool {
    let f = w.frame;
    if f == 0 {
        return true;
    }
    let l = w.layout;
    let n = (w.n & FRAMES_MASK) as usize;
    // SAFETY: the window is ours (per-CPU state); the helper fails on a bad address.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            w.window.as_mut_ptr() as *mut c_void,
            FRAME_WINDOW as u32,
            f as *const c_void,
        )
    };
    w.window_ok = u64::from(rc == 0);
    if l.flags & HAS_OWNER != 0 {
        let Some(owner) = field(w, f, l.frame_owner, 1) else {
            w.status |= stack::PYTHON_FAILED;
            return true;
        };
        if owner == u64::from(l.owner_cstack) {
            // A shim: the frame stored last began its eval call.
            if n > 0
                && let Some(word) = out.get_mut(2 * n)
            {
                *word |= ENTRY;
            }
            return match field(w, f, l.frame_previous, 8) {
                Some(prev) => {
                    w.frame = prev;
                    false
                }
                None => {
                    w.status |= stack::PYTHON_FAILED;
                    true
                }
            };
        }
    }
    if n as u64 >= w.limit || n >= MAX_PY_FRAMES {
        // A frame left past the limit.
        w.status |= stack::PYTHON_TRUNCATED;
        return true;
    }
    let code = field(w, f, l.frame_code, 8);
    let instr = if l.flags & INSTR_POINTER != 0 {
        field(w, f, l.frame_instr, 8)
    } else {
        field(w, f, l.frame_instr, 4)
    };
    let prev = field(w, f, l.frame_previous, 8);
    let entry = if l.flags & HAS_IS_ENTRY != 0 {
        field(w, f, l.frame_is_entry, 1).map(|b| b != 0)
    } else {
        // ≤ 3.10: every frame is its own eval call; 3.12+: a shim below marks it.
        Some(l.flags & HAS_OWNER == 0)
    };
    let (Some(code), Some(instr), Some(prev), Some(entry)) = (code, instr, prev, entry) else {
        w.status |= stack::PYTHON_FAILED;
        return true;
    };
    if let Some(word) = out.get_mut(1 + 2 * n) {
        *word = code;
    }
    if let Some(word) = out.get_mut(2 + 2 * n) {
        *word = (instr & !ENTRY) | if entry { ENTRY } else { 0 };
    }
    w.n = n as u64 + 1;
    w.frame = prev;
    false
}

/// The `size`-byte field (1, 4 or 8; aligned to its size) at `off` in frame `f`: from the
/// window when it holds it, else read on its own.
#[inline(always)]
fn field(w: &PyWalk, f: u64, off: u16, size: u16) -> Option<u64> {
    if w.window_ok != 0 && off as usize + size as usize <= FRAME_WINDOW {
        let word = w.window[(off as usize >> 3) & (FRAME_WINDOW / 8 - 1)];
        let v = word >> ((off & 7) * 8);
        return Some(match size {
            1 => v & 0xff,
            4 => v & 0xffff_ffff,
            _ => v,
        });
    }
    let addr = f + u64::from(off);
    match size {
        1 => try_read_u8(addr).map(u64::from),
        4 => try_read_u32(addr).map(u64::from),
        _ => try_read(addr),
    }
}

/// One word of user memory.
#[inline(always)]
fn try_read(addr: u64) -> Option<u64> {
    // SAFETY: user memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_user(addr as *const u64).ok() }
}

#[inline(always)]
fn try_read_u32(addr: u64) -> Option<u32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u32).ok() }
}

#[inline(always)]
fn try_read_u8(addr: u64) -> Option<u8> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_user(addr as *const u8).ok() }
}

/// One word of user memory (0 when unreadable).
#[inline(always)]
fn read(addr: u64) -> u64 {
    try_read(addr).unwrap_or(0)
}
