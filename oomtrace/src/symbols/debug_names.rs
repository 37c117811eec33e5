//! Names for frames known by their module's build id and their offset in it, found later than
//! the frames were (a recording reported on another machine, `report --debug-dir`): from the
//! separate debug file of that build id in the debug directories ([`super::debug_dirs`]), opened
//! only when it carries that very build id.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use blazesym::symbolize::{Input, Symbolizer as Blaze, evict::Elf as EvictElf};

use super::Frame;
use super::objects::debug_file_for;
use crate::objfile::ObjFile;

/// Build ids whose debug file (or its absence) is remembered; past this the oldest is closed.
const MAX_FILES: usize = 64;

/// Debug files by build id, opened at the first frame that needs one.
pub struct DebugNames {
    blaze: Blaze,
    /// Build id (hex) → its debug file (`/proc/self/fd/N`, the open file), `None` where no
    /// directory holds one that matches.
    files: HashMap<String, Option<(PathBuf, ObjFile)>>,
    /// Build ids in `files`, oldest first.
    order: VecDeque<String>,
}

impl Default for DebugNames {
    fn default() -> Self {
        Self {
            blaze: Blaze::new(),
            files: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl DebugNames {
    /// Names `frame` (function, and file and line where the debug file has them) from the debug
    /// file of its build id at its module offset; false, and `frame` untouched, where its build
    /// id or offset is unknown, no debug file of that build id is found, or it names nothing
    /// there.
    pub fn name(&mut self, frame: &mut Frame) -> bool {
        let (Some(id), Some(offset)) = (frame.build_id.as_deref(), frame.offset) else {
            return false;
        };
        // A frame's offset is its return address's: the call is the byte before.
        let Some(vaddr) = offset.checked_sub(1) else {
            return false;
        };
        let Some(path) = self.file(id) else {
            return false;
        };
        let mut named = frame.clone();
        named.file = None;
        named.line = None;
        if super::name_from(
            &self.blaze,
            path,
            true,
            Input::VirtOffset(vaddr),
            &mut named,
        ) {
            *frame = named;
            return true;
        }
        false
    }

    /// The debug file of build id `id` (hex), opened and checked once.
    fn file(&mut self, id: &str) -> Option<PathBuf> {
        if !self.files.contains_key(id) {
            while self.files.len() >= MAX_FILES {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if let Some(Some((path, _))) = self.files.remove(&old) {
                    // Its `/proc/self/fd/N` will name another file once closed.
                    let _ = self.blaze.evict(&EvictElf::new(path).into());
                }
            }
            let found = unhex(id).and_then(|bytes| debug_file_for(&bytes));
            self.files.insert(id.to_owned(), found);
            self.order.push_back(id.to_owned());
        }
        self.files.get(id)?.as_ref().map(|(path, _)| path.clone())
    }
}

/// The bytes of lower- or upper-case hex `s`; `None` if it is not hex of whole bytes.
fn unhex(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a sign ("+1").
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let id = [0x00, 0xab, 0x7f, 0xff];
        assert_eq!(unhex(&super::super::objects::hex(&id)), Some(id.to_vec()));
        assert_eq!(unhex("ABcd"), Some(vec![0xab, 0xcd]));
        for bad in ["", "abc", "zz", "+1", "é1"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    /// A frame whose build id no debug directory holds stays as it was.
    #[test]
    fn no_debug_file_leaves_the_frame_alone() {
        let mut names = DebugNames::default();
        let mut frame = Frame {
            addr: 0x1234,
            module: Some("app".into()),
            build_id: Some("00112233445566778899aabbccddeeff00112233".into()),
            offset: Some(0x1234),
            ..Frame::default()
        };
        let before = frame.clone();
        assert!(!names.name(&mut frame));
        assert_eq!(frame, before);
        // Remembered: asked once, answered from the table after.
        assert_eq!(names.files.len(), 1);
        assert!(!names.name(&mut frame));
        assert_eq!(names.files.len(), 1);
    }
}
