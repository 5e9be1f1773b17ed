//! The agent's Node: registered with the machine's capacity, addresses and versions; its Lease in
//! `kube-node-lease` renewed every 10 s (what the node lifecycle controller watches); its status reported
//! again every minute, and at once when someone else marked it not Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::Config;

/// How often the Lease is renewed (the kubelet's default).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// The Lease duration declared (the kubelet's default).
pub const LEASE_SECONDS: i32 = 40;
/// The kubelet version the node reports: the API version keel serves.
pub const KUBELET_VERSION: &str = "v1.33.0";
/// How often the status is reported when nothing changed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// Where the API server reaches the agent's HTTPS endpoint (at the node's InternalIP), and the SHA-256 of
/// the certificate it serves, which the API server pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub port: u16,
    pub cert_sha256: String,
}

fn now() -> String {
    keel_api::meta::timestamp(jiff::Timestamp::now())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The address this machine reaches others from: the source address of its default route (a UDP socket
/// "connected" to a documentation address sends nothing, it only picks the route), else its first
/// non-loopback IPv4 address, else 127.0.0.1. What a node reports as its InternalIP unless told.
pub fn default_address() -> std::net::IpAddr {
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").and(s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback());
    routed.or_else(first_interface_address).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The first non-loopback IPv4 address of an interface that is up (from /proc/net/fib_trie's local
/// routes, which need no netlink).
fn first_interface_address() -> Option<std::net::IpAddr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    local_addresses(&trie).into_iter().find(|ip| !ip.is_loopback()).map(std::net::IpAddr::V4)
}

/// The addresses /proc/net/fib_trie lists as this host's own (`/32 host LOCAL`), in order.
fn local_addresses(trie: &str) -> Vec<std::net::Ipv4Addr> {
    let mut found = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("|-- ") {
            last = rest.trim().parse().ok();
        } else if line.contains("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !found.contains(ip)) {
                found.push(ip);
            }
        }
    }
    found
}

/// The machine's memory in bytes, from /proc/meminfo.
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn status(config: &Config, runtime_version: &str, endpoint: &Endpoint) -> Value {
    let resources = json!({"cpu": config.cpu, "memory": config.memory, "pods": config.max_pods.to_string()});
    let t = now();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "capacity": resources, "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "keel agent has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "keel agent has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "keel agent has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "keel agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.node_ip},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": endpoint.port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("containerd://{runtime_version}"),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": crate::image::host_architecture(),
        },
    })
}

fn annotations(endpoint: &Endpoint) -> Value {
    json!({keel_api::agent_api::CERT_ANNOTATION: endpoint.cert_sha256})
}

fn node_object(config: &Config, runtime_version: &str, endpoint: &Endpoint) -> Node {
    let mut labels: BTreeMap<String, String> = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), config.node_name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), crate::image::host_architecture().into());
    let mut spec = json!({});
    if let Some(cidr) = &config.pod_cidr {
        spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels, "annotations": annotations(endpoint)},
        "spec": spec,
        "status": status(config, runtime_version, endpoint),
    }))
    .expect("the agent's Node is a valid Node")
}

/// Creates the Node (or finds it, and publishes this run's certificate on it) and reports its status.
pub async fn register(
    client: &Client,
    config: &Config,
    runtime_version: &str,
    endpoint: &Endpoint,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.create(&PostParams::default(), &node_object(config, runtime_version, endpoint)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"annotations": annotations(endpoint)}});
            nodes.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Err(e) => return Err(e),
    }
    report(&nodes, config, runtime_version, endpoint).await
}

async fn report(
    nodes: &Api<Node>,
    config: &Config,
    runtime_version: &str,
    endpoint: &Endpoint,
) -> Result<(), kube::Error> {
    let patch = json!({"status": status(config, runtime_version, endpoint)});
    nodes.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
}

/// Renews the Lease and reports the status, until cancelled. Failures are logged and retried.
pub async fn heartbeat(client: Client, config: Config, runtime_version: String, endpoint: Endpoint) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut tick = tokio::time::interval(RENEW_INTERVAL);
    let mut last_report = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        // A failed renewal is tried again soon (200 ms, doubling), as the kubelet's lease controller does:
        // waiting for the next tick would leave the node one renewal short of its grace period.
        let mut retry = Duration::from_millis(200);
        for attempt in 1..=5 {
            match renew(&leases, &nodes, &config.node_name).await {
                Ok(()) => break,
                Err(e) if attempt == 5 => tracing::warn!(error = %e, "cannot renew the node's lease"),
                Err(e) => {
                    tracing::debug!(error = %e, "renewing the node's lease failed; trying again");
                    tokio::time::sleep(retry).await;
                    retry *= 2;
                }
            }
        }
        let ready = match nodes.get(&config.node_name).await {
            Ok(node) => node
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // Deleted from under us: register again, as the kubelet does.
                if let Err(e) = register(&client, &config, &runtime_version, &endpoint).await {
                    tracing::warn!(error = %e, "cannot register the node again");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node");
                continue;
            }
        };
        if !ready || last_report.elapsed() >= STATUS_INTERVAL {
            match report(&nodes, &config, &runtime_version, &endpoint).await {
                Ok(()) => last_report = tokio::time::Instant::now(),
                Err(e) => tracing::warn!(error = %e, "cannot report the node's status"),
            }
        }
    }
}

async fn renew(leases: &Api<Lease>, nodes: &Api<Node>, node: &str) -> Result<(), kube::Error> {
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now()});
    match leases.patch(node, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let uid = nodes.get(node).await?.metadata.uid.unwrap_or_default();
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]},
                "spec": spec,
            }))
            .expect("a node lease is a valid Lease");
            leases.create(&PostParams::default(), &lease).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_come_from_the_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
                    +-- 10.200.0.0/24 2 0 2\n        |-- 10.200.0.11\n           /32 host LOCAL\n     \
                    |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n        |-- 10.200.0.11\n           /32 host LOCAL\n";
        let want: Vec<std::net::Ipv4Addr> = vec!["10.200.0.11".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        assert_eq!(local_addresses(trie), want);
        assert!(!default_address().is_unspecified());
    }
}
