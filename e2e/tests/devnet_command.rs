//! The README's first command, small: `tributary-worker devnet` trains, reports, and after a
//! Ctrl-C (SIGINT) the same command resumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tributary_e2e::workspace_binary;

fn devnet(out: &std::path::Path) -> Command {
    let mut cmd = Command::new(workspace_binary("tributary-worker").unwrap());
    cmd.args([
        "devnet",
        "--peers",
        "2",
        "--rounds",
        "30",
        "--inner-steps",
        "3",
        "--quiet",
    ])
    .arg("--out")
    .arg(out)
    .args(["--timeout", "240"]);
    cmd
}

fn applied(out: &std::path::Path) -> usize {
    std::fs::read_to_string(out.join("peer-0/peer.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn devnet_trains_reports_and_resumes_after_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("devnet");
    // First life: interrupted after a few rounds.
    let mut first = devnet(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while applied(&out) < 3 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the devnet ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGINT to the devnet alone (a terminal would signal its children too; the devnet
    // stops them itself either way).
    let pid = first.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = first.wait().unwrap();
    assert!(!status.success(), "an interrupted devnet says so");
    let interrupted_at = applied(&out);

    // Second life: the same command picks the run up and finishes it.
    let done = devnet(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.contains("30 aggregates"), "{stdout}");
    let log = std::fs::read_to_string(out.join("coordinator.log")).unwrap();
    assert!(
        log.contains("resuming from the store"),
        "the coordinator resumed"
    );
    assert!(interrupted_at < 30, "it was interrupted mid-run");

    // The report: files, and a loss that fell toward the floor.
    for f in ["report.md", "results.json", "loss.svg", "run.yaml"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let first_loss = results["first_eval_loss"].as_f64().unwrap();
    let final_loss = results["final_eval_loss"].as_f64().unwrap();
    let floor = results["floor"].as_f64().unwrap();
    assert!(
        final_loss < first_loss - 0.5,
        "{first_loss} -> {final_loss}"
    );
    assert!(
        final_loss > floor,
        "never below the entropy floor ({floor})"
    );
    assert!(
        results["dense_bytes_per_peer"].as_f64().unwrap()
            > 50.0 * results["bytes_up_per_peer"].as_f64().unwrap()
    );
}
