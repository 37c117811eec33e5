//! Types shared by oomtrace's kernel side (`oomtrace-ebpf`) and user side (`oomtrace`).
//!
//! Every record the kernel side writes into the ring buffer is one [`MemEvent`]: a fixed-size,
//! `#[repr(C)]` struct whose first field says what it is. The user side checks each record's
//! length before decoding it. Counters of what the kernel side could not emit live in a per-CPU
//! array indexed by [`DropReason`].
#![no_std]
#![deny(missing_docs)]

/// Words of one stored user stack: a [`stack`] header, then the return addresses above the call
/// site, innermost first, zero-padded.
pub const STACK_WORDS: usize = 64;
/// The most frames stored above the call site (`--stack-depth` counts the call site too).
pub const MAX_STACK_FRAMES: usize = STACK_WORDS - 1;
/// `--stack-depth` when not given: frames per stack, the call site included.
pub const DEFAULT_STACK_DEPTH: u64 = 32;

/// The header word of a stored user stack: how many frames follow, and how the walk ended.
pub mod stack {
    /// Low 8 bits: the frames stored after the header.
    pub const FRAMES_MASK: u64 = 0xff;
    /// The walk reached the outermost frame (`_start`, a thread's start): the stack is whole.
    pub const COMPLETE: u64 = 1 << 8;
    /// The walk stopped at `--stack-depth` with frames left above.
    pub const TRUNCATED: u64 = 1 << 9;
    /// A return address lay in no module the unwinder knew (code mapped after the unwinder
    /// last read the process's maps, or anonymous code such as a JIT's): frame pointers were
    /// tried past it.
    pub const UNKNOWN_MODULE: u64 = 1 << 10;
    /// Some frame had no unwind rows (no `.eh_frame` coverage): frame pointers were used there.
    pub const FRAME_POINTERS: u64 = 1 << 11;
    /// The walk stopped early: memory it needed could not be read, or the frame it computed did
    /// not lie above the previous one.
    pub const STOPPED: u64 = 1 << 12;
    /// A rule the kernel-side walker cannot evaluate (a DWARF expression other than the known
    /// PLT, signal-frame and realigned-stack forms) met a frame without frame pointers.
    pub const UNSUPPORTED_RULE: u64 = 1 << 13;
    /// A frame under a pending uretprobe read as the trampoline and was given its real return
    /// address back.
    pub const TRAMPOLINE_FIXED: u64 = 1 << 14;
    /// The walk crossed a signal frame.
    pub const SIGNAL_FRAME: u64 = 1 << 15;
    /// The Python frame walk stopped at `--python-depth` with Python frames left below.
    pub const PYTHON_TRUNCATED: u64 = 1 << 16;
    /// The Python frame walk failed: no thread state for the thread, or a read of the
    /// interpreter's memory failed (the Python frames taken before it are kept).
    pub const PYTHON_FAILED: u64 = 1 << 17;
}

pub mod python;

/// The kernel-side unwinder's tables, filled by the user side from each module's `.eh_frame`.
///
/// A module's rows are sorted by address; each says how to find the caller's frame from a pc in
/// that range. Rows are grouped by 4 KiB page of the module's address range, so a lookup is one
/// page read and a short binary search.
pub mod unwind {
    /// Modules with tables at once.
    pub const MAX_MODULES: u32 = 4096;
    /// Page entries over all modules (4 KiB of code each).
    pub const MAX_PAGES: u32 = 1 << 20;
    /// Rows over all modules (8 bytes each).
    pub const MAX_ROWS: u32 = 1 << 22;
    /// Executable mappings over all processes.
    pub const MAX_MAPPINGS: u32 = 1 << 16;
    /// Executable mappings per process (the walk's binary search is sized for it).
    pub const MAX_PROC_MAPPINGS: u32 = 512;
    /// Processes with a mapping table at once.
    pub const MAX_PROCS: u32 = 8192;
    /// Bits of a page number's shift.
    pub const PAGE_SHIFT: u32 = 12;
    /// `ExecMapping::module` of a mapping without unwind rows: frame pointers there.
    pub const NO_MODULE: u32 = u32::MAX;
    /// `ExecMapping::module` of executable memory that maps no file (a JIT's code): frame
    /// pointers there, and a frame-pointer chain that ends there has not reached the
    /// outermost frame.
    pub const ANON_MODULE: u32 = u32::MAX - 1;
    /// Pending uretprobes looked at per walk for the trampoline fix-up.
    pub const MAX_PENDING_RETURNS: usize = 4;
    /// Files with unwind rows the walker can find by their inode.
    pub const MAX_FILES: u32 = 8192;

