//! keel-agent: the node agent (keel's kubelet). It registers its Node, renews the node's Lease, watches the
//! pods bound to it and runs them on containerd.
//!
//! Pure decision logic ([`sync`], [`spec`], [`image`], [`names`], [`logs::cri`], [`logs::select`],
//! [`cgroups`], [`stats`]) is unit-tested without IO; [`runtime`] (containerd), [`sandbox`] (the pods'
//! namespaces), [`node`], [`worker`], [`logs`] (the containers' logger and log reader), [`sampler`] (CPU
//! and memory figures) and [`server`] (the HTTPS endpoint) do the IO. See
//! docs/adr/003-node-agent.md for the design and what comes next.

pub mod cgroups;
pub mod cni;
pub mod env;
pub mod events;
pub mod exec;
pub mod handlers;
pub mod image;
pub mod logs;
pub mod names;
pub mod node;
pub mod pod_network;
pub mod portforward;
pub mod probe;
pub mod prober;
pub mod resolv;
pub mod runtime;
pub mod sampler;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod stats;
pub mod sync;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

pub use runtime::{Containerd, RuntimeError};

/// Every Service in the cluster now (from a watch the caller keeps), for the containers' variables.
#[derive(Clone)]
pub struct ServiceLister(pub Arc<dyn Fn() -> Vec<k8s_openapi::api::core::v1::Service> + Send + Sync>);

impl std::fmt::Debug for ServiceLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceLister")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: String,
    /// The node's pod CIDR: pods get addresses from it through CNI (bridge + host-local). None: pods have
    /// only their loopback interface.
    pub pod_cidr: Option<String>,
    /// Where the CNI plugins are.
    pub cni_bin_dir: PathBuf,
    /// The bridge the pods' veths join.
    pub cni_bridge: String,
    /// Run the CNI plugins in this network namespace (a bind-mounted file) instead of the agent's own: the
    /// node's "host" when several nodes share a machine (tests, deploy/).
    pub cni_netns: Option<PathBuf>,
    /// Registries (`host:port`) pulled from over plain HTTP instead of HTTPS.
    pub insecure_registries: Vec<String>,
    pub containerd_socket: PathBuf,
    pub containerd_namespace: String,
    /// The pods' namespace files and the agent's own state.
    pub data_dir: PathBuf,
    /// The containers' logs (`<namespace>_<pod>_<uid>/<container>/<attempt>.log`).
    pub log_dir: PathBuf,
    /// The program containerd's shim runs to write each container's log as CRI lines (the `keel` binary,
    /// [`logs::writer`]). None: the shim appends the raw output to the log file itself.
    pub container_logger: Option<PathBuf>,
    /// A container's log file is rotated before it grows past this many bytes…
    pub log_max_bytes: u64,
    /// …and at most this many files are kept per attempt.
    pub log_max_files: u32,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    pub labels: BTreeMap<String, String>,
    pub settings: sync::Settings,
    /// How often every pod is looked at even when nothing is heard.
    pub resync: Duration,
    /// How often the node's and the containers' CPU and memory are sampled ([`sampler`]).
    pub housekeeping_interval: Duration,
    /// Where the agent's HTTPS endpoint (logs) listens; its port is published on the Node.
    pub listen: SocketAddr,
    /// The cluster CA's certificates (DER): the endpoint's clients (the API server) must present a
    /// certificate one of them signed.
    pub client_ca: Vec<Vec<u8>>,
    /// The cluster DNS pods resolve through (`None`: pods get the node's resolv.conf).
    pub dns: Option<resolv::ClusterDns>,
    /// The Services, for the containers' `<SVC>_SERVICE_HOST` variables (`None`: no such variables).
    pub services: Option<ServiceLister>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot register node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Server(#[from] server::ServerError),
    #[error("the agent's endpoint failed: {0}")]
    Serve(std::io::Error),
}

/// The pod network of a node configured like this, if it has one.
pub fn network(config: &Config) -> Option<cni::Network> {
    let cidr = config.pod_cidr.as_ref()?;
    Some(cni::Network::bridge(
        config.cni_bin_dir.clone(),
        &config.data_dir.join("cni"),
        &config.cni_bridge,
        cidr,
        config.cni_netns.clone(),
    ))
}

