//! Python frames as stack entries: each resolved (function, file, line) gets a token, an
//! address no native code has ([`oomtrace_common::python::TOKEN_TAG`]), that symbolizes to its
//! frame. So a spliced stack is still a list of addresses, and everything downstream (reports,
//! recordings, pprof, the leak gate) takes Python frames as it takes native ones.

use std::collections::HashMap;

use oomtrace_common::python::{TOKEN_INDEX, TOKEN_TAG, is_token};

use super::Frame;

/// Distinct Python frames kept; past this, new ones share their module's "unresolved" token.
const MAX_FRAMES: usize = 1 << 20;

/// What identifies a Python frame.
type Key = (Option<String>, Option<String>, Option<u32>, String);

/// The interned Python frames.
#[derive(Debug, Default)]
pub struct PyFrames {
    index: HashMap<Key, u32>,
    frames: Vec<Frame>,
    /// Frames that did not fit (shown as unresolved).
    pub dropped: u64,
}

impl PyFrames {
    /// The token of a frame in `module` (`python3.11`); `None` parts: not resolved.
    pub fn intern(
        &mut self,
        function: Option<&str>,
        file: Option<&str>,
        line: Option<u32>,
        module: &str,
    ) -> u64 {
        let key: Key = (
            function.map(str::to_owned),
            file.map(str::to_owned),
            line,
            module.to_owned(),
        );
        if let Some(&i) = self.index.get(&key) {
            return TOKEN_TAG | u64::from(i);
        }
        if self.frames.len() >= MAX_FRAMES {
            self.dropped += 1;
            if key.0.is_none() {
                // Never: the unresolved token of a module is interned before the table fills.
                return TOKEN_TAG | TOKEN_INDEX;
            }
            return self.intern(None, None, None, module);
        }
        let i = self.frames.len() as u32;
        let addr = TOKEN_TAG | u64::from(i);
        self.frames.push(Frame {
            addr,
            function: key.0.clone(),
            module: Some(key.3.clone()),
            file: key.1.clone(),
            line,
            build_id: None,
            offset: None,
        });
        self.index.insert(key, i);
        addr
    }

    /// The frame of a token.
    pub fn get(&self, addr: u64) -> Option<&Frame> {
        if !is_token(addr) {
            return None;
        }
        self.frames.get((addr & TOKEN_INDEX) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_frame_same_token() {
        let mut t = PyFrames::default();
        let a = t.intern(Some("f"), Some("x.py"), Some(3), "python3.11");
        let b = t.intern(Some("g"), Some("x.py"), Some(3), "python3.11");
        assert_ne!(a, b);
        assert_eq!(a, t.intern(Some("f"), Some("x.py"), Some(3), "python3.11"));
        assert!(is_token(a));
        let f = t.get(b).unwrap();
        assert_eq!(
            (f.function.as_deref(), f.line, f.module.as_deref()),
            (Some("g"), Some(3), Some("python3.11"))
        );
        assert_eq!(t.get(0x7f00_0000_1000), None);
    }
}
