//! The stack walker's side of the loaded object: its depth, the uretprobe fix-up offsets, its
//! tables (handed to [`crate::unwind`]), and reading stored stacks back.

use anyhow::Result;
use aya::maps::{Array, HashMap};
use oomtrace_common::{ConfigKey, MAX_STACK_FRAMES, STACK_WORDS};

use super::Probes;
use crate::unwind::{Unwinder, UserStack, btf, kernel::KernelTables};

impl Probes {
    /// Sets how many frames the walk takes (`--stack-depth`, the call site included), turns the
    /// uretprobe trampoline fix-up on where the kernel's BTF says where pending returns are,
    /// and hands the walker's tables to an [`Unwinder`]. Returns a notice when the fix-up is
    /// unavailable.
    pub fn take_unwinder(&mut self, depth: u64) -> Result<(Unwinder, Option<String>)> {
        let frames = depth.saturating_sub(1).min(MAX_STACK_FRAMES as u64);
        let mut config: Array<_, u64> = Array::try_from(self.map_mut("CONFIG")?)?;
        config.set(ConfigKey::StackFrames as u32, frames, 0)?;
        let notice = match btf::return_offsets() {
            Some(o) => {
                config.set(ConfigKey::TaskUtask as u32, o.task_utask, 0)?;
                config.set(ConfigKey::UtaskReturns as u32, o.utask_returns, 0)?;
                config.set(ConfigKey::ReturnStack as u32, o.stack, 0)?;
                config.set(ConfigKey::ReturnOrig as u32, o.orig, 0)?;
                config.set(ConfigKey::ReturnNext as u32, o.next, 0)?;
                None
            }
            None => Some(
                "oomtrace: notice: the kernel's BTF does not say where pending uretprobes are: \
                 a frame under another tool's uretprobe may show the trampoline"
                    .to_owned(),
            ),
        };
        let tables = KernelTables::take(&mut self.ebpf)?;
        Ok((Unwinder::new(tables), notice))
    }

    /// The stack stored under `stack_id`.
    pub fn stored_stack(&self, stack_id: u32) -> Option<UserStack> {
        let map = self.ebpf.map("STACKS")?;
        let stacks: HashMap<_, u32, [u64; STACK_WORDS]> = HashMap::try_from(map).ok()?;
        let words = stacks.get(&stack_id, 0).ok()?;
        Some(UserStack::decode(&words))
    }
}
