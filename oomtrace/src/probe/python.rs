//! The kernel's Python frame walk, seen from the loaded object: its depth, the task offset it
//! compares thread states with, each Python process's interpreter layout (`PY_PROCS`), and the
//! Python frames stored under a stack id (`PY_STACKS`).

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap};
use oomtrace_common::ConfigKey;
use oomtrace_common::python::{self as py, Layout, MAX_PY_FRAMES, PY_WORDS};

use super::Probes;
use super::btf::Btf;
use crate::python::Interpreter;

/// One Python frame as the kernel read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPyFrame {
    /// The code object's address.
    pub code: u64,
    /// The raw instruction value (`f_lasti`, or a pointer into the code).
    pub instr: u64,
    /// The first frame of its C-level eval call.
    pub entry: bool,
}

/// Decodes a `PY_STACKS` value: the frames, innermost first.
pub fn decode(words: &[u64]) -> Vec<RawPyFrame> {
    let Some((&header, rest)) = words.split_first() else {
        return Vec::new();
    };
    let n = ((header & py::FRAMES_MASK) as usize).min(rest.len() / 2);
    rest.chunks_exact(2)
        .take(n)
        .map(|w| RawPyFrame {
            code: w[0],
            instr: w[1] & !py::ENTRY,
            entry: w[1] & py::ENTRY != 0,
        })
        .collect()
}

/// The kernel's layout for an interpreter.
pub fn layout_of(i: &Interpreter) -> Layout {
    let o = &i.offsets;
    let mut flags = 0;
    let mut set = |bit: u32, on: bool| {
        if on {
            flags |= bit;
        }
    };
    set(py::INSTR_POINTER, o.frame_instr_is_pointer);
    set(py::HAS_TSTATE_CURRENT, o.runtime_tstate_current.is_some());
    set(py::HAS_NATIVE_TID, o.tstate_native_thread_id.is_some());
    set(py::HAS_CFRAME, o.cframe_current_frame.is_some());
    set(py::HAS_OWNER, o.frame_owner.is_some());
    set(py::HAS_IS_ENTRY, o.frame_is_entry.is_some());
    Layout {
        runtime: i.runtime,
        flags,
        version: u16::from(i.version.0) << 8 | u16::from(i.version.1),
        owner_cstack: u16::from(o.frame_owner_cstack),
        tstate_current: o.runtime_tstate_current.unwrap_or(0),
        interpreters_head: o.runtime_interpreters_head,
        threads_head: o.interp_threads_head,
        tstate_next: o.tstate_next,
        tstate_thread_id: o.tstate_thread_id,
        tstate_native_thread_id: o.tstate_native_thread_id.unwrap_or(0),
        tstate_frame: o.tstate_frame,
        cframe_current_frame: o.cframe_current_frame.unwrap_or(0),
        frame_previous: o.frame_previous,
        frame_code: o.frame_code,
        frame_instr: o.frame_instr,
        frame_owner: o.frame_owner.unwrap_or(0),
        frame_is_entry: o.frame_is_entry.unwrap_or(0),
        _pad: [0; 3],
    }
}

impl Probes {
    /// Sets how many Python frames the kernel walks per stack (`--python-depth`, 0: none), and
    /// gives it the task's fsbase offset (how a thread state names its thread before 3.11).
    /// Returns a notice when the kernel's BTF lacks it.
    pub fn set_python_depth(&mut self, depth: u64) -> Result<Option<String>> {
        let btf = self.kernel_btf();
        let mut config: Array<_, u64> = Array::try_from(self.map_mut("CONFIG")?)?;
        config.set(
            ConfigKey::PythonFrames as u32,
            depth.min(MAX_PY_FRAMES as u64),
            0,
        )?;
        if depth == 0 {
            return Ok(None);
        }
        let btf = btf.or_else(|| Btf::kernel().map(std::sync::Arc::new));
        let fsbase = btf.and_then(|b| {
            Some(
                b.member_offset("task_struct", "thread")?
                    + b.member_offset("thread_struct", "fsbase")?,
            )
        });
        Ok(match fsbase {
            Some(off) => {
                config.set(ConfigKey::TaskFsbase as u32, u64::from(off), 0)?;
                None
            }
            None => Some(
                "oomtrace: notice: the kernel's BTF does not say where a thread's fsbase is: \
                 Python ≤ 3.10 frames are read for the thread holding the GIL only"
                    .into(),
            ),
        })
    }

    /// Tells the kernel where process `pid`'s interpreter keeps its frames.
    pub fn load_python(&mut self, pid: u32, interp: &Interpreter) -> Result<()> {
        let mut procs: HashMap<_, u32, Layout> = HashMap::try_from(self.map_mut("PY_PROCS")?)?;
        procs
            .insert(pid, layout_of(interp), 0)
            .with_context(|| format!("cannot mark pid {pid} as a Python process"))?;
        let mut config: Array<_, u64> = Array::try_from(self.map_mut("CONFIG")?)?;
        config.set(ConfigKey::PythonLoaded as u32, 1, 0)?;
        Ok(())
    }

    /// The Python frames stored under `stack_id` (none: not a Python stack).
    pub fn python_stack(&self, stack_id: u32) -> Option<Vec<RawPyFrame>> {
        let map = self.ebpf.map("PY_STACKS")?;
        let stacks: HashMap<_, u32, [u64; PY_WORDS]> = HashMap::try_from(map).ok()?;
        let words = stacks.get(&stack_id, 0).ok()?;
        Some(decode(&words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_frames_and_entry_marks() {
        let mut w = [0u64; PY_WORDS];
        w[0] = 2 | oomtrace_common::stack::PYTHON_TRUNCATED;
        w[1] = 0x1000;
        w[2] = 0x2000;
        w[3] = 0x3000;
        w[4] = 0x4000 | py::ENTRY;
        assert_eq!(
            decode(&w),
            vec![
                RawPyFrame {
                    code: 0x1000,
                    instr: 0x2000,
                    entry: false
                },
                RawPyFrame {
                    code: 0x3000,
                    instr: 0x4000,
                    entry: true
                },
            ]
        );
        assert!(decode(&[]).is_empty());
    }

    #[test]
    fn layouts_of_the_baked_versions() {
        for minor in 8..=12u8 {
            let offsets = crate::python::offsets::baked((3, minor)).unwrap();
            let l = layout_of(&Interpreter {
                version: (3, minor),
                module: "libpython".into(),
                runtime: 0x1000,
                offsets,
                code_type: None,
            });
            let has = |bit: u32| l.flags & bit != 0;
            assert_eq!(has(py::INSTR_POINTER), minor >= 11, "3.{minor}");
            assert_eq!(has(py::HAS_IS_ENTRY), minor == 11, "3.{minor}");
            assert_eq!(has(py::HAS_OWNER), minor >= 12, "3.{minor}");
            assert_eq!(has(py::HAS_CFRAME), minor == 11 || minor == 12, "3.{minor}");
            assert_eq!(has(py::HAS_NATIVE_TID), minor >= 11, "3.{minor}");
            assert_eq!(has(py::HAS_TSTATE_CURRENT), minor <= 11, "3.{minor}");
            // Every frame field lies in the 128 bytes the kernel reads at once.
            for off in [
                l.frame_previous,
                l.frame_code,
                l.frame_instr,
                l.frame_owner,
                l.frame_is_entry,
            ] {
                assert!(off + 8 <= 128, "3.{minor}: frame field at {off}");
            }
            assert_eq!((l.runtime, l.version), (0x1000, 3 << 8 | u16::from(minor)));
        }
    }
}
