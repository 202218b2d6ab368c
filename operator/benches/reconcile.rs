//! Operator reconcile load: `cargo bench -p tributary-operator --bench reconcile`.
//!
//! Needs a Kubernetes API server (KUBECONFIG; the dev cluster of `shared/k8s-devcluster` is
//! what it was written for). It installs the CRDs when they are missing (and leaves them),
//! creates a fresh namespace `opbench-<unix seconds>`, and runs the operator's controllers
//! (`controller::run_controllers`, no leader election) in this process on their own Tokio
//! runtime and client. It then creates TRIBUTARY_RECONCILE_RUNS (100) TrainingRuns from
//! examples/trainingrun.yaml and TRIBUTARY_RECONCILE_CONTRIBUTORS (10) Contributors per run from
//! examples/contributor.yaml (replicas alternating 1 and 2), TRIBUTARY_RECONCILE_CONCURRENCY (16)
//! creates in flight, and measures per object the time from sending its create to the first
//! status (seen on a watch of its own, on the bench's runtime and client) whose
//! `observedGeneration` equals the object's generation. Then it patches every Contributor's
//! `spec.replicas` (+1) and measures until `status.observedGeneration` reaches the new generation.
//! It lets the controllers run TRIBUTARY_RECONCILE_SETTLE_S (30) more seconds (their periodic
//! requeues; TRIBUTARY_RECONCILE_POLL_S, default 5 as the operator's `--poll-seconds`), and
//! reports reconciles (the operator's Metrics registry), CPU time of this process and of the
//! cluster's kube-apiserver and etcd (when their pid files are readable), and this process's
//! RSS: before the controllers start, peak (VmHWM) and after settling. An isolation check fails
//! the bench when another Tributary operator (one watching all namespaces, say) reconciled the
//! namespace too. Finally it stops the controllers, deletes the namespace — force-deleting its
//! bound pods, which no kubelet finalizes — and waits for it to go. Every wait fails after
//! TRIBUTARY_RECONCILE_TIMEOUT_S (300); a phase that times out is still reported, its
//! unfinished objects counted. RUST_LOG turns on the operator's logs (stderr). Results:
//! docs/benchmarks.md, "Operator reconcile".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, conditions, wait, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tributary_crds::{Contributor, TrainingRun};
use tributary_operator::controller::metrics::{Metrics, ReconcileLabels};
use tributary_operator::controller::{self, GrpcProbe, Images, Parts, run_controllers};

mod common;
use common::env_or;

const TRAINING_RUN_YAML: &str = include_str!("../../examples/trainingrun.yaml");
const CONTRIBUTOR_YAML: &str = include_str!("../../examples/contributor.yaml");
const CONTROLLERS: [&str; 2] = ["trainingrun", "contributor"];

struct Settings {
    runs: usize,
    contributors: usize,
    concurrency: usize,
    poll: Duration,
    settle: Duration,
    timeout: Duration,
}

