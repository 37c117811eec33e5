//! Reading what the probes need from an ELF object: defined symbols, their code, file offsets,
//! whether the object is dynamically linked, and what it needs (`DT_NEEDED`, `DT_RUNPATH`).
//!
//! Nothing is read whole: the headers first, then only the tables a question needs, each under a
//! bound ([`crate::objfile::elf`]). A table over its bound is skipped (and said, in verbose mode).

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use object::Endianness;
use object::elf::{self, Dyn64, Sym64};
use object::read::elf::{SectionHeader as _, Sym as _};

use crate::objfile::elf::{ElfLayout, Table};
use crate::objfile::{ObjFile, Refused, note_refusal};

/// A symbol table read whole: 24 bytes per symbol, so about 2.8 M symbols.
const MAX_SYMBOL_TABLE: u64 = 64 << 20;
/// Its string table.
const MAX_STRING_TABLE: u64 = 64 << 20;
/// The dynamic section (16 bytes per entry).
const MAX_DYNAMIC: u64 = 1 << 20;
/// The most code read of one function: what placement decodes.
const MAX_CODE: u64 = 4096;

/// A defined function symbol of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncSymbol {
    /// Symbol name as exported.
    pub name: String,
    /// Virtual address in the object.
    pub vaddr: u64,
    /// Offset of the first byte in the file (what uprobes attach by).
    pub file_offset: u64,
    /// The function's machine code (up to its symbol size, at most 4 KiB).
    pub code: Vec<u8>,
}

/// A defined function's name and where it lies in the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncRange {
    /// Symbol name as in the table (mangled).
    pub name: String,
    /// Virtual address in the object.
    pub vaddr: u64,
    /// Bytes of code.
    pub size: u64,
}

/// One symbol table and its strings.
struct Symbols {
    syms: Table<Sym64<Endianness>>,
    strings: Vec<u8>,
    /// Defined symbols by name: (value, size), the table's first definition of each name.
    /// Planning asks about dozens of names per object, so one pass builds this.
    by_name: std::collections::HashMap<Box<[u8]>, (u64, u64)>,
}

/// An ELF object, its headers read; symbol tables are read when first asked about.
pub struct ElfObject {
    /// Where it was read from (what messages name).
    pub path: PathBuf,
    layout: ElfLayout,
    dynsym: OnceCell<Option<Symbols>>,
    symtab: OnceCell<Option<Symbols>>,
}

impl ElfObject {
    /// Opens a file the user or the host's dynamic linker names (a command, a library it
    /// needs) and reads its headers. Only a regular file with ELF magic is read.
    pub fn open(path: &Path) -> Result<Self> {
        let file = ObjFile::open_trusted(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_file(file, path)
            .with_context(|| format!("{} is not a 64-bit ELF object", path.display()))
    }

    /// Reads the headers of an object opened already (a mapped one: [`ObjFile::open_mapping`]);
    /// `path` is what messages call it.
    pub fn from_file(file: ObjFile, path: &Path) -> Result<Self, Refused> {
        Ok(Self {
            path: path.to_owned(),
            layout: ElfLayout::read(file)?,
            dynsym: OnceCell::new(),
            symtab: OnceCell::new(),
        })
    }

    /// The open file it reads.
    pub fn file(&self) -> &ObjFile {
        self.layout.file()
    }

    /// Whether the object has a program interpreter (is dynamically linked).
    pub fn has_interp(&self) -> bool {
        let e = self.layout.endian();
        self.layout
            .segments()
            .iter()
            .any(|ph| ph.p_type.get(e) == elf::PT_INTERP)
    }

    /// The program interpreter it names (the dynamic linker), if any.
    pub fn interpreter(&self) -> Option<PathBuf> {
        let e = self.layout.endian();
        let ph = self
            .layout
            .segments()
            .iter()
            .find(|ph| ph.p_type.get(e) == elf::PT_INTERP)?;
        let name = self.layout.read_cstr(ph.p_offset.get(e)).ok()?;
        Some(PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(name),
        ))
    }

    /// Whether it has a dynamic section (a static-pie binary has one, a plain static one none).
    pub fn is_dynamic(&self) -> bool {
        let e = self.layout.endian();
        self.layout
            .segments()
            .iter()
            .any(|ph| ph.p_type.get(e) == elf::PT_DYNAMIC)
    }

    /// Whether it is a Go program (the Go toolchain's build-info section is there, stripped or
    /// not).
    pub fn is_go(&self) -> bool {
        self.layout.has_section(b".go.buildinfo") || self.layout.has_section(b".note.go.buildid")
    }

