//! The simulate command line as scripts use it: defaults first, the user's flags after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn a_later_simulate_flag_overrides_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.json");
    let status = Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .args([
            "simulate",
            "--tokens",
            "100000000",
            "--peers",
            "2",
            "--quiet",
        ])
        .args(["--tokens", "4096", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(report["config"]["tokens"], 4096);
    assert_eq!(report["config"]["peers"], 2);
}

#[test]
fn a_bad_flag_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .args(["simulate", "--strategy", "gossip"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gossip") && err.contains("sparseloco"),
        "{err}"
    );
}
