//! Probe placement on this machine's glibc (issue 2, DESIGN §4): `free` must not be probed on a
//! single-stepped instruction. The speed difference is measured by `cargo xtask bench`.

use std::process::Command;

use crate::util::*;

/// (function, offset, emulated) rows of `oomtrace probes`, and the object.
fn probes(extra: &[&str]) -> (String, Vec<(String, u64, bool)>) {
    let out = output(oomtrace().arg("probes").args(extra));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let object = lines
        .next()
        .unwrap()
        .strip_prefix("allocator object: ")
        .unwrap()
        .to_owned();
    // Probe rows are "NAME +OFFSET HOW"; the heap and the reason are said on lines of their own.
    let rows = lines
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|f| f.starts_with('+'))
        })
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_owned();
            let off = f.next().unwrap().trim_start_matches('+').parse().unwrap();
            (name, off, f.next() == Some("emulated"))
        })
        .collect();
    (object, rows)
}

#[test]
fn free_is_probed_on_an_emulated_instruction_past_entry() {
    let (object, rows) = probes(&[]);
    let (_, offset, emulated) = rows
        .iter()
        .find(|r| r.0.split('/').any(|n| n == "free"))
        .expect("free is probed")
        .clone();
    assert_ne!(
        offset, 0,
        "glibc's free starts with a single-stepped test: the probe must move"
    );
    assert!(emulated);
    // Cross-check the instruction with objdump, independently of oomtrace's decoder.
    let nm = Command::new("nm")
        .args(["-D", "--defined-only", &object])
        .output()
        .unwrap();
    let nm = String::from_utf8_lossy(&nm.stdout);
    let addr = nm
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && (f[2] == "free" || f[2].starts_with("free@")))
                .then(|| u64::from_str_radix(f[0], 16).unwrap())
        })
        .expect("free in nm -D");
    let at = addr + offset;
    let dis = Command::new("objdump")
        .args([
            "-d",
            &format!("--start-address={at:#x}"),
            &format!("--stop-address={:#x}", at + 8),
            &object,
        ])
        .output()
        .unwrap();
    let dis = String::from_utf8_lossy(&dis.stdout);
    let insn = dis
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{at:x}:")))
        .unwrap_or_else(|| panic!("{dis}"));
    let mnemonic = insn
        .split('\t')
        .nth(2)
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("");
    assert!(
        mnemonic.starts_with('j')
            || mnemonic.starts_with("push")
            || mnemonic.starts_with("call")
            || mnemonic.starts_with("nop"),
        "free+{offset} is `{insn}`, which the kernel single-steps"
    );
}

#[test]
fn entry_placement_is_available_for_comparison() {
    let (_, rows) = probes(&["--placement", "entry"]);
    let free = rows
        .iter()
        .find(|r| r.0.split('/').any(|n| n == "free"))
        .unwrap();
    assert_eq!(
        (free.1, free.2),
        (0, false),
        "free+0 is `test %rdi,%rdi`: single-stepped"
    );
}
