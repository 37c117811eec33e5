//! Where separate debug files are looked for, by build id, in order: the host's
//! `/usr/lib/debug/.build-id` (Debian's `-dbgsym` packages), a local debuginfod cache (never the
//! network), then each `--debug-dir` (laid out as `.build-id/xx/rest.debug` or flat as
//! `<build id hex>.debug`).

use std::path::PathBuf;
use std::sync::OnceLock;

use super::objects::{DEBUG_DIR, hex};

static EXTRA: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Adds `--debug-dir` directories (once, at start-up).
pub fn set_extra(dirs: Vec<PathBuf>) {
    let _ = EXTRA.set(dirs);
}

/// The local debuginfod cache: `$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`,
/// else `~/.cache/debuginfod_client`.
fn debuginfod_cache() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DEBUGINFOD_CACHE_PATH") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("debuginfod_client"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/debuginfod_client"))
}

/// The paths to try for build id `id`, in lookup order.
pub fn candidates(id: &[u8]) -> Vec<PathBuf> {
    let Some((first, rest)) = id.split_first() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return Vec::new();
    }
    let (head, tail, full) = (format!("{first:02x}"), hex(rest), hex(id));
    let mut out = vec![PathBuf::from(format!("{DEBUG_DIR}/{head}/{tail}.debug"))];
    if let Some(cache) = debuginfod_cache() {
        out.push(cache.join(&full).join("debuginfo"));
    }
    for dir in EXTRA.get().into_iter().flatten() {
        out.push(
            dir.join(".build-id")
                .join(&head)
                .join(format!("{tail}.debug")),
        );
        out.push(dir.join(&head).join(format!("{tail}.debug")));
        out.push(dir.join(format!("{full}.debug")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dir_comes_first() {
        let c = candidates(&[0xab, 0xcd, 0xef]);
        assert_eq!(
            c[0],
            PathBuf::from("/usr/lib/debug/.build-id/ab/cdef.debug")
        );
        assert!(candidates(&[0xab]).is_empty());
    }
}