    /// Row kinds (bits 0-3 of a row's info).
    pub mod kind {
        /// CFA = rsp + offset.
        pub const RSP: u32 = 0;
        /// CFA = rbp + offset.
        pub const RBP: u32 = 1;
        /// No unwind information covers this address: frame pointers.
        pub const GAP: u32 = 2;
        /// A PLT stub: CFA = rsp + 8, + 8 more past the stub's 11th byte.
        pub const PLT: u32 = 3;
        /// A signal trampoline (`__restore_rt`): the interrupted registers are in the
        /// `ucontext` at rsp.
        pub const SIGNAL: u32 = 4;
        /// The outermost frame (the return address is undefined).
        pub const END: u32 = 5;
        /// CFA = *(rbp + offset): a function that realigned its stack.
        pub const RBP_DEREF: u32 = 6;
        /// A rule the walker does not evaluate.
        pub const UNSUPPORTED: u32 = 7;
        /// Anonymous executable memory (never in a module's rows: the walker's own lookup
        /// result and cache entry for [`super::ANON_MODULE`] mappings).
        pub const ANON: u32 = 8;
    }

    /// A row: `pc << 32 | info`, info = kind (4 bits) | rbp slot (8 bits, signed: rbp saved at
    /// CFA + 8·slot, 0 = unchanged) << 4 | CFA offset (20 bits, signed) << 12.
    pub const fn row(pc: u32, kind: u32, rbp_slot: i8, cfa_off: i32) -> u64 {
        let info =
            (kind & 0xf) | ((rbp_slot as u8 as u32) << 4) | (((cfa_off as u32) & 0xf_ffff) << 12);
        ((pc as u64) << 32) | info as u64
    }
    /// A row's address.
    pub const fn row_pc(r: u64) -> u32 {
        (r >> 32) as u32
    }
    /// A row's kind.
    pub const fn row_kind(r: u64) -> u32 {
        (r as u32) & 0xf
    }
    /// A row's rbp slot.
    pub const fn row_rbp_slot(r: u64) -> i64 {
        ((r as u32 >> 4) & 0xff) as u8 as i8 as i64
    }
    /// A row's CFA offset.
    pub const fn row_cfa_off(r: u64) -> i64 {
        // Sign-extend the 20-bit field.
        (((r as u32) as i32) >> 12) as i64
    }
    /// Whether a CFA offset fits a row.
    pub const fn fits_cfa_off(off: i64) -> bool {
        off >= -(1 << 19) && off < (1 << 19)
    }

    /// One module's tables: its pages at `page_base..page_base + pages`, its rows at
    /// `row_base..`, page 0 starting at address `vaddr_lo` of the module.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ModuleTable {
        /// The module's lowest covered address (4 KiB aligned).
        pub vaddr_lo: u64,
        /// Index of its first page entry.
        pub page_base: u32,
        /// Its page entries.
        pub pages: u32,
        /// Index of its first row.
        pub row_base: u32,
        /// Its rows.
        pub rows: u32,
    }

    /// A page entry: `first << 32 | count`: the rows (relative to the module's `row_base`) to
    /// search for a pc in that page, the row covering the page's start first.
    pub const fn page(first: u32, count: u32) -> u64 {
        ((first as u64) << 32) | count as u64
    }

    /// An executable mapping of a traced process.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ExecMapping {
        /// First address.
        pub start: u64,
        /// One past the last.
        pub end: u64,
        /// Subtracted from a pc to get the module's own address.
        pub bias: u64,
        /// Index in the module tables, or [`NO_MODULE`].
        pub module: u32,
        /// Reserved.
        pub _pad: u32,
    }

    /// A process's mappings: `EXEC_MAPPINGS[base..base + count]`, sorted by start.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ProcMaps {
        /// First entry.
        pub base: u32,
        /// Entries.
        pub count: u32,
        /// Which publication this is (never 0, never reused): the walker's per-CPU lookup
        /// cache keys its entries with it, so a process's new layout never meets old entries.
        pub generation: u64,
    }

    /// A file as the kernel names it: the device of its inode's filesystem (the kernel's
    /// encoding, `major << 20 | minor`) and its inode number.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct FileKey {
        /// `inode->i_sb->s_dev`.
        pub dev: u64,
        /// `inode->i_ino`.
        pub ino: u64,
    }

    /// How a pc in a mapping of a file with rows finds them, when the walker was not told
    /// about the mapping (mapped since its process's mappings were published): the module,
    /// and how a file offset in its executable segment becomes the module's own address.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FileModule {
        /// Index in the module tables.
        pub module: u32,
        /// Reserved.
        pub _pad: u32,
        /// The executable segment's file offsets: `[off_lo, off_hi)`.
        pub off_lo: u64,
        /// One past its last offset.
        pub off_hi: u64,
        /// Added to a file offset in that range to get the module's own address.
        pub delta: u64,
    }
}

