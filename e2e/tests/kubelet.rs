//! The process kubelet against the dev cluster (a real 1.20 control plane with the fake node
//! gpu-node-0): Deployments, Services and bare Pods run as local shell and python processes.
//! Each test runs in its own `kubelet-test-*` namespace with a kubelet scoped to it (tests run
//! in parallel on one node), is bounded, and deletes its namespace at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_e2e::kubelet::{Namespaces, ProcessKubelet};

const NODE: &str = "gpu-node-0";
const TEST_BUDGET: Duration = Duration::from_secs(50);

fn devcluster_home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/k8s-devcluster")
}

/// KUBECONFIG, defaulting to the dev cluster's. Set before any thread reads the environment.
fn kubeconfig() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECONFIG") {
        return PathBuf::from(path);
    }
    let path = devcluster_home().join("kubeconfig");
    // SAFETY: called first thing in each test, before the runtime and any other thread start.
    unsafe { std::env::set_var("KUBECONFIG", &path) };
    path
}

async fn reachable(client: &Client) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await,
        Ok(Ok(_))
    )
}

/// A client of the dev cluster, starting it (up.sh is a no-op when it runs) if unreachable.
async fn cluster() -> Client {
    if let Ok(client) = Client::try_default().await
        && reachable(&client).await
    {
        return client;
    }
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s-devcluster/up.sh");
    let status = tokio::process::Command::new("bash")
        .arg(&up)
        .status()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", up.display()));
    assert!(status.success(), "{} failed: {status}", up.display());
    let client = Client::try_default()
        .await
        .expect("a client for KUBECONFIG");
    assert!(
        reachable(&client).await,
        "the dev cluster is not reachable after up.sh"
    );
    client
}

/// What a test body gets: a client, its namespace and a kubelet running that namespace.
#[derive(Clone)]
struct Ctx {
    client: Client,
    ns: String,
    kubelet: Arc<ProcessKubelet>,
}

impl Ctx {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates an object from YAML in the test namespace (`__NS__` in it is replaced).
    async fn create<K>(&self, yaml: &str) -> K
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let value: serde_json::Value =
            serde_yaml::from_str(&yaml.replace("__NS__", &self.ns)).unwrap();
        let object: K = serde_json::from_value(value).unwrap();
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap()
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.api::<Pod>().get_opt(name).await.unwrap()
    }

    async fn pods_labelled(&self, selector: &str) -> Vec<Pod> {
        let params = ListParams::default().labels(selector);
        self.api::<Pod>().list(&params).await.unwrap().items
    }

    fn log(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(self.kubelet.log_path(&self.ns, pod, container)).unwrap_or_default()
    }
}

/// Polls `check` every 100 ms until it gives a value, failing after `within`.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
            return value;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap()
}

/// `key=value` lines of a log.
fn field<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Creates `kubelet-test-<label>-<unique>`.
async fn create_namespace(client: &Client, label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("kubelet-test-{label}-{:x}", std::process::id() ^ nanos);
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    ns
}