    /// `DT_NEEDED` names and `DT_RUNPATH`/`DT_RPATH` entries, in order.
    pub fn dynamic_deps(&self) -> (Vec<String>, Vec<String>) {
        let mut needed = Vec::new();
        let mut runpath = Vec::new();
        let e = self.layout.endian();
        let sections = self.layout.sections();
        let Some(index) = sections
            .iter()
            .position(|s| s.sh_type(e) == elf::SHT_DYNAMIC)
        else {
            return (needed, runpath);
        };
        let Some(strtab) = sections.get(sections[index].sh_link(e) as usize) else {
            return (needed, runpath);
        };
        let entries: Table<Dyn64<Endianness>> =
            match self
                .layout
                .section_table(index, MAX_DYNAMIC, "dynamic section")
            {
                Ok(t) => t,
                Err(why) => {
                    note_refusal(&self.path.display(), &why);
                    return (needed, runpath);
                }
            };
        for entry in entries.items() {
            let tag = entry.d_tag.get(e);
            if tag == u64::from(elf::DT_NULL) {
                break;
            }
            let value = entry.d_val.get(e);
            let Ok(tag) = u32::try_from(tag) else {
                continue;
            };
            if !matches!(tag, elf::DT_NEEDED | elf::DT_RUNPATH | elf::DT_RPATH)
                || value >= strtab.sh_size(e)
            {
                continue;
            }
            let Ok(s) = self.layout.read_cstr(strtab.sh_offset(e) + value) else {
                continue;
            };
            let s = String::from_utf8_lossy(&s).into_owned();
            match tag {
                elf::DT_NEEDED => needed.push(s),
                _ => runpath.extend(s.split(':').map(str::to_owned)),
            }
        }
        (needed, runpath)
    }

    /// The first symbol table of type `kind` (`SHT_DYNSYM`, `SHT_SYMTAB`) and its strings.
    fn load_symbols(&self, kind: u32) -> Option<Symbols> {
        let e = self.layout.endian();
        let sections = self.layout.sections();
        let index = sections.iter().position(|s| s.sh_type(e) == kind)?;
        let strings_index = sections[index].sh_link(e) as usize;
        let read = || -> Result<Symbols, Refused> {
            let syms: Table<Sym64<Endianness>> =
                self.layout
                    .section_table(index, MAX_SYMBOL_TABLE, "symbol table")?;
            let strings = self.layout.section_bytes(
                strings_index,
                MAX_STRING_TABLE,
                "symbol string table",
            )?;
            let mut by_name = std::collections::HashMap::with_capacity(syms.items().len());
            for sym in syms.items() {
                if !sym.is_definition(e) || sym.st_value(e) == 0 {
                    continue;
                }
                let Some(at) = strings.get(sym.st_name(e) as usize..) else {
                    continue;
                };
                let name = at.split(|&b| b == 0).next().unwrap_or_default();
                by_name
                    .entry(name.into())
                    .or_insert((sym.st_value(e), sym.st_size(e)));
            }
            Ok(Symbols {
                syms,
                strings,
                by_name,
            })
        };
        read()
            .inspect_err(|why| note_refusal(&self.path.display(), why))
            .ok()
    }

    fn find_in(&self, table: &Symbols, name: &str) -> Option<(u64, u64)> {
        table.by_name.get(name.as_bytes()).copied()
    }

    /// The value and size of the defined symbol `name` (dynamic symbols first, then the full
    /// table), without reading its code.
    fn lookup(&self, name: &str) -> Option<(u64, u64)> {
        let dynsym = self
            .dynsym
            .get_or_init(|| self.load_symbols(elf::SHT_DYNSYM));
        dynsym
            .as_ref()
            .and_then(|t| self.find_in(t, name))
            .or_else(|| {
                let symtab = self
                    .symtab
                    .get_or_init(|| self.load_symbols(elf::SHT_SYMTAB));
                symtab.as_ref().and_then(|t| self.find_in(t, name))
            })
    }

    /// The address and size of the defined symbol `name`, function or data (dynamic symbols
    /// first, then the full table).
    pub fn symbol(&self, name: &str) -> Option<(u64, u64)> {
        let dynsym = self
            .dynsym
            .get_or_init(|| self.load_symbols(elf::SHT_DYNSYM));
        dynsym
            .as_ref()
            .and_then(|t| self.find_in(t, name))
            .or_else(|| {
                let symtab = self
                    .symtab
                    .get_or_init(|| self.load_symbols(elf::SHT_SYMTAB));
                symtab.as_ref().and_then(|t| self.find_in(t, name))
            })
    }

    /// `len` bytes of the file at virtual address `vaddr` (initialized data or code).
    pub fn read_vaddr(&self, vaddr: u64, len: u64) -> Option<Vec<u8>> {
        let offset = self.layout.file_offset(vaddr)?;
        self.layout
            .file()
            .read_vec(offset, len, MAX_CODE, "data")
            .ok()
    }

    /// Whether `vaddr` lies in an executable loadable segment.
    pub fn in_exec_segment(&self, vaddr: u64) -> bool {
        let e = self.layout.endian();
        self.layout.segments().iter().any(|ph| {
            ph.p_type.get(e) == elf::PT_LOAD
                && ph.p_flags.get(e) & elf::PF_X != 0
                && vaddr
                    .checked_sub(ph.p_vaddr.get(e))
                    .is_some_and(|d| d < ph.p_filesz.get(e))
        })
    }

