//! Generates the prost/tonic code for the exchange protocol into OUT_DIR.
use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    // A vendored protoc: the build needs nothing installed on the machine.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let proto = "proto/tributary/v1alpha1/exchange.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().compile_protos(&[proto], &["proto"])?;
    Ok(())
}
