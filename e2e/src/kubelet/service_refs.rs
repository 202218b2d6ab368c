//! Cluster DNS and kube-proxy for args and env: finds `SVC.NS.svc[.cluster.local][:PORT]`
//! hosts (bare or in URLs) and maps a Service port to a selected pod's IP and targetPort.

use std::ops::Range;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One Service host found in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub service: String,
    pub namespace: String,
    /// The port the client dials: written after the host, or its URL scheme's default.
    pub port: Option<u16>,
    /// Bytes of the value to replace: the host and any `:PORT`.
    range: Range<usize>,
}

/// Where a Service reference leads: a pod IP and, when the port was known, the targetPort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: String,
    pub port: Option<u16>,
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Every `SVC.NS.svc` or `SVC.NS.svc.cluster.local` host in `value`, in order.
pub fn find(value: &str) -> Vec<ServiceRef> {
    let bytes = value.as_bytes();
    let mut refs = Vec::new();
    let mut search = 0;
    while let Some(found) = value[search..].find(".svc") {
        let dot = search + found;
        search = dot + 4;
        let mut host_end = dot + 4;
        if value[host_end..].starts_with(".cluster.local") {
            host_end += ".cluster.local".len();
        }
        if bytes.get(host_end).is_some_and(|&b| is_host_byte(b)) {
            continue; // ".svcx", ".svc.other": not a Service name
        }
        let mut start = dot;
        while start > 0 && is_host_byte(bytes[start - 1]) {
            start -= 1;
        }
        let labels: Vec<&str> = value[start..dot].split('.').collect();
        let [service, namespace] = labels[..] else {
            continue;
        };
        if service.is_empty() || namespace.is_empty() {
            continue;
        }
        let scheme_port = value[..start].strip_suffix("://").and_then(|before| {
            let scheme_start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-'))
                .map_or(0, |i| i + 1);
            default_port(&before[scheme_start..])
        });
        let mut end = host_end;
        let mut port = scheme_port;
        if let Some(after) = value[host_end..].strip_prefix(':') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if let Ok(p) = after[..digits].parse::<u16>() {
                port = Some(p);
                end = host_end + 1 + digits;
            }
        }
        refs.push(ServiceRef {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            port,
            range: start..end,
        });
        search = end;
    }
    refs
}

/// `value` with each reference replaced by its endpoint (`IP:PORT`, or `IP` when no port was
/// known); references `resolve` has no endpoint for stay as written.
pub fn substitute(
    value: &str,
    refs: &[ServiceRef],
    resolve: impl Fn(&ServiceRef) -> Option<Endpoint>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut copied = 0;
    for r in refs {
        let Some(endpoint) = resolve(r) else { continue };
        out.push_str(&value[copied..r.range.start]);
        out.push_str(&endpoint.ip);
        if let Some(port) = endpoint.port {
            out.push_str(&format!(":{port}"));
        }
        copied = r.range.end;
    }
    out.push_str(&value[copied..]);
    out
}

/// The pod port behind `port` of the Service: Ok(None) when the client's port is unknown (only
/// the host is rewritten); an error when the Service has no such port or the pod no such
/// named containerPort.
pub fn target_port(service: &Service, port: Option<u16>, pod: &Pod) -> Result<Option<u16>, String> {
    let Some(port) = port else { return Ok(None) };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let service_port = ports
        .iter()
        .find(|p| p.port == i32::from(port))
        .ok_or_else(|| format!("the Service has no port {port}"))?;
    let target = match &service_port.target_port {
        None => service_port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("the pod has no containerPort named {name}"))?,
    };
    u16::try_from(target)
        .map(Some)
        .map_err(|_| format!("targetPort {target} out of range"))
}

