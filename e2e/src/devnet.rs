//! A devnet driven by a test: the coordinator and peers as real processes on 127.0.0.1, which
//! the test can kill (SIGKILL) and restart, and the peers' logs to compare.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::workspace_binary;

/// One process the devnet started; killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit code once exited.
    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Devnet {
    pub dir: PathBuf,
    pub manifest: PathBuf,
    pub run_id: String,
    /// The coordinator's address, fixed after its first start so restarts reuse it.
    pub addr: Option<String>,
}

/// A peer log line's fields the tests compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub version: u64,
    pub round: u64,
    pub fingerprint: String,
}

impl Devnet {
    pub fn new(dir: &Path, run_id: &str, manifest_yaml: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let manifest = dir.join("run.yaml");
        std::fs::write(&manifest, manifest_yaml)?;
        Ok(Self {
            dir: dir.to_owned(),
            manifest,
            run_id: run_id.to_owned(),
            addr: None,
        })
    }

    fn log(&self, name: &str) -> Result<std::fs::File> {
        let path = self.dir.join(format!("{name}.log"));
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?)
    }

    /// Starts (or restarts, on the same address and store) the coordinator.
    pub fn start_coordinator(&mut self) -> Result<Proc> {
        let data = self.dir.join("coordinator");
        std::fs::create_dir_all(&data)?;
        let address_file = data.join("address");
        let _ = std::fs::remove_file(&address_file);
        let listen = self.addr.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let child = Command::new(workspace_binary("tributary-operator")?)
            .args(["coordinator", "--listen", &listen, "--run"])
            .arg(&self.manifest)
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(self.log("coordinator")?)
            .stderr(self.log("coordinator")?)
            .spawn()
            .context("starting the coordinator")?;
        let mut proc = Proc {
            name: "coordinator".into(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(addr) = std::fs::read_to_string(&address_file) {
                self.addr = Some(addr.trim().to_owned());
                return Ok(proc);
            }
            if let Some(code) = proc.exited() {
                bail!("the coordinator exited with {code}; see coordinator.log");
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> Result<String> {
        Ok(format!(
            "http://{}",
            self.addr.as_ref().context("coordinator not started")?
        ))
    }

    /// Starts peer `name` (its key and log live in DIR/name and survive restarts).
    pub fn start_peer(&self, name: &str, extra: &[&str]) -> Result<Proc> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut args: Vec<std::ffi::OsString> = vec!["--create-key".into(), "--data-dir".into()];
        args.push(dir.clone().into());
        args.extend(extra.iter().map(Into::into));
        self.start_worker("join", name, &dir.join("key"), &args)
    }

    /// Starts validator `name` with the key at `key` (which the run's manifest lists).
    pub fn start_validator(&self, name: &str, key: &Path) -> Result<Proc> {
        self.start_worker("validate", name, key, &[])
    }

    fn start_worker(
        &self,
        command: &str,
        name: &str,
        key: &Path,
        extra: &[std::ffi::OsString],
    ) -> Result<Proc> {
        let child = Command::new(workspace_binary("tributary-worker")?)
            .args([
                command,
                "--coordinator",
                &self.url()?,
                "--run-id",
                &self.run_id,
            ])
            .arg("--key")
            .arg(key)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(self.log(name)?)
            .stderr(self.log(name)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    /// What peer `name` applied, in order (from its peer.jsonl).
    pub fn applied(&self, name: &str) -> Result<Vec<Applied>> {
        let path = self.dir.join(name).join("peer.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut out = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a torn last line of a killed peer
            };
            out.push(Applied {
                version: v["version"].as_u64().context("version")?,
                round: v["round"].as_u64().context("round")?,
                fingerprint: v["fingerprint"].as_str().context("fingerprint")?.to_owned(),
            });
        }
        Ok(out)
    }

    /// Fingerprint of θ at each version, as peer `name` logged it.
    pub fn fingerprints(&self, name: &str) -> Result<BTreeMap<u64, String>> {
        Ok(self
            .applied(name)?
            .into_iter()
            .map(|a| (a.version, a.fingerprint))
            .collect())
    }
}
