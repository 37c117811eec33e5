//! Cheap per-process readings from `/proc` for the memory log: resident set size, threads and
//! open descriptors.
//!
//! One sample costs three small reads (`statm`, `status`, the `fd` directory), so sampling a
//! process tree every [`DEFAULT_INTERVAL`] is negligible next to tracing. The tree comes from
//! the run's cgroup (`MemoryCgroup::pids`) when there is one, else from [`process_tree`].

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::time::Duration;

/// How often `oomtrace run --artifacts` samples by default (the 0.2 s of hand-made harnesses).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size in bytes (`statm` resident pages × page size).
    pub rss_bytes: u64,
    /// Threads in the process (`status` `Threads:`).
    pub threads: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`; 0 when not readable).
    pub fds: u64,
}

/// Samples `pid`; `None` when it is gone (or a zombie waiting to be reaped).
pub fn sample_pid(pid: u32) -> Option<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status_field(&status, "State:").is_some_and(|s| s.starts_with('Z')) {
        return None;
    }
    let rss_bytes = rss_bytes(pid)?;
    let threads = status_field(&status, "Threads:")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(entries) => entries.count() as u64,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(_) => 0,
    };
    Some(ProcSample {
        rss_bytes,
        threads,
        fds,
    })
}

/// The summed resident set size of `pids` (those still running).
pub fn rss_of_pids(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&pid| rss_bytes(pid)).sum()
}

/// `root` and all its descendants now running, from the parent pids in `/proc/*/stat`.
pub fn process_tree(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![root];
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parent_pid(&s))
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        next += 1;
        if let Some(kids) = children.remove(&pid) {
            tree.extend(kids);
        }
    }
    tree
}

/// The parent pid from a `/proc/PID/stat` line: `pid (comm) state ppid ...`, where `comm` may
/// itself contain spaces and parentheses.
fn parent_pid(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// A `Key:   N kB` field of a `/proc` file (`/proc/meminfo`, `/proc/PID/status`), in bytes.
pub fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let prefix = format!("{key}:");
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn our_own_process() {
        let me = std::process::id();
        let s = sample_pid(me).expect("we are running");
        assert!(s.rss_bytes > 0, "{s:?}");
        assert!(s.rss_bytes.is_multiple_of(page_size()), "{s:?}");
        assert!(s.threads >= 1, "{s:?}");
        assert!(s.fds >= 3, "{s:?}");
        assert!(rss_of_pids(&[me]) > 0);
    }

    #[test]
    fn gone_and_zombie_processes_are_none() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie.
        while fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !status_field(&s, "State:").is_some_and(|s| s.starts_with('Z')))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sample_pid(pid), None);
        child.wait().unwrap();
        assert_eq!(sample_pid(pid), None);
        assert_eq!(rss_of_pids(&[pid]), 0);
        assert_eq!(sample_pid(u32::MAX), None);
    }

    #[test]
    fn rss_sums_over_the_tree() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&child.id()), "{tree:?}");
        let both = rss_of_pids(&[me, child.id()]);
        let child_rss = sample_pid(child.id()).unwrap().rss_bytes;
        assert!(child_rss > 0 && both > child_rss, "{both} vs {child_rss}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!process_tree(me).contains(&child.id()));
    }

    #[test]
    fn stat_lines_with_odd_names() {
        assert_eq!(parent_pid("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("42 (a) b (c) R 9 1 1"), Some(9));
        assert_eq!(parent_pid("garbage"), None);
    }
}
