//! Holding the processes of `run` at the moments that matter, until oomtrace is ready for them.
//!
//! A forked child runs its first instruction within microseconds; attaching its allocator probes
//! after the fork event reaches user space takes milliseconds (5.5-21 ms measured here), and a
//! short child has finished by then. So `run` starts the command under `PTRACE_SEIZE` with the
//! fork, vfork, clone and exec options: each new process stops before its first instruction,
//! each exec stops before the new program runs, the callback does its work (attach probes,
//! resolve the new program's allocator), and only then does the process go on. Measured here:
//! about 5.5 ms per fork, no call missed.
//!
//! A process is held once more at its end (`PTRACE_O_TRACEEXIT`): the thread that ends it stops
//! before its address space goes, so the leak scan can read what is still there. The kernel
//! skips that stop for a thread with SIGKILL pending (an OOM kill, the other threads of an
//! `exit_group`), so the stop that comes is the one of the thread that ended the process.
//!
//! Everything else passes through unchanged: signals are delivered as they came, group stops
//! (Ctrl-Z, SIGSTOP) stay stops (`PTRACE_LISTEN`). `PTRACE_O_EXITKILL` ends the whole tree if
//! oomtrace itself dies, so no workload is left running untraced. Where ptrace is refused (the
//! command is already traced, or Yama forbids it), the command runs unheld and the caller says so.
//!
//! The ptrace requests must come from the thread that seized the tracees, so one thread does
//! everything here: it forks the command, seizes it, and waits on it and its descendants (with
//! `__WNOTHREAD`, so children that other threads start are never reaped here).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};

use crate::launch::{self, ChildStatus};

/// A moment a process is held at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `parent` created process `child` (fork, vfork, or clone without `CLONE_THREAD`); the
    /// child has not run yet.
    Forked {
        /// The process that forked (its thread group id).
        parent: u32,
        /// The new process.
        child: u32,
    },
    /// Process `pid` replaced its program; the new one has not run yet. `former_tid` is the
    /// thread that called `execve` (not `pid` when a non-main thread did).
    Execed {
        /// The process (thread group id).
        pid: u32,
        /// The thread that called `execve`.
        former_tid: u32,
    },
    /// Process `pid` is ending (`exit_group`, a fatal signal other than SIGKILL, or its last
    /// thread's `exit`): thread `tid` has not released the address space yet. Once per process.
    Exiting {
        /// The process (thread group id).
        pid: u32,
        /// The thread that ends it (stopped; its registers and stack are intact).
        tid: u32,
    },
}

/// What the holder thread does at each [`Stop`], while the process waits.
pub type OnStop = Box<dyn FnMut(Stop) + Send>;

/// Looks at a signal on its way to thread `tid` of process `pid` (stopped): true when it was
/// oomtrace's own (`run --fail-*`'s stops), served, and must not be delivered.
pub type OnSignal = Box<dyn FnMut(u32, u32, i32) -> bool + Send>;

/// A command started held before `execve`.
pub struct Spawned {
    /// The command's pid.
    pub pid: u32,
    /// Whether its process tree is held at forks and execs (false: ptrace was refused).
    pub held: bool,
    /// Why ptrace was refused, when it was.
    pub refused: Option<String>,
    release: Option<launch::Held>,
    /// The command's own exit status, when it ends.
    pub status: tokio::sync::oneshot::Receiver<Result<ChildStatus>>,
}

impl Spawned {
    /// Lets the command exec; fails with the exec error if it could not.
    pub fn release(&mut self, exe: &Path) -> Result<()> {
        match self.release.take() {
            Some(h) => h.release(exe),
            None => Err(anyhow!("the command was already released")),
        }
    }
}

/// Starts `exe` with `args` (argv[0] included), blocked before `execve` until
/// [`Spawned::release`], and holds it and every process it creates at each [`Stop`] while
/// `on_stop` runs; `on_signal` sees each signal before it is delivered.
pub fn spawn(
    exe: &Path,
    args: &[OsString],
    on_stop: OnStop,
    on_signal: Option<OnSignal>,
) -> Result<Spawned> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (status_tx, status_rx) = tokio::sync::oneshot::channel();
    let exe: PathBuf = exe.to_owned();
    let args = args.to_vec();
    std::thread::Builder::new()
        .name("oomtrace-hold".into())
        .spawn(move || {
            let held = match launch::spawn_held(&exe, &args) {
                Ok(h) => h,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let pid = held.pid;
            let refused = seize(pid).err();
            let seized = refused.is_none();
            let _ = tx.send(Ok((held, refused)));
            let status = if seized {
                Holder::new(pid, on_stop, on_signal).run()
            } else {
                launch::wait(pid)
            };
            let _ = status_tx.send(status);
        })
        .context("cannot start the thread that holds the command")?;
    let (release, refused) = rx
        .recv()
        .map_err(|_| anyhow!("the holding thread ended before starting the command"))??;
    Ok(Spawned {
        pid: release.pid,
        held: refused.is_none(),
        refused,
        release: Some(release),
        status: status_rx,
    })
}

