//! Unwind tables for the kernel-side stack walker: built from each mapped module's `.eh_frame`
//! ([`table`]), cached per build id, and loaded into the walker's maps ([`kernel`]) together
//! with each traced process's executable mappings.
//!
//! Why the walk runs in the kernel, not on copies of the stack in user space, is measured in
//! `docs/stacks.md`. The model never sees any of this: it receives stacks of addresses.

pub mod kernel;
pub mod python;
pub mod table;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use oomtrace_common::unwind::{
    ANON_MODULE, ExecMapping, FileKey, FileModule, MAX_PROC_MAPPINGS, NO_MODULE,
};

use crate::objfile::elf::ElfLayout;
use crate::objfile::{FileId, ObjFile, maps};

use self::kernel::{Full, KernelTables};

/// The top byte of the status word that ends a recorded user stack ([`UserStack::to_words`]):
/// never a user address.
const STATUS_TAG: u64 = 0xfe << 56;

/// An unwound user stack: the return addresses above the call site and how the walk ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserStack {
    /// Innermost first.
    pub frames: Vec<u64>,
    /// [`oomtrace_common::stack`] flags (no frame count).
    pub status: u64,
}

impl UserStack {
    /// Decodes a kernel `STACKS` value (header word, then frames).
    pub fn decode(words: &[u64]) -> Self {
        use oomtrace_common::stack::FRAMES_MASK;
        let Some((&header, rest)) = words.split_first() else {
            return Self::default();
        };
        let n = ((header & FRAMES_MASK) as usize).min(rest.len());
        Self {
            frames: rest[..n].to_vec(),
            status: header & !FRAMES_MASK,
        }
    }

    /// The frames as a recording stores them: the status, when there is one, as a tagged last
    /// word (an older reader sees a non-code address there, and stops before it).
    pub fn to_words(&self) -> Vec<u64> {
        let mut w = self.frames.clone();
        if self.status != 0 {
            w.push(STATUS_TAG | (self.status & ((1 << 56) - 1)));
        }
        w
    }

    /// The inverse of [`UserStack::to_words`].
    pub fn from_words(words: &[u64]) -> Self {
        match words.split_last() {
            Some((&last, rest)) if last >> 56 == STATUS_TAG >> 56 => Self {
                frames: rest.to_vec(),
                status: last & ((1 << 56) - 1),
            },
            _ => Self {
                frames: words.to_vec(),
                status: 0,
            },
        }
    }
}

/// Modules remembered by file identity; past this the memo starts over (tables stay loaded).
const MAX_FILES: usize = 16_384;

/// A module's tables as loaded: its index in the kernel maps (or none) and how its file offsets
/// become its own addresses.
#[derive(Clone, Debug)]
struct Loaded {
    module: u32,
    /// Loadable segments: (file offset, file size, virtual address, executable).
    loads: Vec<(u64, u64, u64, bool)>,
}

impl Loaded {
    /// How the kernel side finds this module from a mapping of its file it was not told about.
    fn file_module(&self) -> Option<FileModule> {
        let &(off, size, vaddr, _) = self.loads.iter().find(|l| l.3)?;
        Some(FileModule {
            module: self.module,
            _pad: 0,
            off_lo: off,
            off_hi: off + size,
            delta: vaddr.wrapping_sub(off),
        })
    }
}

/// What preparing unwind tables did and what did not fit, for the report and notices.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct UnwindStats {
    /// Modules whose rows are loaded.
    pub modules: u64,
    /// Rows loaded over all modules.
    pub rows: u64,
    /// Modules without `.eh_frame`/`.debug_frame`: frame pointers in them.
    pub modules_without_unwind_info: u64,
    /// Modules whose unwind info was partly unreadable (rows kept for the rest).
    pub modules_damaged: u64,
    /// Modules that could not be opened or read (gone, not ELF): frame pointers in them.
    pub modules_unreadable: u64,
    /// Modules left out because the kernel tables were full.
    pub modules_over_cap: u64,
    /// Files the kernel side cannot find by inode because its file map was full (their
    /// mappings unwind once published).
    pub files_over_cap: u64,
    /// Processes whose mappings did not fit the kernel tables.
    pub processes_over_cap: u64,
    /// Milliseconds spent building and loading tables.
    pub build_ms: f64,
    /// Bytes of the walker's maps in use.
    pub table_bytes: u64,
    /// Bytes the walker's maps reserve in the kernel.
    pub reserved_bytes: u64,
    /// Stacks the kernel side walked frame by frame.
    pub walks: u64,
    /// Stacks it took from a kept walk of the same thread and registers, after checking that
    /// every stack word that walk read is unchanged.
    pub walks_reused: u64,
}