/// What a [`MemEvent`] records.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An allocator call returned: `addr` (0 = failed) of `size` requested bytes.
    Alloc = 1,
    /// `free(addr)` (or `realloc(addr, 0)`).
    Free = 2,
    /// `realloc(old_addr, size)` returned `addr` (0 = failed, old block kept).
    Realloc = 3,
    /// A direct anonymous `mmap` by user code returned `addr` for `size` bytes; `aux` holds its
    /// `prot` in the low 32 bits and its `flags` in the high ones.
    Mmap = 4,
    /// A direct `munmap(addr, size)` by user code.
    Munmap = 5,
    /// A direct `mremap(old_addr, aux, size)` returned `addr`.
    Mremap = 6,
    /// A direct `brk` by user code: `addr` is the new break, `aux` the requested one.
    Brk = 7,
    /// A traced process forked: `tgid` is the parent, `aux` the child's pid.
    Fork = 8,
    /// A traced process called `execve`: its address space was replaced. `addr` and `size`
    /// hold the new comm (16 bytes, little-endian, NUL-padded).
    Exec = 9,
    /// The last thread of a traced process exited; comm packed as for `Exec`.
    Exit = 10,
    /// A traced process called `exit_group(aux)`.
    ExitGroup = 11,
    /// A signal `aux` with the default action was delivered to a traced process.
    Signal = 12,
    /// User side only: the process's name as read from `/proc` (packed as for `Exec`).
    Comm = 13,
    /// User side only: how the process ended, as `waitpid` reported it: `aux` is
    /// [`STATUS_EXITED`] | code or [`STATUS_SIGNALED`] | signal.
    Status = 14,
    /// The OOM killer chose a victim (any process on the machine): `tgid` is the victim, `tid`
    /// the process whose allocation triggered it; `addr`, `size`, `old_addr`, `call_site` are
    /// total_vm, anon, file and shmem RSS in KiB; `aux` is uid | (oom_score_adj as u16) << 32.
    Oom = 15,
    /// Follows [`EventKind::Oom`]: the victim's comm, packed as for `Exec`.
    OomComm = 16,
    /// User side only: the sampling tick (every second by default): the model samples every
    /// stack's outstanding bytes into its time series.
    Tick = 17,
    /// User side only, before a `Tick`: a process's `addr` = RSS bytes, `size` = threads,
    /// `old_addr` = open file descriptors, read from `/proc`.
    ProcSample = 18,
    /// `--kernel`: a kernel allocation made in the context of a traced process. `addr` is the
    /// page frame number (pages) or the object's address (slab, vmalloc), `size` the bytes,
    /// `alloc_fn` a [`KernelSource`], `stack_id` an id in the kernel-stack map.
    KAlloc = 19,
    /// `--kernel`: the kernel freed what a [`EventKind::KAlloc`] with the same `alloc_fn` and
    /// `addr` allocated (`tgid` is whoever freed it, not necessarily the allocator).
    KFree = 20,
    /// `--mode growth`: a user page fault in a traced process at `addr` (`size` = page bytes),
    /// with the faulting stack; the user side pairs it with unmaps to attribute RSS growth.
    Fault = 21,
    /// A traced process forked a child that is not followed (`--no-children`): `tgid` is the
    /// parent, `aux` the child. The user side disarms the breakpoints the child inherited.
    Unfollowed = 22,
    /// A traced process ran code outside the mappings the stack walker knows (a library loaded
    /// since, a new image): `addr` is that pc. The user side re-reads its maps; the model never
    /// sees it.
    NewCode = 23,
    /// Signal `aux & 0xff` was sent to traced process `tgid`. `addr` is the sender's process id
    /// (0: the kernel itself — the OOM killer, a fault), `size` its uid; `old_addr` and
    /// `call_site` hold its comm (16 bytes, little-endian). `aux` bit 8: sent by the kernel.
    SignalSent = 24,
    /// `run --fail-*` failed this allocator call of thread `tid`: `stack_id`, `call_site`,
    /// `size` and `alloc_fn` are the call's; `aux` low 32 bits the injection's sequence number
    /// (1-based), high 32 its [`inject`] action. The call's own failure follows as an `Alloc`
    /// with `addr` 0.
    Injected = 40,
    /// A traced thread was delivered fatal signal `aux` by default action: `stack_id` and
    /// `call_site` (the instruction it stopped at) are where it struck.
    Crash = 41,
    /// An allocator call made inside a signal handler: `aux` is the signal, `stack_id`,
    /// `call_site`, `size` and `alloc_fn` the call's.
    HandlerAlloc = 42,
    /// User side only (kinds from 32 on are the user side's): what the leak scan at a
    /// process's exit found on one of its stacks (`call_site`, `stack_id`): `alloc_fn` is the
    /// leak kind (0 definitely lost, 1 indirectly, 2 possibly, 3 still reachable), `size` the
    /// bytes and `addr` the blocks of that kind. `alloc_fn` 255 closes the process's scan.
    Leak = 32,
    /// User side only, before a `Tick`: resident bytes (`addr`) of mapped regions, read from
    /// `/proc/PID/smaps`. `alloc_fn` 0: the direct mappings of one stack (`call_site`,
    /// `stack_id`); 1: the process's thread stacks; 2: its `PROT_NONE` reservations.
    Resident = 33,
}

/// `size` of a [`EventKind::Brk`] made inside an allocator call: it moves the break (which the
/// user side must follow) but is no allocation of its own.
pub const BRK_NESTED: u64 = 1;

