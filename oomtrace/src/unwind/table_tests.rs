//! The row builder against the C library's own `.eh_frame`, and the packer on made-up spans.

use super::*;
use crate::objfile::ObjFile;
use oomtrace_common::unwind::{row_cfa_off, row_kind};

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

fn libc_rows() -> ModuleRows {
    let elf = ElfLayout::read(ObjFile::open_trusted(std::path::Path::new(LIBC)).unwrap()).unwrap();
    build(&elf).unwrap()
}

/// The address of exported function `name` in libc's own address space.
fn libc_symbol(name: &str) -> u64 {
    use object::{Object as _, ObjectSymbol as _};
    let data = std::fs::read(LIBC).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.dynamic_symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address())
        .unwrap()
}

#[test]
fn libc_malloc_entry_is_rsp_plus_8() {
    let rows = libc_rows();
    assert!(rows.rows.len() > 1000, "{} rows", rows.rows.len());
    assert_eq!(rows.stats.bad_entries, 0);
    let r = lookup(&rows, libc_symbol("malloc")).expect("malloc is covered");
    assert_eq!((row_kind(r), row_cfa_off(r)), (kind::RSP, 8));
}

#[test]
fn packs_gaps_and_pages() {
    let span = |start, end, off| Span {
        start,
        end,
        kind: kind::RSP,
        rbp_slot: 0,
        cfa_off: off,
    };
    let m = pack(
        vec![
            span(0x1000, 0x1010, 8),
            span(0x1010, 0x1020, 16),
            span(0x3000, 0x3008, 8),
        ],
        BuildStats::default(),
    )
    .unwrap();
    assert_eq!(m.vaddr_lo, 0x1000);
    assert_eq!(m.pages.len(), 3);
    let at = |pc| lookup(&m, pc).map(|r| (row_kind(r), row_cfa_off(r)));
    assert_eq!(at(0x1000), Some((kind::RSP, 8)));
    assert_eq!(at(0x1015), Some((kind::RSP, 16)));
    assert_eq!(at(0x2000), Some((kind::GAP, 0)));
    assert_eq!(at(0x3004), Some((kind::RSP, 8)));
    assert_eq!(at(0x3008), Some((kind::GAP, 0)));
    assert_eq!(at(0xfff), None);
}

/// A copy of libc whose every FDE points at a CIE that is not there: told as damaged (with
/// how many entries), not as missing unwind info.
#[test]
fn an_eh_frame_with_no_readable_entry_is_damaged_not_missing() {
    use object::{Object as _, ObjectSection as _};
    let mut data = std::fs::read(LIBC).unwrap();
    let (start, size) = {
        let file = object::File::parse(&*data).unwrap();
        let s = file.section_by_name(".eh_frame").unwrap();
        let (off, size) = s.file_range().unwrap();
        (off as usize, size as usize)
    };
    let (mut at, mut fdes) = (start, 0u64);
    while at + 8 <= start + size {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || len == 0xffff_ffff {
            break;
        }
        if data[at + 4..at + 8] != [0; 4] {
            // Past the section's start: no CIE there.
            let bad = (at - start) as u32 + 0x1000;
            data[at + 4..at + 8].copy_from_slice(&bad.to_le_bytes());
            fdes += 1;
        }
        at += 4 + len;
    }
    assert!(fdes > 1000, "{fdes} FDEs");
    let path = std::env::temp_dir().join(format!("oomtrace-damaged-libc-{}", std::process::id()));
    std::fs::write(&path, &data).unwrap();
    let elf = ElfLayout::read(ObjFile::open_trusted(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    match build(&elf) {
        // The first bad CIE pointer ends the walk through the section: nothing past it is read.
        Err(BuildError::Damaged(n)) => assert!(n >= 1),
        other => panic!("expected Damaged, got {:?}", other.map(|r| r.stats)),
    }
}
