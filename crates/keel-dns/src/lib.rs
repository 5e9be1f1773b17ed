//! Cluster DNS, run by every node agent with a pod network (as NodeLocal DNSCache sits on every node,
//! but authoritative for the cluster's names itself): each node answers its own pods, from the same
//! watches as its Service proxy, so name lookups never cross the network and keep working with the
//! last known names when every master is down.
//!
//! Pods are told the `kube-dns` Service's cluster IP (the masters create it: `kube-system/kube-dns`,
//! selectorless, `internalTrafficPolicy: Local`). Each agent publishes its own endpoint of it, the
//! EndpointSlice `kube-system/kube-dns-<node>` (its pod network's gateway address, its node, owned by its
//! Node), so every node's proxy sends the cluster IP to the node's own server.
//!
//! - [`zone`]: Services and EndpointSlices → names and records (pure);
//! - [`server`]: the hickory-server handler (answers from the zone, forwards the rest upstream).

pub mod server;
pub mod zone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keel_proxy::ServiceState;
use serde_json::json;

/// The Service pods resolve through (created by the masters).
pub const SERVICE: (&str, &str) = ("kube-system", "kube-dns");

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the DNS server stopped: {0}")]
    Server(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster's domain (`cluster.local`).
    pub domain: String,
    /// Where to answer (port 53 on the pod network's gateway address).
    pub listen: SocketAddr,
    /// The pods' network namespace (the agent's `--cni-netns`), or this process's.
    pub netns: Option<PathBuf>,
    /// Where names outside the cluster go (the node's resolv.conf nameservers).
    pub upstream: Vec<SocketAddr>,
    pub node_name: String,
}

/// The nameservers of a resolv.conf text, on port 53.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The EndpointSlice that names this node's server as the `kube-dns` endpoint for its own pods.
pub fn endpoint_slice(node: &str, node_uid: &str, address: &str) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("kube-dns-{node}"),
            "namespace": SERVICE.0,
            "labels": {"kubernetes.io/service-name": SERVICE.1, "endpointslice.kubernetes.io/managed-by": "keel-agent"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "nodeName": node, "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ],
    })
}

/// Writes this node's `kube-dns` EndpointSlice (once its Node exists), retrying until it is stored.
async fn publish(client: kube::Client, node: String, address: String) {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let slices: kube::Api<EndpointSlice> = kube::Api::namespaced(client, SERVICE.0);
    let name = format!("kube-dns-{node}");
    loop {
        let attempt = async {
            let uid = nodes.get(&node).await?.metadata.uid.unwrap_or_default();
            let wanted: EndpointSlice =
                serde_json::from_value(endpoint_slice(&node, &uid, &address)).map_err(kube::Error::SerdeError)?;
            match slices.get_opt(&name).await? {
                Some(current)
                    if current.endpoints == wanted.endpoints
                        && current.metadata.owner_references == wanted.metadata.owner_references => {}
                Some(current) => {
                    let replaced = EndpointSlice {
                        metadata: kube::api::ObjectMeta {
                            resource_version: current.metadata.resource_version,
                            ..wanted.metadata.clone()
                        },
                        ..wanted
                    };
                    slices.replace(&name, &Default::default(), &replaced).await?;
                }
                None => {
                    slices.create(&Default::default(), &wanted).await?;
                }
            }
            Ok::<(), kube::Error>(())
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!(%address, "this node's DNS server is the kube-dns endpoint for its pods");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "publishing the kube-dns endpoint; trying again"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Serves the cluster's names from `state` on `config.listen` until the process ends.
pub async fn run(client: kube::Client, mut state: ServiceState, config: Config) -> Result<(), DnsError> {
    let listen_err = |source| DnsError::Listen { addr: config.listen, source };
    let udp = keel_proxy::netns::udp_socket_in(config.netns.clone(), config.listen).map_err(listen_err)?;
    let tcp = keel_proxy::netns::tcp_listener_in(config.netns.clone(), config.listen).map_err(listen_err)?;

    let build = |state: &ServiceState| {
        let (services, slices) = state.snapshot();
        Arc::new(zone::Zone::build(&services, &slices, &config.domain))
    };
    let (zone_tx, zone) = tokio::sync::watch::channel(build(&state));
    let domain = config.domain.clone();
    tokio::spawn(async move {
        while state.changed().await {
            let (services, slices) = state.snapshot();
            zone_tx.send_replace(Arc::new(zone::Zone::build(&services, &slices, &domain)));
        }
    });
    tokio::spawn(publish(client, config.node_name.clone(), config.listen.ip().to_string()));

    let handler = server::Handler { zone, upstream: config.upstream.clone() };
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    tracing::info!(listen = %config.listen, domain = config.domain, upstream = ?config.upstream, "cluster DNS serving");
    server.block_until_done().await.map_err(|e| DnsError::Server(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf() {
        let text = "# generated\nnameserver 10.0.0.2\nsearch example.org\nnameserver  fd00::53 \nnameserver bogus\n";
        assert_eq!(
            nameservers(text),
            ["10.0.0.2:53".parse().unwrap(), "[fd00::53]:53".parse().unwrap()] as [SocketAddr; 2]
        );
    }

    #[test]
    fn the_slice_names_this_node_for_its_own_pods() {
        let s = endpoint_slice("node-1", "u1", "10.244.1.1");
        assert_eq!(s["metadata"]["name"], "kube-dns-node-1");
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(s["endpoints"][0]["nodeName"], "node-1");
        assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "u1");
    }
}
