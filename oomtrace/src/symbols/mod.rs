//! Addresses to functions, files and lines.
//!
//! A process's memory map is read while it lives (at its exec and its first allocation of each
//! image) and kept, so a process that has exited still symbolizes: addresses become (object,
//! offset) pairs and blazesym reads the ELF/DWARF of the object. A process may also finish
//! before its maps can be read; the kernel's own mapping records ([`perf`]) cover it then.
//!
//! The object is the mapped file itself, held open from the moment the maps are read
//! ([`objects`]), never a path looked up again on the host: a deleted library, a library inside
//! a container, or one whose path was since swapped for a symlink symbolizes from what was
//! mapped, and oomtrace opens nothing else (see [`crate::objfile`]).

pub mod debug_dirs;
mod debug_names;
mod images;
mod objects;
pub mod perf;
pub mod python;
mod recorded;
pub mod wrappers;

pub use recorded::RecordedSymbols;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as Blaze, evict::Elf as EvictElf, source::Elf, source::Source,
};

use crate::objfile::{FileId, maps};

/// Images whose maps are kept; past this the oldest are dropped.
const MAX_IMAGES: usize = 16_384;
/// Executable mappings kept per image snapshot.
const MAX_MAPPINGS: usize = 4096;
/// Anonymous executable ranges (JIT code) kept per image snapshot.
const MAX_ANON_RANGES: usize = 1024;
/// Executable mappings kept over all snapshots; past this the oldest images are dropped.
const MAX_TOTAL_MAPPINGS: usize = 1 << 18;
/// Symbolized frames cached; past this the cache starts over.
const MAX_FRAMES: usize = 1 << 18;

/// New mappings kept between two [`Symbolizer::take_new_mappings`] calls.
pub const MAX_NEW_MAPPINGS: usize = 4096;

/// An executable file mapping a process made (from the kernel's records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMapping {
    /// The process.
    pub pid: u32,
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// The file's identity.
    pub id: crate::objfile::FileId,
    /// Its path as the process names it.
    pub path: PathBuf,
}

/// Where frames get their names (the live symbolizer, or a recording's symbol table).
pub trait SymbolSource {
    /// Whether `addr` is code of that process image (a deeper walk frame that is not is garbage).
    fn is_code(&self, pid: u32, generation: u32, addr: u64) -> bool;
    /// The symbolized frame of a return address.
    fn frame(&mut self, pid: u32, generation: u32, addr: u64) -> Frame;
    /// Whether `addr` lies in executable memory backed by no file (a JIT's code).
    fn is_anonymous_code(&self, _pid: u32, _generation: u32, _addr: u64) -> bool {
        false
    }
}

/// One symbolized address.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Frame {
    /// The raw address, as seen in the process.
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    /// Function name (demangled), if known.
    pub function: Option<String>,
    /// File name of the object it lives in.
    pub module: Option<String>,
    /// Source file, where debug info exists.
    pub file: Option<String>,
    /// Source line, where debug info exists.
    pub line: Option<u32>,
    /// The module's GNU build id (hex), so its name can be found later (`report --debug-dir`).
    /// Recordings carry it, so live and replayed reports show the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The address in the module's own address space (as in its symbol table; for an unnamed
    /// frame, `module+0xoffset`).
    #[serde(serialize_with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn hex_opt<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => hex(v, s),
        None => s.serialize_none(),
    }
}

/// One image's mappings as read from `/proc/PID/maps` while it lived.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    /// Its executable file mappings.
    files: Vec<Mapping>,
    /// Its executable memory backed by no file (a JIT's code): (start, end).
    anon: Vec<(u64, u64)>,
    /// Whether ranges of that memory were left out past [`MAX_ANON_RANGES`].
    anon_dropped: bool,
}

impl Snapshot {
    /// Mappings held, both kinds.
    fn len(&self) -> usize {
        self.files.len() + self.anon.len()
    }
}

#[derive(Clone, Debug)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    exec: bool,
    /// The mapped file's (device, inode), as the kernel reported it.
    id: FileId,
    /// Its path as the process names it (for the module name, and to find it once it is gone).
    path: Arc<PathBuf>,
}

