//! `oomtrace gpu` on fixture trees standing in for /proc and /sys (issue 7's snapshot contract).

use serde_json::Value;

use crate::util::*;

#[test]
fn apu_snapshot_json_has_exact_unattributed_gtt() {
    let base = root().join("tests/fixtures/gpu/apu");
    let out = output(
        oomtrace()
            .arg("gpu")
            .arg("--proc-root")
            .arg(base.join("proc"))
            .arg("--sys-root")
            .arg(base.join("sys"))
            .args(["--format", "json"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "oomtrace.gpu/1");
    assert_eq!(v["devices"][0]["driver"], "amdgpu");
    assert_eq!(v["devices"][0]["unattributed_gtt"], 2_147_483_648u64);
    assert_eq!(v["devices"][0]["unattributed_vram"], 1_048_576u64);
    let shared = v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == 42)
        .unwrap();
    assert_eq!(
        shared["pids"],
        serde_json::json!([100, 200]),
        "a client shared by two processes counts once"
    );
    // Malformed lines are warnings on stderr, not failures.
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a number"));
}

/// Copies a fixture tree into the work dir so a test can change it while oomtrace samples it.
fn scratch_copy(fixture: &str, name: &str) -> std::path::PathBuf {
    let dst = work_dir().join(name);
    let _ = std::fs::remove_dir_all(&dst);
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(root().join("tests/fixtures/gpu").join(fixture))
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst
}

#[test]
fn a_traced_run_samples_gpu_memory_and_flags_a_growing_driver_leak() {
    if !require_bpf() {
        return;
    }
    // An APU whose driver leaks GTT no client holds: 512 KiB more every 100 ms (5 MiB/s) for
    // as long as oomtrace records `sleep 6` at a 200 ms tick.
    let tree = scratch_copy("apu", "gpu-leaking-apu");
    let gtt = tree.join("sys/devices/pci0000:00/0000:c3:00.0/mem_info_gtt_used");
    let base: u64 = std::fs::read_to_string(&gtt)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let file = work_dir().join("gpu-leak.oomtrace");
    let report_path = work_dir().join("gpu-leak.json");
    let stderr_path = work_dir().join("gpu-leak.stderr");
    let mut tracer = oomtrace()
        .arg("record")
        .arg("-o")
        .arg(&file)
        .args(["--format", "json", "--tick", "200ms", "--", "sleep", "6"])
        .env("OOMTRACE_GPU_PROC_ROOT", tree.join("proc"))
        .env("OOMTRACE_GPU_SYS_ROOT", tree.join("sys"))
        // Files, not pipes: nobody reads a pipe while the loop below polls for the exit.
        .stdout(std::fs::File::create(&report_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    const STEP: u64 = 512 << 10;
    let mut steps = 0;
    // Written through a rename, as sysfs changes, so no read sees half a number.
    let write = |v: u64| {
        let tmp = gtt.with_extension("tmp");
        std::fs::write(&tmp, format!("{v}\n")).unwrap();
        std::fs::rename(&tmp, &gtt).unwrap();
    };
    while tracer.try_wait().unwrap().is_none() {
        steps += 1;
        write(base + steps * STEP);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = tracer.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{stderr}");
    let live: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let gpu = &live["gpu"];
    assert_eq!(gpu["schema"], "oomtrace.gpu/1");
    assert!(gpu["samples"].as_u64().unwrap() >= 30, "{}", gpu["samples"]);
    // The latest snapshot is the whole `oomtrace gpu` object: a state the test wrote (taken
    // when tracing ended, before the probes' detach, during which the writes went on).
    let latest_gtt = gpu["devices"][0]["gtt_used"].as_u64().unwrap();
    let k = (latest_gtt - base) / STEP;
    assert_eq!(latest_gtt, base + k * STEP);
    assert!((40..=steps).contains(&k), "sampled step {k} of {steps}");
    let leaked = 2_147_483_648u64 + k * STEP;
    assert_eq!(gpu["devices"][0]["unattributed_gtt"], leaked);
    assert_eq!(
        gpu["nvidia"]["available"], false,
        "no NVIDIA GPU on this machine"
    );
    let series = |name: &str| -> &Value {
        gpu["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no series {name}: {}", gpu["series"]))
    };
    let unattributed = series("card0 unattributed_gtt");
    assert_eq!(unattributed["latest_bytes"], leaked);
    assert_eq!(unattributed["peak_bytes"], leaked);
    assert_eq!(unattributed["growth"]["class"], "growing", "{unattributed}");
    let rate = unattributed["growth"]["bytes_per_s"].as_f64().unwrap();
    let truth = (STEP * 10) as f64;
    assert!(
        (rate - truth).abs() < 0.15 * truth,
        "rate {rate} vs the written {truth} B/s"
    );
    // VRAM did not move: bounded, never growing.
    assert_eq!(series("card0 vram_used")["growth"]["class"], "bounded");
    // The recording replays to the same GPU object (and the same report).
    let offline = output(
        oomtrace()
            .arg("report")
            .arg(&file)
            .args(["--format", "json"]),
    );
    assert!(offline.status.success());
    let offline: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(offline["gpu"], live["gpu"]);
}

/// Checked on a machine with an NVIDIA GPU; elsewhere (CI has none) there is nothing to check
/// and the test says so.
#[test]
fn nvml_sees_a_cuda_allocation_of_known_size() {
    let probe = output(oomtrace().args(["gpu", "--format", "json"]));
    assert!(probe.status.success());
    let v: Value = serde_json::from_slice(&probe.stdout).unwrap();
    if v["nvidia"]["available"] != true || v["nvidia"]["devices"] == serde_json::json!([]) {
        let notice = v["nvidia"]["notice"].as_str().unwrap_or("");
        assert!(!notice.is_empty(), "an absent NVML source says why");
        eprintln!("no NVIDIA GPU here ({notice}): nothing to check");
        return;
    }
    let exe = build_c("cuda_alloc", "cuda_alloc", &["-O1"]);
    const MIB: u64 = 256;
    let mut child = std::process::Command::new(&exe)
        .arg(MIB.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let used = || -> u64 {
        let out = output(oomtrace().args(["gpu", "--format", "json"]));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nvidia"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["processes"].as_array().unwrap().iter())
            .filter(|p| p["pid"] == pid)
            .map(|p| p["used_bytes"].as_u64().expect("NVML knows the figure"))
            .sum()
    };
    let before = used();
    assert!(before > 0, "a CUDA context holds GPU memory");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"alloc\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "allocated");
    let after = used();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(
        after - before,
        MIB << 20,
        "cuMemAlloc of {MIB} MiB: {before} -> {after} bytes"
    );
    eprintln!("NVML: context {before} B, after cuMemAlloc({MIB} MiB) {after} B");

    // A traced run follows the process's GPU memory over time: the series of its pid rises
    // by exactly the allocation.
    if !require_bpf() {
        return;
    }
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "--tick", "200ms", "--"])
            .arg(&exe)
            .args([&MIB.to_string(), "auto", "2000"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = report["processes"][0]["pid"].as_u64().unwrap();
    let gpu = &report["gpu"];
    let series = gpu["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == format!("pid {pid}"))
        .unwrap_or_else(|| panic!("no GPU series for pid {pid}: {gpu}"));
    let peak = series["peak_bytes"].as_u64().unwrap();
    eprintln!("traced run: pid {pid} GPU series {series}");
    assert_eq!(
        peak, after,
        "the same context and allocation as above: {series}"
    );
}
