//! Host-side stub: the real programs are the `oomtrace` bin, built for `bpfel-unknown-none`.
#![no_std]
