//! Command line of `tributary-worker`. Every flag can also come from the environment, so a pod
//! spec and a terminal configure the worker the same way.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tributary_codec::QuantMode;
use tributary_crds::OuterLrStep;

use crate::self_check;
use crate::simulate::{
    self, CompareOptions, HostileKind, OuterLrDrop, SimConfig, SimGauntlet, Strategy, WireFormat,
};

#[derive(Debug, Parser)]
#[command(
    name = "tributary-worker",
    version,
    about = "Tributary worker: trains with libtorch and exchanges compressed pseudo-gradients"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks that libtorch loads and trains: one AdamW step on CPU (and on CUDA when visible).
    SelfCheck {
        /// Print the report as JSON.
        #[arg(long, env = "TRIBUTARY_SELF_CHECK_JSON")]
        json: bool,
    },
    /// Simulates N peers in this process with one strategy on the embedded language.
    Simulate(SimulateArgs),
    /// Runs every strategy at equal tokens for each seed and writes the comparison report.
    Compare(CompareArgs),
    /// Tokenizes plain-text (or .jsonl) files with a Hugging Face tokenizer.json into token
    /// shards (format: docs/data-shards.md).
    PrepareData(PrepareDataArgs),
    /// Joins a run's coordinator as a training peer and trains until the run ends.
    Join(crate::peer::PeerArgs),
    /// Scores every closed round's updates for a run that lists this key among its validators
    /// (`participation.scoring.validators`), until the run ends.
    Validate(crate::peer::validator::ValidateArgs),
    /// Prints a run's phase, round, loss and peers from its coordinator, and this peer's
    /// standing with --key.
    Status(crate::status::StatusArgs),
    /// Creates an ed25519 key for a peer and prints its peer id.
    Keygen {
        /// Where to write the key (64 hex digits; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Runs a whole SparseLoCo training run on this machine: a coordinator and N peer
    /// processes over real gRPC on 127.0.0.1, with live progress and a final report.
    Devnet(crate::devnet::DevnetArgs),
}

