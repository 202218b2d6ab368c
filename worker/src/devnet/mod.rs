//! `tributary-worker devnet`: a whole run on this machine — the coordinator
//! (`tributary-operator coordinator`) and N peers (`tributary-worker join`) as separate
//! processes on 127.0.0.1 — with live progress and a report at the end. Everything lives in
//! `--out`: run again with the same directory to resume a stopped devnet.

mod report;
mod run_spec;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tributary_proto::v1alpha1::exchange_client::ExchangeClient;
use tributary_proto::v1alpha1::{GetStatusRequest, RunStatus};

pub(crate) use report::{DevnetReport, write_plot, write_report};
pub(crate) use run_spec::devnet_run;

#[derive(Debug, Clone, clap::Args)]
pub struct DevnetArgs {
    /// Peer processes.
    #[arg(long, default_value_t = 4)]
    pub peers: u32,
    /// Aggregates to publish before the run ends.
    #[arg(long, default_value_t = 60)]
    pub rounds: u64,
    /// Model preset (tiny, small, 1b, covenant-72b).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Fraction of each chunk's values sent (top-k per 64×64 chunk = density·4096).
    #[arg(long, default_value_t = 1.0 / 64.0)]
    pub density: f64,
    /// Inner steps per round (H).
    #[arg(long)]
    pub inner_steps: Option<u32>,
    /// A TrainingRun manifest to run instead of the generated one (the flags above are then
    /// ignored, except --peers).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Directory of the devnet: the manifest, the coordinator's store, each peer's key and
    /// log, and the report. An existing one resumes.
    #[arg(long, default_value = "reports/devnet")]
    pub out: PathBuf,
    /// libtorch threads per peer.
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Give up if the run has not finished after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// No progress bar (logs only).
    #[arg(long)]
    pub quiet: bool,
}

/// Kills the child processes it holds when dropped (error paths, Ctrl-C).
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            stop(child);
        }
    }
}

/// SIGTERM (the coordinator stops cleanly), then SIGKILL if it lingers.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The binary `name` next to this executable (both are built into the same directory).
pub(crate) fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found next to {}; build it: cargo build --release -p tributary-operator",
            path.display(),
            exe.display()
        );
    }
    Ok(path)
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

