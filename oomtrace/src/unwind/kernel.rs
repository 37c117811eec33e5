//! The kernel-side walker's maps, written from user space.
//!
//! Module rows, page entries, module records and mapping lists live in array maps created
//! with `BPF_F_MMAPABLE`: they are written through a shared mapping (one `memcpy` per module,
//! not one syscall per row). A process's mapping list is published last, with one map update
//! of its `PROC_MAPS` entry, after everything it refers to is in place.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use aya::Ebpf;
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use oomtrace_common::unwind::{
    ExecMapping, FileKey, FileModule, MAX_MAPPINGS, MAX_MODULES, MAX_PAGES, MAX_PROC_MAPPINGS,
    MAX_ROWS, ModuleTable, ProcMaps,
};

use super::table::ModuleRows;

/// An array map's values, mapped into our memory.
struct Shared<T> {
    ptr: *mut T,
    len: usize,
    /// Keeps the map (and so the memory) alive.
    _map: MapData,
}

impl<T: Copy> Shared<T> {
    /// Maps array map `name` of `ebpf` (taken out of it: the walker's maps are ours alone).
    fn take(ebpf: &mut Ebpf, name: &str, len: u32) -> Result<Self> {
        let map = match ebpf.take_map(name) {
            Some(Map::Array(d)) => d,
            _ => return Err(anyhow!("the eBPF object has no array map {name}")),
        };
        let bytes = (std::mem::size_of::<T>() * len as usize).next_multiple_of(4096);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared read-write mapping of an mmapable array map's values; its size is
        // the map's (value size × entries, page-rounded), and `MapData` keeps the map alive.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot map {name}"));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len: len as usize,
            _map: map,
        })
    }

    /// Writes `values` from index `at`.
    fn write(&mut self, at: usize, values: &[T]) {
        assert!(at + values.len() <= self.len, "write past the map's end");
        // SAFETY: in bounds (checked above) of memory we mapped and only we write.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(at), values.len()) };
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let bytes = (std::mem::size_of::<T>() * self.len).next_multiple_of(4096);
        // SAFETY: unmapping exactly what `take` mapped.
        unsafe { libc::munmap(self.ptr.cast(), bytes) };
    }
}

// SAFETY: the mapping is plain memory owned by this value; nothing else in the process
// aliases it.
unsafe impl<T: Send> Send for Shared<T> {}

/// Says when a process's mappings are published: `run`'s hold waits for it at an exec, so
/// that the new image's first allocations unwind through its own tables.
pub struct PublishWatch {
    procs: HashMap<MapData, u32, ProcMaps>,
}

