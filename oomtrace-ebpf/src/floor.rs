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

/// Uprobe-session entry that does nothing and asks for no return: the floor of a mode whose
/// calls pay the entry trap only (`--mode sample` with uprobe sessions). Written out, not with
/// `#[uprobe]`, whose wrapper returns 0 whatever the function returns.
#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub extern "C" fn floor_session(_ctx: *mut core::ffi::c_void) -> u32 {
    1
}