/// Builds, caches and loads unwind tables for the traced processes.
pub struct Unwinder {
    kernel: KernelTables,
    /// By build id (or file identity without one): the same library in every process and
    /// container is built and loaded once.
    by_build_id: HashMap<Vec<u8>, Option<Loaded>>,
    by_file: HashMap<FileId, Option<Loaded>>,
    /// The maps text last published per process, to skip unchanged ones.
    published: HashMap<u32, u64>,
    /// Images already settled ([`Unwinder::settle`]), and the last one asked about.
    settled: std::collections::HashSet<(u32, u32)>,
    last_settled: Option<(u32, u32)>,
    /// What happened.
    pub stats: UnwindStats,
    notices: Vec<String>,
}

impl Unwinder {
    /// Takes over the walker's maps.
    pub fn new(kernel: KernelTables) -> Self {
        Self {
            kernel,
            by_build_id: HashMap::new(),
            by_file: HashMap::new(),
            published: HashMap::new(),
            settled: Default::default(),
            last_settled: None,
            stats: UnwindStats {
                reserved_bytes: KernelTables::capacity_bytes(),
                ..UnwindStats::default()
            },
            notices: Vec::new(),
        }
    }

    /// What happened so far, the kernel side's walk counts included.
    pub fn stats(&self) -> UnwindStats {
        let (walks, walks_reused) = self.kernel.walk_counts();
        UnwindStats {
            walks,
            walks_reused,
            ..self.stats
        }
    }

    /// Reads `pid`'s memory map and publishes its executable mappings to the walker, building
    /// the tables of modules not seen before. False when the process is gone.
    pub fn sync(&mut self, pid: u32) -> bool {
        let Ok(text) = maps::read(pid) else {
            return false;
        };
        if text.text.is_empty() {
            return false;
        }
        let hash = fnv(text.text.as_bytes());
        if self.published.get(&pid) == Some(&hash) {
            return true;
        }
        let started = Instant::now();
        let mut out: Vec<ExecMapping> = Vec::new();
        for l in text.lines().filter(|l| l.exec()) {
            let mut m = ExecMapping {
                start: l.start,
                end: l.end,
                bias: 0,
                // Memory that maps nothing (a JIT's code) is told apart from a file without
                // rows: the walker marks a chain that ends there as cut.
                module: if l.path.is_none() {
                    ANON_MODULE
                } else {
                    NO_MODULE
                },
                _pad: 0,
            };
            if let Some(path) = l.file()
                && let Some(loaded) = self.module(pid, &l, Path::new(path))
                && let Some(vaddr) = virt_offset(&loaded.loads, l.offset)
            {
                m.bias = l.start.wrapping_sub(vaddr);
                m.module = loaded.module;
            }
            out.push(m);
        }
        out.sort_by_key(|m| m.start);
        if out.len() > MAX_PROC_MAPPINGS as usize {
            self.stats.processes_over_cap += 1;
        }
        if self.kernel.set_process(pid, &out).is_err() {
            self.stats.processes_over_cap += 1;
        }
        if self.published.len() > MAX_FILES {
            self.published.clear();
        }
        self.published.insert(pid, hash);
        self.stats.build_ms += started.elapsed().as_secs_f64() * 1e3;
        self.stats.table_bytes = self.kernel.used_bytes;
        true
    }

    /// True the first time an image (pid, generation) is seen allocating: its maps are worth
    /// publishing again then.
    pub fn settle(&mut self, pid: u32, generation: u32) -> bool {
        if self.last_settled == Some((pid, generation)) {
            return false;
        }
        self.last_settled = Some((pid, generation));
        if self.settled.len() > MAX_FILES {
            self.settled.clear();
        }
        self.settled.insert((pid, generation))
    }