impl PublishWatch {
    /// Waits until process `pid` has published mappings, at most `limit`; whether it has.
    pub fn wait(&self, pid: u32, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.procs.get(&pid, 0).is_ok() {
                return true;
            }
            if started.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// How long a process's replaced run of mappings stays unused (a walk takes microseconds).
const QUARANTINE: Duration = Duration::from_millis(20);

/// Why a module or a process could not be given tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// No room for more modules, pages or rows.
    Tables,
    /// No room for more mappings, or more processes.
    Mappings,
}

/// The walker's maps and what of them is used.
pub struct KernelTables {
    modules: Shared<ModuleTable>,
    pages: Shared<u64>,
    rows: Shared<u64>,
    mappings: Shared<ExecMapping>,
    procs: HashMap<MapData, u32, ProcMaps>,
    /// Another handle on `procs`, for [`PublishWatch`]es.
    procs_fd: OwnedFd,
    files: HashMap<MapData, FileKey, FileModule>,
    next_module: u32,
    /// The next publication's generation (see [`ProcMaps::generation`]).
    next_generation: u64,
    next_page: u32,
    next_row: u32,
    /// Free runs of `mappings`: (start, length).
    free: Vec<(u32, u32)>,
    /// Runs given back, with when: free again only after [`QUARANTINE`], so that a walk that
    /// took a process's old run a moment before it was replaced never reads it rewritten.
    released: Vec<(Instant, u32, u32)>,
    /// Bytes of the maps in use.
    pub used_bytes: u64,
    /// Walks taken in full and walks reused, per CPU (`WALK_COUNTS`).
    walk_counts: Option<PerCpuArray<MapData, u64>>,
    /// Which publication is current (`WALK_EPOCH`): a kept walk is reused only within the
    /// publication it was taken in.
    epoch: Array<MapData, u64>,
    /// Publications so far.
    publications: u64,
}

impl KernelTables {
    /// Takes the walker's maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let (procs, procs_fd) = match ebpf.take_map("PROC_MAPS") {
            Some(m) => {
                let fd = match &m {
                    Map::HashMap(d) => d.fd().as_fd().try_clone_to_owned()?,
                    _ => return Err(anyhow!("PROC_MAPS is not a hash map")),
                };
                (HashMap::try_from(m)?, fd)
            }
            None => return Err(anyhow!("the eBPF object has no map PROC_MAPS")),
        };
        let files = match ebpf.take_map("MODULE_FILES") {
            Some(m) => HashMap::try_from(m)?,
            None => return Err(anyhow!("the eBPF object has no map MODULE_FILES")),
        };
        Ok(Self {
            modules: Shared::take(ebpf, "UNWIND_MODULES", MAX_MODULES)?,
            pages: Shared::take(ebpf, "UNWIND_PAGES", MAX_PAGES)?,
            rows: Shared::take(ebpf, "UNWIND_ROWS", MAX_ROWS)?,
            mappings: Shared::take(ebpf, "EXEC_MAPPINGS", MAX_MAPPINGS)?,
            procs,
            procs_fd,
            files,
            next_module: 0,
            next_generation: 1,
            next_page: 0,
            next_row: 0,
            free: vec![(0, MAX_MAPPINGS)],
            released: Vec::new(),
            used_bytes: 0,
            walk_counts: ebpf
                .take_map("WALK_COUNTS")
                .and_then(|m| PerCpuArray::try_from(m).ok()),
            epoch: match ebpf.take_map("WALK_EPOCH") {
                Some(m) => Array::try_from(m)?,
                None => return Err(anyhow!("the eBPF object has no map WALK_EPOCH")),
            },
            publications: 0,
        })
    }

    /// Walks the kernel side took in full, and walks it reused (see `walk_cache.rs`).
    pub fn walk_counts(&self) -> (u64, u64) {
        let Some(counts) = &self.walk_counts else {
            return (0, 0);
        };
        let sum = |i: u32| {
            counts
                .get(&i, 0)
                .map_or(0, |per_cpu| per_cpu.iter().sum::<u64>())
        };
        (sum(0), sum(1))
    }

    /// Bytes the tables take in the kernel (all preallocated): modules, pages, rows and
    /// mappings. The hash maps (processes, files) and the per-CPU walk state, cache and stack
    /// window come on top.
    pub fn capacity_bytes() -> u64 {
        let m = std::mem::size_of::<ModuleTable>() as u64 * u64::from(MAX_MODULES);
        let p = 8 * u64::from(MAX_PAGES) + 8 * u64::from(MAX_ROWS);
        let e = std::mem::size_of::<ExecMapping>() as u64 * u64::from(MAX_MAPPINGS);
        m + p + e
    }

    /// A handle another thread can wait on for a process's mappings to be published.
    pub fn watch(&self) -> Result<PublishWatch> {
        let data = MapData::from_fd(self.procs_fd.try_clone()?)?;
        Ok(PublishWatch {
            procs: HashMap::try_from(Map::HashMap(data))?,
        })
    }

    /// Registers the file `key` as module `m.module`, for pcs in mappings not published yet.
    /// False when the file map is full.
    pub fn add_file(&mut self, key: FileKey, m: FileModule) -> bool {
        self.files.insert(key, m, 0).is_ok()
    }

    /// Copies one module's rows in; returns its index.
    pub fn add_module(&mut self, m: &ModuleRows) -> Result<u32, Full> {
        let (rows, pages) = (m.rows.len() as u32, m.pages.len() as u32);
        if self.next_module >= MAX_MODULES
            || MAX_ROWS - self.next_row < rows
            || MAX_PAGES - self.next_page < pages
        {
            return Err(Full::Tables);
        }
        self.rows.write(self.next_row as usize, &m.rows);
        self.pages.write(self.next_page as usize, &m.pages);
        let index = self.next_module;
        self.modules.write(
            index as usize,
            &[ModuleTable {
                vaddr_lo: m.vaddr_lo,
                page_base: self.next_page,
                pages,
                row_base: self.next_row,
                rows,
            }],
        );
        self.next_module += 1;
        self.next_row += rows;
        self.next_page += pages;
        self.used_bytes += 8 * u64::from(rows + pages) + std::mem::size_of::<ModuleTable>() as u64;
        Ok(index)
    }

    /// Publishes process `pid`'s mappings (sorted by start, at most [`MAX_PROC_MAPPINGS`]),
    /// replacing what it had.
    pub fn set_process(&mut self, pid: u32, maps: &[ExecMapping]) -> Result<(), Full> {
        let n = maps.len().min(MAX_PROC_MAPPINGS as usize) as u32;
        self.reclaim();
        let Some(i) = self.free.iter().position(|&(_, len)| len >= n.max(1)) else {
            return Err(Full::Mappings);
        };
        let (base, len) = self.free[i];
        if len == n.max(1) {
            self.free.remove(i);
        } else {
            self.free[i] = (base + n.max(1), len - n.max(1));
        }
        self.mappings.write(base as usize, &maps[..n as usize]);
        let old = self.procs.get(&pid, 0).ok();
        let generation = self.next_generation;
        self.next_generation += 1;
        if self
            .procs
            .insert(
                pid,
                ProcMaps {
                    base,
                    count: n,
                    generation,
                },
                0,
            )
            .is_err()
        {
            self.release(base, n.max(1));
            return Err(Full::Mappings);
        }
        if let Some(old) = old {
            self.release(old.base, old.count.max(1));
        }
        // After the new tables are in place: a walk that sees the new epoch sees them too.
        self.publications += 1;
        // An index-0 store into an array map: nothing here can make it fail.
        let _ = self.epoch.set(0, self.publications, 0);
        Ok(())
    }

    /// Drops process `pid`'s mappings (it exited or exec'd).
    pub fn forget_process(&mut self, pid: u32) {
        if let Ok(old) = self.procs.get(&pid, 0) {
            let _ = self.procs.remove(&pid);
            self.release(old.base, old.count.max(1));
        }
    }

    fn release(&mut self, base: u32, len: u32) {
        self.released.push((Instant::now(), base, len));
    }

    /// Frees the released runs whose quarantine is over.
    fn reclaim(&mut self) {
        let now = Instant::now();
        let before = self.free.len();
        self.released.retain(|&(at, base, len)| {
            let over = now.duration_since(at) >= QUARANTINE;
            if over {
                self.free.push((base, len));
            }
            !over
        });
        if self.free.len() > 64 && self.free.len() != before {
            // Coalesce neighbours now and then so long runs come back.
            self.free.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
            for &(b, l) in &self.free {
                match merged.last_mut() {
                    Some((pb, pl)) if *pb + *pl == b => *pl += l,
                    _ => merged.push((b, l)),
                }
            }
            self.free = merged;
        }
    }
}
