//! `keel server`: one master. Stacked (the default), it runs a store member with `keel kv`'s flags and
//! talks to that member, so its reads are served locally; external (`--store-endpoints`), it uses a
//! `keel kv` cluster. Either way it serves the Kubernetes API over HTTPS until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use keel_apiserver::leadership::{Campaign, Role};
use keel_apiserver::server::ServerConfig;
use keel_apiserver::storage::Storage;
use keel_store::Store;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::kv::MemberArgs;

/// Seconds the control-loop leader's key outlives its master on an external store (its lease's TTL).
const LEADER_LEASE_TTL: i64 = 3;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where to serve the Kubernetes API.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_listen: SocketAddr,
    /// host:port clients reach this master at (default: --api-listen).
    #[arg(long)]
    api_advertise: Option<String>,
    /// More names or addresses for the serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// The range Services' cluster IPs come from (IPv4 CIDR).
    #[arg(long, default_value = keel_api::services::DEFAULT_SERVICE_CIDR)]
    service_cluster_ip_range: String,
    /// Join a running cluster through any of its masters (https://host:port; several, comma-separated, are
    /// tried in turn): this master's store member is added as a learner, started, and promoted to a voter
    /// once it has caught up. Needs --join-token and --join-ca-hash (from `keel server token create --for
    /// master`), or --join-kubeconfig. Ignored once this master's data dir holds a member (a restart).
    #[arg(long, value_delimiter = ',', conflicts_with = "store_endpoints")]
    join: Vec<String>,
    /// A bootstrap token for masters (`keel server token create --for master`).
    #[arg(long, requires_all = ["join", "join_ca_hash"], conflicts_with = "join_kubeconfig", value_parser = crate::join::parse_token)]
    join_token: Option<keel_apiserver::bootstrap_tokens::Token>,
    /// The cluster CA's pin, sha256:<hex> (printed with the token): a master presenting another CA is
    /// never sent the token.
    #[arg(long, requires = "join_token", value_parser = crate::join::parse_ca_hash)]
    join_ca_hash: Option<String>,
    /// Instead of a token: an existing master's admin.kubeconfig (its credentials and CA).
    #[arg(long, requires = "join")]
    join_kubeconfig: Option<std::path::PathBuf>,
    /// Client URLs of an external keel store (comma-separated); without it the master runs its own member.
    #[arg(long, value_delimiter = ',')]
    store_endpoints: Vec<String>,
    /// How long a node may go without renewing its Lease before it is marked unreachable and tainted
    /// (its pods are evicted after their tolerationSeconds, 30 s unless they say otherwise).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    node_monitor_grace_period: Duration,
    /// How often the HorizontalPodAutoscaler controller looks at every autoscaler (kube-controller-manager's
    /// flag).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    horizontal_pod_autoscaler_sync_period: Duration,
    /// The longest client certificate the cluster CA signs for a CertificateSigningRequest (nodes renew
    /// theirs at 70–90% of their life).
    #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
    cluster_signing_duration: Duration,
    /// The share of not-Ready nodes (more than 2) that makes a zone partially disrupted: its evictions slow
    /// down (large zones) or stop (small ones).
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f32,
    /// Above this many nodes, a partially disrupted zone still evicts, at --secondary-node-eviction-rate.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: u32,
    /// Nodes per second whose pods are evicted (given their NoExecute taint) in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f32,
    /// Nodes per second whose pods are evicted in a large, partially disrupted zone. When every zone is
    /// fully disrupted (no node Ready anywhere) nothing is evicted.
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f32,
    #[command(flatten)]
    member: MemberArgs,
    #[command(subcommand)]
    command: Option<crate::token::ServerCommand>,
}

/// A client URL to dial: a wildcard listen address is reached on loopback.
fn dialable(url: &str) -> String {
    url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
}

