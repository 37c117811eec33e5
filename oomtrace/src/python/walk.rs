//! The frame chains of a live process, walked in user space with the same [`Offsets`] the kernel
//! walk uses: `_PyRuntime → interpreters.head → threads → innermost frame → previous …`.
//! What tests (and anyone cross-checking the kernel's walk) compare against.

use anyhow::{Context as _, Result, bail};

use super::Interpreter;
use super::memory::{self, u64_at};
use super::offsets::Offsets;

/// Most frames followed per thread, and most threads per interpreter.
pub const MAX_DEPTH: usize = 1024;
/// Most thread states followed.
pub const MAX_THREADS: usize = 4096;

/// One Python frame as a walk finds it: what the kernel records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The code object's address.
    pub code: u64,
    /// The raw instruction value (`f_lasti`, or the instruction pointer).
    pub instr: u64,
    /// Whether this frame is the first of a C-level eval call (≤3.10: every frame; 3.11:
    /// `is_entry`; 3.12+: a C-stack shim frame lies below it).
    pub entry: bool,
}

/// One thread state and its frames, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadFrames {
    /// `PyThreadState` address.
    pub tstate: u64,
    /// `thread_id` (`pthread_self()`).
    pub thread_id: u64,
    /// `native_thread_id` (3.11+): the kernel tid.
    pub native_thread_id: Option<u64>,
    /// Its Python frames, innermost first.
    pub frames: Vec<RawFrame>,
}

fn word(pid: u32, addr: u64) -> Result<u64> {
    memory::read_u64(pid, addr)
        .with_context(|| format!("cannot read pid {pid}'s memory at {addr:#x}"))
}

/// Every thread state of the main interpreter of process `pid`, with its frames.
pub fn walk_threads(pid: u32, interp: &Interpreter) -> Result<Vec<ThreadFrames>> {
    let o = &interp.offsets;
    let is = word(pid, interp.runtime + u64::from(o.runtime_interpreters_head))?;
    if is == 0 {
        bail!("pid {pid}: no interpreter yet (interpreters.head is NULL)");
    }
    let mut tstate = word(pid, is + u64::from(o.interp_threads_head))?;
    let mut out = Vec::new();
    while tstate != 0 && out.len() < MAX_THREADS {
        let ts = memory::read(pid, tstate, usize::from(thread_state_len(o)))
            .with_context(|| format!("cannot read pid {pid}'s thread state at {tstate:#x}"))?;
        out.push(ThreadFrames {
            tstate,
            thread_id: u64_at(&ts, usize::from(o.tstate_thread_id)),
            native_thread_id: o
                .tstate_native_thread_id
                .map(|at| u64_at(&ts, usize::from(at))),
            frames: walk_tstate(pid, o, tstate)?,
        });
        tstate = u64_at(&ts, usize::from(o.tstate_next));
    }
    Ok(out)
}

fn thread_state_len(o: &Offsets) -> u16 {
    [
        Some(o.tstate_next),
        Some(o.tstate_thread_id),
        o.tstate_native_thread_id,
        Some(o.tstate_frame),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0)
        + 8
}

/// The frames of the head thread state (the most recently created thread's; the only one of a
/// single-threaded program), innermost first, as (code, instr, entry).
pub fn walk_frames(pid: u32, interp: &Interpreter) -> Result<Vec<(u64, u64, bool)>> {
    let threads = walk_threads(pid, interp)?;
    let first = threads
        .first()
        .with_context(|| format!("pid {pid}: the interpreter has no thread state"))?;
    Ok(first
        .frames
        .iter()
        .map(|f| (f.code, f.instr, f.entry))
        .collect())
}

/// The frames of thread state `tstate`, innermost first.
pub fn walk_tstate(pid: u32, o: &Offsets, tstate: u64) -> Result<Vec<RawFrame>> {
    let mut frame = word(pid, tstate + u64::from(o.tstate_frame))?;
    if let Some(at) = o.cframe_current_frame {
        // 3.11/3.12: tstate->cframe->current_frame.
        if frame == 0 {
            return Ok(Vec::new());
        }
        frame = word(pid, frame + u64::from(at))?;
    }
    let len = [
        Some(o.frame_previous),
        Some(o.frame_code),
        Some(o.frame_instr),
        o.frame_owner,
        o.frame_is_entry,
    ]
    .into_iter()
    .flatten()
    .max()
    .map_or(8, |m| usize::from(m) + 8);
    let mut out: Vec<RawFrame> = Vec::new();
    let mut steps = 0;
    while frame != 0 && steps < MAX_DEPTH {
        steps += 1;
        let f = memory::read(pid, frame, len)
            .with_context(|| format!("cannot read pid {pid}'s frame at {frame:#x}"))?;
        let byte = |at: u16| f[usize::from(at)];
        let previous = u64_at(&f, usize::from(o.frame_previous));
        if let Some(owner) = o.frame_owner
            && byte(owner) == o.frame_owner_cstack
        {
            // A shim the eval loop pushes on entry: the frame above it started that C call.
            if let Some(last) = out.last_mut() {
                last.entry = true;
            }
            frame = previous;
            continue;
        }
        let instr = if o.frame_instr_is_pointer {
            u64_at(&f, usize::from(o.frame_instr))
        } else {
            u64::from(memory::u32_at(&f, usize::from(o.frame_instr)))
        };
        out.push(RawFrame {
            code: u64_at(&f, usize::from(o.frame_code)),
            instr,
            entry: match o.frame_is_entry {
                Some(at) => byte(at) != 0,
                // ≤3.10 every frame is its own eval call; 3.12+ set by the shim below it.
                None => o.frame_owner.is_none(),
            },
        });
        frame = previous;
    }
    Ok(out)
}