/// [`EventKind::Status`] flag: the low 32 bits of `aux` are an exit code.
pub const STATUS_EXITED: u64 = 1 << 32;
/// [`EventKind::Status`] flag: the low 32 bits of `aux` are a signal number.
pub const STATUS_SIGNALED: u64 = 2 << 32;

impl EventKind {
    /// Decodes the kind field of a record.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Alloc,
            2 => Self::Free,
            3 => Self::Realloc,
            4 => Self::Mmap,
            5 => Self::Munmap,
            6 => Self::Mremap,
            7 => Self::Brk,
            8 => Self::Fork,
            9 => Self::Exec,
            10 => Self::Exit,
            11 => Self::ExitGroup,
            12 => Self::Signal,
            13 => Self::Comm,
            14 => Self::Status,
            15 => Self::Oom,
            16 => Self::OomComm,
            17 => Self::Tick,
            18 => Self::ProcSample,
            19 => Self::KAlloc,
            20 => Self::KFree,
            21 => Self::Fault,
            22 => Self::Unfollowed,
            23 => Self::NewCode,
            24 => Self::SignalSent,
            40 => Self::Injected,
            41 => Self::Crash,
            42 => Self::HandlerAlloc,
            32 => Self::Leak,
            33 => Self::Resident,
            _ => return None,
        })
    }
}

/// Which allocator entry point produced an `Alloc`/`Realloc` event.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocFn {
    /// `malloc(size)`.
    Malloc = 0,
    /// `calloc(n, m)`.
    Calloc = 1,
    /// `realloc(ptr, size)`.
    Realloc = 2,
    /// `reallocarray(ptr, n, m)`.
    Reallocarray = 3,
    /// `posix_memalign(&ptr, align, size)`.
    PosixMemalign = 4,
    /// `aligned_alloc(align, size)`.
    AlignedAlloc = 5,
    /// `memalign(align, size)`.
    Memalign = 6,
    /// `valloc(size)`.
    Valloc = 7,
    /// `pvalloc(size)`.
    Pvalloc = 8,
    /// A syscall (mmap, mremap, brk): not an allocator function.
    Syscall = 9,
    /// C++ `operator new`/`new[]` (and allocators' own `new` entry points).
    New = 10,
    /// `free`, `operator delete`, `sdallocx`, ...: a block returned.
    Free = 11,
    /// Another allocation entry point (`mallocx`, `mi_zalloc`, ...): a plain allocation.
    Other = 12,
}

impl AllocFn {
    /// Decodes the low byte of an event's `alloc_fn`.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Malloc,
            1 => Self::Calloc,
            2 => Self::Realloc,
            3 => Self::Reallocarray,
            4 => Self::PosixMemalign,
            5 => Self::AlignedAlloc,
            6 => Self::Memalign,
            7 => Self::Valloc,
            8 => Self::Pvalloc,
            9 => Self::Syscall,
            10 => Self::New,
            11 => Self::Free,
            12 => Self::Other,
            _ => return None,
        })
    }
}

/// Allocator families: heaps that must never be mixed up. A block allocated through one family
/// and freed through another is a mismatched free, never a free. The family is the high byte of
/// an allocator event's `alloc_fn`.
pub mod family {
    /// The standard names (`malloc`, `free`, ...) of whichever object provides them to the
    /// process (libc, jemalloc, tcmalloc, mimalloc), with that object's own aliases.
    pub const STANDARD: u8 = 0;
    /// jemalloc built with the `je_` prefix (beside another `malloc`).
    pub const JE: u8 = 1;
    /// Rust's tikv-jemallocator (`_rjem_` prefix).
    pub const RJEM: u8 = 2;
    /// gperftools tcmalloc's `tc_` names in an object that does not provide `malloc`.
    pub const TC: u8 = 3;
    /// mimalloc's `mi_` names in an object that does not provide `malloc`.
    pub const MI: u8 = 4;
    /// CPython's allocator layer (`PyObject_*`, `PyMem_*`: pymalloc arenas for small blocks,
    /// `malloc` for the rest), over the standard heap.
    pub const PY: u8 = 5;

    /// Whether a block of family `allocated` is freed by a free of family `freed`. CPython's
    /// layer hands blocks over 512 bytes to `malloc`, and its own fast paths are inlined into
    /// the interpreter in optimized builds (Debian's): a block may be allocated through one of
    /// the two and freed through the other, and that is the same heap.
    pub const fn same_heap(allocated: u8, freed: u8) -> bool {
        allocated == freed
            || (allocated == PY && freed == STANDARD)
            || (allocated == STANDARD && freed == PY)
    }
}

/// The attach cookie of an allocator entry probe: everything the kernel side needs to know about
/// the function it fired in, so one entry program serves every allocator and every family.
///
/// Bits 0-3: the operation; 4-7: the argument holding the size; 8-11: an argument the size is
/// multiplied by ([`cookie::NONE`]: none); 12-15: the argument holding the pointer (the old block
/// of a realloc, the block freed, or `memptr`); 16-23: the [`AllocFn`] reported; 24-31: the
/// allocator [`family`].
pub mod cookie {
    use super::AllocFn;

