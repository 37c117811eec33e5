//! The parts of an ELF object that oomtrace reads, each read on its own and under a bound: the
//! file header, the program and section headers, section names, and whichever section or string
//! a caller asks for. Nothing else of the file is touched, so a 4 GiB file costs what its headers
//! cost.

use object::elf::{FileHeader64, ProgramHeader64, SectionHeader64};
use object::pod::{self, Pod};
use object::read::elf::{FileHeader as _, SectionHeader as _};
use object::{Endianness, elf};

use super::{ObjFile, Refused};

/// Most program headers or section headers read (each table is also bounded in bytes).
const MAX_HEADERS: u64 = 16_384;
/// The section-name string table, read whole.
const MAX_SECTION_NAMES: u64 = 1 << 20;
/// The longest string read by [`ElfLayout::read_cstr`].
pub const MAX_STRING: u64 = 4096;
/// A note section or segment, read whole to find the build id.
const MAX_NOTES: u64 = 64 << 10;

/// Items of type `T` read into 8-byte-aligned memory, so they can be viewed in place.
pub struct Table<T: Pod> {
    words: Vec<u64>,
    count: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Pod> Table<T> {
    fn empty() -> Self {
        Self {
            words: Vec::new(),
            count: 0,
            _t: std::marker::PhantomData,
        }
    }

    /// The items.
    pub fn items(&self) -> &[T] {
        let bytes = &pod::bytes_of_slice(&self.words)[..self.count * std::mem::size_of::<T>()];
        // Aligned (u64 storage, ELF64 structures need 8 at most) and sized above: cannot fail.
        pod::slice_from_all_bytes(bytes).unwrap_or_default()
    }
}

/// Reads `count` items of `T` at `offset`, at most `limit` bytes in all.
fn read_table<T: Pod>(
    file: &ObjFile,
    offset: u64,
    count: u64,
    limit: u64,
    what: &'static str,
) -> Result<Table<T>, Refused> {
    if std::mem::align_of::<T>() > 8 {
        return Err(Refused::Malformed("an over-aligned table"));
    }
    let size = count.saturating_mul(std::mem::size_of::<T>() as u64);
    if size > limit {
        return Err(Refused::TooLarge { what, size, limit });
    }
    if size == 0 {
        return Ok(Table::empty());
    }
    let mut words = vec![0u64; size.div_ceil(8) as usize];
    file.read_exact_at(
        &mut pod::bytes_of_slice_mut(&mut words)[..size as usize],
        offset,
    )?;
    Ok(Table {
        words,
        count: count as usize,
        _t: std::marker::PhantomData,
    })
}

/// A 64-bit ELF object's headers, read with bounds, and the file to read more from.
pub struct ElfLayout {
    file: ObjFile,
    endian: Endianness,
    phdrs: Table<ProgramHeader64<Endianness>>,
    shdrs: Table<SectionHeader64<Endianness>>,
    names: Vec<u8>,
}

impl ElfLayout {
    /// Reads the file header, the program and section headers and the section names.
    pub fn read(file: ObjFile) -> Result<Self, Refused> {
        let header: Table<FileHeader64<Endianness>> = read_table(&file, 0, 1, 64, "ELF header")?;
        let header = *header
            .items()
            .first()
            .ok_or(Refused::Malformed("no ELF header"))?;
        if !header.is_supported() {
            return Err(Refused::Malformed("not a 64-bit ELF object"));
        }
        let endian = header
            .endian()
            .map_err(|_| Refused::Malformed("unknown byte order"))?;
        let phdrs = Self::headers::<ProgramHeader64<Endianness>>(
            &file,
            header.e_phoff.get(endian),
            header.e_phentsize.get(endian),
            header.e_phnum.get(endian).into(),
            "program header table",
        )?;
        let shoff = header.e_shoff.get(endian);
        let mut shnum = u64::from(header.e_shnum.get(endian));
        let mut shstrndx = u32::from(header.e_shstrndx.get(endian));
        if shoff != 0 && (shnum == 0 || shstrndx == u32::from(elf::SHN_XINDEX)) {
            // More sections than the header can count: section 0 holds the real figures.
            let first: Table<SectionHeader64<Endianness>> =
                read_table(&file, shoff, 1, 64, "section header")?;
            if let Some(s0) = first.items().first() {
                if shnum == 0 {
                    shnum = s0.sh_size.get(endian);
                }
                if shstrndx == u32::from(elf::SHN_XINDEX) {
                    shstrndx = s0.sh_link.get(endian);
                }
            }
        }
        let shdrs = if shoff == 0 {
            Table::empty()
        } else {
            Self::headers::<SectionHeader64<Endianness>>(
                &file,
                shoff,
                header.e_shentsize.get(endian),
                shnum,
                "section header table",
            )?
        };
        let mut layout = Self {
            file,
            endian,
            phdrs,
            shdrs,
            names: Vec::new(),
        };
        if let Some(s) = layout.sections().get(shstrndx as usize).copied()
            && s.sh_type(endian) != elf::SHT_NOBITS
        {
            layout.names = layout.file.read_vec(
                s.sh_offset(endian),
                s.sh_size(endian),
                MAX_SECTION_NAMES,
                "section name table",
            )?;
        }
        Ok(layout)
    }

