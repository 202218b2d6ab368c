//! The LLaMA-style decoder and its parameters.

mod llama;
mod params;
mod rope;

pub use llama::{INIT_STD, Llama, ModelConfigExt, param_specs};
pub use params::{ParamSet, ParamSpec, codec_shapes, fingerprint};
