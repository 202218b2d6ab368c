//! The docs say only what the tests check: every sentence in docs/ and the README that says CI
//! checks (re-runs, verifies) something names, in backticks, a test that exists in the
//! workspace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Phrases that promise a check in CI.
const PROMISES: [&str; 5] = [
    "CI checks",
    "CI re-runs",
    "CI reruns",
    "CI verifies",
    "CI runs a",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                files(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

/// Names of the functions marked as tests (`#[test]`, `#[tokio::test]`, …) in `source`.
fn test_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut marked = false;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[") && (line.contains("test]") || line.contains("::test(")) {
            marked = true;
        } else if marked && let Some(at) = line.find("fn ") {
            let name: String = line[at + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
            marked = false;
        }
    }
    names
}

/// The sentences of `text` (paragraphs joined, split after ". ") that make a promise.
fn promises(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let joined = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        for phrase in PROMISES {
            let mut from = 0;
            while let Some(at) = joined[from..].find(phrase) {
                let start = from + at;
                let end = joined[start..]
                    .find(". ")
                    .map_or(joined.len(), |e| start + e + 1);
                out.push(joined[start..end].to_owned());
                from = end.min(joined.len());
            }
        }
    }
    out
}

/// Identifiers in backticks in `sentence`.
fn quoted(sentence: &str) -> Vec<&str> {
    sentence.split('`').skip(1).step_by(2).collect()
}

#[test]
fn every_ci_promise_in_the_docs_names_a_test_that_exists() {
    let root = root();
    let mut sources = Vec::new();
    files(&root, ".rs", &mut sources);
    let tests: BTreeSet<String> = sources
        .iter()
        .flat_map(|p| test_names(&std::fs::read_to_string(p).unwrap()))
        .collect();
    assert!(tests.contains("every_ci_promise_in_the_docs_names_a_test_that_exists"));
    let mut docs = vec![root.join("README.md")];
    files(&root.join("docs"), ".md", &mut docs);
    let mut found = 0;
    let mut missing = Vec::new();
    for doc in &docs {
        for sentence in promises(&std::fs::read_to_string(doc).unwrap()) {
            let named: Vec<&str> = quoted(&sentence)
                .into_iter()
                .filter(|q| tests.contains(*q))
                .collect();
            let doc = doc.strip_prefix(&root).unwrap().display();
            eprintln!("{doc}: \"{sentence}\" -> {named:?}");
            found += 1;
            if named.is_empty() {
                missing.push(format!("{doc}: {sentence}"));
            }
        }
    }
    assert!(found > 0, "no promise found: the scan is broken");
    assert!(
        missing.is_empty(),
        "promises of a CI check that name no existing test:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scan_finds_promises_and_test_names() {
    let text = "Intro.\n\nCI checks the thing\n(`a_test`). Other sentence; CI verifies x.\n";
    assert_eq!(
        promises(text),
        vec!["CI checks the thing (`a_test`).", "CI verifies x."]
    );
    assert_eq!(quoted("CI checks (`a_test`) and `b`."), vec!["a_test", "b"]);
    let src = "#[test]\nfn one() {}\n#[tokio::test(flavor = \"current_thread\")]\nasync fn two() {}\nfn helper() {}\n";
    assert_eq!(test_names(src), vec!["one", "two"]);
}

/// The names `scripts/reproduce.sh` accepts (its case labels).
fn reproduce_names() -> BTreeSet<String> {
    std::fs::read_to_string(root().join("scripts/reproduce.sh"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_suffix(')'))
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_owned)
        .collect()
}

/// (heading, body) of each `##` and `###` section of `text` (deeper headings stay in theirs).
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![(String::new(), String::new())];
    for line in text.lines() {
        if line.starts_with("## ") || line.starts_with("### ") {
            out.push((line.to_owned(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    out
}

/// Every section of docs/benchmarks.md with a table of figures names the command that
/// reproduces them, `scripts/reproduce.sh NAME`, with a NAME the script knows.
#[test]
fn every_table_of_figures_in_the_benchmarks_names_its_reproduce_command() {
    let names = reproduce_names();
    assert!(
        names.contains("compare") && names.contains("devnet"),
        "{names:?}"
    );
    let text = std::fs::read_to_string(root().join("docs/benchmarks.md")).unwrap();
    let mut tables = 0;
    let mut missing = Vec::new();
    for (heading, body) in sections(&text) {
        if !body.lines().any(|l| l.starts_with("|---")) {
            continue;
        }
        tables += 1;
        let commands: Vec<&str> = body
            .split("scripts/reproduce.sh ")
            .skip(1)
            .map(|rest| {
                rest.split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                    .next()
                    .unwrap_or("")
            })
            .collect();
        eprintln!("{heading}: {commands:?}");
        if commands.is_empty() || !commands.iter().all(|c| names.contains(*c)) {
            missing.push(format!("{heading}: {commands:?}"));
        }
    }
    assert!(
        tables >= 10,
        "only {tables} sections with tables: the scan is broken"
    );
    assert!(
        missing.is_empty(),
        "sections of figures without a known `scripts/reproduce.sh NAME`:\n{}",
        missing.join("\n")
    );
}
