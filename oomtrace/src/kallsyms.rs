//! Kernel addresses to function names, from `/proc/kallsyms`: read once into a table sorted by
//! address, looked up by binary search (the symbol at or below the address).

use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Symbols kept; a kernel has ~120 000 text symbols with its modules.
const MAX_SYMBOLS: usize = 4 * 1024 * 1024;

/// A kernel symbol: start address, name, and module (`None`: the kernel image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSymbol {
    /// Start address.
    pub addr: u64,
    /// Function name.
    pub name: String,
    /// Loadable module it belongs to.
    pub module: Option<String>,
}

/// The kernel's text symbols, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    symbols: Vec<KernelSymbol>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`.
    pub fn load() -> Result<Self> {
        Self::load_from(Path::new("/proc/kallsyms"))
    }

    /// Reads a kallsyms file; an error if it hides addresses (kptr_restrict, not root).
    pub fn load_from(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let table = Self::parse(&text);
        if table.symbols.is_empty() {
            bail!(
                "{} shows no kernel addresses (kernel.kptr_restrict, or not root): kernel stacks \
                 cannot be symbolized",
                path.display()
            );
        }
        Ok(table)
    }

    /// Parses kallsyms text: `ADDR TYPE NAME [MODULE]` per line. Only text symbols (`t`, `T`,
    /// `w`, `W`) are kept; lines that do not parse and zero addresses are skipped.
    pub fn parse(text: &str) -> Self {
        let mut symbols = Vec::new();
        for line in text.lines() {
            if symbols.len() >= MAX_SYMBOLS {
                break;
            }
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let module = parts
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_owned());
            symbols.push(KernelSymbol {
                addr,
                name: name.to_owned(),
                module,
            });
        }
        symbols.sort_by_key(|s| s.addr);
        Self { symbols }
    }

    /// The symbol `addr` lies in (the last one starting at or below it).
    pub fn lookup(&self, addr: u64) -> Option<&KernelSymbol> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        self.symbols.get(i.checked_sub(1)?)
    }

    /// The symbol named `name`, if the kernel or a loaded module has it.
    pub fn by_name(&self, name: &str) -> Option<&KernelSymbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff816c68e0 t anon_pipe_write
ffffffff816c6400 t anon_pipe_read
ffffffff82000000 D some_data
ffffffff816c7000 W weak_fn
0000000000000000 A fixed_percpu_data
garbage line
ffffffffc0201000 t amdgpu_bo_create\t[amdgpu]
";

    #[test]
    fn parses_text_symbols_sorted() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.len(), 5);
        let names: Vec<&str> = k.symbols.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "_stext",
                "anon_pipe_read",
                "anon_pipe_write",
                "weak_fn",
                "amdgpu_bo_create"
            ]
        );
        assert_eq!(k.symbols[4].module.as_deref(), Some("amdgpu"));
        assert_eq!(k.symbols[0].module, None);
    }

    #[test]
    fn lookup_finds_the_enclosing_symbol() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(
            k.lookup(0xffffffff816c68e0).unwrap().name,
            "anon_pipe_write"
        );
        assert_eq!(
            k.lookup(0xffffffff816c6a1c).unwrap().name,
            "anon_pipe_write"
        );
        assert_eq!(k.lookup(0xffffffff816c68df).unwrap().name, "anon_pipe_read");
        assert_eq!(
            k.lookup(0xffffffffc0201234).unwrap().name,
            "amdgpu_bo_create"
        );
        assert!(k.lookup(0x1000).is_none());
        let bo = k.by_name("amdgpu_bo_create").unwrap();
        assert_eq!(bo.module.as_deref(), Some("amdgpu"));
        assert!(k.by_name("missing").is_none());
    }

    #[test]
    fn hidden_addresses_give_an_empty_table() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t foo\n");
        assert!(k.is_empty());
    }
}