    /// The function at `vaddr`, found some other way than by its symbol (a static function of
    /// a stripped object), named `name`: its first `len` bytes of code.
    pub fn function_at(&self, name: &str, vaddr: u64, len: u64) -> Option<FuncSymbol> {
        let file_offset = self.layout.file_offset(vaddr)?;
        let file = self.layout.file();
        let len = len
            .clamp(1, MAX_CODE)
            .min(file.size().saturating_sub(file_offset));
        let code = file
            .read_vec(file_offset, len, MAX_CODE, "function code")
            .ok()?;
        Some(FuncSymbol {
            name: name.to_owned(),
            vaddr,
            file_offset,
            code,
        })
    }

    /// The defined function named `name` (dynamic symbols first, then the full table).
    pub fn function(&self, name: &str) -> Option<FuncSymbol> {
        let (vaddr, size) = self.lookup(name)?;
        let file_offset = self.layout.file_offset(vaddr)?;
        let file = self.layout.file();
        let len = size
            .clamp(1, MAX_CODE)
            .min(file.size().saturating_sub(file_offset));
        let code = match file.read_vec(file_offset, len, MAX_CODE, "function code") {
            Ok(code) if file.unchanged() => code,
            Ok(_) => {
                note_refusal(&self.path.display(), &Refused::Changed);
                return None;
            }
            Err(why) => {
                note_refusal(&self.path.display(), &why);
                return None;
            }
        };
        Some(FuncSymbol {
            name: name.to_owned(),
            vaddr,
            file_offset,
            code,
        })
    }

    /// Every defined function with a size, from both symbol tables (each once).
    pub fn functions(&self) -> Vec<FuncRange> {
        let e = self.layout.endian();
        let dynsym = self
            .dynsym
            .get_or_init(|| self.load_symbols(elf::SHT_DYNSYM));
        let symtab = self
            .symtab
            .get_or_init(|| self.load_symbols(elf::SHT_SYMTAB));
        let mut out = Vec::new();
        for table in [dynsym, symtab].into_iter().flatten() {
            for s in table.syms.items() {
                let kind = s.st_type();
                if !(kind == elf::STT_FUNC || kind == elf::STT_GNU_IFUNC)
                    || !s.is_definition(e)
                    || s.st_value(e) == 0
                    || s.st_size(e) == 0
                {
                    continue;
                }
                let Some(at) = table.strings.get(s.st_name(e) as usize..) else {
                    continue;
                };
                let name = at.split(|&b| b == 0).next().unwrap_or_default();
                out.push(FuncRange {
                    name: String::from_utf8_lossy(name).into_owned(),
                    vaddr: s.st_value(e),
                    size: s.st_size(e),
                });
            }
        }
        out.sort_by(|a, b| (a.vaddr, &a.name).cmp(&(b.vaddr, &b.name)));
        out.dedup();
        out
    }

    /// The virtual address where a mapping of file offset `offset` starts.
    pub fn mapping_vaddr(&self, offset: u64, exec: bool) -> Option<u64> {
        self.layout.mapping_vaddr(offset, exec)
    }

    /// The virtual address of file offset `offset` (from the loadable segments).
    pub fn virt_offset(&self, offset: u64) -> Option<u64> {
        self.layout.virt_offset(offset)
    }

    /// Whether the object defines `name`.
    pub fn defines(&self, name: &str) -> bool {
        self.lookup(name)
            .is_some_and(|(vaddr, _)| self.layout.file_offset(vaddr).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc_path() -> PathBuf {
        crate::probe::target::system_libc().expect("libc.so.6 is installed")
    }

    #[test]
    fn libc_defines_malloc_with_code_at_its_offset() {
        let elf = ElfObject::open(&libc_path()).unwrap();
        let f = elf.function("malloc").expect("libc defines malloc");
        assert_eq!(f.name, "malloc");
        assert!(!f.code.is_empty() && f.code.len() <= MAX_CODE as usize);
        // The code is the file's bytes at that offset.
        let mut again = vec![0u8; f.code.len()];
        elf.file().read_exact_at(&mut again, f.file_offset).unwrap();
        assert_eq!(again, f.code);
        assert!(!elf.defines("no_such_function_here"));
        assert!(elf.has_interp(), "Debian's libc.so.6 has an interpreter");
    }

    #[test]
    fn deps_of_sh_include_libc() {
        let sh = crate::probe::target::resolve_command(std::ffi::OsStr::new("sh")).unwrap();
        let elf = ElfObject::open(&sh).unwrap();
        let (needed, _) = elf.dynamic_deps();
        assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
    }

    #[test]
    fn non_elf_files_are_refused() {
        let text = std::env::temp_dir().join(format!("oomtrace-elf-test-{}", std::process::id()));
        std::fs::write(&text, "not an object file\n").unwrap();
        let err = ElfObject::open(&text).err().expect("not ELF");
        std::fs::remove_file(&text).unwrap();
        assert!(format!("{err:#}").contains("no ELF magic"), "{err:#}");
        let err = ElfObject::open(Path::new("/dev/zero"))
            .err()
            .expect("a device");
        assert!(format!("{err:#}").contains("character device"), "{err:#}");
    }
}
