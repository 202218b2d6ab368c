//! End-to-end harness: runs the workspace's real binaries as local processes.

pub mod cluster;
pub mod devnet;
pub mod kubelet;
pub mod pod_security;

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Path of a binary built by this workspace into the same target profile as the running test
/// (`target/<profile>/<name>`), so e2e tests exercise exactly what the build produced.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // Test binaries live in target/<profile>/deps/.
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target/<profile> directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not built; build the workspace binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}
