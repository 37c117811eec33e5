//! oomtrace's user side: load and attach the eBPF probes, turn their event stream into exact
//! per-stack outstanding-bytes tables, and report them.
//!
//! Data flows one way: probes → events ([`source`]) → [`model`] → views ([`report`]).
//! [`session`] wires the live pipeline together; [`main`](../oomtrace/index.html) maps errors to
//! exit codes.

/// `eprintln!` that never panics: a closed standard error (whoever read it went away) must not
/// bring down a tracing session before it writes its report.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod agent;
pub mod cli;
pub mod gpu;
pub mod hold;
pub mod inject;
pub mod kallsyms;
pub mod launch;
pub mod leaks;
pub mod mode;
pub mod model;
pub mod objfile;
pub mod offline;
pub mod oom;
pub mod privs;
pub mod probe;
pub mod proc_tree;
pub mod ptrace_regs;
pub mod python;
pub mod record;
pub mod replay;
pub mod report;
pub mod session;
pub mod source;
pub mod sweep;
pub mod symbols;
pub mod tui;
pub mod units;
pub mod unwind;
