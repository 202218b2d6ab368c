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

#[test]
fn a_copying_hostile_peer_without_a_collude_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .args(["join", "--run-id", "r", "--hostile", "copy", "--key"])
        .arg(dir.path().join("peer.key"))
        .env_remove("TRIBUTARY_COLLUDE_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--collude-dir"), "{err}");
    assert!(
        !dir.path().join("peer.key").exists(),
        "it stopped before anything else"
    );
}

#[test]
fn join_help_marks_hostile_modes_as_testing_the_coordinator_s_defences() {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .args(["join", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--hostile <KIND>"), "{help}");
    assert!(
        help.contains("TESTING THE COORDINATOR'S DEFENCES"),
        "{help}"
    );
    for kind in [
        "noise",
        "scaled",
        "sign-flip",
        "flip-aggregate",
        "replay",
        "copy",
        "colluder-origin",
        "other-data",
        "stale",
        "free-rider",
        "lazy",
    ] {
        assert!(help.contains(kind), "{kind} in {help}");
    }
}
