//! `oomtrace agent` feeding Prometheus and a profile store (issue 16): a real Prometheus server
//! (Debian's package) scraping the agent on loopback, a pprof push received by an endpoint in
//! the test, and the agent's bounds and reload. Workloads: tests/workloads/fleet.c.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// The leak of `fleet leak`: 512 KiB/s.
const LEAK_RATE: f64 = 512.0 * 1024.0;

/// The fleet workload built under `name` (its comm).
fn fleet(name: &str) -> PathBuf {
    build_c("fleet", name, &["-O2", "-g", "-fno-omit-frame-pointer"])
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a tool the test needs is installed; under CI it must be (`cargo xtask setup`).
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "{tool} is needed under CI: cargo xtask setup installs it"
        );
        eprintln!("skipping: no {tool}");
    }
    ok
}

/// A GET over HTTP/1.0: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The running agent; stopped (SIGTERM) when dropped.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Agent {
    /// Starts `oomtrace agent ARGS` and waits until it traces.
    fn start(args: &[&str]) -> Self {
        let mut child = oomtrace()
            .arg("agent")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut agent = Self {
            child,
            lines,
            stderr: Vec::new(),
        };
        agent.wait_line("tracing", Duration::from_secs(30));
        agent
    }

    /// Waits for a stderr line containing `what`.
    fn wait_line(&mut self, what: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(what);
                    self.stderr.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no {what:?} line from the agent; stderr:\n{}",
            self.stderr.join("\n")
        );
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then its exit status (killed after 20 s).
    fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// A child process killed when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus server on loopback scraping `target` every second, with its own data
/// directory; stopped and cleaned up when dropped.
struct Prometheus {
    child: Reaped,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let dir = work_dir().join(format!("fleet-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: oomtrace\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts");
        let p = Self {
            child: Reaped(child),
            dir,
            port,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/-/ready").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < end, "prometheus not ready: {}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The samples of an instant query: (labels, value).
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", encode(q)))
            .expect("prometheus answers");
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// The single value of `q`, if there is one.
    fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "{q}: more than one series: {r:?}");
        r.first().map(|(_, v)| *v)
    }

