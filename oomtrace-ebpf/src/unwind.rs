//! The user stack above an allocation, unwound with the tables the user side built from each
//! module's `.eh_frame` (frame pointers where a pc has no rows).
//!
//! Each step finds the pc's row: a per-CPU cache first, else the pc's mapping in the process's
//! sorted mapping list, the module's page entry, and the last row at or below the pc in that
//! page. The row gives the caller's frame address (CFA) from `rsp` or `rbp` and where `rbp` was
//! saved; the return address is at CFA - 8 on x86-64. The user stack is read through a per-CPU
//! window (one helper call for many frames, not one per word). Every search is bounded, every
//! read goes through the probe-read helpers, and the walk stops at the first frame that does
//! not lie above the previous one.
//!
//! The frames are taken by `bpf_loop` with one step as its callback: the verifier goes through
//! the step until its state repeats, not once per frame. Inlined in the programs, even four
//! steps exceeded its million-instruction limit, because every branch of a step multiplies the
//! paths of the steps after it. The walk's state lives in a per-CPU map for the same reason:
//! the verifier tracks nothing of a map value's contents, so iterations cannot differ for it.
//!
//! A pc in a mapping the user side has not published yet (a library mapped moments ago) is
//! looked up through the kernel's own VMA (`bpf_find_vma`): its file's inode names the module
//! when the user side has built its rows already, and the walk goes on exactly.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_find_vma, bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_loop,
        bpf_probe_read_kernel, bpf_probe_read_user, generated,
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use oomtrace_common::{
    ConfigKey, EventKind, MAX_STACK_FRAMES, STACK_WORDS, stack,
    unwind::{
        ANON_MODULE, ExecMapping, FileKey, FileModule, MAX_FILES, MAX_MAPPINGS, MAX_MODULES,
        MAX_PAGES, MAX_PENDING_RETURNS, MAX_PROC_MAPPINGS, MAX_PROCS, MAX_ROWS, ModuleTable,
        NO_MODULE, PAGE_SHIFT, ProcMaps, kind, row_cfa_off, row_kind, row_pc, row_rbp_slot,
    },
};

use crate::config;

/// Written by user space through a shared mapping, not one syscall per row.
const BPF_F_MMAPABLE: u32 = aya_ebpf::bindings::BPF_F_MMAPABLE;

#[map]
pub static UNWIND_MODULES: Array<ModuleTable> =
    Array::with_max_entries(MAX_MODULES, BPF_F_MMAPABLE);
#[map]
pub static UNWIND_PAGES: Array<u64> = Array::with_max_entries(MAX_PAGES, BPF_F_MMAPABLE);
#[map]
pub static UNWIND_ROWS: Array<u64> = Array::with_max_entries(MAX_ROWS, BPF_F_MMAPABLE);
#[map]
pub static EXEC_MAPPINGS: Array<ExecMapping> =
    Array::with_max_entries(MAX_MAPPINGS, BPF_F_MMAPABLE);
/// tgid → its run of `EXEC_MAPPINGS`; written by the user side whenever its maps change.
#[map]
pub static PROC_MAPS: HashMap<u32, ProcMaps> = HashMap::with_max_entries(MAX_PROCS, 0);
/// Files whose rows are loaded, by inode: for mappings not published yet.
#[map]
pub static MODULE_FILES: HashMap<FileKey, FileModule> = HashMap::with_max_entries(MAX_FILES, 0);

/// Processes told to re-read their maps, with when (at most one notice per interval each).
#[map]
pub static MAPS_NOTICED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);
/// A process is told again about code outside its known mappings after this long.
const NOTICE_INTERVAL_NS: u64 = 2_000_000;

/// Rows found, per CPU: `CACHE_SLOTS` entries of (pc, generation, row info | check << 32).
/// A loop that allocates from the same places finds every frame's row in one read.
const CACHE_SLOTS: usize = 512;
const CACHE_BITS: u32 = 9;
#[map]
pub static ROW_CACHE: PerCpuArray<[u64; 3 * CACHE_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

/// The window of user stack read at once, per CPU.
const WINDOW_WORDS: usize = 128;
const WINDOW_BYTES: u64 = 8 * WINDOW_WORDS as u64;

/// A slice of the walked stack, read with one helper call.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Window {
    /// User address of `words[0]`.
    base: u64,
    /// Bytes valid (0: none).
    len: u64,
    words: [u64; WINDOW_WORDS],
}

#[map]
pub static STACK_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

/// The last mapping found through the kernel's VMA (see [`unwind_vma_row`]).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct VmaHit {
    /// `[lo, hi)`: the VMA.
    lo: u64,
    hi: u64,
    /// Subtracted from a pc in it to get the module's address.
    bias: u64,
    /// Its module ([`NO_MODULE`]: no rows).
    module: u64,
    /// The pc looked up.
    pc: u64,
}

