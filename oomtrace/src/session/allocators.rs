//! Which allocator object each program uses, remembered: a shell script execs the same few
//! programs many times, and resolving one reads its ELF dependency graph (milliseconds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::probe::target;

/// Programs remembered at most; past it the cache starts over.
const MAX_PROGRAMS: usize = 4096;

/// Program path → the object it gets `malloc` from (`None`: none to probe, e.g. static).
#[derive(Default)]
pub struct AllocatorCache {
    known: HashMap<PathBuf, Option<PathBuf>>,
}

impl AllocatorCache {
    /// The allocator object `exe` uses, resolved once.
    pub fn allocator_of(&mut self, exe: &Path) -> Option<PathBuf> {
        if let Some(hit) = self.known.get(exe) {
            return hit.clone();
        }
        let found = target::allocator_of_program(exe).ok();
        if self.known.len() >= MAX_PROGRAMS {
            self.known.clear();
        }
        self.known.insert(exe.to_owned(), found.clone());
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_once_and_remembers_misses() {
        let mut cache = AllocatorCache::default();
        let sh = target::resolve_command(std::ffi::OsStr::new("sh")).unwrap();
        let first = cache.allocator_of(&sh).expect("sh has a libc malloc");
        assert!(first.to_string_lossy().contains("libc.so"), "{first:?}");
        assert_eq!(cache.allocator_of(&sh), Some(first));
        assert_eq!(cache.allocator_of(Path::new("/nonexistent/program")), None);
        assert_eq!(cache.known.len(), 2);
    }
}
