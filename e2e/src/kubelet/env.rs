//! A container's environment, resolved as the kubelet does it: `envFrom` first, then `env` in
//! order, each value `$(VAR)`-expanded against the variables defined before it; `fieldRef`,
//! `configMapKeyRef` and `secretKeyRef` read from the pod and from objects fetched beforehand.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::expand::expand;

/// What a `fieldRef` can read: the pod's identity and placement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl PodFacts {
    pub fn new(pod: &Pod, pod_ip: &str) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        Self {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            pod_ip: pod_ip.to_owned(),
            host_ip: "127.0.0.1".into(),
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
        }
    }

    /// The value of a downward-API field path, or None when the path is not supported.
    pub fn field(&self, path: &str) -> Option<String> {
        let keyed = |prefix: &str, map: &BTreeMap<String, String>| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(map.get(key).cloned().unwrap_or_default())
        };
        match path {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            "metadata.uid" => Some(self.uid.clone()),
            "status.podIP" | "status.podIPs" => Some(self.pod_ip.clone()),
            "status.hostIP" | "status.hostIPs" => Some(self.host_ip.clone()),
            "spec.nodeName" => Some(self.node_name.clone()),
            "spec.serviceAccountName" => Some(self.service_account.clone()),
            _ => keyed("metadata.labels['", &self.labels)
                .or_else(|| keyed("metadata.annotations['", &self.annotations)),
        }
    }
}

/// ConfigMaps and Secrets a container's env reads, by name (missing ones are absent).
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// Names of the ConfigMaps and Secrets a container's env refers to.
pub fn referenced_objects(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            config_maps.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            config_maps.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        }
    }
    (config_maps, secrets)
}

/// Ordered variables where a later definition replaces an earlier one in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// `$(VAR)` expansion against these variables.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name).map(str::to_owned))
    }
}

/// The container's environment, or why it cannot be built (a missing required key).
pub fn container_env(
    container: &Container,
    facts: &PodFacts,
    sources: &EnvSources,
) -> Result<EnvVars, String> {
    let mut env = EnvVars::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, optional, data) = if let Some(r) = &from.config_map_ref {
            let data = sources.config_maps.get(&r.name);
            ("ConfigMap", &r.name, r.optional, data)
        } else if let Some(r) = &from.secret_ref {
            ("Secret", &r.name, r.optional, sources.secrets.get(&r.name))
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    env.set(&format!("{prefix}{key}"), value.clone());
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("{kind} {name} not found (envFrom)")),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    facts.field(&field.field_path).ok_or_else(|| {
                        format!(
                            "env {}: unsupported fieldRef {}",
                            var.name, field.field_path
                        )
                    })?
                } else if let Some(r) = &from.config_map_key_ref {
                    let found = sources.config_maps.get(&r.name).and_then(|d| d.get(&r.key));
                    match (found, r.optional) {
                        (Some(v), _) => v.clone(),
                        (None, Some(true)) => continue,
                        (None, _) => {
                            return Err(format!(
                                "env {}: key {} of ConfigMap {} not found",
                                var.name, r.key, r.name
                            ));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let found = sources.secrets.get(&r.name).and_then(|d| d.get(&r.key));
                    match (found, r.optional) {
                        (Some(v), _) => v.clone(),
                        (None, Some(true)) => continue,
                        (None, _) => {
                            return Err(format!(
                                "env {}: key {} of Secret {} not found",
                                var.name, r.key, r.name
                            ));
                        }
                    }
                } else {
                    return Err(format!("env {}: unsupported valueFrom", var.name));
                }
            }
            (Some(value), None) => env.expand(value),
            (None, None) => String::new(),
        };
        env.set(&var.name, value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_json::from_value(serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            name: "w-0".into(),
            namespace: "ns1".into(),
            uid: "u-1".into(),
            pod_ip: "127.0.0.7".into(),
            host_ip: "127.0.0.1".into(),
            node_name: "gpu-node-0".into(),
            service_account: "trainer".into(),
            labels: [("app".to_owned(), "w".to_owned())].into(),
            annotations: BTreeMap::new(),
        }
    }

    fn sources() -> EnvSources {
        EnvSources {
            config_maps: [(
                "cfg".to_owned(),
                [("mode".to_owned(), "fast".to_owned())].into(),
            )]
            .into(),
            secrets: [(
                "keys".to_owned(),
                [("seed".to_owned(), "00ff".to_owned())].into(),
            )]
            .into(),
        }
    }

    #[test]
    fn field_refs_resolve_from_the_pod() {
        let c = container(
            r#"
name: c
env:
- {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
- {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
- {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
- {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
- {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
"#,
        );
        let env = container_env(&c, &facts(), &sources()).unwrap();
        let got: Vec<_> = env.iter().collect();
        assert_eq!(
            got,
            [
                ("POD_NAME", "w-0"),
                ("POD_NAMESPACE", "ns1"),
                ("POD_IP", "127.0.0.7"),
                ("NODE", "gpu-node-0"),
                ("SA", "trainer"),
                ("APP", "w"),
            ]
        );
    }

    #[test]
    fn values_expand_earlier_variables_only() {
        let c = container(
            r#"
name: c
env:
- {name: LATE_REF, value: "$(POD_IP)"}
- {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: LISTEN, value: "$(POD_IP):50051"}
- {name: ESCAPED, value: "$$(POD_IP)"}
"#,
        );
        let env = container_env(&c, &facts(), &sources()).unwrap();
        assert_eq!(env.get("LATE_REF"), Some("$(POD_IP)"));
        assert_eq!(env.get("LISTEN"), Some("127.0.0.7:50051"));
        assert_eq!(env.get("ESCAPED"), Some("$(POD_IP)"));
    }

    #[test]
    fn key_refs_and_env_from() {
        let c = container(
            r#"
name: c
envFrom:
- {prefix: CFG_, configMapRef: {name: cfg}}
- {secretRef: {name: absent, optional: true}}
env:
- {name: MODE, valueFrom: {configMapKeyRef: {name: cfg, key: mode}}}
- {name: SEED, valueFrom: {secretKeyRef: {name: keys, key: seed}}}
- {name: MAYBE, valueFrom: {secretKeyRef: {name: keys, key: nope, optional: true}}}
- {name: CFG_mode, value: override}
"#,
        );
        let env = container_env(&c, &facts(), &sources()).unwrap();
        assert_eq!(env.get("MODE"), Some("fast"));
        assert_eq!(env.get("SEED"), Some("00ff"));
        assert_eq!(env.get("MAYBE"), None);
        assert_eq!(env.get("CFG_mode"), Some("override"));
        let (cms, secrets) = referenced_objects(&c);
        assert_eq!(cms, ["cfg".to_owned()].into());
        assert_eq!(secrets, ["absent".to_owned(), "keys".to_owned()].into());
    }

    #[test]
    fn missing_required_keys_are_errors() {
        let c = container(
            "name: c\nenv:\n- {name: X, valueFrom: {configMapKeyRef: {name: cfg, key: nope}}}\n",
        );
        let err = container_env(&c, &facts(), &sources()).unwrap_err();
        assert!(err.contains("key nope of ConfigMap cfg"), "{err}");
        let c = container(
            "name: c\nenv:\n- {name: X, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}\n",
        );
        assert!(container_env(&c, &facts(), &sources()).is_err());
    }
}
