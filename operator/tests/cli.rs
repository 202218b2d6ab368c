#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn crds_subcommand_prints_both_crds_as_committed() {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary-operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/tributary/crds/");
    for file in [
        "trainingruns.tributary.dev.yaml",
        "contributors.tributary.dev.yaml",
    ] {
        let committed = std::fs::read_to_string(format!("{root}{file}")).unwrap();
        assert!(
            text.contains(&committed),
            "{file} is not in the output of `crds`"
        );
    }
}
