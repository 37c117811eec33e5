//! The registers of a thread stopped under ptrace: the one seam that reads them, for the hold
//! (the system call at an exit stop), the leak scan (roots) and failure injection.

use std::io;

/// The general registers of stopped tracee `tid`; call on the thread that traces it.
#[cfg(target_arch = "x86_64")]
pub fn get(tid: u32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain data; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS on a stopped tracee writes one user_regs_struct to the pointer we
    // own.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid as libc::pid_t,
            0usize,
            &mut regs as *mut libc::user_regs_struct,
        )
    };
    if rc == 0 {
        Ok(regs)
    } else {
        Err(io::Error::last_os_error())
    }
}