/// Memory-map snapshots per (pid, image generation) and a symbol cache.
pub struct Symbolizer {
    maps: HashMap<(u32, u32), Snapshot>,
    order: std::collections::VecDeque<(u32, u32)>,
    /// Mappings in `maps`, all images together.
    total_mappings: usize,
    blaze: Blaze,
    cache: HashMap<(FileId, u64), Frame>,
    /// The mapped objects, held open.
    objects: objects::Objects,
    /// Blazesym paths (`/proc/self/fd/N`) of objects just closed, to evict from its cache.
    closed: Vec<PathBuf>,
    /// Processes whose `/proc/PID/maps` passed its bound.
    maps_truncated: u64,
    /// Map reads whose anonymous executable ranges passed [`MAX_ANON_RANGES`].
    anon_truncated: u64,
    /// The last range `covers` matched: most events come from the same module.
    last_hit: Option<(u32, u32, u64, u64)>,
    /// Processes whose maps could not be read (gone): not retried.
    gone: std::collections::HashSet<u32>,
    /// Images whose maps were read at or after their first allocator call.
    settled: std::collections::HashSet<(u32, u32)>,
    /// The image `settle` saw last: nearly every call repeats it, and this spares the set's
    /// hash lookup on each allocation.
    last_settled: Option<(u32, u32)>,
    /// The kernel's mapping records, when they could be opened.
    kernel_maps: Option<perf::MapRecords>,
    /// What those records say, per image.
    images: images::Images,
    /// Mappings reported since the last [`Symbolizer::take_new_mappings`].
    new_maps: Vec<NewMapping>,
    /// Python frames spliced into stacks, by token.
    pub python: python::PyFrames,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// An empty symbolizer.
    pub fn new() -> Self {
        Self {
            maps: HashMap::new(),
            order: Default::default(),
            total_mappings: 0,
            blaze: Blaze::new(),
            cache: HashMap::new(),
            objects: Default::default(),
            closed: Vec::new(),
            maps_truncated: 0,
            anon_truncated: 0,
            last_hit: None,
            gone: Default::default(),
            settled: Default::default(),
            last_settled: None,
            kernel_maps: None,
            images: Default::default(),
            new_maps: Vec::new(),
            python: Default::default(),
        }
    }

    /// A symbolizer that also reads the kernel's mapping records, so processes that exit within
    /// a millisecond still symbolize. Where they cannot be opened, it says why (the caller shows
    /// it) and works from `/proc` alone.
    pub fn with_kernel_maps() -> (Self, Option<String>) {
        let mut s = Self::new();
        match perf::MapRecords::open() {
            Ok(r) => {
                s.kernel_maps = Some(r);
                (s, None)
            }
            Err(e) => (
                s,
                Some(format!(
                    "oomtrace: notice: the kernel's mapping records are unavailable ({e:#}): \
                     processes that exit within milliseconds may lose their symbols"
                )),
            ),
        }
    }

    /// Takes in the mapping records the kernel wrote since the last call.
    pub fn poll(&mut self) {
        if let Some(k) = &mut self.kernel_maps {
            let mut records = Vec::new();
            k.read(&mut records);
            for r in &records {
                if let perf::Record::Map {
                    pid,
                    addr,
                    len,
                    id,
                    path,
                    ..
                } = r
                    && self.new_maps.len() < MAX_NEW_MAPPINGS
                    && path.starts_with('/')
                    // A JIT's code (`//anon`) maps no file to probe.
                    && !path.starts_with("//")
                {
                    self.new_maps.push(NewMapping {
                        pid: *pid,
                        start: *addr,
                        end: addr.saturating_add(*len),
                        id: *id,
                        path: PathBuf::from(path),
                    });
                }
            }
            self.images.apply(records);
        }
    }

    /// Executable file mappings the kernel reported since the last call, any process's (at
    /// most [`MAX_NEW_MAPPINGS`] between calls): where a traced process maps an allocator
    /// library after it started (`dlopen`), the session probes it.
    pub fn take_new_mappings(&mut self) -> Vec<NewMapping> {
        std::mem::take(&mut self.new_maps)
    }

    /// The program image (pid, generation) runs, as the kernel recorded its exec: known even
    /// when the process is already gone.
    pub fn program(&self, pid: u32, generation: u32) -> Option<PathBuf> {
        self.images.program(pid, generation).map(PathBuf::from)
    }

