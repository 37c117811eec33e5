//! Test helpers: finding the fixture directories from wherever the tests run.
//!
//! The tests run with cwd = `<repo>/oomtrace` in CI (with `shared/` a sibling
//! of the repo root) and from scratch crates that include this module by an
//! absolute `#[path]`. Both are covered by looking for the repo root — the
//! directory holding `oomtrace/src/gpu` — above the current directory, above
//! `CARGO_MANIFEST_DIR`, and above this source file's own path.

use std::path::{Path, PathBuf};

/// Directories where the search for the repo root starts.
fn starts() -> Vec<PathBuf> {
    let mut starts = Vec::new();
    let cwd = std::env::current_dir().ok();
    let here = Path::new(file!());
    if here.is_absolute() {
        starts.push(here.to_path_buf());
    }
    if let Some(cwd) = &cwd {
        // `file!()` is relative to the directory cargo ran rustc in: some ancestor of cwd.
        starts.extend(cwd.ancestors().map(|a| a.join(here)).filter(|p| p.exists()));
        starts.push(cwd.clone());
    }
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        starts.push(PathBuf::from(dir));
    }
    starts
}

/// The repo roots (directories holding `oomtrace/src/gpu`) found above the start points.
fn repo_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for start in starts() {
        for dir in start.ancestors() {
            if dir.join("oomtrace/src/gpu").is_dir() && !roots.iter().any(|r| r == dir) {
                roots.push(dir.to_path_buf());
            }
        }
    }
    roots
}

/// Returns the first existing candidate, or panics listing every path tried.
fn first_existing(what: &str, candidates: Vec<PathBuf>) -> PathBuf {
    if let Some(found) = candidates.iter().find(|p| p.is_dir()) {
        return found.clone();
    }
    panic!("{what} not found; tried: {candidates:#?}");
}

/// `shared/fixtures/gpu`: the real fdinfo dumps shared between projects.
pub(crate) fn shared_fixtures() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/work/shared/fixtures/gpu")];
    for root in repo_roots() {
        candidates.push(root.join("../shared/fixtures/gpu"));
        candidates.push(root.join("shared/fixtures/gpu"));
    }
    first_existing("shared GPU fixtures", candidates)
}

/// `tests/fixtures/gpu`: the proc/sys trees this module's tests read.
pub(crate) fn tree_fixtures() -> PathBuf {
    let candidates = repo_roots()
        .into_iter()
        .map(|r| r.join("tests/fixtures/gpu"))
        .collect();
    first_existing("GPU fixture trees (tests/fixtures/gpu)", candidates)
}

/// Reads one shared fixture file by name.
pub(crate) fn shared_fixture(name: &str) -> String {
    let path = shared_fixtures().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
