//! Every allocator entry point oomtrace knows, by family: what each one does and where its
//! arguments are ([`cookie`]). The kernel side reads that from the probe's attach cookie, so one
//! program serves them all.
//!
//! Which of these an object gets depends on what it is to the process (`allocators.rs`): the
//! object that provides `malloc` gets the standard names and, when it is an allocator library,
//! its own extras (jemalloc's `mallocx` family, tcmalloc's `tc_` and mimalloc's `mi_` names,
//! C++ `operator new`/`delete`) as the same heap. A prefixed jemalloc (`je_`, Rust's `_rjem_`)
//! never overrides `malloc`: it is a heap of its own.
//!
//! Wrappers that only call a probed primitive (`mi_reallocf`, `xallocx`) are left out on purpose:
//! the primitive's probe counts them, once. Queries (`malloc_usable_size`, `nallocx`,
//! `sallocx`) change nothing and are never probed.

use oomtrace_common::{AllocFn, cookie, family};

/// One entry point: its exported name and its cookie (without the family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Exported (or, in a static binary, `.symtab`) name.
    pub name: &'static str,
    /// [`cookie::encode`] of what it does, family 0.
    pub cookie: u64,
}

impl Entry {
    /// Whether the function has a return probe (everything but the plain frees).
    pub fn returns(&self) -> bool {
        cookie::returns(self.cookie)
    }

    /// Integer arguments the entry program reads (probe placement keeps them intact).
    pub fn nargs(&self) -> usize {
        cookie::args_read(self.cookie)
    }

    /// The cookie of this entry in `family`.
    pub fn cookie_in(&self, family: u8) -> u64 {
        self.cookie | (u64::from(family) << 24)
    }
}

const N: u64 = cookie::NONE;

const fn alloc(name: &'static str, size: u64, f: AllocFn) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_ALLOC, size, N, N, f, 0),
    }
}

/// A C++ `operator new` that throws `std::bad_alloc` instead of returning NULL.
const fn throwing(name: &'static str, f: AllocFn) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_ALLOC, 0, N, N, f, 0) | cookie::THROWS,
    }
}

const fn alloc_n(name: &'static str, n: u64, m: u64, f: AllocFn) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_ALLOC, n, m, N, f, 0),
    }
}

const fn realloc(name: &'static str, ptr: u64, size: u64) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_REALLOC, size, N, ptr, AllocFn::Realloc, 0),
    }
}

const fn realloc_n(name: &'static str, ptr: u64, n: u64, m: u64) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_REALLOC, n, m, ptr, AllocFn::Reallocarray, 0),
    }
}

const fn memptr(name: &'static str, memptr: u64, size: u64) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(
            cookie::OP_MEMPTR,
            size,
            N,
            memptr,
            AllocFn::PosixMemalign,
            0,
        ),
    }
}

const fn free(name: &'static str, ptr: u64) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_FREE, N, N, ptr, AllocFn::Free, 0),
    }
}

/// `entry`, marked as calling no other probed function inside ([`cookie::LEAF`]).
const fn leaf(entry: Entry) -> Entry {
    Entry {
        name: entry.name,
        cookie: entry.cookie | cookie::LEAF,
    }
}

/// The C standard names (and glibc's), as every `malloc` provider exports them.
pub const STANDARD: &[Entry] = &[
    leaf(alloc("malloc", 0, AllocFn::Malloc)),
    leaf(alloc_n("calloc", 0, 1, AllocFn::Calloc)),
    realloc("realloc", 0, 1),
    realloc_n("reallocarray", 0, 1, 2),
    memptr("posix_memalign", 0, 2),
    alloc("aligned_alloc", 1, AllocFn::AlignedAlloc),
    alloc("memalign", 1, AllocFn::Memalign),
    alloc("valloc", 0, AllocFn::Valloc),
    alloc("pvalloc", 0, AllocFn::Pvalloc),
    free("free", 0),
    free("cfree", 0),
];

/// jemalloc's non-standard API, unprefixed (Debian's libjemalloc) — with a prefix, these and
/// [`STANDARD`]'s names become `je_malloc`, `_rjem_mallocx`, ...
pub const JEMALLOC_EXTRAS: &[Entry] = &[
    alloc("mallocx", 0, AllocFn::Other),
    realloc("rallocx", 0, 1),
    free("sdallocx", 0),
    free("dallocx", 0),
];

