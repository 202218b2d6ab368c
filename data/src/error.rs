//! One error type for the crate; `label()` gives a short metric label per variant.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid synthetic-language configuration: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer.json that does not load, lacks a token we need, or fails to encode.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// Options of a shard set or of `prepare` that cannot work (zero peers, zero tokens per shard).
    #[error("invalid options: {0}")]
    Options(String),
    /// A batch id outside the schedule a shard set was given, so its windows could overlap.
    #[error("batch outside the schedule: {0}")]
    Schedule(String),
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::File { .. } => "file",
            Error::Io { .. } => "io",
            Error::Tokenizer { .. } => "tokenizer",
            Error::Options(_) => "options",
            Error::Schedule(_) => "schedule",
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
