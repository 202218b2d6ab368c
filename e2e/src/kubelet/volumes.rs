//! Volumes as local directories under the pod's directory: configMap and secret files (items
//! and modes honoured), emptyDir, persistentVolumeClaim (the bound PV's hostPath, else a per-claim
//! directory that outlives the pod), hostPath, and the ServiceAccount's token with a kubeconfig.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    Volume,
};
use kube::{Api, Client};

use super::mounts::MountTable;

/// Where the kubelet mounts a pod's ServiceAccount token.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const DEFAULT_MODE: i32 = 0o644;

/// A pod's volumes, made.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    /// Volume name → local directory.
    pub dirs: BTreeMap<String, PathBuf>,
    /// The ServiceAccount token directory (token, ca.crt, namespace, kubeconfig), if mounted.
    pub service_account: Option<PathBuf>,
}

impl PodVolumes {
    /// The kubeconfig a process uses to talk to the API server as the pod's ServiceAccount.
    pub fn kubeconfig(&self) -> Option<PathBuf> {
        self.service_account.as_ref().map(|d| d.join("kubeconfig"))
    }

    /// Mount path → local path for one container (subPath honoured).
    pub fn mounts(&self, container: &k8s_openapi::api::core::v1::Container) -> MountTable {
        let mut entries: Vec<(String, PathBuf)> = container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let dir = self.dirs.get(&m.name)?;
                let local = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => dir.join(sub),
                    None => dir.clone(),
                };
                Some((m.mount_path.clone(), local))
            })
            .collect();
        if let Some(sa) = &self.service_account
            && !entries
                .iter()
                .any(|(path, _)| path.trim_end_matches('/') == SERVICE_ACCOUNT_PATH)
        {
            entries.push((SERVICE_ACCOUNT_PATH.to_owned(), sa.clone()));
        }
        MountTable::new(entries)
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Writes `data` into `dir` as files: every key, or only `items` (key → path, mode).
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
    let default_mode = default_mode.unwrap_or(DEFAULT_MODE);
    let files: Vec<(&str, &str, i32)> = match items {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i.key.as_str(),
                    i.path.as_str(),
                    i.mode.unwrap_or(default_mode),
                )
            })
            .collect(),
        None => data
            .keys()
            .map(|k| (k.as_str(), k.as_str(), default_mode))
            .collect(),
    };
    for (key, rel, mode) in files {
        let Some(bytes) = data.get(key) else {
            if optional {
                continue;
            }
            return Err(format!("key {key} not found"));
        };
        if rel.starts_with('/') || rel.split('/').any(|part| part == "..") {
            return Err(format!("item path {rel} leaves the volume"));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        }
        // A file may already be there read-only from an earlier container start.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, bytes).map_err(|e| io_err("writing", &path, e))?;
        let mode = u32::try_from(mode & 0o777).unwrap_or(0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("chmod", &path, e))?;
    }
    Ok(())
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading ConfigMap {name}: {e}"))
}

async fn secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, String> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))
}

/// A ConfigMap's data and binaryData as bytes.
pub fn config_map_bytes(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let text = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
    let binary = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()));
    text.chain(binary).collect()
}

/// A Secret's data as bytes.
pub fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// A ConfigMap's or Secret's values as text (for env).
pub fn as_text(data: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    data.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// Reads what a pod refers to and makes its volumes under `pod_dir/volumes`.
pub struct VolumeMaker<'a> {
    pub client: &'a Client,
    /// The kubelet root: per-claim directories live in `root/pvc`.
    pub root: &'a Path,
    pub pod_dir: &'a Path,
    /// The API server URL for ServiceAccount kubeconfigs.
    pub api_server: Option<&'a str>,
}

