//! Which allocators each exec'd program uses, remembered: a shell script execs the same few
//! programs many times, and deciding for one reads its ELF dependency graph (milliseconds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::probe::allocators::{self, AllocatorPlan};

/// Programs remembered at most; past it the cache starts over.
const MAX_PROGRAMS: usize = 4096;

/// (program, `LD_PRELOAD`) → its allocator plan (`None`: nothing to probe, e.g. stripped static).
#[derive(Default)]
pub struct PlanCache {
    known: HashMap<(PathBuf, Option<String>), Option<AllocatorPlan>>,
}

impl PlanCache {
    /// The allocators `exe` uses with `preload`, decided once.
    pub fn plan_of(&mut self, exe: &Path, preload: Option<&str>) -> Option<AllocatorPlan> {
        let key = (exe.to_owned(), preload.map(str::to_owned));
        if let Some(hit) = self.known.get(&key) {
            return hit.clone();
        }
        let found = allocators::plan_for_program(exe, preload).ok();
        if self.known.len() >= MAX_PROGRAMS {
            self.known.clear();
        }
        self.known.insert(key, found.clone());
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_once_and_remembers_misses() {
        let mut cache = PlanCache::default();
        let sh = crate::probe::target::resolve_command(std::ffi::OsStr::new("sh")).unwrap();
        let first = cache.plan_of(&sh, None).expect("sh has a libc malloc");
        assert!(first.objects[0].name.to_string_lossy().contains("libc.so"));
        assert_eq!(cache.plan_of(&sh, None), Some(first));
        assert_eq!(cache.plan_of(Path::new("/nonexistent/program"), None), None);
        assert_eq!(cache.known.len(), 2);
    }
}
