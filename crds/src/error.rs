//! The crate's one error type.

use crate::validation::Problems;

/// Everything that can go wrong when turning a spec into concrete numbers or reading one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model section names neither a preset nor a complete explicit configuration.
    #[error("model: {0}")]
    Model(String),
    /// The spec breaks one or more rules that the OpenAPI schema cannot express.
    #[error("{0}")]
    Invalid(Problems),
    /// A document did not parse as YAML into the expected type.
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A document did not parse as JSON into the expected type.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short, stable label for metrics and condition reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Model(_) => "model",
            Error::Invalid(_) => "invalid_spec",
            Error::Yaml(_) => "yaml",
            Error::Json(_) => "json",
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
