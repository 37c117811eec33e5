//! Snapshot tests over the proc/sys trees in `tests/fixtures/gpu/<scenario>/`.
//!
//! - `apu`: an amdgpu APU holding a model in GTT, one client shared by two fds
//!   and two processes, legacy and current keys, a malformed client, a
//!   shared dma-buf, KFD, meminfo with `GPUActive`, and 2 GiB of GTT and 1 MiB
//!   of VRAM that no client holds.
//! - `igpu`: an i915 card with no `mem_info_*` files, no KFD, no GPU lines in meminfo.
//! - `empty`: no DRM at all.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::testutil::tree_fixtures;
use super::{Roots, snapshot};

fn roots(scenario: &str) -> (PathBuf, Roots) {
    let base = tree_fixtures().join(scenario);
    assert!(base.is_dir(), "missing fixture tree {}", base.display());
    let roots = Roots {
        proc_root: base.join("proc"),
        sys_root: base.join("sys"),
    };
    (base, roots)
}

/// The snapshot's JSON without `warnings`, and the warnings with paths relative to `base`.
fn take(scenario: &str) -> (Value, Vec<String>, String) {
    let (base, roots) = roots(scenario);
    let snap = snapshot(&roots).expect("snapshot");
    let warnings = snap
        .warnings
        .iter()
        .map(|w| {
            let path = w
                .path
                .as_deref()
                .map(|p| p.strip_prefix(&base).unwrap_or(p).display().to_string());
            format!("{}: {}", path.unwrap_or_default(), w.message)
        })
        .collect();
    let mut value = snap.to_json();
    let top = value.as_object_mut().expect("an object");
    top.remove("warnings").expect("a warnings key");
    // A fixture tree is not this machine: NVML is never asked, and says so.
    let nvidia = top.remove("nvidia").expect("an nvidia key");
    assert_eq!(nvidia["available"], false);
    assert_eq!(nvidia["devices"], json!([]));
    let notice = NVIDIA_ON_SAVED_TREE;
    assert_eq!(nvidia["notice"], notice);
    let text = snap.render_text();
    let text = text
        .strip_suffix(&format!("{notice}\n"))
        .expect("the text ends with the NVIDIA notice")
        .to_owned();
    (value, warnings, text)
}

const NVIDIA_ON_SAVED_TREE: &str =
    "NVIDIA: not read: the snapshot is of a saved /proc or /sys tree";

/// Asserts equality printing both sides as pretty JSON.
fn assert_json(got: &Value, expected: &Value) {
    assert!(
        got == expected,
        "JSON differs\n--- expected\n{}\n--- got\n{}",
        serde_json::to_string_pretty(expected).unwrap_or_default(),
        serde_json::to_string_pretty(got).unwrap_or_default()
    );
}

fn resident(bytes: u64) -> Value {
    json!({ "total": null, "shared": null, "resident": bytes, "purgeable": null, "active": null })
}

#[test]
fn apu_tree_exact_json() {
    let (got, _, _) = take("apu");
    let expected = json!({
        "schema": "oomtrace.gpu/1",
        "devices": [{
            "card": "card0", "pdev": "0000:c3:00.0", "driver": "amdgpu",
            "vram_total": 16_636_528_640_u64, "vram_used": 56_856_576,
            "vis_vram_total": 16_636_528_640_u64, "vis_vram_used": 56_856_576,
            "gtt_total": 103_079_215_104_u64, "gtt_used": 28_025_307_136_u64,
            "unattributed_vram": 1_048_576, "unattributed_gtt": 2_147_483_648_u64,
        }],
        "clients": [
            {
                "pdev": "0000:c3:00.0", "driver": "amdgpu", "client_id": 7,
                "pids": [300], "comms": ["gnome-shell"],
                "regions": {
                    "cpu": resident(0),
                    "gtt": { "total": 12_582_912, "shared": 0, "resident": 12_582_912, "purgeable": 0, "active": 4_194_304 },
                    "vram": { "total": 67_108_864, "shared": 16_777_216, "resident": 50_331_648, "purgeable": 0, "active": 33_554_432 },
                },
            },
            {
                "pdev": "0000:c3:00.0", "driver": "amdgpu", "client_id": 42,
                "pids": [100, 200], "comms": ["llama-server", "llama-worker"],
                "regions": { "cpu": resident(0), "gtt": resident(25_864_192_000), "vram": resident(5_476_352) },
            },
            {
                "pdev": "0000:c3:00.0", "driver": "amdgpu", "client_id": 99,
                "pids": [400], "comms": ["broken"],
                "regions": { "gtt": resident(1_048_576) },
            },
        ],
        "dmabufs": [
            { "ino": 2001, "size": 8_388_608, "exp_name": "amdgpu", "name": null,
              "pids": [100, 300], "comms": ["gnome-shell", "llama-server"] },
            { "ino": null, "size": 4096, "exp_name": "system", "name": "sync-fence",
              "pids": [300], "comms": ["gnome-shell"] },
        ],
        "kfd": [{ "pid": 100, "comm": "llama-server", "gpu_id": 12345, "vram": 1_073_741_824 }],
        "meminfo": { "gpu_active": 28_025_290_752_u64, "gpu_reclaim": 0 },
    });
    assert_json(&got, &expected);
}

