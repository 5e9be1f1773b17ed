//! `keel bench kv …`: benchmarks of any store that speaks the etcd v3 API (keel or etcd).

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_bench::{Report, Target};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Benchmarks of a key-value store through the etcd v3 API.
    Kv(KvBench),
}

#[derive(Args, Debug)]
struct KvBench {
    /// Client endpoints (host:port or URLs), comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',', global = true)]
    endpoints: Vec<String>,
    /// Print each report as a JSON line too.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Puts to random keys.
    Put {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10_000)]
        total: usize,
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        #[arg(long, default_value_t = 256)]
        value_size: usize,
    },
    /// Single-key ranges.
    Range {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10_000)]
        total: usize,
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        /// "l" (linearizable, the default of etcd) or "s" (serializable).
        #[arg(long, default_value = "l")]
        consistency: String,
    },
    /// Delivery latency of one key's events to many watchers.
    Watch {
        #[arg(long, default_value_t = 1_000)]
        watchers: usize,
        #[arg(long, default_value_t = 50)]
        puts: usize,
    },
    /// One trial: kill -9 the leader (pids given in the order of --endpoints) and time the first acknowledged write.
    Failover {
        #[arg(long, value_delimiter = ',', required = true)]
        pids: Vec<u32>,
    },
}

fn print(r: &Report, json: bool) {
    println!("{r}");
    if json {
        println!("{}", serde_json::to_string(r).expect("report serialises"));
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchWhat::Kv(kv) = args.what;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let eps = kv.endpoints;
        match kv.workload {
            Workload::Put { clients, total, keys, value_size } => {
                let t = Target::connect(&eps, clients.min(64)).await?;
                print(&keel_bench::put(&t, clients, total, keys, value_size).await, kv.json);
            }
            Workload::Range { clients, total, keys, consistency } => {
                let t = Target::connect(&eps, clients.min(64)).await?;
                let serializable = match consistency.as_str() {
                    "l" => false,
                    "s" => true,
                    other => anyhow::bail!("--consistency must be l or s, not {other:?}"),
                };
                print(&keel_bench::range(&t, clients, total, keys, serializable).await?, kv.json);
            }
            Workload::Watch { watchers, puts } => {
                let t = Target::connect(&eps, 1).await?;
                print(&keel_bench::watch(&t, watchers, puts).await?, kv.json);
            }
            Workload::Failover { pids } => {
                anyhow::ensure!(pids.len() == eps.len(), "--pids needs one pid per endpoint");
                let (took, killed) = keel_bench::failover_trial(&eps, &pids).await?;
                println!("failover: killed leader {} (pid {}); first acknowledged write after {:.1} ms", eps[killed], pids[killed], took.as_secs_f64() * 1000.0);
                if kv.json {
                    println!("{}", serde_json::json!({"workload": "failover", "killed": killed, "first_write_ms": took.as_secs_f64() * 1000.0}));
                }
            }
        }
        Ok(())
    })
}