#[map]
pub static VMA_HIT: PerCpuArray<VmaHit> = PerCpuArray::with_max_entries(1, 0);

/// A forked child unwinds with its parent's mappings until its own are published.
#[inline(always)]
pub fn inherit(parent: u32, child: u32) {
    // SAFETY: copied out.
    if let Some(m) = unsafe { PROC_MAPS.get(parent).copied() } {
        let _ = PROC_MAPS.insert(child, m, 0);
    }
}

/// The process's layout is gone (exec, exit).
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = PROC_MAPS.remove(tgid);
}

/// Tells the user side that `tgid` runs code its published mappings do not cover (a library
/// loaded since, or a new image), at most once per [`NOTICE_INTERVAL_NS`].
#[inline(always)]
fn notice_unknown(tgid: u32, pc: u64) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out.
    if let Some(last) = unsafe { MAPS_NOTICED.get(tgid).copied() }
        && now.saturating_sub(last) < NOTICE_INTERVAL_NS
    {
        return;
    }
    let _ = MAPS_NOTICED.insert(tgid, now, 0);
    let mut ev = crate::event(EventKind::NewCode, tgid, 0);
    ev.addr = pc;
    crate::emit_with(&ev, true);
}

/// Binary-search steps over one process's mappings (2^10 > MAX_PROC_MAPPINGS).
const MAPPING_STEPS: usize = 10;
/// Binary-search steps over one page's rows (a 4 KiB page has at most 4097 rows).
const ROW_STEPS: usize = 13;
/// Offsets in the `ucontext_t` at `rsp` when a signal handler returns into `__restore_rt`:
/// `uc_mcontext` starts at 40, and its rbp, rsp and rip are at 80, 120 and 128.
const UC_RBP: u64 = 40 + 80;
const UC_RSP: u64 = 40 + 120;
const UC_RIP: u64 = 40 + 128;

/// Where a walk starts: the frame of the code that made the call.
pub struct Start {
    /// A return address into that frame (or, with `exact`, the pc itself). 0 without `exact`:
    /// the return address at `[sp - 8]`, read with the reused walk's check of the stack (one
    /// read for both) or by [`resolve_pc`].
    pub pc: u64,
    /// Its stack pointer: the CFA of the frame below.
    pub sp: u64,
    pub bp: u64,
    /// `pc` is the current instruction (a faulting one), not a return address: look it up
    /// as is rather than at `pc - 1`.
    pub exact: bool,
    /// Where no rows cover `pc`: the return address at `[sp]`, when it looks like one (a leaf
    /// that keeps no frame of its own); 0 otherwise.
    pub leaf_ret: u64,
}

/// The walk's state between steps (per CPU: a program run is never interrupted by another
/// that walks, and the verifier tracks nothing of a map value's contents).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct WalkState {
    pc: u64,
    sp: u64,
    bp: u64,
    /// [`stack`] flags gathered so far.
    flags: u64,
    /// Frames stored (`buf[1..=n]`).
    n: u64,
    /// `pc` is an instruction, not a return address (the first frame of a fault, a signal
    /// frame's interrupted pc).
    exact: u64,
    /// See [`Start::leaf_ret`] (first step only).
    leaf_ret: u64,
    /// The walk ended before the limit.
    done: u64,
    /// [`ConfigKey::UnwindFramePointers`]: no table lookups.
    fp_only: u64,
    /// A pc that lay in no known mapping (0: none).
    unknown_pc: u64,
    /// The process's mappings.
    maps: ProcMaps,
    /// Pending uretprobes of the thread: where each replaced a return address, and the address.
    slots: [u64; MAX_PENDING_RETURNS],
    orig: [u64; MAX_PENDING_RETURNS],
    /// Where the walk started, and what else its result depends on: the key of
    /// [`crate::walk_cache`].
    pub start: WalkKey,
    /// The stack words the walk read ([`crate::walk_cache`] checks them to reuse its result).
    pub log: WalkLog,
    /// Non-zero: the walk's result may be kept for reuse (see [`begin`]).
    pub keep: u64,
}

/// What a walk's result is a function of, besides the stack words it read: the thread, its
/// registers, the process's published tables and the walk's settings.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WalkKey {
    pub pid_tgid: u64,
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    pub leaf_ret: u64,
    /// `exact | fp_only << 1 | limit << 8`.
    pub mode: u64,
    /// [`WALK_EPOCH`] when the walk began: any process's new tables invalidate every kept walk
    /// (publications are rare: an exec, a `dlopen`), and a process without tables never has
    /// one kept.
    pub epoch: u64,
}

/// Words one walk may log: two per frame (the return address and a saved `rbp`).
pub const LOG_WORDS: usize = 2 * 64;
/// The span of stack above the start's `sp` whose words a reusable walk may read.
pub const LOG_SPAN: u64 = 4096;