fn channel(urls: &[String]) -> anyhow::Result<Channel> {
    let endpoints = urls
        .iter()
        .map(|u| {
            Endpoint::from_shared(dialable(u)).with_context(|| format!("bad store endpoint {u:?}")).map(|e| {
                // HTTP/2 pings find a store member that stopped answering (paused, cut off) within
                // ~1.5 s; its connection is then closed and the balancer sends requests to the others
                // instead of letting a third of them hang until their deadline.
                e.connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_millis(500))
                    .keep_alive_timeout(Duration::from_secs(1))
                    .keep_alive_while_idle(true)
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    match endpoints.as_slice() {
        [] => anyhow::bail!("no store endpoint"),
        [one] => Ok(one.clone().connect_lazy()),
        _ => Ok(Channel::balance_list(endpoints.into_iter())),
    }
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    if let Some(command) = args.command {
        return crate::token::run(command);
    }
    let join_credentials = match (args.join_token, args.join_ca_hash, args.join_kubeconfig) {
        (Some(token), Some(ca_hash), _) => Some(crate::join::Credentials::Token { token, ca_hash }),
        (_, _, Some(path)) => Some(crate::join::Credentials::Kubeconfig(path)),
        _ if !args.join.is_empty() => {
            anyhow::bail!("--join needs --join-token and --join-ca-hash, or --join-kubeconfig")
        }
        _ => None,
    };
    let metrics_urls = args.member.listen_metrics_urls.clone();
    let mut config = args.member.into_config()?;
    let advertise = args.api_advertise.unwrap_or_else(|| args.api_listen.to_string());
    // The address other masters dial to see whether this one, leading, is gone (host:port, no scheme).
    let dial = keel_lb::server_address(&advertise).unwrap_or_else(|_| advertise.clone());
    let mut server = ServerConfig {
        listen: args.api_listen,
        advertise,
        tls_sans: args.tls_san,
        data_dir: config.data_dir.clone(),
        service_cidr: keel_api::services::ServiceCidr::parse(&args.service_cluster_ip_range)
            .map_err(anyhow::Error::msg)
            .context("bad --service-cluster-ip-range")?,
        identity: config.name.clone(),
        // Stacked masters follow their members' Raft leadership (set below once the member runs).
        campaign: Campaign::Lease { ttl: LEADER_LEASE_TTL, address: dial },
        extra_metrics: None,
        node_lifecycle: None,
        cluster_signing_duration: args.cluster_signing_duration,
    };
    // The node lifecycle controller's report, from keel-controllers to the API server's /readyz.
    let (lifecycle_tx, lifecycle_rx) = watch::channel(keel_controllers::NOT_LEADING.to_string());
    server.node_lifecycle = Some(lifecycle_rx);
    let disruption = keel_controllers::disruption::DisruptionSettings {
        unhealthy_zone_threshold: args.unhealthy_zone_threshold,
        large_cluster_size_threshold: args.large_cluster_size_threshold,
        node_eviction_rate: args.node_eviction_rate,
        secondary_node_eviction_rate: args.secondary_node_eviction_rate,
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        // Joining: the member's place in the store comes from the cluster, not from the flags.
        let joining = match &join_credentials {
            Some(credentials) if !config.data_dir.join("raft-log").exists() => {
                crate::join::add_member(&args.join, credentials, &mut config).await?;
                true
            }
            Some(_) => {
                tracing::info!("this master's data dir holds a member already: --join is not needed again");
                config.initial_cluster_state = keel_store::ClusterState::Existing;
                true
            }
            _ => false,
        };
        let my_peer_urls = config.initial_advertise_peer_urls.clone();
        let (member, urls) = if args.store_endpoints.is_empty() {
            let dir = config.data_dir.clone();
            let name = config.name.clone();
            let urls = config.listen_client_urls.clone();
            let running = Store::start(config)
                .await
                .map_err(|e| anyhow::anyhow!(keel_store::error_chain(&e)))
                .with_context(|| format!("cannot start member {name:?} with data dir {}", dir.display()))?;
            server.campaign = Campaign::Raft(running.store.leadership());
            crate::kv::serve_metrics(&metrics_urls, running.store.clone()).await?;
            let store = running.store.clone();
            server.extra_metrics =
                Some(keel_apiserver::metrics::ExtraMetrics(std::sync::Arc::new(move || store.metrics_text())));
            (Some(running), urls)
        } else {
            (None, args.store_endpoints)
        };
        let storage = Storage::new(channel(&urls)?);
        let master = keel_apiserver::server::start(server, storage).await?;
        let own = &master.identities;
        if joining {
            tokio::spawn(crate::join::promote(config_from_yaml(&own.loopback).await?, my_peer_urls));
        }
        let identities = keel_controllers::Identities {
            controllers: config_from_yaml(&own.controller_manager).await?,
            scheduler: config_from_yaml(&own.scheduler).await?,
        };
        let settings = keel_controllers::Settings {
            node_monitor_grace_period: args.node_monitor_grace_period,
            horizontal_pod_autoscaler_sync_period: args.horizontal_pod_autoscaler_sync_period,
            disruption,
            node_lifecycle_status: Some(std::sync::Arc::new(lifecycle_tx)),
            ..Default::default()
        };
        let controllers = tokio::spawn(keel_controllers::run(
            identities,
            leading_fence(master.role.clone(), master.bootstrapped.clone()),
            settings,
        ));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut role = master.role.clone();
        let api = tokio::spawn(master.serve(async {
            let _ = stop_rx.await;
        }));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
            r = api => r.context("the API server task failed")?.context("the API server stopped"),
        };
        tracing::info!("shutting down");
        controllers.abort();
        let _ = stop_tx.send(());
        // A leader on an external store resigns (revokes its lease) so that another master leads at once;
        // the API server's own shutdown waits for open watches, so that is not what this waits for.
        if member.is_none() {
            let resigned = role.wait_for(|r| !matches!(r, keel_apiserver::leadership::Role::Leader { .. }));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), resigned).await;
        }
        if let Some(m) = member {
            m.shutdown().await;
        }
        result
    })
}

