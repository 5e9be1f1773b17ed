//! `keel hollow-nodes`: Node objects without machines (their Leases renewed, their pods reported Running
//! and Ready), for tests and benchmarks of the control plane.

use std::path::PathBuf;

use clap::Args;
use keel_bench::hollow::HollowConfig;

#[derive(Args, Debug)]
pub struct HollowArgs {
    /// The kubeconfig to reach the cluster with.
    #[arg(long)]
    kubeconfig: PathBuf,
    #[command(flatten)]
    masters: crate::lb::MastersArgs,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// Nodes are named <prefix><i>.
    #[arg(long, default_value = "hollow-")]
    prefix: String,
    /// Each node's allocatable CPU.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Each node's allocatable memory.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Each node's pod capacity.
    #[arg(long, default_value = "110")]
    pods: String,
    /// Spread the nodes over this many zones (topology.kubernetes.io/zone).
    #[arg(long, default_value_t = 0)]
    zones: usize,
    /// Leave the pods bound to these nodes alone (never Running), for benchmarks of the scheduler alone.
    #[arg(long)]
    ignore_pods: bool,
}

pub fn run(args: HollowArgs) -> anyhow::Result<()> {
    let config = HollowConfig {
        prefix: args.prefix,
        count: args.count,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        zones: args.zones,
        labels: Default::default(),
        ignore_pods: args.ignore_pods,
    };
    crate::server::run_with_client(&args.kubeconfig, &args.masters, "hollow nodes failed", |client| {
        keel_bench::hollow::run(client, config)
    })
}