/// The stack words one walk read, as offsets from its start's `sp` and their values.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct WalkLog {
    pub n: u64,
    /// The highest offset logged, plus 8 (0: none).
    pub span: u64,
    /// Set when the walk depended on something the log cannot check (kernel state, a read
    /// outside the span, a full log): its result is not reused.
    pub unreusable: u64,
    pub offs: [u16; LOG_WORDS],
    pub vals: [u64; LOG_WORDS],
}

/// Per-CPU walk state (see [`WalkState`]).
#[map]
pub static WALK_STATE: PerCpuArray<WalkState> = PerCpuArray::with_max_entries(1, 0);

/// Puts `start` in the walk's state, for [`begin`].
#[inline(always)]
pub fn set_start(start: &Start) {
    if let Some(st) = WALK_STATE.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, ours for this program run.
        unsafe {
            (*st).pc = start.pc;
            (*st).sp = start.sp;
            (*st).bp = start.bp;
            // Volatile: two known zeros would become a `memset` call (see `opaque_zero`).
            core::ptr::write_volatile(&raw mut (*st).exact, u64::from(start.exact));
            core::ptr::write_volatile(&raw mut (*st).leaf_ret, start.leaf_ret);
        }
    }
}

/// Sets up a walk of thread `pid_tgid` from the start [`set_start`] left (its key for
/// [`crate::walk_cache`] included); [`walk`] then takes it. False: no frames are to be walked.
#[inline(always)]
pub fn begin(pid_tgid: u64, reusable: bool) -> bool {
    let Some(st) = WALK_STATE.get_ptr_mut(0) else {
        return false;
    };
    let limit = (config(ConfigKey::StackFrames) as usize).min(MAX_STACK_FRAMES) as u64;
    let fp_only = config(ConfigKey::UnwindFramePointers);
    // SAFETY: per-CPU map value, ours for this program run.
    unsafe {
        (*st).fp_only = fp_only;
        (*st).keep = u64::from(reusable);
        (*st).start = WalkKey {
            pid_tgid,
            pc: (*st).pc,
            sp: (*st).sp,
            bp: (*st).bp,
            leaf_ret: (*st).leaf_ret,
            mode: (*st).exact | fp_only << 1 | limit << 8,
            epoch: WALK_EPOCH.get(0).copied().unwrap_or(0),
        };
    }
    limit != 0
}

/// Which publication of unwind tables is current: the user side counts it up after each (see
/// [`WalkKey::epoch`]). A reused walk needs no lookup of its process's tables.
#[map]
pub static WALK_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Loads process `tgid`'s published mappings into the walk's state: [`walk`] needs them (a
/// reused walk does not).
#[inline(always)]
pub fn load_maps(tgid: u32) {
    if let Some(st) = WALK_STATE.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, ours for this program run.
        unsafe { (*st).maps = PROC_MAPS.get(tgid).copied().unwrap_or_default() };
    }
}

/// Whether the last walk used published tables of its process (only such walks are kept).
#[inline(always)]
pub fn had_tables(st: &WalkState) -> bool {
    st.maps.generation != 0
}

/// Whether the start's pc is still to be read from `[sp - 8]` (see [`Start::pc`]).
#[inline(always)]
pub fn pc_unread(st: &WalkState) -> bool {
    st.pc == 0 && st.exact == 0
}

/// Sets the start's pc once read (see [`Start::pc`]).
#[inline(always)]
pub fn set_pc(st: &mut WalkState, pc: u64) {
    st.pc = pc;
    st.start.pc = pc;
}

/// The start's pc, read from the stack first if no walk check read it (0: unreadable).
#[inline(always)]
pub fn resolve_pc() -> u64 {
    let Some(st) = WALK_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let st = unsafe { &mut *st };
    if pc_unread(st) {
        // SAFETY: user memory read through the helper.
        let pc = unsafe { bpf_probe_read_user((st.sp - 8) as *const u64).unwrap_or(0) };
        set_pc(st, pc);
    }
    st.pc
}

/// The start's pc as the last walk set up found it (after [`resolve_pc`]); the walk's own pc
/// moves on frame by frame.
#[inline(always)]
pub fn start_pc() -> u64 {
    // SAFETY: per-CPU map value, read.
    WALK_STATE
        .get_ptr(0)
        .map_or(0, |st| unsafe { (*st).start.pc })
}

