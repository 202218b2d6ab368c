//! The one error type of the codec; every variant has a stable metric label.

/// Errors of compression, decoding and aggregation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("invalid codec parameters: {0}")]
    InvalidParams(&'static str),
    #[error("invalid tensor shape: {0}")]
    InvalidShape(&'static str),
    #[error("buffer has {got} elements, shape needs {expected}")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("non-finite value in the pseudo-gradient or error-feedback buffer")]
    NonFiniteInput,
    #[error("tensor {tensor}: quantization scale {scale} out of range")]
    ScaleOutOfRange { tensor: usize, scale: f32 },
    #[error("truncated input: {needed} bytes needed, {available} available")]
    Truncated { needed: u64, available: u64 },
    #[error("{extra} trailing bytes after the last tensor")]
    TrailingBytes { extra: u64 },
    #[error("bad magic bytes")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    #[error("reserved header field is not zero")]
    ReservedNonZero,
    #[error("{count} tensors declared, limit is {max}")]
    TooManyTensors { count: u64, max: u64 },
    #[error("declared sizes exceed the limit ({declared} > {max})")]
    TooLarge { declared: u64, max: u64 },
    #[error("tensor {index}: shape differs from the expected one")]
    UnexpectedShape { index: usize },
    #[error("codec parameters differ from the expected ones")]
    UnexpectedParams,
    #[error("tensor {tensor}: declared k {declared}, expected {expected}")]
    WrongK {
        tensor: usize,
        declared: u64,
        expected: u64,
    },
    #[error("tensor {tensor} chunk {chunk}: wrong number of positions")]
    WrongCount { tensor: usize, chunk: usize },
    #[error("tensor {tensor} chunk {chunk}: position out of range")]
    PositionOutOfRange { tensor: usize, chunk: usize },
    #[error("tensor {tensor} chunk {chunk}: duplicate position")]
    DuplicatePosition { tensor: usize, chunk: usize },
    #[error("tensor {tensor}: padding bits are not zero")]
    NonZeroPadding { tensor: usize },
    #[error("tensor {tensor}: non-finite or absurd quantization parameter")]
    BadQuantParam { tensor: usize },
    #[error("tensor {tensor}: non-finite dense value")]
    NonFiniteValue { tensor: usize },
    #[error("contribution {index} does not match the others (params or shapes)")]
    IncompatibleContribution { index: usize },
    #[error("weight of contribution {index} is negative or not finite")]
    InvalidWeight { index: usize },
    #[error("nothing to aggregate")]
    NoContributions,
    #[error("aggregate range or segments do not match the tensors' chunk bands")]
    InvalidRange,
}

impl Error {
    /// Short stable label, usable as a metric label or a reject reason.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidParams(_) => "invalid_params",
            Self::InvalidShape(_) => "invalid_shape",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::NonFiniteInput => "non_finite_input",
            Self::ScaleOutOfRange { .. } => "scale_out_of_range",
            Self::Truncated { .. } => "truncated",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::ReservedNonZero => "reserved_non_zero",
            Self::TooManyTensors { .. } => "too_many_tensors",
            Self::TooLarge { .. } => "too_large",
            Self::UnexpectedShape { .. } => "unexpected_shape",
            Self::UnexpectedParams => "unexpected_params",
            Self::WrongK { .. } => "wrong_k",
            Self::WrongCount { .. } => "wrong_count",
            Self::PositionOutOfRange { .. } => "position_out_of_range",
            Self::DuplicatePosition { .. } => "duplicate_position",
            Self::NonZeroPadding { .. } => "non_zero_padding",
            Self::BadQuantParam { .. } => "bad_quant_param",
            Self::NonFiniteValue { .. } => "non_finite_value",
            Self::IncompatibleContribution { .. } => "incompatible_contribution",
            Self::InvalidWeight { .. } => "invalid_weight",
            Self::NoContributions => "no_contributions",
            Self::InvalidRange => "invalid_range",
        }
    }
}

/// Result of codec operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
