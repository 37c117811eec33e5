//! The kernel-side walk of CPython frames: where an interpreter keeps them (per process, filled
//! by the user side from the interpreter's version), and how the walk stores what it found.
//!
//! A stored Python stack is [`PY_WORDS`] words under the same id as its native stack: a header
//! (frame count and [`crate::stack`] Python flags), then per frame, innermost first, the code
//! object's address and the raw instruction value ([`Layout::frame_instr`]), with [`ENTRY`] set
//! on the frame a C-level call of the eval loop began with.

/// The most Python frames stored per stack.
pub const MAX_PY_FRAMES: usize = 64;
/// Words of one stored Python stack: a header, then two words per frame.
pub const PY_WORDS: usize = 1 + 2 * MAX_PY_FRAMES;
/// `--python-depth` when not given.
pub const DEFAULT_PYTHON_DEPTH: u64 = 64;
/// Low 8 bits of the header: the frames stored.
pub const FRAMES_MASK: u64 = 0xff;
/// Set in a frame's instruction word: the first frame of a C-level `_PyEval_EvalFrameDefault`
/// call (the innermost frames down to this one ran in that call).
pub const ENTRY: u64 = 1 << 63;
/// Threads whose thread state the walk looks through at most, per interpreter.
pub const MAX_THREADS: u32 = 64;
/// Python processes the kernel side knows at once.
pub const MAX_PY_PROCS: u32 = 4096;

/// [`Layout::flags`]: the instruction is a pointer (3.11+), not `f_lasti` (an `int`, ≤ 3.10).
pub const INSTR_POINTER: u32 = 1;
/// [`Layout::flags`]: `tstate_current` is valid (3.8–3.11: the GIL holder, a first guess).
pub const HAS_TSTATE_CURRENT: u32 = 2;
/// [`Layout::flags`]: `tstate_native_thread_id` is valid (3.11+): a thread state names its
/// thread by kernel tid.
pub const HAS_NATIVE_TID: u32 = 4;
/// [`Layout::flags`]: the thread state points at a `_PyCFrame` whose `current_frame` is the
/// innermost frame (3.11, 3.12).
pub const HAS_CFRAME: u32 = 8;
/// [`Layout::flags`]: frames have an owner byte; shims owned by the C stack are skipped (3.12+).
pub const HAS_OWNER: u32 = 16;
/// [`Layout::flags`]: frames have an `is_entry` byte (3.11).
pub const HAS_IS_ENTRY: u32 = 32;

/// Where one process's interpreter keeps its frames: `_PyRuntime`'s address and the byte
/// offsets of its version. Plain data, the value of the kernel's per-process map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Absolute address of `_PyRuntime`.
    pub runtime: u64,
    /// The `HAS_*`/[`INSTR_POINTER`] bits.
    pub flags: u32,
    /// `(major << 8) | minor`.
    pub version: u16,
    /// `FRAME_OWNED_BY_CSTACK` in that version.
    pub owner_cstack: u16,
    /// `_PyRuntime.gilstate.tstate_current`.
    pub tstate_current: u16,
    /// `_PyRuntime.interpreters.head`.
    pub interpreters_head: u16,
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u16,
    /// `PyThreadState.next`.
    pub tstate_next: u16,
    /// `PyThreadState.thread_id` (`pthread_self()`).
    pub tstate_thread_id: u16,
    /// `PyThreadState.native_thread_id` (the kernel tid).
    pub tstate_native_thread_id: u16,
    /// The innermost frame's pointer in the thread state (`frame`, `cframe`, `current_frame`).
    pub tstate_frame: u16,
    /// `_PyCFrame.current_frame`.
    pub cframe_current_frame: u16,
    /// A frame's caller (`f_back`, `previous`).
    pub frame_previous: u16,
    /// A frame's code object (`f_code`, `f_executable`).
    pub frame_code: u16,
    /// A frame's instruction (`f_lasti`, `prev_instr`, `instr_ptr`).
    pub frame_instr: u16,
    /// A frame's owner byte.
    pub frame_owner: u16,
    /// A frame's `is_entry` byte.
    pub frame_is_entry: u16,
    /// Padding to a multiple of 8 bytes (no hole for the kernel to leave unset).
    pub _pad: [u16; 3],
}

/// The token a resolved Python frame takes in a user-side stack: never a user address
/// (non-canonical on x86-64), the low bits an index into the user side's table of frames.
pub const TOKEN_TAG: u64 = 0x8000_0000_0000_0000;
/// The bits of a token that are the index.
pub const TOKEN_INDEX: u64 = 0xffff_ffff;

/// Whether `addr` is a Python frame token.
pub const fn is_token(addr: u64) -> bool {
    addr & !TOKEN_INDEX == TOKEN_TAG
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_has_no_holes() {
        assert_eq!(core::mem::size_of::<super::Layout>(), 48);
        assert!(super::is_token(super::TOKEN_TAG | 7) && !super::is_token(0x7fff_0000_1000));
    }
}
