//! oomtrace's user side: load and attach the eBPF probes, turn their event stream into exact
//! per-stack outstanding-bytes tables, and report them.
//!
//! Data flows one way: probes → events ([`source`]) → [`model`] → views ([`report`]).
//! [`session`] wires the live pipeline together; [`main`](../oomtrace/index.html) maps errors to
//! exit codes.

pub mod cli;
pub mod gpu;
pub mod hold;
pub mod kallsyms;
pub mod launch;
pub mod mode;
pub mod model;
pub mod objfile;
pub mod offline;
pub mod oom;
pub mod probe;
pub mod proc_tree;
pub mod record;
pub mod replay;
pub mod report;
pub mod session;
pub mod source;
pub mod symbols;
pub mod tui;
pub mod unwind;