fn seize(pid: u32) -> Result<(), String> {
    let options = libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACEEXIT
        | libc::PTRACE_O_EXITKILL;
    // SAFETY: PTRACE_SEIZE on our own child with an options word; no memory is passed.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid as libc::pid_t,
            0usize,
            options as usize,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// The holder's state: which tasks exist, and which new ones wait for what.
struct Holder {
    root: u32,
    on_stop: OnStop,
    on_signal: Option<OnSignal>,
    /// Thread id → thread group id of every task seen.
    tgid: HashMap<u32, u32>,
    /// New tasks whose creator's event was handled (probes in): resume at their first stop.
    ready: HashSet<u32>,
    /// New tasks stopped at their start before their creator's event arrived.
    waiting: HashSet<u32>,
    /// Tasks seen stopped at least once (a first stop is the start stop).
    started: HashSet<u32>,
    /// Tasks past their exit stop.
    exiting: HashSet<u32>,
    root_status: Option<ChildStatus>,
}

impl Holder {
    fn new(root: u32, on_stop: OnStop, on_signal: Option<OnSignal>) -> Self {
        Self {
            root,
            on_stop,
            on_signal,
            tgid: HashMap::from([(root, root)]),
            ready: HashSet::new(),
            waiting: HashSet::new(),
            started: HashSet::from([root]),
            exiting: HashSet::new(),
            root_status: None,
        }
    }

    /// Serves stops until no tracee is left; returns the command's own status.
    fn run(mut self) -> Result<ChildStatus> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD) };
            if tid < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => break,
                    _ => return Err(err).context("waitpid failed"),
                }
            }
            let tid = tid as u32;
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                if tid == self.root {
                    self.root_status = Some(if libc::WIFSIGNALED(status) {
                        ChildStatus::Signaled(libc::WTERMSIG(status))
                    } else {
                        ChildStatus::Exited(libc::WEXITSTATUS(status))
                    });
                }
                self.tgid.remove(&tid);
                self.started.remove(&tid);
                self.exiting.remove(&tid);
                continue;
            }
            if libc::WIFSTOPPED(status) {
                self.stopped(tid, status);
            }
        }
        self.root_status
            .ok_or_else(|| anyhow!("the command's exit status was never reported"))
    }

    fn stopped(&mut self, tid: u32, status: i32) {
        let event = (status >> 16) & 0xffff;
        let sig = libc::WSTOPSIG(status);
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                let Some(new) = event_msg(tid) else {
                    resume(tid, 0);
                    return;
                };
                let parent = self.tgid.get(&tid).copied().unwrap_or(tid);
                let is_thread = event == libc::PTRACE_EVENT_CLONE && tgid_of(new) == Some(parent);
                let new_tgid = if is_thread { parent } else { new };
                self.tgid.insert(new, new_tgid);
                // The creator goes on at once; the new task waits until it is ready.
                resume(tid, 0);
                if !is_thread {
                    (self.on_stop)(Stop::Forked { parent, child: new });
                }
                if self.waiting.remove(&new) {
                    resume(new, 0);
                } else {
                    self.ready.insert(new);
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                let former = event_msg(tid).unwrap_or(tid);
                // After execve the process's id is its thread group id, whoever called it.
                let pid = self.tgid.get(&former).copied().unwrap_or(tid);
                self.tgid.remove(&former);
                self.tgid.insert(tid, pid);
                (self.on_stop)(Stop::Execed {
                    pid,
                    former_tid: former,
                });
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXIT => {
                let pid = self.tgid.get(&tid).copied().unwrap_or(tid);
                self.exiting.insert(tid);
                if self.ends_process(tid, pid) {
                    (self.on_stop)(Stop::Exiting { pid, tid });
                }
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                if self.started.insert(tid) {
                    // A new task's first stop: it may go once its creator's event was handled.
                    if self.ready.remove(&tid) {
                        resume(tid, 0);
                    } else {
                        self.waiting.insert(tid);
                    }
                } else if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // A group stop: stay stopped, as without us, until SIGCONT.
                    listen(tid);
                } else {
                    resume(tid, 0);
                }
            }
            _ => {
                // A signal on its way to the tracee: deliver it as it came, unless it was ours.
                self.started.insert(tid);
                let pid = self.tgid.get(&tid).copied().unwrap_or(tid);
                let ours = self.on_signal.as_mut().is_some_and(|f| f(tid, pid, sig));
                resume(tid, if ours { 0 } else { sig });
            }
        }
    }
}

