//! Python processes in a live session: found (at attach, at exec, at their first allocation and
//! when they map an interpreter library), told to the kernel's frame walk, and forgotten at
//! exit. Each new stack of a Python process is resolved at once, while the process lives (its
//! code objects are read from its memory): its Python frames become tokens
//! ([`crate::symbols::python`]) spliced into its native frames ([`crate::unwind::python`]).

use std::collections::{HashMap, HashSet};

use crate::probe::Probes;
use crate::python::{CodeReader, Interpreter, detect};
use crate::symbols::Symbolizer;
use crate::unwind::UserStack;

/// Spliced stacks kept; past this, stacks show their native frames only (counted).
const MAX_STACKS: usize = 1 << 17;
/// Processes whose detection is remembered (an answer per image).
const MAX_CHECKED: usize = 1 << 16;
/// Distinct "unsupported interpreter" lines said at most.
const MAX_SAID: usize = 64;
/// The eval loop's function: where Python frames are spliced.
const EVAL_FRAME: &str = "_PyEval_EvalFrameDefault";

/// What the Python frames cost and missed (for the report's notices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonStats {
    /// Python processes found.
    pub processes: u64,
    /// Stacks with Python frames spliced.
    pub stacks: u64,
    /// Python frames whose code object could not be read.
    pub unresolved_frames: u64,
    /// Stacks not spliced: the table was full.
    pub stacks_dropped: u64,
}

/// The session's Python state.
pub struct PythonFrames {
    interps: HashMap<u32, Interpreter>,
    /// (pid, image generation) already looked at.
    checked: HashSet<(u32, u32)>,
    reader: CodeReader,
    spliced: HashMap<u32, UserStack>,
    /// Stack ids looked at (spliced or not): at most the kernel's stack map's size, as ids are
    /// never reused within a session.
    seen: HashSet<u32>,
    /// Unsupported interpreters already reported, by message.
    said: HashSet<String>,
    /// Totals.
    pub stats: PythonStats,
}

impl PythonFrames {
    /// An empty state.
    pub fn new() -> Self {
        Self {
            interps: HashMap::new(),
            checked: HashSet::new(),
            reader: CodeReader::new(),
            spliced: HashMap::new(),
            seen: HashSet::new(),
            said: HashSet::new(),
            stats: PythonStats::default(),
        }
    }

    /// Looks for an interpreter in `pid` (image `generation`) and tells the kernel about one
    /// found. At its first allocation (`early` false) the answer is final for the image; at its
    /// exec or when it maps a library (`early`), a libpython may still be to come.
    pub fn check(&mut self, probes: &mut Probes, pid: u32, generation: u32, early: bool) {
        if self.interps.contains_key(&pid) || self.checked.contains(&(pid, generation)) {
            return;
        }
        if !early {
            if self.checked.len() >= MAX_CHECKED {
                self.checked.clear();
            }
            self.checked.insert((pid, generation));
        }
        match detect(pid) {
            Ok(Some(interp)) => {
                if let Err(e) = probes.load_python(pid, &interp) {
                    crate::say!("oomtrace: warning: {e:#}: its Python frames are not read");
                    return;
                }
                if crate::objfile::verbose() {
                    crate::say!(
                        "oomtrace: pid {pid} runs Python {}.{} ({}), _PyRuntime at {:#x}",
                        interp.version.0,
                        interp.version.1,
                        interp.module.display(),
                        interp.runtime
                    );
                }
                self.stats.processes += 1;
                self.interps.insert(pid, interp);
            }
            Ok(None) => {}
            Err(e) => {
                let msg = format!("{e:#}");
                if self.said.len() < MAX_SAID && self.said.insert(msg.clone()) {
                    crate::say!(
                        "oomtrace: notice: pid {pid}: {msg}: its stacks show native frames only"
                    );
                }
            }
        }
    }

    /// A forked child runs its parent's interpreter (the kernel copied its entry already).
    pub fn inherit(&mut self, parent: u32, child: u32) {
        if let Some(i) = self.interps.get(&parent).cloned() {
            self.interps.insert(child, i);
        }
    }

    /// The process exited or exec'd.
    pub fn forget(&mut self, pid: u32) {
        if self.interps.remove(&pid).is_some() {
            self.reader.forget(pid);
        }
    }

    /// Resolves stack `stack_id` of `pid` if it is a new Python stack: reads its Python frames,
    /// names them, and splices them in.
    pub fn observe(
        &mut self,
        probes: &Probes,
        symbols: &mut Symbolizer,
        pid: u32,
        generation: u32,
        stack_id: i32,
        call_site: u64,
    ) {
        if stack_id < 0 || !self.interps.contains_key(&pid) {
            return;
        }
        let id = stack_id as u32;
        if !self.seen.insert(id) {
            return;
        }
        if self.spliced.len() >= MAX_STACKS {
            self.stats.stacks_dropped += 1;
            return;
        }
        let Some(raw) = probes.python_stack(id) else {
            return;
        };
        let Some(native) = probes.stored_stack(id) else {
            return;
        };
        let interp = &self.interps[&pid];
        let module = format!("python{}.{}", interp.version.0, interp.version.1);
        let python: Vec<(u64, bool)> = raw
            .iter()
            .map(|f| {
                let token = match self.reader.resolve(pid, interp, f.code, f.instr) {
                    Some(r) => symbols.python.intern(
                        Some(&r.function),
                        Some(&r.file),
                        // 0: no line (a recording keeps none either).
                        (r.line > 0).then_some(r.line),
                        &module,
                    ),
                    None => {
                        self.stats.unresolved_frames += 1;
                        symbols.python.intern(None, None, None, &module)
                    }
                };
                (token, f.entry)
            })
            .collect();
        let mut is_eval =
            |a: u64| symbols.symbolize(pid, generation, a).function.as_deref() == Some(EVAL_FRAME);
        let site_is_eval = is_eval(call_site);
        let eval: Vec<bool> = native.frames.iter().map(|&a| is_eval(a)).collect();
        let frames = crate::unwind::python::splice(&native.frames, &eval, site_is_eval, &python);
        self.stats.stacks += 1;
        self.spliced.insert(
            id,
            UserStack {
                frames,
                status: native.status,
            },
        );
    }

    /// What did not fit or could not be named, as one notice line (none: nothing).
    pub fn notice(&self, frames_dropped: u64) -> Option<String> {
        let s = &self.stats;
        if s.stacks_dropped + s.unresolved_frames + frames_dropped == 0 {
            return None;
        }
        Some(format!(
            "oomtrace: notice: Python frames: {} stack(s) past the table's {MAX_STACKS} show \
             native frames only, {} frame(s) could not be named (their process was gone or its \
             memory unreadable), {} frame name(s) past the table's cap show unnamed",
            s.stacks_dropped, s.unresolved_frames, frames_dropped
        ))
    }

    /// The spliced stack under `stack_id`, if it has Python frames.
    pub fn stack(&self, stack_id: u32) -> Option<&UserStack> {
        self.spliced.get(&stack_id)
    }
}

impl Default for PythonFrames {
    fn default() -> Self {
        Self::new()
    }
}
