//! `keel`: the daemon. `keel kv` runs one member of an external store; `keel server` runs a master (with
//! its own store member, or on an external store); `keel agent` runs a node's pods on containerd.

mod agent;
mod bench;
mod csr;
mod hollow;
mod join;
mod kv;
mod lb;
mod node_cert;
mod node_join;
mod server;
mod token;
mod user;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keel", version, about = "keel: a container orchestrator with its own Raft-replicated store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member of a keel store (etcd v3 API; flags use etcd's names).
    Kv(kv::KvArgs),
    /// Run one master: the Kubernetes API over HTTPS, on its own store member or an external store
    /// (`keel server token ...`: join tokens).
    #[command(args_conflicts_with_subcommands = true)]
    Server(server::ServerArgs),
    /// Run the node agent: register the Node and run the pods bound to it on containerd.
    Agent(agent::AgentArgs),
    /// Images in the agent's containerd (import an OCI image tar).
    Images(agent::ImagesArgs),
    /// Write a container's output to its log file as CRI lines (run by containerd's shim for the agent's
    /// containers; the pipes are fds 3 and 4, fd 5 is closed when ready).
    ContainerLog(agent::ContainerLogArgs),
    /// A local endpoint to the masters that fails over between them (for kubectl and other clients).
    Lb(lb::LbArgs),
    /// Benchmarks (of keel or of etcd, through the same API).
    Bench(bench::BenchArgs),
    /// Run hollow nodes: Nodes without machines whose pods are reported Running (for tests and benchmarks).
    HollowNodes(hollow::HollowArgs),
}

fn main() -> std::process::ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn,h2=warn,tower=warn".into());
    // openraft's line per failed call to a peer is dropped: the store's transport reports each peer's
    // reachability once per change instead.
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(keel_store::QuietOpenraftTransport);
    tracing_subscriber::registry().with(filter).with(output).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Kv(args) => kv::run(args),
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Images(args) => agent::images(args),
        Command::ContainerLog(args) => agent::container_log(args),
        Command::Lb(args) => lb::run(args),
        Command::Bench(args) => bench::run(args),
        Command::HollowNodes(args) => hollow::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