/// Runs `body` in a fresh namespace with a kubelet for it; deletes the namespace afterwards,
/// whether the body passed or not.
fn run_test<F, Fut>(label: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    kubeconfig();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tributary_e2e=debug")
        .with_test_writer()
        .try_init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let start = Instant::now();
        let client = cluster().await;
        let ns = create_namespace(&client, label).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let root = tempfile::tempdir().unwrap();
        let kubelet = ProcessKubelet::start_with(
            client.clone(),
            NODE,
            root.path(),
            vec![],
            Namespaces::Only(vec![ns.clone()]),
        )
        .await
        .unwrap();
        let ctx = Ctx {
            client: client.clone(),
            ns: ns.clone(),
            kubelet: Arc::new(kubelet),
        };
        // On 1.20 a pod that automounts a token is rejected until the SA has its token Secret.
        let accounts: Api<ServiceAccount> = ctx.api();
        wait_for(
            "the default ServiceAccount's token",
            Duration::from_secs(10),
            || async {
                let sa = accounts.get_opt("default").await.ok()??;
                sa.secrets.filter(|s| !s.is_empty()).map(|_| ())
            },
        )
        .await;

        let outcome = AssertUnwindSafe(tokio::time::timeout(TEST_BUDGET, body(ctx.clone())))
            .catch_unwind()
            .await;
        if outcome.as_ref().map_or(true, |r| !matches!(r, Ok(Ok(())))) {
            eprintln!("--- kubelet root {} after failure:", root.path().display());
            for entry in walk(root.path()) {
                if entry.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&entry).unwrap_or_default();
                    eprintln!("--- {}:\n{text}", entry.display());
                }
            }
        }
        // A terminating namespace admits no new pods; deleting the pods now (rather than
        // waiting for the namespace controller) lets this kubelet stop them and finish their
        // deletion before it goes (bounded).
        let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        let pods = ctx.api::<Pod>();
        let _ = pods
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        for _ in 0..100 {
            if pods
                .list(&ListParams::default())
                .await
                .map_or(true, |l| l.items.is_empty())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(ctx);
        eprintln!("{label}: {:.1} s in all", start.elapsed().as_secs_f64());
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(Err(_)) => panic!("{label} took over {TEST_BUDGET:?}"),
            Ok(Ok(Err(e))) => panic!("{label}: {e:#}"),
            Ok(Ok(Ok(()))) => {}
        }
    });
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn kubectl() -> PathBuf {
    let beside = kubeconfig().parent().unwrap().join("bin/kubectl");
    if beside.exists() {
        beside
    } else {
        devcluster_home().join("bin/kubectl")
    }
}

#[test]
fn deployment_pod_gets_its_env_args_mounts_and_service_account() {
    run_test("env", |t| async move {
        t.create::<ConfigMap>(
            r#"
metadata: {name: cfg}
data: {greeting: hello, run.yaml: "steps: 3"}
"#,
        )
        .await;
        t.create::<Secret>("metadata: {name: keys}\nstringData: {seed: 00ff}\n")
            .await;
        // The pod's ServiceAccount may read ConfigMaps: proves its kubeconfig carries its token.
        t.create::<Role>(
            r#"
metadata: {name: read-cm}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
"#,
        )
        .await;
        t.create::<RoleBinding>(
            r#"
metadata: {name: read-cm}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-cm}
subjects: [{kind: ServiceAccount, name: default, namespace: __NS__}]
"#,
        )
        .await;
        let script = r#"
echo "name=$1"; echo "run=$(cat "$2")"; echo "seed=$(cat "$3")"; echo "listen=$4"
echo "pod_ip=$POD_IP"; echo "namespace=$POD_NAMESPACE"; echo "node=$NODE"; echo "sa=$SA"
echo "greeting=$GREETING"; echo "seed_env=$SEED"; echo "escaped=$ESCAPED"
echo "item=$(cat /etc/cfg-items/g/hello.txt)"; echo "item_mode=$(stat -c %a /etc/cfg-items/g/hello.txt)"
echo "seed_mode=$(stat -c %a /etc/keys/seed)"
echo data > "$DATA" && echo "data_file=$(cat "$DATA")"
echo "kubeconfig_set=${KUBECONFIG:+yes}"; echo "leaked=${CARGO_PKG_NAME:-none}"
echo "sa_read=$("$KUBECTL" get configmap cfg -o jsonpath='{.data.greeting}' 2>&1)"
echo "sa_namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
echo done=1
while :; do sleep 1; done
"#;
        let deployment = format!(
            r#"
metadata: {{name: app}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      containers:
      - name: main
        image: any/image:1
        command: [/bin/sh]
        args: ["-c", {script}, sh, "$(POD_NAME)", /etc/cfg/run.yaml, /etc/keys/seed, "$(LISTEN)"]
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
        - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
        - {{name: SA, valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}}}
        - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}}}
        - {{name: SEED, valueFrom: {{secretKeyRef: {{name: keys, key: seed}}}}}}
        - {{name: LISTEN, value: "$(POD_IP):50051"}}
        - {{name: ESCAPED, value: "$$(POD_IP)"}}
        - {{name: DATA, value: /var/lib/data/file}}
        - {{name: KUBECTL, value: {kubectl}}}
        volumeMounts:
        - {{name: cfg, mountPath: /etc/cfg}}
        - {{name: cfg-items, mountPath: /etc/cfg-items}}
        - {{name: keys, mountPath: /etc/keys}}
        - {{name: data, mountPath: /var/lib/data}}
      volumes:
      - {{name: cfg, configMap: {{name: cfg}}}}
      - {{name: cfg-items, configMap: {{name: cfg, items: [{{key: greeting, path: g/hello.txt, mode: 256}}]}}}}
      - {{name: keys, secret: {{secretName: keys, defaultMode: 288}}}}
      - {{name: data, emptyDir: {{}}}}
