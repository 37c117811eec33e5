//! Allocation wrappers: functions (`operator new`, `xmalloc`, `g_malloc`, ...) and runtime
//! modules (the C and C++ runtimes) whose frames are not where an allocation happens. The
//! report's allocation site and `run --fail-at-site` both look past them.

use std::sync::OnceLock;

/// Function-name globs that are allocation wrappers wherever they are.
const BUILTIN_FUNCTIONS: &[&str] = &[
    // C++: every operator new/new[] (nothrow, aligned, sized variants).
    "operator new*",
    "_Znw*",
    "_Zna*",
    "std::allocator<*>::allocate*",
    "std::__new_allocator<*>::allocate*",
    "__gnu_cxx::new_allocator<*>::allocate*",
    "std::allocator_traits<*>::allocate*",
    // Rust's global allocator shims and the standard library's allocation internals.
    "__rust_alloc*",
    "__rust_realloc",
    "__rdl_*",
    "__rg_*",
    "alloc::*",
    "<alloc::*",
    "std::alloc::*",
    "<std::alloc::*",
    "hashbrown::raw::*",
    "<hashbrown::raw::*",
    // glib.
    "g_malloc*",
    "g_try_malloc*",
    "g_realloc*",
    "g_try_realloc*",
    "g_slice_alloc*",
    "g_memdup*",
    "g_strdup*",
    "g_strndup",
    // xmalloc-style helpers.
    "xmalloc",
    "xcalloc",
    "xrealloc",
    "xzalloc",
    "xstrdup",
    "xstrndup",
    "xmemdup",
    "x2nrealloc",
    "xnmalloc",
    "emalloc",
    "ecalloc",
    "erealloc",
    "safe_malloc",
    "safe_calloc",
    "checked_malloc",
    // The C library's own allocating helpers.
    "strdup",
    "__strdup",
    "strndup",
    "__strndup",
];

/// Modules whose code is the runtime's, not the user's: allocations made inside them (stdio's
/// buffers, the dynamic linker's tables, C++ containers' out-of-line helpers) belong to the
/// first frame of the caller outside them.
const RUNTIME_MODULES: &[&str] = &[
    "libc.so.6",
    "libc.so",
    "libstdc++.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "libm.so.6",
    "libpthread.so.0",
];

static EXTRA: OnceLock<Vec<String>> = OnceLock::new();

/// Adds `--wrapper GLOB` patterns (once, at start-up).
pub fn set_extra_wrappers(globs: Vec<String>) {
    let _ = EXTRA.set(globs);
}

/// Whether the module named `basename` (`libc.so.6`) is a runtime's: all of its code wraps.
pub fn is_runtime_module(basename: &str) -> bool {
    RUNTIME_MODULES.contains(&basename)
}

/// Whether the module named `basename` is a CPython interpreter (`python3.11`, a static build,
/// or `libpython3.12.so.1.0`): its native frames are the interpreter's internals (the eval loop,
/// calls, object allocation), which an allocation made for Python code goes through.
pub fn is_interpreter_module(basename: &str) -> bool {
    let version = |rest: &str| {
        rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(rest) = basename.strip_prefix("python3") {
        return version(rest);
    }
    basename
        .strip_prefix("libpython3.")
        .is_some_and(|rest| rest.contains(".so"))
}

/// Whether the function named `name` (demangled) is an allocation wrapper.
pub fn is_wrapper_function(name: &str) -> bool {
    BUILTIN_FUNCTIONS.iter().any(|g| glob(g, name))
        || EXTRA.get().is_some_and(|x| x.iter().any(|g| glob(g, name)))
}

/// `*` (any run) and `?` (any one character) glob match of the whole name.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
