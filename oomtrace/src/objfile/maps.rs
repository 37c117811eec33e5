//! `/proc/PID/maps`, read under a bound and parsed with each mapping's device and inode: what a
//! mapped file is checked against when it is opened.

use std::io::{self, Read as _};
use std::path::Path;

use super::FileId;

/// The most text read from one `/proc/PID/maps` (a process may have 65,530 mappings with paths of
/// up to 4 KiB each); what lies past it is dropped and counted.
pub const MAX_MAPS_BYTES: u64 = 8 << 20;

/// One process's maps text, complete lines only.
#[derive(Debug, Default)]
pub struct MapsText {
    /// The text, cut after its last complete line within the bound.
    pub text: String,
    /// Whether the bound cut it.
    pub truncated: bool,
}

impl MapsText {
    /// The parsed lines (unparseable ones skipped).
    pub fn lines(&self) -> impl Iterator<Item = MapsLine<'_>> {
        self.text.lines().filter_map(parse_line)
    }
}

/// Reads `/proc/PID/maps` (at most [`MAX_MAPS_BYTES`]).
pub fn read(pid: u32) -> io::Result<MapsText> {
    read_from(Path::new(&format!("/proc/{pid}/maps")), MAX_MAPS_BYTES)
}

/// Reads a maps file, at most `limit` bytes of it.
pub fn read_from(path: &Path, limit: u64) -> io::Result<MapsText> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    let truncated = buf.len() as u64 > limit;
    if truncated {
        // Keep whole lines only.
        let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(end);
    }
    Ok(MapsText {
        // Paths are bytes; a non-UTF-8 one becomes a path that no open will find.
        text: String::from_utf8_lossy(&buf).into_owned(),
        truncated,
    })
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// `r-xp`-style permissions.
    pub perms: [u8; 4],
    /// The mapped file's identity (zero for anonymous memory).
    pub id: FileId,
    /// The path or pseudo-name (`[heap]`), without a trailing " (deleted)"; `None` for anonymous.
    pub path: Option<&'a str>,
    /// Whether the kernel marked the file deleted.
    pub deleted: bool,
}

impl<'a> MapsLine<'a> {
    /// Whether it is executable.
    pub fn exec(&self) -> bool {
        self.perms[2] == b'x'
    }

    /// The path of a mapped file (an absolute path with a real inode), if this maps one.
    pub fn file(&self) -> Option<&'a str> {
        self.path.filter(|p| p.starts_with('/') && self.id.ino != 0)
    }
}

const DELETED: &str = " (deleted)";

/// Parses `start-end perms offset maj:min inode   [path]`.
pub fn parse_line(line: &str) -> Option<MapsLine<'_>> {
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start_matches(' ');
        let end = s.find(' ').unwrap_or(s.len());
        let (f, r) = s.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let (range, perms, offset, dev, inode) = (field()?, field()?, field()?, field()?, field()?);
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let perms: [u8; 4] = perms.as_bytes().try_into().ok()?;
    let path = rest.trim_start_matches(' ');
    let (path, deleted) = match path.strip_suffix(DELETED) {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(MapsLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        perms,
        id: FileId::from_parts(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
            inode.parse().ok()?,
        ),
        path: (!path.is_empty()).then_some(path),
        deleted,
    })
}
