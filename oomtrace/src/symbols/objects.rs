//! The object files behind the mappings being symbolized, held open by (device, inode) from the
//! moment their processes' maps are read, so blazesym reads the mapped object itself through
//! `/proc/self/fd/N`: deleted files, files in another mount namespace and the objects of
//! processes gone since all symbolize, and no path is ever resolved on the host's side for them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::objfile::elf::ElfLayout;
use crate::objfile::{FileId, ObjFile, Refused, note_refusal};

/// Refused objects remembered (not retried); past this the set starts over.
const MAX_REFUSED: usize = 16_384;
/// Failed (pid, object) attempts remembered; past this the set starts over.
const MAX_MISSED: usize = 16_384;
/// Symbol tables (`.symtab` + `.dynsym`) past this size are not handed to blazesym, which would
/// index them whole.
const MAX_SYMBOL_TABLES: u64 = 256 << 20;
/// Sections through which blazesym would look for other files by a name the object chooses
/// (resolved against the host's directories, and an absolute name taken as is): an object with
/// one of them is read for its own symbols only, and its debug file is found here, by build id,
/// in the host's [`DEBUG_DIR`] alone.
const LINK_SECTIONS: [&[u8]; 3] = [b".gnu_debuglink", b".gnu_debugaltlink", b".debug_sup"];
/// Where the host's debug files are, by build id (Debian's `-dbg`/`-dbgsym` packages).
pub const DEBUG_DIR: &str = "/usr/lib/debug/.build-id";

/// One held object.
#[derive(Debug)]
pub struct Held {
    /// The open file (its descriptor is what `path` names).
    pub file: ObjFile,
    /// `/proc/self/fd/N`.
    pub path: PathBuf,
    /// Whether blazesym may read DWARF for it (no link to other files).
    pub debug_syms: bool,
    /// The host's debug file for it, by build id, where it links to one: (`/proc/self/fd/N`,
    /// the open file).
    pub debug_file: Option<(PathBuf, ObjFile)>,
    /// Its loadable segments: (file offset, file size, virtual address), for the debug file,
    /// which is looked up by virtual address.
    loads: Vec<(u64, u64, u64)>,
    /// Its GNU build id, hex.
    pub build_id: Option<String>,
    last_use: u64,
}

impl Held {
    /// The `/proc/self/fd` paths that stop naming these files once they close.
    fn closing_paths(self) -> impl Iterator<Item = PathBuf> {
        std::iter::once(self.path).chain(self.debug_file.map(|(p, _)| p))
    }

    /// The virtual address of file offset `offset`.
    pub fn virt_offset(&self, offset: u64) -> Option<u64> {
        self.loads.iter().find_map(|&(start, size, vaddr)| {
            let delta = offset.checked_sub(start)?;
            (delta < size).then(|| vaddr + delta)
        })
    }
}

/// What could not be kept, for the end-of-run notice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Objects refused (not regular, not ELF, changed, too large, or not the mapped file).
    pub refused: u64,
    /// Objects closed to stay under the cap.
    pub evicted: u64,
    /// Objects that link to debug files (read from the host's build-id directory only).
    pub linked: u64,
}

/// Held objects by identity, least recently used closed past a cap on descriptors.
#[derive(Debug)]
pub struct Objects {
    held: HashMap<FileId, Held>,
    refused: HashSet<FileId>,
    missed: HashSet<(u32, FileId)>,
    cap: usize,
    clock: u64,
    /// What did not fit.
    pub counts: ObjectCounts,
}

impl Default for Objects {
    fn default() -> Self {
        Self::with_cap(default_cap())
    }
}

/// An eighth of the soft descriptor limit, between 32 and 4096: a held object may take four (its
/// own, its debug file's, and blazesym's copy of each), and the probes hold theirs.
fn default_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit fills the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur / 8).clamp(32, 4096) as usize
}

/// Where an object was found, for messages.
pub struct Place<'a> {
    /// The process that maps it.
    pub pid: u32,
    /// Its mapped range.
    pub start: u64,
    /// End of that range.
    pub end: u64,
    /// The path as the process names it.
    pub path: &'a Path,
    /// Its identity.
    pub id: FileId,
}