/// Unwinds the walk [`begin`] set up into `buf[1..]` and returns the stack header (frame count
/// and flags); `buf[0]` is left for the caller to fill with it.
#[inline(always)]
pub fn walk(tgid: u32, buf: &mut [u64; STACK_WORDS]) -> u64 {
    buf[1] = 0;
    // Raw pointers: the callback changes these values behind the compiler's back.
    let (Some(st), Some(win), Some(vma)) = (
        WALK_STATE.get_ptr_mut(0),
        STACK_WINDOW.get_ptr_mut(0),
        VMA_HIT.get_ptr_mut(0),
    ) else {
        return 0;
    };
    let limit = (config(ConfigKey::StackFrames) as usize).min(MAX_STACK_FRAMES) as u64;
    // Not a known 0: it would become `memset` calls (see `opaque_zero`).
    let zero = crate::opaque_zero();
    // SAFETY: per-CPU map values, ours for this program run.
    unsafe {
        (*st).flags = zero;
        (*st).n = zero;
        (*st).done = zero;
        (*st).unknown_pc = zero;
        (*st).log.n = zero;
        (*st).log.span = zero;
        (*st).log.unreusable = zero;
        (*win).len = zero;
        (*vma).lo = zero;
        (*vma).hi = zero;
        pending_returns(&mut *st);
    }
    // SAFETY: `walk_step` is a BPF subprogram with the callback's signature; it takes its
    // state from the per-CPU maps, so no context pointer is passed.
    unsafe {
        bpf_loop(
            limit as u32,
            walk_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    // SAFETY: as above, read after the loop changed them.
    let (n, mut flags, done, unknown_pc) = unsafe {
        (
            (core::ptr::read_volatile(&(*st).n) & stack::FRAMES_MASK) as usize,
            core::ptr::read_volatile(&(*st).flags),
            core::ptr::read_volatile(&(*st).done),
            core::ptr::read_volatile(&(*st).unknown_pc),
        )
    };
    if let Some(slot) = buf.get_mut(n + 1) {
        *slot = 0;
    }
    if done == 0 {
        flags |= stack::TRUNCATED;
    }
    if unknown_pc != 0 {
        notice_unknown(tgid, unknown_pc);
    }
    if unknown_pc != 0
        || flags & (stack::UNKNOWN_MODULE | stack::SIGNAL_FRAME | stack::TRAMPOLINE_FIXED) != 0
    {
        // SAFETY: as above.
        unsafe { (*st).log.unreusable = 1 };
    }
    n as u64 | flags
}

/// `bpf_loop`'s callback: one frame. Returns 1 to end the loop.
#[inline(never)]
extern "C" fn walk_step(_index: u32, _ctx: *mut c_void) -> i64 {
    let done = unwind_step();
    // Through memory: LLVM knows the result is 0 or 1 and would drop the mask the verifier,
    // which does not look into a global function, needs to see.
    // SAFETY: a volatile read of a local.
    (unsafe { core::ptr::read_volatile(&done) } & 1) as i64
}

// The functions below are *global* BPF functions (exported by name, see `oomtrace/build.rs`):
// the verifier checks each once, on its own, with its arguments and result as unknown scalars.
// Inlined into their callers instead, every way through a search or a read would multiply the
// ways through the rest of the step, past the verifier's limit.

/// One frame of the walk in [`WALK_STATE`] into [`crate::SCRATCH`]. Returns 1 when the walk
/// is over.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn unwind_step() -> u64 {
    let (Some(st), Some(buf)) = (WALK_STATE.get_ptr_mut(0), crate::SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: per-CPU map values, ours for this program run.
    let (st, buf) = unsafe { (&mut *st, &mut *buf) };
    if step(st, buf) {
        st.done = 1;
        1
    } else {
        0
    }
}

/// One frame: from the state's (pc, sp, bp) to the caller's, its return address into
/// `buf[n + 1]`. True when the walk is over.
#[inline(always)]
fn step(w: &mut WalkState, buf: &mut [u64; STACK_WORDS]) -> bool {
    let i = w.n as usize + 1;
    if w.pc == 0 || i >= STACK_WORDS {
        return true;
    }
    let lookup = if w.exact != 0 {
        w.pc
    } else {
        w.pc.wrapping_sub(1)
    };
    w.exact = 0;
    let leaf_ret = w.leaf_ret;
    w.leaf_ret = 0;
    let (sp, bp) = (w.sp, w.bp);
    // How the caller's frame is found: from a row (CFA and rbp slot), or frame pointers.
    let mut cfa = 0u64;
    let mut rbp_slot = 0i64;
    // A pc in anonymous code: a frame-pointer chain that ends there is cut, not whole.
    let mut anon = false;
    let mut found = if w.fp_only != 0 {
        LOOKUP_NO_TABLE
    } else {
        unwind_row(lookup)
    };
    if found == 0 {
        // The kernel's VMA: state the log cannot check.
        w.log.unreusable = 1;
        found = unwind_vma_row(lookup);
    }
    if found & LOOKUP_LATE != 0 {
        // Found through the kernel's VMA: the user side still has to publish the mapping.
        w.unknown_pc = lookup;
    }
    match Lookup::decode(found) {
        Lookup::Row(r) => {
            let off = row_cfa_off(r) as u64;
            match row_kind(r) {
                kind::RSP => (cfa, rbp_slot) = (sp.wrapping_add(off), row_rbp_slot(r)),
                kind::RBP => (cfa, rbp_slot) = (bp.wrapping_add(off), row_rbp_slot(r)),
                kind::RBP_DEREF => {
                    (cfa, rbp_slot) = (unwind_read(bp.wrapping_add(off)), row_rbp_slot(r))
                }
                kind::PLT => {
                    let past = if lookup & 15 >= 11 { 8 } else { 0 };
                    cfa = sp.wrapping_add(8 + past);
                }
                kind::END => {
                    w.flags |= stack::COMPLETE;
                    return true;
                }
                kind::SIGNAL => return signal_frame(w, buf, i, sp),
                kind::GAP => w.flags |= stack::FRAME_POINTERS,
                kind::ANON => {
                    w.flags |= stack::FRAME_POINTERS;
                    anon = true;
                }
                _ => w.flags |= stack::UNSUPPORTED_RULE,
            }
        }
        Lookup::NoTable => w.flags |= stack::FRAME_POINTERS,
        Lookup::Unknown => {
            w.unknown_pc = lookup;
            w.flags |= stack::UNKNOWN_MODULE;
        }
    }
    let (ret, next_bp) = if cfa != 0 {
        let ret = unwind_read(cfa.wrapping_sub(8));
        let next_bp = if rbp_slot != 0 {
            unwind_read(cfa.wrapping_add((rbp_slot * 8) as u64))
        } else {
            bp
        };
        (ret, next_bp)
    } else if leaf_ret != 0 {
        // No rows for the first pc, but a return address at [sp]: a leaf without a frame.
        cfa = sp.wrapping_add(8);
        (leaf_ret, bp)
    } else {
        // Frame pointers: [rbp] is the caller's rbp, [rbp + 8] the return address.
        if bp == 0 || bp & 7 != 0 || bp < sp {
            // The end of a frame-pointer chain (`_start` clears rbp), or no chain at all; in
            // a JIT's code a zero rbp says nothing about the callers above.
            if bp != 0 || anon {
                w.flags |= stack::STOPPED;
            }
            return true;
        }
        cfa = bp.wrapping_add(16);
        (unwind_read(bp.wrapping_add(8)), unwind_read(bp))
    };
    // Frames lie at increasing addresses; anything else is not a frame chain.
    if cfa <= sp && i > 1 {
        w.flags |= stack::STOPPED;
        return true;
    }
    let ret = fix_trampoline(w, cfa.wrapping_sub(8), ret);
    if ret == 0 {
        // A zero return address ends a chain; past a guess, it may also be a wrong turn.
        if w.flags & (stack::FRAME_POINTERS | stack::UNKNOWN_MODULE) != 0 {
            w.flags |= stack::STOPPED;
        }
        return true;
    }
    put(buf, i, ret);
    w.n = i as u64;
    w.pc = ret;
    w.sp = cfa;
    w.bp = next_bp;
    false
}

/// A signal trampoline (`__restore_rt`): the interrupted context is in the `ucontext` at `sp`;
/// its pc is exact, not a return address.
#[inline(always)]
fn signal_frame(w: &mut WalkState, buf: &mut [u64; STACK_WORDS], i: usize, sp: u64) -> bool {
    w.flags |= stack::SIGNAL_FRAME;
    w.log.unreusable = 1;
    let ip = read(sp.wrapping_add(UC_RIP));
    let nsp = read(sp.wrapping_add(UC_RSP));
    w.bp = read(sp.wrapping_add(UC_RBP));
    if ip == 0 || nsp == 0 {
        w.flags |= stack::STOPPED;
        return true;
    }
    // + 1 so that it symbolizes like a return address (at addr - 1).
    put(buf, i, ip.wrapping_add(1));
    w.n = i as u64;
    w.pc = ip;
    w.sp = nsp;
    w.exact = 1;
    false
}

/// Stores frame `i` (the walk puts the terminating zero after the last one).
#[inline(always)]
fn put(buf: &mut [u64; STACK_WORDS], i: usize, ret: u64) {
    if let Some(slot) = buf.get_mut(i) {
        *slot = ret;
    }
}

/// What the tables say about one pc.
enum Lookup {
    /// The row covering it (its info: the address bits are not kept).
    Row(u64),
    /// A mapping without rows (no `.eh_frame`), or a pc its module's rows do not cover.
    NoTable,
    /// No known mapping covers it.
    Unknown,
}

/// [`Lookup`] as a global function's result: the row's info, tagged in the bits above it.
const LOOKUP_ROW: u64 = 1 << 32;
const LOOKUP_NO_TABLE: u64 = 2 << 32;
/// Or'ed in: found through the kernel's VMA, not the published mappings.
const LOOKUP_LATE: u64 = 1 << 40;

impl Lookup {
    #[inline(always)]
    fn encode(self) -> u64 {
        match self {
            Self::Row(r) => LOOKUP_ROW | (r & 0xffff_ffff),
            Self::NoTable => LOOKUP_NO_TABLE,
            Self::Unknown => 0,
        }
    }

    #[inline(always)]
    fn decode(v: u64) -> Self {
        match v & !0xffff_ffff & !LOOKUP_LATE {
            LOOKUP_ROW => Self::Row(v & 0xffff_ffff),
            LOOKUP_NO_TABLE => Self::NoTable,
            _ => Self::Unknown,
        }
    }
}

/// The row for `pc` in the walked process ([`WALK_STATE`]): from the per-CPU cache, else the
/// tables. A [`Lookup`], encoded; [`Lookup::Unknown`] sends the step to [`unwind_vma_row`].
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn unwind_row(pc: u64) -> u64 {
    let Some(w) = WALK_STATE.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value, ours for this program run; copied out.
    let maps = unsafe { (*w).maps };
    let generation = maps.generation;
    let cache = ROW_CACHE.get_ptr_mut(0);
    let slot =
        ((pc ^ generation).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - CACHE_BITS)) as usize * 3;
    if generation != 0
        && let Some(c) = cache
    {
        // SAFETY: per-CPU map value, ours for this program run.
        let c = unsafe { &*c };
        if let (Some(&k), Some(&g), Some(&v)) = (c.get(slot), c.get(slot + 1), c.get(slot + 2))
            && k == pc
            && g == generation
            && (v >> 32) as u32 == check(pc, generation, v as u32)
        {
            return Lookup::Row(v & 0xffff_ffff).encode();
        }
    }
    let found = match find_mapping(&maps, pc) {
        Some(m) if m.module == NO_MODULE => Lookup::NoTable,
        Some(m) if m.module == ANON_MODULE => Lookup::Row(u64::from(kind::ANON)),
        Some(m) => rows_in(m.module, pc.wrapping_sub(m.bias)),
        // The step asks the kernel's VMA then: called from here, its frames would stack on
        // this one's, past the verifier's 512 bytes for a call chain.
        None => return Lookup::Unknown.encode(),
    };
    let info = match found {
        Lookup::Row(r) => r as u32,
        // Frame pointers: cached as a gap row.
        _ => kind::GAP,
    };
    if generation != 0
        && let Some(c) = cache
    {
        // SAFETY: as above.
        let c = unsafe { &mut *c };
        let v = u64::from(info) | u64::from(check(pc, generation, info)) << 32;
        if let Some(k) = c.get_mut(slot) {
            *k = pc;
        }
        if let Some(g) = c.get_mut(slot + 1) {
            *g = generation;
        }
        if let Some(x) = c.get_mut(slot + 2) {
            *x = v;
        }
    }
    match found {
        Lookup::Row(_) => Lookup::Row(u64::from(info)),
        other => other,
    }
    .encode()
}

/// A cache entry's check: a torn entry (a walk preempted while writing it) never matches.
#[inline(always)]
fn check(pc: u64, generation: u64, info: u32) -> u32 {
    let h = (pc ^ generation.rotate_left(17) ^ u64::from(info)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (h >> 32) as u32
}

/// The row for `pc` at module-relative address `rel` in module `module`.
#[inline(always)]
fn rows_in(module: u32, rel: u64) -> Lookup {
    let Some(module) = UNWIND_MODULES.get(module) else {
        return Lookup::NoTable;
    };
    let page = rel.wrapping_sub(module.vaddr_lo) >> PAGE_SHIFT;
    if page >= module.pages as u64 {
        return Lookup::NoTable;
    }
    let Some(&entry) = UNWIND_PAGES.get(module.page_base + page as u32) else {
        return Lookup::NoTable;
    };
    let (first, count) = ((entry >> 32) as u32, entry as u32);
    if count == 0 {
        return Lookup::NoTable;
    }
    let target = rel & 0xffff_ffff;
    // The last row at or below the target (the page's first row covers its start), searched
    // without branches: with them the verifier follows both ways of every step, and the
    // states of the loop's iterations never repeat for it.
    let (mut base, mut len) = (first, count);
    for _ in 0..ROW_STEPS {
        let half = len / 2;
        // An index past the map (never, with well-formed tables) reads as "no row here": no
        // early exit, so both outcomes rejoin at once for the verifier.
        let pc = UNWIND_ROWS
            .get(module.row_base.wrapping_add(base + half))
            .map_or(u64::MAX >> 1, |&r| u64::from(row_pc(r)));
        base += half * le(pc, target);
        len -= half;
    }
    let Some(&r) = UNWIND_ROWS.get(module.row_base.wrapping_add(base)) else {
        return Lookup::NoTable;
    };
    if u64::from(row_pc(r)) > target {
        return Lookup::NoTable;
    }
    Lookup::Row(r)
}

/// 1 if `a <= b`, else 0, for values below 2^63, computed without a branch. The difference
/// and the bit both go through memory: LLVM would otherwise turn the sign test, or the product
/// the bit feeds, back into a compare-and-branch.
#[inline(always)]
fn le(a: u64, b: u64) -> u32 {
    let d = b.wrapping_sub(a);
    // SAFETY: volatile reads of locals we own.
    let d = unsafe { core::ptr::read_volatile(&d) };
    let bit = ((d >> 63) ^ 1) as u32;
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&bit) }
}

