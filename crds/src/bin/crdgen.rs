//! Writes the CRD YAML of TrainingRun and Contributor into charts/tributary/crds/.
//!
//! `crdgen` writes the files; `crdgen --check` writes nothing and exits 1 when a committed file
//! differs from what the types generate; `--out DIR` picks another directory; `--stdout` prints
//! a multi-document stream (for `kubectl apply -f -`).

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [--check] [--out DIR] [--stdout]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut check = false;
    let mut stdout = false;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let mut out = workspace.join("charts/tributary/crds");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--stdout" => stdout = true,
            "--out" => out = args.next().ok_or(USAGE)?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let files = tributary_crds::generated_files().map_err(|e| e.to_string())?;
    if stdout {
        for (_, yaml) in &files {
            print!("---\n{yaml}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if check {
        let mut stale = 0;
        for (name, yaml) in &files {
            let path = out.join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(diff) = first_difference(&committed, yaml) {
                stale += 1;
                eprintln!("{} is out of date: {diff}", path.display());
            }
        }
        if stale > 0 {
            eprintln!("regenerate with: cargo run -p tributary-crds --bin crdgen");
            return Ok(ExitCode::FAILURE);
        }
        println!("{} CRD files up to date in {}", files.len(), out.display());
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for (name, yaml) in &files {
        let path = out.join(name);
        std::fs::write(&path, yaml).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The first line where `committed` and `generated` differ, as a short human-readable note.
fn first_difference(committed: &str, generated: &str) -> Option<String> {
    if committed == generated {
        return None;
    }
    if committed.is_empty() {
        return Some("missing".into());
    }
    let mut old = committed.lines();
    let mut new = generated.lines();
    let mut line = 1;
    loop {
        match (old.next(), new.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (a, b) => {
                return Some(format!(
                    "line {line}\n  committed: {}\n  generated: {}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of file>")
                ));
            }
        }
    }
}
