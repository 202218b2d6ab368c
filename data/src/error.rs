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
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::File { .. } => "file",
            Error::Io { .. } => "io",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
