//! Reading what the probes need from an ELF object: defined symbols, their code, file offsets,
//! whether the object is dynamically linked, and what it needs (`DT_NEEDED`, `DT_RUNPATH`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use object::{Object, ObjectSegment, ObjectSymbol, elf, read::elf::ElfFile64};

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

/// An ELF object read from disk.
pub struct ElfObject {
    /// Where it was read from.
    pub path: PathBuf,
    data: Vec<u8>,
}

impl ElfObject {
    /// Reads and validates an ELF file.
    pub fn open(path: &Path) -> Result<Self> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        ElfFile64::<object::Endianness>::parse(data.as_slice())
            .with_context(|| format!("{} is not a 64-bit ELF object", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            data,
        })
    }

    fn parsed(&self) -> ElfFile64<'_, object::Endianness> {
        // Validated in `open`.
        ElfFile64::parse(self.data.as_slice()).expect("validated at open")
    }

    /// Whether the object has a program interpreter (is dynamically linked).
    pub fn has_interp(&self) -> bool {
        let file = self.parsed();
        let endian = file.endian();
        file.elf_program_headers()
            .iter()
            .any(|ph| ph.p_type.get(endian) == elf::PT_INTERP)
    }

    /// `DT_NEEDED` names and `DT_RUNPATH`/`DT_RPATH` entries, in order.
    pub fn dynamic_deps(&self) -> (Vec<String>, Vec<String>) {
        let file = self.parsed();
        let mut needed = Vec::new();
        let mut runpath = Vec::new();
        let endian = file.endian();
        let Some((entries, strings_index)) = file
            .elf_section_table()
            .dynamic(endian, self.data.as_slice())
            .ok()
            .flatten()
        else {
            return (needed, runpath);
        };
        let Ok(strings) =
            file.elf_section_table()
                .strings(endian, self.data.as_slice(), strings_index)
        else {
            return (needed, runpath);
        };
        for entry in entries {
            let tag = entry.d_tag.get(endian) as u32;
            let value = entry.d_val.get(endian) as u32;
            let Ok(s) = strings.get(value) else { continue };
            let s = String::from_utf8_lossy(s).into_owned();
            match tag {
                elf::DT_NEEDED => needed.push(s),
                elf::DT_RUNPATH | elf::DT_RPATH => runpath.extend(s.split(':').map(str::to_owned)),
                _ => {}
            }
        }
        (needed, runpath)
    }

    /// The defined function named `name` (dynamic symbols first, then the full table).
    pub fn function(&self, name: &str) -> Option<FuncSymbol> {
        let file = self.parsed();
        let sym = file
            .dynamic_symbols()
            .chain(file.symbols())
            .find(|s| s.is_definition() && s.address() != 0 && s.name() == Ok(name))?;
        let vaddr = sym.address();
        let size = sym.size().clamp(1, 4096);
        let file_offset = file.segments().find_map(|seg| {
            let (start, len) = (seg.address(), seg.size());
            let (off, flen) = seg.file_range();
            (vaddr >= start && vaddr < start + len && vaddr - start < flen)
                .then(|| off + (vaddr - start))
        })?;
        let end = (file_offset + size).min(self.data.len() as u64);
        let code = self.data.get(file_offset as usize..end as usize)?.to_vec();
        Some(FuncSymbol {
            name: name.to_owned(),
            vaddr,
            file_offset,
            code,
        })
    }

    /// Whether the object defines `name`.
    pub fn defines(&self, name: &str) -> bool {
        self.function(name).is_some()
    }
}
