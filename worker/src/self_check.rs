//! A quick proof that this machine can train: libtorch loads, a tensor is created and one AdamW
//! step lowers a loss, on CPU and on every visible CUDA device.

use std::fmt;

use anyhow::{Context, bail};
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

/// The libtorch version the binary was built against (from torch's version.py, at build time).
pub(crate) const LIBTORCH_VERSION: &str = env!("TRIBUTARY_LIBTORCH_VERSION");

/// Result of one AdamW step on one device.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepCheck {
    pub device: String,
    pub loss_before: f64,
    pub loss_after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SelfCheckReport {
    pub libtorch_version: &'static str,
    /// The libtorch shared library this process actually loaded (from /proc/self/maps).
    pub libtorch_loaded_from: Option<String>,
    /// Whether libtorch's CUDA backend is loaded (without it CUDA is never available).
    pub cuda_backend_loaded: bool,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cpu_threads: i32,
    pub steps: Vec<StepCheck>,
}

/// Runs the checks; fails if any step does not lower the loss.
pub(crate) fn run() -> anyhow::Result<SelfCheckReport> {
    let cuda_available = tch::Cuda::is_available();
    let cuda_devices = if cuda_available {
        tch::Cuda::device_count()
    } else {
        0
    };
    let mut devices = vec![Device::Cpu];
    devices.extend((0..cuda_devices).map(|i| Device::Cuda(i as usize)));
    let steps = devices
        .into_iter()
        .map(|device| adamw_step(device).with_context(|| format!("AdamW step on {device:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SelfCheckReport {
        libtorch_version: LIBTORCH_VERSION,
        libtorch_loaded_from: loaded_library("libtorch_cpu.so"),
        cuda_backend_loaded: loaded_library("libtorch_cuda.so").is_some(),
        cuda_available,
        cuda_devices,
        cpu_threads: tch::get_num_threads(),
        steps,
    })
}

/// One AdamW step on a least-squares problem; the loss must go down.
fn adamw_step(device: Device) -> anyhow::Result<StepCheck> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let w = vs.root().randn("w", &[16, 1], 0.0, 1.0);
    let x = Tensor::randn([64, 16], (Kind::Float, device));
    let target = x.matmul(&Tensor::ones([16, 1], (Kind::Float, device)));
    let loss_of = |w: &Tensor| (x.matmul(w) - &target).square().mean(Kind::Float);
    let mut opt = nn::AdamW::default().build(&vs, 1e-1)?;
    let loss = loss_of(&w);
    let loss_before = loss.double_value(&[]);
    opt.backward_step(&loss);
    let loss_after = tch::no_grad(|| loss_of(&w)).double_value(&[]);
    if !loss_after.is_finite() || loss_after >= loss_before {
        bail!("loss did not decrease: {loss_before} -> {loss_after}");
    }
    Ok(StepCheck {
        device: format!("{device:?}"),
        loss_before,
        loss_after,
    })
}

/// Path of a shared library mapped into this process, e.g. `libtorch_cpu.so`.
fn loaded_library(file_name: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.rsplit('/').next() == Some(file_name))
        .map(str::to_owned)
}

impl SelfCheckReport {
    pub(crate) fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

impl fmt::Display for SelfCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "libtorch version : {}", self.libtorch_version)?;
        writeln!(
            f,
            "libtorch loaded  : {}",
            self.libtorch_loaded_from
                .as_deref()
                .unwrap_or("(not found in /proc/self/maps)")
        )?;
        let backend = if self.cuda_backend_loaded {
            "loaded"
        } else {
            "not loaded"
        };
        writeln!(f, "CUDA backend     : {backend}")?;
        writeln!(
            f,
            "CUDA available   : {} ({} device(s))",
            self.cuda_available, self.cuda_devices
        )?;
        writeln!(f, "CPU threads      : {}", self.cpu_threads)?;
        for s in &self.steps {
            writeln!(
                f,
                "AdamW step {:<6}: loss {:.4} -> {:.4}  ok",
                s.device, s.loss_before, s.loss_after
            )?;
        }
        writeln!(f, "self-check passed")
    }
}
