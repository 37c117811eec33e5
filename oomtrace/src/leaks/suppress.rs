//! Suppression files: known one-time allocations a leak gate should excuse (ld.so's, libc's
//! stdio buffers, a program's static caches).
//!
//! One rule a line, `#` starts a comment:
//!
//! ```text
//! # libc's stdio buffers
//! function _IO_file_doallocate
//! module libstdc++.so.*
//! function cache_*        # our static cache
//! ```
//!
//! A rule matches a stack when it matches any of its frames: `function` the frame's function
//! name, `module` its object's file name (or full path). Globs know `*` (any run of characters)
//! and `?` (any one).

use std::fmt;
use std::path::Path;

use crate::symbols::Frame;

/// What a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The frame's function name.
    Function,
    /// The frame's object file.
    Module,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What it looks at.
    pub field: Field,
    /// The glob.
    pub glob: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.field {
            Field::Function => "function",
            Field::Module => "module",
        };
        write!(f, "{word} {}", self.glob)
    }
}

impl Rule {
    /// Whether the rule matches any of `frames`.
    pub fn matches(&self, frames: &[Frame]) -> bool {
        frames.iter().any(|f| match self.field {
            Field::Function => f.function.as_deref().is_some_and(|n| glob(&self.glob, n)),
            Field::Module => f.module.as_deref().is_some_and(|m| {
                glob(&self.glob, m) || m.rsplit('/').next().is_some_and(|b| glob(&self.glob, b))
            }),
        })
    }
}

/// A suppression file, its rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suppressions {
    /// The rules.
    pub rules: Vec<Rule>,
}

/// A line that is not a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} (a rule is `function GLOB` or `module GLOB`; `#` starts a comment)",
            self.line, self.what
        )
    }
}

impl std::error::Error for ParseError {}

impl Suppressions {
    /// Parses a suppression file's text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |what: String| ParseError { line: i + 1, what };
            let (word, glob) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| err(format!("{line:?} has no glob")))?;
            let field = match word {
                "function" => Field::Function,
                "module" => Field::Module,
                other => return Err(err(format!("unknown rule kind {other:?}"))),
            };
            let glob = glob.trim();
            if glob.split_whitespace().count() != 1 {
                return Err(err(format!("{glob:?} is not one glob")));
            }
            rules.push(Rule {
                field,
                glob: glob.to_owned(),
            });
        }
        Ok(Self { rules })
    }

    /// Reads and parses a suppression file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read suppressions {}: {e}", path.display()))?;
        Self::parse(&text)
            .map_err(|e| anyhow::anyhow!("bad suppressions file {}: {e}", path.display()))
    }

    /// The first rule matching `frames`.
    pub fn first_match(&self, frames: &[Frame]) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(frames))
    }
}

pub use crate::symbols::wrappers::glob;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            addr: 0x1000,
            function: Some(function.to_owned()),
            module: Some(module.to_owned()),
            file: None,
            line: None,
            build_id: None,
            offset: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("cache_*", "cache_insert"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*lib*.so.*", "/usr/lib/libstdc++.so.6"));
        assert!(!glob("cache_*", "my_cache_insert"));
        assert!(glob("*_insert", "my_cache_insert"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn parses_rules_and_comments() {
        let s = Suppressions::parse(
            "# known\n\nfunction _IO_file_doallocate\n  module libstdc++.so.*  # c++ runtime\n",
        )
        .unwrap();
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.rules[1].to_string(), "module libstdc++.so.*");
        let err = Suppressions::parse("function a\nframe b\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string().contains("unknown rule kind \"frame\""),
            "{err}"
        );
        assert_eq!(Suppressions::parse("function\n").unwrap_err().line, 1);
        assert_eq!(Suppressions::parse("function a b\n").unwrap_err().line, 1);
    }

    #[test]
    fn a_rule_matches_any_frame() {
        let s = Suppressions::parse("function cache_*\nmodule libfoo.so\n").unwrap();
        let stack = [frame("malloc_wrapper", "app"), frame("cache_fill", "app")];
        assert_eq!(s.first_match(&stack).unwrap().glob, "cache_*");
        let lib = [frame("f", "/usr/lib/libfoo.so")];
        assert_eq!(s.first_match(&lib).unwrap().glob, "libfoo.so");
        assert!(s.first_match(&[frame("main", "app")]).is_none());
    }
}