    /// Returns a new block (NULL: failed).
    pub const OP_ALLOC: u64 = 0;
    /// Resizes the block at the pointer argument; returns the new one (NULL: failed, old kept).
    pub const OP_REALLOC: u64 = 1;
    /// Returns the block at the pointer argument.
    pub const OP_FREE: u64 = 2;
    /// Stores a new block at `*memptr` (the pointer argument) and returns 0 on success.
    pub const OP_MEMPTR: u64 = 3;
    /// `siglongjmp` and kin: the thread leaves its signal handlers (entry only, no event).
    pub const OP_LONGJMP: u64 = 4;
    /// "No such argument".
    pub const NONE: u64 = 0xf;
    /// A C++ throwing `operator new`: it fails by throwing `std::bad_alloc`, never by NULL.
    pub const THROWS: u64 = 1 << 32;
    /// A free of an allocator layer that frees through another allocator (`PyObject_Free`
    /// calling `free`): it has a return probe and opens a call, so the inner free is not
    /// reported a second time.
    pub const NESTS: u64 = 1 << 33;
    /// A base allocator's function that calls no other probed function inside (`malloc`,
    /// `calloc`; not glibc's `realloc` or `memalign`, which call `malloc`): with uprobe
    /// sessions an unsampled call of one skips reading its return address, and only the rare
    /// syscall made below it asks whether it still runs.
    pub const LEAF: u64 = 1 << 34;

    /// Whether the function has a return probe: everything but plain frees.
    pub const fn returns(c: u64) -> bool {
        op(c) != OP_FREE || c & NESTS != 0
    }

    /// Whether the function fails by throwing.
    pub const fn throws(c: u64) -> bool {
        c & THROWS != 0
    }

    /// A cookie.
    pub const fn encode(op: u64, size: u64, mul: u64, ptr: u64, f: AllocFn, family: u8) -> u64 {
        (op & 0xf)
            | ((size & 0xf) << 4)
            | ((mul & 0xf) << 8)
            | ((ptr & 0xf) << 12)
            | ((f as u64) << 16)
            | ((family as u64) << 24)
    }

    /// The operation.
    pub const fn op(c: u64) -> u64 {
        c & 0xf
    }
    /// The size argument's index.
    pub const fn size_arg(c: u64) -> u64 {
        (c >> 4) & 0xf
    }
    /// The multiplier argument's index, or [`NONE`].
    pub const fn mul_arg(c: u64) -> u64 {
        (c >> 8) & 0xf
    }
    /// The pointer argument's index, or [`NONE`].
    pub const fn ptr_arg(c: u64) -> u64 {
        (c >> 12) & 0xf
    }
    /// The event's `alloc_fn`: the function in the low byte, the family in the high one.
    pub const fn alloc_fn(c: u64) -> u16 {
        (((c >> 16) & 0xff) | (((c >> 24) & 0xff) << 8)) as u16
    }
    /// The highest argument index it reads, plus one (for probe placement).
    pub const fn args_read(c: u64) -> usize {
        let mut n = 0;
        let parts = [size_arg(c), mul_arg(c), ptr_arg(c)];
        let mut i = 0;
        while i < 3 {
            if parts[i] != NONE && parts[i] + 1 > n {
                n = parts[i] + 1;
            }
            i += 1;
        }
        n as usize
    }
}

/// Which kernel allocator a [`EventKind::KAlloc`]/[`EventKind::KFree`] came from.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// The page allocator (`kmem:mm_page_alloc`/`mm_page_free`), `addr` = pfn.
    Page = 0,
    /// The slab allocator (`kmem:kmalloc`/`kfree`, `kmem_cache_alloc`/`kmem_cache_free`).
    Slab = 1,
    /// `vmalloc` areas (`vmalloc:alloc_vmap_area`/`free_vmap_area_noflush`), `addr` = start.
    Vmalloc = 2,
    /// GPU buffer objects (DRM GEM objects, TTM pools, amdgpu buffer objects), where the
    /// kernel lets oomtrace probe them.
    Gpu = 3,
}

impl KernelSource {
    /// Decodes the `alloc_fn` field of a kernel event.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Page,
            1 => Self::Slab,
            2 => Self::Vmalloc,
            3 => Self::Gpu,
            _ => return None,
        })
    }
}

