//! The load balancer to the masters (`keel-lb`): inside every daemon that talks to the API (`keel agent`,
//! `keel hollow-nodes`), and as `keel lb`, a local endpoint for kubectl and other clients that keeps working
//! when a master dies.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use keel_lb::{Balancer, Settings};

/// How a daemon reaches the masters.
#[derive(Args, Debug, Clone)]
pub struct MastersArgs {
    /// The masters to start from (https://host:port, comma-separated or repeated; default: the kubeconfig's
    /// server). The list then follows the `kubernetes` Endpoints, which name every live master.
    #[arg(long = "server", value_delimiter = ',')]
    servers: Vec<String>,
    /// Talk to the kubeconfig's server alone, without the local load balancer (no failover).
    #[arg(long)]
    no_lb: bool,
    /// Where the local load balancer listens (default: a free port on 127.0.0.1, for this process alone; a
    /// fixed one lets other clients on the node use it too).
    #[arg(long, default_value = "127.0.0.1:0")]
    lb_listen: SocketAddr,
}

/// Starts a balancer for `config`'s cluster and returns the configuration that goes through it (and the
/// balancer, which must be kept alive, and be given a client to follow the masters with); `None` with
/// `--no-lb`.
pub async fn balanced(config: kube::Config, args: &MastersArgs) -> anyhow::Result<(kube::Config, Option<Balancer>)> {
    if args.no_lb {
        return Ok((config, None));
    }
    let balancer = start(&config, args.servers.clone(), args.lb_listen, None).await?;
    let through = via(config, &balancer)?;
    Ok((through, Some(balancer)))
}

async fn start(
    config: &kube::Config,
    servers: Vec<String>,
    listen: SocketAddr,
    netns: Option<PathBuf>,
) -> anyhow::Result<Balancer> {
    let servers = if servers.is_empty() { vec![config.cluster_url.to_string()] } else { servers };
    let ca = config.root_cert.clone().unwrap_or_default();
    if ca.is_empty() {
        anyhow::bail!("the kubeconfig names no certificate authority: the load balancer checks the masters with it");
    }
    let settings = Settings { netns, ..Settings::new(listen, servers, ca) };
    Balancer::start(settings).await.context("cannot start the load balancer to the masters")
}

/// `config` sent through `balancer`.
fn via(mut config: kube::Config, balancer: &Balancer) -> anyhow::Result<kube::Config> {
    config.cluster_url = format!("https://{}", balancer.local_addr()).parse().context("the balancer's address")?;
    Ok(config)
}

#[derive(Args, Debug)]
pub struct LbArgs {
    /// A kubeconfig for the cluster (its CA checks the masters; its server is the first master).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// More masters to start from (https://host:port, comma-separated or repeated).
    #[arg(long = "server", value_delimiter = ',')]
    servers: Vec<String>,
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Dial the masters from inside this network namespace (e.g. /run/netns/NAME).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Write a copy of the kubeconfig whose server is this balancer.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
}

/// `keel lb`: the balancer alone, until SIGINT or SIGTERM.
pub fn run(args: LbArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let config = crate::server::client_config(&args.kubeconfig).await?;
        let mut servers = vec![config.cluster_url.to_string()];
        servers.extend(args.servers.iter().cloned());
        let balancer = start(&config, servers, args.listen, args.netns.clone()).await?;
        let through = via(config, &balancer)?;
        balancer.follow_endpoints(kube::Client::try_from(through).context("cannot build an API client")?);
        if let Some(path) = &args.write_kubeconfig {
            write_kubeconfig(&args.kubeconfig, path, &format!("https://{}", balancer.local_addr()))?;
        }
        println!("keel lb: listening on {}", balancer.local_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}

/// A copy of the kubeconfig at `from` whose clusters' server is `server`, readable by its owner only.
fn write_kubeconfig(from: &std::path::Path, to: &std::path::Path, server: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", from.display()))?;
    if let Some(clusters) = doc.get_mut("clusters").and_then(|c| c.as_sequence_mut()) {
        for c in clusters {
            if let Some(cluster) = c.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
                cluster.insert("server".into(), server.into());
            }
        }
    }
    let out = serde_yaml_ng::to_string(&doc).context("cannot write the kubeconfig")?;
    let tmp = to.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(out.as_bytes())?;
    }
    std::fs::rename(&tmp, to).with_context(|| format!("cannot write {}", to.display()))
}