#[test]
fn apu_tree_warnings_name_the_file() {
    let (_, warnings, _) = take("apu");
    let expected = [
        "proc/400/fdinfo/3: line 4: drm-memory-vram: \"lots\" is not a number; key skipped",
        "proc/400/fdinfo/3: line 6: no ':' in \"garbage without a colon\"; line skipped",
        "proc/400/fdinfo/3: line 7: drm-resident-cpu: unknown unit \"PiB\"; key skipped",
        "proc/400/fdinfo/4: DRM fdinfo without drm-client-id; not counted as a DRM client",
    ];
    assert_eq!(warnings, expected);
}

#[test]
fn apu_tree_text() {
    let (_, _, text) = take("apu");
    let expected = "\
GPU devices
  card0  0000:c3:00.0  amdgpu
    vram      used 54.2 MiB of 15.5 GiB, unattributed 1.0 MiB
    vis_vram  used 54.2 MiB of 15.5 GiB
    gtt       used 26.1 GiB of 96.0 GiB, unattributed 2.0 GiB

DRM clients (3)
  0000:c3:00.0  amdgpu  client 7  pids 300 (gnome-shell)
    cpu       resident 0 B
    gtt       total 12.0 MiB  shared 0 B  resident 12.0 MiB  purgeable 0 B  active 4.0 MiB
    vram      total 64.0 MiB  shared 16.0 MiB  resident 48.0 MiB  purgeable 0 B  active 32.0 MiB
  0000:c3:00.0  amdgpu  client 42  pids 100,200 (llama-server, llama-worker)
    cpu       resident 0 B
    gtt       resident 24.1 GiB
    vram      resident 5.2 MiB
  0000:c3:00.0  amdgpu  client 99  pids 400 (broken)
    gtt       resident 1.0 MiB

dma-bufs (2, 8.0 MiB in all)
  ino 2001  8.0 MiB  amdgpu  pids 100,300 (gnome-shell, llama-server)
  ino -  4.0 KiB  system \"sync-fence\"  pids 300 (gnome-shell)

KFD VRAM
  pid 100 (llama-server)  gpu 12345  1.0 GiB
meminfo: GPUActive 26.1 GiB, GPUReclaim 0 B
";
    assert_eq!(text, expected, "\n--- got\n{text}");
}

#[test]
fn apu_tree_symlinks_are_relative_and_resolve() {
    let (base, _) = roots("apu");
    for link in [
        "sys/class/drm/card0/device",
        "sys/devices/pci0000:00/0000:c3:00.0/driver",
    ] {
        let path = base.join(link);
        let target =
            std::fs::read_link(&path).unwrap_or_else(|e| panic!("{link} is not a symlink: {e}"));
        assert!(target.is_relative(), "{link} -> {}", target.display());
        assert!(path.exists(), "{link} dangles");
    }
}