    /// Polls `q` until `ok` holds for its value, for at most `limit`.
    fn wait_for(&self, q: &str, limit: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let end = Instant::now() + limit;
        loop {
            if let Some(v) = self.value(q).filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "{q}: not there in {limit:?} (now {:?}); targets: {:?}",
                self.value(q),
                http_get(self.port, "/api/v1/targets").map(|(_, b)| b)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A memory cgroup capped at `limit` bytes (v2 where the memory controller is there, else
/// v1), its processes killed and the directory removed when dropped.
struct Capped {
    dir: PathBuf,
}

impl Capped {
    fn new(limit: u64) -> Self {
        let name = format!("oomtrace-fleet-test-{}", std::process::id());
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let dir = if v2 {
            Path::new("/sys/fs/cgroup").join(&name)
        } else {
            Path::new("/sys/fs/cgroup/memory").join(&name)
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap();
        let write = |file: &str, v: &str| {
            let p = dir.join(file);
            if p.exists() {
                std::fs::write(&p, v).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        };
        if v2 {
            write("memory.max", &limit.to_string());
            write("memory.swap.max", "0");
        } else {
            write("memory.limit_in_bytes", &limit.to_string());
            write("memory.memsw.limit_in_bytes", &limit.to_string());
        }
        Self { dir }
    }

    /// Runs `exe ARGS` inside, to its end: its exit status.
    fn run(&self, exe: &Path, args: &[&str]) -> std::process::ExitStatus {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                self.dir.display()
            ))
            .arg(exe)
            .args(args)
            .status()
            .unwrap()
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let end = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts `fleet leak` as `name` for `secs`: the child and its pid.
fn leaky(name: &str, secs: u32) -> (Reaped, u32) {
    let mut child = Command::new(fleet(name))
        .args(["leak", "512", &secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line.trim().strip_prefix("ready ").unwrap().parse().unwrap();
    (Reaped(child), pid)
}

#[test]
fn agent_feeds_prometheus_the_leak_rate_a_bounded_cache_and_oom_kills() {
    if !require_bpf() || !have("prometheus") || !have("promtool") {
        return;
    }
    let hog = fleet("fleet_hog");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // The whole machine, in growth mode (the defaults), refreshed every second.
    let mut agent = Agent::start(&["--listen", &listen, "--refresh", "1s"]);
    let prom = Prometheus::start(port);
    let (_workload, pid) = leaky("fleet_leaky", 60);
    let started = Instant::now();

    // An OOM kill in a capped cgroup, while the leak goes on.
    let capped = Capped::new(32 << 20);
    let status = capped.run(&hog, &["hog"]);
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(9),
        "the hog is OOM-killed: {status:?}"
    );
    drop(capped);
    prom.wait_for(
        "oomtrace_oom_kills_total{comm=\"fleet_hog\"}",
        Duration::from_secs(15),
        |v| v >= 1.0,
    );

    // The leaking site's rate, once its series spans 25 s.
    let leak =
        format!("oomtrace_stack_growth_bytes_per_second{{pid=\"{pid}\",site=\"fleet_leak\"}}");
    prom.wait_for(&leak, Duration::from_secs(40), |v| v > 0.0);
    if let Some(left) = Duration::from_secs(26).checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let rate = prom.value(&leak).expect("the leak's series");
    assert!(
        (rate - LEAK_RATE).abs() <= 0.2 * LEAK_RATE,
        "leak rate {rate:.0} B/s, true rate {LEAK_RATE} B/s (±20 %)"
    );
    let held = prom
        .value(&format!(
            "oomtrace_stack_outstanding_bytes{{pid=\"{pid}\",site=\"fleet_leak\"}}"
        ))
        .unwrap();
    assert!(
        held >= 10.0 * 1024.0 * 1024.0,
        "the leak holds {held} bytes"
    );

    // The bounded cache (8 × 128 KiB, churned at 4 Hz): exported at every scrape, never flagged.
    let cache = format!("{{pid=\"{pid}\",site=\"fleet_cache\"}}");
    let scrapes = prom
        .value(&format!(
            "count_over_time(oomtrace_stack_growth_bytes_per_second{cache}[5m])"
        ))
        .expect("the cache's series");
    assert!(scrapes >= 15.0, "the cache site in {scrapes} scrapes only");
    for f in ["max_over_time", "min_over_time"] {
        let v = prom
            .value(&format!(
                "{f}(oomtrace_stack_growth_bytes_per_second{cache}[5m])"
            ))
            .unwrap();
        assert_eq!(v, 0.0, "{f} of the cache's growth rate");
    }
    let cached = prom
        .value(&format!("oomtrace_stack_outstanding_bytes{cache}"))
        .unwrap();
    // 7 or 8 blocks of 128 KiB (one is freed and mapped again at each step), give or take the
    // page or two malloc's own header writes put elsewhere or here, and up to a page a block:
    // malloc writes the next chunk's header past each block, and that fault, inside libc's
    // malloc, unwinds through libc's tables to fleet_cache.
    assert!(
        (7.0 * 131072.0 - 8192.0..=8.0 * (131072.0 + 4096.0) + 8192.0).contains(&cached),
        "the cache holds {cached} bytes (7 or 8 blocks of 128 KiB)"
    );
    // The process's own figures.
    let comm = prom
        .query(&format!("oomtrace_process_rss_bytes{{pid=\"{pid}\"}}"))
        .first()
        .map(|(m, _)| m["comm"].clone());
    assert_eq!(comm, Some(Value::from("fleet_leaky")));

    // A scrape passes promtool's checks.
    let (status, page) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for family in [
        "oomtrace_process_heap_bytes",
        "oomtrace_process_growth_bytes_per_second",
        "oomtrace_lost_events_total",
        "oomtrace_tracer_cpu_seconds_total",
        "oomtrace_tracer_resident_bytes",
    ] {
        assert!(
            page.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert_eq!(agent.stop(), Some(0), "SIGTERM stops the agent cleanly");
}

/// One request received by [`Ingest`].
struct Received {
    target: String,
    content_type: String,
    body: Vec<u8>,
}

/// A Pyroscope-like `/ingest` endpoint: records every request, answers 200.
struct Ingest {
    port: u16,
    requests: mpsc::Receiver<Received>,
}

impl Ingest {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || Self::serve(conn, &tx));
            }
        });
        Self { port, requests }
    }

    /// Requests on one keep-alive connection, until it closes.
    fn serve(conn: TcpStream, tx: &mpsc::Sender<Received>) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
        let mut out = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        loop {
            let mut request_line = String::new();
            if r.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut len = 0usize;
            let mut content_type = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "content-type" => content_type = v.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let target = request_line.split_whitespace().nth(1).unwrap().to_owned();
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send(Received {
                target,
                content_type,
                body,
            });
        }
    }
}

/// The query parameters of a request target, decoded.
fn query_params(target: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect()
}

/// The `profile` part of a multipart/form-data body.
fn profile_part(content_type: &str, body: &[u8]) -> Vec<u8> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a multipart boundary");
    let open = format!("--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(body, open.as_bytes()).expect("a first part");
    let part = &body[start + open.len()..];
    let head_end = find(part, b"\r\n\r\n").expect("part headers");
    let head = String::from_utf8_lossy(&part[..head_end]);
    assert!(head.contains("name=\"profile\""), "{head}");
    let data = &part[head_end + 4..];
    let end = find(data, close.as_bytes()).expect("the closing boundary");
    data[..end].to_vec()
}

/// `go`, where Debian's golang-go put it.
fn go() -> Option<&'static str> {
    ["go", "/usr/lib/go/bin/go"].into_iter().find(|g| {
        Command::new(g)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// `go tool pprof -traces` of a profile: (inuse bytes, labels as `key:value`, frames) per
/// sample. Each sample reads
/// ```text
/// -----------+-------------------------------------------------------
///       comm:  fleet_pushed
///        pid:  6511
///   4718592B   __memset_avx512_unaligned_erms
///              fleet_leak
/// ```
fn traces(go: &str, profile: &Path) -> Vec<(u64, Vec<String>, Vec<String>)> {
    let out = output(
        Command::new(go)
            .args([
                "tool",
                "pprof",
                "-traces",
                "-sample_index=inuse_space",
                "-symbolize=none",
                "-unit=B",
            ])
            .arg(profile)
            .env("HOME", work_dir()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut samples = Vec::new();
    for block in text.split("-----------+-------------------------------------------------------") {
        let (mut labels, mut bytes, mut frames) = (Vec::new(), None, Vec::new());
        for l in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if bytes.is_some() {
                frames.push(l.to_owned());
                continue;
            }
            let (first, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            if let Some(b) = first.strip_suffix('B').and_then(|v| v.parse::<u64>().ok()) {
                bytes = Some(b);
                frames.push(rest.trim().to_owned());
            } else if let Some(key) = first.strip_suffix(':') {
                labels.push(format!("{key}:{}", rest.trim()));
            }
        }
        if let Some(b) = bytes {
            samples.push((b, labels, frames));
        }
    }
    samples
}

#[test]
fn agent_pushes_heap_profiles_with_their_labels_and_keeps_a_bounded_directory() {
    if !require_bpf() {
        return;
    }
    let Some(go) = go() else {
        assert!(std::env::var("CI").is_err(), "go is needed under CI");
        eprintln!("skipping: no go toolchain for `go tool pprof`");
        return;
    };
    let ingest = Ingest::start();
    let dir = work_dir().join(format!("fleet-pprof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_workload, pid) = leaky("fleet_pushed", 30);
    // Only this command, by its name: nothing else is traced or pushed.
    let mut agent = Agent::start(&[
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--comm",
        "fleet_pushed",
        "--refresh",
        "1s",
        "--pprof-push",
        &format!("http://127.0.0.1:{}", ingest.port),
        "--push-interval",
        "2s",
        "--pprof-dir",
        dir.to_str().unwrap(),
        "--pprof-dir-max",
        "64K",
        "--hostname",
        "test-host",
    ]);
    let started = Instant::now();
    let mut checked = None;
    while checked.is_none() {
        let req = ingest
            .requests
            .recv_timeout(Duration::from_secs(20))
            .expect("a push within 20 s");
        let params = query_params(&req.target);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {k} in {}", req.target))
        };
        assert!(req.target.starts_with("/ingest?"), "{}", req.target);
        assert_eq!(param("format"), "pprof");
        assert_eq!(
            param("name"),
            format!("oomtrace{{host=test-host,comm=fleet_pushed,pid={pid}}}")
        );
        let (from, until): (u64, u64) = (
            param("from").parse().unwrap(),
            param("until").parse().unwrap(),
        );
        assert!(from < until, "{from} < {until}");
        // After 5 s the leak (512 KiB/s) holds more than the 1 MiB cache.
        if started.elapsed() < Duration::from_secs(5) {
            continue;
        }
        let file = work_dir().join(format!("fleet-pushed-{}.pb.gz", std::process::id()));
        std::fs::write(&file, profile_part(&req.content_type, &req.body)).unwrap();
        let samples = traces(go, &file);
        let top = samples
            .iter()
            .max_by_key(|s| s.0)
            .unwrap_or_else(|| panic!("no samples in the pushed profile"));
        assert!(
            top.2.iter().any(|f| f == "fleet_leak"),
            "the top stack is the leak's: {top:?}"
        );
        assert!(top.0 >= 2 << 20, "the leak holds {} bytes", top.0);
        for s in &samples {
            assert!(
                s.1.contains(&"comm:fleet_pushed".to_owned())
                    && s.1.contains(&format!("pid:{pid}")),
                "every sample is the process's, with its labels: {:?}",
                s.1
            );
        }
        let _ = std::fs::remove_file(&file);
        checked = Some(());
    }
    assert_eq!(agent.stop(), Some(0));
    // The directory: one file per interval, the oldest removed past 64 KiB.
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert!(!files.is_empty(), "profiles written into {}", dir.display());
    assert!(
        files
            .iter()
            .all(|(n, _)| n.starts_with("oomtrace-") && n.ends_with(".pb.gz")),
        "{files:?}"
    );
    let total: u64 = files.iter().map(|f| f.1).sum();
    assert!(total <= 64 * 1024, "{total} bytes in {files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_forgets_exited_processes_keeps_its_caps_and_reloads_on_sighup() {
    if !require_bpf() {
        return;
    }
    let dir = work_dir().join(format!("fleet-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.toml");
    let first = free_port();
    let write_config = |port: u16, processes: usize| {
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nrefresh = \"1s\"\nmax_processes = {processes}\n\
                 max_stacks_per_process = 8\nmax_series = 64\nmin_site_bytes = \"4K\"\n"
            ),
        )
        .unwrap();
    };
    write_config(first, 16);
    let printed = output(oomtrace().args(["agent", "--config"]).arg(&config).args([
        "--top-k",
        "3",
        "--print-config",
    ]));
    let printed = String::from_utf8_lossy(&printed.stdout);
    for line in [
        format!("listen = \"127.0.0.1:{first}\""),
        "top_k = 3".into(),
        "max_processes = 16".into(),
        "mode = \"growth\"".into(),
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line} not in:\n{printed}"
        );
    }

    let mut agent = Agent::start(&["--config", config.to_str().unwrap()]);
    let churn = Command::new(fleet("fleet_churn"))
        .args(["churn", "6"])
        .status()
        .unwrap();
    assert!(churn.success());
    // Two refreshes later every churned process is gone from the page, and no more processes
    // than the cap were ever shown.
    std::thread::sleep(Duration::from_secs(3));
    let (_, page) = http_get(first, "/metrics").unwrap();
    let pids: std::collections::BTreeSet<&str> = page
        .lines()
        .filter(|l| l.starts_with("oomtrace_process_heap_bytes{"))
        .filter_map(|l| l.split("pid=\"").nth(1)?.split('"').next())
        .collect();
    assert!(pids.len() <= 16, "{} processes shown: {pids:?}", pids.len());
    assert!(
        !page.contains("comm=\"fleet_churn\""),
        "exited processes are forgotten:\n{page}"
    );
    let sites = page
        .lines()
        .filter(|l| l.starts_with("oomtrace_stack_outstanding_bytes{"))
        .count();
    assert!(sites <= 16 * 10, "{sites} site series");

    // SIGHUP: a broken file keeps the running configuration...
    std::fs::write(&config, "listen = 42\n").unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_line("not reloaded", Duration::from_secs(10));
    assert_eq!(http_get(first, "/metrics").map(|r| r.0), Some(200));
    // ...a good one moves the listener.
    let second = free_port();
    write_config(second, 16);
    agent.signal(libc::SIGHUP);
    agent.wait_line("configuration reloaded", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    while http_get(second, "/metrics").is_none_or(|(s, _)| s != 200) {
        assert!(Instant::now() < end, "nothing on the new address");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A change of what is traced starts tracing again, and the agent stays up.
    write_config(second, 32);
    agent.signal(libc::SIGHUP);
    agent.wait_line("tracing starts again", Duration::from_secs(10));
    agent.wait_line("tracing", Duration::from_secs(30));
    assert_eq!(http_get(second, "/metrics").map(|r| r.0), Some(200));
    assert_eq!(agent.stop(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
