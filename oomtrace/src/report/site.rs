//! The allocation site a user reads: the first frame outside the allocator's wrappers.
//!
//! Frames in well-known wrappers (`operator new`, Rust's `__rust_alloc`/`alloc::` internals,
//! glib's `g_malloc` family, `xmalloc`-style helpers, and the C and C++ runtimes' own code) and
//! in `--wrapper GLOB` functions stay on the stack; the site is the first frame past them, and
//! the frames before it become its "via" annotation. A stack made only of wrappers keeps its
//! call site as the site.

use std::sync::OnceLock;

use crate::symbols::Frame;

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

/// Whether frame `f` is an allocation wrapper.
pub fn is_wrapper(f: &Frame) -> bool {
    if let Some(m) = &f.module
        && RUNTIME_MODULES.contains(&m.as_str())
    {
        return true;
    }
    let Some(name) = f.function.as_deref() else {
        return false;
    };
    BUILTIN_FUNCTIONS.iter().any(|g| glob(g, name))
        || EXTRA.get().is_some_and(|x| x.iter().any(|g| glob(g, name)))
}

/// The index of the site among `frames` (innermost first): the first frame that is not a
/// wrapper, or 0 when all are.
pub fn site_index(frames: &[Frame]) -> usize {
    frames.iter().position(|f| !is_wrapper(f)).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            module: Some(module.into()),
            ..Frame::default()
        }
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("operator new*", "operator new(unsigned long)"));
        assert!(glob("sqlite3Malloc*", "sqlite3MallocZero"));
        assert!(glob("x?alloc", "xcalloc"));
        assert!(!glob("xmalloc", "xmalloc2"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn site_skips_wrappers_and_runtime_code() {
        let frames = vec![
            frame("operator new(unsigned long)", "libstdc++.so.6"),
            frame("make_widget", "app"),
            frame("main", "app"),
        ];
        assert_eq!(site_index(&frames), 1);
        let rust = vec![
            frame("__rdl_alloc", "app"),
            frame("alloc::raw_vec::RawVec<T,A>::grow_one", "app"),
            frame("app::fill", "app"),
        ];
        assert_eq!(site_index(&rust), 2);
        let stdio = vec![
            frame("_IO_file_doallocate", "libc.so.6"),
            frame("printf", "libc.so.6"),
            frame("report", "app"),
        ];
        assert_eq!(site_index(&stdio), 2);
        // Only wrappers: the call site stays the site.
        assert_eq!(site_index(&stdio[..2]), 0);
        // An unnamed frame is the user's.
        assert_eq!(site_index(&[Frame::default()]), 0);
    }
}
