//! `keel kv`: flags (etcd's names and defaults) → a running store member until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_store::auto_compaction::AutoCompaction;
use keel_store::config::{parse_initial_cluster, DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_MAX_REQUEST_BYTES};
use keel_store::{ClusterState, Store, StoreConfig};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KvArgs {
    #[command(subcommand)]
    command: Option<KvCommand>,
    #[command(flatten)]
    member: MemberArgs,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Build a new member's data dir from a backup (`etcdctl snapshot save`); start it with `keel kv` and the
    /// same flags. Every member of the new cluster is restored from the same backup.
    Restore {
        /// The backup file.
        snapshot: PathBuf,
        #[command(flatten)]
        member: MemberArgs,
    },
}

/// The flags of one member, with etcd's names and defaults.
#[derive(Args, Debug)]
pub(crate) struct MemberArgs {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Directory for the Raft log and the state (default: <name>.keel).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URLs to serve the etcd client API on (comma-separated).
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// Client URLs to announce to the cluster (comma-separated).
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to serve other members on (comma-separated).
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    listen_peer_urls: Vec<String>,
    /// Peer URLs other members reach this one at (comma-separated).
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// The initial members: name=peer-url,name=peer-url,…
    #[arg(long, default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// "new" to create the cluster, "existing" to join one.
    #[arg(long, default_value = "new")]
    initial_cluster_state: ClusterState,
    /// Distinguishes clusters created from the same --initial-cluster.
    #[arg(long, default_value = "keel-cluster")]
    initial_cluster_token: String,
    /// Time between leader heartbeats, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_MS)]
    heartbeat_interval: u64,
    /// Time without a leader before a follower campaigns, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_ELECTION_MS)]
    election_timeout: u64,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Applied log entries between two snapshots.
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// Interval of watch progress notifications, in seconds.
    #[arg(long, default_value_t = 600)]
    progress_notify_interval: u64,
    /// Automatic compaction: "revision" (keep the last N revisions) or "periodic" (keep a time span).
    #[arg(long, default_value = "revision")]
    auto_compaction_mode: String,
    /// What automatic compaction keeps: N revisions, or a span like 1h, 30m, 90s; 0 turns it off.
    #[arg(long, default_value = "10000")]
    auto_compaction_retention: String,
    /// How often the leader compares members' hashes to detect divergence, in seconds (0: never).
    #[arg(long, default_value_t = 60)]
    corrupt_check_interval: u64,
    /// URLs to serve /metrics (etcd's metric names) and /health on, over plain HTTP (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) listen_metrics_urls: Vec<String>,
}

impl MemberArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<StoreConfig> {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.keel", self.name)));
        Ok(StoreConfig {
            initial_cluster: parse_initial_cluster(&self.initial_cluster)?,
            name: self.name,
            data_dir,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            max_request_bytes: self.max_request_bytes,
            snapshot_count: self.snapshot_count,
            progress_notify_interval: Duration::from_secs(self.progress_notify_interval.max(1)),
            auto_compaction: AutoCompaction::parse(&self.auto_compaction_mode, &self.auto_compaction_retention)
                .map_err(anyhow::Error::msg)?,
            corrupt_check_interval: Duration::from_secs(self.corrupt_check_interval),
        })
    }
}

pub fn run(args: KvArgs) -> anyhow::Result<()> {
    match args.command {
        Some(KvCommand::Restore { snapshot, member }) => restore(&snapshot, member),
        None => serve(args.member),
    }
}

fn restore(snapshot: &std::path::Path, member: MemberArgs) -> anyhow::Result<()> {
    let config = member.into_config()?;
    keel_store::maintenance::restore(snapshot, &config)
        .map_err(|e| anyhow::anyhow!(keel_store::error_chain(&e)))
        .with_context(|| format!("cannot restore {} into {}", snapshot.display(), config.data_dir.display()))?;
    println!(
        "restored {} into {} (member {:?}); start it with `keel kv` and the same flags",
        snapshot.display(),
        config.data_dir.display(),
        config.name
    );
    Ok(())
}

fn serve(member: MemberArgs) -> anyhow::Result<()> {
    let metrics_urls = member.listen_metrics_urls.clone();
    let config = member.into_config()?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let dir = config.data_dir.clone();
        let name = config.name.clone();
        let clients = config.listen_client_urls.join(",");
        let running = Store::start(config).await.map_err(|e| anyhow::anyhow!(keel_store::error_chain(&e)))
            .with_context(|| format!("cannot start member {name:?} with data dir {}", dir.display()))?;
        tracing::info!(member = %name, id = format!("{:x}", running.store.member_id()), clients, "keel kv member serving");
        serve_metrics(&metrics_urls, running.store.clone()).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

/// Serves `/metrics` (the member's figures under etcd's names) and `/health` (etcd's `{"health":"true"}` while
/// the member sees a leader) on each of `urls` (`http://host:port`), as etcd's `--listen-metrics-urls`.
pub(crate) async fn serve_metrics(urls: &[String], store: Store) -> anyhow::Result<()> {
    use axum::routing::get;
    for url in urls {
        let addr = url
            .strip_prefix("http://")
            .with_context(|| format!("--listen-metrics-urls: {url:?} is not an http:// URL"))?
            .trim_end_matches('/');
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {url} for metrics"))?;
        let (m, h) = (store.clone(), store.clone());
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let text = m.metrics_text();
                    async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text) }
                }),
            )
            .route(
                "/health",
                get(move || {
                    let ok = h.raft().metrics().borrow().current_leader.is_some();
                    async move {
                        let code =
                            if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
                        (code, format!("{{\"health\":\"{ok}\",\"reason\":\"\"}}"))
                    }
                }),
            );
        tracing::info!(%url, "serving metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics server stopped");
            }
        });
    }
    Ok(())
}