/// The mapping of `pc` among the process's (sorted, non-overlapping) mappings.
#[inline(always)]
fn find_mapping(maps: &ProcMaps, pc: u64) -> Option<&'static ExecMapping> {
    // Masked, not clamped: a clamp is a branch that leaves a constant on one side.
    let count = maps.count & (2 * MAX_PROC_MAPPINGS - 1);
    if count == 0 {
        return None;
    }
    // The last mapping starting at or below pc, without branches (see `rows_in`).
    let (mut base, mut len) = (0u32, count);
    for _ in 0..MAPPING_STEPS {
        let half = len / 2;
        let start = EXEC_MAPPINGS
            .get(maps.base.wrapping_add(base + half))
            .map_or(u64::MAX >> 1, |m| m.start);
        base += half * le(start, pc & (u64::MAX >> 1));
        len -= half;
    }
    let m = EXEC_MAPPINGS.get(maps.base.wrapping_add(base))?;
    (m.start <= pc && pc < m.end).then_some(m)
}

/// The row for `pc`, which no published mapping covers, through the kernel's VMA of it. A
/// [`Lookup`], encoded.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn unwind_vma_row(pc: u64) -> u64 {
    let Some(hit) = VMA_HIT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value, ours for this program run; the callback writes it through
    // its own pointer, so it is read through this raw one afresh.
    let inside = move |pc: u64| unsafe {
        core::ptr::read_volatile(&raw const (*hit).lo) <= pc
            && pc < core::ptr::read_volatile(&raw const (*hit).hi)
    };
    if !inside(pc) {
        // `vm_start` sits at offset 0 on 6.x kernels; `vm_file` never does.
        if config(ConfigKey::VmaFile) == 0 {
            return 0;
        }
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut (*hit).pc, pc) };
        // SAFETY: the current task from its BTF helper; `vma_found` is a BPF subprogram with
        // the callback's signature and takes its state from the per-CPU map.
        let found = unsafe {
            bpf_find_vma(
                bpf_get_current_task_btf(),
                pc,
                vma_found as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
        if found != 0 || !inside(pc) {
            return 0;
        }
    }
    // SAFETY: as above.
    let (module, bias) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*hit).module),
            core::ptr::read_volatile(&raw const (*hit).bias),
        )
    };
    if module == u64::from(NO_MODULE) {
        return LOOKUP_NO_TABLE | LOOKUP_LATE;
    }
    if module == u64::from(ANON_MODULE) {
        return Lookup::Row(u64::from(kind::ANON)).encode() | LOOKUP_LATE;
    }
    rows_in(module as u32, pc.wrapping_sub(bias)).encode() | LOOKUP_LATE
}

