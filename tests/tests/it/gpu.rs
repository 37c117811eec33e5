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
