//! Which object file's `malloc` a process really calls.
//!
//! The dynamic linker binds `malloc` to the first object in load order that defines it: the
//! executable, then its libraries breadth-first. Debian's redis-server gets it from jemalloc, not
//! libc, so probing libc would see nothing. We resolve it the same way: from `/proc/PID/maps` for
//! a running process, from the ELF dependency graph for a command about to start.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::elf::ElfObject;
use crate::objfile::{FileId, ObjFile, maps, note_refusal};

/// Why no allocator can be probed for a target. Callers branch on it for the exit code.
#[derive(Debug)]
#[non_exhaustive]
pub enum TargetError {
    /// `--pid N` names no running process.
    NoSuchProcess(u32),
    /// The command was not found on `PATH`.
    CommandNotFound(String),
    /// The program is statically linked: there is no dynamic `malloc` to probe.
    Static(PathBuf),
    /// No loaded object defines `malloc`.
    NoAllocator(String),
    /// Reading the target failed.
    Io(String),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchProcess(pid) => write!(
                f,
                "no process with pid {pid} (check the pid with `ps -p {pid}`)"
            ),
            Self::CommandNotFound(cmd) => {
                write!(f, "command not found: {cmd} (give a path or check PATH)")
            }
            Self::Static(path) => write!(
                f,
                "{} is statically linked: there is no dynamic libc malloc to probe \
                 (statically linked allocators are not supported yet; link it dynamically)",
                path.display()
            ),
            Self::NoAllocator(what) => write!(
                f,
                "{what} has no dynamic libc: no loaded object defines malloc \
                 (statically linked allocators are not supported yet)"
            ),
            Self::Io(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for TargetError {}

/// The object whose allocator functions get probed for pid `pid`: its path as the process names
/// it ([`allocator_mapping_of_pid`] has the mapped object itself).
pub fn allocator_of_pid(pid: u32) -> Result<PathBuf, TargetError> {
    allocator_mapping_of_pid(pid).map(|m| m.path)
}

/// The object a running process gets `malloc` from, as that process maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorMapping {
    /// Its path as the process names it (inside the process's root, " (deleted)" removed).
    pub path: PathBuf,
    /// `/proc/PID/map_files/START-END`: the mapped file itself while the process maps it, even
    /// deleted or inside another mount namespace, where `path` may name another file on the host.
    pub map_file: PathBuf,
    /// The mapped file's (device, inode).
    pub id: FileId,
}

/// Which mapped object defines `malloc` in process `pid`. Each executable file mapping is opened
/// through the mapping ([`ObjFile::open_mapping`]) and only its ELF headers and symbol tables are
/// read; anything else (PostgreSQL's `/dev/zero` shared memory, data files) is never opened.
pub fn allocator_mapping_of_pid(pid: u32) -> Result<AllocatorMapping, TargetError> {
    let maps = maps::read(pid).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TargetError::NoSuchProcess(pid)
        } else {
            TargetError::Io(format!("cannot read /proc/{pid}/maps: {e}"))
        }
    })?;
    if maps.truncated && crate::objfile::verbose() {
        eprintln!(
            "oomtrace: verbose: only the first {} bytes of /proc/{pid}/maps were read",
            maps::MAX_MAPS_BYTES
        );
    }
    let mut seen = HashSet::new();
    for line in maps.lines() {
        let Some(path) = line.file() else {
            continue;
        };
        // malloc is code: an object that defines it is mapped executable.
        if !line.exec() || !seen.insert(line.id) {
            continue;
        }
        let what = format!("{path} (mapped by pid {pid})");
        let path = Path::new(path);
        let elf = ObjFile::open_mapping(pid, line.start, line.end, line.id, path)
            .and_then(|file| ElfObject::from_file(file, path));
        match elf {
            Ok(elf) if elf.defines("malloc") => {
                return Ok(AllocatorMapping {
                    path: path.to_owned(),
                    map_file: PathBuf::from(format!(
                        "/proc/{pid}/map_files/{:x}-{:x}",
                        line.start, line.end
                    )),
                    id: line.id,
                });
            }
            Ok(_) => {}
            Err(why) => note_refusal(&what, &why),
        }
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Err(TargetError::NoAllocator(format!(
        "pid {pid} ({})",
        comm.trim()
    )))
}

