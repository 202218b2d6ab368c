//! Bakes the location of libtorch into the worker's binaries (rpath), so they run with no
//! LD_LIBRARY_PATH, and records which libtorch version they were built against.
use std::{env, fs, path::PathBuf};

fn main() {
    // torch-sys (links = "tch") exports its lib dir to direct dependents.
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys did not report its libtorch dir; binaries need LD_LIBRARY_PATH"
        );
        return;
    };
    // Resolve the repo's `.libtorch` link so binaries keep working wherever the checkout moves.
    let lib = fs::canonicalize(&lib).unwrap_or_else(|_| PathBuf::from(&lib));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // Nothing references libtorch_cuda directly, so an as-needed link would drop it and CUDA
    // would silently be unavailable; keep it whenever this libtorch has it.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    let version = lib
        .parent()
        .and_then(|torch| fs::read_to_string(torch.join("version.py")).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(['\'', '"']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TRIBUTARY_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=TRIBUTARY_LIBTORCH_LIB={}", lib.display());
}