    /// Mapping records the kernel had to drop (a full ring).
    pub fn lost_map_records(&self) -> u64 {
        self.images.lost
    }

    /// What the symbolizer's bounds left out, one notice each (none when nothing was).
    pub fn notices(&self) -> Vec<String> {
        let c = self.objects.counts;
        let mut out = Vec::new();
        if c.refused > 0 {
            out.push(format!(
                "oomtrace: notice: {} mapped object(s) were not read (not a regular ELF file, \
                 changed, too large, or not the file mapped; {}=1 names each): their frames \
                 show as addresses",
                c.refused,
                crate::objfile::VERBOSE_ENV
            ));
        }
        if c.evicted > 0 {
            out.push(format!(
                "oomtrace: notice: {} object file(s) were closed to stay under the cap on open \
                 objects: frames in them may show as addresses",
                c.evicted
            ));
        }
        let anon_dropped = self.anon_truncated + self.images.anon_dropped;
        if anon_dropped > 0 {
            out.push(format!(
                "oomtrace: notice: {anon_dropped} process image(s) mapped more than \
                 {MAX_ANON_RANGES} ranges of anonymous executable memory (JIT code): stacks \
                 through the ranges not kept may be cut there"
            ));
        }
        if self.maps_truncated > 0 {
            out.push(format!(
                "oomtrace: notice: the maps of {} process(es) passed {} MiB and were read only \
                 that far",
                self.maps_truncated,
                maps::MAX_MAPS_BYTES >> 20
            ));
        }
        out
    }

    /// `pid` exec'd at `ts`, starting image `generation`: its maps now, while it most likely
    /// still runs, and the kernel's records of the exec in case it does not.
    pub fn exec(&mut self, pid: u32, generation: u32, ts: u64) {
        self.poll();
        self.images.bind_exec(pid, generation, ts);
        self.gone.remove(&pid);
        self.read_maps(pid, generation);
    }

    /// At an image's first allocator call its libraries are mapped (malloc lives in one): read
    /// its maps again, once, so frames in them symbolize (an early read, at the loader's first
    /// mmap, may predate them).
    pub fn settle(&mut self, pid: u32, generation: u32) {
        if self.last_settled == Some((pid, generation)) {
            return;
        }
        self.last_settled = Some((pid, generation));
        if self.gone.contains(&pid) || !self.settled.insert((pid, generation)) {
            return;
        }
        if self.settled.len() > MAX_IMAGES {
            self.settled.clear();
        }
        if !self.read_maps(pid, generation) && !self.has_maps(pid, generation) {
            self.mark_gone(pid);
        }
    }

    /// Makes sure `addr` of that image can be symbolized later: re-reads the process's maps
    /// when it is not covered yet (first event of an image, a library loaded since).
    pub fn observe(&mut self, pid: u32, generation: u32, addr: u64) {
        if addr == 0 {
            return;
        }
        // The last range first: it is the common case, and a pid in it is not gone.
        if let Some((p, g, start, end)) = self.last_hit
            && p == pid
            && g == generation
            && addr >= start
            && addr < end
        {
            return;
        }
        if let Some(m) = self.mapping(pid, generation, addr) {
            let (range, settled) = ((m.start, m.end), self.objects.settled(m.id));
            // Known from the kernel's record only: open its object while the process maps it
            // (a library deleted from disk has no other way back).
            if !settled {
                let m = m.clone();
                self.objects.open_live(&place(pid, &m), &mut self.closed);
                self.evict_closed();
            }
            self.last_hit = Some((pid, generation, range.0, range.1));
            return;
        }
        // A library mapped since: the kernel's record of it is cheaper than reading /proc. Its
        // object is opened now, while the process most likely still maps it.
        self.poll();
        if let Some(m) = self.images.mapping(pid, generation, addr).cloned() {
            if !self.objects.settled(m.id) {
                self.objects.open_live(&place(pid, &m), &mut self.closed);
                self.evict_closed();
            }
            return;
        }
        if self.gone.contains(&pid) {
            return;
        }
        if !self.read_maps(pid, generation) {
            self.mark_gone(pid);
        }
    }

