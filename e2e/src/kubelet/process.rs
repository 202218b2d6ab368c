//! Containers as local processes: program lookup, spawning into a process group of its own with
//! a clean environment and a log file, and signalling that group.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

use super::plan::ProcessPlan;

/// Variables a process inherits from the test process; everything else comes from the pod.
const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "RUST_LOG"];

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program` itself when it is a path; otherwise the first executable of that name in
/// `bin_dirs` (the workspace's target/<profile>/), then in `path` (a PATH value).
pub fn resolve_program(
    program: &str,
    bin_dirs: &[PathBuf],
    path: Option<&OsStr>,
) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let from_path = path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    bin_dirs
        .iter()
        .chain(&from_path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Starts the plan's process in a new process group, stdout and stderr appended to `log`. Its
/// environment: PATH, HOME and RUST_LOG of the test process, then `extra_env` (KUBECONFIG),
/// then the container's env, each overriding the one before.
pub fn spawn(
    plan: &ProcessPlan,
    program: &Path,
    extra_env: &[(String, String)],
    default_dir: &Path,
    log: &Path,
) -> Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let dir = plan.working_dir.as_deref().unwrap_or(default_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = Command::new(program);
    command
        .args(&plan.args)
        .env_clear()
        .envs(
            INHERITED_ENV
                .iter()
                .filter_map(|k| Some((*k, std::env::var_os(k)?))),
        )
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .envs(plan.env.iter())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// Sends `signal` to the process group led by `pid`; a group that is gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, signal)
        && e != rustix::io::Errno::SRCH
    {
        tracing::warn!(%e, pid = pid.as_raw_pid(), "signalling a process group");
    }
}

/// Exit code as Kubernetes reports it (128 + signal for a killed process) and the signal.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (-1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_in_bin_dirs_before_path() {
        let bins = tempfile::tempdir().unwrap();
        let tool = bins.path().join("sh");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::var_os("PATH");
        assert_eq!(
            resolve_program("sh", &[bins.path().to_owned()], path.as_deref()),
            Some(tool.clone())
        );
        let from_path = resolve_program("sh", &[], path.as_deref()).unwrap();
        assert!(from_path.ends_with("sh") && from_path != tool);
        assert_eq!(
            resolve_program("/x/y", &[], None),
            Some(PathBuf::from("/x/y"))
        );
        assert_eq!(
            resolve_program("no-such-program-here", &[], path.as_deref()),
            None
        );
    }
}
