//! The workspace's binaries start and explain themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tributary_e2e::workspace_binary;

#[test]
fn worker_binary_is_built_and_answers_help() {
    let worker = workspace_binary("tributary-worker").unwrap();
    let out = std::process::Command::new(worker)
        .env_remove("LD_LIBRARY_PATH")
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: tributary-worker"));
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let err = workspace_binary("no-such-binary").unwrap_err().to_string();
    assert!(err.contains("not built"), "{err}");
}