    fn headers<T: Pod>(
        file: &ObjFile,
        offset: u64,
        entsize: u16,
        count: u64,
        what: &'static str,
    ) -> Result<Table<T>, Refused> {
        if count == 0 {
            return Ok(Table::empty());
        }
        if usize::from(entsize) != std::mem::size_of::<T>() {
            return Err(Refused::Malformed("unexpected header entry size"));
        }
        if count > MAX_HEADERS {
            return Err(Refused::TooLarge {
                what,
                size: count * u64::from(entsize),
                limit: MAX_HEADERS * u64::from(entsize),
            });
        }
        read_table(file, offset, count, MAX_HEADERS * u64::from(entsize), what)
    }

    /// The file it reads.
    pub fn file(&self) -> &ObjFile {
        &self.file
    }

    /// Gives the file back.
    pub fn into_file(self) -> ObjFile {
        self.file
    }

    /// The object's byte order.
    pub fn endian(&self) -> Endianness {
        self.endian
    }

    /// The program headers.
    pub fn segments(&self) -> &[ProgramHeader64<Endianness>] {
        self.phdrs.items()
    }

    /// The section headers.
    pub fn sections(&self) -> &[SectionHeader64<Endianness>] {
        self.shdrs.items()
    }

    /// The name of section `index`, if it has a readable one.
    pub fn section_name(&self, index: usize) -> Option<&[u8]> {
        let s = self.sections().get(index)?;
        let rest = self.names.get(s.sh_name(self.endian) as usize..)?;
        rest.split(|&b| b == 0).next()
    }

    /// Whether a section named `name` exists.
    pub fn has_section(&self, name: &[u8]) -> bool {
        (0..self.sections().len()).any(|i| self.section_name(i) == Some(name))
    }

    /// Reads section `index` as a table of `T` (its whole size, at most `limit` bytes).
    pub fn section_table<T: Pod>(
        &self,
        index: usize,
        limit: u64,
        what: &'static str,
    ) -> Result<Table<T>, Refused> {
        let s = self
            .sections()
            .get(index)
            .ok_or(Refused::Malformed("a section index out of range"))?;
        if s.sh_type(self.endian) == elf::SHT_NOBITS {
            return Ok(Table::empty());
        }
        let size = s.sh_size(self.endian);
        if size > limit {
            return Err(Refused::TooLarge { what, size, limit });
        }
        let count = size / std::mem::size_of::<T>() as u64;
        read_table(&self.file, s.sh_offset(self.endian), count, limit, what)
    }