impl Objects {
    /// An empty table holding at most `cap` objects.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            held: HashMap::new(),
            refused: HashSet::new(),
            missed: HashSet::new(),
            cap: cap.max(1),
            clock: 0,
            counts: ObjectCounts::default(),
        }
    }

    /// How many objects are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether `id` is held or was refused for good: nothing more to try.
    pub fn settled(&self, id: FileId) -> bool {
        self.held.contains_key(&id) || self.refused.contains(&id)
    }

    /// The held object `id`, marked used; one found changed is dropped (its blazesym path is
    /// pushed to `closed`).
    pub fn get(&mut self, id: FileId, closed: &mut Vec<PathBuf>) -> Option<&Held> {
        self.clock += 1;
        let clock = self.clock;
        let h = self.held.get_mut(&id)?;
        if !h.file.unchanged() {
            note_refusal(&format!("{} ({id})", h.path.display()), &Refused::Changed);
            if let Some(h) = self.held.remove(&id) {
                closed.extend(h.closing_paths());
            }
            self.refuse(id);
            return None;
        }
        h.last_use = clock;
        self.held.get(&id)
    }

    /// Opens the object at `place` through the live mapping (the process is there now): what
    /// reading a process's maps does for every executable object it maps.
    pub fn open_live(&mut self, place: &Place<'_>, closed: &mut Vec<PathBuf>) {
        if self.settled(place.id) {
            return;
        }
        let r = ObjFile::open_mapping(place.pid, place.start, place.end, place.id, place.path);
        self.keep(place, r, closed);
    }

    /// Opens the object at `place` when a frame needs it and it was not held: through the
    /// mapping if the process is still there, else (gone) by its path from the host's root,
    /// checked against its identity. Each (process, object) is tried once.
    pub fn open_late(&mut self, place: &Place<'_>, closed: &mut Vec<PathBuf>) {
        if self.settled(place.id) || self.missed.contains(&(place.pid, place.id)) {
            return;
        }
        let r = match ObjFile::open_mapping(place.pid, place.start, place.end, place.id, place.path)
        {
            Err(Refused::Gone) => ObjFile::open_on_host(place.path, place.id),
            r => r,
        };
        if r.is_err() {
            if self.missed.len() >= MAX_MISSED {
                self.missed.clear();
            }
            self.missed.insert((place.pid, place.id));
        }
        self.keep(place, r, closed);
    }

    fn refuse(&mut self, id: FileId) {
        if self.refused.len() >= MAX_REFUSED {
            self.refused.clear();
        }
        if self.refused.insert(id) {
            self.counts.refused += 1;
        }
    }

    fn keep(
        &mut self,
        place: &Place<'_>,
        opened: Result<ObjFile, Refused>,
        closed: &mut Vec<PathBuf>,
    ) {
        let what = || format!("{} (mapped by pid {})", place.path.display(), place.pid);
        let held = opened.and_then(|file| {
            let layout = ElfLayout::read(file)?;
            let tables = symbol_tables_size(&layout);
            if tables > MAX_SYMBOL_TABLES {
                return Err(Refused::TooLarge {
                    what: "symbol tables",
                    size: tables,
                    limit: MAX_SYMBOL_TABLES,
                });
            }
            let links = LINK_SECTIONS.iter().any(|s| layout.has_section(s));
            // A stripped object (no .symtab) may have its names in a debug file too.
            let stripped = !layout.has_section(b".symtab");
            let debug_file = (links || stripped).then(|| debug_file(&layout)).flatten();
            let loads = loads(&layout);
            let build_id = layout.build_id().map(|id| hex(&id));
            Ok((layout.into_file(), !links, debug_file, loads, build_id))
        });
        let (file, debug_syms, debug_file, loads, build_id) = match held {
            Ok(h) => h,
            Err(why) => {
                note_refusal(&what(), &why);
                if why.is_final() {
                    self.refuse(place.id);
                }
                return;
            }
        };
        if !debug_syms {
            self.counts.linked += 1;
        }
        while self.held.len() >= self.cap {
            let Some(oldest) = self
                .held
                .iter()
                .min_by_key(|(_, h)| h.last_use)
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(h) = self.held.remove(&oldest) {
                closed.extend(h.closing_paths());
                self.counts.evicted += 1;
            }
        }
        self.clock += 1;
        let path = file.proc_path();
        self.held.insert(
            place.id,
            Held {
                file,
                path,
                debug_syms,
                debug_file,
                loads,
                build_id,
                last_use: self.clock,
            },
        );
    }
}

