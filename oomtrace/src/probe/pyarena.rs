//! Where CPython's arena allocator is (`_PyObject_ArenaMmap`, `_PyObject_ArenaMunmap`): the two
//! functions through which pymalloc maps and unmaps its arenas. Probed as part of CPython's
//! allocator layer, they make the arenas that layer's internal mappings — never counted as
//! mappings of their own, whichever code path asked for a new arena (optimized interpreters
//! inline pymalloc's fast path into hundreds of callers, which call the arena allocator
//! directly).
//!
//! Both are static functions. A build with a full symbol table (pyenv's) names them; a stripped
//! one (Debian's python3.11) does not, so they are found the way CPython finds them: through
//! the arena allocator's table (`{ctx, alloc, free}`), whose address the exported
//! `PyObject_GetArenaAllocator` loads first, and whose pointers an executable that is not
//! position-independent holds as plain data.

use iced_x86::{Decoder, DecoderOptions};

use super::elf::{ElfObject, FuncSymbol};

/// The arena allocator's two functions' names.
pub const MMAP: &str = "_PyObject_ArenaMmap";
/// See [`MMAP`].
pub const MUNMAP: &str = "_PyObject_ArenaMunmap";

/// Bytes of code read of a function found through the table (enough for placement).
const CODE: u64 = 64;
/// Instructions of `PyObject_GetArenaAllocator` looked at.
const MAX_INSTRUCTIONS: usize = 16;

/// The function named `name` ([`MMAP`] or [`MUNMAP`]) in `elf`: by symbol (3.12+ call them
/// `_PyMem_ArenaAlloc`/`_PyMem_ArenaFree`), else, in 3.8–3.11, through the arena allocator's
/// table.
pub fn find(elf: &ElfObject, name: &str) -> Option<FuncSymbol> {
    let (slot, alias) = match name {
        MMAP => (1, "_PyMem_ArenaAlloc"),
        MUNMAP => (2, "_PyMem_ArenaFree"),
        _ => return None,
    };
    if let Some(f) = elf.function(name).or_else(|| elf.function(alias)) {
        return Some(f);
    }
    // 3.12+ keep the table in `_PyRuntime` and their getter reads it under a lock: only a
    // 3.8–3.11 getter is decoded (`Py_Version` is 3.11+; absent before).
    if let Some(version) = elf
        .function("Py_Version")
        .and_then(|v| v.code.get(..8).map(<[u8]>::to_vec))
    {
        let hex = u64::from_le_bytes(version.try_into().ok()?);
        if (hex >> 16) & 0xffff > 0x030b {
            return None;
        }
    }
    let table = table_vaddr(&elf.function("PyObject_GetArenaAllocator")?)?;
    let words = elf.read_vaddr(table, 24)?;
    let word =
        |i: usize| u64::from_le_bytes(words[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    // `{ctx = NULL, alloc, free}`, both pointing at code; a relocated table (a
    // position-independent object) holds zeros in the file and is not guessed at.
    let target = word(slot);
    if word(0) != 0 || !elf.in_exec_segment(word(1)) || !elf.in_exec_segment(word(2)) {
        return None;
    }
    elf.function_at(name, target, CODE)
}

/// The address `PyObject_GetArenaAllocator` copies the table from: its first RIP-relative load
/// (3.8–3.11: `*allocator = _PyObject_Arena`).
fn table_vaddr(f: &FuncSymbol) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, &f.code, f.vaddr, DecoderOptions::NONE);
    decoder
        .iter()
        .take(MAX_INSTRUCTIONS)
        .find(|i| i.is_ip_rel_memory_operand())
        .map(|i| i.ip_rel_memory_address())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's stripped python3.11: both found through the table, each a function that maps
    /// or unmaps (it calls mmap/munmap through the PLT, within its first bytes).
    #[test]
    fn arenas_of_debians_python_are_found_without_symbols() {
        let path = std::path::Path::new("/usr/bin/python3.11");
        if !path.exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but Debian's python3.11 is missing"
            );
            return;
        }
        let elf = ElfObject::open(path).unwrap();
        assert!(elf.function(MMAP).is_none(), "stripped: no symbol");
        let mmap = find(&elf, MMAP).expect("found through the table");
        let munmap = find(&elf, MUNMAP).expect("found through the table");
        assert_ne!(mmap.vaddr, munmap.vaddr);
        // Each calls into the PLT: decode and check a near call lies within the code read.
        for f in [&mmap, &munmap] {
            let calls = Decoder::with_ip(64, &f.code, f.vaddr, DecoderOptions::NONE)
                .iter()
                .take_while(|i| !i.is_invalid())
                .filter(|i| i.is_call_near() || i.is_jmp_near())
                .count();
            assert!(calls > 0, "{}: no call in {:02x?}", f.name, f.code);
        }
    }

    /// A pyenv build keeps its symbol table: by name.
    #[test]
    fn arenas_of_a_symbolized_libpython_are_found_by_name() {
        let Ok(dir) = std::fs::read_dir("/root/.pyenv/versions") else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().into_string().unwrap_or_default();
            let Some(minor) = name.strip_prefix("3.").and_then(|r| r.split('.').next()) else {
                continue;
            };
            let lib = e.path().join(format!("lib/libpython3.{minor}.so.1.0"));
            let Ok(elf) = ElfObject::open(&lib) else {
                continue;
            };
            if elf.function("_PyRuntime").is_none() && elf.symbol("_PyRuntime").is_none() {
                continue;
            }
            assert!(find(&elf, MMAP).is_some(), "{}", lib.display());
            assert!(find(&elf, MUNMAP).is_some(), "{}", lib.display());
        }
    }
}
