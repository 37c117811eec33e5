//! The refusal cases, the bounds and the maps parser, on real files of each kind.

use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::elf::ElfLayout;
use super::maps::{self, parse_line};
use super::*;

/// A fresh directory, removed at drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("oomtrace-objfile-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id_of(path: &Path) -> FileId {
    let m = std::fs::metadata(path).unwrap();
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

fn own_exe() -> PathBuf {
    std::fs::read_link("/proc/self/exe").unwrap()
}

/// A small ELF file to copy around (our own test binary is large).
fn small_elf() -> PathBuf {
    let sh = crate::probe::target::resolve_command(std::ffi::OsStr::new("sh")).unwrap();
    std::fs::canonicalize(sh).unwrap()
}

fn our_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn maps_lines_parse_with_device_and_inode() {
    let line = "7f3c5a200000-7f3c5a228000 r-xp 00028000 fe:01 1835043                    \
                /usr/lib/x86_64-linux-gnu/libc.so.6";
    let m = parse_line(line).unwrap();
    assert_eq!(
        (m.start, m.end, m.offset, &m.perms),
        (0x7f3c5a200000, 0x7f3c5a228000, 0x28000, b"r-xp")
    );
    assert_eq!(m.id, FileId::from_parts(0xfe, 1, 1835043));
    assert_eq!(m.path, Some("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert!(m.exec() && !m.deleted);
    assert_eq!(m.file(), m.path);

    // PostgreSQL's shared memory: a deleted path (with a space in a name, too).
    let m = parse_line("7f00-7f10 rw-s 00000000 00:01 3074   /dev/zero (deleted)").unwrap();
    assert_eq!(
        (m.path, m.deleted, m.exec()),
        (Some("/dev/zero"), true, false)
    );
    let m = parse_line("1000-2000 r-xp 00000000 08:02 77 /tmp/a dir/lib x.so (deleted)").unwrap();
    assert_eq!((m.path, m.deleted), (Some("/tmp/a dir/lib x.so"), true));

    // Anonymous memory and pseudo-files are not files.
    let m = parse_line("55d0-55e0 rw-p 00000000 00:00 0 ").unwrap();
    assert_eq!((m.path, m.file()), (None, None));
    let m = parse_line("7ffd-7ffe r-xp 00000000 00:00 0                  [vdso]").unwrap();
    assert_eq!((m.path, m.file()), (Some("[vdso]"), None));

    assert_eq!(parse_line("garbage"), None);
    assert_eq!(parse_line("1000-2000 r-xp 0 zz:01 5 /x"), None);
}

#[test]
fn our_own_maps_name_our_executable_with_its_identity() {
    let text = maps::read(std::process::id()).unwrap();
    assert!(!text.truncated);
    let exe = own_exe();
    let line = text
        .lines()
        .find(|l| l.exec() && l.file() == exe.to_str())
        .expect("our executable is mapped executable");
    assert_eq!(line.id, id_of(&exe));
}

#[test]
fn maps_text_is_bounded_to_whole_lines() {
    let dir = TempDir::new("maps");
    let path = dir.0.join("maps");
    let line = "1000-2000 r-xp 00000000 08:02 77 /lib/x.so\n";
    std::fs::write(&path, line.repeat(100)).unwrap();
    let whole = maps::read_from(&path, 1 << 20).unwrap();
    assert_eq!((whole.lines().count(), whole.truncated), (100, false));
    // 10.5 lines' worth: 10 whole lines, and the cut is said.
    let cut = maps::read_from(&path, line.len() as u64 * 21 / 2).unwrap();
    assert_eq!((cut.lines().count(), cut.truncated), (10, true));
    assert!(cut.text.ends_with('\n'));
}

#[test]
fn an_executable_opens_and_its_headers_are_read() {
    let exe = own_exe();
    let obj = ObjFile::open_trusted(&exe).unwrap();
    assert_eq!(obj.id(), id_of(&exe));
    assert!(obj.unchanged());
    let layout = ElfLayout::read(obj).unwrap();
    assert!(!layout.segments().is_empty());
    assert!(layout.has_section(b".text"), "a Rust test binary has .text");
    assert!(!layout.has_section(b".no-such-section"));
}

#[test]
fn devices_fifos_and_sockets_are_refused_unopened() {
    for (path, kind) in [
        ("/dev/null", "character device"),
        ("/dev/zero", "character device"),
    ] {
        let err = ObjFile::open_trusted(Path::new(path)).unwrap_err();
        assert!(
            matches!(err, Refused::NotRegular(k) if k == kind),
            "{path}: {err}"
        );
        assert!(err.is_final());
    }
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Opening a FIFO for reading would block until a writer came: this returns at once.
    let err = ObjFile::open_trusted(&fifo).unwrap_err();
    assert!(matches!(err, Refused::NotRegular("FIFO")), "{err}");
    assert!(matches!(
        open_regular_trusted(&fifo),
        Err(Refused::NotRegular("FIFO"))
    ));
    let sock = dir.0.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = ObjFile::open_trusted(&sock).unwrap_err();
    assert!(matches!(err, Refused::NotRegular("socket")), "{err}");
    let err = ObjFile::open_trusted(&dir.0).unwrap_err();
    assert!(matches!(err, Refused::NotRegular("directory")), "{err}");
}

#[test]
fn a_file_without_elf_magic_is_refused() {
    let dir = TempDir::new("text");
    let text = dir.0.join("text");
    std::fs::write(&text, "#!/bin/sh\necho hello\n").unwrap();
    assert!(matches!(ObjFile::open_trusted(&text), Err(Refused::NotElf)));
    let empty = dir.0.join("empty");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        ObjFile::open_trusted(&empty),
        Err(Refused::NotElf)
    ));
}