/// C++ `operator new`/`delete` (Itanium-mangled), every nothrow, aligned and sized variant:
/// probed where an allocator library implements them itself (they do not call `malloc`).
pub const CXX: &[Entry] = &[
    throwing("_Znwm", AllocFn::New),
    alloc("_ZnwmRKSt9nothrow_t", 0, AllocFn::New),
    throwing("_ZnwmSt11align_val_t", AllocFn::New),
    alloc("_ZnwmSt11align_val_tRKSt9nothrow_t", 0, AllocFn::New),
    throwing("_Znam", AllocFn::New),
    alloc("_ZnamRKSt9nothrow_t", 0, AllocFn::New),
    throwing("_ZnamSt11align_val_t", AllocFn::New),
    alloc("_ZnamSt11align_val_tRKSt9nothrow_t", 0, AllocFn::New),
    free("_ZdlPv", 0),
    free("_ZdlPvm", 0),
    free("_ZdlPvRKSt9nothrow_t", 0),
    free("_ZdlPvSt11align_val_t", 0),
    free("_ZdlPvmSt11align_val_t", 0),
    free("_ZdlPvSt11align_val_tRKSt9nothrow_t", 0),
    free("_ZdaPv", 0),
    free("_ZdaPvm", 0),
    free("_ZdaPvRKSt9nothrow_t", 0),
    free("_ZdaPvSt11align_val_t", 0),
    free("_ZdaPvmSt11align_val_t", 0),
    free("_ZdaPvSt11align_val_tRKSt9nothrow_t", 0),
];

/// gperftools tcmalloc's own names.
pub const TCMALLOC: &[Entry] = &[
    alloc("tc_malloc", 0, AllocFn::Malloc),
    alloc("tc_malloc_skip_new_handler", 0, AllocFn::Malloc),
    alloc_n("tc_calloc", 0, 1, AllocFn::Calloc),
    realloc("tc_realloc", 0, 1),
    alloc("tc_memalign", 1, AllocFn::Memalign),
    memptr("tc_posix_memalign", 0, 2),
    alloc("tc_valloc", 0, AllocFn::Valloc),
    alloc("tc_pvalloc", 0, AllocFn::Pvalloc),
    free("tc_free", 0),
    free("tc_free_sized", 0),
    free("tc_cfree", 0),
    throwing("tc_new", AllocFn::New),
    throwing("tc_newarray", AllocFn::New),
    alloc("tc_new_nothrow", 0, AllocFn::New),
    alloc("tc_newarray_nothrow", 0, AllocFn::New),
    throwing("tc_new_aligned", AllocFn::New),
    throwing("tc_newarray_aligned", AllocFn::New),
    alloc("tc_new_aligned_nothrow", 0, AllocFn::New),
    alloc("tc_newarray_aligned_nothrow", 0, AllocFn::New),
    free("tc_delete", 0),
    free("tc_deletearray", 0),
    free("tc_delete_sized", 0),
    free("tc_deletearray_sized", 0),
    free("tc_delete_nothrow", 0),
    free("tc_deletearray_nothrow", 0),
    free("tc_delete_aligned", 0),
    free("tc_deletearray_aligned", 0),
    free("tc_delete_sized_aligned", 0),
    free("tc_deletearray_sized_aligned", 0),
    free("tc_delete_aligned_nothrow", 0),
    free("tc_deletearray_aligned_nothrow", 0),
];

