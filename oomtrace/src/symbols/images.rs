//! Each process's executable mappings as the kernel reported them ([`super::perf`]), per image
//! (one per exec), and which model image — (pid, generation) — each one is.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Mapping;
use super::perf::Record;

/// Images kept; past this the oldest go (a busy `--all` host execs all day).
const MAX_IMAGES: usize = 8192;
/// Mappings kept per image: a program with more executable mappings is pathological.
const MAX_MAPPINGS: usize = 4096;
/// Anonymous executable ranges (JIT code) kept per image.
const MAX_ANON: usize = 1024;
/// Distinct paths kept for sharing between images.
const MAX_PATHS: usize = 65_536;

/// One address space: from an exec (or a fork, with a copy of the parent's) until the next exec.
#[derive(Debug, Default, Clone)]
struct Image {
    pid: u32,
    /// When it began (0: before the session).
    start_ts: u64,
    /// Whether an exec began it.
    exec: bool,
    /// Mappings with the time each was made.
    maps: Vec<(u64, Mapping)>,
    /// Anonymous executable ranges (a JIT's code) with the time each was made: (ts, start, end).
    anon: Vec<(u64, u64, u64)>,
    /// Whether ranges past [`MAX_ANON`] were left out (counted once).
    anon_full: bool,
}

/// Images by id, the ones of each pid in time order, and the model images bound to them.
#[derive(Debug, Default)]
pub struct Images {
    images: HashMap<u64, Image>,
    order: VecDeque<u64>,
    next_id: u64,
    by_pid: HashMap<u32, Vec<u64>>,
    bound: HashMap<(u32, u32), u64>,
    paths: HashMap<String, Arc<PathBuf>>,
    /// Records the kernel dropped (full ring).
    pub lost: u64,
    /// Images that mapped more anonymous executable ranges than [`MAX_ANON`].
    pub anon_dropped: u64,
}

impl Images {
    /// Applies records read from the kernel.
    pub fn apply(&mut self, records: impl IntoIterator<Item = Record>) {
        // One ring per CPU: a task that migrates mid-exec has its exec record in one ring and
        // its next mappings in another. Time order within a batch; across batches, `push`
        // moves mappings a new image owns out of the one before it.
        let mut records: Vec<Record> = records.into_iter().collect();
        records.sort_by_key(|r| match r {
            Record::Exec { ts, .. } | Record::Map { ts, .. } => *ts,
            Record::Lost { .. } => 0,
        });
        for r in records {
            match r {
                Record::Exec { pid, ts } => {
                    self.push(Image {
                        pid,
                        start_ts: ts,
                        exec: true,
                        ..Image::default()
                    });
                }
                Record::Map {
                    pid,
                    ts,
                    addr,
                    len,
                    pgoff,
                    id: file_id,
                    path,
                } => {
                    // Anonymous executable memory (JIT code, "//anon") has no file to read, but
                    // a walk through it is a walk through code; other pseudo-files are neither.
                    let anon = path == "//anon";
                    if !anon && (!path.starts_with('/') || path.starts_with("//")) {
                        continue;
                    }
                    // The image the process was in when it mapped this; records from several
                    // CPUs, and images made from model events, arrive in any order.
                    let id = match self.image_at(pid, ts) {
                        Some(id) => id,
                        None => self.push(Image {
                            pid,
                            ..Image::default()
                        }),
                    };
                    if anon {
                        if let Some(img) = self.images.get_mut(&id) {
                            if img.anon.len() < MAX_ANON {
                                img.anon.push((ts, addr, addr.saturating_add(len)));
                            } else if !img.anon_full {
                                img.anon_full = true;
                                self.anon_dropped += 1;
                            }
                        }
                        continue;
                    }
                    let path = self.path(path);
                    if let Some(img) = self.images.get_mut(&id)
                        && img.maps.len() < MAX_MAPPINGS
                    {
                        let m = Mapping {
                            start: addr,
                            end: addr.saturating_add(len),
                            offset: pgoff,
                            exec: true,
                            id: file_id,
                            path,
                        };
                        img.maps.push((ts, m));
                    }
                }
                Record::Lost { count } => self.lost += count,
            }
        }
    }

    /// The latest image of `pid` begun at or before `ts`.
    fn image_at(&self, pid: u32, ts: u64) -> Option<u64> {
        self.by_pid
            .get(&pid)?
            .iter()
            .rev()
            .copied()
            .find(|id| self.images.get(id).is_some_and(|i| i.start_ts <= ts))
    }

