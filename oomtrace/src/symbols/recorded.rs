//! A recording's symbol table: the frames as resolved at record time, and, for those recorded
//! without a name (a stripped module), names found now by their module's build id.

use std::collections::{HashMap, HashSet};

use super::debug_names::DebugNames;
use super::{Frame, SymbolSource};

/// Frames resolved at record time, keyed by (pid, address): what `oomtrace report` symbolizes
/// with, on any machine, after the processes are gone. Walk frames are stored only if they were
/// code (a JIT's included), so `is_code` answers as it did live.
#[derive(Default)]
pub struct RecordedSymbols {
    frames: HashMap<(u32, u64), Frame>,
    /// Frames already looked up by build id (each once).
    looked_up: HashSet<(u32, u64)>,
    /// Debug files by build id, opened at the first frame that needs one.
    debug: Option<DebugNames>,
}

impl RecordedSymbols {
    /// Adds one resolved frame of process `pid`.
    pub fn insert(&mut self, pid: u32, frame: Frame) {
        self.frames.insert((pid, frame.addr), frame);
    }
}

/// Whether a recorded frame may be named better from its debug file: it has no name, or one
/// from a symbol table alone (no source file: a `.dynsym` export, say), and its module's build
/// id and offset are known.
fn wants_debug_name(f: &Frame) -> bool {
    f.build_id.is_some() && f.offset.is_some() && (f.function.is_none() || f.file.is_none())
}

impl SymbolSource for RecordedSymbols {
    fn is_code(&self, pid: u32, _generation: u32, addr: u64) -> bool {
        self.frames.contains_key(&(pid, addr))
    }

    fn frame(&mut self, pid: u32, _generation: u32, addr: u64) -> Frame {
        let Some(f) = self.frames.get_mut(&(pid, addr)) else {
            return Frame {
                addr,
                ..Frame::default()
            };
        };
        if wants_debug_name(f) && self.looked_up.insert((pid, addr)) {
            self.debug.get_or_insert_with(DebugNames::default).name(f);
        }
        f.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_frames_are_looked_up() {
        let known = Frame {
            build_id: Some("ab".into()),
            offset: Some(0x10),
            ..Frame::default()
        };
        assert!(wants_debug_name(&known), "unnamed");
        let export = Frame {
            function: Some("malloc".into()),
            ..known.clone()
        };
        assert!(wants_debug_name(&export), "named by a symbol table alone");
        let whole = Frame {
            file: Some("a.c".into()),
            line: Some(3),
            ..export.clone()
        };
        assert!(!wants_debug_name(&whole), "already named from debug info");
        let nowhere = Frame {
            build_id: None,
            ..known
        };
        assert!(!wants_debug_name(&nowhere), "no build id to look up");
    }

    #[test]
    fn recorded_frames_answer_as_recorded() {
        let mut s = RecordedSymbols::default();
        s.insert(
            7,
            Frame {
                addr: 0x1000,
                function: Some("f".into()),
                file: Some("f.c".into()),
                ..Frame::default()
            },
        );
        assert!(s.is_code(7, 0, 0x1000));
        assert!(!s.is_code(8, 0, 0x1000));
        assert_eq!(s.frame(7, 0, 0x1000).function.as_deref(), Some("f"));
        assert_eq!(
            s.frame(7, 0, 0x2000),
            Frame {
                addr: 0x2000,
                ..Frame::default()
            }
        );
    }
}
