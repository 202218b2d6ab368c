//! Which machine and code produced a report: libtorch's CPU kernels differ between CPU types, so
//! a run is bit-identical only on the same kind of CPU (docs/benchmarks.md, "Reproducing the
//! committed figures"), and a figure is only as good as the commit it came from.

use std::fmt;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine and code a report was produced with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo ("unknown" elsewhere).
    pub cpu_model: String,
    /// `cpu family` and `model` numbers ("6/143"): VMs often hide the model name.
    pub cpu_family_model: String,
    /// The `flags` line of /proc/cpuinfo, space-separated.
    pub cpu_flags: String,
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// libtorch intra-op threads of the run.
    pub libtorch_threads: u32,
    /// libtorch version the binary was built against.
    pub libtorch: String,
    /// `git rev-parse HEAD` of the working directory, "-dirty" when tracked files differ from
    /// it; None outside a git checkout.
    pub commit: Option<String>,
}

impl Machine {
    /// This machine, for a run with `libtorch_threads` intra-op threads.
    pub fn current(libtorch_threads: u32) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (model, family_model, flags) = parse_cpuinfo(&cpuinfo);
        Self {
            cpu_model: model,
            cpu_family_model: family_model,
            cpu_flags: flags,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            libtorch_threads,
            libtorch: crate::self_check::LIBTORCH_VERSION.to_owned(),
            commit: git_commit(),
        }
    }

    /// Whether `other` has the same kind of CPU (model and flags): the condition under which
    /// libtorch's CPU kernels, and so a run, are bit-identical.
    pub fn same_cpu(&self, other: &Machine) -> bool {
        self.cpu_model == other.cpu_model
            && self.cpu_family_model == other.cpu_family_model
            && self.cpu_flags == other.cpu_flags
    }

    /// The flags that select libtorch's and the codec's vector kernels, for short summaries.
    pub fn vector_flags(&self) -> Vec<&str> {
        const KERNEL_FLAGS: [&str; 6] = [
            "avx2",
            "fma",
            "avx512f",
            "avx512_bf16",
            "avx512_vnni",
            "amx_tile",
        ];
        self.cpu_flags
            .split_whitespace()
            .filter(|f| KERNEL_FLAGS.contains(f))
            .collect()
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (family/model {}; {}), {} CPUs, {} libtorch thread{}, libtorch {}, commit {}",
            self.cpu_model,
            self.cpu_family_model,
            self.vector_flags().join(" "),
            self.cpus,
            self.libtorch_threads,
            if self.libtorch_threads == 1 { "" } else { "s" },
            self.libtorch,
            self.commit.as_deref().unwrap_or("unknown")
        )
    }
}

/// The sentence a report prints for its machine; reports from before the record say so.
pub fn describe(machine: Option<&Machine>) -> String {
    match machine {
        Some(m) => format!("Machine: {m}."),
        None => "Machine: not recorded (this report predates the record of CPU, threads, \
                 libtorch and commit; unknown)."
            .to_owned(),
    }
}

/// (model name, "family/model", flags) of the first processor in /proc/cpuinfo's text.
fn parse_cpuinfo(text: &str) -> (String, String, String) {
    let field = |key: &str| {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
    };
    let unknown = || "unknown".to_owned();
    let family_model = match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("{f}/{m}"),
        _ => unknown(),
    };
    (
        field("model name").unwrap_or_else(unknown),
        family_model,
        field("flags").unwrap_or_default(),
    )
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let head = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_first_processor_of_cpuinfo_is_read() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n\
                    model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse avx2 avx512f\n\n\
                    processor\t: 1\nmodel name\t: other\n";
        let (model, fm, flags) = parse_cpuinfo(text);
        assert_eq!(model, "Intel(R) Xeon(R) Platinum 8480+");
        assert_eq!(fm, "6/143");
        assert_eq!(flags, "fpu sse avx2 avx512f");
        let (model, fm, flags) = parse_cpuinfo("");
        assert_eq!(
            (model.as_str(), fm.as_str(), flags.as_str()),
            ("unknown", "unknown", "")
        );
    }

    #[test]
    fn the_same_cpu_needs_the_same_model_and_flags() {
        let a = Machine::current(1);
        let mut b = a.clone();
        b.libtorch_threads = 2;
        b.commit = None;
        assert!(a.same_cpu(&b), "threads and commit do not change the CPU");
        b.cpu_flags.push_str(" avx512_fp16x");
        assert!(!a.same_cpu(&b));
        assert!(describe(Some(&a)).contains(&a.libtorch));
        assert!(describe(None).contains("unknown"));
    }
}