/// `bpf_find_vma`'s callback: the VMA of [`VmaHit::pc`], and the module of its file.
#[inline(never)]
extern "C" fn vma_found(_task: *mut c_void, vma: *mut c_void, _ctx: *mut c_void) -> i64 {
    let Some(w) = VMA_HIT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let w = unsafe { &mut *w };
    let vma = vma as u64;
    let (lo, hi) = (
        kread(vma, config(ConfigKey::VmaStart)),
        kread(vma, config(ConfigKey::VmaEnd)),
    );
    let pgoff = kread(vma, config(ConfigKey::VmaPgoff));
    let file = kread(vma, config(ConfigKey::VmaFile));
    w.lo = lo;
    w.hi = hi;
    w.module = u64::from(NO_MODULE);
    if file == 0 {
        // Anonymous code (a JIT's): frame pointers there.
        w.module = u64::from(ANON_MODULE);
        return 0;
    }
    let inode = kread(file, config(ConfigKey::FileInode));
    let sb = kread(inode, config(ConfigKey::InodeSb));
    let key = FileKey {
        dev: kread(sb, config(ConfigKey::SbDev)) & 0xffff_ffff,
        ino: kread(inode, config(ConfigKey::InodeIno)),
    };
    // SAFETY: copied out.
    let Some(m) = (unsafe { MODULE_FILES.get(key).copied() }) else {
        return 0;
    };
    let base = lo.wrapping_sub(pgoff << PAGE_SHIFT);
    let off = w.pc.wrapping_sub(base);
    if off < m.off_lo || off >= m.off_hi {
        return 0;
    }
    w.module = u64::from(m.module);
    w.bias = base.wrapping_sub(m.delta);
    0
}

