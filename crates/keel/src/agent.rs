//! `keel agent`: the node agent, which runs the pods bound to its node on containerd; and `keel images`,
//! which imports an OCI image tar into that containerd (for nodes without a registry).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_agent::{sync::Settings, Config, Containerd};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The kubeconfig to reach the cluster with (or, with --join, where the node's own is kept; default
    /// `<data-dir>/node.kubeconfig`).
    #[arg(long, required_unless_present = "join")]
    kubeconfig: Option<PathBuf>,
    /// Join the cluster through these masters (comma-separated; each tried in turn) with a node join token
    /// (`keel server token create --for node --print-join-command`): the node gets a client certificate of
    /// its own (`system:node:<name>`) and uses nothing else from then on.
    #[arg(long, value_delimiter = ',', requires_all = ["join_token", "join_ca_hash"])]
    join: Vec<String>,
    /// The node join token.
    #[arg(long, requires = "join", value_parser = crate::join::parse_token)]
    join_token: Option<keel_apiserver::bootstrap_tokens::Token>,
    /// The cluster CA's pin (`sha256:<hex>`), checked before the token is sent.
    #[arg(long, requires = "join", value_parser = crate::join::parse_ca_hash)]
    join_ca_hash: Option<String>,
    #[command(flatten)]
    masters: crate::lb::MastersArgs,
    /// The Node's name (default: the machine's hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP, where the masters and the other nodes reach it (its node ports answer there
    /// too). Default: the source address of this machine's default route, else its first non-loopback
    /// address.
    #[arg(long)]
    node_ip: Option<std::net::IpAddr>,
    /// Where the agent's HTTPS endpoint (containers' logs, for the API server) listens; its port is
    /// published on the Node.
    #[arg(long, default_value = "0.0.0.0:10250")]
    listen: std::net::SocketAddr,
    /// The node's pod CIDR (spec.podCIDR): pods get their addresses from it through CNI. Without it, pods
    /// have only their loopback interface.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Where the CNI plugins are (Debian's containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// The bridge the pods' interfaces join.
    #[arg(long, default_value = "keel0")]
    cni_bridge: String,
    /// Run the CNI plugins in this network namespace (e.g. /run/netns/NAME) instead of the agent's own.
    #[arg(long)]
    cni_netns: Option<PathBuf>,
    /// Every pod address in the cluster (all nodes' pod CIDRs): traffic to a Service from outside it is
    /// masqueraded, so that replies come back through this node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: keel_proxy::Cidr,
    /// Do not run the Service proxy (its nftables table `ip keel-proxy` in the pods' network namespace).
    /// Without --pod-cidr there is no pod network and no proxy either.
    #[arg(long)]
    no_proxy: bool,
    /// The cluster DNS address pods are told (the `kube-dns` Service's cluster IP).
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: std::net::Ipv4Addr,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where the node's Ingress proxy listens (ports 80 and 443, in the pods' network namespace).
    #[arg(long, default_value = "0.0.0.0")]
    ingress_address: std::net::IpAddr,
    /// The Ingress proxy's plain HTTP port.
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// The Ingress proxy's HTTPS port.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
    /// Do not serve Ingresses on this node. Without --pod-cidr there is no Ingress proxy either.
    #[arg(long)]
    no_ingress: bool,
    /// Where the node's DNS server sends names outside the cluster (ip or ip:port, comma-separated; default:
    /// the nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Do not serve cluster DNS on this node (pods then get the node's resolv.conf). Without --pod-cidr
    /// there is no node DNS either.
    #[arg(long)]
    no_dns: bool,
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// A registry (host:port) to pull from over plain HTTP instead of HTTPS, repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Where the agent keeps its state (the pods' namespace files).
    #[arg(long, default_value = "/var/lib/keel/agent")]
    data_dir: PathBuf,
    /// Where the containers' logs go.
    #[arg(long, default_value = "/var/log/keel/pods")]
    log_dir: PathBuf,
    /// The size at which a container's log file is rotated (a quantity: 10Mi, 500Ki, 1000000).
    #[arg(long, default_value = "10Mi", value_parser = parse_size)]
    container_log_max_size: u64,
    /// How many log files (the current one included) are kept per container.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    container_log_max_files: u32,
    /// Allocatable CPU (default: the machine's CPUs).
    #[arg(long)]
    cpu: Option<String>,
    /// Allocatable memory (default: the machine's memory).
    #[arg(long)]
    memory: Option<String>,
    /// How many pods the node takes.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// A label for the Node (key=value), repeatable.
    #[arg(long = "node-label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The first restart back-off of a crashing container, doubled on each restart.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    backoff_base: Duration,
    /// The longest restart back-off.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    backoff_max: Duration,
    /// How often each pod is looked at when nothing is heard about it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// How often the node's and its containers' CPU and memory are sampled (cAdvisor's housekeeping
    /// interval): CPU rates are over this window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    housekeeping_interval: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ContainerdArgs {
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// The containerd namespace the agent's images and containers live in.
    #[arg(long, default_value = "keel")]
    containerd_namespace: String,
}

