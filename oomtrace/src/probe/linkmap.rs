//! A running process's link map: the objects its dynamic linker loaded, in the order it searches
//! them for a symbol (the executable, `LD_PRELOAD`, then the libraries breadth-first, then what
//! was `dlopen`ed globally). That order decides which object's `malloc` the process calls, so
//! oomtrace reads it from the process itself rather than guess from addresses.
//!
//! The way there: `/proc/PID/auxv` gives the program headers' address (`AT_PHDR`), they give the
//! dynamic section, whose `DT_DEBUG` entry the dynamic linker points at its `r_debug`, whose
//! `r_map` heads the list. Every read goes through `/proc/PID/mem` with a bound; a process that
//! is not dynamically linked, or has not finished loading, has no list (`None`).

use std::fs::File;
use std::os::unix::fs::FileExt as _;

const AT_PHDR: u64 = 3;
const AT_PHNUM: u64 = 5;
const PT_DYNAMIC: u32 = 2;
const PT_PHDR: u32 = 6;
const DT_NULL: u64 = 0;
const DT_DEBUG: u64 = 21;
/// Objects followed at most (a bound on a list the traced process writes).
pub const MAX_OBJECTS: usize = 4096;
/// Dynamic entries read at most.
const MAX_DYNAMIC: usize = 512;
/// Longest object name read.
const MAX_NAME: usize = 4096;

/// A process's address space, read through `/proc/PID/mem`.
struct Memory(File);

impl Memory {
    fn u64_at(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, addr).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn u32_at(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.0.read_exact_at(&mut b, addr).ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// A NUL-terminated string of at most [`MAX_NAME`] bytes.
    fn string_at(&self, addr: u64) -> Option<String> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        while out.len() < MAX_NAME {
            let n = self.0.read_at(&mut chunk, addr + out.len() as u64).ok()?;
            if n == 0 {
                break;
            }
            if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..n]);
        }
        None
    }
}

/// The value of `key` in an auxiliary vector (pairs of native-endian u64).
pub fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let k = u64::from_le_bytes(pair[..8].try_into().ok()?);
        let v = u64::from_le_bytes(pair[8..].try_into().ok()?);
        (k == key).then_some(v)
    })
}

/// The names of process `pid`'s loaded objects in link-map order. The first is the executable
/// (an empty name), the rest as the dynamic linker named them (paths in the process's own
/// filesystem view); the vDSO is skipped. `None`: no list to read.
pub fn objects(pid: u32) -> Option<Vec<String>> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let phdr = auxv_value(&auxv, AT_PHDR)?;
    let phnum = auxv_value(&auxv, AT_PHNUM)?.min(256);
    let mem = Memory(File::open(format!("/proc/{pid}/mem")).ok()?);
    // Program headers are 56 bytes: p_type at 0, p_vaddr at 16.
    let (mut dynamic, mut phdr_vaddr) = (None, None);
    for i in 0..phnum {
        let at = phdr + i * 56;
        match mem.u32_at(at)? {
            PT_DYNAMIC => dynamic = Some(mem.u64_at(at + 16)?),
            PT_PHDR => phdr_vaddr = Some(mem.u64_at(at + 16)?),
            _ => {}
        }
    }
    // The load bias: where the headers are, less where the file says they are.
    let bias = phdr - phdr_vaddr.unwrap_or(0);
    let dynamic = bias + dynamic?;
    let mut r_debug = None;
    for i in 0..MAX_DYNAMIC as u64 {
        let tag = mem.u64_at(dynamic + i * 16)?;
        if tag == DT_NULL {
            break;
        }
        if tag == DT_DEBUG {
            r_debug = Some(mem.u64_at(dynamic + i * 16 + 8)?);
            break;
        }
    }
    let r_debug = r_debug.filter(|&a| a != 0)?;
    // struct r_debug { int r_version; struct link_map *r_map; ... }
    let mut node = mem.u64_at(r_debug + 8)?;
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // struct link_map { l_addr; char *l_name; l_ld; l_next; l_prev; }
    while node != 0 && names.len() < MAX_OBJECTS && seen.insert(node) {
        let name = mem.string_at(mem.u64_at(node + 8)?).unwrap_or_default();
        if !name.starts_with("linux-vdso") && !name.starts_with("linux-gate") {
            names.push(name);
        }
        node = mem.u64_at(node + 24)?;
    }
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxv_pairs() {
        let mut v = Vec::new();
        for (k, val) in [(AT_PHDR, 0x40_0040u64), (AT_PHNUM, 13), (0, 0)] {
            v.extend_from_slice(&k.to_le_bytes());
            v.extend_from_slice(&val.to_le_bytes());
        }
        assert_eq!(auxv_value(&v, AT_PHNUM), Some(13));
        assert_eq!(auxv_value(&v, AT_PHDR), Some(0x40_0040));
        assert_eq!(auxv_value(&v, 99), None);
        assert_eq!(auxv_value(&v[..7], AT_PHDR), None);
    }

    /// Our own process: the executable first, libc among the rest, in the loader's order.
    #[test]
    fn our_own_link_map() {
        let names = objects(std::process::id()).expect("a dynamically linked test binary");
        assert_eq!(names[0], "", "{names:?}");
        let libc = names.iter().position(|n| n.ends_with("/libc.so.6"));
        assert!(libc.is_some(), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("vdso")), "{names:?}");
    }
}
