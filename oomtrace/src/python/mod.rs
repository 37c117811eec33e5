//! CPython in a traced process: which interpreter it runs ([`detect`]), where its structures keep
//! what a frame reader needs ([`offsets`]), and what a code object and an instruction mean as a
//! function, file and line ([`code`], [`linetable`]).
//!
//! Nothing here needs the target's cooperation: the interpreter is found from the process's maps
//! and the symbols of the object that defines `_PyRuntime`; the rest is read from the process's
//! memory with `process_vm_readv`. See `docs/python.md`.

pub mod code;
pub mod linetable;
pub mod memory;
pub mod offsets;
pub mod walk;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::objfile::{FileId, ObjFile, maps};
use crate::probe::elf::ElfObject;

pub use code::{CodeReader, PyFrame};
pub use offsets::Offsets;

/// A CPython interpreter found in a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// (major, minor), e.g. (3, 11).
    pub version: (u8, u8),
    /// The ELF object that holds `_PyRuntime` (libpython3.X.so or a static python3.X).
    pub module: PathBuf,
    /// Absolute address of `_PyRuntime` in the process.
    pub runtime: u64,
    /// Where the fields are, for this version (3.13+: read from `_Py_DebugOffsets`).
    pub offsets: Offsets,
    /// Absolute address of `PyCode_Type`, when the object exports it: the reader checks that
    /// what a frame points at is a code object before it names it.
    pub code_type: Option<u64>,
}

/// The oldest and newest (major, minor) read: 3.8 to 3.12 from baked tables, 3.13 from
/// `_Py_DebugOffsets`.
pub const SUPPORTED: std::ops::RangeInclusive<(u8, u8)> = (3, 8)..=(3, 13);

/// Finds the interpreter of process `pid` from its maps and the mapped objects' symbols.
///
/// `Ok(None)`: not a Python process. `Err`: a CPython whose layout oomtrace does not know, or
/// one it could not read (one line saying which and why).
pub fn detect(pid: u32) -> Result<Option<Interpreter>> {
    let text = maps::read(pid).with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    let exe_id = std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    });
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        let Some(path) = line.file() else { continue };
        if !line.exec() || !seen.insert(line.id) {
            continue;
        }
        let name = file_name(path);
        let is_libpython = name.starts_with("libpython3");
        // A statically linked interpreter (Debian's) or a venv's copy of one.
        let is_python_exe = Some(line.id) == exe_id && name.starts_with("python");
        if !(is_libpython || is_python_exe) {
            continue;
        }
        let file = match ObjFile::open_mapping(pid, line.start, line.end, line.id, Path::new(path))
        {
            Ok(f) => f,
            Err(why) => bail!("cannot read {path} (mapped by pid {pid}): {why}"),
        };
        let elf = ElfObject::from_file(file, Path::new(path))
            .map_err(|why| anyhow::anyhow!("cannot read {path}: {why}"))?;
        let Some((runtime_vaddr, _)) = elf.symbol("_PyRuntime") else {
            continue;
        };
        let vstart = elf.mapping_vaddr(line.offset, true).with_context(|| {
            format!(
                "{path}: no loadable segment maps file offset {:#x}",
                line.offset
            )
        })?;
        let bias = line.start.wrapping_sub(vstart);
        let version = version_of(pid, &elf, bias, name).with_context(|| {
            format!("pid {pid} runs CPython from {path}, but its version could not be told")
        })?;
        let runtime = bias.wrapping_add(runtime_vaddr);
        let offsets = offsets_for(pid, version, runtime).with_context(|| {
            format!(
                "pid {pid} runs CPython {}.{} ({path})",
                version.0, version.1
            )
        })?;
        return Ok(Some(Interpreter {
            version,
            module: PathBuf::from(path),
            runtime,
            offsets,
            code_type: elf.symbol("PyCode_Type").map(|(v, _)| bias.wrapping_add(v)),
        }));
    }
    Ok(None)
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The (major, minor) of the interpreter in `elf` (mapped with `bias`): `Py_Version` (3.11+)
/// from the process's memory, else the object's file name.
fn version_of(pid: u32, elf: &ElfObject, bias: u64, name: &str) -> Result<(u8, u8)> {
    if let Some((vaddr, _)) = elf.symbol("Py_Version") {
        // `const unsigned long Py_Version = PY_VERSION_HEX;`: 0xMMmmppRS.
        let hex = memory::read_u64(pid, bias.wrapping_add(vaddr))
            .context("cannot read Py_Version from the process")?
            & 0xffff_ffff;
        return Ok(((hex >> 24) as u8, (hex >> 16) as u8));
    }
    version_from_name(name).with_context(|| {
        format!(
            "{name} exports no Py_Version and its name holds no version (libpython3.X, python3.X)"
        )
    })
}

/// `libpython3.10.so.1.0`, `python3.9`, `python3.8d` → (3, minor).
pub fn version_from_name(name: &str) -> Option<(u8, u8)> {
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The offsets of `version`: baked (3.8–3.12) or read from `_Py_DebugOffsets` at `runtime`.
fn offsets_for(pid: u32, version: (u8, u8), runtime: u64) -> Result<Offsets> {
    if let Some(baked) = offsets::baked(version) {
        return Ok(baked);
    }
    if version < *SUPPORTED.start() {
        bail!(
            "CPython {}.{} is older than the 3.8 oomtrace reads: Python frames are left out",
            version.0,
            version.1
        );
    }
    let bytes = memory::read(pid, runtime, offsets::DEBUG_OFFSETS_LEN)
        .context("cannot read _Py_DebugOffsets from the start of _PyRuntime")?;
    Offsets::from_debug_offsets(&bytes, version)
}