/// A pod a Service would route to: Ready, with an IP, and not being deleted.
pub fn is_ready_endpoint(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    ready && has_ip && pod.metadata.deletion_timestamp.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc_ref(service: &str, namespace: &str, port: Option<u16>) -> (String, String, Option<u16>) {
        (service.into(), namespace.into(), port)
    }

    fn found(value: &str) -> Vec<(String, String, Option<u16>)> {
        find(value)
            .into_iter()
            .map(|r| (r.service, r.namespace, r.port))
            .collect()
    }

    #[test]
    fn finds_urls_and_host_ports() {
        assert_eq!(
            found("http://r-coordinator.ns1.svc:50051"),
            [svc_ref("r-coordinator", "ns1", Some(50051))]
        );
        assert_eq!(
            found("db.prod.svc.cluster.local:5432"),
            [svc_ref("db", "prod", Some(5432))]
        );
        assert_eq!(
            found("http://web.ns.svc/index.html"),
            [svc_ref("web", "ns", Some(80))]
        );
        assert_eq!(
            found("https://web.ns.svc.cluster.local"),
            [svc_ref("web", "ns", Some(443))]
        );
        assert_eq!(found("web.ns.svc"), [svc_ref("web", "ns", None)]);
        assert_eq!(
            found("--peers=a.x.svc:1,b.y.svc:2"),
            [svc_ref("a", "x", Some(1)), svc_ref("b", "y", Some(2))]
        );
    }

    #[test]
    fn ignores_what_is_not_a_service_host() {
        assert!(found("web.svc:80").is_empty());
        assert!(found("pod.web.ns.svc:80").is_empty());
        assert!(found("web.ns.svcx:80").is_empty());
        assert!(found("web.ns.svc.example.com").is_empty());
        assert!(found("/var/lib/.svc").is_empty());
        assert!(found("plain text").is_empty());
    }

    #[test]
    fn substitutes_resolved_references_only() {
        let value = "--a=http://web.ns.svc:80/x --b=db.ns.svc:5432 --c=web.ns.svc";
        let refs = find(value);
        let out = substitute(value, &refs, |r| match r.service.as_str() {
            "web" => Some(Endpoint {
                ip: "127.0.0.3".into(),
                port: r.port.map(|_| 8080),
            }),
            _ => None,
        });
        assert_eq!(
            out,
            "--a=http://127.0.0.3:8080/x --b=db.ns.svc:5432 --c=127.0.0.3"
        );
        let out = substitute("http://web.ns.svc", &find("http://web.ns.svc"), |_| {
            Some(Endpoint {
                ip: "127.0.0.4".into(),
                port: Some(8000),
            })
        });
        assert_eq!(out, "http://127.0.0.4:8000");
    }

    fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_json::from_value(serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn maps_service_ports_to_target_ports() {
        let service: Service = from_yaml(
            r#"
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 50051, targetPort: grpc}
  - {name: same, port: 9000}
"#,
        );
        let pod: Pod = from_yaml(
            r#"
metadata: {name: web-0}
spec:
  containers:
  - name: c
    ports: [{name: grpc, containerPort: 50052}]
"#,
        );
        assert_eq!(target_port(&service, Some(80), &pod), Ok(Some(8080)));
        assert_eq!(target_port(&service, Some(50051), &pod), Ok(Some(50052)));
        assert_eq!(target_port(&service, Some(9000), &pod), Ok(Some(9000)));
        assert_eq!(target_port(&service, None, &pod), Ok(None));
        assert!(target_port(&service, Some(81), &pod).is_err());
        let bare: Pod = from_yaml("metadata: {name: p}\nspec: {containers: [{name: c}]}\n");
        assert!(target_port(&service, Some(50051), &bare).is_err());
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_endpoints() {
        let ready: Pod =
            from_yaml("status: {podIP: 127.0.0.2, conditions: [{type: Ready, status: 'True'}]}\n");
        let unready: Pod =
            from_yaml("status: {podIP: 127.0.0.2, conditions: [{type: Ready, status: 'False'}]}\n");
        let no_ip: Pod = from_yaml("status: {conditions: [{type: Ready, status: 'True'}]}\n");
        assert!(is_ready_endpoint(&ready));
        assert!(!is_ready_endpoint(&unready));
        assert!(!is_ready_endpoint(&no_ip));
    }
}