/// A DNS server: `ip:port`, or an IP on port 53.
fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or ip:port"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not key=value"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let q = keel_api::quantity::Quantity::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    u64::try_from(q.value()).ok().filter(|n| *n > 0).ok_or_else(|| format!("{s:?} is not a positive size"))
}

/// This program, which containerd's shim runs as the containers' logger (`keel container-log`).
fn this_program() -> Option<PathBuf> {
    match std::env::current_exe() {
        // Replaced on disk while running (a rebuild): the new file at the same path is the logger too.
        Ok(p) => Some(PathBuf::from(p.to_string_lossy().trim_end_matches(" (deleted)"))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program; containers' logs will be raw, without times");
            None
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "node".into())
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let cpu =
        args.cpu.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string());
    let memory = match args.memory {
        Some(m) => m,
        None => format!("{}Ki", keel_agent::node::machine_memory().context("cannot read /proc/meminfo")? / 1024),
    };
    let config = Config {
        node_name: args.node_name.unwrap_or_else(hostname),
        node_ip: args.node_ip.unwrap_or_else(keel_agent::node::default_address).to_string(),
        pod_cidr: args.pod_cidr,
        cni_bin_dir: args.cni_bin_dir,
        cni_bridge: args.cni_bridge,
        cni_netns: args.cni_netns,
        insecure_registries: args.insecure_registries,
        containerd_socket: args.containerd.containerd_socket,
        containerd_namespace: args.containerd.containerd_namespace,
        // Absolute, as the paths under it go to containerd and runc (namespace files, volumes) and to the
        // containers' logger, which containerd's shim starts elsewhere.
        data_dir: std::path::absolute(&args.data_dir)
            .with_context(|| format!("cannot resolve {}", args.data_dir.display()))?,
        log_dir: std::path::absolute(&args.log_dir)
            .with_context(|| format!("cannot resolve {}", args.log_dir.display()))?,
        container_logger: this_program(),
        log_max_bytes: args.container_log_max_size,
        log_max_files: args.container_log_max_files,
        cpu,
        memory,
        max_pods: args.max_pods,
        labels: args.labels.into_iter().collect(),
        settings: Settings { backoff_base: args.backoff_base, backoff_max: args.backoff_max },
        resync: args.resync,
        housekeeping_interval: args.housekeeping_interval,
        listen: args.listen,
        client_ca: Vec::new(),
        dns: None,
        services: None,
    };
    let pods: Option<keel_proxy::Cidr> =
        config.pod_cidr.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg).context("bad --pod-cidr")?;
    let proxy = match (pods, args.no_proxy) {
        (Some(pods), false) => Some(keel_proxy::Config {
            node_name: config.node_name.clone(),
            network: keel_proxy::NodeNetwork { cluster_cidr: Some(args.cluster_cidr), pod_cidr: Some(pods) },
            netns: config.cni_netns.clone(),
        }),
        _ => None,
    };
    if pods.is_some() && args.no_proxy {
        keel_proxy::remove(config.cni_netns.clone()).context("cannot remove the Service proxy's table")?;
    }
    // The node's DNS answers on its pod network's gateway (the bridge's address), port 53.
    let dns = match (pods, args.no_dns) {
        (Some(pods), false) => Some(keel_dns::Config {
            domain: args.cluster_domain.clone(),
            listen: std::net::SocketAddr::new(std::net::Ipv4Addr::from(u32::from(pods.addr) + 1).into(), 53),
            netns: config.cni_netns.clone(),
            upstream: if args.dns_upstream.is_empty() {
                keel_dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
            } else {
                args.dns_upstream.clone()
            },
            node_name: config.node_name.clone(),
        }),
        _ => None,
    };
    let ingress = match (pods, args.no_ingress) {
        (Some(_), false) => Some(keel_ingress::Config {
            http: std::net::SocketAddr::new(args.ingress_address, args.ingress_http_port),
            https: std::net::SocketAddr::new(args.ingress_address, args.ingress_https_port),
            netns: config.cni_netns.clone(),
        }),
        _ => None,
    };
    let config = Config {
        dns: dns.as_ref().map(|_| keel_agent::resolv::ClusterDns {
            server: args.cluster_dns.to_string(),
            domain: args.cluster_domain.clone(),
        }),
        ..config
    };
    let kubeconfig = match (&args.join_token, &args.join_ca_hash) {
        (Some(token), Some(ca_hash)) => {
            let path = args.kubeconfig.clone().unwrap_or_else(|| config.data_dir.join("node.kubeconfig"));
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(crate::node_join::credentials(&args.join, token, ca_hash, &config.node_name, &path))?;
            path
        }
        _ => args.kubeconfig.clone().context("--kubeconfig or --join is needed")?,
    };
    crate::server::run_with_config(&kubeconfig.clone(), &args.masters, |kube_config, client| async move {
        // The cluster CA the kubeconfig trusts also signs the API server's client certificate.
        let client_ca = kube_config.root_cert.clone().unwrap_or_default();
        if client_ca.is_empty() {
            anyhow::bail!(
                "{} names no certificate authority: the agent needs the cluster CA to check who calls it",
                kubeconfig.display()
            );
        }
        // One watch of Services and EndpointSlices: the containers' variables, the proxy, the DNS server.
        let state = keel_proxy::ServiceState::follow(client.clone()).await;
        let lister = state.clone();
        let services = keel_agent::ServiceLister(std::sync::Arc::new(move || lister.snapshot().0));
        let agent = keel_agent::run(client.clone(), Config { client_ca, services: Some(services), ..config });
        tokio::select! {
            r = agent => r.context("the agent failed"),
            r = node_services(client, state, proxy, dns, ingress) => r,
        }
    })
}