/// mimalloc's own names (the default heap, and explicit heaps: their size moves one argument
/// right).
pub const MIMALLOC: &[Entry] = &[
    alloc("mi_malloc", 0, AllocFn::Malloc),
    alloc("mi_malloc_small", 0, AllocFn::Malloc),
    alloc("mi_zalloc", 0, AllocFn::Other),
    alloc("mi_zalloc_small", 0, AllocFn::Other),
    alloc_n("mi_calloc", 0, 1, AllocFn::Calloc),
    alloc_n("mi_mallocn", 0, 1, AllocFn::Other),
    realloc("mi_realloc", 0, 1),
    realloc("mi_rezalloc", 0, 1),
    realloc_n("mi_reallocn", 0, 1, 2),
    realloc_n("mi_reallocarray", 0, 1, 2),
    realloc_n("mi_recalloc", 0, 1, 2),
    alloc("mi_malloc_aligned", 0, AllocFn::AlignedAlloc),
    alloc("mi_malloc_aligned_at", 0, AllocFn::AlignedAlloc),
    alloc("mi_zalloc_aligned", 0, AllocFn::AlignedAlloc),
    alloc_n("mi_calloc_aligned", 0, 1, AllocFn::AlignedAlloc),
    realloc("mi_realloc_aligned", 0, 1),
    alloc("mi_aligned_alloc", 1, AllocFn::AlignedAlloc),
    alloc("mi_memalign", 1, AllocFn::Memalign),
    memptr("mi_posix_memalign", 0, 2),
    alloc("mi_valloc", 0, AllocFn::Valloc),
    alloc("mi_pvalloc", 0, AllocFn::Pvalloc),
    throwing("mi_new", AllocFn::New),
    Entry {
        cookie: alloc_n("mi_new_n", 0, 1, AllocFn::New).cookie | cookie::THROWS,
        name: "mi_new_n",
    },
    alloc("mi_new_nothrow", 0, AllocFn::New),
    throwing("mi_new_aligned", AllocFn::New),
    alloc("mi_new_aligned_nothrow", 0, AllocFn::New),
    realloc("mi_new_realloc", 0, 1),
    realloc_n("mi_new_reallocn", 0, 1, 2),
    alloc("mi_heap_malloc", 1, AllocFn::Malloc),
    alloc("mi_heap_malloc_small", 1, AllocFn::Malloc),
    alloc("mi_heap_zalloc", 1, AllocFn::Other),
    alloc_n("mi_heap_calloc", 1, 2, AllocFn::Calloc),
    alloc_n("mi_heap_mallocn", 1, 2, AllocFn::Other),
    alloc("mi_heap_malloc_aligned", 1, AllocFn::AlignedAlloc),
    alloc("mi_heap_zalloc_aligned", 1, AllocFn::AlignedAlloc),
    realloc("mi_heap_realloc", 1, 2),
    realloc_n("mi_heap_reallocn", 1, 2, 3),
    free("mi_free", 0),
    free("mi_cfree", 0),
    free("mi_free_size", 0),
    free("mi_free_aligned", 0),
    free("mi_free_size_aligned", 0),
];

/// A free that calls another allocator's free inside (an allocator layer's).
const fn layer_free(name: &'static str, ptr: u64) -> Entry {
    Entry {
        name,
        cookie: free(name, ptr).cookie | cookie::NESTS,
    }
}

/// CPython's allocator layer: the object (`PyObject_*`) and memory (`PyMem_*`) domains. Blocks
/// up to 512 bytes come from pymalloc's arenas (which CPython maps itself, inside these calls:
/// the layer's internal mappings), larger ones from `malloc` (inside these calls: counted once,
/// here). The raw domain (`PyMem_Raw*`) is plain `malloc` and left to its probes.
pub const PYTHON: &[Entry] = &[
    alloc("PyObject_Malloc", 0, AllocFn::Malloc),
    alloc_n("PyObject_Calloc", 0, 1, AllocFn::Calloc),
    realloc("PyObject_Realloc", 0, 1),
    layer_free("PyObject_Free", 0),
    alloc("PyMem_Malloc", 0, AllocFn::Malloc),
    alloc_n("PyMem_Calloc", 0, 1, AllocFn::Calloc),
    realloc("PyMem_Realloc", 0, 1),
    layer_free("PyMem_Free", 0),
];

/// An allocator layer's internal function (CPython's arena allocator): its calls open a call
/// and report nothing, so what it maps is the layer's, counted once.
const fn internal(name: &'static str) -> Entry {
    Entry {
        name,
        cookie: cookie::encode(cookie::OP_FREE, N, N, N, AllocFn::Free, 0) | cookie::NESTS,
    }
}

/// pymalloc's arena allocator ([`super::pyarena`] finds it in stripped interpreters too).
pub const PYTHON_ARENA: &[Entry] = &[
    internal(super::pyarena::MMAP),
    internal(super::pyarena::MUNMAP),
];

/// A prefixed jemalloc family: the standard names and jemalloc's extras, with `prefix`.
pub fn prefixed(prefix: &str) -> Vec<(String, Entry)> {
    STANDARD
        .iter()
        .chain(JEMALLOC_EXTRAS)
        .filter(|e| e.name != "cfree")
        .map(|e| (format!("{prefix}{}", e.name), *e))
        .collect()
}

/// The prefixed families oomtrace recognizes: (family, prefix, its `malloc`).
pub const PREFIXED: &[(u8, &str)] = &[(family::JE, "je_"), (family::RJEM, "_rjem_")];

