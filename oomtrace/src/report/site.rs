//! The allocation site a user reads: the first frame outside the allocator's wrappers.
//!
//! Frames in well-known wrappers (`operator new`, Rust's `__rust_alloc`/`alloc::` internals,
//! glib's `g_malloc` family, `xmalloc`-style helpers, and the C and C++ runtimes' own code) and
//! in `--wrapper GLOB` functions stay on the stack; the site is the first frame past them, and
//! the frames before it become its "via" annotation. A stack made only of wrappers keeps its
//! call site as the site.

use crate::symbols::Frame;

pub use crate::symbols::wrappers::{glob, set_extra_wrappers};
use crate::symbols::wrappers::{is_interpreter_module, is_runtime_module, is_wrapper_function};

/// Whether frame `f` is an allocation wrapper. A Python frame never is; the interpreter's own
/// native frames always are.
pub fn is_wrapper(f: &Frame) -> bool {
    if oomtrace_common::python::is_token(f.addr) {
        return false;
    }
    if let Some(m) = &f.module
        && (is_runtime_module(m) || is_interpreter_module(m))
    {
        return true;
    }
    f.function.as_deref().is_some_and(is_wrapper_function)
}

/// The index of the site among `frames` (innermost first): the first frame that is not a
/// wrapper, or 0 when all are. Unnamed frames called (outwards, in the same module) by a
/// wrapper belong to it: a stripped library names only its exported functions, so a static
/// helper under `sqlite3Malloc` (`sqlite3MemMalloc`) has no name to match.
pub fn site_index(frames: &[Frame]) -> usize {
    let mut i = 0;
    while i < frames.len() {
        if is_wrapper(&frames[i]) {
            i += 1;
            continue;
        }
        if frames[i].function.is_none() && frames[i].module.is_some() {
            let same_module = |f: &Frame| f.module == frames[i].module;
            let named = frames[i..]
                .iter()
                .position(|f| f.function.is_some() || !same_module(f))
                .map(|k| i + k);
            if let Some(j) = named
                && same_module(&frames[j])
                && is_wrapper(&frames[j])
            {
                i = j;
                continue;
            }
        }
        return i;
    }
    0
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
    fn unnamed_helpers_under_a_wrapper_belong_to_it() {
        let unnamed = |module: &str| Frame {
            module: Some(module.into()),
            ..Frame::default()
        };
        let frames = vec![
            unnamed("libglib-2.0.so.0"),
            unnamed("libglib-2.0.so.0"),
            frame("g_malloc", "libglib-2.0.so.0"),
            frame("build_list", "app"),
        ];
        assert_eq!(site_index(&frames), 3);
        // Not when the wrapper lies in another module, or no wrapper follows.
        let other = vec![unnamed("app"), frame("g_malloc", "libglib-2.0.so.0")];
        assert_eq!(site_index(&other), 0);
        let plain = vec![
            unnamed("libglib-2.0.so.0"),
            frame("g_list_append", "libglib-2.0.so.0"),
        ];
        assert_eq!(site_index(&plain), 0);
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

    #[test]
    fn python_frames_are_sites_and_the_interpreter_wraps() {
        let py = |function: &str, i: u64| Frame {
            addr: oomtrace_common::python::TOKEN_TAG | i,
            ..frame(function, "python3.11")
        };
        let frames = vec![
            frame("PyObject_Malloc", "python3.11"),
            frame("_PyObject_MakeTpCall", "libpython3.12.so.1.0"),
            py("keep_bytes", 1),
            frame("_PyEval_EvalFrameDefault", "python3.11"),
        ];
        assert_eq!(site_index(&frames), 2);
        // A C extension's function is the site; the interpreter below it is not.
        let ext = vec![
            frame("grab", "grabber.cpython-311-x86_64-linux-gnu.so"),
            py("caller", 2),
        ];
        assert_eq!(site_index(&ext), 0);
        for (m, is) in [
            ("python3", true),
            ("python3.11", true),
            ("libpython3.11.so.1.0", true),
            ("python3-config", false),
            ("python3.11x", false),
            ("mypython3.so", false),
        ] {
            assert_eq!(is_interpreter_module(m), is, "{m}");
        }
    }
}
