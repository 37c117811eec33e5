//! Ground truth from the interpreters on the machine: the baked offsets against each version's
//! headers, the line-table decoders against `PyCode_Addr2Line`, and the whole reader against
//! live, parked interpreters. Debian's python3.11 is required under `CI=true`; every pyenv
//! 3.8–3.13 present is tested too.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::linetable::{self, Format};
use super::*;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A CPython on this machine.
struct Python {
    exe: PathBuf,
    version: (u8, u8),
    /// Its headers (`.../include/python3.X`), when installed.
    include: Option<PathBuf>,
}

/// Debian's python3.11 (required under CI=true), then every pyenv 3.8+ present.
fn pythons() -> Vec<Python> {
    let mut out = Vec::new();
    let debian = Path::new("/usr/bin/python3.11");
    if debian.exists() {
        let include = Path::new("/usr/include/python3.11/internal");
        out.push(Python {
            exe: debian.to_owned(),
            version: (3, 11),
            include: include
                .exists()
                .then(|| PathBuf::from("/usr/include/python3.11")),
        });
    } else {
        assert!(
            !ci(),
            "CI=true but Debian's /usr/bin/python3.11 is missing: run `cargo xtask setup`"
        );
        crate::say!("note: Debian's python3.11 is not installed; its checks are skipped");
    }
    let root =
        std::env::var_os("PYENV_ROOT").map_or_else(|| PathBuf::from("/root/.pyenv"), PathBuf::from);
    let Ok(entries) = std::fs::read_dir(root.join("versions")) else {
        return out;
    };
    let mut found: Vec<Python> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.split('.');
            let version: (u8, u8) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
            if !SUPPORTED.contains(&version) {
                return None;
            }
            let exe = e
                .path()
                .join(format!("bin/python{}.{}", version.0, version.1));
            let include = e
                .path()
                .join(format!("include/python{}.{}", version.0, version.1));
            exe.exists().then(|| Python {
                exe,
                version,
                include: include.join("internal").exists().then_some(include),
            })
        })
        .collect();
    found.sort_by_key(|p| p.version);
    out.extend(found);
    out
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oomtrace-python-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tests/workloads/python/offsets.c` built against `include` and run: its `name=value` lines.
fn header_offsets(include: &Path, out_dir: &Path) -> Vec<(String, Option<u64>)> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/python/offsets.c");
    let exe = out_dir.join(format!(
        "offsets-{}",
        include.file_name().unwrap().to_string_lossy()
    ));
    let built = Command::new("gcc")
        .arg(format!("-I{}", include.display()))
        .arg(format!("-I{}/internal", include.display()))
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("gcc runs");
    assert!(
        built.status.success(),
        "offsets.c against {}: {}",
        include.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("version="))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (
                k.to_owned(),
                if v == "none" {
                    None
                } else {
                    Some(v.parse().unwrap())
                },
            )
        })
        .collect()
}

fn as_owned(fields: Vec<(&'static str, Option<u64>)>) -> Vec<(String, Option<u64>)> {
    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn baked_tables_match_the_headers() {
    let dir = temp_dir("offsets");
    let mut checked = Vec::new();
    for py in pythons() {
        let (Some(include), Some(baked)) = (&py.include, offsets::baked(py.version)) else {
            continue;
        };
        assert_eq!(
            as_owned(baked.fields()),
            header_offsets(include, &dir),
            "the baked table of {:?} differs from {}'s headers",
            py.version,
            include.display()
        );
        checked.push(include.clone());
    }
    let _ = std::fs::remove_dir_all(&dir);
    if ci() {
        assert!(
            checked.contains(&PathBuf::from("/usr/include/python3.11")),
            "CI=true but Debian's python3.11 headers were not checked (python3-dev): {checked:?}"
        );
    }
    crate::say!("checked the baked offsets against {checked:?}");
}

#[test]
fn debug_offsets_of_a_live_313_match_its_headers() {
    let Some(py) = pythons()
        .into_iter()
        .find(|p| p.version >= (3, 13) && p.include.is_some())
    else {
        crate::say!(
            "note: no CPython 3.13 with headers here; its _Py_DebugOffsets check is skipped"
        );
        return;
    };
    let parked = Parked::start(
        &py,
        "import sys\nprint('{}', flush=True)\nsys.stdin.readline()\n",
    );
    let interp = detect(parked.pid()).unwrap().expect("a python process");
    assert_eq!(interp.version, py.version);
    let dir = temp_dir("debug-offsets");
    let expected = header_offsets(py.include.as_ref().unwrap(), &dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(as_owned(interp.offsets.fields()), expected);
    parked.finish();
}

#[derive(serde::Deserialize)]
struct Fixture {
    version: (u8, u8),
    codes: Vec<FixtureCode>,
}

#[derive(serde::Deserialize)]
struct FixtureCode {
    name: String,
    first_line: u32,
    table: String,
    lines: Vec<i64>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every instruction offset of every code object decodes to CPython's own line.
fn check_fixture(json: &str) -> usize {
    let f: Fixture = serde_json::from_str(json).unwrap();
    let format = Format::of(f.version);
    let mut checked = 0;
    for code in &f.codes {
        let table = unhex(&code.table);
        for (i, &expected) in code.lines.iter().enumerate() {
            let offset = 2 * i as i64;
            let got = linetable::line_at(format, &table, code.first_line, offset);
            let expected = u32::try_from(expected).ok();
            assert_eq!(
                got, expected,
                "{:?} {} at byte {offset}",
                f.version, code.name
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn line_table_fixtures_decode_as_cpython_does() {
    let fixtures = [
        include_str!("fixtures/linetable-3.8.json"),
        include_str!("fixtures/linetable-3.9.json"),
        include_str!("fixtures/linetable-3.10.json"),
        include_str!("fixtures/linetable-3.11.json"),
        include_str!("fixtures/linetable-3.12.json"),
        include_str!("fixtures/linetable-3.13.json"),
    ];
    for json in fixtures {
        assert!(check_fixture(json) > 600);
    }
}

#[test]
fn line_tables_of_every_interpreter_here_decode_as_cpython_does() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/python/fixtures/dump_linetables.py");
    for py in pythons() {
        let out = Command::new(&py.exe)
            .arg("-I")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            py.exe.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(check_fixture(std::str::from_utf8(&out.stdout).unwrap()) > 600);
    }
}

#[test]
fn versions_come_from_file_names() {
    assert_eq!(version_from_name("libpython3.10.so.1.0"), Some((3, 10)));
    assert_eq!(version_from_name("libpython3.8d.so"), Some((3, 8)));
    assert_eq!(version_from_name("python3.11"), Some((3, 11)));
    assert_eq!(version_from_name("python3"), None);
    assert_eq!(version_from_name("libc.so.6"), None);
}

#[test]
fn a_process_without_python_is_not_one() {
    assert_eq!(detect(std::process::id()).unwrap(), None);
}

/// An interpreter running a script that prints one line and then blocks reading stdin.
struct Parked {
    child: Child,
    line: String,
    /// The directory [`Parked::start`] made for the script, removed at the end.
    own_dir: Option<PathBuf>,
}

impl Parked {
    /// In a directory of its own (tests run in parallel).
    fn start(py: &Python, script: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = temp_dir(&format!("parked-{n}"));
        let mut parked = Self::start_file(py, script, &dir.join("script.py"));
        parked.own_dir = Some(dir);
        parked
    }

    fn start_file(py: &Python, script: &str, path: &Path) -> Self {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, script).unwrap();
        let mut child = Command::new(&py.exe)
            .arg("-I")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.is_empty(), "{} printed nothing", py.exe.display());
        let pid = child.id();
        // Wait until it blocks in read(0, ...): its frames hold still from then on.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let syscall =
                std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            if syscall.starts_with("0 0x0 ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pid {pid} never blocked reading stdin: {syscall}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Self {
            child,
            line,
            own_dir: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn finish(mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        assert!(self.child.wait().unwrap().success());
        if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Names with latin-1 (ä), UCS-2 (Ω) and, in the path, UCS-4 (🐍) characters, so every
/// compact string kind is read.
const PARK_SCRIPT: &str = r#"import ctypes, json, sys, threading
class Ωmega:
    def pärk(self):
        codes, f = [], sys._getframe()
        while f:
            codes.append(id(f.f_code))
            f = f.f_back
        print(json.dumps({
            "codes": codes,
            "runtime": ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime")),
            "version": list(sys.version_info[:2]),
            "thread": threading.get_ident(),
            "native": threading.get_native_id(),
        }), flush=True)
        sys.stdin.readline()  # PARK
def outer():
    Ωmega().pärk()  # CALL
outer()  # TOP
"#;

fn line_of(script: &str, marker: &str) -> u32 {
    script.lines().position(|l| l.ends_with(marker)).unwrap() as u32 + 1
}

#[test]
fn the_reader_names_parked_frames_in_every_interpreter() {
    let dir = temp_dir("reader").join("🐍 snakes");
    let path = dir.join("pärk_script.py");
    let file = path.to_str().unwrap().to_owned();
    let mut seen = Vec::new();
    for py in pythons() {
        let parked = Parked::start_file(&py, PARK_SCRIPT, &path);
        let pid = parked.pid();
        let said: serde_json::Value = serde_json::from_str(&parked.line).unwrap();
        let interp = detect(pid).unwrap().expect("a python process");
        let what = format!("{} (pid {pid})", py.exe.display());
        assert_eq!(interp.version, py.version, "{what}");
        assert_eq!(
            interp.runtime,
            said["runtime"].as_u64().unwrap(),
            "{what}: _PyRuntime"
        );
        assert!(interp.code_type.is_some(), "{what}: PyCode_Type");
        assert_eq!(
            interp
                .module
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libpython"),
            py.exe.starts_with("/root"),
            "{what}: pyenv builds are shared, Debian's is static: {}",
            interp.module.display()
        );

        let threads = walk::walk_threads(pid, &interp).unwrap();
        assert_eq!(threads.len(), 1, "{what}");
        assert_eq!(
            threads[0].thread_id,
            said["thread"].as_u64().unwrap(),
            "{what}: thread_id"
        );
        if interp.offsets.tstate_native_thread_id.is_some() {
            assert_eq!(
                threads[0].native_thread_id,
                Some(u64::from(pid)),
                "{what}: native id"
            );
            assert_eq!(said["native"].as_u64(), Some(u64::from(pid)));
        }
        let frames = walk::walk_frames(pid, &interp).unwrap();
        let codes: Vec<u64> = frames.iter().map(|f| f.0).collect();
        let expected: Vec<u64> = said["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(codes, expected, "{what}: the frame chain's code objects");
        let entries: Vec<bool> = frames.iter().map(|f| f.2).collect();
        let expected_entries = if py.version <= (3, 10) {
            [true; 3]
        } else {
            [false, false, true]
        };
        assert_eq!(entries, expected_entries, "{what}: entry frames");

        let mut reader = CodeReader::new();
        let resolved: Vec<PyFrame> = frames
            .iter()
            .map(|&(code, instr, _)| reader.resolve(pid, &interp, code, instr).expect("resolves"))
            .collect();
        let park = if py.version >= (3, 11) {
            "Ωmega.pärk"
        } else {
            "pärk"
        };
        let frame = |function: &str, marker: &str| PyFrame {
            function: function.to_owned(),
            file: file.clone(),
            line: line_of(PARK_SCRIPT, marker),
        };
        assert_eq!(
            resolved,
            [
                frame(park, "# PARK"),
                frame("outer", "# CALL"),
                frame("<module>", "# TOP")
            ],
            "{what}"
        );
        // Cached answers are the same; a forgotten process is read again.
        let again = reader
            .resolve(pid, &interp, frames[0].0, frames[0].1)
            .unwrap();
        assert_eq!(again, resolved[0]);
        assert_eq!(reader.stats().codes_read, 3);
        reader.forget(pid);
        assert_eq!(
            reader
                .resolve(pid, &interp, frames[0].0, frames[0].1)
                .unwrap(),
            resolved[0]
        );
        assert_eq!(reader.stats().codes_read, 4);
        // Not a code object: no name.
        assert_eq!(
            reader.resolve(pid, &interp, interp.runtime, 0),
            None,
            "{what}"
        );
        parked.finish();
        seen.push(py.version);
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    assert!(
        !seen.is_empty() || !ci(),
        "CI=true but no CPython was found"
    );
    crate::say!("read parked frames of {seen:?}");
}

/// A venv made with `--copies` runs its own copy of the interpreter, named `python`: found by
/// its `_PyRuntime`, its version from `Py_Version` (the name has none).
#[test]
fn a_venv_copy_of_the_interpreter_is_detected() {
    let Some(debian) = pythons()
        .into_iter()
        .find(|p| p.exe == Path::new("/usr/bin/python3.11"))
    else {
        return;
    };
    let dir = temp_dir("venv");
    let venv = dir.join("env");
    let made = Command::new(&debian.exe)
        .args(["-m", "venv", "--without-pip", "--copies"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let copy = Python {
        exe: venv.join("bin/python"),
        version: (3, 11),
        include: None,
    };
    let parked = Parked::start(&copy, PARK_SCRIPT);
    let interp = detect(parked.pid()).unwrap().expect("a python process");
    assert_eq!(interp.version, (3, 11));
    assert_eq!(interp.module, venv.join("bin/python"));
    let frames = walk::walk_frames(parked.pid(), &interp).unwrap();
    let top = CodeReader::new()
        .resolve(parked.pid(), &interp, frames[0].0, frames[0].1)
        .unwrap();
    assert_eq!(
        (top.function.as_str(), top.line),
        ("Ωmega.pärk", line_of(PARK_SCRIPT, "# PARK"))
    );
    parked.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
