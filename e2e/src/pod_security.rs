//! The Pod Security Standards' "restricted" profile (Kubernetes, version "latest"), as rules over
//! a rendered pod spec (JSON), so chart and operator tests can check what they render without an
//! API server: the dev cluster's 1.20 API server has no PodSecurity admission.
//!
//! Source: <https://kubernetes.io/docs/concepts/security/pod-security-standards/> — every
//! baseline control plus the restricted ones (volume types, privilege escalation, non-root,
//! non-zero user, seccomp, capabilities).

use serde_json::Value;

/// Sysctls the baseline profile allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume sources the restricted profile allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The pod template's spec of a workload object (Deployment, StatefulSet, DaemonSet, Job) or the
/// spec of a Pod; `None` for other kinds.
pub fn pod_spec(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Pod" => Some(&object["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&object["spec"]["template"]["spec"])
        }
        _ => None,
    }
}

/// Every way `spec` (a PodSpec as JSON) breaks the restricted profile; empty when it passes.
pub fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod = &spec["securityContext"];
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect();
    let name = |c: &Value| c["name"].as_str().unwrap_or("?").to_owned();
    let truthy = |v: &Value| v.as_bool() == Some(true);

    // Baseline: host namespaces, host process, privileged, host paths and ports.
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if truthy(&spec[field]) {
            out.push(format!("{field} is true"));
        }
    }
    if truthy(&pod["windowsOptions"]["hostProcess"]) {
        out.push("pod windowsOptions.hostProcess is true".into());
    }
    for (i, volume) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let Some(fields) = volume.as_object() else {
            continue;
        };
        for source in fields.keys().filter(|k| *k != "name") {
            if !ALLOWED_VOLUMES.contains(&source.as_str()) {
                out.push(format!("volume {i} is of type {source}"));
            }
        }
    }
    for sysctl in pod["sysctls"].as_array().into_iter().flatten() {
        let n = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&n) {
            out.push(format!("sysctl {n} is not in the safe set"));
        }
    }
    check_selinux(&pod["seLinuxOptions"], "pod", &mut out);
    check_apparmor(&pod["appArmorProfile"], "pod", &mut out);

    // Restricted: non-root user, seccomp, at pod level or in every container.
    let pod_non_root = truthy(&pod["runAsNonRoot"]);
    if pod["runAsUser"].as_i64() == Some(0) {
        out.push("pod runAsUser is 0".into());
    }
    let pod_seccomp = seccomp_type(pod);
    if pod_seccomp == Some("Unconfined") {
        out.push("pod seccompProfile is Unconfined".into());
    }
    let pod_seccomp_ok = matches!(pod_seccomp, Some("RuntimeDefault" | "Localhost"));

    for c in containers {
        let n = name(c);
        let sc = &c["securityContext"];
        if truthy(&sc["privileged"]) {
            out.push(format!("container {n} is privileged"));
        }
        if truthy(&sc["windowsOptions"]["hostProcess"]) {
            out.push(format!("container {n} windowsOptions.hostProcess is true"));
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                out.push(format!("container {n} uses a hostPort"));
            }
        }
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            out.push(format!("container {n} procMount is not Default"));
        }
        check_selinux(&sc["seLinuxOptions"], &format!("container {n}"), &mut out);
        check_apparmor(&sc["appArmorProfile"], &format!("container {n}"), &mut out);
        if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
            out.push(format!(
                "container {n} allowPrivilegeEscalation is not false"
            ));
        }
        match sc["runAsNonRoot"].as_bool() {
            Some(false) => out.push(format!("container {n} sets runAsNonRoot false")),
            None if !pod_non_root => {
                out.push(format!(
                    "container {n} runAsNonRoot is unset and the pod's is not true"
                ));
            }
            _ => {}
        }
        if sc["runAsUser"].as_i64() == Some(0) {
            out.push(format!("container {n} runAsUser is 0"));
        }
        match seccomp_type(sc) {
            Some("RuntimeDefault" | "Localhost") => {}
            Some(other) => out.push(format!("container {n} seccompProfile is {other}")),
            None if !pod_seccomp_ok => out.push(format!(
                "container {n} has no seccompProfile and the pod's is not RuntimeDefault or Localhost"
            )),
            None => {}
        }
        let caps = &sc["capabilities"];
        let drops: Vec<&str> = caps["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !drops.contains(&"ALL") {
            out.push(format!("container {n} does not drop ALL capabilities"));
        }
        for added in caps["add"].as_array().into_iter().flatten() {
            if added.as_str() != Some("NET_BIND_SERVICE") {
                out.push(format!("container {n} adds capability {added}"));
            }
        }
    }
    out
}