impl VolumeMaker<'_> {
    pub async fn make(&self, pod: &Pod) -> Result<PodVolumes, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
        let mut volumes = PodVolumes::default();
        for volume in spec.volumes.iter().flatten() {
            let dir = self
                .volume(ns, volume)
                .await
                .map_err(|e| format!("volume {}: {e}", volume.name))?;
            volumes.dirs.insert(volume.name.clone(), dir);
        }
        let pod_automount = spec.automount_service_account_token;
        if pod_automount != Some(false) {
            let account = spec.service_account_name.as_deref().unwrap_or("default");
            volumes.service_account = self
                .service_account(ns, account, pod_automount)
                .await
                .map_err(|e| format!("ServiceAccount {account}: {e}"))?;
        }
        Ok(volumes)
    }

    async fn volume(&self, ns: &str, volume: &Volume) -> Result<PathBuf, String> {
        let dir = self.pod_dir.join("volumes").join(&volume.name);
        if let Some(source) = &volume.config_map {
            let optional = source.optional == Some(true);
            let data = match config_map(self.client, ns, &source.name).await? {
                Some(cm) => config_map_bytes(&cm),
                None if optional => BTreeMap::new(),
                None => return Err(format!("ConfigMap {} not found", source.name)),
            };
            write_files(
                &dir,
                &data,
                source.items.as_deref(),
                source.default_mode,
                optional,
            )?;
            Ok(dir)
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.as_deref().unwrap_or_default();
            let optional = source.optional == Some(true);
            let data = match secret(self.client, ns, name).await? {
                Some(s) => secret_bytes(&s),
                None if optional => BTreeMap::new(),
                None => return Err(format!("Secret {name} not found")),
            };
            write_files(
                &dir,
                &data,
                source.items.as_deref(),
                source.default_mode,
                optional,
            )?;
            Ok(dir)
        } else if let Some(source) = &volume.persistent_volume_claim {
            let dir = self.claim_dir(ns, &source.claim_name).await?;
            std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
            Ok(dir)
        } else if let Some(source) = &volume.host_path {
            let dir = PathBuf::from(&source.path);
            let is_file = source
                .type_
                .as_deref()
                .is_some_and(|t| t.starts_with("File"));
            if !is_file && !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
            }
            Ok(dir)
        } else {
            if volume.empty_dir.is_none() {
                tracing::warn!(volume = %volume.name, "unsupported volume type: an empty directory stands in");
            }
            std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
            Ok(dir)
        }
    }

    /// The bound PV's hostPath, else `root/pvc/<ns>_<claim>` (kept across pod restarts).
    async fn claim_dir(&self, ns: &str, claim: &str) -> Result<PathBuf, String> {
        let pvc = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
            .get_opt(claim)
            .await
            .map_err(|e| format!("reading PersistentVolumeClaim {claim}: {e}"))?
            .ok_or_else(|| format!("PersistentVolumeClaim {claim} not found"))?;
        let bound = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if let Some(pv_name) = bound.filter(|n| !n.is_empty()) {
            let pv = Api::<PersistentVolume>::all(self.client.clone())
                .get_opt(pv_name)
                .await
                .map_err(|e| format!("reading PersistentVolume {pv_name}: {e}"))?;
            let host_path = pv.and_then(|pv| pv.spec?.host_path).map(|h| h.path);
            if let Some(path) = host_path {
                return Ok(PathBuf::from(path));
            }
        }
        Ok(self.root.join("pvc").join(format!("{ns}_{claim}")))
    }

    /// Writes token, ca.crt, namespace and kubeconfig for `account`, unless the account opts
    /// out of automounting and the pod does not opt in.
    async fn service_account(
        &self,
        ns: &str,
        account: &str,
        pod_automount: Option<bool>,
    ) -> Result<Option<PathBuf>, String> {
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .get_opt(account)
            .await
            .map_err(|e| format!("reading: {e}"))?
            .ok_or("not found")?;
        if pod_automount.is_none() && sa.automount_service_account_token == Some(false) {
            return Ok(None);
        }
        let server = self
            .api_server
            .ok_or("no API server URL (KUBECONFIG was not readable when the kubelet started)")?;
        let mut token_secret = None;
        for reference in sa.secrets.iter().flatten() {
            let Some(name) = reference.name.as_deref() else {
                continue;
            };
            if let Some(s) = secret(self.client, ns, name).await?
                && s.type_.as_deref() == Some("kubernetes.io/service-account-token")
            {
                token_secret = Some(s);
                break;
            }
        }
        let data = secret_bytes(&token_secret.ok_or("no token Secret yet")?);
        let token = data.get("token").ok_or("token Secret has no token")?;
        let ca = data.get("ca.crt").ok_or("token Secret has no ca.crt")?;
        let dir = self.pod_dir.join("serviceaccount");
        let files: BTreeMap<String, Vec<u8>> = [
            ("token".to_owned(), token.clone()),
            ("ca.crt".to_owned(), ca.clone()),
            ("namespace".to_owned(), ns.as_bytes().to_vec()),
            (
                "kubeconfig".to_owned(),
                kubeconfig(
                    server,
                    &dir.join("ca.crt"),
                    &String::from_utf8_lossy(token),
                    ns,
                )
                .into_bytes(),
            ),
        ]
        .into();
        write_files(&dir, &files, None, Some(0o600), false)?;
        Ok(Some(dir))
    }
}

