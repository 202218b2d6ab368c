#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The product as a platform engineer uses it, on a real Kubernetes API server (the local
//! control plane of scripts/devcluster.sh) with a process kubelet running the pods:
//!
//! 1. `helm install` the chart (two operator replicas, leader election, a Role in the runs'
//!    namespace and nothing cluster-wide), apply the example TrainingRun (with one validator the
//!    operator runs, `validatorReplicas: 1`) and a Contributor with 2 replicas;
//! 2. the run trains; `kubectl get trainingruns` shows phase, round, loss and peers; the
//!    operator's validator is Ready and its scores arrive (rounds judged with them, not degraded);
//! 3. `kubectl scale contributor` to 4 adds peers mid-run, to 1 removes them, the run goes on;
//!    a Contributor naming another Contributor's key Secret gets no workers;
//! 4. an external peer (a worker process outside the cluster, its own key) joins the run;
//! 5. the leading operator is SIGKILLed and the run goes on under the other replica; at no time
//!    do two replicas act;
//! 6. `validatorReplicas: 0` removes the validator's pod, key and trust; deleting the
//!    TrainingRun removes every object made for it;
//! 7. an invalid TrainingRun is refused by the API server's schema with a readable message.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tributary_crds::{Contributor, RunPhase, TrainingRun, TrainingRunStatus};
use tributary_e2e::cluster::{self, helm_cmd, kubectl, repo_root, wait_for};
use tributary_e2e::kubelet::{Namespaces, ProcessKubelet};
use tributary_e2e::workspace_binary;
use tributary_proto::v1alpha1::GetStatusRequest;
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;

const RUN: &str = "tiny-demo";
const WORKERS: &str = "tiny-demo-workers";
const VALIDATORS: &str = "tiny-demo-validators";
const STEP: Duration = Duration::from_secs(180);

#[test]
fn a_training_run_lives_its_whole_life_on_a_real_api_server() {
    let kubeconfig = cluster::kubeconfig().unwrap();
    // SAFETY: no other thread exists yet; the kubelet and kube clients read KUBECONFIG.
    unsafe { std::env::set_var("KUBECONFIG", kubeconfig) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(life())
        .unwrap();
}

struct Names {
    ns: String,
    system: String,
    pv: String,
    /// Unique per run: the chart's objects are named after the release.
    release: String,
}

async fn life() -> Result<()> {
    let client = Client::try_default().await?;
    let suffix = format!("{:08x}", rand_suffix());
    let names = Names {
        ns: format!("e2e-{suffix}"),
        system: format!("tributary-{suffix}"),
        pv: format!("e2e-{suffix}-coordinator"),
        release: format!("tributary-{suffix}"),
    };
    let dir = tempfile::tempdir()?;
    let cleanup = Cleanup(&names, dir.path());
    let result = scenario(&client, &names, dir.path()).await;
    if result.is_err() {
        print_logs(dir.path());
    }
    drop(cleanup);
    result
}

/// Removes what the test made, also when it panics: cluster-scoped leftovers (the release's
/// ClusterRole, the volume) would break the next run.
struct Cleanup<'a>(&'a Names, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let names = self.0;
        if std::thread::panicking() {
            print_logs(self.1);
        }
        let _ = helm_cmd(&[
            "uninstall",
            &names.release,
            "-n",
            &names.system,
            "--wait",
            "--timeout",
            "60s",
        ]);
        for ns in [&names.ns, &names.system] {
            let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
        }
        let _ = kubectl(&["delete", "pv", &names.pv, "--wait=false"]);
    }
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id()
}

