//! pprof profiles (gzip-compressed `profile.proto`), for `go tool pprof`, Pyroscope and friends.
//!
//! [`to_pprof`] writes one sample per stack with four values, `inuse_space`/`inuse_objects`
//! (outstanding bytes and blocks) and `alloc_space`/`alloc_objects` (all allocations), its
//! locations leaf first (the call site, then its callers) and the process as a numeric `pid` and a
//! string `comm` label. Every traced allocation is counted, so the period is 1. Functions carry
//! name, file and line; each module is a mapping; a frame with no symbol is a bare address. The
//! mappings say they have functions even where a symbol was missing: they carry no address ranges,
//! so pprof's own re-symbolizing from local binaries could only get them wrong.
//! [`diff_pprof`] writes `inuse_space`/`inuse_objects` of B − A per matched stack ([`diff`]),
//! negative where memory went down.

use std::collections::HashMap;
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;

use super::Report;
use super::diff::diff;
use super::folded::comms;
use super::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::symbols::Frame;

/// The sample types of [`to_pprof`], in value order: (type, unit).
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("inuse_space", "bytes"),
    ("inuse_objects", "count"),
    ("alloc_space", "bytes"),
    ("alloc_objects", "count"),
];

/// The gzip-compressed `profile.proto` of `report`.
pub fn to_pprof(report: &Report) -> Vec<u8> {
    let comms = comms(report);
    let mut b = Builder::new(report.stacks.iter().map(|st| st.frames.as_slice()));
    for st in &report.stacks {
        let comm = comms.get(&st.pid).copied().unwrap_or_default();
        let values = [
            st.outstanding_bytes,
            st.outstanding_allocs,
            st.allocated_bytes,
            st.allocs,
        ]
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        b.sample(&st.frames, &values, Some(st.pid), comm);
    }
    let comment = format!(
        "oomtrace: lost events {}, unknown frees {}, stack collisions {}",
        report.lost_events, report.unknown_frees, report.stack_collisions
    );
    b.finish(&SAMPLE_TYPES, report.duration_s, &comment)
}

/// The gzip-compressed `profile.proto` of the change from `a` to `b`: values are B − A.
pub fn diff_pprof(a: &Report, b: &Report) -> Vec<u8> {
    let d = diff(a, b);
    let mut p = Builder::new(d.stacks.iter().map(|st| st.frames.as_slice()));
    for st in &d.stacks {
        p.sample(
            &st.frames,
            &[st.delta_bytes, st.delta_allocs],
            None,
            &st.comm,
        );
    }
    let comment = "oomtrace diff: values are B - A (outstanding bytes and blocks)";
    p.finish(&SAMPLE_TYPES[..2], b.duration_s, comment)
}

/// What makes two frames one location.
type LocationKey = (
    u64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u32>,
);

/// Builds a profile's tables, deduplicating strings, mappings, functions and locations.
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<String, u64>,
    functions: HashMap<(i64, i64), u64>,
    locations: HashMap<LocationKey, u64>,
}

