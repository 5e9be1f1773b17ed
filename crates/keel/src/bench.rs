//! `keel bench kv …`: benchmarks of any store that speaks the etcd v3 API (keel or etcd); `keel bench api`:
//! create/get/list latency of Kubernetes API servers (keel's masters, or any other) over HTTPS; `keel bench
//! scheduler` and `keel bench control-failover`: the control loops' throughput and failover; `keel bench pod-startup`:
//! pods created → Running on real nodes.

use std::path::PathBuf;

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
    /// ConfigMaps created, read by name and listed through Kubernetes API servers, by clients spread over them.
    Api(ApiBench),
    /// Pods created as fast as the clients can on a cluster with nodes; pods bound per second.
    Scheduler(SchedulerBench),
    /// Pods started on a cluster's nodes (the image already there): created → Running, p50/p99.
    PodStartup(PodStartupBench),
    /// One trial: kill -9 the master leading the control loops; time until a write, a binding and a
    /// controller's action go through another master.
    ControlFailover(ControlFailoverBench),
    /// The node Service proxy's rule programming (as root, in a network namespace of its own): S Services
    /// of E endpoints, then changes of one endpoint, next to kube-proxy's iptables layout.
    ProxyRules(ProxyRulesBench),
    /// Requests (a new connection each) through a Service's cluster IP next to the same requests straight
    /// to one of its pods, from inside a network namespace (a pod's).
    ServicePath(ServicePathBench),
}