/// Runs the agent until cancelled (dropped).
pub async fn run(client: Client, config: Config) -> Result<(), AgentError> {
    std::fs::create_dir_all(config.data_dir.join("pods"))?;
    std::fs::create_dir_all(&config.log_dir)?;
    let runtime =
        Containerd::connect_retrying(&config.containerd_socket, &config.containerd_namespace, Duration::from_secs(30))
            .await?;
    let version = runtime.version().await?;
    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen { addr: config.listen, source })?;
    let identity = server::Identity::generate(&config.node_name, &[config.node_ip.clone(), config.node_name.clone()])?;
    let tls = identity.server_config(&config.client_ca)?;
    let endpoint = node::Endpoint { port: tcp.local_addr()?.port(), cert_sha256: identity.fingerprint.clone() };
    node::register(&client, &config, &version, &endpoint)
        .await
        .map_err(|source| AgentError::Register { node: config.node_name.clone(), source })?;
    tracing::info!(node = %config.node_name, containerd = %version, listen = %config.listen, "node registered");
    let network = pod_network::HostNetwork::new(config.data_dir.clone(), network(&config));
    let shared =
        Arc::new(worker::Shared::new(client.clone(), Arc::new(runtime.clone()), Arc::new(network), config.clone()));
    let runner = exec::Runner::new(runtime.clone(), config.data_dir.join("exec"));
    let stats = Arc::new(sampler::Stats::default());
    let app = server::app(
        shared.clone(),
        Some(runner),
        Some(config.data_dir.clone()),
        config.log_dir.clone(),
        config.node_name.clone(),
    )
    .merge(server::stats_routes(stats.clone()));
    tokio::select! {
        () = sampler::run(shared.clone(), stats, config.housekeeping_interval) => Ok(()),
        () = node::heartbeat(client, config, version, endpoint) => Ok(()),
        () = watch_pods(shared.clone()) => Ok(()),
        () = reclaim_volumes(shared.clone()) => Ok(()),
        () = watch_exits(shared, runtime) => Ok(()),
        r = server::serve(tcp, tls, app) => r.map_err(AgentError::Serve),
    }
}

/// Keeps the map of this node's pods and wakes their workers. After each (re)list, pods that are gone, and
/// pods found only on the node (containers, namespace files), get a worker that cleans them away.
async fn watch_pods(shared: Arc<worker::Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut events = watcher::watcher(api, watcher::Config::default().fields(&selector)).boxed();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                listed.insert(uid.clone());
                shared.pods.lock().expect("pods lock").insert(uid.clone(), pod);
                shared.wake(&uid);
            }
            Ok(Event::InitDone) => {
                let mut stale: HashSet<String> = {
                    let mut pods = shared.pods.lock().expect("pods lock");
                    let gone: HashSet<String> = pods.keys().filter(|u| !listed.contains(*u)).cloned().collect();
                    pods.retain(|uid, _| listed.contains(uid));
                    gone
                };
                stale.extend(node_only_pods(&shared, &listed).await);
                for uid in stale {
                    shared.wake(&uid);
                }
            }
            Ok(Event::Apply(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                shared.pods.lock().expect("pods lock").insert(uid.clone(), pod);
                shared.wake(&uid);
            }
            Ok(Event::Delete(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                shared.pods.lock().expect("pods lock").remove(&uid);
                shared.wake(&uid);
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; it retries");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Removes the directories of keel's local volumes (`<data dir>/volumes/<name>`) whose PersistentVolume
/// is gone: a released volume deleted per its reclaim policy takes its data with it (a kept one, `Retain`,
/// keeps it). Looked at every 10 s.
async fn reclaim_volumes(shared: Arc<worker::Shared>) {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let root = shared.config.data_dir.join("volumes");
    let api: Api<PersistentVolume> = Api::all(shared.client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match api.get_opt(&name).await {
                Ok(None) => match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => tracing::info!(volume = %name, "volume deleted: its directory removed"),
                    Err(e) => tracing::warn!(volume = %name, error = %e, "cannot remove a deleted volume's directory"),
                },
                Ok(Some(_)) => {}
                Err(e) => tracing::debug!(volume = %name, error = %e, "cannot look up a volume; its directory stays"),
            }
        }
    }
}

/// The uids of pods that have containers or a directory on this node but are not among `listed`.
async fn node_only_pods(shared: &worker::Shared, listed: &HashSet<String>) -> HashSet<String> {
    let mut uids = HashSet::new();
    match shared.runtime.containers(None).await {
        Ok(containers) => uids.extend(containers.into_iter().map(|c| c.pod_uid)),
        Err(e) => tracing::warn!(error = %e, "cannot list containers to find orphans"),
    }
    for entry in std::fs::read_dir(shared.config.data_dir.join("pods")).into_iter().flatten().flatten() {
        uids.insert(entry.file_name().to_string_lossy().into_owned());
    }
    uids.retain(|u| !u.is_empty() && !listed.contains(u));
    uids
}

/// Wakes the worker of a pod whose container exited. The subscription is made again when it breaks, and every
/// worker is woken then (exits may have been missed).
async fn watch_exits(shared: Arc<worker::Shared>, runtime: Containerd) {
    loop {
        match runtime.exits().await {
            Ok(stream) => {
                shared.wake_all();
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(id) => {
                            let uid = shared.containers.lock().expect("containers lock").get(&id).cloned();
                            if let Some(uid) = uid {
                                shared.wake(&uid);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "containerd's event stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to containerd's events"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
