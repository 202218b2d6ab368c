//! The peer's per-round log (peer.jsonl): one JSON object per applied aggregate, appended and
//! flushed, so a crash loses at most the line being written.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogLine {
    pub unix_ms: u64,
    pub round: u64,
    /// Model version after applying this round's aggregate.
    pub version: u64,
    pub contributions: u32,
    /// Whether this peer's update is in the aggregate.
    pub included: bool,
    /// This peer's mean inner loss, when it trained the round.
    pub train_loss: Option<f64>,
    /// Mean inner loss of the round's accepted updates.
    pub mean_loss: f64,
    pub eval_loss: Option<f64>,
    pub floor: Option<f64>,
    /// Tokens this peer trained on in the round.
    pub tokens: u64,
    /// Tokens of all updates in the aggregate.
    pub round_tokens: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// From the round's start (on this peer) to the aggregate applied.
    pub round_seconds: Option<f64>,
    /// Of which inner steps and compression.
    pub train_seconds: Option<f64>,
    pub fingerprint: String,
}

pub(super) struct Log {
    file: std::fs::File,
}

impl Log {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file })
    }

    pub(super) fn write(&mut self, line: &LogLine) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

/// Every well-formed line of a peer log; a torn last line (a killed peer) is skipped.
pub(crate) fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(parsed) = serde_json::from_str(&line?) {
            out.push(parsed);
        }
    }
    Ok(out)
}