impl Holder {
    /// Whether thread `tid`'s exit (at its exit stop) ends process `pid`: any exit but a plain
    /// thread `exit` does (`exit_group`, a fatal signal); a thread `exit` does when no other
    /// thread of the process is left running.
    fn ends_process(&self, tid: u32, pid: u32) -> bool {
        if exit_syscall(tid) != Some(libc::SYS_exit as u64) {
            return true;
        }
        !self
            .tgid
            .iter()
            .any(|(&t, &g)| g == pid && t != tid && !self.exiting.contains(&t))
    }
}

/// The system call a stopped thread is in (`orig_rax`), if it can be read.
#[cfg(target_arch = "x86_64")]
fn exit_syscall(tid: u32) -> Option<u64> {
    crate::ptrace_regs::get(tid).ok().map(|r| r.orig_rax)
}

/// Elsewhere the last-thread rule decides alone.
#[cfg(not(target_arch = "x86_64"))]
fn exit_syscall(_tid: u32) -> Option<u64> {
    Some(libc::SYS_exit as u64)
}

fn event_msg(tid: u32) -> Option<u32> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: PTRACE_GETEVENTMSG writes one unsigned long to the pointer we own.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid as libc::pid_t,
            0usize,
            &mut msg as *mut libc::c_ulong,
        )
    };
    (rc == 0).then_some(msg as u32)
}

fn resume(tid: u32, sig: i32) {
    // SAFETY: PTRACE_CONT on a stopped tracee with a signal number; no memory is passed. A
    // tracee that died meanwhile just makes it fail (ESRCH).
    unsafe { libc::ptrace(libc::PTRACE_CONT, tid as libc::pid_t, 0usize, sig as usize) };
}

fn listen(tid: u32) {
    // SAFETY: PTRACE_LISTEN on a tracee in a group stop; no memory is passed.
    unsafe { libc::ptrace(libc::PTRACE_LISTEN, tid as libc::pid_t, 0usize, 0usize) };
}

/// The thread group of task `tid`, from `/proc`.
fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A shell that forks three children, one of which forks again: every new process and every
    /// exec is held and reported, and the command's status comes back.
    #[test]
    fn every_fork_and_exec_is_held_and_reported() {
        if !root() {
            return;
        }
        let stops = Arc::new(Mutex::new(Vec::new()));
        let seen = stops.clone();
        let sh = PathBuf::from("/bin/sh");
        let args: Vec<OsString> = [
            "sh",
            "-c",
            "/bin/true; /bin/true; sh -c '/bin/true'; exit 7",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut spawned = spawn(
            &sh,
            &args,
            Box::new(move |s| seen.lock().unwrap().push(s)),
            None,
        )
        .unwrap();
        assert!(spawned.held, "{:?}", spawned.refused);
        spawned.release(&sh).unwrap();
        let status = spawned.status.blocking_recv().unwrap().unwrap();
        assert_eq!(status, ChildStatus::Exited(7));
        let stops = stops.lock().unwrap();
        let forks = stops
            .iter()
            .filter(|s| matches!(s, Stop::Forked { .. }))
            .count();
        let execs = stops
            .iter()
            .filter(|s| matches!(s, Stop::Execed { .. }))
            .count();
        // sh forks 3 children (dash may exec the last command in place: the nested sh forks 1).
        assert!((3..=4).contains(&forks), "{stops:?}");
        // The command's own exec, then one per child (and the nested one).
        assert!((4..=5).contains(&execs), "{stops:?}");
        // Every process ends once, the command included, and is held at its end.
        let exits = stops
            .iter()
            .filter(|s| matches!(s, Stop::Exiting { .. }))
            .count();
        assert_eq!(exits, forks + 1, "{stops:?}");
        assert!(matches!(stops.last(), Some(Stop::Exiting { pid, .. }) if *pid == spawned.pid));
        assert!(matches!(stops[0], Stop::Execed { pid, .. } if pid == spawned.pid));
    }
}
