//! Helpers shared by the integration tests: the generated schemas as JSON Schema validators, and
//! an emulation of the API server's defaulting.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{Value, json};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `openAPIV3Schema` of the generated CRD of `kind`.
pub fn openapi_schema(kind: &str) -> Value {
    let crd = match kind {
        "TrainingRun" => tributary_crds::training_run_crd(),
        "Contributor" => tributary_crds::contributor_crd(),
        other => panic!("no CRD for kind {other}"),
    }
    .unwrap();
    let crd = serde_json::to_value(crd).unwrap();
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .unwrap()
        .clone()
}

/// OpenAPI v3.0 → JSON Schema draft 4, which shares v3.0's boolean `exclusiveMinimum`: only
/// `nullable` needs translating (draft 4 spells it as a type union with "null").
pub fn to_draft4(schema: &Value) -> Value {
    match schema {
        Value::Object(obj) => {
            let mut out = serde_json::Map::new();
            for (key, value) in obj {
                let value = match key.as_str() {
                    "properties" | "patternProperties" => Value::Object(
                        value
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), to_draft4(v)))
                            .collect(),
                    ),
                    "items" | "additionalProperties" | "not" | "oneOf" | "anyOf" | "allOf" => {
                        to_draft4(value)
                    }
                    // Kubernetes ignores unknown formats; draft 4 would too, but be explicit.
                    "format" => continue,
                    _ => value.clone(),
                };
                out.insert(key.clone(), value);
            }
            if out.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), json!([t, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_draft4).collect()),
        other => other.clone(),
    }
}

/// A validator of whole objects of `kind` against the generated schema.
pub fn validator(kind: &str) -> jsonschema::Validator {
    jsonschema::draft4::new(&to_draft4(&openapi_schema(kind))).unwrap()
}

/// Messages of every schema violation of `instance` (empty when valid).
pub fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// Fills absent properties from the schema's `default`s, recursively, as the API server does.
pub fn apply_defaults(schema: &Value, instance: &mut Value) {
    let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        instance.as_object_mut(),
    ) else {
        if let (Some(items), Some(array)) = (schema.get("items"), instance.as_array_mut()) {
            array
                .iter_mut()
                .for_each(|item| apply_defaults(items, item));
        }
        return;
    };
    for (name, sub) in props {
        if !obj.contains_key(name)
            && let Some(default) = sub.get("default")
        {
            obj.insert(name.clone(), default.clone());
        }
        if let Some(child) = obj.get_mut(name) {
            apply_defaults(sub, child);
        }
    }
}

/// Reads a file of the repository as YAML into JSON.
pub fn read_yaml(relative: &str) -> Value {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}
