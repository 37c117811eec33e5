//! Warnings gathered while taking a snapshot: what was skipped and where.
//!
//! Nothing a source says can abort a snapshot; instead each problem becomes a
//! [`Warning`] naming the file. The list is capped ([`MAX_WARNINGS`]) so a
//! system full of odd files cannot flood the caller; the last entry then says
//! how many were dropped.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

/// Most warnings kept in one snapshot.
pub const MAX_WARNINGS: usize = 1000;

/// One problem met while reading the sources; the snapshot went on without that piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file or directory concerned, if any.
    #[serde(serialize_with = "lossy_path")]
    pub path: Option<PathBuf>,
    /// What was wrong and what was skipped.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Serializes a path as a (lossy) string, so odd bytes in a path never break the JSON.
fn lossy_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// A capped list of warnings.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    kept: Vec<Warning>,
    dropped: usize,
}

impl Warnings {
    /// Adds a warning about `path`.
    pub(crate) fn at(&mut self, path: &Path, message: impl Into<String>) {
        self.push(Some(path.to_path_buf()), message.into());
    }

    /// Adds a warning that concerns no single file.
    pub(crate) fn general(&mut self, message: impl Into<String>) {
        self.push(None, message.into());
    }

    fn push(&mut self, path: Option<PathBuf>, message: String) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(Warning { path, message });
        } else {
            self.dropped += 1;
        }
    }

    /// The kept warnings, plus one saying how many were dropped.
    pub(crate) fn finish(self) -> Vec<Warning> {
        let mut out = self.kept;
        if self.dropped > 0 {
            out.push(Warning {
                path: None,
                message: format!("{} more warnings not shown", self.dropped),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_with_a_final_count() {
        let mut w = Warnings::default();
        for i in 0..MAX_WARNINGS + 5 {
            w.at(Path::new("/x"), format!("w{i}"));
        }
        let out = w.finish();
        assert_eq!(out.len(), MAX_WARNINGS + 1);
        assert_eq!(out[0].to_string(), "/x: w0");
        assert_eq!(out[MAX_WARNINGS].to_string(), "5 more warnings not shown");
    }
}
