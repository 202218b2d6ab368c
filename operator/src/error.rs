//! The operator's errors.

/// Everything that can go wrong in the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TrainingRun's participation settings cannot drive rounds.
    #[error("invalid participation spec: {0}")]
    InvalidParticipation(String),
}

impl Error {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidParticipation(_) => "invalid-participation",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
