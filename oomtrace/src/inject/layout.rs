//! Where a process's site functions and wrappers lie: address ranges from its executable
//! mappings and their symbol tables, for the kernel's site criteria.

use std::collections::HashMap;
use std::path::Path;

use crate::objfile::{FileId, ObjFile, maps};
use crate::probe::elf::ElfObject;
use crate::symbols::wrappers::{glob, is_runtime_module, is_wrapper_function};

/// A function of a module: its name as reports show it and its range in the module's addresses.
#[derive(Clone, Debug)]
struct Function {
    name: String,
    vaddr: u64,
    size: u64,
}

/// Which functions match, per module.
#[derive(Default)]
struct ModuleFunctions {
    sites: Vec<(u64, u64)>,
    wrappers: Vec<(u64, u64)>,
}

/// Finds the ranges of the functions whose names match the site globs (and of the wrappers,
/// for site-only matching) in the processes it is asked about; modules are read once.
pub struct Resolver {
    globs: Vec<String>,
    with_wrappers: bool,
    modules: HashMap<FileId, ModuleFunctions>,
    /// Site functions found, over every module looked at (for the "matched nothing" notice).
    pub matched: usize,
}

/// A process's ranges, `[start, end)` in its address space.
#[derive(Debug, Default)]
pub struct Ranges {
    /// Where the site functions are.
    pub sites: Vec<(u64, u64)>,
    /// Where the wrappers are (site-only matching).
    pub wrappers: Vec<(u64, u64)>,
}

/// A symbol's name as the reports show it: demangled as blazesym does.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|s| s.demangle().ok())
        .unwrap_or_else(|| name.to_owned())
}

/// A demangled C++ name without its parameter list: `ns::site(int)` → `ns::site`, so that
/// `--fail-site ns::site` names it as a user writes it.
fn bare(shown: &str) -> &str {
    match shown.find('(') {
        Some(i) if i > 0 && !shown.starts_with("operator") => &shown[..i],
        _ => shown,
    }
}

impl Resolver {
    /// Matches functions against `globs` (mangled or demangled names); `with_wrappers` also
    /// collects the wrappers to look past.
    pub fn new(globs: Vec<String>, with_wrappers: bool) -> Self {
        Self {
            globs,
            with_wrappers,
            modules: HashMap::new(),
            matched: 0,
        }
    }

    /// The ranges in process `pid` as it is mapped now.
    pub fn ranges(&mut self, pid: u32) -> Ranges {
        let mut out = Ranges::default();
        let Ok(text) = maps::read(pid) else {
            return out;
        };
        for line in text.lines() {
            if !line.exec() {
                continue;
            }
            let Some(path) = line.file() else {
                continue;
            };
            let base = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if self.with_wrappers && is_runtime_module(base) {
                out.wrappers.push((line.start, line.end));
                // A runtime's functions are never sites: its callers are.
                continue;
            }
            let Some((elf, bias)) = mapped_object(pid, &line) else {
                continue;
            };
            let funcs = self.module(line.id, &elf);
            let clip = |&(lo, hi): &(u64, u64)| {
                let (lo, hi) = (lo.wrapping_add(bias), hi.wrapping_add(bias));
                let (lo, hi) = (lo.max(line.start), hi.min(line.end));
                (lo < hi).then_some((lo, hi))
            };
            out.sites.extend(funcs.sites.iter().filter_map(clip));
            out.wrappers.extend(funcs.wrappers.iter().filter_map(clip));
        }
        out
    }

    fn module(&mut self, id: FileId, elf: &ElfObject) -> &ModuleFunctions {
        if !self.modules.contains_key(&id) {
            let mut m = ModuleFunctions::default();
            for f in elf.functions() {
                let f = Function {
                    name: f.name,
                    vaddr: f.vaddr,
                    size: f.size,
                };
                let shown = demangle(&f.name);
                let range = (f.vaddr, f.vaddr + f.size);
                if self
                    .globs
                    .iter()
                    .any(|g| glob(g, &shown) || glob(g, &f.name) || glob(g, bare(&shown)))
                {
                    m.sites.push(range);
                }
                if self.with_wrappers && is_wrapper_function(&shown) {
                    m.wrappers.push(range);
                }
            }
            self.matched += m.sites.len();
            self.modules.insert(id, m);
        }
        &self.modules[&id]
    }
}

/// The object file of executable mapping `line` of process `pid`, and the bias from its
/// addresses to the process's.
pub fn mapped_object(pid: u32, line: &maps::MapsLine<'_>) -> Option<(ElfObject, u64)> {
    let path = Path::new(line.file()?);
    let file = ObjFile::open_mapping(pid, line.start, line.end, line.id, path).ok()?;
    let elf = ElfObject::from_file(file, path).ok()?;
    let vstart = elf.mapping_vaddr(line.offset, line.exec())?;
    Some((elf, line.start.wrapping_sub(vstart)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_names_match_without_their_parameters() {
        assert_eq!(bare("store::put(int, char const*)"), "store::put");
        assert_eq!(bare("site_new()"), "site_new");
        assert_eq!(
            bare("operator new(unsigned long)"),
            "operator new(unsigned long)"
        );
        assert_eq!(bare("plain_c"), "plain_c");
    }

    #[test]
    fn names_demangle_as_reports_show_them() {
        assert_eq!(demangle("_Znwm"), "operator new(unsigned long)");
        assert_eq!(demangle("parse_config"), "parse_config");
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
    }

    /// This test's own process: `malloc` is found in libc (a runtime module, so a wrapper range
    /// covers it), and a glob of this crate's functions finds ranges in the test binary.
    #[test]
    fn ranges_of_the_running_process() {
        let mut r = Resolver::new(vec!["*names_demangle_as_reports_show_them*".into()], true);
        let ranges = r.ranges(std::process::id());
        assert!(!ranges.sites.is_empty(), "{ranges:?}");
        let here = names_demangle_as_reports_show_them as *const () as u64;
        assert!(
            ranges
                .sites
                .iter()
                .any(|&(lo, hi)| (lo..hi).contains(&here)),
            "{here:#x} in {:?}",
            ranges.sites
        );
        let malloc = libc::malloc as *const () as u64;
        assert!(
            ranges
                .wrappers
                .iter()
                .any(|&(lo, hi)| (lo..hi).contains(&malloc)),
            "libc's code is wrapper code"
        );
    }
}
