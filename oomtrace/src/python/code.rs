//! A code object and an instruction value, read out of a live process, as a Python function,
//! file and line.
//!
//! The instruction value is what a frame holds (see [`Offsets::frame_instr`]):
//! - 3.8, 3.9: `f_lasti`, the byte offset of the last instruction started;
//! - 3.10: `f_lasti` in code units (2 bytes each);
//! - 3.11, 3.12: `prev_instr`, a pointer to the last instruction started;
//! - 3.13: `instr_ptr`, a pointer to the instruction running (or about to).
//!
//! CPython itself turns each into `PyCode_Addr2Line(code, byte offset)` the same way (pointer
//! minus `co_code_adaptive`, times 2 from 3.10), so the line is the one a traceback would show.

use std::collections::HashMap;

use super::Interpreter;
use super::linetable::{self, Format};
use super::memory::{self, u32_at, u64_at};
use super::offsets::{self, Offsets};

/// One resolved Python frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame {
    /// `co_qualname` (3.11+) or `co_name`.
    pub function: String,
    /// `co_filename`.
    pub file: String,
    /// The line; 0 where the line table gives the instruction none (artificial instructions).
    pub line: u32,
}

/// Most code objects kept (all processes together); past it the cache starts over.
pub const MAX_CODES: usize = 65_536;
/// Most instruction → line answers kept per code object.
pub const MAX_LINES_PER_CODE: usize = 4096;
/// Longest string read, in characters (a longer one is cut and ends with "…").
pub const MAX_CHARS: u64 = 4096;
/// Largest line table read.
pub const MAX_TABLE: u64 = 1 << 20;

/// What the reader did, for the counters a report shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Code objects read from a process.
    pub codes_read: u64,
    /// Resolutions that failed: unreadable memory, not a code object, a malformed string.
    pub failures: u64,
    /// Cached code objects dropped because their address now holds another one.
    pub stale: u64,
    /// Times the cache was full and started over.
    pub evictions: u64,
}

/// What is kept of one code object.
struct CodeInfo {
    /// The fields that identify it (type, name, file, table pointers, first line): re-read
    /// to notice that a freed code object's address holds another one.
    ident: [u64; 6],
    function: String,
    file: String,
    first_line: u32,
    table: Vec<u8>,
    /// Bytes of bytecode (bounds the instruction).
    code_bytes: u64,
    lines: HashMap<u64, u32>,
}

/// Reads code objects out of a live process (`process_vm_readv`), caching per (pid, code
/// address); bounded.
#[derive(Default)]
pub struct CodeReader {
    codes: HashMap<(u32, u64), CodeInfo>,
    stats: ReaderStats,
}

impl CodeReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// What it did so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The frame that code object `code` of process `pid` is at when its frame holds `instr`
    /// (the raw value at `frame_instr`: `f_lasti`, or the instruction pointer). `None`: the
    /// memory could not be read, or `code` is not a code object.
    pub fn resolve(
        &mut self,
        pid: u32,
        interp: &Interpreter,
        code: u64,
        instr: u64,
    ) -> Option<PyFrame> {
        let key = (pid, code);
        if let Some(info) = self.codes.get(&key) {
            // A process that is gone keeps its answers; a live one must still hold the same
            // code object there.
            if let Some(header) = read_header(pid, &interp.offsets, code)
                && ident(&interp.offsets, &header) != info.ident
            {
                self.codes.remove(&key);
                self.stats.stale += 1;
            }
        }
        if !self.codes.contains_key(&key) {
            let Some(info) = read_code(pid, interp, code) else {
                self.stats.failures += 1;
                return None;
            };
            self.stats.codes_read += 1;
            if self.codes.len() >= MAX_CODES {
                self.codes.clear();
                self.stats.evictions += 1;
            }
            self.codes.insert(key, info);
        }
        let info = self.codes.get_mut(&key)?;
        let line = match info.lines.get(&instr) {
            Some(&line) => line,
            None => {
                let line = line_of(interp, code, instr, info);
                if info.lines.len() < MAX_LINES_PER_CODE {
                    info.lines.insert(instr, line);
                }
                line
            }
        };
        Some(PyFrame {
            function: info.function.clone(),
            file: info.file.clone(),
            line,
        })
    }

    /// Forget a process (it exited or exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.codes.retain(|&(p, _), _| p != pid);
    }
}

/// The byte offset `instr` stands for, then its line (0: none).
fn line_of(interp: &Interpreter, code: u64, instr: u64, info: &CodeInfo) -> u32 {
    let o = &interp.offsets;
    let offset: i64 = if o.frame_instr_is_pointer {
        let start = code.wrapping_add(o.code_adaptive.map_or(0, u64::from));
        if instr < start {
            -1
        } else {
            // Whole code units from the start (an odd pointer would be torn: round down).
            (((instr - start) / 2) * 2).min(i64::MAX as u64) as i64
        }
    } else {
        // An `int`: the kernel may hand it sign- or zero-extended.
        let lasti = i64::from(instr as u32 as i32);
        if interp.version >= (3, 10) {
            lasti.saturating_mul(2)
        } else {
            lasti
        }
    };
    if offset >= 0 && offset as u64 >= info.code_bytes {
        return 0;
    }
    linetable::line_at(
        Format::of(interp.version),
        &info.table,
        info.first_line,
        offset,
    )
    .unwrap_or(0)
}

