//! oomtrace's integration tests: the real binary, real BPF, ground-truth workloads.
//! Run by `cargo xtask test` (as root, one test at a time: they share kernel state).

mod allocator;
mod cleanup;
mod cost;
mod errors;
mod files;
mod fleet;
mod gates;
mod gpu;
mod groundtruth;
mod growth;
mod harm;
mod hazards;
mod heaps;
mod inject;
mod kernel;
mod leaks;
mod modes;
mod offline;
mod oom;
mod placement;
mod pymalloc;
mod python;
mod sampling;
mod stacks;
mod symbols;
mod tui;
mod unwind_inputs;
mod util;
