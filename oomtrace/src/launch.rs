//! Starting a command held just before `execve`, so its pid can be traced before its first
//! allocation, then letting it go.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow};

/// A forked child blocked before `execve`.
pub struct Held {
    /// The child's pid.
    pub pid: u32,
    go: libc::c_int,
    err: libc::c_int,
}

fn cstring(s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| anyhow!("argument contains a NUL byte"))
}

/// Forks a child that will exec `exe` with `args` (argv[0] included) once released.
pub fn spawn_held(exe: &Path, args: &[OsString]) -> Result<Held> {
    // Everything the child touches is prepared here: between fork and exec it must not allocate.
    let path = cstring(exe.as_os_str().as_bytes())?;
    let argv: Vec<CString> = args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only calls async-signal-safe functions (close, prctl, getppid, read,
    // signal, execve, write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork failed");
    }
    if pid == 0 {
        // SAFETY: see above; every pointer stays valid (the parent's memory is copied).
        unsafe {
            libc::close(go_w);
            libc::close(err_r);
            // If oomtrace dies (SIGKILL, a panic, the OOM killer), the command goes with it,
            // traced or not (ptrace's EXITKILL covers the traced tree; this covers the command
            // when ptrace was refused). The signal comes when the forking thread ends, and
            // that thread waits for the command. Already orphaned: stop here.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            let mut b = 0u8;
            if libc::read(go_r, (&raw mut b).cast(), 1) != 1 {
                libc::_exit(127);
            }
            // Rust ignores SIGPIPE; an ignored disposition would survive exec.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(err_w, (&raw const errno).cast(), 4);
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copies of the child's pipe ends.
    unsafe {
        libc::close(go_r);
        libc::close(err_w);
    }
    Ok(Held {
        pid: pid as u32,
        go: go_w,
        err: err_r,
    })
}

fn pipe() -> Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe failed");
    }
    Ok((fds[0], fds[1]))
}

impl Held {
    /// Lets the child exec; fails with the exec error if it could not.
    pub fn release(self, exe: &Path) -> Result<()> {
        let mut errno = 0i32;
        // SAFETY: plain fd operations on descriptors we own.
        let n = unsafe {
            libc::write(self.go, [1u8].as_ptr().cast(), 1);
            libc::close(self.go);
            let n = libc::read(self.err, (&raw mut errno).cast(), 4);
            libc::close(self.err);
            n
        };
        if n == 4 {
            return Err(anyhow!(
                "cannot execute {}: {}",
                exe.display(),
                std::io::Error::from_raw_os_error(errno)
            ));
        }
        Ok(())
    }
}

/// How a waited-for child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ChildStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Exited(c) => c,
            Self::Signaled(s) => 128 + s,
        }
    }
}

/// Blocks until `pid` (our child) ends.
pub fn wait(pid: u32) -> Result<ChildStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if rc == pid as i32 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waitpid failed");
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        ChildStatus::Signaled(libc::WTERMSIG(status))
    } else {
        ChildStatus::Exited(libc::WEXITSTATUS(status))
    })
}