#[test]
fn a_memfd_without_elf_magic_is_refused_and_one_with_it_is_kept() {
    let memfd = |contents: &[u8]| -> OwnedFd {
        let name = CString::new("oomtrace-test").unwrap();
        // SAFETY: a NUL-terminated name; the descriptor is owned below.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone().unwrap())
            .write_all(contents)
            .unwrap();
        fd
    };
    let data = memfd(b"some shared data, not code");
    let path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&data)
    ));
    assert!(matches!(ObjFile::open_trusted(&path), Err(Refused::NotElf)));
    let exe = std::fs::read(small_elf()).unwrap();
    let code = memfd(&exe);
    let path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&code)
    ));
    let obj = ObjFile::open_trusted(&path).unwrap();
    assert_eq!(obj.size(), exe.len() as u64);
    assert!(ElfLayout::read(obj).is_ok());
}

/// A 4 GiB sparse file costs its headers: reading it fails at the magic, and a bounded read past
/// the bound is refused before anything is allocated.
#[test]
fn a_sparse_4_gib_file_costs_nothing() {
    let dir = TempDir::new("sparse");
    let path = dir.0.join("sparse");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(4 << 30).unwrap();
    drop(f);
    let before = our_rss_kib();
    assert!(matches!(ObjFile::open_trusted(&path), Err(Refused::NotElf)));
    // With an ELF header whose symbol table claims 3 GiB: the headers are read, the table is
    // refused before anything is allocated for it.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let shoff: u64 = (4 << 30) - 128;
    let mut header = [0u8; 64];
    header[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    header[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    header[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    header[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
    let mut symtab = [0u8; 64];
    symtab[4..8].copy_from_slice(&2u32.to_le_bytes()); // SHT_SYMTAB
    symtab[24..32].copy_from_slice(&64u64.to_le_bytes());
    symtab[32..40].copy_from_slice(&(3u64 << 30).to_le_bytes());
    std::os::unix::fs::FileExt::write_all_at(&f, &header, 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &symtab, shoff + 64).unwrap();
    drop(f);
    let obj = ObjFile::open_trusted(&path).unwrap();
    assert_eq!(obj.size(), 4 << 30);
    assert!(matches!(
        obj.read_vec(0, 4 << 30, 1 << 20, "everything"),
        Err(Refused::TooLarge { .. })
    ));
    let layout = ElfLayout::read(obj).unwrap();
    assert_eq!(layout.sections().len(), 2);
    assert!(matches!(
        layout.section_table::<object::elf::Sym64<object::Endianness>>(1, 64 << 20, "symbols"),
        Err(Refused::TooLarge { size, .. }) if size == 3 << 30
    ));
    // Other tests run beside this one: the bound is loose, reading the file would pass it 4x.
    let grown = our_rss_kib().saturating_sub(before);
    assert!(grown < 1 << 20, "RSS grew by {grown} KiB");
}

#[test]
fn a_path_through_a_symlink_is_refused_in_a_root() {
    let root = TempDir::new("root");
    let lib = root.0.join("lib");
    std::fs::create_dir(&lib).unwrap();
    let exe = small_elf();
    std::fs::copy(&exe, lib.join("real.so")).unwrap();
    let id = id_of(&lib.join("real.so"));
    let marker = root.0.join("marker");
    std::fs::write(&marker, "\x7fELF must stay unread").unwrap();
    std::os::unix::fs::symlink(&marker, lib.join("swapped.so")).unwrap();
    std::os::unix::fs::symlink("/lib/real.so", lib.join("abs.so")).unwrap();
    let dir = std::fs::File::open(&root.0).unwrap();
    // The real file, as the process would name it inside its root.
    let obj = ObjFile::open_in_root(dir.as_fd(), Path::new("/lib/real.so"), id).unwrap();
    assert_eq!(obj.id(), id);
    // A symlink anywhere on the way, even one that leads to the right file, is refused.
    for p in ["/lib/swapped.so", "/lib/abs.so"] {
        let err = ObjFile::open_in_root(dir.as_fd(), Path::new(p), id).unwrap_err();
        assert!(matches!(err, Refused::Symlink), "{p}: {err}");
        assert!(!err.is_final());
    }
    // `..` cannot climb out of the root.
    let err = ObjFile::open_in_root(dir.as_fd(), Path::new("/../../../../proc/self/exe"), id)
        .unwrap_err();
    assert!(matches!(err, Refused::Gone), "{err}");
    // Another file at the path is refused by its identity.
    std::fs::copy(&exe, lib.join("other.so")).unwrap();
    let err = ObjFile::open_in_root(dir.as_fd(), Path::new("/lib/other.so"), id).unwrap_err();
    assert!(matches!(err, Refused::Mismatch { .. }), "{err}");
}

#[test]
fn a_mapping_opens_through_map_files_even_deleted() {
    let dir = TempDir::new("deleted");
    let copy = dir.0.join("copy");
    std::fs::copy(small_elf(), &copy).unwrap();
    let f = std::fs::File::open(&copy).unwrap();
    let id = id_of(&copy);
    let len = 4096;
    // SAFETY: a private read-only mapping of a file we opened; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    drop(f);
    std::fs::remove_file(&copy).unwrap();
    let start = addr as u64;
    let line = maps::read(std::process::id())
        .unwrap()
        .lines()
        .find(|l| l.start == start)
        .map(|l| (l.id, l.deleted, l.path.map(str::to_owned)))
        .unwrap();
    assert_eq!((line.0, line.1), (id, true));
    let obj = ObjFile::open_mapping(
        std::process::id(),
        start,
        start + len as u64,
        id,
        Path::new(&line.2.unwrap()),
    );
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(addr, len) };
    // map_files needs CAP_SYS_ADMIN; the path is gone: without it, the file is unreachable.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(obj.unwrap().id(), id);
    } else {
        assert!(matches!(obj, Err(Refused::Gone)));
    }
}

#[test]
fn a_changed_file_is_noticed() {
    let dir = TempDir::new("changed");
    let path = dir.0.join("obj");
    std::fs::copy(small_elf(), &path).unwrap();
    let obj = ObjFile::open_trusted(&path).unwrap();
    assert!(obj.unchanged());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(!obj.unchanged());
    let mut buf = [0u8; 64];
    assert!(matches!(
        obj.read_exact_at(&mut buf, 1000),
        Err(Refused::Changed)
    ));
}
