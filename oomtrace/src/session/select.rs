//! A selection of processes by cgroup subtree and command name (`oomtrace agent --cgroup PATH
//! --comm NAME`): who is in it now, read from the cgroup filesystem and `/proc`.
//!
//! The session traces what the selection holds at its start and looks again at every sampling
//! tick; children of a selected process are followed by the kernel from their fork on. A
//! process moved into a selected cgroup (or renamed to a selected comm) by a process outside
//! the selection is therefore traced from the next tick on, up to one tick late.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Cgroup directories walked per selected cgroup, at most (a subtree larger than this is cut).
const MAX_CGROUP_DIRS: usize = 4096;

/// Which processes to trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Cgroup directories (v1 or v2, anywhere under `/sys/fs/cgroup`): every process in one of
    /// them or below.
    pub cgroups: Vec<PathBuf>,
    /// Command names (`/proc/PID/comm`, exact).
    pub comms: Vec<String>,
}

impl Selection {
    /// Whether it selects nothing (the whole machine is traced instead).
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.comms.is_empty()
    }

    /// The pids it holds now (never oomtrace's own).
    pub fn pids(&self, proc_root: &Path) -> Vec<u32> {
        let mut out: HashSet<u32> = HashSet::new();
        for cg in &self.cgroups {
            cgroup_pids(cg, &mut out);
        }
        if !self.comms.is_empty()
            && let Ok(dir) = std::fs::read_dir(proc_root)
        {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if self.comms.iter().any(|c| c == comm.trim_end_matches('\n')) {
                    out.insert(pid);
                }
            }
        }
        out.remove(&std::process::id());
        let mut v: Vec<u32> = out.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// How the session's banner names it.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .cgroups
            .iter()
            .map(|c| format!("cgroup {}", c.display()))
            .collect();
        parts.extend(self.comms.iter().map(|c| format!("comm {c}")));
        parts.join(", ")
    }
}

/// Adds the processes of cgroup `root` and its descendants (`cgroup.procs` of each directory).
fn cgroup_pids(root: &Path, out: &mut HashSet<u32>) {
    let mut stack = vec![root.to_owned()];
    let mut dirs = 0;
    while let Some(dir) = stack.pop() {
        dirs += 1;
        if dirs > MAX_CGROUP_DIRS {
            return;
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            // Subdirectories are child cgroups (never symlinks in a cgroup filesystem).
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}

/// The selected processes the session traces already (so each is adopted once).
#[derive(Debug, Default)]
pub struct Adopted {
    pids: HashSet<u32>,
}

impl Adopted {
    /// Of `now` (the selection's pids this tick), those not adopted yet, marking them; pids
    /// no longer selected are let go (a pid reused later is adopted again).
    pub fn newcomers(&mut self, now: &[u32]) -> Vec<u32> {
        let current: HashSet<u32> = now.iter().copied().collect();
        self.pids.retain(|p| current.contains(p));
        now.iter()
            .copied()
            .filter(|p| self.pids.insert(*p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_subtrees_and_comms_are_selected() {
        let dir = std::env::temp_dir().join(format!("oomtrace-select-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cg = dir.join("cg");
        std::fs::create_dir_all(cg.join("child/grandchild")).unwrap();
        std::fs::write(cg.join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(cg.join("child/grandchild/cgroup.procs"), "12\n").unwrap();
        let proc_root = dir.join("proc");
        for (pid, comm) in [(20, "redis-server"), (21, "bash"), (22, "redis-server")] {
            std::fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
            std::fs::write(proc_root.join(format!("{pid}/comm")), format!("{comm}\n")).unwrap();
        }
        let sel = Selection {
            cgroups: vec![cg.clone()],
            comms: vec!["redis-server".into()],
        };
        assert_eq!(sel.pids(&proc_root), vec![10, 11, 12, 20, 22]);
        assert_eq!(
            sel.describe(),
            format!("cgroup {}, comm redis-server", cg.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_pid_is_adopted_once_while_selected() {
        let mut a = Adopted::default();
        assert_eq!(a.newcomers(&[1, 2]), vec![1, 2]);
        assert_eq!(a.newcomers(&[1, 2, 3]), vec![3]);
        // 1 left; when a process reuses its pid it is adopted anew.
        assert_eq!(a.newcomers(&[2, 3]), Vec::<u32>::new());
        assert_eq!(a.newcomers(&[1, 2, 3]), vec![1]);
    }
}