/// A kubeconfig (JSON is YAML) for a ServiceAccount token, defaulting to the pod's namespace.
pub fn kubeconfig(server: &str, ca_file: &Path, token: &str, namespace: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {
            "server": server,
            "certificate-authority": ca_file.to_string_lossy(),
        }}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [{"name": "service-account", "context": {
            "cluster": "cluster", "user": "service-account", "namespace": namespace,
        }}],
        "current-context": "service-account",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_honour_items_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ]
        .into();
        let all = dir.path().join("all");
        write_files(&all, &data, None, Some(0o400), false).unwrap();
        assert_eq!(std::fs::read(all.join("b")).unwrap(), b"2");
        let mode = std::fs::metadata(all.join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        // Writing again (a restart) replaces read-only files.
        write_files(&all, &data, None, Some(0o400), false).unwrap();

        let some = dir.path().join("some");
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/renamed".into(),
            mode: Some(0o640),
        }];
        write_files(&some, &data, Some(&items), None, false).unwrap();
        assert_eq!(std::fs::read(some.join("sub/renamed")).unwrap(), b"2");
        assert!(!some.join("a").exists());
        let mode = std::fs::metadata(some.join("sub/renamed"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);

        let missing = [KeyToPath {
            key: "zz".into(),
            path: "zz".into(),
            mode: None,
        }];
        assert!(write_files(&some, &data, Some(&missing), None, false).is_err());
        write_files(&some, &data, Some(&missing), None, true).unwrap();
        let escape = [KeyToPath {
            key: "a".into(),
            path: "../x".into(),
            mode: None,
        }];
        assert!(write_files(&some, &data, Some(&escape), None, false).is_err());
    }

    #[test]
    fn service_account_kubeconfig_parses() {
        let text = kubeconfig(
            "https://127.0.0.1:16443",
            Path::new("/sa/ca.crt"),
            "tok",
            "ns1",
        );
        let config = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("service-account"));
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:16443"));
        assert_eq!(cluster.certificate_authority.as_deref(), Some("/sa/ca.crt"));
    }

    #[test]
    fn mounts_cover_volumes_sub_paths_and_the_token() {
        let volumes = PodVolumes {
            dirs: [("run".to_owned(), PathBuf::from("/k/p/volumes/run"))].into(),
            service_account: Some(PathBuf::from("/k/p/serviceaccount")),
        };
        let container: k8s_openapi::api::core::v1::Container =
            serde_json::from_value(serde_json::json!({
                "name": "c",
                "volumeMounts": [
                    {"name": "run", "mountPath": "/etc/tributary"},
                    {"name": "run", "mountPath": "/etc/one.yaml", "subPath": "run.yaml"},
                    {"name": "absent", "mountPath": "/nowhere"},
                ],
            }))
            .unwrap();
        let table = volumes.mounts(&container);
        assert_eq!(table.rewrite("/etc/tributary/x"), "/k/p/volumes/run/x");
        assert_eq!(table.rewrite("/etc/one.yaml"), "/k/p/volumes/run/run.yaml");
        assert_eq!(table.rewrite("/nowhere"), "/nowhere");
        assert_eq!(
            table.rewrite("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            "/k/p/serviceaccount/token"
        );
    }
}