#[derive(Args, Debug)]
struct ServicePathBench {
    /// The network namespace to send from (e.g. a pod's, /proc/<pid>/ns/net).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// The Service's cluster IP and port.
    #[arg(long)]
    service: std::net::SocketAddr,
    /// One of its pods' IP and port.
    #[arg(long)]
    direct: std::net::SocketAddr,
    /// Requests per round and target.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Args, Debug)]
struct ProxyRulesBench {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    #[arg(long, default_value_t = 100)]
    changes: usize,
}

#[derive(Args, Debug)]
struct SchedulerBench {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent creates.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Give up when not every pod is bound after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the result as a JSON line too.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PodStartupBench {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Pods starting at once: 1 starts each pod alone; more queue on the node.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// The pods' image; it must be on the nodes (imagePullPolicy Never).
    #[arg(long, default_value = "keel.test/busybox:1")]
    image: String,
    /// Give up when not every pod is Running after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the result as a JSON line too.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ControlFailoverBench {
    /// Every master's kubeconfig (comma-separated), in the order of --pids.
    #[arg(long, value_delimiter = ',', required = true)]
    kubeconfigs: Vec<PathBuf>,
    /// Every master's process id (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<u32>,
    /// Print the result as a JSON line too.
    #[arg(long)]
    json: bool,
}

/// The phases shared by `keel bench api` and `keel bench kv kube`.
#[derive(Args, Debug)]
struct PhaseArgs {
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Objects created (one request each); the gets and lists read them.
    #[arg(long, default_value_t = 5_000)]
    creates: usize,
    /// Reads of one object by name.
    #[arg(long, default_value_t = 20_000)]
    gets: usize,
    /// Lists of the namespace, each one page of --list-limit objects.
    #[arg(long, default_value_t = 2_000)]
    lists: usize,
    #[arg(long, default_value_t = 100)]
    list_limit: usize,
}

impl PhaseArgs {
    fn phases(&self) -> keel_bench::Phases {
        keel_bench::Phases {
            clients: self.clients.max(1),
            creates: self.creates.max(1),
            gets: self.gets,
            lists: self.lists,
            list_limit: self.list_limit.max(1),
        }
    }
}

#[derive(Args, Debug)]
struct ApiBench {
    /// Kubeconfigs (comma-separated): the servers of all of them are used, the CA and token of the first.
    #[arg(long, value_delimiter = ',')]
    kubeconfig: Vec<PathBuf>,
    /// Server URLs (https://host:port, comma-separated), instead of the kubeconfigs' servers.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// The CA certificate (PEM file), instead of the kubeconfig's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The bearer token, instead of the kubeconfig's.
    #[arg(long, env = "KEEL_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    phases: PhaseArgs,
    /// Bytes in each ConfigMap's one data value.
    #[arg(long, default_value_t = 128)]
    data_size: usize,
    /// HTTP/1.1 instead of HTTP/2.
    #[arg(long)]
    http1: bool,
    /// Keep the namespace and its ConfigMaps at the end.
    #[arg(long)]
    keep: bool,
    /// Print each report as a JSON line too.
    #[arg(long)]
    json: bool,
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
    /// The store operations a kube-apiserver performs for `keel bench api`'s creates, gets and lists (a
    /// create-if-absent transaction, a one-key range, a prefix range with a limit): the floor under an API
    /// server's latency on this store.
    Kube {
        #[command(flatten)]
        phases: PhaseArgs,
        /// Bytes in each value (give the size of the objects the API server stores).
        #[arg(long, default_value_t = 400)]
        value_size: usize,
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

fn api_target(a: &ApiBench) -> anyhow::Result<keel_bench::api::ApiTarget> {
    let mut configs = Vec::new();
    for path in &a.kubeconfig {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        configs.push(keel_bench::api::parse_kubeconfig(&text).with_context(|| format!("in {}", path.display()))?);
    }
    let urls: Vec<String> =
        if a.servers.is_empty() { configs.iter().map(|c| c.server.clone()).collect() } else { a.servers.clone() };
    anyhow::ensure!(!urls.is_empty(), "give --kubeconfig or --servers");
    let servers = urls.iter().map(|u| keel_bench::api::parse_server(u)).collect::<Result<Vec<_>, _>>()?;
    let ca_pem = match &a.ca_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => configs.first().map(|c| c.ca_pem.clone()).context("give --ca-file or --kubeconfig")?,
    };
    let token = match &a.token {
        Some(t) => t.clone(),
        None => configs.first().map(|c| c.token.clone()).context("give --token or --kubeconfig")?,
    };
    Ok(keel_bench::api::ApiTarget { servers, ca_pem, token, http1: a.http1 })
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let kv = match args.what {
        BenchWhat::Kv(kv) => kv,
        BenchWhat::ServicePath(a) => {
            let (via, straight) =
                keel_bench::service_path::run(a.netns, a.service, a.direct, a.requests, a.clients, a.rounds)?;
            print!("{}", keel_bench::service_path::report(&via, &straight));
            return Ok(());
        }
        BenchWhat::ProxyRules(a) => {
            let report = keel_bench::proxy_rules::run(a.services, a.endpoints, a.changes)?;
            print!("{report}");
            return Ok(());
        }
        BenchWhat::Scheduler(a) => {
            return rt.block_on(async move {
                let client = kube::Client::try_from(crate::server::client_config(&a.kubeconfig).await?)?;
                let timeout = std::time::Duration::from_secs(a.timeout);
                let r = keel_bench::control::scheduler(client, a.pods, a.clients, timeout).await?;
                println!(
                    "{} pods on {} nodes: created in {:.2} s, all bound after {:.2} s: {:.0} pods/s bound \
                     (per-second average {:.0}); create→bound p50 {:.0} ms, p99 {:.0} ms",
                    r.pods,
                    r.nodes,
                    r.create_secs,
                    r.total_secs,
                    r.bound_per_sec,
                    r.per_second_avg,
                    r.latency_p50_ms,
                    r.latency_p99_ms
                );
                if a.json {
                    println!("{}", serde_json::json!({"workload": "scheduler", "result": r}));
                }
                Ok(())
            });
        }
        BenchWhat::PodStartup(a) => {
            return rt.block_on(async move {
                let client = kube::Client::try_from(crate::server::client_config(&a.kubeconfig).await?)?;
                let timeout = std::time::Duration::from_secs(a.timeout);
                let r = keel_bench::pods::pod_startup(client, a.pods, a.parallel, &a.image, timeout).await?;
                println!(
                    "{} pods, {} at once, in {:.2} s: created→Running p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms \
                     (created→bound p50 {:.0} ms, p99 {:.0} ms)",
                    r.pods,
                    r.parallel,
                    r.total_secs,
                    r.running_p50_ms,
                    r.running_p99_ms,
                    r.running_max_ms,
                    r.bound_p50_ms,
                    r.bound_p99_ms
                );
                if a.json {
                    println!("{}", serde_json::json!({"workload": "pod-startup", "result": r}));
                }
                Ok(())
            });
        }
        BenchWhat::ControlFailover(a) => {
            anyhow::ensure!(a.pids.len() == a.kubeconfigs.len(), "--pids needs one pid per kubeconfig");
            return rt.block_on(async move {
                let mut masters = Vec::new();
                for path in &a.kubeconfigs {
                    masters.push(kube::Client::try_from(crate::server::client_config(path).await?)?);
                }
                let t = keel_bench::control::failover_trial(&masters, &a.pids).await?;
                println!(
                    "killed master {} (pid {}): write after {:.0} ms, pod bound after {:.0} ms, new replica after {:.0} ms",
                    t.killed, a.pids[t.killed], t.write_ms, t.bind_ms, t.controllers_ms
                );
                if a.json {
                    println!("{}", serde_json::json!({"workload": "control-failover", "result": t}));
                }
                Ok(())
            });
        }
        BenchWhat::Api(a) => {
            let target = api_target(&a)?;
            return rt.block_on(async move {
                let phases = a.phases.phases();
                let run = keel_bench::api::run(&target, &phases, a.data_size, a.keep).await?;
                println!(
                    "namespace {}, {} servers, objects of {} bytes (as the server returned the first)",
                    run.namespace,
                    target.servers.len(),
                    run.object_bytes
                );
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"workload": "api-objects", "object_bytes": run.object_bytes, "servers": target.servers.len()})
                    );
                }
                for r in &run.reports {
                    print(r, a.json);
                }
                Ok(())
            });
        }
    };
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
            Workload::Kube { phases, value_size } => {
                let phases = phases.phases();
                let t = Target::connect(&eps, phases.clients.min(64)).await?;
                for r in keel_bench::kube_storage::run(&t, &phases, value_size).await? {
                    print(&r, kv.json);
                }
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