/// A set of entry points an object is probed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Set {
    /// [`STANDARD`].
    Standard,
    /// The entries of [`STANDARD`] whose bit is set (bit `i`: `STANDARD[i]`): the standard names
    /// the dynamic linker binds to this object (it binds each name on its own, to the first
    /// object that defines it).
    StandardSome(u16),
    /// [`JEMALLOC_EXTRAS`], unprefixed.
    JemallocExtras,
    /// [`CXX`].
    Cxx,
    /// [`TCMALLOC`].
    Tcmalloc,
    /// [`MIMALLOC`].
    Mimalloc,
    /// A prefixed jemalloc ([`prefixed`]).
    Prefixed(&'static str),
    /// [`PYTHON`].
    Python,
    /// [`PYTHON_ARENA`].
    PythonArena,
}

impl Set {
    /// Its entry points, with their exported names.
    pub fn entries(self) -> Vec<(String, Entry)> {
        let plain = |list: &[Entry]| list.iter().map(|e| (e.name.to_owned(), *e)).collect();
        match self {
            Self::Standard => plain(STANDARD),
            Self::StandardSome(mask) => STANDARD
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, e)| (e.name.to_owned(), *e))
                .collect(),
            Self::JemallocExtras => plain(JEMALLOC_EXTRAS),
            Self::Cxx => plain(CXX),
            Self::Tcmalloc => plain(TCMALLOC),
            Self::Mimalloc => plain(MIMALLOC),
            Self::Prefixed(p) => prefixed(p),
            Self::Python => plain(PYTHON),
            Self::PythonArena => plain(PYTHON_ARENA),
        }
    }
}

/// What one object is probed for: sets of entry points, each counted under a family.
pub type ObjectSets = Vec<(Set, u8)>;

const _: () = assert!(STANDARD.len() <= 16);

/// The mask of [`STANDARD`] names an object defines.
pub fn standard_mask(defines: impl Fn(&str) -> bool) -> u16 {
    STANDARD
        .iter()
        .enumerate()
        .filter(|(_, e)| defines(e.name))
        .fold(0, |m, (i, _)| m | (1 << i))
}

/// The sets the object that provides a process's `malloc` gets, from what it defines: the
/// standard names bound to it (`mask`), and when it is an allocator library its own API and
/// C++ operators too, all one heap (family [`family::STANDARD`]).
pub fn provider_sets(mask: u16, defines: impl Fn(&str) -> bool) -> ObjectSets {
    let mut sets = vec![(Set::StandardSome(mask), family::STANDARD)];
    let mut allocator_library = false;
    for (probe, set) in [
        ("mallocx", Set::JemallocExtras),
        ("tc_malloc", Set::Tcmalloc),
        ("mi_malloc", Set::Mimalloc),
    ] {
        if defines(probe) {
            sets.push((set, family::STANDARD));
            allocator_library = true;
        }
    }
    // libstdc++'s operator new calls malloc (probed already); an allocator library's does not.
    if allocator_library && defines("_Znwm") {
        sets.push((Set::Cxx, family::STANDARD));
    }
    sets
}

/// The sets an object that does not provide `malloc` gets: the prefixed heaps it defines, each
/// its own family. Empty when it has none.
pub fn other_sets(defines: impl Fn(&str) -> bool) -> ObjectSets {
    let mut sets = Vec::new();
    for &(f, prefix) in PREFIXED {
        if defines(&format!("{prefix}malloc")) {
            sets.push((Set::Prefixed(prefix), f));
        }
    }
    if defines("tc_malloc") {
        sets.push((Set::Tcmalloc, family::TC));
    }
    if defines("mi_malloc") {
        sets.push((Set::Mimalloc, family::MI));
    }
    // libpython, or an interpreter with it linked in (Debian's python3.X).
    if defines("PyObject_Malloc") && defines("PyMem_Malloc") {
        sets.push((Set::Python, family::PY));
        sets.push((Set::PythonArena, family::PY));
    }
    sets
}