/// Indices into the kernel side's `KFIELDS` array: byte offsets of tracepoint fields, read by
/// the user side from each tracepoint's `format` file (layouts change between kernels).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelField {
    /// `kmem:mm_page_alloc` `pfn`.
    PageAllocPfn = 0,
    /// `kmem:mm_page_alloc` `order`.
    PageAllocOrder = 1,
    /// `kmem:mm_page_free` `pfn`.
    PageFreePfn = 2,
    /// `kmem:mm_page_free` `order`.
    PageFreeOrder = 3,
    /// `kmem:mm_page_free_batched` `pfn`.
    PageBatchedPfn = 4,
    /// `kmem:kmalloc` `ptr`.
    KmallocPtr = 5,
    /// `kmem:kmalloc` `bytes_req`.
    KmallocBytes = 6,
    /// `kmem:kfree` `ptr`.
    KfreePtr = 7,
    /// `kmem:kmem_cache_alloc` `ptr`.
    CacheAllocPtr = 8,
    /// `kmem:kmem_cache_alloc` `bytes_req`.
    CacheAllocBytes = 9,
    /// `kmem:kmem_cache_free` `ptr`.
    CacheFreePtr = 10,
    /// `vmalloc:alloc_vmap_area` `addr`.
    VmapAddr = 11,
    /// `vmalloc:alloc_vmap_area` `size`.
    VmapSize = 12,
    /// `vmalloc:alloc_vmap_area` `failed`.
    VmapFailed = 13,
    /// `vmalloc:free_vmap_area_noflush` `va_start`.
    VfreeAddr = 14,
    /// `amdgpu:amdgpu_bo_create` `bo`.
    AmdgpuBo = 15,
    /// `amdgpu:amdgpu_bo_create` `pages`.
    AmdgpuPages = 16,
}

/// Number of [`KernelField`] slots.
pub const KERNEL_FIELDS: u32 = 17;

/// Number of [`AllocFn`] variants that are allocator functions (pending-state keys use them).
pub const ALLOC_FNS: usize = 9;

/// One record in the ring buffer. Plain data, 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemEvent {
    /// An [`EventKind`] as `u16`.
    pub kind: u16,
    /// An [`AllocFn`] as `u16`.
    pub alloc_fn: u16,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Id in the `STACKS` map of the frames above the call site; negative: none.
    pub stack_id: i32,
    /// `bpf_ktime_get_ns()` at the event.
    pub ts_ns: u64,
    /// The address returned, freed or unmapped.
    pub addr: u64,
    /// Requested bytes.
    pub size: u64,
    /// The old pointer of a realloc/mremap.
    pub old_addr: u64,
    /// Return address at the allocator's entry: the exact call site (frame 0).
    pub call_site: u64,
    /// Kind-specific extra value (see [`EventKind`]).
    pub aux: u64,
}

/// Size in bytes of one [`MemEvent`] record.
pub const MEM_EVENT_SIZE: usize = core::mem::size_of::<MemEvent>();

/// Indices into the kernel side's per-CPU drop-counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer had no room for an event.
    RingFull = 0,
    /// The pending-call map was full at an allocator entry.
    PendingFull = 1,
    /// A stack could not be stored (hash collision or full stack map).
    StackCollision = 2,
    /// A child could not be added to the traced-process map (full).
    TracedFull = 3,
    /// An allocator call never returned (its return was missed): its event is lost.
    StaleCall = 4,
    /// `--kernel`: the map pairing kernel allocations with their frees was full, so a kernel
    /// allocation was not reported.
    KernelLiveFull = 5,
}

/// Number of [`DropReason`] counters.
pub const DROP_COUNTERS: u32 = 6;

/// Index of the config word in the `CONFIG` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKey {
    /// Non-zero: trace every process except `SelfTgid` (the `--all` mode).
    TraceAll = 0,
    /// The tracer's own tgid, never traced.
    SelfTgid = 1,
    /// Non-zero: add forked children of traced processes to the traced set.
    FollowForks = 2,
    /// The tracing mode: [`MODE_EXACT`], [`MODE_SAMPLE`] or [`MODE_GROWTH`].
    Mode = 3,
    /// `--mode sample`: the mean bytes between samples.
    SampleRate = 4,
    /// Non-zero: `--kernel` tracing of kernel allocations is on.
    Kernel = 5,
    /// `--stack-depth` minus one: frames walked above the call site.
    StackFrames = 6,
    /// Byte offset of `utask` in `struct task_struct` (0: no uretprobe trampoline fix-up).
    TaskUtask = 7,
    /// Byte offset of `return_instances` in `struct uprobe_task`.
    UtaskReturns = 8,
    /// Byte offset of `stack` in `struct return_instance`.
    ReturnStack = 9,
    /// Byte offset of `orig_ret_vaddr` in `struct return_instance`.
    ReturnOrig = 10,
    /// Byte offset of `next` in `struct return_instance`.
    ReturnNext = 11,
    /// The byte offset of `tgid` in the kernel's `struct task_struct` (from its BTF).
    TaskTgidOffset = 12,
    /// `task_struct.comm` (the OOM victim's name).
    TaskComm = 13,
    /// `task_struct.mm`.
    TaskMm = 14,
    /// `task_struct.signal`.
    TaskSignal = 15,
    /// `signal_struct.oom_score_adj`.
    SignalOomScoreAdj = 16,
    /// `mm_struct.total_vm`.
    MmTotalVm = 17,
    /// `mm_struct.rss_stat` (an array of `percpu_counter`).
    MmRssStat = 18,
    /// `percpu_counter.count`.
    CounterCount = 19,
    /// The size of a `percpu_counter`.
    CounterSize = 20,
    /// `task_struct.exit_code` (the status word at exit).
    TaskExitCode = 21,
    /// Non-zero: `run --fail-*` is armed (the rule is in the `INJECT_RULE` map).
    InjectArmed = 30,
    /// Free events carry their call site (1) and their stack too (2): `run`, where a bad free
    /// is a hazard the report names.
    FreeSites = 31,
    /// Byte offset of `vm_start` in `struct vm_area_struct` (0 on 6.x kernels).
    VmaStart = 32,
    /// Byte offset of `vm_pgoff` in `struct vm_area_struct`.
    VmaPgoff = 33,
    /// Byte offset of `vm_file` in `struct vm_area_struct` (0: not known, and the stack walker
    /// cannot name a mapping it was not told about).
    VmaFile = 34,
    /// Byte offset of `f_inode` in `struct file`.
    FileInode = 35,
    /// Byte offset of `i_ino` in `struct inode`.
    InodeIno = 36,
    /// Byte offset of `i_sb` in `struct inode`.
    InodeSb = 37,
    /// Byte offset of `s_dev` in `struct super_block`.
    SbDev = 38,
    /// Byte offset of `vm_end` in `struct vm_area_struct`.
    VmaEnd = 39,
    /// Non-zero: stacks follow frame pointers only, not the unwind tables
    /// (`OOMTRACE_UNWIND=frame-pointers`, the baseline the tables' cost is measured against).
    UnwindFramePointers = 40,
    /// `--python-depth`: Python frames walked per stack (0: none).
    PythonFrames = 41,
    /// Byte offset of `thread.fsbase` in `struct task_struct` (0: not known): a thread's
    /// `pthread_self()`, which CPython ≤ 3.10 keeps as its thread state's `thread_id`.
    TaskFsbase = 42,
    /// Non-zero once any process was marked as Python (`PY_PROCS`): until then no stack
    /// looks for Python frames.
    PythonLoaded = 43,
}

