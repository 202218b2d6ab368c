//! Input files as documents: a plain-text file is one document; a `.jsonl` file is one
//! document per non-blank line, its `"text"` field.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::{Error, Result};

/// Calls `each` with the text of every document of `path`, and `read(bytes)` as the file is
/// consumed (for progress).
pub(super) fn for_each(
    path: &Path,
    each: impl FnMut(&str) -> Result<()>,
    read: impl FnMut(u64),
) -> Result<()> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        jsonl(path, each, read)
    } else {
        plain(path, each, read)
    }
}

fn plain(
    path: &Path,
    mut each: impl FnMut(&str) -> Result<()>,
    mut read: impl FnMut(u64),
) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let len = bytes.len() as u64;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "not UTF-8: invalid byte sequence at byte {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    each(&text)?;
    read(len);
    Ok(())
}

fn jsonl(
    path: &Path,
    mut each: impl FnMut(&str) -> Result<()>,
    mut read: impl FnMut(u64),
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    for number in 1u64.. {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        let text = std::str::from_utf8(&line).map_err(|e| {
            Error::file(
                path,
                format!(
                    "line {number}: not UTF-8: invalid byte sequence at byte {} of the line",
                    e.valid_up_to()
                ),
            )
        })?;
        read(n as u64);
        if text.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::file(path, format!("line {number}: not JSON: {e}")))?;
        let doc = record
            .get("text")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Error::file(path, format!("line {number}: no string field \"text\"")))?;
        each(doc)?;
    }
    Ok(())
}
