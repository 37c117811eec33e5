//! Finding a target's files the way the system does: a command as `execvp` finds it, a script's
//! interpreter, a library as the dynamic linker searches for it; and why a target cannot be
//! traced ([`TargetError`]). Which of them provides the allocator is `allocators.rs`'s job.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Why no allocator can be probed for a target. Callers branch on it for the exit code.
#[derive(Debug)]
#[non_exhaustive]
pub enum TargetError {
    /// `--pid N` names no running process.
    NoSuchProcess(u32),
    /// The process has exited (a zombie) or its root filesystem is gone.
    Gone(u32),
    /// The command was not found on `PATH`.
    CommandNotFound(String),
    /// The program is statically linked: there is no dynamic `malloc` to probe.
    Static(PathBuf),
    /// A statically linked program with no allocator symbol left (stripped).
    StaticStripped(String),
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
            Self::Gone(pid) => write!(
                f,
                "pid {pid} has exited or lost its root filesystem (a zombie, or a container \
                 torn down): nothing is left to trace"
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
            Self::StaticStripped(what) => write!(
                f,
                "{what} is statically linked and stripped: it has no allocator symbol to probe \
                 (use --mode growth, which needs none, or trace an unstripped build)"
            ),
            Self::NoAllocator(what) => write!(
                f,
                "{what}: no loaded object defines malloc or a known allocator \
                 (use --mode growth, which needs none)"
            ),
            Self::Io(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for TargetError {}

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

/// For a `#!` script, the interpreter it runs under.
pub(super) fn interpreter_of_script(path: &Path) -> Option<PathBuf> {
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
pub(super) struct SearchPath {
    env: Vec<PathBuf>,
    cache: Vec<(String, PathBuf)>,
}

impl SearchPath {
    pub(super) fn new() -> Self {
        let env = std::env::var_os("LD_LIBRARY_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Self {
            env,
            cache: ld_so_cache(),
        }
    }

    pub(super) fn find(&self, name: &str, runpath: &[String], origin: &Path) -> Option<PathBuf> {
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

/// The dynamic linker's cache entries for this architecture: (soname, path). Read from
/// `/etc/ld.so.cache` itself (running `ldconfig -p` costs every session about 25 ms), else
/// from `ldconfig -p`.
fn ld_so_cache() -> Vec<(String, PathBuf)> {
    std::fs::read("/etc/ld.so.cache")
        .ok()
        .and_then(|data| parse_ld_so_cache(&data))
        .unwrap_or_else(ldconfig_p)
}

/// Entries of a `glibc-ld.so.cache1.1` file for x86-64 ELF libraries, in the cache's order
/// (the linker's preference); `None` when the file is not in that format.
fn parse_ld_so_cache(data: &[u8]) -> Option<Vec<(String, PathBuf)>> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    // flags: the library kind (low byte: 3, ELF libc6) and its ABI (x86-64: 0x0300).
    const ELF_LIBC6: i32 = 0x0003;
    const X86_64: i32 = 0x0300;
    if !data.starts_with(MAGIC) {
        return None;
    }
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let string_at = |at: u32| -> Option<&str> {
        let tail = data.get(at as usize..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&tail[..end]).ok()
    };
    let count = u32_at(20)? as usize;
    let mut out = Vec::new();
    for i in 0..count.min(1 << 20) {
        let at = HEADER + i * ENTRY;
        let flags = u32_at(at)? as i32;
        if flags & 0xff != ELF_LIBC6 || flags & 0xff00 != X86_64 {
            continue;
        }
        let name = string_at(u32_at(at + 4)?)?;
        let path = string_at(u32_at(at + 8)?)?;
        out.push((name.to_owned(), PathBuf::from(path)));
    }
    Some(out)
}

/// `ldconfig -p` entries for this architecture: (soname, path).
fn ldconfig_p() -> Vec<(String, PathBuf)> {
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
    fn commands_resolve_like_execvp() {
        let sh = resolve_command(OsStr::new("sh")).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert!(matches!(
            resolve_command(OsStr::new("no-such-command-here")),
            Err(TargetError::CommandNotFound(_))
        ));
    }

    /// The cache file read directly says what `ldconfig -p` says.
    #[test]
    fn the_linker_cache_reads_as_ldconfig_prints_it() {
        let data = std::fs::read("/etc/ld.so.cache").expect("this system has a linker cache");
        let direct = parse_ld_so_cache(&data).expect("a glibc-ld.so.cache1.1 file");
        let printed = ldconfig_p();
        assert!(!direct.is_empty());
        assert_eq!(direct, printed);
        assert!(parse_ld_so_cache(b"ld.so-1.7.0").is_none());
        assert!(parse_ld_so_cache(&data[..30]).is_none_or(|v| v.is_empty()));
    }

    #[test]
    fn the_system_libc_is_found() {
        let libc = system_libc().unwrap();
        assert!(libc.to_string_lossy().contains("libc.so.6"));
    }
}