/// Number of config words.
pub const CONFIG_WORDS: u32 = 44;

/// The attach cookie of `signal:signal_deliver`: the one program that takes stacks at
/// tracepoints tells that event from the memory syscalls (cookie 0) by it.
pub const SIGNAL_DELIVER_COOKIE: u64 = 1;

/// [`ConfigKey::Mode`]: every allocator call is traced.
pub const MODE_EXACT: u64 = 0;
/// [`ConfigKey::Mode`]: byte-based Poisson sampling of allocations.
pub const MODE_SAMPLE: u64 = 1;
/// [`ConfigKey::Mode`]: no allocator probes; syscalls and page faults attribute RSS growth.
pub const MODE_GROWTH: u64 = 2;
/// Tracing has ended: the allocator programs record nothing while their links are closed.
pub const MODE_STOPPED: u64 = 3;

/// [`EventKind::SignalSent`]: `aux` flag, the kernel sent it (no process did).
pub const SIGNAL_FROM_KERNEL: u64 = 1 << 8;

impl MemEvent {
    /// The allocator [`family`] of an allocation or free event.
    pub fn family(&self) -> u8 {
        (self.alloc_fn >> 8) as u8
    }

    /// Packs a comm (at most 16 bytes) into `addr` and `size`, as `Exec`/`Exit`/`Comm` carry it.
    pub fn pack_comm(&mut self, comm: &[u8]) {
        let mut raw = [0u8; 16];
        let n = comm.len().min(16);
        raw[..n].copy_from_slice(&comm[..n]);
        let (lo, hi) = raw.split_at(8);
        self.addr = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        self.size = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
    }

    /// The comm packed into an `Exec`/`Exit` event, as bytes up to the first NUL.
    pub fn packed_comm(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..].copy_from_slice(&self.size.to_le_bytes());
        out
    }
}

/// Fault injection (`run --fail-*`): the rule the kernel applies at each allocator call, and
/// what it leaves for the user side when it stops a thread.
pub mod inject {
    /// [`Rule::when`]: a frame of the call's stack lies in a site range.
    pub const SITE_ANY: u32 = 1;
    /// [`Rule::when`]: the call's site (first frame outside wrapper ranges) lies in a site range.
    pub const SITE_ONLY: u32 = 2;
    /// [`Rule::when`]: only the `nth` matching call.
    pub const NTH: u32 = 4;
    /// [`Rule::when`]: the requested size lies in `[size_min, size_max]`.
    pub const SIZE: u32 = 8;
    /// [`Rule::when`]: each matching call with probability `rate / 2^32`.
    pub const RATE: u32 = 16;
    /// [`Rule::when`]: while the process's outstanding bytes plus the request pass `after`.
    pub const AFTER: u32 = 32;

    /// [`Record::action`]: no failure; the user side reads the process's layout (site ranges)
    /// and restarts the call from its entry registers.
    pub const SYNC: u32 = 0;
    /// Return NULL (and set `errno` to `ENOMEM`).
    pub const FAIL_NULL: u32 = 1;
    /// Return `ENOMEM` (`posix_memalign`: `*memptr` untouched).
    pub const FAIL_ENOMEM: u32 = 2;
    /// A throwing `operator new`: enter `std::__throw_bad_alloc()` in its place.
    pub const FAIL_THROW: u32 = 3;