impl Builder {
    /// An empty profile whose first mapping, which pprof takes for the main binary, is the
    /// module of the outermost frame of the first of `stacks` that has one.
    fn new<'a>(mut stacks: impl Iterator<Item = &'a [Frame]>) -> Self {
        let profile = Profile {
            string_table: vec![String::new()],
            ..Profile::default()
        };
        let mut b = Self {
            profile,
            strings: HashMap::from([(String::new(), 0)]),
            mappings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
        };
        if let Some(main) = stacks.find_map(|f| f.iter().rev().find_map(|f| f.module.as_deref())) {
            b.mapping(main);
        }
        b
    }

    /// The string table index of `s`, adding it if new.
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// The id of the mapping of module `name`.
    fn mapping(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.mappings.get(name) {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let filename = self.string(name);
        // `has_functions` keeps pprof from re-symbolizing (see the overview); the other two
        // are cleared by any location that lacks the information.
        self.profile.mapping.push(Mapping {
            id,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            ..Mapping::default()
        });
        self.mappings.insert(name.to_owned(), id);
        id
    }

    /// The id of function `name` in source file `file`.
    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (self.string(name), self.string(file));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    /// The id of the location of frame `f`.
    fn location(&mut self, f: &Frame) -> u64 {
        let key: LocationKey = (
            f.addr,
            f.function.clone(),
            f.module.clone(),
            f.file.clone(),
            f.line,
        );
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let mapping_id = match &f.module {
            Some(m) => {
                let id = self.mapping(m);
                if let Some(m) = self.profile.mapping.get_mut(id as usize - 1) {
                    m.has_filenames &= f.file.is_some();
                    m.has_line_numbers &= f.line.is_some();
                }
                id
            }
            None => 0,
        };
        let line = match &f.function {
            Some(name) => vec![Line {
                function_id: self.function(name, f.file.as_deref().unwrap_or_default()),
                line: f.line.map_or(0, i64::from),
                column: 0,
            }],
            None => Vec::new(),
        };
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: f.addr,
            line,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    /// Adds a sample of `frames` (call site first) with `values` and the process's labels.
    fn sample(&mut self, frames: &[Frame], values: &[i64], pid: Option<u32>, comm: &str) {
        let location_id = frames.iter().map(|f| self.location(f)).collect();
        let mut label = Vec::new();
        if let Some(pid) = pid {
            label.push(Label {
                key: self.string("pid"),
                num: i64::from(pid),
                ..Label::default()
            });
        }
        if !comm.is_empty() {
            label.push(Label {
                key: self.string("comm"),
                str: self.string(comm),
                ..Label::default()
            });
        }
        self.profile.sample.push(Sample {
            location_id,
            value: values.to_vec(),
            label,
        });
    }

    /// Sets the header fields and returns the gzip-compressed profile.
    fn finish(mut self, types: &[(&str, &str)], duration_s: f64, comment: &str) -> Vec<u8> {
        self.profile.sample_type = types
            .iter()
            .map(|(t, u)| ValueType {
                r#type: self.string(t),
                unit: self.string(u),
            })
            .collect();
        self.profile.default_sample_type = self.string(types.first().map_or("", |t| t.0));
        self.profile.period_type = Some(ValueType {
            r#type: self.string("space"),
            unit: self.string("bytes"),
        });
        self.profile.period = 1;
        // `as` saturates, and NaN becomes 0.
        self.profile.duration_nanos = (duration_s * 1e9).max(0.0) as i64;
        self.profile.comment = vec![self.string(comment)];
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(&self.profile.encode_to_vec());
        gz.finish().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;
    use crate::report::folded::tests::{known, report, stack, two_leaks, unknown};

    fn decode(gz: &[u8]) -> Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .expect("gunzips");
        Profile::decode(raw.as_slice()).expect("decodes")
    }

    fn s(p: &Profile, i: i64) -> &str {
        &p.string_table[usize::try_from(i).expect("index >= 0")]
    }

    /// The names of a sample's functions, leaf first (`??` for a bare address).
    fn names(p: &Profile, sample: &Sample) -> Vec<String> {
        sample
            .location_id
            .iter()
            .map(|&id| {
                let loc = &p.location[id as usize - 1];
                assert_eq!(loc.id, id);
                loc.line.first().map_or("??".to_owned(), |l| {
                    s(p, p.function[l.function_id as usize - 1].name).to_owned()
                })
            })
            .collect()
    }

    /// Checks what pprof's `CheckValid` checks: ids are 1-based and every reference resolves.
    fn check_valid(p: &Profile) {
        assert_eq!(p.string_table[0], "");
        let strings = p.string_table.len() as i64;
        for (i, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
            assert!((0..strings).contains(&m.filename));
        }
        for (i, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
            for n in [f.name, f.system_name, f.filename] {
                assert!((0..strings).contains(&n));
            }
        }
        for (i, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
            assert!(l.mapping_id as usize <= p.mapping.len());
            for line in &l.line {
                assert!((1..=p.function.len() as u64).contains(&line.function_id));
            }
        }
        for sample in &p.sample {
            assert_eq!(sample.value.len(), p.sample_type.len());
            for &id in &sample.location_id {
                assert!((1..=p.location.len() as u64).contains(&id));
            }
        }
    }

    #[test]
    fn profile_round_trips() {
        let mut r = two_leaks(42, 0);
        r.stacks.push(stack(
            43,
            64,
            1,
            vec![unknown(Some("libz.so"), 0x7f00), unknown(None, 9)],
        ));
        let p = decode(&to_pprof(&r));
        check_valid(&p);
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(s(&p, p.default_sample_type), "inuse_space");
        assert_eq!(p.period, 1);
        assert_eq!(p.duration_nanos, 2_500_000_000);
        assert_eq!(p.sample.len(), 3);
        assert_eq!(p.sample[0].value, [10_000, 10, 20_000, 20]);
        assert_eq!(p.sample[1].value, [5_000, 5, 10_000, 10]);
        assert_eq!(names(&p, &p.sample[0]), ["leak_a", "handle", "main"]);
        assert_eq!(names(&p, &p.sample[1]), ["leak_b", "main"]);
        assert_eq!(names(&p, &p.sample[2]), ["??", "??"]);
        let pid = &p.sample[0].label[0];
        assert_eq!((s(&p, pid.key), pid.num), ("pid", 42));
        let comm = &p.sample[0].label[1];
        assert_eq!((s(&p, comm.key), s(&p, comm.str)), ("comm", "demo"));
        assert_eq!(p.sample[2].label.len(), 1, "pid 43 has no comm");
        // leak_a's call site: function, file and line.
        let loc = &p.location[p.sample[0].location_id[0] as usize - 1];
        assert_eq!(loc.address, 0x1120);
        assert_eq!(loc.line[0].line, 20);
        let f = &p.function[loc.line[0].function_id as usize - 1];
        assert_eq!(
            (s(&p, f.name), s(&p, f.system_name), s(&p, f.filename)),
            ("leak_a", "leak_a", "demo.c")
        );
        let m = &p.mapping[loc.mapping_id as usize - 1];
        assert_eq!(s(&p, m.filename), "demo");
        assert!(m.has_functions && m.has_line_numbers);
        let libz = p
            .mapping
            .iter()
            .find(|m| s(&p, m.filename) == "libz.so")
            .expect("libz");
        assert!(libz.has_functions && !libz.has_filenames && !libz.has_line_numbers);
        assert_eq!(
            s(&p, p.mapping[0].filename),
            "demo",
            "the main binary comes first"
        );
        // `main` is one function with two locations (lines 37 and 38).
        assert_eq!(
            p.function
                .iter()
                .filter(|f| s(&p, f.name) == "main")
                .count(),
            1
        );
        assert_eq!(p.location.len(), 7);
        assert!(
            p.comment
                .iter()
                .any(|&c| s(&p, c).contains("lost events 0"))
        );
    }

    #[test]
    fn empty_and_huge_reports() {
        let p = decode(&to_pprof(&report(&[], vec![])));
        check_valid(&p);
        assert!(p.sample.is_empty());
        assert_eq!(p.sample_type.len(), 4);
        let mut r = report(
            &[(1, "x")],
            vec![stack(u32::MAX, u64::MAX, u64::MAX, vec![])],
        );
        r.duration_s = f64::NAN;
        let p = decode(&to_pprof(&r));
        check_valid(&p);
        assert_eq!(p.sample[0].value, [i64::MAX; 4]);
        assert_eq!(p.sample[0].label[0].num, i64::from(u32::MAX));
        assert_eq!(p.duration_nanos, 0);
        r.duration_s = f64::INFINITY;
        assert_eq!(decode(&to_pprof(&r)).duration_nanos, i64::MAX);
    }

    /// Run B leaks leak_a twice as much, leak_b not at all, and leak_c new (other pid, addresses).
    fn runs() -> (Report, Report) {
        let a = two_leaks(42, 0);
        let mut b = two_leaks(77, 0x10_0000);
        b.stacks[0].outstanding_bytes = 20_000;
        b.stacks[0].outstanding_allocs = 20;
        b.stacks[1] = stack(77, 3_000, 3, vec![known("leak_c", "demo.c", 50, 0x9)]);
        (a, b)
    }

    #[test]
    fn diff_profile_values_are_b_minus_a() {
        let (a, b) = runs();
        let p = decode(&diff_pprof(&a, &b));
        check_valid(&p);
        let types: Vec<&str> = p.sample_type.iter().map(|t| s(&p, t.r#type)).collect();
        assert_eq!(types, ["inuse_space", "inuse_objects"]);
        let got: Vec<(String, Vec<i64>)> = p
            .sample
            .iter()
            .map(|x| (names(&p, x)[0].clone(), x.value.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("leak_a".to_owned(), vec![10_000, 10]),
                ("leak_c".to_owned(), vec![3_000, 3]),
                ("leak_b".to_owned(), vec![-5_000, -5]),
            ]
        );
        check_valid(&decode(&diff_pprof(
            &report(&[], vec![]),
            &report(&[], vec![]),
        )));
    }

    // --- The real pprof: `go tool pprof` must read the profiles and agree on the numbers. ---

    /// `go` from PATH or Debian's golang-go; `None` (a skip) unless CI=true, where it fails.
    fn go() -> Option<PathBuf> {
        let found = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("go"))
            .chain([PathBuf::from("/usr/lib/go/bin/go")])
            .find(|p| p.is_file());
        if found.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but `go` is not installed: install golang-go for `go tool pprof`"
            );
            eprintln!("skipped: `go` not found (apt-get install golang-go for `go tool pprof`)");
        }
        found
    }

    /// A profile written to a file that is removed when dropped.
    struct TempProfile(PathBuf);

    impl TempProfile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path =
                std::env::temp_dir().join(format!("oomtrace-{}-{name}.pb.gz", std::process::id()));
            std::fs::write(&path, bytes).expect("writes the profile");
            Self(path)
        }
    }

    impl Drop for TempProfile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Runs `go tool pprof -top ARGS` and returns its output and (function, flat bytes) rows.
    fn pprof_top(go: &Path, args: &[&std::ffi::OsStr]) -> (String, Vec<(String, f64)>) {
        let out = Command::new(go)
            .args(["tool", "pprof", "-top", "-symbolize=none"])
            .args(args)
            .env("GOTOOLCHAIN", "local")
            .env("PPROF_TMPDIR", std::env::temp_dir())
            .output()
            .expect("runs go tool pprof");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "go tool pprof failed: {err}\n{text}");
        let rows = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.get(5..)?.join(" "), pprof_bytes(cols.first()?)?))
            })
            .collect();
        (format!("{text}{err}"), rows)
    }

    /// pprof's sizes (`9.77kB`, `-4.88kB`, `512B`, `0`) in bytes; its units step by 1024.
    fn pprof_bytes(s: &str) -> Option<f64> {
        let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let scale = match unit {
            "" | "B" => 1.0,
            "kB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        Some(num.parse::<f64>().ok()? * scale)
    }

    /// Asserts that `function`'s flat value is `bytes`, to pprof's three digits.
    fn assert_flat(out: &(String, Vec<(String, f64)>), function: &str, bytes: f64) {
        let got = out.1.iter().find(|(f, _)| f == function).map(|r| r.1);
        let ok = got.is_some_and(|g| (g - bytes).abs() <= bytes.abs() * 0.01);
        assert!(
            ok,
            "{function}: expected {bytes} B, got {got:?} in\n{}",
            out.0
        );
    }

    #[test]
    fn go_tool_pprof_reads_the_profile() {
        let Some(go) = go() else { return };
        let (a, b) = runs();
        let file = TempProfile::new("inuse", &to_pprof(&a));
        let out = pprof_top(
            &go,
            &["-sample_index=inuse_space".as_ref(), file.0.as_ref()],
        );
        eprintln!("{}", out.0);
        assert_flat(&out, "leak_a", 10_000.0);
        assert_flat(&out, "leak_b", 5_000.0);
        assert_flat(&out, "main", 0.0);
        let objects = pprof_top(
            &go,
            &["-sample_index=alloc_objects".as_ref(), file.0.as_ref()],
        );
        let leak_a = objects.1.iter().find(|(f, _)| f == "leak_a").map(|r| r.1);
        assert_eq!(leak_a, Some(20.0), "{}", objects.0);

        // Our diff profile, and pprof's own diff of the two profiles, agree.
        let diff = TempProfile::new("diff", &diff_pprof(&a, &b));
        let out = pprof_top(
            &go,
            &["-sample_index=inuse_space".as_ref(), diff.0.as_ref()],
        );
        eprintln!("{}", out.0);
        let base = TempProfile::new("base", &to_pprof(&b));
        let arg = format!("-diff_base={}", file.0.display());
        let theirs = pprof_top(
            &go,
            &[
                "-sample_index=inuse_space".as_ref(),
                arg.as_ref(),
                base.0.as_ref(),
            ],
        );
        for out in [&out, &theirs] {
            assert_flat(out, "leak_a", 10_000.0);
            assert_flat(out, "leak_b", -5_000.0);
            assert_flat(out, "leak_c", 3_000.0);
        }
    }
}
