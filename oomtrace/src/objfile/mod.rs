//! Opening the object files a traced process maps, without letting that process choose what
//! oomtrace (running as root) opens or how much of it it reads.
//!
//! A traced process may map anything: PostgreSQL's shared memory is `/dev/zero (deleted)`,
//! databases map files of many GiB, and a process in a container can replace a mapped path with a
//! symlink to any host file. So:
//!
//! - a mapped object is opened through the mapping itself (`/proc/PID/map_files/START-END`),
//!   which works for deleted files and inside other mount namespaces; failing that, by its path
//!   inside the process's root (`openat2` with `RESOLVE_IN_ROOT`); for a process already gone, by
//!   its path from the host's root. A path-based open refuses any symlink on the way (the kernel
//!   reports mapped paths without symlinks, so a symlink means the path changed since) and checks
//!   the file's (device, inode) against the ones the kernel reported for the mapping;
//! - every open is `O_PATH` first: only a regular file is ever opened for reading (no device,
//!   FIFO or socket is opened at all), and only one that starts with ELF magic is kept;
//! - nothing is read whole: [`ObjFile::read_vec`] takes a bound, and [`elf::ElfLayout`] reads
//!   only headers and the sections asked for, each under a cap.
//!
//! Refusals are typed ([`Refused`]) and, with `OOMTRACE_VERBOSE=1`, each is one line on stderr.

pub mod elf;
pub mod maps;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that turns on one line per refused file (`OOMTRACE_VERBOSE=1`).
pub const VERBOSE_ENV: &str = "OOMTRACE_VERBOSE";

/// Whether refusals are reported (`OOMTRACE_VERBOSE` set to anything but empty or `0`).
pub fn verbose() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(VERBOSE_ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Reports, in verbose mode, that `what` was not read and why.
pub fn note_refusal(what: &dyn std::fmt::Display, why: &Refused) {
    if verbose() {
        crate::say!("oomtrace: verbose: not reading {what}: {why}");
    }
}

/// A file's identity: (device, inode), as `stat` gives it and the kernel reports for a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`, in the C library's `dev_t` encoding.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// From the device's major and minor numbers (`/proc/PID/maps`, perf `MMAP2` records).
    pub fn from_parts(major: u32, minor: u32, ino: u64) -> Self {
        Self {
            dev: libc::makedev(major, minor),
            ino,
        }
    }

    fn of(meta: &libc::stat) -> Self {
        Self {
            dev: meta.st_dev,
            ino: meta.st_ino,
        }
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02x}:{:02x} inode {}",
            libc::major(self.dev),
            libc::minor(self.dev),
            self.ino
        )
    }
}