/// The bytes of a code object up to the last field read.
fn header_len(o: &Offsets) -> usize {
    let fields = [
        Some(o.code_filename),
        Some(o.code_name),
        o.code_qualname,
        Some(o.code_firstlineno),
        Some(o.code_linetable),
        o.code_code,
        Some(o.var_size),
    ];
    fields.into_iter().flatten().max().map_or(0, usize::from) + 8
}

fn read_header(pid: u32, o: &Offsets, code: u64) -> Option<Vec<u8>> {
    memory::read(pid, code, header_len(o))
}

fn ident(o: &Offsets, h: &[u8]) -> [u64; 6] {
    let word = |at: u16| u64_at(h, usize::from(at));
    [
        word(8), // ob_type
        word(o.code_filename),
        word(o.code_name),
        o.code_qualname.map_or(0, word),
        word(o.code_linetable),
        u64::from(u32_at(h, usize::from(o.code_firstlineno))),
    ]
}

fn read_code(pid: u32, interp: &Interpreter, code: u64) -> Option<CodeInfo> {
    let o = &interp.offsets;
    let h = read_header(pid, o, code)?;
    let word = |at: u16| u64_at(&h, usize::from(at));
    if interp.code_type.is_some_and(|t| t != word(8)) {
        return None;
    }
    let name_at = o.code_qualname.unwrap_or(o.code_name);
    let function = read_str(pid, o, word(name_at))?;
    let file = read_str(pid, o, word(o.code_filename))?;
    let first_line = u32_at(&h, usize::from(o.code_firstlineno));
    let table = read_bytes(pid, o, word(o.code_linetable), MAX_TABLE)?;
    let code_bytes = match o.code_code {
        // ≤3.10: the length of the co_code bytes object.
        Some(at) => memory::read_u64(pid, word(at).checked_add(u64::from(o.var_size))?)?,
        // 3.11+: the code object's own size counts code units.
        None => word(o.var_size).saturating_mul(2),
    };
    Some(CodeInfo {
        ident: ident(o, &h),
        function,
        file,
        first_line,
        table,
        code_bytes,
        lines: HashMap::new(),
    })
}

/// A bytes object's data (at most `limit` bytes, else `None`).
fn read_bytes(pid: u32, o: &Offsets, addr: u64, limit: u64) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let len = memory::read_u64(pid, addr.checked_add(u64::from(o.var_size))?)?;
    if len > limit {
        return None;
    }
    if len == 0 {
        return Some(Vec::new());
    }
    memory::read(
        pid,
        addr.checked_add(u64::from(o.bytes_data))?,
        len as usize,
    )
}

/// A compact `str` object's text (ASCII, latin-1, UCS-2 or UCS-4).
fn read_str(pid: u32, o: &Offsets, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let h = memory::read(pid, addr, usize::from(o.unicode_compact_size))?;
    let length = u64_at(&h, usize::from(o.unicode_length));
    let state = u32_at(&h, usize::from(o.unicode_state));
    if state & offsets::UNICODE_COMPACT == 0 {
        // A legacy string (its characters elsewhere): code objects never hold one.
        return None;
    }
    let ascii = state & offsets::UNICODE_ASCII != 0;
    let kind = (state & offsets::UNICODE_KIND_MASK) >> offsets::UNICODE_KIND_SHIFT;
    let (data_at, width) = if ascii {
        (o.unicode_ascii_size, 1)
    } else {
        (o.unicode_compact_size, kind)
    };
    if !matches!(width, 1 | 2 | 4) || (ascii && kind != 1) {
        return None;
    }
    let chars = length.min(MAX_CHARS);
    let data = if chars == 0 {
        Vec::new()
    } else {
        memory::read(
            pid,
            addr.checked_add(u64::from(data_at))?,
            (chars * u64::from(width)) as usize,
        )?
    };
    let mut text = decode(&data, width)?;
    if length > chars {
        text.push('…');
    }
    Some(text)
}

/// Characters of `width` bytes each (1: latin-1, 2: UCS-2, 4: UCS-4); lone surrogates become
/// U+FFFD.
pub fn decode(data: &[u8], width: u32) -> Option<String> {
    let code_points: Vec<u32> = match width {
        1 => data.iter().map(|&b| u32::from(b)).collect(),
        2 => data
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        4 => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => return None,
    };
    Some(
        code_points
            .into_iter()
            .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    )
}