/// The loadable segments of `layout`: (file offset, file size, virtual address).
fn loads(layout: &ElfLayout) -> Vec<(u64, u64, u64)> {
    let e = layout.endian();
    layout
        .segments()
        .iter()
        .filter(|p| p.p_type.get(e) == object::elf::PT_LOAD)
        .map(|p| (p.p_offset.get(e), p.p_filesz.get(e), p.p_vaddr.get(e)))
        .collect()
}

/// The debug file for `layout`'s build id: under the host's [`DEBUG_DIR`], in a local debuginfod
/// cache, or in a `--debug-dir` (see [`super::debug_dirs`]), if it is a regular ELF file with the
/// same build id and symbol tables under the bound.
fn debug_file(layout: &ElfLayout) -> Option<(PathBuf, ObjFile)> {
    let id = layout.build_id()?;
    debug_file_for(&id)
}

/// The debug file of build id `id` (see [`debug_file`]).
pub fn debug_file_for(id: &[u8]) -> Option<(PathBuf, ObjFile)> {
    super::debug_dirs::candidates(id)
        .into_iter()
        .find_map(|path| {
            let debug = ElfLayout::read(ObjFile::open_trusted(&path).ok()?).ok()?;
            if debug.build_id().as_deref() != Some(id)
                || symbol_tables_size(&debug) > MAX_SYMBOL_TABLES
            {
                return None;
            }
            let file = debug.into_file();
            Some((file.proc_path(), file))
        })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of `.symtab` and `.dynsym` together.
fn symbol_tables_size(layout: &ElfLayout) -> u64 {
    use object::read::elf::SectionHeader as _;
    let e = layout.endian();
    layout
        .sections()
        .iter()
        .filter(|s| {
            matches!(
                s.sh_type(e),
                object::elf::SHT_SYMTAB | object::elf::SHT_DYNSYM
            )
        })
        .map(|s| s.sh_size(e))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_place(path: &Path, id: FileId) -> Place<'_> {
        Place {
            pid: std::process::id(),
            start: 0,
            end: 0,
            path,
            id,
        }
    }

    /// Objects kept past the cap close the least recently used, and say which.
    #[test]
    fn the_cap_closes_the_least_recently_used() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("oomtrace-objects-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sh = crate::probe::target::resolve_command(std::ffi::OsStr::new("sh")).unwrap();
        let mut objs = Objects::with_cap(2);
        let mut closed = Vec::new();
        let mut ids = Vec::new();
        for i in 0..3 {
            let p = dir.join(format!("obj{i}"));
            std::fs::copy(&sh, &p).unwrap();
            let m = std::fs::metadata(&p).unwrap();
            let id = FileId {
                dev: m.dev(),
                ino: m.ino(),
            };
            ids.push(id);
            // A process gone: found by its host path, checked.
            let mut place = own_place(&p, id);
            place.pid = u32::MAX - 1;
            objs.open_late(&place, &mut closed);
            if i == 1 {
                // obj0 used again: obj1 is now the oldest.
                assert!(objs.get(ids[0], &mut closed).is_some());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(closed.len(), 1);
        assert_eq!(objs.counts.evicted, 1);
        assert!(objs.get(ids[0], &mut closed).is_some());
        assert!(objs.get(ids[1], &mut closed).is_none());
        assert!(objs.get(ids[2], &mut closed).is_some());
    }

    #[test]
    fn refusals_are_counted_once_and_not_retried() {
        let mut objs = Objects::with_cap(4);
        let mut closed = Vec::new();
        let id = {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata("/dev/null").unwrap();
            FileId {
                dev: m.dev(),
                ino: m.ino(),
            }
        };
        let mut place = own_place(Path::new("/dev/null"), id);
        place.pid = u32::MAX - 1;
        objs.open_late(&place, &mut closed);
        objs.open_late(&place, &mut closed);
        assert!(objs.settled(id) && objs.is_empty());
        assert_eq!(objs.counts.refused, 1);
    }
}