/// One word of user memory (0 when unreadable).
#[inline(always)]
fn read(addr: u64) -> u64 {
    // SAFETY: user memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_user(addr as *const u64).unwrap_or(0) }
}

/// One word of the walked stack (0 when unreadable), through the window: a miss reads the
/// next [`WINDOW_BYTES`] from `addr` on, up to the end of its page (the page is mapped if the
/// word is, the next one need not be).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn unwind_read(addr: u64) -> u64 {
    let v = window_read(addr);
    if let Some(st) = WALK_STATE.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, ours for this program run.
        log_read(
            unsafe { &mut (*st).log },
            addr.wrapping_sub(unsafe { (*st).start.sp }),
            v,
        );
    }
    v
}

/// Logs a read of `v` at `off` bytes above the walk's start (see [`WalkLog`]).
#[inline(always)]
fn log_read(log: &mut WalkLog, off: u64, v: u64) {
    let n = log.n as usize;
    if off & 7 != 0 || off >= LOG_SPAN - 8 || n >= LOG_WORDS {
        log.unreusable = 1;
        return;
    }
    if let (Some(o), Some(x)) = (log.offs.get_mut(n), log.vals.get_mut(n)) {
        *o = off as u16;
        *x = v;
    }
    log.n = n as u64 + 1;
    if off + 8 > log.span {
        log.span = off + 8;
    }
}