    fn mark_gone(&mut self, pid: u32) {
        if self.gone.len() >= MAX_IMAGES {
            self.gone.clear();
        }
        self.gone.insert(pid);
    }

    /// A forked child starts with its parent's layout.
    pub fn inherit(&mut self, parent: u32, parent_generation: u32, child: u32, ts: u64) {
        if let Some(maps) = self.maps.get(&(parent, parent_generation)).cloned() {
            self.insert(child, 0, maps);
        }
        self.poll();
        self.images.bind_fork(parent, parent_generation, child, ts);
        self.gone.remove(&child);
    }

    fn insert(&mut self, pid: u32, generation: u32, maps: Snapshot) {
        self.total_mappings += maps.len();
        match self.maps.insert((pid, generation), maps) {
            Some(old) => self.total_mappings -= old.len(),
            None => self.order.push_back((pid, generation)),
        }
        while self.order.len() > MAX_IMAGES || self.total_mappings > MAX_TOTAL_MAPPINGS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(maps) = self.maps.remove(&old) {
                self.total_mappings -= maps.len();
            }
        }
        self.last_hit = None;
    }

    /// Reads `/proc/PID/maps` for image `generation` and opens the executable objects it maps
    /// that are not held yet; false if the process is gone.
    pub fn read_maps(&mut self, pid: u32, generation: u32) -> bool {
        let Ok(text) = maps::read(pid) else {
            return false;
        };
        if text.text.is_empty() {
            return false;
        }
        if text.truncated {
            self.maps_truncated += 1;
        }
        let maps = parse_maps(&text);
        if maps.anon_dropped {
            self.anon_truncated += 1;
        }
        for m in &maps.files {
            if !self.objects.settled(m.id) {
                self.objects.open_live(&place(pid, m), &mut self.closed);
            }
        }
        self.evict_closed();
        self.insert(pid, generation, maps);
        true
    }

    /// Drops what blazesym cached for objects just closed: their `/proc/self/fd/N` paths will
    /// name other files.
    fn evict_closed(&mut self) {
        for path in self.closed.drain(..) {
            let _ = self.blaze.evict(&EvictElf::new(path).into());
        }
    }

    /// Whether a map snapshot of that image exists.
    pub fn has_maps(&self, pid: u32, generation: u32) -> bool {
        self.maps.contains_key(&(pid, generation))
    }

    /// Whether `addr` lies in an executable file mapping of that image.
    pub fn is_code(&self, pid: u32, generation: u32, addr: u64) -> bool {
        if self.python.get(addr).is_some() {
            return true;
        }
        self.mapping(pid, generation, addr).is_some_and(|m| m.exec)
    }

    /// The /proc snapshot's mapping of `addr`, else the kernel's record of one.
    fn mapping(&self, pid: u32, generation: u32, addr: u64) -> Option<&Mapping> {
        self.maps
            .get(&(pid, generation))
            .and_then(|maps| maps.files.iter().find(|m| addr >= m.start && addr < m.end))
            .or_else(|| self.images.mapping(pid, generation, addr))
    }

    /// Symbolizes a return address (looked up at `addr - 1`, the call instruction).
    pub fn symbolize(&mut self, pid: u32, generation: u32, addr: u64) -> Frame {
        if let Some(f) = self.python.get(addr) {
            return f.clone();
        }
        let mut frame = Frame {
            addr,
            ..Frame::default()
        };
        let Some(m) = self.mapping(pid, generation, addr).cloned() else {
            return frame;
        };
        frame.module = m.path.file_name().map(|n| n.to_string_lossy().into_owned());
        let file_offset = addr.saturating_sub(1) - m.start + m.offset;
        let key = (m.id, file_offset);
        if let Some(hit) = self.cache.get(&key) {
            return Frame {
                addr,
                module: frame.module,
                offset: hit.offset.map(|o| o + 1),
                ..hit.clone()
            };
        }
        if !self.objects.settled(m.id) {
            // Not opened while the process lived (the kernel's record of a short-lived one, or
            // closed under the cap): now, through the mapping or, the process gone, checked.
            self.objects.open_late(&place(pid, &m), &mut self.closed);
        }
        // The host's debug file first (by virtual address), then the object itself.
        let mut lookups = Vec::with_capacity(2);
        if let Some(h) = self.objects.get(m.id, &mut self.closed) {
            frame.build_id = h.build_id.clone();
            frame.offset = h.virt_offset(file_offset).map(|o| o + 1);
            if let (Some((debug, _)), Some(vaddr)) = (&h.debug_file, h.virt_offset(file_offset)) {
                lookups.push((debug.clone(), true, Input::VirtOffset(vaddr)));
            }
            lookups.push((h.path.clone(), h.debug_syms, Input::FileOffset(file_offset)));
        }
        self.evict_closed();
        for (path, debug_syms, input) in lookups {
            if name_from(&self.blaze, path, debug_syms, input, &mut frame) {
                break;
            }
        }
        if self.cache.len() >= MAX_FRAMES {
            self.cache.clear();
        }
        let mut cached = frame.clone();
        cached.offset = cached.offset.map(|o| o - 1);
        self.cache.insert(key, cached);
        frame
    }

    /// Whether `addr` lies in executable memory that maps no file (a JIT's code): by the
    /// image's maps as read while it lived, else the kernel's records of its mappings, else
    /// (neither knows it: mapped since, without kernel records) the process's maps now.
    pub fn is_anonymous_code(&self, pid: u32, generation: u32, addr: u64) -> bool {
        let in_range = |&(start, end): &(u64, u64)| addr >= start && addr < end;
        if self
            .maps
            .get(&(pid, generation))
            .is_some_and(|s| s.anon.iter().any(in_range))
            || self.images.anonymous_code(pid, generation, addr)
        {
            return true;
        }
        if self.gone.contains(&pid) {
            return false;
        }
        let Ok(text) = maps::read(pid) else {
            return false;
        };
        text.lines()
            .any(|l| l.exec() && l.file().is_none() && addr >= l.start && addr < l.end)
    }
}