"#,
            script = serde_json::to_string(script).unwrap(),
            kubectl = serde_json::to_string(&kubectl()).unwrap(),
        );
        t.create::<Deployment>(&deployment).await;

        let deployments: Api<Deployment> = t.api();
        wait_for("availableReplicas=1", Duration::from_secs(30), || async {
            let d = deployments.get("app").await.ok()?;
            (d.status?.available_replicas? == 1).then_some(())
        })
        .await;
        let pod = t
            .pods_labelled("app=app")
            .await
            .pop()
            .context("the Deployment's pod")?;
        let pod_name = name(&pod);
        let ip = pod_ip(&pod);
        assert!(ip.starts_with("127.0.") && ip != "127.0.0.1", "podIP {ip}");
        assert_eq!(phase(&pod), "Running");
        let log = wait_for("the pod's report", Duration::from_secs(20), || async {
            let log = t.log(&pod_name, "main");
            log.contains("done=1").then_some(log)
        })
        .await;
        eprintln!("{log}");
        let expect =
            |key: &str, value: &str| assert_eq!(field(&log, key), Some(value), "{key} in\n{log}");
        expect("name", &pod_name);
        expect("run", "steps: 3");
        expect("seed", "00ff");
        expect("listen", &format!("{ip}:50051"));
        expect("pod_ip", &ip);
        expect("namespace", &t.ns);
        expect("node", NODE);
        expect("sa", "default");
        expect("greeting", "hello");
        expect("seed_env", "00ff");
        expect("escaped", "$(POD_IP)");
        expect("item", "hello");
        expect("item_mode", "400");
        expect("seed_mode", "440");
        expect("data_file", "data");
        expect("kubeconfig_set", "yes");
        expect("leaked", "none");
        expect("sa_read", "hello");
        expect("sa_namespace", &t.ns);
        let running = t.kubelet.pods_running();
        assert!(
            running
                .iter()
                .any(|(ns, p, _)| *ns == t.ns && *p == pod_name),
            "{running:?}"
        );
        Ok(())
    });
}