    /// `pid` exited or exec'd: its mappings are no longer what they were.
    pub fn forget(&mut self, pid: u32) {
        self.published.remove(&pid);
        self.kernel.forget_process(pid);
    }

    /// One line per module that unwinds with less than full tables, and per bound reached.
    pub fn notices(&self) -> Vec<String> {
        let mut out = self.notices.clone();
        let s = self.stats;
        if s.modules_over_cap + s.processes_over_cap > 0 {
            out.push(format!(
                "oomtrace: notice: unwind tables full: {} module(s) and {} process(es) unwind \
                 by frame pointers only",
                s.modules_over_cap, s.processes_over_cap
            ));
        }
        if s.files_over_cap > 0 {
            out.push(format!(
                "oomtrace: notice: unwind: {} file(s) did not fit the walker's file map: a \
                 library mapped after a process's maps were read unwinds by frame pointers \
                 until they are read again",
                s.files_over_cap
            ));
        }
        out
    }

    /// A handle another thread can wait on for a process's mappings to be published.
    pub fn watch(&self) -> anyhow::Result<kernel::PublishWatch> {
        self.kernel.watch()
    }

    /// Builds and loads the tables of the object at `path` (a program about to start, or a
    /// library it will map) before any process maps it, so that the kernel side finds them
    /// through the mapping's inode from the first call on. False when it cannot be read.
    pub fn prepare(&mut self, path: &Path) -> bool {
        let started = Instant::now();
        let Ok(file) = ObjFile::open_trusted(path) else {
            return false;
        };
        let id = file.id();
        if !self.by_file.contains_key(&id) {
            let loaded = match ElfLayout::read(file) {
                Ok(elf) => self.load(&elf, id, &path.display().to_string()),
                Err(_) => None,
            };
            self.remember(id, loaded);
        }
        self.stats.build_ms += started.elapsed().as_secs_f64() * 1e3;
        self.stats.table_bytes = self.kernel.used_bytes;
        true
    }

    /// The loaded tables of the module mapped by `l`, building them on first sight.
    fn module(&mut self, pid: u32, l: &maps::MapsLine<'_>, path: &Path) -> Option<Loaded> {
        if let Some(hit) = self.by_file.get(&l.id) {
            return hit.clone();
        }
        let shown = path.display().to_string();
        let loaded = match ObjFile::open_mapping(pid, l.start, l.end, l.id, path)
            .and_then(ElfLayout::read)
        {
            Ok(elf) => self.load(&elf, l.id, &shown),
            Err(e) => {
                self.stats.modules_unreadable += 1;
                self.note(format!(
                    "oomtrace: notice: unwind: cannot read {shown} ({e}): frames in it use \
                     frame pointers"
                ));
                None
            }
        };
        self.remember(l.id, loaded.clone());
        loaded
    }

    /// Remembers what file `id` loaded as, and tells the kernel side its inode.
    fn remember(&mut self, id: FileId, loaded: Option<Loaded>) {
        if let Some(m) = loaded.as_ref().and_then(Loaded::file_module) {
            let key = FileKey {
                dev: kernel_dev(id.dev),
                ino: id.ino,
            };
            if !self.kernel.add_file(key, m) {
                self.stats.files_over_cap += 1;
            }
        }
        if self.by_file.len() >= MAX_FILES {
            self.by_file.clear();
        }
        self.by_file.insert(id, loaded);
    }

