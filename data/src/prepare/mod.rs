//! `prepare-data`: plain-text (or `.jsonl`) files into token shards, with a Hugging Face
//! `tokenizer.json`.
//!
//! Each document is encoded whole, without the tokenizer's own special tokens (no template
//! BOS/EOS); [`PrepareOptions::append_eos`] names the separator appended after each document.
//! Shards are `shard-00000.bin`, `shard-00001.bin`, ... of `tokens_per_shard` tokens (the last
//! may be shorter; documents run across shard boundaries). Nothing is published until every
//! shard is complete: on any error the output directory holds no new shard.

mod documents;
mod sink;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use tokenizers::Tokenizer;

use crate::shards::TokenWidth;
use crate::{Error, Result};
use sink::ShardSink;

/// What to tokenize, with what, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareOptions {
    /// A Hugging Face `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Text files (one document each) or `.jsonl` files (one document per line's `"text"`).
    pub inputs: Vec<PathBuf>,
    /// Created if missing; must not already hold `shard-*.bin` files.
    pub output_dir: PathBuf,
    pub tokens_per_shard: u64,
    /// Token appended after every document (e.g. `"</s>"`); the tokenizer must have it.
    pub append_eos: Option<String>,
    /// Draw a progress bar over input bytes on stderr.
    pub progress: bool,
}

/// What [`prepare`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareReport {
    pub files: usize,
    pub documents: u64,
    /// Tokens written, separators included.
    pub tokens: u64,
    /// The shards, in order.
    pub shards: Vec<PathBuf>,
    pub vocab: u32,
    /// 2 bytes per token if `vocab ≤ 65536`, else 4.
    pub width: TokenWidth,
}

/// Tokenizes `opts.inputs` into shards in `opts.output_dir`.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    if opts.tokens_per_shard == 0 {
        return Err(Error::Options("tokens_per_shard must be at least 1".into()));
    }
    if opts.inputs.is_empty() {
        return Err(Error::Options("no input files".into()));
    }
    let tokenizer = load_tokenizer(&opts.tokenizer)?;
    let vocab = vocab_size(&tokenizer, &opts.tokenizer)?;
    let width = TokenWidth::for_vocab(vocab);
    let eos = match &opts.append_eos {
        Some(token) => Some(tokenizer.token_to_id(token).ok_or_else(|| {
            tokenizer_error(&opts.tokenizer, format!("has no token {token:?} to append"))
        })?),
        None => None,
    };
    // Every input is checked before any work, so a typo fails fast.
    let mut total_bytes = 0u64;
    for input in &opts.inputs {
        let meta = fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if !meta.is_file() {
            return Err(Error::file(input, "not a regular file"));
        }
        total_bytes += meta.len();
    }
    fs::create_dir_all(&opts.output_dir).map_err(|e| Error::io(&opts.output_dir, e))?;
    refuse_existing_shards(&opts.output_dir)?;

    let bar = progress_bar(opts.progress, total_bytes);
    let sink = ShardSink::new(&opts.output_dir, vocab, width, opts.tokens_per_shard);
    let written = tokenize(opts, &tokenizer, eos, sink, &bar);
    // Cleared on errors too, so the error is printed on a clean line.
    bar.finish_and_clear();
    let (documents, tokens, shards) = written?;
    Ok(PrepareReport {
        files: opts.inputs.len(),
        documents,
        tokens,
        shards,
        vocab,
        width,
    })
}

/// Encodes every document into `sink`; returns documents, tokens and the published shards.
fn tokenize(
    opts: &PrepareOptions,
    tokenizer: &Tokenizer,
    eos: Option<u32>,
    mut sink: ShardSink,
    bar: &ProgressBar,
) -> Result<(u64, u64, Vec<PathBuf>)> {
    let (mut documents, mut tokens) = (0u64, 0u64);
    for input in &opts.inputs {
        documents::for_each(
            input,
            |text| {
                let encoding = tokenizer.encode_fast(text, false).map_err(|e| {
                    tokenizer_error(
                        &opts.tokenizer,
                        format!("cannot encode {}: {e}", input.display()),
                    )
                })?;
                sink.extend(encoding.get_ids())?;
                tokens += encoding.get_ids().len() as u64;
                if let Some(eos) = eos {
                    sink.push(eos)?;
                    tokens += 1;
                }
                documents += 1;
                Ok(())
            },
            |bytes| bar.inc(bytes),
        )?;
    }
    if tokens == 0 {
        return Err(Error::Options(
            "the inputs hold no tokens: no shard written".into(),
        ));
    }
    Ok((documents, tokens, sink.finish()?))
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let json = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    json.parse::<Tokenizer>()
        .map_err(|e| tokenizer_error(path, format!("cannot load: {e}")))
}

/// One more than the largest token id, so every id is below it even if ids have gaps.
fn vocab_size(tokenizer: &Tokenizer, path: &Path) -> Result<u32> {
    let max_id = tokenizer.get_vocab(true).into_values().max();
    let size = max_id
        .map(|m| u64::from(m) + 1)
        .unwrap_or(0)
        .max(tokenizer.get_vocab_size(true) as u64);
    match u32::try_from(size) {
        Ok(0) => Err(tokenizer_error(path, "has an empty vocabulary")),
        Ok(v) => Ok(v),
        Err(_) => Err(tokenizer_error(
            path,
            format!("vocabulary of {size} tokens does not fit 32-bit ids"),
        )),
    }
}

/// A second run into the same directory would mix old and new shards in one `ShardSet`.
fn refuse_existing_shards(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("shard-") && name.ends_with(".bin") {
            return Err(Error::file(
                dir,
                format!("already holds shards ({name}): remove them or choose another directory"),
            ));
        }
    }
    Ok(())
}

fn progress_bar(show: bool, total_bytes: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    // The template is a constant; the default style is a fine fallback all the same.
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total_bytes).with_style(style)
}

fn tokenizer_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