#[test]
fn service_host_in_args_reaches_a_ready_pod() {
    run_test("svc", |t| async move {
        t.create::<ConfigMap>("metadata: {name: site}\ndata: {hello.txt: hi from web}\n")
            .await;
        t.create::<Service>(
            r#"
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
        )
        .await;
        t.create::<Pod>(
            r#"
metadata: {name: web, labels: {app: web}}
spec:
  automountServiceAccountToken: false
  containers:
  - name: web
    image: python:3
    command: [python3, -m, http.server, --bind, "$(POD_IP)", "8080"]
    workingDir: /srv
    ports: [{name: http, containerPort: 8080}]
    env: [{name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]
    volumeMounts: [{name: site, mountPath: /srv}]
  volumes: [{name: site, configMap: {name: site}}]
"#,
        )
        .await;
        // Created at once: its start waits until the Service has a Ready pod.
        t.create::<Pod>(
            r#"
metadata: {name: client}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - name: client
    image: python:3
    command:
    - python3
    - -c
    - |
      import sys, time, urllib.request
      print("url=" + sys.argv[1], flush=True)
      for attempt in range(50):
          try:
              body = urllib.request.urlopen(sys.argv[1] + "/hello.txt", timeout=5).read().decode()
              break
          except OSError:
              time.sleep(0.1)
      print("body=" + body)
    - http://web.__NS__.svc:80
"#,
        )
        .await;
        let client = wait_for(
            "the client pod to succeed",
            Duration::from_secs(40),
            || async {
                let pod = t.pod("client").await?;
                assert_ne!(
                    phase(&pod),
                    "Failed",
                    "client failed:\n{}",
                    t.log("client", "client")
                );
                (phase(&pod) == "Succeeded").then_some(pod)
            },
        )
        .await;
        let web = t.pod("web").await.context("the web pod")?;
        assert!(is_ready(&web));
        let log = t.log("client", "client");
        assert_eq!(
            field(&log, "url"),
            Some(format!("http://{}:8080", pod_ip(&web)).as_str()),
            "{log}"
        );
        assert_eq!(field(&log, "body"), Some("hi from web"), "{log}");
        assert_ne!(pod_ip(&client), pod_ip(&web));
        Ok(())
    });
}

fn container_status(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

#[test]
fn killed_process_is_restarted_and_counted() {
    run_test("kill", |t| async move {
        t.create::<Pod>(
            r#"
metadata: {name: crashy}
spec:
  automountServiceAccountToken: false
  containers:
  - {name: c, image: busybox, command: [/bin/sh, -c, "echo started; while :; do sleep 1; done"]}
"#,
        )
        .await;
        wait_for("Ready", Duration::from_secs(20), || async {
            t.pod("crashy").await.filter(is_ready)
        })
        .await;
        let pid_of = || {
            t.kubelet
                .pods_running()
                .into_iter()
                .find(|(ns, p, _)| *ns == t.ns && p == "crashy")
                .map(|(.., pid)| pid)
        };
        let first = pid_of().context("crashy's process")?;
        t.kubelet.kill(&t.ns, "crashy")?;
        let pod = wait_for(
            "restartCount 1 and Ready again",
            Duration::from_secs(20),
            || async {
                let pod = t.pod("crashy").await?;
                (is_ready(&pod) && container_status(&pod)?.restart_count == 1).then_some(pod)
            },
        )
        .await;
        let status = container_status(&pod).unwrap();
        assert!(status.state.unwrap().running.is_some());
        let last = status
            .last_state
            .unwrap()
            .terminated
            .expect("lastState.terminated");
        assert_eq!(last.exit_code, 137);
        assert_eq!(last.signal, Some(9));
        let second = pid_of().context("crashy's new process")?;
        assert_ne!(first, second);
        assert!(
            !Path::new(&format!("/proc/{first}")).exists(),
            "the killed process lingers"
        );
        assert_eq!(t.log("crashy", "c").matches("started").count(), 2);
        Ok(())
    });
}

#[test]
fn deleting_a_deployment_terms_its_process_and_removes_the_pod() {
    run_test("del", |t| async move {
        t.create::<Deployment>(
            r#"
metadata: {name: svc}
spec:
  replicas: 1
  selector: {matchLabels: {app: svc}}
  template:
    metadata: {labels: {app: svc}}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: c
        image: busybox
        command: [/bin/sh, -c]
        args: ["trap 'echo got-sigterm; exit 0' TERM; echo up; while :; do sleep 0.1; done"]
"#,
        )
        .await;
        let pod = wait_for("the pod Ready", Duration::from_secs(20), || async {
            t.pods_labelled("app=svc").await.into_iter().find(is_ready)
        })
        .await;
        let pod_name = name(&pod);
        let pid = t.kubelet.pods_running()[0].2;
        let deployments: Api<Deployment> = t.api();
        deployments.delete("svc", &DeleteParams::default()).await?;
        // The pod's grace period is 30 s, and this kubelet SIGKILLs at most 30 s after SIGTERM:
        // one that waited out the grace instead of deleting the pod once its process exited
        // never meets this wait (a hang guard, not a speed bound: deletion follows the exit).
        wait_for("the pod deleted", Duration::from_secs(25), || async {
            t.pod(&pod_name).await.is_none().then_some(())
        })
        .await;
        assert!(t.kubelet.pods_running().is_empty());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the process lingers"
        );
        let log = t.log(&pod_name, "c");
        assert!(log.contains("got-sigterm"), "no SIGTERM in:\n{log}");
        Ok(())
    });
}

#[test]
fn never_restarted_pod_reports_its_exit_code() {
    run_test("exit", |t| async move {
        t.create::<Pod>(
            r#"
metadata: {name: once}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, command: [/bin/sh, -c, "echo bye; exit 3"]}
"#,
        )
        .await;
        let pod = wait_for("phase Failed", Duration::from_secs(20), || async {
            t.pod("once").await.filter(|p| phase(p) == "Failed")
        })
        .await;
        let status = container_status(&pod).unwrap();
        let terminated = status.state.unwrap().terminated.expect("state.terminated");
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(status.restart_count, 0);
        assert!(!is_ready(&pod));
        assert_eq!(t.log("once", "c").trim(), "bye");
        if !t.kubelet.pods_running().is_empty() {
            bail!("a process still runs: {:?}", t.kubelet.pods_running());
        }
        Ok(())
    });
}