impl Settings {
    fn from_env() -> Self {
        Self {
            runs: env_or("TRIBUTARY_RECONCILE_RUNS", 100usize).max(1),
            contributors: env_or("TRIBUTARY_RECONCILE_CONTRIBUTORS", 10usize),
            concurrency: env_or("TRIBUTARY_RECONCILE_CONCURRENCY", 16usize).max(1),
            poll: Duration::from_secs(env_or("TRIBUTARY_RECONCILE_POLL_S", 5u64).max(1)),
            settle: Duration::from_secs(env_or("TRIBUTARY_RECONCILE_SETTLE_S", 30u64)),
            timeout: Duration::from_secs(env_or("TRIBUTARY_RECONCILE_TIMEOUT_S", 300u64)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process figures

/// A `/proc/self/status` field in KiB (VmRSS, VmHWM).
fn proc_status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// User + system CPU seconds of a process (`/proc/PID/stat` fields 14 and 15).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

/// The dev cluster's kube-apiserver and etcd, when their pid files are there.
fn cluster_pids() -> Vec<(&'static str, String)> {
    let home = std::env::var("K8S_DEVCLUSTER_HOME").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/k8s-devcluster"),
        PathBuf::from,
    );
    ["kube-apiserver", "etcd"]
        .into_iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(home.join(format!("run/{name}.pid"))).ok()?;
            let pid = pid.trim().to_owned();
            cpu_seconds(&pid).map(|_| (name, pid))
        })
        .collect()
}

/// CPU seconds of this process and of the cluster's processes, at one instant.
#[derive(Clone)]
struct CpuSample(Vec<(&'static str, f64)>);

fn cpu_sample(cluster: &[(&'static str, String)]) -> CpuSample {
    let mut all = vec![("bench process", cpu_seconds("self").unwrap_or(0.0))];
    all.extend(
        cluster
            .iter()
            .map(|(name, pid)| (*name, cpu_seconds(pid).unwrap_or(0.0))),
    );
    CpuSample(all)
}

fn cpu_delta(before: &CpuSample, after: &CpuSample) -> String {
    before
        .0
        .iter()
        .zip(&after.0)
        .map(|((name, a), (_, b))| format!("{name} {:.1} s", b - a))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Reconcile figures from the operator's registry

fn reconciles(metrics: &Metrics, controller: &'static str, outcome: &'static str) -> u64 {
    metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller,
            outcome,
        })
        .get()
}

#[derive(Clone, Copy, Default)]
struct Counts {
    ok: [u64; 2],
    errors: [u64; 2],
}

fn counts(metrics: &Metrics) -> Counts {
    let mut c = Counts::default();
    for (i, controller) in CONTROLLERS.into_iter().enumerate() {
        c.ok[i] = reconciles(metrics, controller, "ok");
        c.errors[i] = reconciles(metrics, controller, "error");
    }
    c
}

fn counts_delta(before: Counts, after: Counts) -> String {
    CONTROLLERS
        .iter()
        .enumerate()
        .map(|(i, controller)| {
            format!(
                "{controller} {} ok / {} errors",
                after.ok[i] - before.ok[i],
                after.errors[i] - before.errors[i]
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mean and bucket-bounded median/p99 of one controller's reconcile durations, from the text
/// exposition (upper bounds of the histogram's buckets, which double from 1 ms).
fn duration_summary(metrics: &Metrics, controller: &str) -> String {
    let text = metrics.encode().unwrap_or_default();
    let label = format!("controller=\"{controller}\"");
    let value = |suffix: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tributary_operator_reconcile_duration_seconds_{suffix}{{"
                )) && l.contains(&label)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (value("sum"), value("count"));
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("tributary_operator_reconcile_duration_seconds_bucket{")
                && l.contains(&label)
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n >= q * count)
            .map_or(f64::NAN, |(le, _)| *le)
    };
    let bound = |s: f64| {
        if s.is_finite() {
            format!("≤ {:.0} ms", s * 1e3)
        } else {
            "> 33 s".to_owned()
        }
    };
    if count == 0.0 {
        return format!("{controller}: no reconciles");
    }
    format!(
        "{controller}: {count:.0} reconciles, mean {:.1} ms, p50 {}, p99 {}",
        sum / count * 1e3,
        bound(quantile(0.5)),
        bound(quantile(0.99)),
    )
}

// ---------------------------------------------------------------------------------------------
// Latencies

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Run,
    Contributor,
}

/// When the bench's watch first saw a status with `observedGeneration == generation`, by
/// (kind, name, generation).
type Seen = Arc<Mutex<HashMap<(Kind, String, i64), Instant>>>;

/// Nearest-rank percentile of latencies sorted ascending, unfinished ones (None) last.
fn percentile(sorted: &[Option<Duration>], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return Some(Duration::ZERO);
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "unfinished".to_owned(),
        |d| format!("{:.0}", d.as_secs_f64() * 1e3),
    )
}

/// A table row: objects that finished / all, percentiles and max (ms), the phase's wall time.
fn row(label: &str, mut samples: Vec<Option<Duration>>, wall: Option<Duration>) -> String {
    samples.sort_by_key(|d| d.unwrap_or(Duration::MAX));
    let done = samples.iter().filter(|d| d.is_some()).count();
    let objects = if done == samples.len() {
        done.to_string()
    } else {
        format!("{done} of {}", samples.len())
    };
    format!(
        "| {label} | {objects} | {} | {} | {} | {} | {} |",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
        wall.map_or_else(|| "–".to_owned(), |w| format!("{:.1} s", w.as_secs_f64())),
    )
}

/// Watches `api` and records the first time each (name, generation) has a status whose
/// observedGeneration is that generation. Signals `ready` once the initial list is done.
fn spawn_status_watch<K>(
    api: Api<K>,
    kind: Kind,
    observed: fn(&K) -> Option<i64>,
    seen: Seen,
    ready: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let object = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                Ok(watcher::Event::InitDone) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("bench watch of {kind:?}: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            let generation = object.meta().generation;
            if let Some(g) = observed(&object).filter(|g| Some(*g) == generation) {
                seen.lock()
                    .unwrap()
                    .entry((kind, object.name_any(), g))
                    .or_insert(now);
            }
        }
    })
}

/// Waits until every key has been seen; after `timeout`, says how many were not, with examples.
async fn wait_seen(
    seen: &Seen,
    keys: &[(Kind, String, i64)],
    timeout: Duration,
    what: &str,
) -> Option<String> {
    let start = Instant::now();
    let mut progress = start;
    loop {
        if progress.elapsed() >= Duration::from_secs(30) {
            progress = Instant::now();
            let done = {
                let seen = seen.lock().unwrap();
                keys.iter().filter(|k| seen.contains_key(*k)).count()
            };
            println!(
                "  {what}: {done} of {} statuses after {:.0} s",
                keys.len(),
                start.elapsed().as_secs_f64()
            );
        }
        let missing: Vec<String> = {
            let seen = seen.lock().unwrap();
            keys.iter()
                .filter(|k| !seen.contains_key(*k))
                .map(|(kind, name, g)| format!("{kind:?} {name} (generation {g})"))
                .collect()
        };
        if missing.is_empty() {
            return None;
        }
        if start.elapsed() > timeout {
            return Some(format!(
                "{what}: after {} s, {} of {} objects still have no status for their generation, e.g. {}",
                timeout.as_secs(),
                missing.len(),
                keys.len(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and teardown

/// Installs the CRDs that are missing (create; 1.20 has SSA only in beta) and waits for them to
/// be Established. CRDs already there are left as they are.
async fn ensure_crds(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        tributary_crds::training_run_crd()?,
        tributary_crds::contributor_crd()?,
    ] {
        let name = crd.name_any();
        if api.get_opt(&name).await?.is_none() {
            println!("installing CRD {name}");
            api.create(&PostParams::default(), &crd)
                .await
                .with_context(|| format!("creating CRD {name}"))?;
        }
        tokio::time::timeout(
            timeout,
            wait::await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established after {} s", timeout.as_secs()))??;
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("app.kubernetes.io/part-of".into(), "opbench".into())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    // On 1.20 pods are admitted only once the namespace's default ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let start = Instant::now();
    while accounts.get_opt("default").await?.is_none() {
        if start.elapsed() > timeout {
            bail!(
                "namespace {name}: no default ServiceAccount after {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Deletes the namespace and waits for it to go, force-deleting its bound pods meanwhile (no
/// kubelet finalizes them; the cluster's pod reaper would, one kubectl call at a time).
async fn delete_namespace(client: &Client, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let start = Instant::now();
    match namespaces.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("deleting namespace {name}")),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    loop {
        if namespaces.get_opt(name).await?.is_none() {
            println!(
                "namespace {name} deleted in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "namespace {name} still there {} s after its deletion; delete it by hand",
                timeout.as_secs()
            );
        }
        let bound: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
            })
            .map(|p| p.name_any())
            .collect();
        stream::iter(bound)
            .for_each_concurrent(16, |pod| {
                let pods = pods.clone();
                let force = force.clone();
                async move {
                    let _ = pods.delete(&pod, &force).await;
                }
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The load

fn training_run(template: &TrainingRun, name: &str) -> TrainingRun {
    let mut run = template.clone();
    run.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    run
}

fn contributor(template: &Contributor, name: &str, run: &str, replicas: i32) -> Contributor {
    let mut c = template.clone();
    c.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    c.spec.training_run = run.to_owned();
    c.spec.replicas = replicas;
    c
}

enum Job {
    Run(Box<TrainingRun>),
    Contributor(Box<Contributor>),
}

/// Retries a call that failed without an answer or with 429/5xx a few times; a conflict on a
/// retry of a create means the first attempt went through.
async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(e)) if e.code < 429 && e.code != 0 => {
                bail!("{what}: {e}")
            }
            Err(e) if attempt >= 5 => return Err(e).context(what.to_owned()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
        }
    }
}

struct Created {
    kind: Kind,
    name: String,
    generation: i64,
    sent: Instant,
    call: Duration,
}

async fn create(client: &Client, ns: &str, job: Job) -> anyhow::Result<Created> {
    let sent = Instant::now();
    let post = PostParams::default();
    let (kind, name, generation) = match job {
        Job::Run(run) => {
            let api: Api<TrainingRun> = Api::namespaced(client.clone(), ns);
            let name = run.name_any();
            let made = with_retries(&format!("creating TrainingRun {name}"), || {
                api.create(&post, &run)
            })
            .await?;
            (Kind::Run, name, made.metadata.generation.unwrap_or(1))
        }
        Job::Contributor(c) => {
            let api: Api<Contributor> = Api::namespaced(client.clone(), ns);
            let name = c.name_any();
            let made = with_retries(&format!("creating Contributor {name}"), || {
                api.create(&post, &c)
            })
            .await?;
            (
                Kind::Contributor,
                name,
                made.metadata.generation.unwrap_or(1),
            )
        }
    };
    Ok(Created {
        kind,
        name,
        generation,
        sent,
        call: sent.elapsed(),
    })
}

/// Starts the controllers on their own runtime (worker threads: one per CPU, as the operator
/// binary) and client; they stop when `stop` fires.
fn start_controllers(
    namespace: String,
    metrics: Arc<Metrics>,
    poll: Duration,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("operator")
            .build()?;
        runtime.block_on(async move {
            let client = controller::client().await?;
            let parts = Parts {
                images: Images {
                    coordinator: COORDINATOR_IMAGE.into(),
                    worker: WORKER_IMAGE.into(),
                },
                probe: Arc::new(GrpcProbe),
                metrics,
                identity: IDENTITY.into(),
                poll,
            };
            tokio::select! {
                () = run_controllers(client, Some(&namespace), parts) => {
                    bail!("the controllers stopped by themselves")
                }
                _ = stop => Ok(()),
            }
        })
    })
}

/// Where the figures go (stdout).
struct Report;

impl Report {
    fn line(&mut self, line: String) {
        println!("{line}");
    }
}

async fn load(
    s: &Settings,
    client: &Client,
    ns: &str,
    rss_before: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let cluster = cluster_pids();
    let seen: Seen = Arc::default();
    let (run_ready, run_watching) = tokio::sync::oneshot::channel();
    let (contributor_ready, contributor_watching) = tokio::sync::oneshot::channel();
    let watches = [
        spawn_status_watch(
            Api::<TrainingRun>::namespaced(client.clone(), ns),
            Kind::Run,
            |r| r.status.as_ref()?.observed_generation,
            seen.clone(),
            run_ready,
        ),
        spawn_status_watch(
            Api::<Contributor>::namespaced(client.clone(), ns),
            Kind::Contributor,
            |c| c.status.as_ref()?.observed_generation,
            seen.clone(),
            contributor_ready,
        ),
    ];
    tokio::time::timeout(s.timeout, async {
        let _ = run_watching.await;
        let _ = contributor_watching.await;
    })
    .await
    .context("the bench's watches did not list within the timeout")?;

    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let controllers = start_controllers(ns.to_owned(), metrics.clone(), s.poll, stopped);
    let outcome = measure(s, client, ns, &seen, &metrics, &cluster, rss_before, report).await;
    let _ = stop.send(());
    let joined = tokio::task::spawn_blocking(move || controllers.join())
        .await
        .context("joining the controllers' thread")?;
    for w in watches {
        w.abort();
    }
    outcome?;
    match joined {
        Ok(result) => result,
        Err(_) => bail!("the controllers' thread panicked"),
    }
}

const IDENTITY: &str = "opbench";
const COORDINATOR_IMAGE: &str = "ghcr.io/tributary-dev/tributary-operator:bench";
const WORKER_IMAGE: &str = "ghcr.io/tributary-dev/tributary-worker:bench";

fn images_of(pod: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Vec<String> {
    pod.and_then(|p| p.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Children (their images and generation) with an image other than `image` or a generation past
/// `max_generation`, as one line; none when there are none.
fn rewritten(
    what: &str,
    image: &str,
    max_generation: i64,
    children: impl Iterator<Item = (Vec<String>, i64)>,
) -> Option<String> {
    let (mut bad, mut total, mut highest) = (0, 0, 0);
    for (images, generation) in children {
        total += 1;
        highest = highest.max(generation);
        if images != [image] || generation > max_generation {
            bad += 1;
        }
    }
    (bad > 0).then(|| {
        format!(
            "{bad} of {total} {what} have another image or were rewritten (max generation {highest})"
        )
    })
}

/// Any other Tributary operator that watches this namespace (one watching all namespaces, say)
/// reconciles the same objects: it doubles the load and, with other images, rewrites every
/// child on each reconcile. Its traces: children with images other than the bench's, events
/// from another instance, and children whose generation grew without a spec change of ours
/// (a coordinator Deployment never changes here: generation 1; a worker StatefulSet is scaled
/// once: generation 2 at most).
async fn foreign_writers(client: &Client, ns: &str) -> anyhow::Result<Option<String>> {
    let mut found = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployments = deployments.list(&ListParams::default()).await?.items;
    found.extend(rewritten(
        "coordinator Deployments",
        COORDINATOR_IMAGE,
        1,
        deployments.iter().map(|d| {
            let template = d.spec.as_ref().map(|s| &s.template);
            (images_of(template), d.metadata.generation.unwrap_or(0))
        }),
    ));
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let statefulsets = statefulsets.list(&ListParams::default()).await?.items;
    found.extend(rewritten(
        "worker StatefulSets",
        WORKER_IMAGE,
        2,
        statefulsets.iter().map(|d| {
            let template = d.spec.as_ref().map(|s| &s.template);
            (images_of(template), d.metadata.generation.unwrap_or(0))
        }),
    ));
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let foreign: std::collections::BTreeSet<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some(tributary_operator::controller::MANAGER)
        })
        .filter_map(|e| e.reporting_instance)
        .filter(|i| i != IDENTITY)
        .collect();
    if !foreign.is_empty() {
        found.push(format!("events from other operator instances: {foreign:?}"));
    }
    Ok((!found.is_empty()).then(|| found.join("; ")))
}

fn keys_of(made: &[Created]) -> Vec<(Kind, String, i64)> {
    made.iter()
        .map(|c| (c.kind, c.name.clone(), c.generation))
        .collect()
}

/// Runs the phases and prints the figures. A phase whose statuses do not all arrive within the
/// timeout is reported with its unfinished objects and fails the bench; the scale phase runs
/// anyway, the settle phase only after two complete phases.
#[allow(clippy::too_many_arguments)]
async fn measure(
    s: &Settings,
    client: &Client,
    ns: &str,
    seen: &Seen,
    metrics: &Metrics,
    cluster: &[(&'static str, String)],
    rss_before: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let run_template: TrainingRun =
        serde_yaml::from_str(TRAINING_RUN_YAML).context("examples/trainingrun.yaml")?;
    let contributor_template: Contributor =
        serde_yaml::from_str(CONTRIBUTOR_YAML).context("examples/contributor.yaml")?;
    // From sending the call to the first status of the generation it made.
    let latency = |kind: Option<Kind>, of: &[Created]| {
        let seen = seen.lock().unwrap();
        of.iter()
            .filter(|c| kind.is_none_or(|k| k == c.kind))
            .map(|c| {
                seen.get(&(c.kind, c.name.clone(), c.generation))
                    .map(|t| t.saturating_duration_since(c.sent))
            })
            .collect::<Vec<_>>()
    };
    let calls = |of: &[Created]| of.iter().map(|c| Some(c.call)).collect::<Vec<_>>();
    let mut rows = Vec::new();
    let mut phases = Vec::new();

    // Phase 1: create, run by run (the run, then its contributors).
    let mut jobs = Vec::new();
    for i in 0..s.runs {
        let run = format!("run-{i:03}");
        jobs.push(Job::Run(Box::new(training_run(&run_template, &run))));
        for j in 0..s.contributors {
            jobs.push(Job::Contributor(Box::new(contributor(
                &contributor_template,
                &format!("{run}-c{j:02}"),
                &run,
                1 + (j % 2) as i32,
            ))));
        }
    }
    let total = jobs.len();
    let (cpu0, counts0) = (cpu_sample(cluster), counts(metrics));
    let start = Instant::now();
    let created: Vec<Created> = stream::iter(jobs)
        .map(|job| create(client, ns, job))
        .buffer_unordered(s.concurrency)
        .try_collect()
        .await?;
    let create_wall = start.elapsed();
    println!(
        "created {total} objects in {:.1} s; waiting for their status",
        create_wall.as_secs_f64()
    );
    let create_failure = wait_seen(seen, &keys_of(&created), s.timeout, "after creating").await;
    let created_wall = start.elapsed();
    let (cpu1, counts1) = (cpu_sample(cluster), counts(metrics));
    let rss_created = proc_status_kib("VmRSS");
    rows.push(row(
        "create call (client)",
        calls(&created),
        Some(create_wall),
    ));
    rows.push(row(
        "create → status, TrainingRun",
        latency(Some(Kind::Run), &created),
        None,
    ));
    rows.push(row(
        "create → status, Contributor",
        latency(Some(Kind::Contributor), &created),
        None,
    ));
    rows.push(row(
        "create → status, all",
        latency(None, &created),
        Some(created_wall),
    ));
    phases.push(("create", created_wall, cpu0, cpu1.clone(), counts0, counts1));
    println!("create phase done");

    // Phase 2: scale every Contributor (+1 replica). It concerns Contributors only, so it runs
    // even when some TrainingRuns are still without a status.
    let mut rss_settle_max = 0;
    let scale_failure = {
        let contributors: Api<Contributor> = Api::namespaced(client.clone(), ns);
        let targets: Vec<(String, i32)> = created
            .iter()
            .filter(|c| c.kind == Kind::Contributor)
            .map(|c| {
                let j: usize = c.name.rsplit("-c").next().unwrap().parse().unwrap();
                (c.name.clone(), 2 + (j % 2) as i32)
            })
            .collect();
        let (cpu2, counts2) = (cpu_sample(cluster), counts(metrics));
        let start = Instant::now();
        let patched: Vec<Created> = stream::iter(targets)
            .map(|(name, replicas)| {
                let api = contributors.clone();
                async move {
                    let sent = Instant::now();
                    let patch =
                        Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
                    let params = PatchParams::default();
                    let made = with_retries(&format!("scaling Contributor {name}"), || {
                        api.patch(&name, &params, &patch)
                    })
                    .await?;
                    anyhow::Ok(Created {
                        kind: Kind::Contributor,
                        name,
                        generation: made.metadata.generation.unwrap_or(0),
                        sent,
                        call: sent.elapsed(),
                    })
                }
            })
            .buffer_unordered(s.concurrency)
            .try_collect()
            .await?;
        let patch_wall = start.elapsed();
        let scale_failure = wait_seen(seen, &keys_of(&patched), s.timeout, "after scaling").await;
        let patched_wall = start.elapsed();
        let (cpu3, counts3) = (cpu_sample(cluster), counts(metrics));
        rows.push(row(
            "scale patch call (client)",
            calls(&patched),
            Some(patch_wall),
        ));
        rows.push(row(
            "scale → observedGeneration, Contributor",
            latency(None, &patched),
            Some(patched_wall),
        ));
        phases.push(("scale", patched_wall, cpu2, cpu3.clone(), counts2, counts3));

        // Phase 3: the controllers keep requeueing every poll; sample the RSS meanwhile.
        if create_failure.is_none() && scale_failure.is_none() {
            println!("scale phase done; settling for {} s", s.settle.as_secs());
            let start = Instant::now();
            while start.elapsed() < s.settle {
                tokio::time::sleep(Duration::from_secs(1)).await;
                rss_settle_max = rss_settle_max.max(proc_status_kib("VmRSS"));
            }
            let (cpu4, counts4) = (cpu_sample(cluster), counts(metrics));
            phases.push(("settle", start.elapsed(), cpu3, cpu4, counts3, counts4));
        }
        scale_failure
    };
    let rss_after = proc_status_kib("VmRSS");
    let hwm = proc_status_kib("VmHWM");

    report.line(format!(
        "\n{} TrainingRuns × {} Contributors = {total} objects, namespace {ns}, {} creates in flight, poll {} s",
        s.runs,
        s.contributors,
        s.concurrency,
        s.poll.as_secs()
    ));
    report.line("\n| latency (ms) | objects | p50 | p90 | p99 | max | phase wall time |".into());
    report.line("|---|---|---|---|---|---|---|".into());
    for r in rows {
        report.line(r);
    }
    report.line(String::new());
    for (name, wall, cpu_start, cpu_end, start, end) in &phases {
        let n: u64 = (0..2)
            .map(|i| end.ok[i] + end.errors[i] - start.ok[i] - start.errors[i])
            .sum();
        report.line(format!(
            "{name} phase ({:.1} s): reconciles {} = {:.1}/s; CPU {}",
            wall.as_secs_f64(),
            counts_delta(*start, *end),
            n as f64 / wall.as_secs_f64(),
            cpu_delta(cpu_start, cpu_end),
        ));
    }
    // Runs refresh their status every poll; Contributors resync every 6 polls (their changes
    // arrive as watch events).
    let (runs, contributors) = (s.runs as f64, (s.runs * s.contributors) as f64);
    report.line(format!(
        "periodic requeues asked for: {runs} runs / {} s + {contributors} Contributors / {} s = {:.1} reconciles/s",
        s.poll.as_secs(),
        6 * s.poll.as_secs(),
        runs / s.poll.as_secs_f64() + contributors / (6.0 * s.poll.as_secs_f64())
    ));
    report.line(format!(
        "reconciles, total: {}",
        counts_delta(Counts::default(), counts(metrics))
    ));
    for controller in CONTROLLERS {
        report.line(format!(
            "reconcile duration, {}",
            duration_summary(metrics, controller)
        ));
    }
    report.line(format!(
        "RSS: before the controllers {:.1} MiB; after the create phase {:.1} MiB; peak (VmHWM) {:.1} MiB; max while settling {:.1} MiB; at the end {:.1} MiB (+{:.1} MiB)",
        mib(rss_before),
        mib(rss_created),
        mib(hwm),
        mib(rss_settle_max),
        mib(rss_after),
        mib(rss_after.saturating_sub(rss_before)),
    ));
    let foreign = foreign_writers(client, ns).await?;
    match &foreign {
        Some(traces) => report.line(format!(
            "ISOLATION CHECK FAILED — another operator reconciled this namespace, the figures are not the operator's alone: {traces}"
        )),
        None => report.line(
            "isolation check: every coordinator Deployment and worker StatefulSet has the bench's image and its expected generation; no events from other operator instances".into(),
        ),
    }
    let failure: Vec<String> = [create_failure, scale_failure]
        .into_iter()
        .flatten()
        .collect();
    match (failure.is_empty(), foreign) {
        (false, _) => bail!(failure.join("; ")),
        (true, Some(traces)) => bail!("another operator reconciled namespace {ns}: {traces}"),
        (true, None) => Ok(()),
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tributary_telemetry::init_logging();
    }
    let s = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench")
        .build()?;
    runtime.block_on(async {
        let client = Client::try_default()
            .await
            .context("connecting to the Kubernetes API (KUBECONFIG)")?;
        let version = client.apiserver_version().await?;
        println!("API server {}", version.git_version);
        ensure_crds(&client, s.timeout).await?;
        let ns = format!(
            "opbench-{}",
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()
        );
        create_namespace(&client, &ns, s.timeout).await?;
        let rss_before = proc_status_kib("VmRSS");
        let mut report = Report;
        let outcome = load(&s, &client, &ns, rss_before, &mut report).await;
        if let Err(e) = &outcome {
            eprintln!("bench failed: {e:#}; deleting namespace {ns}");
        }
        let deleted = delete_namespace(&client, &ns, s.timeout).await;
        outcome?;
        deleted
    })
}
