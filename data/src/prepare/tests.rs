//! prepare() end to end with a tiny word-level tokenizer built here (no downloads).

use std::fs;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;

use super::*;
use crate::shards::ShardSet;

const WORDS: [&str; 12] = [
    "<unk>", "</s>", "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello",
    "world",
];

/// A whitespace-split word-level tokenizer over `words` (id = position), saved as JSON.
fn save_tokenizer(dir: &Path, words: &[String]) -> PathBuf {
    let model = WordLevel::builder()
        .vocab(words.iter().cloned().zip(0u32..).collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace));
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).unwrap();
    path
}

struct Fixture {
    dir: tempfile::TempDir,
    tokenizer: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let words: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
        let tokenizer = save_tokenizer(dir.path(), &words);
        Self { dir, tokenizer }
    }

    fn input(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, content).unwrap();
        p
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn options(&self, inputs: Vec<PathBuf>) -> PrepareOptions {
        PrepareOptions {
            tokenizer: self.tokenizer.clone(),
            inputs,
            output_dir: self.out(),
            tokens_per_shard: 5,
            append_eos: Some("</s>".into()),
            progress: false,
        }
    }

    /// Files in the output directory (none if it does not exist).
    fn written(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.out()) else {
            return vec![];
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn all_tokens(set: &ShardSet) -> Vec<u32> {
    set.shards().iter().flat_map(|s| s.tokens()).collect()
}

#[test]
fn documents_become_shards_with_eos_between_them() {
    let f = Fixture::new();
    let a = f.input("a.txt", b"the quick brown fox\njumps over the lazy dog\n");
    let b = f.input("b.txt", b"hello world");
    let report = prepare(&f.options(vec![a, b])).unwrap();
    assert_eq!((report.files, report.documents, report.tokens), (2, 2, 13));
    assert_eq!((report.vocab, report.width), (12, TokenWidth::U16));
    assert_eq!(report.shards.len(), 3);
    assert_eq!(
        f.written(),
        ["shard-00000.bin", "shard-00001.bin", "shard-00002.bin"]
    );

    let set = ShardSet::open(f.out(), "shard-*.bin").unwrap();
    set.validate_tokens().unwrap();
    assert_eq!(set.tokens(), 13);
    let lens: Vec<u64> = set.shards().iter().map(|s| s.len()).collect();
    assert_eq!(lens, [5, 5, 3]);
    let tokens = all_tokens(&set);
    let eos: Vec<usize> = (0..tokens.len()).filter(|i| tokens[*i] == 1).collect();
    assert_eq!(eos, [9, 12]);

    let tokenizer: Tokenizer = fs::read_to_string(&f.tokenizer).unwrap().parse().unwrap();
    let docs: Vec<String> = tokens
        .split(|t| *t == 1)
        .filter(|d| !d.is_empty())
        .map(|d| tokenizer.decode(d, false).unwrap())
        .collect();
    assert_eq!(
        docs,
        ["the quick brown fox jumps over the lazy dog", "hello world"]
    );
}

#[test]
fn jsonl_lines_are_documents_and_eos_is_optional() {
    let f = Fixture::new();
    let j = f.input(
        "docs.jsonl",
        b"{\"text\": \"hello world\", \"id\": 1}\n\n{\"text\": \"the dog\"}\n",
    );
    let mut opts = f.options(vec![j]);
    opts.append_eos = None;
    opts.tokens_per_shard = 100;
    // Exercises the bar; it draws nothing when stderr is not a terminal.
    opts.progress = true;
    let report = prepare(&opts).unwrap();
    assert_eq!((report.documents, report.tokens), (2, 4));
    let set = ShardSet::open(f.out(), "*.bin").unwrap();
    assert_eq!(all_tokens(&set), [10, 11, 2, 9]);

    let bad = f.input("bad.jsonl", b"{\"text\": \"hello\"}\n{\"body\": \"x\"}\n");
    opts.inputs = vec![bad.clone()];
    opts.output_dir = f.dir.path().join("out2");
    let err = prepare(&opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains("line 2"),
        "{msg}"
    );
}

#[test]
fn a_large_vocab_gets_four_byte_tokens() {
    let f = Fixture::new();
    let mut words: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    words.extend((0..70_000).map(|i| format!("w{i}")));
    let tokenizer = save_tokenizer(f.dir.path(), &words);
    let input = f.input("t.txt", b"hello w69999");
    let mut opts = f.options(vec![input]);
    opts.tokenizer = tokenizer;
    let report = prepare(&opts).unwrap();
    assert_eq!((report.vocab, report.width), (70_012, TokenWidth::U32));
    let set = ShardSet::open(f.out(), "*.bin").unwrap();
    assert_eq!(all_tokens(&set), [10, 70_011, 1]);
}

#[test]
fn bad_inputs_fail_naming_the_file_and_write_no_shard() {
    let f = Fixture::new();
    let good = f.input("good.txt", b"the quick brown fox jumps over the lazy dog");
    let not_utf8 = f.input("latin1.txt", b"hello \xe9t\xe9 world");
    let missing = f.dir.path().join("missing.txt");

    let err = prepare(&f.options(vec![good.clone(), missing.clone()])).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(f.written().is_empty(), "{:?}", f.written());

    // The good file fills two shards before the bad one is read: neither may remain.
    let err = prepare(&f.options(vec![good.clone(), not_utf8.clone()])).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&not_utf8.display().to_string()), "{msg}");
    assert!(
        msg.contains("not UTF-8: invalid byte sequence at byte 6"),
        "{msg}"
    );
    assert!(f.written().is_empty(), "{:?}", f.written());

    let broken = f.input("broken.json", b"{\"model\": ");
    let mut opts = f.options(vec![good.clone()]);
    opts.tokenizer = broken.clone();
    let err = prepare(&opts).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&broken.display().to_string()),
        "{err}"
    );

    let mut opts = f.options(vec![good.clone()]);
    opts.tokenizer = f.dir.path().join("no-tokenizer.json");
    assert!(matches!(prepare(&opts), Err(Error::Io { .. })));

    let mut opts = f.options(vec![good.clone()]);
    opts.append_eos = Some("<eos>".into());
    let err = prepare(&opts).unwrap_err();
    assert!(err.to_string().contains("has no token \"<eos>\""), "{err}");

    let mut opts = f.options(vec![good.clone()]);
    opts.tokens_per_shard = 0;
    assert!(matches!(prepare(&opts), Err(Error::Options(_))));
    assert!(f.written().is_empty(), "{:?}", f.written());

    // A second run into a directory that already holds shards is refused.
    prepare(&f.options(vec![good.clone()])).unwrap();
    let err = prepare(&f.options(vec![good])).unwrap_err();
    assert!(err.to_string().contains("already holds shards"), "{err}");
}
