//! Making a stopped allocator call return as if it had failed, through ptrace: the thread is
//! stopped one instruction into the call (the kernel ran the probed instruction before the
//! stop), and the kernel left its entry registers and real return address.
//!
//! Failing returns to whatever `[entry rsp]` holds now: the uretprobe's trampoline, which runs
//! the return probe (so the failure is counted like any other) and goes on to the real return
//! address. Callee-saved registers come back from the entry state, as a real return would leave
//! them. A throwing `operator new` instead enters `std::__throw_bad_alloc()` with the caller's
//! real return address back on the stack: an exception cannot unwind through the trampoline.

use std::io;

use oomtrace_common::inject::{self, Record, reg};

/// `ENOMEM`, as the allocator sets it.
const ENOMEM: u64 = 12;

fn set(tid: u32, regs: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: PTRACE_SETREGS on a stopped tracee reads one user_regs_struct from our pointer.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            tid as libc::pid_t,
            0usize,
            regs as *const libc::user_regs_struct,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The word at `addr` in the tracee.
pub fn peek(tid: u32, addr: u64) -> io::Result<u64> {
    // PTRACE_PEEKDATA returns the word; -1 is a valid word, so errno tells failure apart.
    // SAFETY: errno is this thread's; PTRACE_PEEKDATA passes no memory of ours.
    unsafe {
        *libc::__errno_location() = 0;
        let v = libc::ptrace(
            libc::PTRACE_PEEKDATA,
            tid as libc::pid_t,
            addr as usize,
            0usize,
        );
        if v == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v as u64)
    }
}

/// Writes the word at `addr` in the tracee.
pub fn poke(tid: u32, addr: u64, value: u64) -> io::Result<()> {
    // SAFETY: PTRACE_POKEDATA writes the tracee's memory; no memory of ours is passed.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_POKEDATA,
            tid as libc::pid_t,
            addr as usize,
            value as usize,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes the 4-byte `errno` at `addr`, leaving the bytes after it alone.
fn poke_errno(tid: u32, addr: u64, value: u32) -> io::Result<()> {
    let word = peek(tid, addr)?;
    poke(tid, addr, (word & !0xffff_ffff) | u64::from(value))
}

/// Puts the entry registers' callee-saved values back into `regs`.
fn restore_callee_saved(regs: &mut libc::user_regs_struct, rec: &Record) {
    regs.rbx = rec.regs[reg::RBX];
    regs.rbp = rec.regs[reg::RBP];
    regs.r12 = rec.regs[reg::R12];
    regs.r13 = rec.regs[reg::R13];
    regs.r14 = rec.regs[reg::R14];
    regs.r15 = rec.regs[reg::R15];
}

/// Fails the call: NULL (with `errno` at `errno_at`, when known) or `ENOMEM` as its return.
pub fn fail(tid: u32, rec: &Record, errno_at: impl FnOnce(u64) -> Option<u64>) -> io::Result<()> {
    let mut regs = crate::ptrace_regs::get(tid)?;
    let sp = rec.regs[reg::RSP];
    restore_callee_saved(&mut regs, rec);
    regs.rip = peek(tid, sp)?;
    regs.rsp = sp + 8;
    if rec.action == inject::FAIL_ENOMEM {
        regs.rax = ENOMEM;
    } else {
        regs.rax = 0;
        if let Some(at) = errno_at(regs.fs_base) {
            poke_errno(tid, at, ENOMEM as u32)?;
        }
    }
    set(tid, &regs)
}

/// Throws: enters `throw_at` (`std::__throw_bad_alloc()`) as if the call had tail-called it.
pub fn throw(tid: u32, rec: &Record, throw_at: u64) -> io::Result<()> {
    let mut regs = crate::ptrace_regs::get(tid)?;
    let sp = rec.regs[reg::RSP];
    restore_callee_saved(&mut regs, rec);
    poke(tid, sp, rec.ret_addr)?;
    regs.rip = throw_at;
    regs.rsp = sp;
    set(tid, &regs)
}

/// Runs the call again from its entry: every register as it was there, and the real return
/// address back on the stack (the uretprobe takes it again when the probe hits again).
pub fn rerun(tid: u32, rec: &Record) -> io::Result<()> {
    let mut regs = crate::ptrace_regs::get(tid)?;
    let r = &rec.regs;
    regs.r15 = r[0];
    regs.r14 = r[1];
    regs.r13 = r[2];
    regs.r12 = r[3];
    regs.rbp = r[4];
    regs.rbx = r[5];
    regs.r11 = r[6];
    regs.r10 = r[7];
    regs.r9 = r[8];
    regs.r8 = r[9];
    regs.rax = r[10];
    regs.rcx = r[11];
    regs.rdx = r[12];
    regs.rsi = r[13];
    regs.rdi = r[14];
    regs.orig_rax = u64::MAX;
    regs.rip = r[reg::RIP];
    regs.eflags = r[18];
    regs.rsp = r[reg::RSP];
    poke(tid, regs.rsp, rec.ret_addr)?;
    set(tid, &regs)
}

/// `errno`'s offset from the thread pointer, from the code of glibc's `__errno_location`
/// (`[endbr64] mov rax, [rip+disp32]; add rax, fs:0; ret`): the GOT slot it loads holds it.
/// `code` is the function's bytes, `vaddr` its address in the module; returns the slot's
/// address in the module.
pub fn errno_slot(code: &[u8], vaddr: u64) -> Option<u64> {
    let (skip, code) = match code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        Some(rest) => (4, rest),
        None => (0, code),
    };
    let mov = code.get(..7)?;
    if mov[..3] != [0x48, 0x8b, 0x05] {
        return None;
    }
    let add = code.get(7..16)?;
    if add != [0x64, 0x48, 0x03, 0x04, 0x25, 0, 0, 0, 0] {
        return None;
    }
    let disp = i32::from_le_bytes(mov[3..7].try_into().ok()?);
    Some(
        vaddr
            .wrapping_add(skip + 7)
            .wrapping_add_signed(i64::from(disp)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_slot_of_glibc_code() {
        // Debian's glibc 2.41: at 0x27660, slot 0x1d2de0.
        let code = [
            0x48, 0x8b, 0x05, 0x79, 0xb7, 0x1a, 0x00, 0x64, 0x48, 0x03, 0x04, 0x25, 0, 0, 0, 0,
            0xc3,
        ];
        assert_eq!(errno_slot(&code, 0x27660), Some(0x1d2de0));
        let mut with_endbr = vec![0xf3, 0x0f, 0x1e, 0xfa];
        with_endbr.extend_from_slice(&code);
        assert_eq!(errno_slot(&with_endbr, 0x27660), Some(0x1d2de4));
        assert_eq!(errno_slot(&[0xc3], 0), None);
    }
}