    /// Reads section `index` whole, at most `limit` bytes.
    pub fn section_bytes(
        &self,
        index: usize,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Refused> {
        let s = self
            .sections()
            .get(index)
            .ok_or(Refused::Malformed("a section index out of range"))?;
        if s.sh_type(self.endian) == elf::SHT_NOBITS {
            return Ok(Vec::new());
        }
        self.file.read_vec(
            s.sh_offset(self.endian),
            s.sh_size(self.endian),
            limit,
            what,
        )
    }

    /// The NUL-terminated string at `offset`, at most [`MAX_STRING`] bytes long.
    pub fn read_cstr(&self, offset: u64) -> Result<Vec<u8>, Refused> {
        let len = MAX_STRING.min(self.file.size().saturating_sub(offset));
        let mut buf = self.file.read_vec(offset, len, MAX_STRING, "string")?;
        let end = buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(Refused::Malformed("an unterminated or overlong string"))?;
        buf.truncate(end);
        Ok(buf)
    }

    /// The GNU build id, from the note sections (or, without section headers, note segments).
    pub fn build_id(&self) -> Option<Vec<u8>> {
        let e = self.endian;
        let from_sections = self
            .sections()
            .iter()
            .filter(|s| s.sh_type(e) == elf::SHT_NOTE)
            .map(|s| (s.sh_offset(e), s.sh_size(e)));
        let from_segments = self
            .segments()
            .iter()
            .filter(|p| p.p_type.get(e) == elf::PT_NOTE)
            .map(|p| (p.p_offset.get(e), p.p_filesz.get(e)));
        let notes: Vec<(u64, u64)> = if self.sections().is_empty() {
            from_segments.collect()
        } else {
            from_sections.collect()
        };
        notes.into_iter().find_map(|(offset, size)| {
            let data = self.file.read_vec(offset, size, MAX_NOTES, "note").ok()?;
            gnu_build_id(&data, e)
        })
    }

    /// The virtual address where a mapping of file offset `offset` (page-aligned, as in
    /// `/proc/PID/maps`) starts. Segments can share a page of the file, so the one mapped is
    /// the one whose page-aligned offset is `offset`, executable if the mapping is.
    pub fn mapping_vaddr(&self, offset: u64, exec: bool) -> Option<u64> {
        let e = self.endian;
        let page = |x: u64| x & !0xfff;
        let loads = || {
            self.segments()
                .iter()
                .filter(|ph| ph.p_type.get(e) == elf::PT_LOAD && page(ph.p_offset.get(e)) == offset)
        };
        let pick = loads()
            .find(|ph| (ph.p_flags.get(e) & elf::PF_X != 0) == exec)
            .or_else(|| loads().next());
        match pick {
            Some(ph) => Some(ph.p_vaddr.get(e) - (ph.p_offset.get(e) - offset)),
            None => self.virt_offset(offset),
        }
    }

    /// The virtual address (as in the object's symbols) of file offset `offset`, from the
    /// loadable segments.
    pub fn virt_offset(&self, offset: u64) -> Option<u64> {
        let e = self.endian;
        self.segments().iter().find_map(|ph| {
            if ph.p_type.get(e) != elf::PT_LOAD {
                return None;
            }
            let delta = offset.checked_sub(ph.p_offset.get(e))?;
            (delta < ph.p_filesz.get(e)).then(|| ph.p_vaddr.get(e) + delta)
        })
    }

    /// The file offset of virtual address `vaddr`, from the loadable segments.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        let e = self.endian;
        self.segments().iter().find_map(|ph| {
            if ph.p_type.get(e) != elf::PT_LOAD {
                return None;
            }
            let (start, memsz) = (ph.p_vaddr.get(e), ph.p_memsz.get(e));
            let delta = vaddr.checked_sub(start)?;
            (delta < memsz && delta < ph.p_filesz.get(e)).then(|| ph.p_offset.get(e) + delta)
        })
    }
}

/// The descriptor of the first `NT_GNU_BUILD_ID` note named "GNU" in `notes`.
fn gnu_build_id(notes: &[u8], e: Endianness) -> Option<Vec<u8>> {
    use object::Endian as _;
    let word = |at: usize| -> Option<u32> {
        let b: [u8; 4] = notes.get(at..at + 4)?.try_into().ok()?;
        Some(e.read_u32_bytes(b))
    };
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)? as usize, word(at + 4)? as usize, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align4(namesz)?)?;
        let next = desc_at.checked_add(align4(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        if kind == elf::NT_GNU_BUILD_ID && name == b"GNU\0" {
            return notes
                .get(desc_at..desc_at.checked_add(descsz)?)
                .map(<[u8]>::to_vec);
        }
        at = next;
    }
    None
}