#[derive(Debug, Args)]
pub struct PrepareDataArgs {
    /// The tokenizer.json of a Hugging Face tokenizer.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Directory to write shard-00000.bin, ... into (must not already hold shards).
    #[arg(long)]
    out: PathBuf,
    /// Tokens per shard.
    #[arg(long, default_value_t = 100_000_000)]
    tokens_per_shard: u64,
    /// Token appended after every document, e.g. "</s>".
    #[arg(long)]
    eos: Option<String>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Text files (one document each) or .jsonl files (a "text" field per line).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
// A later flag wins, so scripts can pass defaults and users override them.
#[command(args_override_self = true)]
pub struct SimulateArgs {
    /// A full run configuration (JSON, as `compare` writes them); the flags below are ignored.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "sparseloco")]
    strategy: Strategy,
    /// Tokens processed by all peers together.
    #[arg(long, default_value_t = 2_000_000)]
    tokens: u64,
    #[arg(long, default_value_t = 4)]
    peers: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replicate: ≥ 1 draws another initialisation and data order on the same language and
    /// held-out tokens (0 = the seed's own).
    #[arg(long, default_value_t = 0)]
    replicate: u32,
    /// Inner steps per round (diloco, sparseloco).
    #[arg(long, default_value_t = 10)]
    inner_steps: u32,
    /// Values kept per 64×64 chunk (64 = density 1/64).
    #[arg(long, default_value_t = 64)]
    k_per_chunk: u16,
    /// Use the production quantizer and count bytes in the production wire format.
    #[arg(long)]
    production: bool,
    /// Inner (or DDP) learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Outer learning rate.
    #[arg(long)]
    outer_lr: Option<f64>,
    /// Outer optimizer for diloco: nesterov (default, lr 0.7, μ 0.9) or sgd.
    #[arg(long)]
    outer_sgd: bool,
    /// Error-feedback decay β.
    #[arg(long)]
    beta: Option<f32>,
    /// Peers whose batches together each local AdamW step's second moment stands for (default:
    /// --peers, 1 for ddp; 1 is plain AdamW).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    second_moment_peers: Option<u32>,
    /// SparseLoCo peers start from θ, not from θ − α·e (turns the error-feedback lookahead off).
    #[arg(long)]
    no_lookahead: bool,
    /// Aggregate with the paper's (1/R)·Σ instead of production's clipped mean over selectors.
    #[arg(long)]
    paper_mean: bool,
    /// Outer learning-rate steps `ROUND:LR`, comma separated (replace the default late drop).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_outer_lr_step,
        conflicts_with = "outer_lr_drop"
    )]
    outer_lr_step: Vec<OuterLrStep>,
    /// `AT:RATIO`: from the fraction AT of the rounds on, the outer lr is RATIO × its value
    /// (production lowered 1.0 to 0.4 late in the run). Default: the comparison's 0.85:0.4;
    /// `1:1` turns it off.
    #[arg(long, value_parser = parse_outer_lr_drop)]
    outer_lr_drop: Option<OuterLrDrop>,
    /// libtorch threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Hidden states of the embedded language (default: calibrated).
    #[arg(long)]
    states: Option<u32>,
    /// Successor states per hidden state.
    #[arg(long)]
    fanout: Option<u32>,
    /// Tokens each hidden state emits.
    #[arg(long)]
    emissions: Option<u32>,
    /// Zipf exponent of transitions and emissions.
    #[arg(long)]
    zipf: Option<f64>,
    /// Hostile peers beside the --peers honest ones (comma-separated kinds; sparseloco only):
    /// what each sends instead of its honest update (docs/security.md).
    #[arg(long, value_enum, value_delimiter = ',')]
    hostile: Vec<HostileKind>,
    /// Judge every round with the Gauntlet (cheap checks, one validator, ratings, selection);
    /// without it every update is aggregated.
    #[arg(long)]
    gauntlet: bool,
    /// With --gauntlet: candidates the validator scores per round (0: all).
    #[arg(long, default_value_t = 0, requires = "gauntlet")]
    scored_per_round: u32,
    /// Where to write the run's JSON report.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only the final line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Directory of the report (report.md, results.json, curves.csv, plots).
    #[arg(long, default_value = "reports/compare")]
    out: PathBuf,
    /// Tokens per run (all peers together).
    #[arg(long, default_value_t = 8_388_608)]
    tokens: u64,
    /// Seeds, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    seeds: Vec<u64>,
    /// Runs in parallel, one core each.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    #[arg(long, default_value_t = 4)]
    peers: u32,
    /// Evaluations per run.
    #[arg(long, default_value_t = 16)]
    evals: u32,
    /// Held-out sequences per evaluation.
    #[arg(long, default_value_t = 256)]
    eval_sequences: u32,
    /// Runs of DDP and of SparseLoCo 1/64 per seed (their claim is judged on the mean excess).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    replicates: u32,
    /// Exit non-zero unless every claim of the comparison holds.
    #[arg(long)]
    check: bool,
    /// Hostile kinds (comma separated) beside the --peers honest peers: run the hostile-peer
    /// comparison (with and without the Gauntlet, and the honest peers alone) instead.
    #[arg(long, value_enum, value_delimiter = ',')]
    hostile: Vec<HostileKind>,
    /// With --hostile: candidates the Gauntlet's validator scores per round (0: all).
    #[arg(long, default_value_t = 0, requires = "hostile")]
    scored_per_round: u32,
    /// Reuse each run whose report is already in --out with the same configuration (a rerun
    /// after a change to the plan runs only what changed).
    #[arg(long)]
    resume: bool,
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::SelfCheck { json } => {
                let report = self_check::run()?;
                if json {
                    println!("{}", report.to_json()?);
                } else {
                    print!("{report}");
                }
                Ok(())
            }
            Command::Simulate(args) => run_simulate(args),
            Command::Join(args) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(crate::peer::run(args)),
            Command::Validate(args) => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(crate::peer::validator::run(args)),
            Command::Status(args) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(crate::status::run(args)),
            Command::Keygen { out } => {
                let id = tributary_proto::identity::Identity::generate();
                id.save(&out)?;
                println!("{}", id.peer_id());
                Ok(())
            }
            Command::Devnet(args) => crate::devnet::run(args),
            Command::PrepareData(args) => {
                let report =
                    tributary_data::prepare::prepare(&tributary_data::prepare::PrepareOptions {
                        tokenizer: args.tokenizer,
                        inputs: args.inputs,
                        output_dir: args.out.clone(),
                        tokens_per_shard: args.tokens_per_shard,
                        append_eos: args.eos,
                        progress: !args.quiet,
                    })?;
                println!(
                    "{} documents from {} files: {} tokens (vocab {}) in {} shards under {}",
                    report.documents,
                    report.files,
                    report.tokens,
                    report.vocab,
                    report.shards.len(),
                    args.out.display()
                );
                Ok(())
            }
            Command::Compare(args) => {
                let opts = CompareOptions {
                    out_dir: args.out,
                    tokens: args.tokens,
                    seeds: args.seeds,
                    jobs: args.jobs,
                    peers: args.peers,
                    evals: args.evals,
                    eval_sequences: args.eval_sequences,
                    replicates: args.replicates,
                    hostile: args.hostile,
                    scored_per_round: args.scored_per_round,
                    resume: args.resume,
                };
                let (_, ok) = simulate::compare(&opts)?;
                println!("report: {}", opts.out_dir.join("report.md").display());
                if args.check && !ok {
                    anyhow::bail!("the comparison's claims do not all hold (see the report)");
                }
                Ok(())
            }
        }
    }
}

fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let cfg: SimConfig = match &args.config {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => from_flags(&args),
    };
    let quiet = args.quiet;
    let report = simulate::simulate(&cfg, |p| {
        if !quiet {
            println!(
                "{:>6} tokens {:>10}  train {:.4}  held-out {:.4}  excess {:.4}  bytes/peer {}",
                p.step, p.tokens, p.train_loss, p.eval_loss, p.excess, p.bytes_per_peer
            );
        }
    })?;
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    println!(
        "{}: held-out {:.4}, floor {:.4}, excess {:.4}, {} bytes/peer, {:.0} s, fingerprint {}",
        cfg.name,
        report.final_eval_loss,
        report.floor,
        report.excess,
        report.bytes_per_peer,
        report.wall_seconds,
        report.fingerprint
    );
    Ok(())
}

fn from_flags(args: &SimulateArgs) -> SimConfig {
    let opts = CompareOptions {
        out_dir: PathBuf::new(),
        tokens: args.tokens,
        seeds: vec![args.seed],
        jobs: 1,
        peers: args.peers,
        evals: 16,
        eval_sequences: 256,
        replicates: 1,
        hostile: Vec::new(),
        scored_per_round: 0,
        resume: false,
    };
    let mut cfg = simulate::base(&opts, args.seed);
    cfg.hostile = args.hostile.clone();
    cfg.gauntlet = args.gauntlet.then_some(SimGauntlet {
        scored_per_round: args.scored_per_round,
    });
    cfg.replicate = args.replicate;
    cfg.name = format!("{:?}", args.strategy).to_lowercase();
    cfg.strategy = args.strategy;
    cfg.inner_steps = args.inner_steps;
    cfg.codec.k_per_chunk = args.k_per_chunk;
    cfg.threads = args.threads;
    if args.production {
        cfg.codec.mode = QuantMode::Production;
        cfg.wire = WireFormat::Production;
    }
    if args.strategy == Strategy::Diloco && !args.outer_sgd {
        cfg.outer = simulate::diloco_outer();
    }
    if args.outer_lr.is_some() {
        cfg.outer.lr = args.outer_lr;
    }
    cfg.codec.beta = args.beta.unwrap_or(cfg.codec.beta);
    cfg.paper_mean = args.paper_mean;
    cfg.lookahead = !args.no_lookahead;
    if !args.outer_lr_step.is_empty() {
        // Explicit steps replace the comparison's late drop.
        cfg.outer.lr_schedule = args.outer_lr_step.clone();
        cfg.outer_lr_drop = None;
    }
    if let Some(drop) = args.outer_lr_drop {
        cfg.outer_lr_drop = Some(drop);
    }
    let l = &mut cfg.language;
    l.states = args.states.unwrap_or(l.states);
    l.fanout = args.fanout.unwrap_or(l.fanout);
    l.emissions = args.emissions.unwrap_or(l.emissions);
    l.zipf_exponent = args.zipf.unwrap_or(l.zipf_exponent);
    if args.strategy == Strategy::Ddp {
        cfg.inner.lr = simulate::DDP_LR;
        cfg.inner.second_moment_peers = Some(1);
    }
    if let Some(lr) = args.lr {
        cfg.inner.lr = lr;
    }
    if args.second_moment_peers.is_some() {
        cfg.inner.second_moment_peers = args.second_moment_peers;
    }
    cfg
}