/// Finds `cmd` the way `execvp` does.
pub fn resolve_command(cmd: &OsStr) -> Result<PathBuf, TargetError> {
    let as_path = Path::new(cmd);
    if as_path.components().count() > 1 || cmd.to_string_lossy().contains('/') {
        return if as_path.is_file() {
            Ok(as_path.to_owned())
        } else {
            Err(TargetError::CommandNotFound(
                cmd.to_string_lossy().into_owned(),
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(cmd))
        .find(|p| p.is_file())
        .ok_or_else(|| TargetError::CommandNotFound(cmd.to_string_lossy().into_owned()))
}

/// The object that will provide `malloc` once `exe` is loaded.
pub fn allocator_of_program(exe: &Path) -> Result<PathBuf, TargetError> {
    let exe = interpreter_of_script(exe).unwrap_or_else(|| exe.to_owned());
    let obj = ElfObject::open(&exe).map_err(|e| TargetError::Io(format!("{e:#}")))?;
    if !obj.has_interp() {
        return Err(TargetError::Static(exe));
    }
    let search = SearchPath::new();
    let mut queue = VecDeque::from([exe.clone()]);
    let mut seen = HashSet::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let Ok(obj) = ElfObject::open(&path) else {
            continue;
        };
        if obj.defines("malloc") {
            return Ok(path);
        }
        let (needed, runpath) = obj.dynamic_deps();
        let origin = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for name in needed {
            if let Some(found) = search.find(&name, &runpath, &origin) {
                queue.push_back(found);
            }
        }
    }
    Err(TargetError::NoAllocator(exe.display().to_string()))
}

/// For a `#!` script, the interpreter it runs under.
fn interpreter_of_script(path: &Path) -> Option<PathBuf> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    // Never a blocking open: the path may name a FIFO by now.
    let n = crate::objfile::open_regular_trusted(path)
        .ok()?
        .read(&mut head)
        .ok()?;
    let head = head.get(..n)?.strip_prefix(b"#!")?;
    let line = head.split(|&b| b == b'\n').next()?;
    let interp = std::str::from_utf8(line).ok()?.split_whitespace().next()?;
    Some(PathBuf::from(interp))
}

/// The dynamic linker's library search order, minus the cases oomtrace does not need.
struct SearchPath {
    env: Vec<PathBuf>,
    cache: Vec<(String, PathBuf)>,
}

impl SearchPath {
    fn new() -> Self {
        let env = std::env::var_os("LD_LIBRARY_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Self {
            env,
            cache: ld_so_cache(),
        }
    }

    fn find(&self, name: &str, runpath: &[String], origin: &Path) -> Option<PathBuf> {
        if name.contains('/') {
            return Some(PathBuf::from(name));
        }
        let expand =
            |dir: &String| PathBuf::from(dir.replace("$ORIGIN", &origin.to_string_lossy()));
        let dirs = runpath.iter().map(expand).chain(self.env.iter().cloned());
        if let Some(p) = dirs.map(|d| d.join(name)).find(|p| p.is_file()) {
            return Some(p);
        }
        if let Some((_, p)) = self.cache.iter().find(|(n, _)| n == name) {
            return Some(p.clone());
        }
        [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
        ]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
    }
}

/// `ldconfig -p` entries for this architecture: (soname, path).
fn ld_so_cache() -> Vec<(String, PathBuf)> {
    let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("x86-64"))
        .filter_map(|l| {
            let (left, path) = l.split_once("=>")?;
            let name = left.split_whitespace().next()?;
            Some((name.to_owned(), PathBuf::from(path.trim())))
        })
        .collect()
}

/// The system C library (what `--all` probes).
pub fn system_libc() -> Result<PathBuf, TargetError> {
    let search = SearchPath::new();
    search
        .find("libc.so.6", &[], Path::new("/"))
        .ok_or_else(|| TargetError::NoAllocator("this system (no libc.so.6 found)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_gets_malloc_from_libc() {
        let sh = resolve_command(OsStr::new("sh")).unwrap();
        let alloc = allocator_of_program(&sh).unwrap();
        assert!(
            alloc.to_string_lossy().contains("libc.so"),
            "{}",
            alloc.display()
        );
    }

    #[test]
    fn our_own_process_resolves() {
        let alloc = allocator_of_pid(std::process::id()).unwrap();
        assert!(
            alloc.to_string_lossy().contains("libc.so"),
            "{}",
            alloc.display()
        );
    }

    #[test]
    fn missing_pid_is_typed() {
        assert!(matches!(
            allocator_of_pid(u32::MAX - 1),
            Err(TargetError::NoSuchProcess(_))
        ));
    }
}