/// The name of an allocator family, for reports.
pub fn family_name(f: u8) -> &'static str {
    match f {
        family::STANDARD => "malloc",
        family::JE => "je_malloc",
        family::RJEM => "_rjem_malloc (tikv-jemallocator)",
        family::TC => "tc_malloc",
        family::MI => "mi_malloc",
        family::PY => "PyObject_Malloc (CPython)",
        _ => "unknown allocator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_where_the_functions_take_them() {
        let by_name = |n: &str| {
            STANDARD
                .iter()
                .chain(MIMALLOC)
                .chain(TCMALLOC)
                .chain(CXX)
                .chain(JEMALLOC_EXTRAS)
                .find(|e| e.name == n)
                .copied()
                .unwrap()
        };
        // posix_memalign(&p, align, size): the block goes to *arg0, the size is arg2.
        let pm = by_name("posix_memalign").cookie;
        assert_eq!(
            (cookie::op(pm), cookie::ptr_arg(pm), cookie::size_arg(pm)),
            (cookie::OP_MEMPTR, 0, 2)
        );
        // aligned_alloc(align, size) but mi_malloc_aligned(size, align).
        assert_eq!(cookie::size_arg(by_name("aligned_alloc").cookie), 1);
        assert_eq!(cookie::size_arg(by_name("mi_malloc_aligned").cookie), 0);
        // mi_heap_realloc(heap, p, size).
        let hr = by_name("mi_heap_realloc").cookie;
        assert_eq!((cookie::ptr_arg(hr), cookie::size_arg(hr)), (1, 2));
        assert_eq!(by_name("mi_heap_realloc").nargs(), 3);
        // Frees have no return probe; everything else does.
        assert!(!by_name("_ZdlPvm").returns() && !by_name("tc_delete_sized").returns());
        assert!(by_name("_Znwm").returns() && by_name("rallocx").returns());
        assert_eq!(
            cookie::alloc_fn(by_name("calloc").cookie_in(family::MI)),
            AllocFn::Calloc as u16 | (u16::from(family::MI) << 8)
        );
    }

    #[test]
    fn a_provider_gets_its_library_api_as_one_heap() {
        let libc = |n: &str| matches!(n, "malloc" | "free" | "calloc");
        let m = standard_mask(libc);
        assert_eq!(m.count_ones(), 3);
        assert_eq!(
            provider_sets(m, libc),
            vec![(Set::StandardSome(m), family::STANDARD)]
        );
        let names: Vec<String> = Set::StandardSome(m)
            .entries()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec!["malloc", "calloc", "free"]);
        let tcmalloc = |n: &str| matches!(n, "malloc" | "tc_malloc" | "_Znwm");
        assert_eq!(
            provider_sets(1, tcmalloc),
            vec![
                (Set::StandardSome(1), family::STANDARD),
                (Set::Tcmalloc, family::STANDARD),
                (Set::Cxx, family::STANDARD)
            ]
        );
        // libstdc++ defines operator new but is no allocator: never probed for it.
        let static_cxx = |n: &str| matches!(n, "malloc" | "_Znwm");
        assert_eq!(provider_sets(1, static_cxx).len(), 1);
        // A Rust binary with tikv-jemallocator beside glibc: its own heap.
        let rust = |n: &str| n == "_rjem_malloc";
        assert_eq!(
            other_sets(rust),
            vec![(Set::Prefixed("_rjem_"), family::RJEM)]
        );
        assert!(other_sets(libc).is_empty());
        // libpython (or a python3.X with it linked in): CPython's layer, a family of its own.
        let python = |n: &str| matches!(n, "PyObject_Malloc" | "PyMem_Malloc");
        assert_eq!(
            other_sets(python),
            vec![(Set::Python, family::PY), (Set::PythonArena, family::PY)]
        );
    }

    #[test]
    fn the_python_layer_frees_open_a_call() {
        for e in PYTHON {
            assert!(
                e.returns(),
                "{}: every layer call returns through a probe",
                e.name
            );
        }
        let free = PYTHON.iter().find(|e| e.name == "PyObject_Free").unwrap();
        assert_eq!(cookie::op(free.cookie), cookie::OP_FREE);
        assert_ne!(free.cookie & cookie::NESTS, 0);
        assert!(!STANDARD.iter().any(|e| e.cookie & cookie::NESTS != 0));
    }

    #[test]
    fn prefixed_families_rename_the_standard_api() {
        let je = prefixed("je_");
        assert!(je.iter().any(|(n, _)| n == "je_malloc"));
        assert!(je.iter().any(|(n, _)| n == "je_sdallocx"));
        assert!(!je.iter().any(|(n, _)| n == "je_cfree"));
        assert_eq!(
            family_name(family::RJEM),
            "_rjem_malloc (tikv-jemallocator)"
        );
    }
}