async fn scenario(client: &Client, names: &Names, dir: &Path) -> Result<()> {
    let Names {
        ns,
        system,
        pv,
        release,
    } = names;
    let bin_dir = workspace_binary("tributary-operator")?
        .parent()
        .context("binary has no directory")?
        .to_path_buf();
    let kubelet = ProcessKubelet::start_with(
        client.clone(),
        "gpu-node-0",
        &dir.join("kubelet"),
        vec![bin_dir],
        Namespaces::Only(vec![ns.clone(), system.clone()]),
    )
    .await?;

    // 1. The chart: CRDs first (helm installs them only when absent and never upgrades them).
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "charts/tributary/crds/",
    ])?;
    kubectl(&["create", "namespace", ns])?;
    // No volume provisioner here: an administrator's volume for the coordinator's claim.
    create_volume(pv, ns, &dir.join("volume"))?;
    helm_cmd(&[
        "install",
        release,
        "charts/tributary",
        "--namespace",
        system,
        "--create-namespace",
        "--set",
        "replicaCount=2",
        "--set",
        "leaderElection.leaseDurationSeconds=6",
        "--set",
        &format!("watchNamespace={ns}"),
        "--wait",
        "--timeout",
        "120s",
    ])?;
    // Least privilege: the operator's rights are a Role in the runs' namespace, none cluster-wide.
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(cluster_roles.get_opt(release).await?.is_none());
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    assert!(roles.get_opt(release).await?.is_some());
    let operators = kubectl(&[
        "get",
        "pods",
        "--namespace",
        system,
        "-l",
        &format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"),
    ])?;
    assert_eq!(
        operators.lines().count(),
        3,
        "two operator pods:\n{operators}"
    );
    // The example run, with one validator that the operator runs in-cluster.
    let example = std::fs::read_to_string(repo_root().join("examples/trainingrun.yaml"))?;
    let with_validator = example.replacen(
        "      warmupRounds: 3\n",
        "      warmupRounds: 3\n      validatorReplicas: 1\n",
        1,
    );
    assert_ne!(
        with_validator, example,
        "the example's scoring section moved"
    );
    pipe_kubectl(&["apply", "-n", ns, "-f", "-"], &with_validator)
        .map_err(|e| anyhow::anyhow!("applying the run: {e}"))?;
    kubectl(&["apply", "-n", ns, "-f", "examples/contributor.yaml"])?;
    let runs: Api<TrainingRun> = Api::namespaced(client.clone(), ns);

    // 2. It trains, and kubectl shows it.
    let status = wait_status(&runs, "2 peers training", |s| {
        s.phase == Some(RunPhase::Running) && s.round >= 3 && s.active_peers == 2
    })
    .await?;
    assert!(
        status.loss.is_some_and(|l| l.is_finite() && l > 0.0),
        "{status:?}"
    );
    let table = kubectl(&["get", "trainingruns", "-n", ns])?;
    eprintln!("step 2: training\n{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "PHASE", "ROUND", "LOSS", "PEERS"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(RUN) && row.contains("Running"), "{table}");
    // The summary condition GitOps tools and `kubectl wait` read, on both kinds.
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("trainingrun/{RUN}"),
        &format!("contributor/{WORKERS}"),
        "-n",
        ns,
        "--timeout=60s",
    ])?;
    for (kind, what) in [
        ("trainingrun", "A TrainingRun is one"),
        ("contributor", "A Contributor is a set"),
        ("trainingrun.spec", "participation"),
    ] {
        let explained = kubectl(&["explain", kind])?;
        assert!(
            explained.contains(what),
            "kubectl explain {kind}:\n{explained}"
        );
    }
    // The operator's validator: Ready, and its scores reach the coordinator: rounds are judged
    // with them (not degraded), every accepted update carrying a validator score.
    wait_status(&runs, "the operator's validator Ready", |s| {
        s.ready_validators == 1
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let coordinator_url = format!("http://{}:50051", coordinator_ip(&pods).await?);
    let judged = wait_for(
        "a round judged with the validator's scores",
        STEP,
        || async {
            let mut c = ExchangeClient::connect(coordinator_url.clone()).await?;
            let status = c.get_status(GetStatusRequest::default()).await?;
            Ok(status.into_inner().history.into_iter().find(|r| {
                r.published
                    && r.degraded.is_empty()
                    && !r.selection.is_empty()
                    && r.selection.iter().all(|s| s.score.is_some())
            }))
        },
    )
    .await?;
    eprintln!(
        "step 2: round {} judged by the operator's validator: {:?}",
        judged.round, judged.selection
    );
    let described = kubectl(&["describe", "trainingrun", RUN, "-n", ns])?;
    for shown in ["Progressing", "RoundsCompleting", "Events:", "Running"] {
        assert!(
            described.contains(shown),
            "describe lacks {shown}:\n{described}"
        );
    }

    // 3. Scale up mid-run, then down; rounds keep completing.
    kubectl(&["scale", "contributor", WORKERS, "--replicas=4", "-n", ns])?;
    let before = status.round;
    let status = wait_status(&runs, "4 peers", |s| {
        s.active_peers == 4 && s.round > before
    })
    .await?;
    let contributors: Api<Contributor> = Api::namespaced(client.clone(), ns);
    let c = contributors.get(WORKERS).await?;
    let c_status = c.status.context("contributor has no status")?;
    eprintln!(
        "step 3: scaled to 4 at round {}: {c_status:?}",
        status.round
    );
    assert_eq!(c_status.peer_ids.len(), 4, "{c_status:?}");
    kubectl(&["scale", "contributor", WORKERS, "--replicas=1", "-n", ns])?;
    wait_for("workers scaled to 1", STEP, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("tributary.dev/contributor={WORKERS}")))
            .await?;
        Ok((list.items.len() == 1).then_some(()))
    })
    .await?;

    // A Contributor may not borrow another one's keys: no workers, and its condition says why.
    let borrower = format!(
        "apiVersion: tributary.dev/v1alpha1
kind: Contributor
metadata:
  name: borrower
spec:
  trainingRun: {RUN}
  replicas: 1
  gpusPerWorker: 0
  keySecretRef:
    name: {WORKERS}-keys
"
    );
    pipe_kubectl(&["apply", "-n", ns, "-f", "-"], &borrower)
        .map_err(|e| anyhow::anyhow!("creating the borrowing Contributor: {e}"))?;
    let reason = wait_for("the borrower's refusal", STEP, || async {
        let c = contributors.get("borrower").await?;
        let ready = c
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
        Ok(ready.filter(|r| r.status == "False" && r.reason.starts_with("KeySecret")))
    })
    .await?;
    assert_eq!(reason.reason, "KeySecretNotAllowed", "{reason:?}");
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    assert!(statefulsets.get_opt("borrower").await?.is_none());
    kubectl(&["delete", "contributor", "borrower", "-n", ns])?;
    eprintln!("step 3: borrowed keys refused: {}", reason.message);

    // 4. An external peer: the same worker binary, outside the cluster, with its own key.
    let worker = workspace_binary("tributary-worker")?;
    let key = dir.join("external.key");
    let keygen = Command::new(&worker)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()?;
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let coordinator_ip = coordinator_ip(&pods).await?;
    let mut external = ChildGuard(
        Command::new(&worker)
            .args(["join", "--run-id", RUN, "--coordinator"])
            .arg(format!("http://{coordinator_ip}:50051"))
            .arg("--key")
            .arg(&key)
            .arg("--data-dir")
            .arg(dir.join("external"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("external.log"))?)
            .spawn()?,
    );
    let before = status.round;
    let status = wait_status(&runs, "1 in-cluster + 1 external peer", |s| {
        s.active_peers == 2 && s.external_peers == 1 && s.round >= before + 2
    })
    .await?;
    assert!(external.0.try_wait()?.is_none(), "the external peer exited");
    eprintln!("step 4: 1 worker + 1 external peer: {status:?}");

    // 5. Kill the leading operator; the other replica takes over, the run goes on.
    let leases: Api<Lease> = Api::namespaced(client.clone(), system);
    let leader = holder(&leases).await?;
    let operators = operator_pods(client, system).await?;
    assert_eq!(operators.len(), 2, "two operator replicas");
    assert_one_acts(&operators, Some(&leader))?;
    kubelet.kill(system, &leader)?;
    eprintln!("step 5: killed the leader {leader} of {operators:?}");
    let before = status.round;
    wait_status(&runs, "progress after the leader was killed", |s| {
        s.round >= before + 3 && s.active_peers == 2
    })
    .await?;
    let new_leader = holder(&leases).await?;
    eprintln!("step 5: the lease holder is now {new_leader}");
    assert_one_acts(&operator_pods(client, system).await?, Some(&new_leader))?;
    // The leader's pod goes away for good: another replica (the standby, or the Deployment's
    // replacement pod if it campaigns first) takes over, the run goes on.
    kubectl(&["delete", "pod", &new_leader, "-n", system])?;
    let successor = wait_for("another replica to take the lease", STEP, || async {
        let h = holder(&leases).await?;
        Ok((h != new_leader).then_some(h))
    })
    .await?;
    let before = runs.get(RUN).await?.status.map_or(0, |s| s.round);
    wait_status(&runs, "progress under the standby", |s| {
        s.round >= before + 2
    })
    .await?;
    assert_one_acts(&operator_pods(client, system).await?, Some(&successor))?;
    eprintln!("step 5: {new_leader} deleted, {successor} leads");

    // 7. An invalid TrainingRun never reaches the operator: the schema refuses it.
    let bad = std::fs::read_to_string(repo_root().join("examples/trainingrun.yaml"))?
        .replace("name: tiny-demo", "name: broken")
        .replace("preset: tiny", "preset: gigantic");
    let refused = apply_stdin(ns, &bad)?;
    assert!(
        refused.contains("spec.model.preset") && refused.contains("gigantic"),
        "{refused}"
    );
    eprintln!("step 7: refused: {}", refused.trim());

    // 6. No more validators: the pod goes, its key goes, the coordinator no longer trusts it.
    kubectl(&[
        "patch",
        "trainingrun",
        RUN,
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"participation":{"scoring":{"validatorReplicas":0}}}}"#,
    ])?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    wait_for(
        "the validator's pod, key and trust to be gone",
        STEP,
        || async {
            let pods_left = pods
                .list(&ListParams::default().labels(&format!(
                    "tributary.dev/run={RUN},app.kubernetes.io/component=validator"
                )))
                .await?
                .items
                .len();
            let keys_left = secrets
                .get_opt(&format!("{RUN}-validator-keys"))
                .await?
                .and_then(|s| s.data)
                .map_or(0, |d| d.len());
            let manifest = config_maps
                .get(&format!("{RUN}-run"))
                .await?
                .data
                .and_then(|d| d.get("run.yaml").cloned())
                .unwrap_or_default();
            let trusted: TrainingRun = serde_yaml::from_str(&manifest)?;
            let validators = trusted.spec.participation.scoring.validators.len();
            Ok((pods_left == 0 && keys_left == 0 && validators == 0).then_some(()))
        },
    )
    .await?;
    let set: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let replicas = set.get(VALIDATORS).await?.spec.and_then(|s| s.replicas);
    assert_eq!(replicas, Some(0));
    eprintln!("step 6: validatorReplicas 0: no validator pod, key or trust");

    // Deleting the run removes everything made for it.
    kubectl(&["delete", "trainingrun", RUN, "-n", ns, "--wait=false"])?;
    let selector = format!("tributary.dev/run={RUN}");
    wait_for("every child of the run to be gone", STEP, || async {
        let left = [
            count::<ConfigMap>(client, ns, &selector).await?,
            count::<PersistentVolumeClaim>(client, ns, &selector).await?,
            count::<Deployment>(client, ns, &selector).await?,
            count::<Service>(client, ns, &selector).await?,
            count::<StatefulSet>(client, ns, &selector).await?,
            count::<Secret>(client, ns, &selector).await?,
            count::<Contributor>(client, ns, "").await?,
            count::<Pod>(client, ns, &selector).await?,
        ];
        Ok((left.iter().all(|n| *n == 0)).then_some(()))
    })
    .await?;
    eprintln!("step 6: every child of the run is gone");
    drop(external);
    drop(kubelet);
    Ok(())
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_status(
    runs: &Api<TrainingRun>,
    what: &str,
    ok: impl Fn(&TrainingRunStatus) -> bool,
) -> Result<TrainingRunStatus> {
    wait_for(what, STEP, || async {
        let run = runs.get(RUN).await?;
        Ok(run.status.filter(|s| ok(s)))
    })
    .await
}