/// Names `frame` from the ELF file at `path` at `input`: its function, and its file and line
/// where the file's debug info (read only if `debug_syms`) has them. False, and `frame`
/// untouched, where the file has no symbol there.
fn name_from(
    blaze: &Blaze,
    path: PathBuf,
    debug_syms: bool,
    input: Input<u64>,
    frame: &mut Frame,
) -> bool {
    let mut elf = Elf::new(path);
    elf.debug_syms = debug_syms;
    let Ok(Symbolized::Sym(sym)) = blaze.symbolize_single(&Source::Elf(elf), input) else {
        return false;
    };
    frame.function = Some(sym.name.to_string());
    if let Some(ci) = sym.code_info.as_deref() {
        frame.file = Some(match &ci.dir {
            Some(dir) => dir.join(&ci.file).to_string_lossy().into_owned(),
            None => ci.file.to_string_lossy().into_owned(),
        });
        frame.line = ci.line;
    }
    true
}

/// Where mapping `m` of `pid` lies, for opening its object.
fn place(pid: u32, m: &Mapping) -> objects::Place<'_> {
    objects::Place {
        pid,
        start: m.start,
        end: m.end,
        path: m.path.as_path(),
        id: m.id,
    }
}

impl SymbolSource for Symbolizer {
    fn is_code(&self, pid: u32, generation: u32, addr: u64) -> bool {
        Symbolizer::is_code(self, pid, generation, addr)
    }

    fn frame(&mut self, pid: u32, generation: u32, addr: u64) -> Frame {
        self.symbolize(pid, generation, addr)
    }

    fn is_anonymous_code(&self, pid: u32, generation: u32, addr: u64) -> bool {
        Symbolizer::is_anonymous_code(self, pid, generation, addr)
    }
}