    fn path(&mut self, path: String) -> Arc<PathBuf> {
        if let Some(p) = self.paths.get(&path) {
            return p.clone();
        }
        if self.paths.len() >= MAX_PATHS {
            self.paths.clear();
        }
        let p = Arc::new(PathBuf::from(&path));
        self.paths.insert(path, p.clone());
        p
    }

    fn push(&mut self, mut img: Image) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        // Kept in time order.
        let ids = self.by_pid.entry(img.pid).or_default();
        let images = &self.images;
        let at = ids.partition_point(|i| images.get(i).is_some_and(|o| o.start_ts <= img.start_ts));
        // Mappings filed in the image before this one that were made after this one began are
        // this one's (their records were read before the record that begins it).
        if at > 0
            && let Some(prev) = self.images.get_mut(&ids[at - 1])
        {
            let start = img.start_ts;
            let (later, kept): (Vec<_>, Vec<_>) =
                prev.maps.drain(..).partition(|(t, _)| *t >= start);
            prev.maps = kept;
            img.maps.extend(later);
            let (later, kept): (Vec<_>, Vec<_>) =
                prev.anon.drain(..).partition(|(t, _, _)| *t >= start);
            prev.anon = kept;
            img.anon.extend(later);
        }
        ids.insert(at, id);
        self.images.insert(id, img);
        self.order.push_back(id);
        if self.order.len() > MAX_IMAGES
            && let Some(old) = self.order.pop_front()
            && let Some(img) = self.images.remove(&old)
            && let Some(ids) = self.by_pid.get_mut(&img.pid)
        {
            ids.retain(|&i| i != old);
            if ids.is_empty() {
                self.by_pid.remove(&img.pid);
            }
        }
        id
    }

    /// Model image (pid, generation) began with the exec seen at `ts`: binds it to the latest
    /// exec image of that pid at or before `ts` (the kernel records an exec before the
    /// tracepoint that reports it fires).
    pub fn bind_exec(&mut self, pid: u32, generation: u32, ts: u64) {
        let found = self.by_pid.get(&pid).and_then(|ids| {
            ids.iter().rev().copied().find(|id| {
                self.images
                    .get(id)
                    .is_some_and(|i| i.exec && i.start_ts <= ts)
            })
        });
        if let Some(id) = found {
            self.bind(pid, generation, id);
        }
    }

    /// A child forked at `ts` starts with its parent's mappings of that moment; what it maps
    /// later is its own.
    pub fn bind_fork(&mut self, parent: u32, parent_generation: u32, child: u32, ts: u64) {
        let parent = self
            .bound
            .get(&(parent, parent_generation))
            .and_then(|id| self.images.get(id));
        let maps = parent
            .map(|i| i.maps.iter().filter(|(t, _)| *t <= ts).cloned().collect())
            .unwrap_or_default();
        let anon = parent
            .map(|i| {
                i.anon
                    .iter()
                    .filter(|(t, _, _)| *t <= ts)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let id = self.push(Image {
            pid: child,
            start_ts: ts,
            exec: false,
            maps,
            anon,
            anon_full: false,
        });
        self.bind(child, 0, id);
    }

    fn bind(&mut self, pid: u32, generation: u32, id: u64) {
        if self.bound.len() >= MAX_IMAGES {
            // Bindings of evicted images are useless; drop them all rather than grow.
            let images = &self.images;
            self.bound.retain(|_, id| images.contains_key(id));
            if self.bound.len() >= MAX_IMAGES {
                self.bound.clear();
            }
        }
        self.bound.insert((pid, generation), id);
    }

    /// The program an exec'd image runs: the kernel maps it before anything else.
    pub fn program(&self, pid: u32, generation: u32) -> Option<&Path> {
        let img = self.images.get(self.bound.get(&(pid, generation))?)?;
        img.exec
            .then(|| img.maps.first())
            .flatten()
            .map(|(_, m)| m.path.as_path())
    }

    /// The mapping of (pid, generation) containing `addr`, if the kernel reported one. An image
    /// never bound (a process traced from before the session) falls back to the pid's first
    /// image that began without an exec.
    pub fn mapping(&self, pid: u32, generation: u32, addr: u64) -> Option<&Mapping> {
        // The latest mapping wins: an address range can be unmapped and mapped again.
        self.image(pid, generation)?
            .maps
            .iter()
            .rev()
            .map(|(_, m)| m)
            .find(|m| addr >= m.start && addr < m.end)
    }

    /// Whether the kernel reported `addr` of (pid, generation) as anonymous executable memory
    /// (a JIT's code).
    pub fn anonymous_code(&self, pid: u32, generation: u32, addr: u64) -> bool {
        self.image(pid, generation).is_some_and(|i| {
            i.anon
                .iter()
                .any(|&(_, start, end)| addr >= start && addr < end)
        })
    }

    /// The image bound to (pid, generation); one never bound (a process traced from before the
    /// session) falls back to the pid's first image that began without an exec.
    fn image(&self, pid: u32, generation: u32) -> Option<&Image> {
        let id = match self.bound.get(&(pid, generation)) {
            Some(id) => *id,
            None => *self
                .by_pid
                .get(&pid)?
                .iter()
                .find(|id| self.images.get(id).is_some_and(|i| i.start_ts == 0))?,
        };
        self.images.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pid: u32, ts: u64, addr: u64, path: &str) -> Record {
        Record::Map {
            pid,
            ts,
            addr,
            len: 0x1000,
            pgoff: 0x2000,
            id: crate::objfile::FileId::from_parts(8, 1, 42),
            path: path.into(),
        }
    }

    #[test]
    fn each_exec_is_its_own_image() {
        let mut im = Images::default();
        im.apply([
            Record::Exec { pid: 5, ts: 100 },
            map(5, 101, 0x1000, "/bin/sh"),
            Record::Exec { pid: 5, ts: 200 },
            map(5, 201, 0x1000, "/bin/prog"),
            map(5, 202, 0x5000, "/lib/libc.so.6"),
        ]);
        im.bind_exec(5, 1, 150);
        im.bind_exec(5, 2, 205);
        let path = |g, a| {
            im.mapping(5, g, a)
                .map(|m| m.path.to_string_lossy().into_owned())
        };
        assert_eq!(path(1, 0x1800).as_deref(), Some("/bin/sh"));
        assert_eq!(path(2, 0x1800).as_deref(), Some("/bin/prog"));
        assert_eq!(path(2, 0x5000).as_deref(), Some("/lib/libc.so.6"));
        assert_eq!(path(1, 0x5000), None);
        assert_eq!(im.program(5, 2), Some(Path::new("/bin/prog")));
        let m = im.mapping(5, 2, 0x1800).unwrap();
        assert_eq!(
            (m.start, m.end, m.offset, m.exec),
            (0x1000, 0x2000, 0x2000, true)
        );
    }

    #[test]
    fn a_forked_child_sees_its_parents_mappings_and_its_own() {
        let mut im = Images::default();
        im.apply([
            Record::Exec { pid: 1, ts: 10 },
            map(1, 11, 0x1000, "/bin/p"),
            // Mapped after the fork, though read before the fork event is.
            map(1, 21, 0x7000, "/lib/late.so"),
        ]);
        im.bind_exec(1, 1, 12);
        im.bind_fork(1, 1, 2, 15);
        im.apply([map(2, 20, 0x9000, "/lib/plugin.so")]);
        assert!(im.mapping(2, 0, 0x1000).is_some());
        assert!(im.mapping(2, 0, 0x9000).is_some());
        // The parent's later mappings are not the child's, nor the child's the parent's.
        assert!(im.mapping(2, 0, 0x7000).is_none());
        assert!(im.mapping(1, 1, 0x9000).is_none());
    }

    /// The records of a child's exec (and of what it maps next) may be read before the model
    /// hears of its fork: they still belong to the exec'd image, not to the forked copy.
    #[test]
    fn a_fork_read_after_the_childs_exec_records() {
        let mut im = Images::default();
        im.apply([
            Record::Exec { pid: 1, ts: 10 },
            map(1, 11, 0x1000, "/bin/sh"),
        ]);
        im.bind_exec(1, 1, 12);
        im.apply([
            Record::Exec { pid: 2, ts: 30 },
            map(2, 31, 0x1000, "/bin/prog"),
        ]);
        im.bind_fork(1, 1, 2, 20);
        im.apply([map(2, 32, 0x5000, "/lib/libc.so.6")]);
        im.bind_exec(2, 1, 33);
        let path = |g, a| {
            im.mapping(2, g, a)
                .map(|m| m.path.to_string_lossy().into_owned())
        };
        assert_eq!(path(0, 0x1000).as_deref(), Some("/bin/sh"));
        assert_eq!(path(1, 0x1000).as_deref(), Some("/bin/prog"));
        assert_eq!(path(1, 0x5000).as_deref(), Some("/lib/libc.so.6"));
        assert_eq!(path(0, 0x5000), None);
    }

    /// A task that migrated mid-exec: its exec record sits in one CPU's ring, its mappings in
    /// another's, and they are read in either order, in one batch or in two.
    #[test]
    fn records_read_out_of_order_across_cpus() {
        for split in [false, true] {
            let mut im = Images::default();
            im.apply([
                Record::Exec { pid: 1, ts: 10 },
                map(1, 11, 0x1000, "/bin/sh"),
            ]);
            im.bind_exec(1, 1, 12);
            im.bind_fork(1, 1, 2, 20);
            // The child's exec at 30 and the mapping of its program at 31, read map first.
            let (first, second) = (
                map(2, 31, 0x1000, "/bin/prog"),
                Record::Exec { pid: 2, ts: 30 },
            );
            if split {
                im.apply([first]);
                im.apply([second]);
            } else {
                im.apply([first, second]);
            }
            im.bind_exec(2, 1, 32);
            let path = |g, a| {
                im.mapping(2, g, a)
                    .map(|m| m.path.to_string_lossy().into_owned())
            };
            assert_eq!(
                path(1, 0x1000).as_deref(),
                Some("/bin/prog"),
                "split {split}"
            );
            assert_eq!(path(0, 0x1000).as_deref(), Some("/bin/sh"), "split {split}");
        }
    }

    /// A child's own mapping read before the model heard of its fork belongs to the forked
    /// image all the same.
    #[test]
    fn a_childs_mapping_read_before_its_fork() {
        let mut im = Images::default();
        im.apply([
            Record::Exec { pid: 1, ts: 10 },
            map(1, 11, 0x1000, "/bin/p"),
        ]);
        im.bind_exec(1, 1, 12);
        im.apply([map(2, 25, 0x9000, "/lib/plugin.so")]);
        im.bind_fork(1, 1, 2, 20);
        assert!(im.mapping(2, 0, 0x9000).is_some());
        assert!(im.mapping(2, 0, 0x1000).is_some());
    }

    #[test]
    fn anonymous_code_and_lost_records() {
        let mut im = Images::default();
        im.apply([
            Record::Exec { pid: 3, ts: 1 },
            map(3, 2, 0x1000, "//anon"),
            map(3, 2, 0x9000, "[vdso]"),
            Record::Lost { count: 4 },
        ]);
        im.bind_exec(3, 0, 1);
        assert!(im.mapping(3, 0, 0x1000).is_none(), "no file to name it by");
        assert!(im.anonymous_code(3, 0, 0x1000), "but code it is");
        assert!(!im.anonymous_code(3, 0, 0x9000));
        assert_eq!(im.lost, 4);
        // A child forked after it sees it too.
        im.bind_fork(3, 0, 4, 5);
        assert!(im.anonymous_code(4, 0, 0x1000));
    }

    #[test]
    fn anonymous_code_is_bounded_and_counted() {
        let mut im = Images::default();
        im.apply([Record::Exec { pid: 3, ts: 1 }]);
        im.apply((0..MAX_ANON as u64 + 10).map(|i| map(3, 2, 0x1000 * (i + 1), "//anon")));
        im.bind_exec(3, 0, 1);
        assert!(im.anonymous_code(3, 0, 0x1000 * MAX_ANON as u64));
        assert!(!im.anonymous_code(3, 0, 0x1000 * (MAX_ANON as u64 + 1)));
        assert_eq!(im.anon_dropped, 1);
    }

    #[test]
    fn images_are_bounded() {
        let mut im = Images::default();
        for pid in 0..(MAX_IMAGES as u32 + 100) {
            im.apply([Record::Exec { pid, ts: 1 }, map(pid, 2, 0x1000, "/bin/x")]);
            im.bind_exec(pid, 1, 3);
        }
        assert_eq!(im.images.len(), MAX_IMAGES);
        assert!(im.bound.len() <= MAX_IMAGES);
        assert!(im.by_pid.len() <= MAX_IMAGES);
        assert!(im.mapping(0, 1, 0x1000).is_none());
        assert!(im.mapping(MAX_IMAGES as u32 + 99, 1, 0x1000).is_some());
    }
}