fn seccomp_type(security_context: &Value) -> Option<&str> {
    security_context["seccompProfile"]["type"].as_str()
}

fn check_selinux(options: &Value, whose: &str, out: &mut Vec<String>) {
    if options["type"]
        .as_str()
        .is_some_and(|t| !SELINUX_TYPES.contains(&t))
    {
        out.push(format!("{whose} seLinuxOptions.type is not allowed"));
    }
    for field in ["user", "role"] {
        if options[field].as_str().is_some_and(|v| !v.is_empty()) {
            out.push(format!("{whose} seLinuxOptions.{field} is set"));
        }
    }
}

fn check_apparmor(profile: &Value, whose: &str, out: &mut Vec<String>) {
    if profile["type"]
        .as_str()
        .is_some_and(|t| !matches!(t, "RuntimeDefault" | "Localhost"))
    {
        out.push(format!(
            "{whose} appArmorProfile is not RuntimeDefault or Localhost"
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn compliant() -> Value {
        json!({
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "main",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                },
                "ports": [{"containerPort": 80}],
            }],
            "volumes": [
                {"name": "a", "secret": {"secretName": "s"}},
                {"name": "b", "persistentVolumeClaim": {"claimName": "c"}},
                {"name": "c", "emptyDir": {}},
                {"name": "d", "configMap": {"name": "m"}},
            ],
        })
    }

    #[test]
    fn a_compliant_pod_passes() {
        assert_eq!(restricted_violations(&compliant()), Vec::<String>::new());
    }

    #[test]
    fn each_rule_catches_its_violation() {
        type Mutation = fn(&mut Value);
        let cases: &[(&str, Mutation)] = &[
            ("hostNetwork", |p| p["hostNetwork"] = json!(true)),
            ("hostPID", |p| p["hostPID"] = json!(true)),
            ("hostPath", |p| {
                p["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "h", "hostPath": {"path": "/"}}));
            }),
            ("sysctl kernel.msgmax", |p| {
                p["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}]);
            }),
            ("privileged", |p| {
                p["containers"][0]["securityContext"]["privileged"] = json!(true);
            }),
            ("hostPort", |p| {
                p["containers"][0]["ports"][0]["hostPort"] = json!(80)
            }),
            ("allowPrivilegeEscalation", |p| {
                p["containers"][0]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            }),
            ("runAsNonRoot", |p| {
                p["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("runAsNonRoot");
            }),
            ("sets runAsNonRoot false", |p| {
                p["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
            }),
            ("runAsUser is 0", |p| {
                p["containers"][0]["securityContext"]["runAsUser"] = json!(0);
            }),
            ("has no seccompProfile", |p| {
                p["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("seccompProfile");
            }),
            ("seccompProfile is Unconfined", |p| {
                p["containers"][0]["securityContext"]["seccompProfile"] =
                    json!({"type": "Unconfined"});
            }),
            ("does not drop ALL", |p| {
                p["containers"][0]["securityContext"]["capabilities"]["drop"] = json!(["NET_RAW"]);
            }),
            ("adds capability", |p| {
                p["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]);
            }),
            ("procMount", |p| {
                p["containers"][0]["securityContext"]["procMount"] = json!("Unmasked");
            }),
            ("seLinuxOptions.user", |p| {
                p["securityContext"]["seLinuxOptions"] = json!({"user": "root"});
            }),
            ("appArmorProfile", |p| {
                p["containers"][0]["securityContext"]["appArmorProfile"] =
                    json!({"type": "Unconfined"});
            }),
            ("initContainers: init allowPrivilegeEscalation", |p| {
                p["initContainers"] = json!([{"name": "init",
                    "securityContext": {"capabilities": {"drop": ["ALL"]}}}]);
            }),
        ];
        for (rule, mutate) in cases {
            let mut pod = compliant();
            mutate(&mut pod);
            let violations = restricted_violations(&pod);
            let needle = rule.rsplit(": ").next().unwrap();
            assert!(
                violations.len() == 1 && violations[0].contains(needle),
                "{rule}: {violations:?}"
            );
        }
    }

    #[test]
    fn pod_specs_are_found_in_workloads_only() {
        let deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": {"a": 1}}}});
        assert_eq!(pod_spec(&deployment), Some(&json!({"a": 1})));
        assert_eq!(pod_spec(&json!({"kind": "Service", "spec": {}})), None);
    }
}