/// Why a file was not opened or not read. Callers branch on it (retry later, or never).
#[derive(Debug)]
#[non_exhaustive]
pub enum Refused {
    /// Not a regular file: a device, FIFO, socket or directory (named). Never opened.
    NotRegular(&'static str),
    /// A regular file that does not start with ELF magic (shared memory, a memfd of data).
    NotElf,
    /// The path leads to another file than the one mapped.
    Mismatch {
        /// What the kernel reported for the mapping.
        expected: FileId,
        /// What the path leads to now.
        found: FileId,
    },
    /// The path passes through a symlink, so it is no longer the path that was mapped.
    Symlink,
    /// The file changed (inode, size or modification time) between its check and its use.
    Changed,
    /// The process or its mapping is gone.
    Gone,
    /// A read would pass its bound.
    TooLarge {
        /// What was to be read.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The ELF structures are not what they say they are.
    Malformed(&'static str),
    /// Any other I/O error.
    Io(io::Error),
}

impl Refused {
    /// Whether the refusal is about the file itself (it will be refused again by any path), not
    /// about the way it was reached.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::NotRegular(_)
                | Self::NotElf
                | Self::Changed
                | Self::TooLarge { .. }
                | Self::Malformed(_)
        )
    }

    fn from_errno(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ELOOP) => Self::Symlink,
            Some(libc::ENOENT | libc::ESRCH) => Self::Gone,
            _ => Self::Io(e),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRegular(kind) => write!(f, "a {kind}, not a regular file"),
            Self::NotElf => f.write_str("not an ELF object (no ELF magic)"),
            Self::Mismatch { expected, found } => write!(
                f,
                "the path now leads to another file ({found}) than the one mapped ({expected})"
            ),
            Self::Symlink => {
                f.write_str("the path has a symlink in it: it changed since it was mapped")
            }
            Self::Changed => f.write_str("the file changed while it was being read"),
            Self::Gone => f.write_str("the process or the mapping is gone"),
            Self::TooLarge { what, size, limit } => {
                write!(f, "its {what} is {size} bytes, over the {limit}-byte bound")
            }
            Self::Malformed(what) => write!(f, "malformed ELF: {what}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Refused {}

/// An ELF object file opened for reading after every check: a regular file with ELF magic, the
/// one that was mapped where a mapping named it.
#[derive(Debug)]
pub struct ObjFile {
    file: File,
    id: FileId,
    size: u64,
    mtime: (i64, i64),
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, O_PATH | O_CLOEXEC, resolve)`.
fn openat2_path(dir: BorrowedFd<'_>, path: &Path, resolve: u64) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and a `struct open_how`
    // of the size passed; it only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `open(path, O_PATH | O_CLOEXEC)`, following symlinks (magic ones included).
fn open_path_fd(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path; O_PATH opens nothing for I/O.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: all-zero is a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills the struct we own from a descriptor we hold.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn kind_of(mode: libc::mode_t) -> Option<&'static str> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFCHR => Some("character device"),
        libc::S_IFBLK => Some("block device"),
        libc::S_IFIFO => Some("FIFO"),
        libc::S_IFSOCK => Some("socket"),
        libc::S_IFDIR => Some("directory"),
        libc::S_IFLNK => Some("symlink"),
        _ => Some("special file"),
    }
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Opens a regular file named by the user or the host (a command, a script): symlinks followed,
/// but a device, FIFO or socket is refused without being opened (a FIFO would block the open).
pub fn open_regular_trusted(path: &Path) -> Result<File, Refused> {
    let fd = open_path_fd(path).map_err(Refused::Io)?;
    Ok(reopen_regular(fd, None)?.file)
}

/// The regular file an `O_PATH` descriptor holds, reopened for reading, if it is `expected`.
fn reopen_regular(opath: OwnedFd, expected: Option<FileId>) -> Result<ObjFile, Refused> {
    let st = fstat(opath.as_fd()).map_err(Refused::Io)?;
    if let Some(kind) = kind_of(st.st_mode) {
        return Err(Refused::NotRegular(kind));
    }
    let found = FileId::of(&st);
    if let Some(expected) = expected
        && expected != found
    {
        return Err(Refused::Mismatch { expected, found });
    }
    // Reopen the very inode the O_PATH descriptor holds (not the path again, which may have
    // changed since): through our own descriptor's magic link.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", opath.as_raw_fd()))
        .map_err(Refused::Io)?;
    let meta = file.metadata().map_err(Refused::Io)?;
    let obj = ObjFile {
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        file,
    };
    if obj.id != found || obj.size != st.st_size as u64 {
        return Err(Refused::Changed);
    }
    Ok(obj)
}

impl ObjFile {
    /// Opens the object mapped at `start..end` in process `pid`, whose kernel-reported identity
    /// is `id` and path (as the process sees it, without " (deleted)") is `path`: through the
    /// mapping, else by `path` inside the process's root.
    pub fn open_mapping(
        pid: u32,
        start: u64,
        end: u64,
        id: FileId,
        path: &Path,
    ) -> Result<Self, Refused> {
        let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
        // The mapping names its file; checked anyway: the range may have been remapped since
        // the maps were read. It fails without CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE), or
        // when the mapping was split or merged since: then the path, checked the same way.
        if let Ok(fd) = open_path_fd(&map_file) {
            return Self::checked(fd, Some(id));
        }
        let root =
            open_path_fd(Path::new(&format!("/proc/{pid}/root"))).map_err(Refused::from_errno)?;
        Self::open_in_root(root.as_fd(), path, id)
    }

    /// Opens `path` as resolved inside the directory `root` taken as `/` (`RESOLVE_IN_ROOT`),
    /// through no symlink, and only if it is the file `id`.
    pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, id: FileId) -> Result<Self, Refused> {
        let fd = openat2_path(
            root,
            path,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        )
        .map_err(Refused::from_errno)?;
        Self::checked(fd, Some(id))
    }

    /// Opens `path` from the host's root, for the mapping of a process that is gone: through no
    /// symlink, and only if it is the file `id` the kernel recorded.
    pub fn open_on_host(path: &Path, id: FileId) -> Result<Self, Refused> {
        // SAFETY: AT_FDCWD is a valid "descriptor" for openat2 and is never closed.
        let cwd = unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) };
        let fd = openat2_path(
            cwd,
            path,
            libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        )
        .map_err(Refused::from_errno)?;
        Self::checked(fd, Some(id))
    }

    /// Opens a file named by the user or the host's dynamic linker (a command, a library it
    /// needs): symlinks followed, no identity to check, but still only a regular ELF file.
    pub fn open_trusted(path: &Path) -> Result<Self, Refused> {
        let fd = open_path_fd(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Refused::Io(e),
            _ => Refused::from_errno(e),
        })?;
        Self::checked(fd, None)
    }

    /// From an `O_PATH` descriptor: regular, the expected file, reopened for reading, ELF magic.
    fn checked(opath: OwnedFd, expected: Option<FileId>) -> Result<Self, Refused> {
        let obj = reopen_regular(opath, expected)?;
        let mut magic = [0u8; 4];
        if obj.size < 4 || obj.file.read_exact_at(&mut magic, 0).is_err() || magic != ELF_MAGIC {
            return Err(Refused::NotElf);
        }
        Ok(obj)
    }

    /// The file's identity.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Its size when opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A path that names this very file for as long as it is open (`/proc/self/fd/N`), for
    /// libraries that want a path.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Whether the file is still as it was opened (inode, size, modification time).
    pub fn unchanged(&self) -> bool {
        self.file.metadata().is_ok_and(|m| {
            m.dev() == self.id.dev
                && m.ino() == self.id.ino
                && m.size() == self.size
                && (m.mtime(), m.mtime_nsec()) == self.mtime
        })
    }

    /// Fills `buf` from `offset`; a file that ends early has changed (or lied about its size).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Refused> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(Refused::Malformed(
                "a structure lies past the end of the file",
            ));
        }
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Refused::Changed
            } else {
                Refused::Io(e)
            }
        })
    }

    /// Reads `len` bytes at `offset`, refusing any `len` over `limit` (`what` names it).
    pub fn read_vec(
        &self,
        offset: u64,
        len: u64,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Refused> {
        if len > limit {
            return Err(Refused::TooLarge {
                what,
                size: len,
                limit,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl AsFd for ObjFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests;