/// A kube-rs client configuration from a kubeconfig file.
pub(crate) async fn client_config(path: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("cannot read {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("cannot use {}", path.display()))
}

/// A kube-rs client configuration from a kubeconfig's text.
async fn config_from_yaml(yaml: &str) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).context("a master's own kubeconfig")?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.context("a master's own kubeconfig")
}

/// Runs `daemon` with an API client from `kubeconfig` until it ends or the process gets SIGINT or SIGTERM
/// (the hollow nodes, the agent).
pub(crate) fn run_with_client<F, Fut, E>(
    kubeconfig: &std::path::Path,
    masters: &crate::lb::MastersArgs,
    what: &'static str,
    daemon: F,
) -> anyhow::Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    run_with_config(kubeconfig, masters, |_, client| async move { daemon(client).await.context(what) })
}

/// Runs `daemon` with the client configuration of `kubeconfig` and a client of it until it ends or the
/// process gets SIGINT or SIGTERM. Unless `masters` says `--no-lb`, the configuration goes through a load
/// balancer of the process's own that fails over between the masters. A node's client certificate in
/// `kubeconfig` is renewed before it expires (`crate::node_cert`).
pub(crate) fn run_with_config<F, Fut>(
    kubeconfig: &std::path::Path,
    masters: &crate::lb::MastersArgs,
    daemon: F,
) -> anyhow::Result<()>
where
    F: FnOnce(kube::Config, kube::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let config = client_config(kubeconfig).await?;
        let (config, balancer) = crate::lb::balanced(config, masters).await?;
        let client = crate::node_cert::client(kubeconfig, config.clone()).await?;
        if let Some(balancer) = &balancer {
            balancer.follow_endpoints(client.clone());
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
            r = daemon(config, client) => r,
        }
    })
}

/// `Some(fence)` while this master leads the control loops, from when its default RBAC roles are in place
/// (`bootstrapped`), as kube-controller-manager waits for kube-apiserver's readiness.
fn leading_fence(
    mut role: watch::Receiver<Role>,
    mut bootstrapped: watch::Receiver<bool>,
) -> watch::Receiver<Option<i64>> {
    let fence = |r: &Role| match r {
        Role::Leader { fence } => Some(*fence),
        Role::Follower { .. } => None,
    };
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        if bootstrapped.wait_for(|b| *b).await.is_err() {
            return;
        }
        let now = fence(&role.borrow_and_update());
        tx.send_replace(now);
        while role.changed().await.is_ok() {
            let now = fence(&role.borrow());
            tx.send_if_modified(|f| std::mem::replace(f, now) != now);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::dialable;

    #[test]
    fn wildcard_listen_urls_are_dialed_on_loopback() {
        assert_eq!(dialable("http://0.0.0.0:2379"), "http://127.0.0.1:2379");
        assert_eq!(dialable("http://[::]:2379"), "http://[::1]:2379");
        assert_eq!(dialable("http://10.0.0.1:2379"), "http://10.0.0.1:2379");
    }
}
