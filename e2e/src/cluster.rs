//! The tools of the cluster tests: the local control plane (scripts/devcluster.sh), its kubectl,
//! and helm (scripts/setup-helm.sh) — each found or installed once per test process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cache_dir() -> PathBuf {
    std::env::var_os("TRIBUTARY_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tributary"),
        PathBuf::from,
    )
}

fn script_output(script: &str) -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join(script))
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout).context("script output is not UTF-8")?;
    let last = stdout.lines().last().unwrap_or_default().trim().to_owned();
    Ok(PathBuf::from(last))
}

/// helm: `TRIBUTARY_HELM`, else the cached install, else `scripts/setup-helm.sh` installs it.
pub fn helm() -> Result<&'static Path> {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = HELM.get() {
        return Ok(path);
    }
    let path = match std::env::var_os("TRIBUTARY_HELM") {
        Some(path) => PathBuf::from(path),
        None => {
            let cached = cache_dir().join("helm/helm");
            if cached.is_file() {
                cached
            } else {
                script_output("scripts/setup-helm.sh")?
            }
        }
    };
    Ok(HELM.get_or_init(|| path))
}

/// Starts (or finds running) the local control plane; returns its kubeconfig.
pub fn kubeconfig() -> Result<&'static Path> {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = KUBECONFIG.get() {
        return Ok(path);
    }
    let path = script_output("scripts/devcluster.sh")?;
    Ok(KUBECONFIG.get_or_init(|| path))
}

/// The cluster's own kubectl (1.20, within the version skew of the API server).
pub fn kubectl_path() -> Result<PathBuf> {
    let config = kubeconfig()?;
    let bin = config
        .parent()
        .context("kubeconfig has no directory")?
        .join("bin/kubectl");
    Ok(bin)
}

/// Runs a command with KUBECONFIG set and returns its output, failing with its stderr.
fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = output(program, args)?;
    if !out.status.success() {
        bail!(
            "{} {} failed:\n{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

/// Runs a command with KUBECONFIG set; the raw output, success or not.
pub fn output(program: &Path, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig()?)
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("running {}", program.display()))
}

pub fn kubectl(args: &[&str]) -> Result<String> {
    run(&kubectl_path()?, args)
}

pub fn helm_cmd(args: &[&str]) -> Result<String> {
    run(helm()?, args)
}

/// Polls `check` every 500 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > timeout {
            let why = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!(
                "timed out after {} s waiting for {what}{why}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
