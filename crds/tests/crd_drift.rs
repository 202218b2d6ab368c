//! The committed CRD YAML must be exactly what the types generate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[test]
fn committed_crds_match_the_types() {
    let dir = common::repo_root().join("charts/tributary/crds");
    let mut stale = Vec::new();
    for (name, generated) in tributary_crds::generated_files().unwrap() {
        let path = dir.join(&name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "length".to_owned(), |i| format!("line {}", i + 1));
            stale.push(format!("{} (first difference: {line})", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed CRD YAML is out of date with crds/src:\n  {}\n\
         regenerate it with `cargo run -p tributary-crds --bin crdgen` and commit the result",
        stale.join("\n  ")
    );
}

#[test]
fn one_file_per_crd_named_after_it() {
    let names: Vec<String> = tributary_crds::generated_files()
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names,
        [
            "trainingruns.tributary.dev.yaml",
            "contributors.tributary.dev.yaml"
        ]
    );
}

#[test]
fn generated_yaml_reads_back_as_the_same_crds() {
    let files = tributary_crds::generated_files().unwrap();
    let crds = [
        tributary_crds::training_run_crd().unwrap(),
        tributary_crds::contributor_crd().unwrap(),
    ];
    for ((name, yaml), crd) in files.iter().zip(crds) {
        let read: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_str(yaml).unwrap();
        assert_eq!(read, crd, "{name}");
        assert!(
            !yaml.contains("x-kubernetes-validations"),
            "{name}: CEL is not for 1.20"
        );
    }
}

/// `kubectl explain trainingrun` (and `contributor`) print the schema's top description: it
/// says what the resource is, not kube-derive's placeholder.
#[test]
fn each_crd_says_what_its_resource_is() {
    let dir = common::repo_root().join("charts/tributary/crds");
    for (file, kind) in [
        ("trainingruns.tributary.dev.yaml", "TrainingRun"),
        ("contributors.tributary.dev.yaml", "Contributor"),
    ] {
        let crd: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let description = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.starts_with(&format!("A {kind} is ")),
            "{file}: {description:?}"
        );
        assert!(!description.contains("Auto-generated"), "{file}");
        assert!(
            description.contains("Ready"),
            "{file}: names its Ready condition"
        );
    }
}