async fn count<K>(client: &Client, ns: &str, selector: &str) -> Result<usize>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .len())
}

fn create_volume(name: &str, ns: &str, path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)?;
    let pv = format!(
        "apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  claimRef:
    namespace: {ns}
    name: {RUN}-coordinator
  hostPath:
    path: {}
",
        path.display()
    );
    pipe_kubectl(&["apply", "-f", "-"], &pv)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("creating the volume: {e}"))
}

/// `kubectl apply -f -` of `manifest` in `ns`; kubectl's error output when it is refused.
fn apply_stdin(ns: &str, manifest: &str) -> Result<String> {
    match pipe_kubectl(&["apply", "-n", ns, "-f", "-"], manifest) {
        Ok(out) => bail!("the API server accepted an invalid TrainingRun: {out}"),
        Err(stderr) => Ok(stderr),
    }
}

/// Runs kubectl with `input` on stdin: Ok(stdout), or Err(stderr) when it fails.
fn pipe_kubectl(args: &[&str], input: &str) -> std::result::Result<String, String> {
    let spawn = || -> Result<std::process::Output> {
        let mut child = Command::new(cluster::kubectl_path()?)
            .args(args)
            .env("KUBECONFIG", cluster::kubeconfig()?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    };
    let out = spawn().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn coordinator_ip(pods: &Api<Pod>) -> Result<String> {
    let list = pods
        .list(&ListParams::default().labels(&format!(
            "tributary.dev/run={RUN},app.kubernetes.io/component=coordinator"
        )))
        .await?;
    list.items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .context("the coordinator pod has no IP")
}

async fn holder(leases: &Api<Lease>) -> Result<String> {
    wait_for("a leader lease holder", STEP, || async {
        Ok(leases
            .get_opt("tributary-operator")
            .await?
            .and_then(|l| l.spec?.holder_identity))
    })
    .await
}

/// The operator pods: name → pod IP.
async fn operator_pods(client: &Client, system: &str) -> Result<BTreeMap<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), system);
    wait_for("two Ready operator pods", STEP, || async {
        let list = pods.list(&ListParams::default()).await?;
        let ready: BTreeMap<String, String> = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| Some((p.metadata.name.clone()?, p.status.as_ref()?.pod_ip.clone()?)))
            .collect();
        Ok((ready.len() == 2).then_some(ready))
    })
    .await
}

/// Scrapes every operator's /metrics: exactly the lease holder leads and has reconciled; the
/// standby has not reconciled anything.
fn assert_one_acts(pods: &BTreeMap<String, String>, leader: Option<&String>) -> Result<()> {
    let mut leaders = Vec::new();
    for (name, ip) in pods {
        let text = scrape(ip)?;
        let leads = text
            .lines()
            .any(|l| l.trim() == "tributary_operator_leader 1");
        let reconciles: f64 = text
            .lines()
            .filter(|l| l.starts_with("tributary_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if leads {
            leaders.push(name.clone());
            assert!(
                reconciles > 0.0,
                "the leader {name} has not reconciled:\n{text}"
            );
        } else {
            assert_eq!(reconciles, 0.0, "standby {name} acted:\n{text}");
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one replica leads: {leaders:?}");
    if let Some(leader) = leader {
        assert_eq!(&leaders[0], leader, "the lease holder is the one that acts");
    }
    Ok(())
}

fn scrape(ip: &str) -> Result<String> {
    let mut stream = TcpStream::connect((ip, 9090)).with_context(|| format!("metrics at {ip}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn print_logs(dir: &Path) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                files.push(path);
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("==== {} (last 30 lines)", file.display());
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
}