#[test]
fn init_container_late_config_map_and_on_failure_restart() {
    run_test("init", |t| async move {
        t.create::<Pod>(
            r#"
metadata: {name: job}
spec:
  automountServiceAccountToken: false
  restartPolicy: OnFailure
  initContainers:
  - {name: init, image: busybox, command: [/bin/sh, -c, "echo init > /work/init"],
     volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - name: main
    image: busybox
    command: [/bin/sh, -c]
    args: ['cat /work/init; [ -f /work/once ] || { touch /work/once; exit 1; }; echo "greeting=$GREETING"']
    env: [{name: GREETING, valueFrom: {configMapKeyRef: {name: late, key: greeting}}}]
    volumeMounts: [{name: work, mountPath: /work}]
  volumes: [{name: work, emptyDir: {}}]
"#,
        )
        .await;
        let waiting_reason = |pod: &Pod| {
            let state = container_status(pod)?.state?;
            state.waiting?.reason
        };
        wait_for(
            "CreateContainerConfigError",
            Duration::from_secs(20),
            || async {
                let pod = t.pod("job").await?;
                (waiting_reason(&pod).as_deref() == Some("CreateContainerConfigError"))
                    .then_some(())
            },
        )
        .await;
        let pod = t.pod("job").await.context("the pod")?;
        let init = pod
            .status
            .as_ref()
            .unwrap()
            .init_container_statuses
            .as_ref()
            .unwrap()[0]
            .clone();
        assert_eq!(
            init.state
                .unwrap()
                .terminated
                .expect("init terminated")
                .exit_code,
            0
        );
        assert_eq!(phase(&pod), "Pending");
        t.create::<ConfigMap>("metadata: {name: late}\ndata: {greeting: late-hello}\n")
            .await;
        let pod = wait_for("phase Succeeded", Duration::from_secs(20), || async {
            t.pod("job").await.filter(|p| phase(p) == "Succeeded")
        })
        .await;
        let status = container_status(&pod).unwrap();
        assert_eq!(status.restart_count, 1);
        assert_eq!(status.last_state.unwrap().terminated.unwrap().exit_code, 1);
        assert_eq!(status.state.unwrap().terminated.unwrap().exit_code, 0);
        let log = t.log("job", "main");
        assert_eq!(log.matches("init").count(), 2, "{log}");
        assert_eq!(field(&log, "greeting"), Some("late-hello"), "{log}");
        Ok(())
    });
}

#[test]
fn statefulset_pods_get_their_keys_and_come_back_after_deletion() {
    run_test("sts", |t| async move {
        t.create::<Secret>(
            "metadata: {name: w-keys}\nstringData: {w-0: seed-zero, w-1: seed-one}\n",
        )
        .await;
        // The contract's worker shape: the key file named by $(POD_NAME) in a secret volume.
        t.create::<k8s_openapi::api::apps::v1::StatefulSet>(
            r#"
metadata: {name: w}
spec:
  replicas: 2
  podManagementPolicy: Parallel
  serviceName: w
  selector: {matchLabels: {app: w}}
  template:
    metadata: {labels: {app: w}}
    spec:
      automountServiceAccountToken: false
      containers:
      - name: worker
        image: busybox
        command: [/bin/sh, -c, 'echo "key=$(cat "$1")"; while :; do sleep 1; done', sh]
        args: [/var/run/tributary/keys/$(POD_NAME)]
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        volumeMounts: [{name: keys, mountPath: /var/run/tributary/keys}]
      volumes: [{name: keys, secret: {secretName: w-keys, defaultMode: 256}}]
"#,
        )
        .await;
        let pods = wait_for("both workers Ready", Duration::from_secs(20), || async {
            let pods = t.pods_labelled("app=w").await;
            (pods.len() == 2 && pods.iter().all(is_ready)).then_some(pods)
        })
        .await;
        assert_ne!(pod_ip(&pods[0]), pod_ip(&pods[1]));
        let key = |pod: &str| {
            let log = t.log(pod, "worker");
            field(&log, "key").map(str::to_owned)
        };
        wait_for("the keys read", Duration::from_secs(5), || async {
            (key("w-0").is_some() && key("w-1").is_some()).then_some(())
        })
        .await;
        assert_eq!(key("w-0").as_deref(), Some("seed-zero"));
        assert_eq!(key("w-1").as_deref(), Some("seed-one"));

        let old_uid = t.pod("w-0").await.unwrap().metadata.uid;
        t.api::<Pod>()
            .delete("w-0", &DeleteParams::default())
            .await?;
        wait_for(
            "w-0 recreated and Ready",
            Duration::from_secs(30),
            || async {
                let pod = t.pod("w-0").await?;
                (pod.metadata.uid != old_uid && is_ready(&pod)).then_some(())
            },
        )
        .await;
        wait_for(
            "the new w-0 read its key",
            Duration::from_secs(5),
            || async {
                let log = t.log("w-0", "worker");
                (log.matches("key=seed-zero").count() == 2).then_some(())
            },
        )
        .await;
        Ok(())
    });
}

#[test]
fn dropping_the_kubelet_kills_its_processes() {
    run_test("drop", |t| async move {
        // A second kubelet, for a second namespace, which the test drops.
        let ns = create_namespace(&t.client, "drop2").await;
        let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
        let outcome = AssertUnwindSafe(async {
            let root = tempfile::tempdir().unwrap();
            let kubelet = ProcessKubelet::start_with(
                t.client.clone(),
                NODE,
                root.path(),
                vec![],
                Namespaces::Only(vec![ns.clone()]),
            )
            .await
            .unwrap();
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "orphan"},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "c", "image": "busybox",
                        "command": ["/bin/sh", "-c", "sleep 300 & while :; do sleep 1; done"]}],
                },
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            wait_for("the pod Ready", Duration::from_secs(20), || async {
                pods.get_opt("orphan").await.ok()?.filter(is_ready)
            })
            .await;
            let pid = kubelet.pods_running()[0].2;
            // The container's process group is led by its main process: the shell and its sleeps.
            let group = pid;
            let members = walk_procs()
                .into_iter()
                .filter(|(_, g)| *g == group)
                .count();
            assert!(members >= 2, "{members} processes in the group");
            drop(kubelet);
            wait_for("the process group gone", Duration::from_secs(5), || async {
                let left = walk_procs().into_iter().any(|(_, pgid)| pgid == group);
                (!left).then_some(())
            })
            .await;
        })
        .catch_unwind()
        .await;
        let grace0 = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        let _ = pods
            .delete_collection(&grace0, &ListParams::default())
            .await;
        let _ = Api::<Namespace>::all(t.client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        Ok(())
    });
}

/// (pid, process group) of every live process on the machine.
fn walk_procs() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the ")" that ends the command name: state, ppid, pgrp, …
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.first() == Some(&"Z") {
            continue; // dead, not yet reaped
        }
        if let Some(pgid) = fields.get(2).and_then(|f| f.parse().ok()) {
            out.push((pid, pgid));
        }
    }
    out
}