    /// Builds (or finds by build id) and loads the rows of `elf`, the file `id`.
    fn load(&mut self, elf: &ElfLayout, id: FileId, shown: &str) -> Option<Loaded> {
        let e = elf.endian();
        let loads: Vec<(u64, u64, u64, bool)> = elf
            .segments()
            .iter()
            .filter(|p| p.p_type.get(e) == object::elf::PT_LOAD)
            .map(|p| {
                let exec = p.p_flags.get(e) & object::elf::PF_X != 0;
                (p.p_offset.get(e), p.p_filesz.get(e), p.p_vaddr.get(e), exec)
            })
            .collect();
        let key = elf.build_id().unwrap_or_else(|| {
            let mut k = b"file:".to_vec();
            k.extend_from_slice(format!("{:?}:{}", id, elf.file().size()).as_bytes());
            k
        });
        if let Some(hit) = self.by_build_id.get(&key) {
            return hit.clone().map(|h| Loaded { loads, ..h });
        }
        let loaded = match table::build(elf) {
            Ok(rows) => {
                if rows.stats.bad_entries > 0 {
                    self.stats.modules_damaged += 1;
                    self.note(format!(
                        "oomtrace: notice: unwind: {shown}: {} damaged unwind entr(ies) skipped; \
                         frames there use frame pointers",
                        rows.stats.bad_entries
                    ));
                }
                match self.kernel.add_module(&rows) {
                    Ok(module) => {
                        self.stats.modules += 1;
                        self.stats.rows += rows.rows.len() as u64;
                        Some(Loaded { module, loads })
                    }
                    Err(Full::Tables | Full::Mappings) => {
                        self.stats.modules_over_cap += 1;
                        None
                    }
                }
            }
            Err(table::BuildError::NoUnwindInfo) => {
                self.stats.modules_without_unwind_info += 1;
                self.note(format!(
                    "oomtrace: notice: unwind: {shown} has no .eh_frame: frames in it use \
                     frame pointers"
                ));
                None
            }
            Err(err) => {
                self.stats.modules_damaged += 1;
                self.note(format!(
                    "oomtrace: notice: unwind: {shown}: {err}: frames in it use frame pointers"
                ));
                None
            }
        };
        self.by_build_id.insert(key, loaded.clone());
        loaded
    }

    fn note(&mut self, line: String) {
        if self.notices.len() < 64 && !self.notices.contains(&line) {
            self.notices.push(line);
        }
    }
}

/// The kernel's encoding of a device number (`major << 20 | minor`), from the C library's.
fn kernel_dev(dev: u64) -> u64 {
    (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev))
}

/// The virtual address of file offset `offset` among loadable segments.
fn virt_offset(loads: &[(u64, u64, u64, bool)], offset: u64) -> Option<u64> {
    // Segments can share a page of the file: the one mapped at a page-aligned `offset` is the
    // one that starts in that page (lld lays out binaries so).
    let aligned = loads
        .iter()
        .find(|&&(start, _, _, _)| start & !0xfff == offset && start >= offset);
    if let Some(&(start, _, vaddr, _)) = aligned {
        return Some(vaddr - (start - offset));
    }
    loads.iter().find_map(|&(start, size, vaddr, _)| {
        let delta = offset.checked_sub(start)?;
        (delta < size.max(1)).then(|| vaddr + delta)
    })
}

/// FNV-1a of the maps text: unchanged maps are not published again.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomtrace_common::stack;

    /// lld puts the code segment in the read-only segment's last file page: the executable
    /// mapping at offset 0x1000 maps the code segment (vaddr 0x2e10 at offset 0x1e10), not
    /// the read-only one that also covers file offset 0x1000.
    #[test]
    fn mapping_offsets_pick_the_segment_that_starts_in_that_page() {
        let loads = [(0, 0x1e10, 0, false), (0x1e10, 0x5000, 0x2e10, true)];
        assert_eq!(virt_offset(&loads, 0x1000), Some(0x2000));
        assert_eq!(virt_offset(&loads, 0), Some(0));
    }

    #[test]
    fn user_stacks_round_trip_through_recorded_words() {
        let s = UserStack {
            frames: vec![0x1000, 0x2000],
            status: stack::TRUNCATED | stack::SIGNAL_FRAME,
        };
        assert_eq!(UserStack::from_words(&s.to_words()), s);
        let plain = UserStack {
            frames: vec![0x1000],
            status: 0,
        };
        assert_eq!(plain.to_words(), vec![0x1000]);
        assert_eq!(UserStack::from_words(&[0x1000]), plain);
        let mut w = [0u64; 4];
        w[0] = 2 | stack::COMPLETE;
        w[1] = 5;
        w[2] = 6;
        assert_eq!(
            UserStack::decode(&w),
            UserStack {
                frames: vec![5, 6],
                status: stack::COMPLETE
            }
        );
    }
}