    /// General registers in the kernel's x86-64 `pt_regs` order (also `user_regs_struct`'s).
    pub const REGS: usize = 21;

    /// What the kernel applies. Every field is read only where `when` has its bit.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Rule {
        /// Criteria bits; all given must hold.
        pub when: u32,
        /// Reserved.
        pub _pad: u32,
        /// The matching call to fail (1-based).
        pub nth: u64,
        /// Smallest requested size that matches.
        pub size_min: u64,
        /// Largest requested size that matches.
        pub size_max: u64,
        /// Probability times 2^32.
        pub rate: u64,
        /// The seed of the rate's draws.
        pub seed: u64,
        /// The allocator-level cap in bytes.
        pub after: u64,
    }

    /// A thread stopped for the user side: the call's entry state.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Record {
        /// What to do ([`SYNC`], [`FAIL_NULL`], ...).
        pub action: u32,
        /// The injection's sequence number (0 for [`SYNC`]).
        pub seq: u32,
        /// The real return address (before a uretprobe took its place on the stack).
        pub ret_addr: u64,
        /// The registers at the probed instruction, `pt_regs` order.
        pub regs: [u64; REGS],
    }

    impl Default for Record {
        fn default() -> Self {
            Self {
                action: 0,
                seq: 0,
                ret_addr: 0,
                regs: [0; REGS],
            }
        }
    }

    /// `pt_regs` indexes the user side rewrites.
    pub mod reg {
        /// r15.
        pub const R15: usize = 0;
        /// r14.
        pub const R14: usize = 1;
        /// r13.
        pub const R13: usize = 2;
        /// r12.
        pub const R12: usize = 3;
        /// rbp.
        pub const RBP: usize = 4;
        /// rbx.
        pub const RBX: usize = 5;
        /// rax.
        pub const RAX: usize = 10;
        /// rip.
        pub const RIP: usize = 16;
        /// rsp.
        pub const RSP: usize = 19;
    }

    /// Key of the site and wrapper tries: a process and an address, big-endian so that a
    /// prefix is an aligned address range (the prefix length counts the tgid's 32 bits).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SiteKey {
        /// tgid (big-endian) then address (big-endian).
        pub data: [u8; 12],
    }

    impl SiteKey {
        /// The key of `addr` in process `tgid`.
        pub fn new(tgid: u32, addr: u64) -> Self {
            let mut data = [0u8; 12];
            data[..4].copy_from_slice(&tgid.to_be_bytes());
            data[4..].copy_from_slice(&addr.to_be_bytes());
            Self { data }
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)] plain integers, any bit pattern valid.
    unsafe impl aya::Pod for super::inject::Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::inject::Record {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::inject::SiteKey {}
    // SAFETY: MemEvent is #[repr(C)], Copy, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::MemEvent {}
    // SAFETY: #[repr(C)] plain integers, no padding holes that matter, any bit pattern valid.
    unsafe impl aya::Pod for super::unwind::ModuleTable {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::ExecMapping {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::ProcMaps {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::FileKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::unwind::FileModule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::python::Layout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_round_trip() {
        let c = cookie::encode(
            cookie::OP_REALLOC,
            2,
            1,
            0,
            AllocFn::Reallocarray,
            family::MI,
        );
        assert_eq!(cookie::op(c), cookie::OP_REALLOC);
        assert_eq!(
            (cookie::size_arg(c), cookie::mul_arg(c), cookie::ptr_arg(c)),
            (2, 1, 0)
        );
        assert_eq!(cookie::alloc_fn(c), AllocFn::Reallocarray as u16 | (4 << 8));
        assert_eq!(cookie::args_read(c), 3);
        let free = cookie::encode(
            cookie::OP_FREE,
            cookie::NONE,
            cookie::NONE,
            0,
            AllocFn::Free,
            family::STANDARD,
        );
        assert_eq!(cookie::args_read(free), 1);
        for v in 0..=12u8 {
            assert_eq!(AllocFn::from_u8(v).map(|f| f as u8), Some(v));
        }
        assert_eq!(AllocFn::from_u8(13), None);
    }

    #[test]
    fn unwind_rows_round_trip() {
        use unwind::*;
        let r = row(0x1234_5678, kind::RBP, -2, 16);
        assert_eq!(
            (row_pc(r), row_kind(r), row_rbp_slot(r), row_cfa_off(r)),
            (0x1234_5678, kind::RBP, -2, 16)
        );
        let r = row(7, kind::RBP_DEREF, 0, -8);
        assert_eq!((row_rbp_slot(r), row_cfa_off(r)), (0, -8));
        let r = row(7, kind::RSP, 127, (1 << 19) - 1);
        assert_eq!((row_rbp_slot(r), row_cfa_off(r)), (127, (1 << 19) - 1));
        assert!(fits_cfa_off(-(1 << 19)) && !fits_cfa_off(1 << 19));
    }
}
