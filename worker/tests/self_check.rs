//! The worker binary must run with no library path set: its rpath finds libtorch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn worker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary-worker"));
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("LIBTORCH");
    cmd
}

#[test]
fn self_check_trains_one_step_without_ld_library_path() {
    let out = worker().args(["self-check", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "self-check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["libtorch_version"]
            .as_str()
            .unwrap()
            .starts_with("2.11.0")
    );
    let loaded = report["libtorch_loaded_from"].as_str().unwrap();
    assert!(loaded.ends_with("torch/lib/libtorch_cpu.so"), "{loaded}");
    // The wheel's libtorch has a CUDA backend; it must be linked even on a machine without a GPU.
    let has_cuda_lib = std::path::Path::new(loaded)
        .with_file_name("libtorch_cuda.so")
        .exists();
    assert_eq!(
        report["cuda_backend_loaded"].as_bool().unwrap(),
        has_cuda_lib
    );
    let cpu = &report["steps"][0];
    assert_eq!(cpu["device"], "Cpu");
    assert!(cpu["loss_after"].as_f64().unwrap() < cpu["loss_before"].as_f64().unwrap());
    assert_eq!(
        report["cuda_devices"].as_i64().unwrap() + 1,
        report["steps"].as_array().unwrap().len() as i64
    );
}

#[test]
fn help_lists_the_self_check() {
    let out = worker().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("self-check"));
}

#[test]
fn an_unknown_subcommand_is_a_clear_error() {
    let out = worker().arg("trian").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}
