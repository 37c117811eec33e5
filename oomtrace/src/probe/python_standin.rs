//! A minimal, 3.11-only stand-in for `crate::python` (detection, offsets, code objects) until
//! the reader's module is merged; same names, so switching is one `use` line.

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::objfile::maps;
use crate::probe::elf::ElfObject;

/// A CPython interpreter found in a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// (major, minor).
    pub version: (u8, u8),
    /// The ELF object that holds `_PyRuntime`.
    pub module: PathBuf,
    /// Absolute address of `_PyRuntime`.
    pub runtime: u64,
    /// Where the fields are.
    pub offsets: Offsets,
}

/// Byte offsets of one version (see the interface).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Offsets {
    pub runtime_tstate_current: Option<u16>,
    pub runtime_interpreters_head: u16,
    pub interp_threads_head: u16,
    pub tstate_next: u16,
    pub tstate_thread_id: u16,
    pub tstate_native_thread_id: Option<u16>,
    pub tstate_frame: u16,
    pub cframe_current_frame: Option<u16>,
    pub frame_previous: u16,
    pub frame_code: u16,
    pub frame_instr: u16,
    pub frame_instr_is_pointer: bool,
    pub frame_owner: Option<u16>,
    pub frame_owner_cstack: u8,
    pub frame_is_entry: Option<u16>,
    pub code_filename: u16,
    pub code_name: u16,
    pub code_qualname: Option<u16>,
    pub code_firstlineno: u16,
    pub code_linetable: u16,
    pub code_adaptive: Option<u16>,
    pub code_code: Option<u16>,
}

/// 3.11 on x86-64 (from the 3.11 headers' `offsetof`s).
fn offsets_311() -> Offsets {
    Offsets {
        runtime_tstate_current: Some(576),
        runtime_interpreters_head: 40,
        interp_threads_head: 16,
        tstate_next: 8,
        tstate_thread_id: 152,
        tstate_native_thread_id: Some(160),
        tstate_frame: 56,
        cframe_current_frame: Some(8),
        frame_previous: 48,
        frame_code: 32,
        frame_instr: 56,
        frame_instr_is_pointer: true,
        frame_owner: None,
        frame_owner_cstack: 3,
        frame_is_entry: Some(68),
        code_filename: 112,
        code_name: 120,
        code_qualname: Some(128),
        code_firstlineno: 72,
        code_linetable: 136,
        code_adaptive: Some(184),
        code_code: None,
    }
}

/// Finds a 3.11 interpreter in process `pid`.
pub fn detect(pid: u32) -> Result<Option<Interpreter>> {
    let text = maps::read(pid)?;
    let mut candidates: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let file = l.file()?;
            let base = file.rsplit('/').next().unwrap_or(file);
            (base == "python3.11" || base.starts_with("libpython3.11.so")).then(|| file.to_owned())
        })
        .collect();
    candidates.dedup();
    let Some((path, sym)) = candidates.into_iter().find_map(|path| {
        let elf = ElfObject::open(&PathBuf::from(format!("/proc/{pid}/root{path}"))).ok()?;
        let sym = elf.function("_PyRuntime")?;
        Some((path, sym))
    }) else {
        return Ok(None);
    };
    let fo = sym.file_offset;
    let Some(runtime) = text.lines().find_map(|l| {
        (l.file() == Some(path.as_str()) && l.offset <= fo && fo < l.offset + (l.end - l.start))
            .then(|| l.start + fo - l.offset)
    }) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    Ok(Some(Interpreter {
        version: (3, 11),
        module: path,
        runtime,
        offsets: offsets_311(),
    }))
}

/// One resolved Python frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame {
    /// `co_qualname`.
    pub function: String,
    /// `co_filename`.
    pub file: String,
    /// The line.
    pub line: u32,
}

/// What a code object says, cached.
#[derive(Clone)]
struct Code {
    function: String,
    file: String,
    first_line: u32,
    linetable: Vec<u8>,
}

/// Reads code objects out of a live process.
#[derive(Default)]
pub struct CodeReader {
    codes: HashMap<(u32, u64), Option<Code>>,
}

impl CodeReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// The frame at instruction `instr` of code object `code`.
    pub fn resolve(
        &mut self,
        pid: u32,
        interp: &Interpreter,
        code: u64,
        instr: u64,
    ) -> Option<PyFrame> {
        if self.codes.len() > 100_000 {
            self.codes.clear();
        }
        let c = self
            .codes
            .entry((pid, code))
            .or_insert_with(|| read_code(pid, &interp.offsets, code))
            .clone()?;
        let start = code + u64::from(interp.offsets.code_adaptive?);
        let index = instr.checked_sub(start)? / 2;
        Some(PyFrame {
            function: c.function,
            file: c.file,
            line: line_311(&c.linetable, c.first_line, index)?,
        })
    }

    /// Forget a process.
    pub fn forget(&mut self, pid: u32) {
        self.codes.retain(|&(p, _), _| p != pid);
    }
}

fn mem(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

fn word(pid: u32, addr: u64) -> Option<u64> {
    Some(u64::from_le_bytes(mem(pid, addr, 8)?.try_into().ok()?))
}

/// A compact ASCII str's text (the usual case for names and paths).
fn str_at(pid: u32, obj: u64) -> Option<String> {
    let len = word(pid, obj + 16)?;
    if len > 4096 {
        return None;
    }
    let state = mem(pid, obj + 32, 1)?[0];
    // compact (bit 5) and ascii (bit 6)
    if state & 0x60 != 0x60 {
        return None;
    }
    String::from_utf8(mem(pid, obj + 48, len as usize)?).ok()
}

fn read_code(pid: u32, o: &Offsets, code: u64) -> Option<Code> {
    let function = str_at(pid, word(pid, code + u64::from(o.code_qualname?))?)?;
    let file = str_at(pid, word(pid, code + u64::from(o.code_filename))?)?;
    let first_line = word(pid, code + u64::from(o.code_firstlineno))? as u32;
    let lt = word(pid, code + u64::from(o.code_linetable))?;
    let len = word(pid, lt + 16)?;
    if len > 1 << 20 {
        return None;
    }
    let linetable = mem(pid, lt + 32, len as usize)?;
    Some(Code {
        function,
        file,
        first_line,
        linetable,
    })
}

/// The line of code unit `index` from a 3.11 location table.
fn line_311(table: &[u8], first_line: u32, index: u64) -> Option<u32> {
    let mut i = 0usize;
    let mut line = i64::from(first_line);
    let mut unit = 0u64;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = *table.get(*i)?;
            *i += 1;
            v |= u64::from(b & 63) << shift;
            shift += 6;
            if b & 64 == 0 {
                return Some(v);
            }
        }
    };
    while i < table.len() {
        let b = table[i];
        i += 1;
        let code = (b >> 3) & 15;
        let len = u64::from(b & 7) + 1;
        let mut this = Some(line);
        match code {
            15 => this = None,
            14 => {
                let v = varint(&mut i)?;
                line += if v & 1 != 0 {
                    -((v >> 1) as i64)
                } else {
                    (v >> 1) as i64
                };
                this = Some(line);
                for _ in 0..3 {
                    varint(&mut i)?;
                }
            }
            13 => {
                let v = varint(&mut i)?;
                line += if v & 1 != 0 {
                    -((v >> 1) as i64)
                } else {
                    (v >> 1) as i64
                };
                this = Some(line);
            }
            10..=12 => {
                line += i64::from(code - 10);
                this = Some(line);
                i += 2;
            }
            _ => i += 1,
        }
        if index < unit + len {
            return this.map(|l| l as u32);
        }
        unit += len;
    }
    None
}