/// `ROUND:LR`, one step of the outer learning-rate schedule.
fn parse_outer_lr_step(s: &str) -> Result<OuterLrStep, String> {
    let (round, lr) = s
        .split_once(':')
        .ok_or_else(|| format!("expected ROUND:LR, got {s:?}"))?;
    let from_round = round
        .trim()
        .parse()
        .map_err(|e| format!("round {round:?}: {e}"))?;
    let lr: f64 = lr.trim().parse().map_err(|e| format!("lr {lr:?}: {e}"))?;
    if !(lr.is_finite() && lr > 0.0) {
        return Err(format!("outer lr must be positive, got {lr}"));
    }
    Ok(OuterLrStep { from_round, lr })
}

/// `AT:RATIO`, a late drop of the outer learning rate.
fn parse_outer_lr_drop(s: &str) -> Result<OuterLrDrop, String> {
    let (at, ratio) = s
        .split_once(':')
        .ok_or_else(|| format!("expected AT:RATIO, got {s:?}"))?;
    let at: f64 = at.trim().parse().map_err(|e| format!("at {at:?}: {e}"))?;
    let ratio: f64 = ratio
        .trim()
        .parse()
        .map_err(|e| format!("ratio {ratio:?}: {e}"))?;
    if !((0.0..=1.0).contains(&at) && ratio.is_finite() && ratio > 0.0) {
        return Err(format!("need 0 ≤ AT ≤ 1 and RATIO > 0, got {s:?}"));
    }
    Ok(OuterLrDrop { at, ratio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_lr_flags_parse_and_reject_bad_values() {
        let step = parse_outer_lr_step("154:0.34").unwrap();
        assert_eq!(step.from_round, 154);
        assert_eq!(step.lr, 0.34);
        assert!(parse_outer_lr_step("154").is_err());
        assert!(parse_outer_lr_step("154:0").is_err());
        let drop = parse_outer_lr_drop("0.85:0.4").unwrap();
        assert_eq!((drop.at, drop.ratio), (0.85, 0.4));
        assert!(parse_outer_lr_drop("1.5:0.4").is_err());
        assert!(parse_outer_lr_drop("0.85:-1").is_err());
        assert!(parse_outer_lr_drop("0.85").is_err());
    }

    #[test]
    fn the_drop_flag_reaches_the_outer_schedule() {
        let cli = Cli::try_parse_from([
            "tributary-worker",
            "simulate",
            "--tokens",
            "8388608",
            "--outer-lr-drop",
            "0.85:0.4",
        ])
        .unwrap();
        let Command::Simulate(args) = cli.command else {
            panic!("not simulate")
        };
        let outer = from_flags(&args).outer_optimizer();
        // 2048 steps of H 10: 205 rounds, the last 30 at 0.4 × 0.85.
        assert_eq!(outer.lr_at(174), simulate::SPARSE_OUTER_LR);
        assert!((outer.lr_at(175) - 0.4 * simulate::SPARSE_OUTER_LR).abs() < 1e-12);
        assert!(
            Cli::try_parse_from([
                "tributary-worker",
                "simulate",
                "--outer-lr-drop",
                "0.85:0.4",
                "--outer-lr-step",
                "1:0.5",
            ])
            .is_err()
        );
    }

    #[test]
    fn simulate_and_compare_take_the_hostile_mix_and_the_gauntlet() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["tributary-worker", "simulate"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Simulate(args) => from_flags(&args),
                _ => panic!("not simulate"),
            })
        };
        let plain = parse(&[]).unwrap();
        assert!(plain.hostile.is_empty() && plain.gauntlet.is_none());
        let judged = parse(&[
            "--hostile",
            "noise,sign-flip",
            "--gauntlet",
            "--scored-per-round",
            "3",
        ])
        .unwrap();
        assert_eq!(judged.hostile, [HostileKind::Noise, HostileKind::SignFlip]);
        assert_eq!(
            judged.gauntlet,
            Some(SimGauntlet {
                scored_per_round: 3
            })
        );
        // A sample size without the Gauntlet would be ignored: refused instead.
        assert!(parse(&["--scored-per-round", "3"]).is_err());
        assert!(parse(&["--hostile", "nonsense"]).is_err());
        let Command::Compare(args) = Cli::try_parse_from([
            "tributary-worker",
            "compare",
            "--hostile",
            "lazy",
            "--scored-per-round",
            "2",
            "--resume",
        ])
        .unwrap()
        .command
        else {
            panic!("not compare")
        };
        assert_eq!(args.hostile, [HostileKind::Lazy]);
        assert_eq!(args.scored_per_round, 2);
        assert!(args.resume);
    }

    #[test]
    fn simulate_drops_like_the_comparison_unless_told_otherwise() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["tributary-worker", "simulate", "--tokens", "8388608"];
            argv.extend_from_slice(extra);
            let Command::Simulate(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not simulate")
            };
            from_flags(&args).outer_optimizer()
        };
        let base = simulate::SPARSE_OUTER_LR;
        // Default: the comparison's drop, 0.4× from round 175 of 205.
        let default = parse(&[]);
        assert_eq!(default.lr_at(174), base);
        assert!((default.lr_at(175) - 0.4 * base).abs() < 1e-12);
        // Explicit steps replace it.
        let steps = parse(&["--outer-lr-step", "100:0.5"]);
        assert_eq!(steps.lr_at(99), base);
        assert_eq!(steps.lr_at(204), 0.5);
        // 1:1 turns it off.
        let off = parse(&["--outer-lr-drop", "1:1"]);
        assert_eq!(off.lr_at(204), base);
    }

    #[test]
    fn simulate_corrects_the_second_moment_for_the_peers_unless_ddp_or_told() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["tributary-worker", "simulate"];
            argv.extend_from_slice(extra);
            let Command::Simulate(args) = Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())?
                .command
            else {
                panic!("not simulate")
            };
            Ok::<_, String>(from_flags(&args).inner.second_moment_peers)
        };
        assert_eq!(parse(&[]), Ok(Some(4)));
        assert_eq!(parse(&["--peers", "8"]), Ok(Some(8)));
        assert_eq!(parse(&["--strategy", "ddp"]), Ok(Some(1)));
        assert_eq!(parse(&["--second-moment-peers", "1"]), Ok(Some(1)));
        assert!(parse(&["--second-moment-peers", "0"]).is_err());
    }
}
