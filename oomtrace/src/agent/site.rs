//! The `site` label: the allocation site's function name. It is the report's site
//! ([`crate::report::site`]: past the allocator and its wrappers) and also past libc's memory
//! routines, wherever they are linked (a static binary carries its own `memset`): in growth
//! mode a page is faulted in where it is first written, often inside `memset` or `memcpy`,
//! and the page belongs to the function that called them.

use crate::report::site::{glob, is_wrapper};
use crate::symbols::Frame;

/// Memory routines a page fault may be taken in on behalf of their caller (and their
/// multiarch variants, `__memset_avx2_unaligned_erms` and the like).
const MEMORY_ROUTINES: &[&str] = &[
    "memset",
    "__memset*",
    "memcpy",
    "__memcpy*",
    "memmove",
    "__memmove*",
    "mempcpy",
    "__mempcpy*",
    "bzero",
    "__bzero*",
    "explicit_bzero",
    "__explicit_bzero*",
    "wmemset",
    "__wmemset*",
    "strcpy",
    "__strcpy*",
    "stpcpy",
    "__stpcpy*",
    "strncpy",
    "__strncpy*",
];

/// Longest label value kept (C++ template names run to kilobytes).
const MAX_LEN: usize = 256;

/// Whether `f` is one of the memory routines.
fn is_memory_routine(f: &Frame) -> bool {
    f.function
        .as_deref()
        .is_some_and(|name| MEMORY_ROUTINES.iter().any(|g| glob(g, name)))
}

/// The site's name among `frames` (innermost first): the first frame that is neither a wrapper
/// nor a memory routine, else the call site itself; `None` for no frames.
pub fn site_name(frames: &[Frame]) -> Option<String> {
    let site = frames
        .iter()
        .find(|f| !is_wrapper(f) && !is_memory_routine(f))
        .or(frames.first())?;
    let mut name = crate::report::display_name(site);
    if name.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    Some(name)
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
    fn a_fault_in_memset_belongs_to_its_caller() {
        // Static binary: memset is the program's own code, not libc's.
        let frames = [
            frame("__memset_avx2_unaligned_erms", "app"),
            frame("fill_cache", "app"),
            frame("main", "app"),
        ];
        assert_eq!(site_name(&frames).as_deref(), Some("fill_cache"));
        // Dynamic: libc's memset, under operator new's caller.
        let frames = [
            frame("__memset_avx2_unaligned_erms", "libc.so.6"),
            frame("operator new(unsigned long)", "libstdc++.so.6"),
            frame("Cache::grow", "app"),
        ];
        assert_eq!(site_name(&frames).as_deref(), Some("Cache::grow"));
        assert_eq!(
            site_name(&[frame("memcpy", "app")]).as_deref(),
            Some("memcpy"),
            "nothing past it: the call site stays"
        );
        assert_eq!(site_name(&[]), None);
    }

    #[test]
    fn unnamed_and_long_names() {
        let unnamed = Frame {
            module: Some("app".into()),
            offset: Some(0x1234),
            ..Frame::default()
        };
        assert_eq!(site_name(&[unnamed]).as_deref(), Some("app+0x1234"));
        let long = "x".repeat(1000);
        assert_eq!(site_name(&[frame(&long, "app")]).unwrap().len(), MAX_LEN);
    }
}