/// The node's Service proxy, DNS server and Ingress proxy on `state`; runs until one fails (never, without
/// any).
async fn node_services(
    client: kube::Client,
    state: keel_proxy::ServiceState,
    proxy: Option<keel_proxy::Config>,
    dns: Option<keel_dns::Config>,
    ingress: Option<keel_ingress::Config>,
) -> anyhow::Result<()> {
    let proxy = async {
        match proxy {
            Some(config) => keel_proxy::run(state.clone(), config).await.context("the service proxy failed"),
            None => std::future::pending().await,
        }
    };
    let dns = async {
        match dns {
            Some(config) => keel_dns::run(client.clone(), state.clone(), config).await.context("cluster DNS failed"),
            None => std::future::pending().await,
        }
    };
    let ingress = async {
        match ingress {
            Some(config) => {
                keel_ingress::run(client.clone(), state.clone(), config).await.context("the ingress failed")
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = proxy => r,
        r = dns => r,
        r = ingress => r,
    }
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(Subcommand, Debug)]
enum ImagesCommand {
    /// Import the images of an OCI image-layout tar (named by their io.containerd.image.name annotation).
    Import {
        #[command(flatten)]
        containerd: ContainerdArgs,
        /// The tar file.
        file: PathBuf,
    },
}

pub fn images(args: ImagesArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match args.command {
        ImagesCommand::Import { containerd, file } => rt.block_on(async move {
            let runtime = Containerd::connect(&containerd.containerd_socket, &containerd.containerd_namespace).await?;
            let names =
                runtime.import_oci_archive(&file).await.with_context(|| format!("cannot import {}", file.display()))?;
            if names.is_empty() {
                anyhow::bail!("{} names no image (no io.containerd.image.name annotation)", file.display());
            }
            for name in names {
                println!("{name}");
            }
            Ok(())
        }),
    }
}

#[derive(Args, Debug)]
pub struct ContainerLogArgs {
    /// `<max bytes>:<max files>:<log file>`.
    spec: String,
}

/// `keel container-log`: the logger of one container, as containerd's shim runs it.
pub fn container_log(args: ContainerLogArgs) -> anyhow::Result<()> {
    keel_agent::logs::writer::run_for_shim(&args.spec).context("the container logger failed")
}
