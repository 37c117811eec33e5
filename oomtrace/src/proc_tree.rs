//! A process and its descendants, from `/proc`: what `--pid N` attaches to. Pre-forked servers
//! (PostgreSQL, nginx, gunicorn, php-fpm) do their work in children forked long before anyone
//! attaches.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Processes in a tree at most (a bound on what the traced world can make us hold).
pub const MAX_TREE: usize = 8192;

/// The parent of process `pid`, from the text of its `/proc/PID/stat`.
pub fn parse_ppid(stat: &str) -> Option<u32> {
    // The comm (field 2) is in parentheses and may contain anything, parentheses included:
    // the fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Every process's parent, read from `proc_root` (normally `/proc`).
pub fn parents(proc_root: &Path) -> HashMap<u32, u32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok()?;
        Some((pid, parse_ppid(&stat)?))
    })
    .collect()
}

/// `root` and its descendants, `root` first, then breadth-first; at most [`MAX_TREE`].
pub fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    for list in children.values_mut() {
        list.sort_unstable();
    }
    let mut out = vec![root];
    let mut seen = HashSet::from([root]);
    let mut i = 0;
    while i < out.len() && out.len() < MAX_TREE {
        if let Some(kids) = children.get(&out[i]) {
            for &k in kids {
                if out.len() < MAX_TREE && seen.insert(k) {
                    out.push(k);
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_survives_odd_comms() {
        assert_eq!(parse_ppid("42 (postgres) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("43 (a) b (c)) R 9 1 1"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
        assert_eq!(parse_ppid("1 (x) S notanumber"), None);
    }

    #[test]
    fn tree_is_breadth_first_and_excludes_others() {
        let parents = HashMap::from([(1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1)]);
        assert_eq!(descendants(10, &parents), vec![10, 11, 12, 13]);
        assert_eq!(descendants(13, &parents), vec![13]);
        // A cycle (pid reuse in a racy read) cannot loop.
        let cyclic = HashMap::from([(5, 6), (6, 5)]);
        assert_eq!(descendants(5, &cyclic), vec![5, 6]);
    }

    #[test]
    fn our_own_children_are_found() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = descendants(std::process::id(), &parents(Path::new("/proc")));
        let found = tree.contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found, "{tree:?}");
        assert_eq!(tree[0], std::process::id());
    }
}
