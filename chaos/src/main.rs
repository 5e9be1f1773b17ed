//! `keel-chaos`: one robustness run against `keel kv` (or etcd) members, or with `keel-chaos cluster`
//! against a whole cluster started by deploy/local-cluster.sh (see chaos/README.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use keel_chaos::cluster_faults::ClusterFault;
use keel_chaos::cluster_run::ClusterRunConfig;
use keel_chaos::members::Server;
use keel_chaos::nemesis::{Fault, MAX_TOGETHER};
use keel_chaos::run::{run, RunConfig};

#[derive(Parser)]
#[command(
    about = "Runs traffic against keel kv members in network namespaces, injects faults, checks what the clients saw",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The keel binary.
    #[arg(long, default_value = "target/debug/keel")]
    keel: PathBuf,
    /// Run etcd (this server binary, e.g. /usr/bin/etcd) instead of keel, to compare the two under the same
    /// faults.
    #[arg(long, value_name = "ETCD_BINARY")]
    etcd: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// How long the traffic runs: seconds, or with a unit (90s, 10m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults to inject, comma-separated, or "all" (or "none").
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Up to this many different faults at once (each round picks 1..=N, N at most 4).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_TOGETHER as i64))]
    together: u16,
    /// How long each round of faults lasts.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    fault_duration: Duration,
    /// Pause between faults.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    interval: Duration,
    #[arg(long, default_value_t = 6)]
    clients: u32,
    #[arg(long, default_value_t = 8)]
    keys: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One more flag for every member's server, after the ones the harness sets (repeatable), e.g.
    /// `--member-arg=--heartbeat-interval=100`.
    #[arg(long = "member-arg", value_name = "FLAG", allow_hyphen_values = true)]
    member_args: Vec<String>,
    /// Where data dirs, logs, history and report go (default: a new temporary directory, kept).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Only re-check the history saved in this run's work dir (no cluster is started).
    #[arg(long, value_name = "WORK_DIR")]
    recheck: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// The whole cluster: deploy/local-cluster.sh's masters, store and real agents (as root), Deployments,
    /// StatefulSets and Jobs driven through keel lb, masters, store members, nodes and links broken.
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// The keel binary.
    #[arg(long, default_value = "target/debug/keel")]
    keel: PathBuf,
    /// The repository (its deploy/ scripts).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=5))]
    masters: u16,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
    nodes: u16,
    /// Three `keel kv` members of their own instead of members stacked in the masters.
    #[arg(long)]
    external_store: bool,
    /// How long the traffic runs: seconds, or with a unit (90s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults to inject, comma-separated, or "all" (or "none").
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// How long each fault lasts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    fault_duration: Duration,
    /// Pause between faults (after the cluster recovered from the last one).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Traffic clients, each with a Deployment, a StatefulSet and a Job of its own.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the workloads have to converge after the last fault.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    converge_within: Duration,
    /// Where the cluster's data and logs, the history and the report go (default: a new temporary
    /// directory, kept).
    #[arg(long)]
    work: Option<PathBuf>,
}

fn cluster(a: ClusterArgs) -> anyhow::Result<()> {
    let faults = parse_faults(&a.nemesis, &ClusterFault::ALL)?;
    if a.masters == 4 {
        bail!("--masters must be 3 or 5");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the cluster mode needs root: its machines are network namespaces, its nodes run containerd");
    }
    let work =
        a.work.unwrap_or_else(|| std::env::temp_dir().join(format!("keel-chaos-cluster-{}", std::process::id())));
    let cfg = ClusterRunConfig {
        repo: std::fs::canonicalize(&a.repo).with_context(|| format!("repository {}", a.repo.display()))?,
        keel: std::fs::canonicalize(&a.keel).with_context(|| format!("keel binary {}", a.keel.display()))?,
        masters: usize::from(a.masters),
        nodes: usize::from(a.nodes),
        external_store: a.external_store,
        duration: a.duration,
        faults,
        fault_duration: a.fault_duration,
        interval: a.interval,
        clients: a.clients,
        seed: a.seed,
        converge_within: a.converge_within,
        work: work.clone(),
    };
    let report = keel_chaos::cluster_run::run(&cfg).context("whole-cluster chaos run")?;
    println!("{}", report.summary());
    println!("cluster logs, history and report: {}", work.display());
    if !report.ok() {
        bail!("violations found (see above)");
    }
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s:?} (try 90s or 10m)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("unknown unit in {s:?} (use s, m or ms)")),
    }
}

/// A comma-separated list of faults, "all" or "none".
fn parse_faults<F: clap::ValueEnum + Clone + std::fmt::Debug>(spec: &str, all: &[F]) -> anyhow::Result<Vec<F>> {
    match spec {
        "all" => Ok(all.to_vec()),
        "none" => Ok(vec![]),
        _ => spec
            .split(',')
            .map(|f| {
                F::from_str(f.trim(), true).map_err(|_| {
                    let names: Vec<String> =
                        all.iter().filter_map(|f| f.to_possible_value()).map(|v| v.get_name().to_string()).collect();
                    anyhow::anyhow!("unknown fault {f:?}: use all, none, or some of {}", names.join(", "))
                })
            })
            .collect(),
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(Mode::Cluster(c)) = a.mode {
        return cluster(c);
    }
    if let Some(dir) = a.recheck {
        let r = keel_chaos::run::recheck(&dir, keel_chaos::linearizability::DEFAULT_BUDGET)?;
        println!(
            "{} keys, {} ops: {} not linearizable, {} undecided",
            r.keys,
            r.ops,
            r.violations.len(),
            r.undecided.len()
        );
        for v in &r.violations {
            println!("key {}: {}", v.key, serde_json::to_string(&v.ops)?);
        }
        if !r.ok() {
            bail!("the history is not proven linearizable");
        }
        return Ok(());
    }
    if !(1..=7).contains(&a.members) {
        bail!("--members must be between 1 and 7");
    }
    let work = match a.work {
        Some(w) => w,
        None => std::env::temp_dir().join(format!("keel-chaos-{}", std::process::id())),
    };
    let server = match &a.etcd {
        Some(etcd) => {
            Server::Etcd(std::fs::canonicalize(etcd).with_context(|| format!("etcd binary {}", etcd.display()))?)
        }
        None => {
            Server::Keel(std::fs::canonicalize(&a.keel).with_context(|| format!("keel binary {}", a.keel.display()))?)
        }
    };
    let cfg = RunConfig {
        server,
        together: usize::from(a.together),
        fault_duration: a.fault_duration,
        members: a.members,
        duration: a.duration,
        faults: parse_faults(&a.nemesis, &Fault::ALL)?,
        interval: a.interval,
        clients: a.clients,
        keys: a.keys,
        seed: a.seed,
        member_args: a.member_args,
        work: work.clone(),
    };
    let report = run(&cfg).context("chaos run")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("history, watches, logs and report: {}", work.display());
    if !report.ok() {
        bail!("violations found (see above)");
    }
    Ok(())
}
