//! The bare probe floor: programs that return at once, for `oomtrace run --probe-floor`.
//!
//! The benchmark attaches them on exactly the functions and offsets a real run would probe, so
//! the difference between a real run and this one is what oomtrace's programs themselves cost,
//! apart from the kernel's uprobe trap and uretprobe trampoline that any uprobe tool pays.

use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

/// Entry probe that does nothing.
#[uprobe]
pub fn floor_enter(_ctx: ProbeContext) -> u32 {
    0
}

/// Return probe that does nothing.
#[uretprobe]
pub fn floor_return(_ctx: RetProbeContext) -> u32 {
    0
}