pub(crate) fn run(args: DevnetArgs) -> Result<()> {
    if args.peers == 0 {
        bail!("--peers must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let manifest = args.out.join("run.yaml");
    let (run_id, spec) = match &args.run {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            std::fs::write(&manifest, &text)?;
            let run: tributary_crds::TrainingRun = serde_yaml::from_str(&text)
                .with_context(|| format!("{} is not a valid TrainingRun", path.display()))?;
            (run.metadata.name.clone().unwrap_or_default(), run.spec)
        }
        None => {
            let (name, spec) = devnet_run(&args)?;
            if !manifest.exists() {
                std::fs::write(&manifest, run_spec::manifest_yaml(&name, &spec)?)?;
            }
            // A resumed devnet keeps the manifest it started with.
            let text = std::fs::read_to_string(&manifest)?;
            let run: tributary_crds::TrainingRun = serde_yaml::from_str(&text)?;
            (name, run.spec)
        }
    };
    spec.check()
        .with_context(|| format!("the run in {}", manifest.display()))?;
    let total = spec.total_rounds()?.unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let coordinator_dir = args.out.join("coordinator");
    std::fs::create_dir_all(&coordinator_dir)?;
    let _ = std::fs::remove_file(coordinator_dir.join("address"));
    let mut procs = Processes(Vec::new());
    let coordinator = Command::new(sibling_binary("tributary-operator")?)
        .args(["coordinator", "--listen", "127.0.0.1:0", "--run"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(&coordinator_dir)
        .stdin(Stdio::null())
        .stdout(log_file(&args.out.join("coordinator.log"))?)
        .stderr(log_file(&args.out.join("coordinator.log"))?)
        .spawn()
        .context("starting the coordinator")?;
    procs.0.push(("coordinator".into(), coordinator));
    let addr = wait_for_address(&coordinator_dir.join("address"), &mut procs)?;
    let url = format!("http://{addr}");
    let worker = std::env::current_exe()?;
    for i in 0..args.peers {
        let dir = args.out.join(format!("peer-{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new(&worker);
        cmd.args(["join", "--coordinator", &url, "--run-id", &run_id])
            .arg("--key")
            .arg(dir.join("key"))
            .arg("--create-key")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--threads", &args.threads.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("peer.log"))?)
            .stderr(log_file(&dir.join("peer.log"))?);
        if i == 0 {
            // Peer 0 evaluates θ on held-out data and writes the run's checkpoints.
            cmd.args(["--evaluate", "--checkpoint-writer"]);
        }
        procs
            .0
            .push((format!("peer-{i}"), cmd.spawn().context("starting a peer")?));
    }
    let status = runtime.block_on(watch(&url, &args, total, &mut procs))?;
    // Peers exit by themselves once the last aggregate is applied.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, child) in procs.0.iter_mut().filter(|(n, _)| n != "coordinator") {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(None) = child.try_wait() {
            eprintln!("{name} did not exit; stopping it");
        }
    }
    drop(procs);
    let mut report = DevnetReport::build(&args.out, args.peers, &spec, &status, started.elapsed())?;
    report.machine = Some(crate::provenance::Machine::current(args.threads));
    write_report(&args.out, &report)?;
    println!("{}", report.summary());
    Ok(())
}

fn wait_for_address(path: &Path, procs: &mut Processes) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(addr) = std::fs::read_to_string(path) {
            return Ok(addr.trim().to_owned());
        }
        if let Some((_, c)) = procs.0.first_mut()
            && let Ok(Some(code)) = c.try_wait()
        {
            bail!("the coordinator exited ({code}); see coordinator.log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the coordinator did not start listening within 60 s; see coordinator.log")
}

/// Polls the coordinator's status until the run succeeds, showing progress; Ctrl-C stops.
async fn watch(
    url: &str,
    args: &DevnetArgs,
    total: u64,
    procs: &mut Processes,
) -> Result<RunStatus> {
    let mut client = ExchangeClient::connect(url.to_owned())
        .await
        .context("connecting to the coordinator")?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] round {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("progress template: {e}"))?
            .progress_chars("=> "),
    );
    let floor = report::floor_of(&args.out.join("peer-0/peer.jsonl"));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    // One listener for the whole watch, so a Ctrl-C between two polls is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                bar.abandon_with_message("stopped; run the same command again to resume");
                bail!("interrupted: the run's state is kept in {}", args.out.display());
            }
            _ = ticker.tick() => {}
        }
        for (name, child) in &mut procs.0 {
            if name == "coordinator"
                && let Ok(Some(code)) = child.try_wait()
            {
                bail!(
                    "the coordinator exited ({code}); see {}/coordinator.log",
                    args.out.display()
                );
            }
        }
        let status = match client.get_status(GetStatusRequest::default()).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                bar.set_message(format!("coordinator unavailable: {}", e.message()));
                continue;
            }
        };
        bar.set_position(status.model_version);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let floor_text = floor
            .or_else(|| report::floor_of(&args.out.join("peer-0/peer.jsonl")))
            .map_or(String::new(), |f| format!(" (floor {f:.3})"));
        bar.set_message(format!(
            "loss {:.3}{floor_text} | {:.0} tok/s | {} moved | {} peers",
            status.loss,
            status.tokens as f64 / secs,
            indicatif::HumanBytes(status.bytes_received + status.bytes_sent),
            status.active_peers,
        ));
        if status.phase() == tributary_proto::v1alpha1::RunPhase::Succeeded {
            bar.finish();
            return Ok(status);
        }
        if started.elapsed() > Duration::from_secs(args.timeout) {
            bail!("the run did not finish within {} s", args.timeout);
        }
    }
}
