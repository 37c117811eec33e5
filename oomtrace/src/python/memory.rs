//! Small reads of another process's memory (`process_vm_readv`, through the leak scanner's
//! reader): all or nothing, so a half-read structure is never decoded.

use crate::leaks::remote::ProcessMemory;
use crate::leaks::scan::Memory as _;

/// The most bytes one read asks for (a line table, a long file name).
pub const MAX_READ: usize = 1 << 20;

/// `len` bytes at `addr` in process `pid`, or `None` if any of them could not be read.
pub fn read(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    if len > MAX_READ || addr.checked_add(len as u64).is_none() {
        return None;
    }
    let mut out = Vec::new();
    let got = ProcessMemory { pid: pid as i32 }.read_many(&[(addr, len)], &mut out);
    (got.first() == Some(&len)).then_some(out)
}

/// The native-endian `u64` at `addr`.
pub fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    read(pid, addr, 8).map(|b| u64_at(&b, 0))
}

/// The little-endian `u64` at `at` in `bytes` (0 past the end).
pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The little-endian `u32` at `at` in `bytes` (0 past the end).
pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
