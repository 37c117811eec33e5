//! A PostgreSQL server as a user runs it (issue 22): `initdb` into a temp dir, listening only on
//! a Unix socket there, run as the `postgres` user (installed by `cargo xtask setup`), attached by
//! its postmaster's pid while clients work. Its shared memory is a `/dev/zero (deleted)` mapping,
//! which once made oomtrace grow to 24 GB.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{MAX_RSS_KIB, TempDir, Tracer, frames_of, show};
use crate::util::*;

/// Rows the sorting query sorts.
const SORT_ROWS: u64 = 300_000;
/// The sort allocates ~600 000 blocks in about a second while pgbench runs: with the probes as
/// fast as they are, that burst outruns the default 16 MiB ring on this 2-core machine (the
/// user side shares the cores with postgres), so these tests give it 64 MiB and assert that
/// nothing was lost.
const RING_KIB: &str = "65536";

/// The server's binaries: the newest `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (cargo xtask setup)")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql")
        .1
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres")).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .expect("the postgres user exists (cargo xtask setup installs PostgreSQL)")
}

/// A running server; stopped (fast shutdown, then killed) and its directory removed on drop.
struct Postgres {
    postmaster: Child,
    bin: PathBuf,
    dir: TempDir,
}

impl Postgres {
    fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let bin = bin_dir();
        let (uid, gid) = postgres_user();
        let dir = TempDir::new("postgres");
        std::os::unix::fs::chown(&dir.path, Some(uid), Some(gid)).unwrap();
        let data = dir.path.join("data");
        let log = std::fs::File::create(dir.path.join("log")).unwrap();
        std::os::unix::fs::chown(dir.path.join("log"), Some(uid), Some(gid)).unwrap();
        let as_postgres = |prog: &str| {
            let mut c = Command::new(bin.join(prog));
            c.uid(uid)
                .gid(gid)
                .current_dir(&dir.path)
                .env("LC_ALL", "C")
                .env_remove("PGDATA");
            c
        };
        let out = output(as_postgres("initdb").args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let postmaster = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir.path)
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .args(["-c", "max_connections=20", "-c", "shared_buffers=64MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let pg = Self {
            postmaster,
            bin,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = pg
                .client("pg_isready")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(pg.dir.path.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn pid(&self) -> u32 {
        self.postmaster.id()
    }

    /// A client program of this server's version, pointed at its socket as user postgres.
    fn client(&self, prog: &str) -> Command {
        let mut c = Command::new(self.bin.join(prog));
        c.arg("-h")
            .arg(&self.dir.path)
            .args(["-U", "postgres"])
            .env("LC_ALL", "C");
        c
    }

    /// Runs `psql -c SQL` for each statement in one session; its tuples-only output.
    fn psql(&self, statements: &[&str]) -> String {
        let mut c = self.client("psql");
        c.args(["-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]);
        for s in statements {
            c.args(["-c", s]);
        }
        let out = output(&mut c);
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The postmaster's children now.
    fn children(&self) -> Vec<u32> {
        let pm = self.pid();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(") ")
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
                        == Some(pm)
                })
            })
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pid = self.pid() as i32;
        // SAFETY: signalling our own child: SIGINT is PostgreSQL's fast shutdown.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.postmaster.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }
}

/// An interactive psql session: one backend, alive across queries.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    fn open(pg: &Postgres) -> Self {
        let mut child = pg
            .client("psql")
            .args(["-At", "-q", "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs one statement that returns one row; its text.
    fn query(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "\\q");
        let _ = self.child.wait();
    }
}

/// The statements of the sorting query: sorted in memory (work_mem holds it).
fn sort_statements() -> [String; 2] {
    [
        "SET work_mem = '256MB'".to_owned(),
        format!(
            "SELECT count(*) FROM (SELECT g, md5(g::text) AS k FROM generate_series(1, {SORT_ROWS}) \
             g ORDER BY k) s"
        ),
    ]
}

/// Bytes allocated in `pid` on stacks that pass through every one of `through` (prefixes).
fn bytes_through(report: &Value, pid: u64, through: &[&str]) -> u64 {
    frames_of(report, pid)
        .into_iter()
        .filter(|(_, frames)| {
            through
                .iter()
                .all(|t| frames.iter().any(|f| f.starts_with(t)))
        })
        .map(|(bytes, _)| bytes)
        .sum()
}

/// The sort's memory in the backend that ran it, as oomtrace can see it in Debian's build
/// (static functions such as `AllocSetAlloc` have no symbol without the -dbgsym package, so
/// they show as `?? [postgres]`; the exported callers around them are named):
/// - the tuples, copied by `tuplesort_puttupleslot` through `heap_form_minimal_tuple` and
///   `palloc0` into AllocSet blocks: at least 48 bytes a row (a 16-byte minimal tuple header,
///   the int4, the 33-byte text of the md5);
/// - the `SortTuple` array (24 bytes a row), grown by `repalloc` under
///   `tuplesort_puttupleslot`: its last size at least, every growth counted.
fn assert_sort_seen(report: &Value, backend: u64) {
    // Every figure below needs every event: a ring that overflowed would make them short.
    assert_eq!(
        report["lost_events"], 0,
        "events lost (the ring overflowed during the burst)"
    );
    let tuples = bytes_through(
        report,
        backend,
        &[
            "palloc",
            "heap_form_minimal_tuple",
            "tuplesort_puttupleslot",
        ],
    );
    assert!(
        tuples >= SORT_ROWS * 48,
        "the sort's tuples: {tuples} bytes, expected at least {}",
        SORT_ROWS * 48
    );
    let array = bytes_through(report, backend, &["repalloc", "tuplesort_puttupleslot"]);
    assert!(
        array >= SORT_ROWS * 24,
        "the sort's SortTuple array: {array} bytes, expected at least {}",
        SORT_ROWS * 24
    );
}

/// The pids in the report.
fn report_pids(report: &Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect()
}

#[test]
fn postgres_attached_by_pid_stays_small_and_traces_new_backends_and_the_sort() {
    if !require_bpf() {
        return;
    }
    let pg = Postgres::start();
    let init = output(
        pg.client("pgbench")
            .args(["-i", "-s", "2", "-q", "postgres"])
            .stdout(Stdio::null()),
    );
    assert!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", pg.pid())).unwrap();
    assert!(maps.contains("/dev/zero (deleted)"), "{maps}");
    let pm = pg.pid().to_string();
    let tracer = Tracer::start(
        &[
            "--pid",
            &pm,
            "--duration",
            "12s",
            "--format",
            "json",
            "--ring-buffer-kib",
            RING_KIB,
        ],
        &[],
        &pg.dir.path.join("rss"),
    );
    let bench = pg
        .client("pgbench")
        .args(["-c", "4", "-j", "2", "-T", "5", "-n", "postgres"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let [set, sort] = sort_statements();
    let out = pg.psql(&["SELECT pg_backend_pid()", &set, &sort]);
    let mut lines = out.lines();
    let sorter: u64 = lines.next().unwrap().parse().unwrap();
    assert_eq!(lines.last(), Some(SORT_ROWS.to_string().as_str()), "{out}");
    let bench = bench.wait_with_output().unwrap();
    assert!(
        bench.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let (code, report, stderr, peak) = tracer.finish();
    assert_eq!(code, 0, "{stderr}");
    eprintln!("oomtrace peak RSS: {peak} KiB");
    show(&report, sorter, "the sorting backend");
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    // pgbench's four connections and psql's: five backends forked after the attach, traced.
    let pids = report_pids(&report);
    let backends = pids.iter().filter(|&&p| p != u64::from(pg.pid())).count();
    assert!(backends >= 5, "only {backends} backend(s) in {pids:?}");
    assert!(
        pids.contains(&sorter),
        "the sorting backend {sorter} is not in {pids:?}"
    );
    assert_sort_seen(&report, sorter);
}

/// A pre-forked server does its work in processes forked before anyone attaches: a backend
/// whose connection was open before the attach must be traced too. This needs `--pid` to take
/// the process tree (issue 22, section 1).
#[test]
fn postgres_backends_forked_before_the_attach_are_traced() {
    if !require_bpf() {
        return;
    }
    let pg = Postgres::start();
    let mut session = Session::open(&pg);
    let backend: u64 = session.query("SELECT pg_backend_pid();").parse().unwrap();
    let before = pg.children();
    assert!(
        before.contains(&(backend as u32)),
        "{backend} in {before:?}"
    );
    let pm = pg.pid().to_string();
    let tracer = Tracer::start(
        &[
            "--pid",
            &pm,
            "--duration",
            "8s",
            "--format",
            "json",
            "--ring-buffer-kib",
            RING_KIB,
        ],
        &[],
        &pg.dir.path.join("rss"),
    );
    let [set, sort] = sort_statements();
    session.query(&format!("{set}; SELECT 1;"));
    assert_eq!(session.query(&format!("{sort};")), SORT_ROWS.to_string());
    let (code, report, stderr, peak) = tracer.finish();
    drop(session);
    assert_eq!(code, 0, "{stderr}");
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    let pids = report_pids(&report);
    eprintln!("children before the attach: {before:?}; in the report: {pids:?}");
    show(&report, backend, "the pre-existing backend");
    assert!(
        pids.contains(&backend),
        "the backend {backend}, forked before the attach, is not traced: {pids:?}"
    );
    assert_sort_seen(&report, backend);
}