#[test]
fn igpu_tree_absent_counters_are_null() {
    let (got, warnings, text) = take("igpu");
    let expected = json!({
        "schema": "oomtrace.gpu/1",
        "devices": [{
            "card": "card1", "pdev": "0000:00:02.0", "driver": "i915",
            "vram_total": null, "vram_used": null, "vis_vram_total": null, "vis_vram_used": null,
            "gtt_total": null, "gtt_used": null, "unattributed_vram": null, "unattributed_gtt": null,
        }],
        "clients": [
            {
                "pdev": "0000:00:02.0", "driver": "i915", "client_id": 7, "pids": [10], "comms": ["Xorg"],
                "regions": { "system0": { "total": 20_971_520, "shared": null, "resident": 20_971_520, "purgeable": null, "active": null } },
            },
            { "pdev": "0000:00:02.0", "driver": "i915", "client_id": 8, "pids": [20], "comms": ["firefox"], "regions": {} },
        ],
        "dmabufs": [{ "ino": 77, "size": 2_097_152, "exp_name": "i915", "name": null, "pids": [20], "comms": ["firefox"] }],
        "kfd": null,
        "meminfo": { "gpu_active": null, "gpu_reclaim": null },
    });
    assert_json(&got, &expected);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        text.contains("  card1  0000:00:02.0  i915\n    no memory counters\n"),
        "{text}"
    );
    assert!(
        text.contains("KFD: not present\nmeminfo: GPUActive -, GPUReclaim -\n"),
        "{text}"
    );
}

#[test]
fn empty_tree_says_no_devices() {
    let (got, warnings, text) = take("empty");
    let expected = json!({
        "schema": "oomtrace.gpu/1", "devices": [], "clients": [], "dmabufs": [], "kfd": null,
        "meminfo": { "gpu_active": null, "gpu_reclaim": null },
    });
    assert_json(&got, &expected);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(text.starts_with("no DRM devices found\n"), "{text}");
    assert!(text.contains("no DRM clients found\n"), "{text}");
}

#[test]
fn missing_roots_are_absent_not_errors() {
    let nowhere = Path::new("/nonexistent-oomtrace-gpu-test");
    let roots = Roots {
        proc_root: nowhere.join("proc"),
        sys_root: nowhere.join("sys"),
    };
    let snap = snapshot(&roots).expect("absent sources are not an error");
    let expected = json!({
        "schema": "oomtrace.gpu/1", "devices": [], "clients": [], "dmabufs": null, "kfd": null,
        "meminfo": { "gpu_active": null, "gpu_reclaim": null },
        "nvidia": {
            "available": false, "notice": NVIDIA_ON_SAVED_TREE, "driver_version": null,
            "devices": [],
        },
        "warnings": [],
    });
    assert_json(&snap.to_json(), &expected);
}

#[test]
fn json_keys_match_the_contract() {
    let (got, _, _) = take("apu");
    let keys =
        |v: &Value| -> Vec<String> { v.as_object().expect("object").keys().cloned().collect() };
    let mut top = keys(&got);
    top.sort();
    assert_eq!(
        top,
        ["clients", "devices", "dmabufs", "kfd", "meminfo", "schema"] // `nvidia` and `warnings` are taken out (and checked) by `take`.
    );
    let mut device = keys(&got["devices"][0]);
    device.sort();
    let mut want = [
        "card",
        "pdev",
        "driver",
        "vram_total",
        "vram_used",
        "vis_vram_total",
        "vis_vram_used",
        "gtt_total",
        "gtt_used",
        "unattributed_vram",
        "unattributed_gtt",
    ];
    want.sort();
    assert_eq!(device, want);
    let mut client = keys(&got["clients"][0]);
    client.sort();
    assert_eq!(
        client,
        ["client_id", "comms", "driver", "pdev", "pids", "regions"]
    );
    let mut region = keys(&got["clients"][0]["regions"]["gtt"]);
    region.sort();
    assert_eq!(
        region,
        ["active", "purgeable", "resident", "shared", "total"]
    );
}

#[test]
fn serialized_snapshot_keeps_contract_order_and_equals_to_json() {
    let (_, roots) = roots("apu");
    let snap = snapshot(&roots).expect("snapshot");
    let text = serde_json::to_string_pretty(&snap).expect("serializes");
    assert!(
        text.starts_with("{\n  \"schema\": \"oomtrace.gpu/1\",\n  \"devices\": ["),
        "{text}"
    );
    let reparsed: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_json(&reparsed, &snap.to_json());
}

#[test]
fn snapshot_of_this_machine_does_not_fail() {
    // Whatever the host has (or lacks), reading the real /proc and /sys must succeed.
    let snap = snapshot(&Roots::default()).expect("snapshot of the host");
    assert!(snap.dmabufs.is_some(), "/proc should be listable");
    let _ = snap.render_text();
}