/// [`unwind_read`] without the log.
#[inline(always)]
fn window_read(addr: u64) -> u64 {
    let Some(win) = STACK_WINDOW.get_ptr_mut(0) else {
        return read(addr);
    };
    // SAFETY: per-CPU map value, ours for this program run.
    let win = unsafe { &mut *win };
    if addr & 7 != 0 {
        return read(addr);
    }
    let off = addr.wrapping_sub(win.base);
    if off < win.len {
        return win.words[(off >> 3) as usize & (WINDOW_WORDS - 1)];
    }
    let to_page_end = 4096 - (addr & 4095);
    let len = if to_page_end < WINDOW_BYTES {
        to_page_end
    } else {
        WINDOW_BYTES
    };
    // SAFETY: `len` is at most the window's size; the helper fails on a bad address.
    let rc = unsafe {
        generated::bpf_probe_read_user(
            win.words.as_mut_ptr() as *mut c_void,
            len as u32,
            addr as *const c_void,
        )
    };
    if rc != 0 {
        win.len = 0;
        return 0;
    }
    win.base = addr;
    win.len = len;
    win.words[0]
}

/// Reads `*(base + off)` from kernel memory (0 when unreadable). The offset is masked: a
/// typed kernel pointer (the VMA handed to [`vma_found`]) takes only a bounded one.
#[inline(always)]
fn kread(base: u64, off: u64) -> u64 {
    // SAFETY: kernel memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_kernel((base + (off & 0xffff)) as *const u64).unwrap_or(0) }
}

/// Fills `w` with the current thread's pending uretprobes, innermost first: where each one
/// replaced a return address on the stack, and the address it replaced. Offsets come from the
/// kernel's BTF through the config words; without them there is no fix-up.
#[inline(always)]
fn pending_returns(w: &mut WalkState) {
    w.slots[0] = 0;
    let utask_off = config(ConfigKey::TaskUtask);
    if utask_off == 0 {
        return;
    }
    // SAFETY: plain helper call.
    let task = unsafe { bpf_get_current_task() };
    let utask = kread(task, utask_off);
    if utask == 0 {
        return;
    }
    let mut ri = kread(utask, config(ConfigKey::UtaskReturns));
    let (stack_off, orig_off, next_off) = (
        config(ConfigKey::ReturnStack),
        config(ConfigKey::ReturnOrig),
        config(ConfigKey::ReturnNext),
    );
    for i in 0..MAX_PENDING_RETURNS {
        w.slots[i] = 0;
        w.orig[i] = 0;
        if ri == 0 {
            continue;
        }
        w.slots[i] = kread(ri, stack_off);
        w.orig[i] = kread(ri, orig_off);
        ri = kread(ri, next_off);
    }
}

/// The real return address of the frame whose return address sits at `slot`, when a pending
/// uretprobe replaced it with the trampoline.
#[inline(always)]
fn fix_trampoline(w: &mut WalkState, slot: u64, ret: u64) -> u64 {
    if w.slots[0] == 0 {
        return ret;
    }
    for i in 0..MAX_PENDING_RETURNS {
        if w.slots[i] == slot && w.orig[i] != 0 && w.orig[i] != ret {
            w.flags |= stack::TRAMPOLINE_FIXED;
            return w.orig[i];
        }
    }
    ret
}