/// The executable mappings of `/proc/PID/maps` text: files (at most [`MAX_MAPPINGS`]), where
/// return addresses are named, and anonymous memory (at most [`MAX_ANON_RANGES`]), where a
/// JIT's frames lie.
fn parse_maps(text: &maps::MapsText) -> Snapshot {
    let mut paths: HashMap<&str, Arc<PathBuf>> = HashMap::new();
    let mut snap = Snapshot::default();
    for l in text.lines().filter(|l| l.exec()) {
        let Some(path) = l.file() else {
            if snap.anon.len() < MAX_ANON_RANGES {
                snap.anon.push((l.start, l.end));
            } else {
                snap.anon_dropped = true;
            }
            continue;
        };
        if snap.files.len() >= MAX_MAPPINGS {
            continue;
        }
        let path = paths
            .entry(path)
            .or_insert_with(|| Arc::new(PathBuf::from(path)))
            .clone();
        snap.files.push(Mapping {
            start: l.start,
            end: l.end,
            offset: l.offset,
            exec: true,
            id: l.id,
            path,
        });
    }
    snap
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[inline(never)]
    fn marker() -> u64 {
        // A return address inside this test function.
        let f: fn() -> u64 = marker_target;
        std::hint::black_box(f)()
    }

    #[inline(never)]
    fn marker_target() -> u64 {
        marker_target as *const () as u64
    }

    #[test]
    fn symbolizes_our_own_function() {
        let addr = marker() + 1;
        let mut s = Symbolizer::new();
        assert!(s.read_maps(std::process::id(), 0));
        let frame = s.symbolize(std::process::id(), 0, addr);
        assert!(
            frame
                .function
                .as_deref()
                .unwrap_or("")
                .contains("marker_target"),
            "{frame:?}"
        );
        assert!(s.is_code(std::process::id(), 0, addr));
    }

    #[test]
    fn maps_parse_keeps_executable_files_and_anonymous_code_apart() {
        let text = maps::MapsText {
            text: "55d0-55e0 r-xp 00001000 08:01 42 /usr/bin/x\n\
                   55e0-55f0 rw-p 00002000 08:01 42 /usr/bin/x\n\
                   7f00-7f10 rw-s 00000000 00:01 3074 /dev/zero (deleted)\n\
                   7f10-7f20 r-xp 00000000 08:01 43 /tmp/lib.so (deleted)\n\
                   7f20-7f30 rw-p 00000000 00:00 0 \n\
                   7f30-7f40 rwxp 00000000 00:00 0 \n"
                .into(),
            truncated: false,
        };
        let snap = parse_maps(&text);
        assert_eq!(snap.anon, [(0x7f30, 0x7f40)], "JIT code is kept apart");
        assert!(!snap.anon_dropped);
        let maps = snap.files;
        assert_eq!(maps.len(), 2);
        assert_eq!(
            (maps[0].start, maps[0].offset, maps[0].exec, maps[0].id),
            (0x55d0, 0x1000, true, FileId::from_parts(8, 1, 42))
        );
        assert_eq!(maps[1].path.as_path(), Path::new("/tmp/lib.so"));
    }

    /// Anonymous executable memory seen in the maps stays code once it is unmapped: a JIT's
    /// frames are walked after its process is gone.
    #[test]
    fn anonymous_code_is_answered_from_the_snapshot() {
        let len = 4096;
        // SAFETY: a fresh private anonymous mapping, ours alone, unmapped below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let addr = at as u64 + 16;
        let pid = std::process::id();
        let mut s = Symbolizer::new();
        assert!(s.read_maps(pid, 0));
        // SAFETY: the mapping made above, used by nothing.
        unsafe { libc::munmap(at, len) };
        s.mark_gone(pid);
        assert!(s.is_anonymous_code(pid, 0, addr), "kept from the snapshot");
        assert!(!s.is_code(pid, 0, addr), "no file to name it by");
        assert!(!s.is_anonymous_code(pid, 1, addr), "another image's maps");
        let heap = Box::new(0u64);
        assert!(!s.is_anonymous_code(pid, 0, &*heap as *const u64 as u64));
    }

    /// Reading the maps opens the executable objects: blazesym reads them by descriptor.
    #[test]
    fn our_executable_is_held_open_from_its_maps() {
        let addr = marker() + 1;
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut s = Symbolizer::new();
        assert!(s.read_maps(std::process::id(), 0));
        let m = s.mapping(std::process::id(), 0, addr).cloned().unwrap();
        assert_eq!(m.path.as_path(), exe);
        assert!(s.objects.settled(m.id), "our executable is held");
        let held = s.objects.get(m.id, &mut Vec::new()).unwrap().path.clone();
        assert!(held.starts_with("/proc/self/fd"), "{}", held.display());
    }
}
