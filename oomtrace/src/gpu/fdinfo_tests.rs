//! Unit tests for [`super`]: every shared real-world dump, edge cases, and a fuzz-ish pass.

use std::collections::BTreeMap;

use super::*;
use crate::gpu::testutil::{shared_fixture, shared_fixtures};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn drm(text: &str) -> DrmFdinfo {
    parse_fdinfo(text)
        .expect("parses")
        .expect("is a DRM fdinfo")
}

fn resident_only(bytes: u64) -> RegionMemory {
    RegionMemory {
        resident: Some(bytes),
        ..RegionMemory::default()
    }
}

fn others(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn amdgpu_legacy_memory_keys_are_resident_bytes() {
    let info = drm(&shared_fixture("amdgpu-legacy.fdinfo"));
    assert_eq!(info.driver, "amdgpu");
    assert_eq!(info.pdev.as_deref(), Some("0000:08:00.0"));
    assert_eq!(info.client_id, 217);
    assert_eq!(info.regions.len(), 3);
    assert_eq!(info.regions["vram"], resident_only(2068 * KIB));
    assert_eq!(info.regions["gtt"], resident_only(8192 * KIB));
    assert_eq!(info.regions["cpu"], resident_only(0));
    assert_eq!(info.engines.len(), 1);
    assert_eq!(
        info.engines["gfx"],
        EngineUsage {
            busy_ns: Some(107_322_799),
            ..Default::default()
        }
    );
    let expected = others(&[
        ("pos", "0"),
        ("flags", "02104002"),
        ("mnt_id", "24"),
        ("ino", "614"),
        ("pasid", "32784"),
    ]);
    assert_eq!(info.other, expected);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn amdgpu_6_4_keeps_amd_extras_in_other() {
    let info = drm(&shared_fixture("amdgpu-6.4.fdinfo"));
    assert_eq!(info.driver, "amdgpu");
    assert_eq!(info.pdev.as_deref(), Some("0000:83:00.0"));
    assert_eq!(info.client_id, 1_203_108);
    assert_eq!(info.regions.len(), 3);
    assert_eq!(info.regions["vram"], resident_only(76 * KIB));
    assert_eq!(info.regions["gtt"], resident_only(44 * KIB));
    assert_eq!(info.regions["cpu"], resident_only(6200 * KIB));
    assert!(info.engines.is_empty());
    let expected = others(&[
        ("pasid", "32771"),
        ("amd-memory-visible-vram", "76 KiB"),
        ("amd-evicted-vram", "0 KiB"),
        ("amd-evicted-visible-vram", "0 KiB"),
        ("amd-requested-vram", "76 KiB"),
        ("amd-requested-visible-vram", "76 KiB"),
        ("amd-requested-gtt", "56 KiB"),
    ]);
    assert_eq!(info.other, expected);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn apu_excerpt_without_driver_line_is_not_a_client() {
    let excerpt = shared_fixture("amdgpu-apu-model-in-gtt.fdinfo");
    assert_eq!(parse_fdinfo(&excerpt), Ok(None));
    // With the header lines a full dump has, the 25 GB in GTT comes through in bytes.
    let full =
        format!("drm-driver:\tamdgpu\ndrm-pdev:\t0000:c3:00.0\ndrm-client-id:\t9\n{excerpt}");
    let info = drm(&full);
    assert_eq!(info.regions["gtt"], resident_only(25_258_000 * KIB));
    assert_eq!(info.regions["gtt"].resident, Some(25_864_192_000));
    assert_eq!(info.regions["vram"], resident_only(5348 * KIB));
    assert_eq!(info.regions["cpu"], resident_only(0));
}

#[test]
fn xe_current_keys_and_cycles_are_not_memory() {
    let info = drm(&shared_fixture("xe.fdinfo"));
    assert_eq!(info.driver, "xe");
    assert_eq!(info.pdev.as_deref(), Some("0000:03:00.0"));
    assert_eq!(info.client_id, 3);
    assert_eq!(info.regions.len(), 2, "{:?}", info.regions.keys());
    let gtt = RegionMemory {
        total: Some(192 * KIB),
        shared: Some(0),
        resident: Some(192 * KIB),
        ..Default::default()
    };
    assert_eq!(info.regions["gtt"], gtt);
    let vram0 = RegionMemory {
        total: Some(23992 * KIB),
        shared: Some(16 * MIB),
        ..Default::default()
    };
    assert_eq!(info.regions["vram0"], vram0);
    assert_eq!(info.engines.len(), 2);
    let rcs = EngineUsage {
        cycles: Some(28_257_900),
        total_cycles: Some(7_655_183_225),
        ..Default::default()
    };
    assert_eq!(info.engines["rcs"], rcs);
    assert_eq!(
        info.engines["vcs"],
        EngineUsage {
            capacity: Some(2),
            ..Default::default()
        }
    );
    assert!(info.other.is_empty(), "{:?}", info.other);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn panthor_has_no_pdev_and_a_memory_region() {
    let info = drm(&shared_fixture("panthor.fdinfo"));
    assert_eq!(info.driver, "panthor");
    assert_eq!(info.pdev, None);
    assert_eq!(info.client_id, 10);
    let engine = EngineUsage {
        busy_ns: Some(111_110_952_750),
        cycles: Some(94_439_687_187),
        maxfreq_hz: Some(1_000_000_000),
        ..Default::default()
    };
    assert_eq!(info.engines.len(), 1);
    assert_eq!(info.engines["panthor"], engine);
    let memory = RegionMemory {
        total: Some(16480 * KIB),
        shared: Some(0),
        purgeable: Some(0),
        ..Default::default()
    };
    assert_eq!(info.regions.len(), 1);
    assert_eq!(info.regions["memory"], memory);
    assert_eq!(
        info.other,
        others(&[("panthor-resident-memory", "10396 KiB")])
    );
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn i915_space_separated_values() {
    let info = drm(&shared_fixture("i915.fdinfo"));
    assert_eq!(info.driver, "i915");
    assert_eq!(info.pdev.as_deref(), Some("0000:00:02.0"));
    assert_eq!(info.client_id, 7);
    assert!(info.regions.is_empty());
    assert_eq!(info.engines.len(), 2);
    assert_eq!(
        info.engines["render"],
        EngineUsage {
            busy_ns: Some(9_288_864_723),
            ..Default::default()
        }
    );
    assert_eq!(
        info.engines["video"],
        EngineUsage {
            capacity: Some(2),
            ..Default::default()
        }
    );
    assert!(info.other.is_empty());
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn dmabuf_is_not_a_drm_client_but_a_dmabuf() {
    let text = shared_fixture("dmabuf.fdinfo");
    assert_eq!(parse_fdinfo(&text), Ok(None));
    let buf = parse_dmabuf_fdinfo(&text)
        .expect("parses")
        .expect("is a dma-buf");
    assert_eq!(
        buf,
        DmabufFdinfo {
            size: 16384,
            exp_name: "drm".into(),
            ino: Some(1049),
            name: None
        }
    );
}

#[test]
fn drm_dumps_are_not_dmabufs() {
    for name in [
        "amdgpu-legacy.fdinfo",
        "amdgpu-6.4.fdinfo",
        "xe.fdinfo",
        "panthor.fdinfo",
        "i915.fdinfo",
    ] {
        assert_eq!(
            parse_dmabuf_fdinfo(&shared_fixture(name)),
            Ok(None),
            "{name}"
        );
    }
}

#[test]
fn every_shared_fixture_is_covered() {
    let covered = [
        "amdgpu-legacy.fdinfo",
        "amdgpu-6.4.fdinfo",
        "amdgpu-apu-model-in-gtt.fdinfo",
        "xe.fdinfo",
        "panthor.fdinfo",
        "i915.fdinfo",
        "dmabuf.fdinfo",
    ];
    let dir = shared_fixtures();
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".fdinfo") {
            assert!(
                covered.contains(&name.as_str()),
                "{name} in {} has no test",
                dir.display()
            );
        }
    }
}

#[test]
fn units_scale_and_bare_numbers_are_bytes() {
    let text = "drm-driver: x\ndrm-client-id: 1\ndrm-total-a: 5\ndrm-total-b: 5 KiB\n\
                drm-total-c: 5 MiB\ndrm-total-d: 5 GiB\ndrm-active-a:\t\t  7  \n";
    let info = drm(text);
    assert_eq!(info.regions["a"].total, Some(5));
    assert_eq!(info.regions["a"].active, Some(7));
    assert_eq!(info.regions["b"].total, Some(5 * KIB));
    assert_eq!(info.regions["c"].total, Some(5 * MIB));
    assert_eq!(info.regions["d"].total, Some(5 << 30));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

#[test]
fn current_resident_wins_over_legacy_alias_in_any_order() {
    let text = "drm-driver: amdgpu\ndrm-client-id: 1\ndrm-memory-vram: 1 KiB\ndrm-resident-vram: 2 KiB\n\
                drm-resident-gtt: 3 KiB\ndrm-memory-gtt: 4 KiB\n";
    let info = drm(text);
    assert_eq!(info.regions["vram"].resident, Some(2 * KIB));
    assert_eq!(info.regions["gtt"].resident, Some(3 * KIB));
}

#[test]
fn longer_prefixes_match_first() {
    let text = "drm-driver: x\ndrm-client-id: 1\ndrm-total-cycles-bcs: 9\ndrm-engine-capacity-ccs: 4\n\
                drm-engine-ccs: 11 ns\ndrm-maxfreq-ccs: 1200 MHz\n";
    let info = drm(text);
    assert!(info.regions.is_empty(), "{:?}", info.regions);
    assert_eq!(info.engines["bcs"].total_cycles, Some(9));
    let ccs = EngineUsage {
        busy_ns: Some(11),
        capacity: Some(4),
        maxfreq_hz: Some(1_200_000_000),
        ..Default::default()
    };
    assert_eq!(info.engines["ccs"], ccs);
}

#[test]
fn bad_values_skip_the_key_with_a_warning() {
    let text = "drm-driver: amdgpu\ndrm-client-id: 5\ndrm-memory-vram: lots KiB\ndrm-resident-gtt: 12 PiB\n\
                this line has no colon\ndrm-total-gtt: 18446744073709551615 KiB\ndrm-engine-gfx: 3 fortnights\n\
                drm-memory-cpu: 1 KiB extra\ndrm-resident-cpu:\ndrm-pdev:\ndrm-memory-gtt: 8 KiB\n";
    let info = drm(text);
    assert_eq!(info.client_id, 5);
    assert_eq!(info.pdev, None);
    assert_eq!(info.regions.len(), 1, "{:?}", info.regions);
    assert_eq!(info.regions["gtt"], resident_only(8 * KIB));
    assert!(info.engines.is_empty());
    let expected = [
        "line 3: drm-memory-vram: \"lots\" is not a number; key skipped",
        "line 4: drm-resident-gtt: unknown unit \"PiB\"; key skipped",
        "line 5: no ':' in \"this line has no colon\"; line skipped",
        "line 6: drm-total-gtt: \"18446744073709551615 KiB\" overflows 64 bits; key skipped",
        "line 7: drm-engine-gfx: unknown unit \"fortnights\"; key skipped",
        "line 8: drm-memory-cpu: unexpected text after \"1\" \"KiB\"; key skipped",
        "line 9: drm-resident-cpu: empty value; key skipped",
        "line 10: drm-pdev is empty; ignored",
    ];
    assert_eq!(info.warnings, expected);
}

#[test]
fn per_file_warnings_are_capped() {
    let mut text = String::from("drm-driver: x\ndrm-client-id: 1\n");
    for i in 0..100 {
        text.push_str(&format!("drm-total-r{i}: bad\n"));
    }
    let info = drm(&text);
    assert_eq!(info.warnings.len(), MAX_WARNINGS_PER_FILE + 1);
    assert_eq!(
        info.warnings.last().map(String::as_str),
        Some("68 more lines with problems")
    );
}

#[test]
fn client_id_problems_are_typed_errors() {
    assert_eq!(
        parse_fdinfo("drm-driver: x\n"),
        Err(FdinfoError::MissingClientId)
    );
    assert_eq!(
        parse_fdinfo("drm-driver: x\ndrm-client-id: -1\n"),
        Err(FdinfoError::BadClientId("-1".into()))
    );
    assert_eq!(
        parse_fdinfo("drm-driver:\ndrm-client-id: 1\n"),
        Err(FdinfoError::EmptyDriver)
    );
    assert_eq!(
        parse_dmabuf_fdinfo("size: big\nexp_name: drm\n"),
        Err(FdinfoError::BadDmabufSize("big".into()))
    );
    assert_eq!(
        FdinfoError::BadClientId("x".into()).to_string(),
        "drm-client-id \"x\" is not a number"
    );
}

#[test]
fn not_drm_texts() {
    for text in [
        "",
        "\n\n",
        "pos:\t0\nflags:\t02\n",
        "drm-driverx: y\n",
        "eventfd-count: 0\n",
        ":\n::\n",
    ] {
        assert_eq!(parse_fdinfo(text), Ok(None), "{text:?}");
        assert_eq!(parse_dmabuf_fdinfo(text), Ok(None), "{text:?}");
    }
}

#[test]
fn clip_keeps_char_boundaries() {
    let long = "é".repeat(100);
    assert_eq!(clip(&long).chars().count(), 64);
    assert_eq!(clip("short"), "short");
}

/// A small xorshift generator so the fuzz pass is repeatable without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn parse_everything(text: &str) {
    let _ = parse_fdinfo(text);
    let _ = parse_dmabuf_fdinfo(text);
}

#[test]
fn fuzz_garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<u8> = b"drm-:\t \n0123456789KiBMGnsHzvramgtt\xff\xc3\x80-_".to_vec();
    for _ in 0..4000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        parse_everything(&String::from_utf8_lossy(&bytes));
        let prefixed = format!(
            "drm-driver: x\ndrm-client-id: 1\n{}",
            String::from_utf8_lossy(&bytes)
        );
        let info = parse_fdinfo(&prefixed)
            .expect("header is valid")
            .expect("is DRM");
        assert_eq!(info.client_id, 1);
    }
}

#[test]
fn fuzz_mangled_fixtures_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(shared_fixtures()).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "fdinfo") {
            texts.push(std::fs::read_to_string(&path).expect("readable"));
        }
    }
    assert!(texts.len() >= 7, "found only {} fixtures", texts.len());
    for text in &texts {
        let lines: Vec<&str> = text.lines().collect();
        for _ in 0..500 {
            let mut mangled = Vec::new();
            for line in &lines {
                match rng.below(6) {
                    0 => {}
                    1 => mangled.push(line.chars().take(rng.below(line.len() + 1)).collect()),
                    _ => mangled.push(line.to_string()),
                }
            }
            parse_everything(&mangled.join("\n"));
            let cut = text
                .char_indices()
                .map(|(i, _)| i)
                .nth(rng.below(text.len()))
                .unwrap_or(0);
            parse_everything(&text[..cut]);
        }
    }
}
