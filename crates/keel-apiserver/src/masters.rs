//! Who the masters are, for clients: every master keeps its API address under
//! `/registry/masterleases/<host:port>` alive with a store lease (as kube-apiserver's lease endpoint
//! reconciler keeps `/registry/masterleases/<ip>`), and every master keeps the `kubernetes` Service in
//! `default` (the first address of the service range, port 443) and its Endpoints equal to the live
//! masters' addresses. Node agents and `keel lb` follow those Endpoints to know every master.
//!
//! The Service and Endpoints are written through this master's own API router (admission, the cluster-IP
//! allocator and compare-and-swap included), as any client would write them; the writes are not fenced:
//! every master computes the same Endpoints from the same leases, so their writes agree.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::storage::Storage;

/// Where the masters' addresses live.
pub const MASTER_LEASES: &str = "/registry/masterleases/";
/// Seconds a dead master's address stays listed (at most, plus a store failover).
const LEASE_TTL: i64 = 6;
/// How often the Service and Endpoints are compared with the leases.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

const SERVICE: &str = "/api/v1/namespaces/default/services/kubernetes";
const ENDPOINTS: &str = "/api/v1/namespaces/default/endpoints/kubernetes";
const DNS_SERVICE: &str = "/api/v1/namespaces/kube-system/services/kube-dns";
const INGRESS_CLASS: &str = "/apis/networking.k8s.io/v1/ingressclasses/keel";
const STORAGE_CLASS: &str = "/apis/storage.k8s.io/v1/storageclasses/local";
const PRIORITY_CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";

/// The IngressClass every node's ingress proxy serves, the cluster's default.
pub fn ingress_class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "keel", "annotations": {keel_api::kinds::networking::DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": "keel.dev/ingress"},
    })
}

/// `(ip, port)` of `host:port` when the host is an IP address (Endpoints hold addresses only).
fn ip_and_port(addr: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).parse().ok()?, port.parse().ok().filter(|p| *p > 0)?))
}

/// The `kubernetes` Endpoints' subsets for these master addresses: one subset per port (masters normally
/// share one), addresses sorted, so that every master computes the same object.
pub fn subsets(addresses: &[String]) -> Value {
    let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for (ip, port) in addresses.iter().filter_map(|a| ip_and_port(a)) {
        let ips = by_port.entry(port).or_default();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Value::Array(
        by_port
            .into_iter()
            .map(|(port, mut ips)| {
                ips.sort();
                json!({
                    "addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                })
            })
            .collect(),
    )
}

/// The `kubernetes` Service, as kube-apiserver creates it.
pub fn service(cluster_ip: &str, target_port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target_port}],
            "sessionAffinity": "None",
        },
    })
}

/// The `kube-dns` Service every node's DNS server stands behind (kubeadm's address: the tenth of the range):
/// no selector (each node agent publishes its own EndpointSlice), and `internalTrafficPolicy: Local`, so
/// that a pod's queries stay on its node.
pub fn dns_service(cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// Resolves once `shutdown` says stop (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Keeps this master's address registered until `shutdown`, then withdraws it.
pub async fn register(storage: Storage, advertise: String, mut shutdown: watch::Receiver<bool>) {
    if ip_and_port(&advertise).is_none_or(|(ip, _)| ip.is_unspecified()) {
        tracing::warn!(%advertise, "not listed in the kubernetes Endpoints: the advertised host is not an IP address");
        return;
    }
    let key = format!("{MASTER_LEASES}{advertise}");
    let every = Duration::from_millis(LEASE_TTL as u64 * 1000 / 3);
    loop {
        let lease = match storage.grant_lease(LEASE_TTL).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::debug!(error = %e, "registering this master: no lease yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stopped(&mut shutdown) => return,
                }
            }
        };
        if let Err(e) = storage.put_leased(&key, advertise.clone().into_bytes(), lease).await {
            tracing::debug!(error = %e, "registering this master failed; trying again");
            let _ = storage.revoke_lease(lease).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        tokio::select! {
            lost = storage.keep_alive(lease, LEASE_TTL, every) => {
                tracing::warn!(error = %lost, "this master's address lease was lost; registering again");
            }
            _ = stopped(&mut shutdown) => {
                let _ = storage.revoke_lease(lease).await;
                return;
            }
        }
    }
}

/// Keeps the `kubernetes` Service, Endpoints and EndpointSlices equal to the registered masters until
/// `shutdown`.
pub async fn reconcile(
    storage: Storage,
    router: Router,
    cluster_ip: String,
    dns_ip: String,
    target_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if let Err(e) = reconcile_once(&storage, &router, &cluster_ip, &dns_ip, target_port).await {
            tracing::debug!(error = %e, "reconciling the kubernetes Service");
        }
    }
}

pub(crate) async fn call(
    router: &Router,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .map_err(|e| e.to_string())?;
    let response = router.clone().oneshot(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn reconcile_once(
    storage: &Storage,
    router: &Router,
    cluster_ip: &str,
    dns_ip: &str,
    target_port: u16,
) -> Result<(), String> {
    let mut every_cluster_has = vec![
        (SERVICE.to_string(), service(cluster_ip, target_port)),
        (DNS_SERVICE.to_string(), dns_service(dns_ip)),
        (INGRESS_CLASS.to_string(), ingress_class()),
        (STORAGE_CLASS.to_string(), keel_api::kinds::storage::local_class()),
    ];
    // The system PriorityClasses (`system-node-critical`, `system-cluster-critical`).
    for class in keel_api::kinds::scheduling::system_classes() {
        let path = format!("{PRIORITY_CLASSES}/{}", class["metadata"]["name"].as_str().unwrap_or_default());
        every_cluster_has.push((path, class));
    }
    for (path, object) in every_cluster_has {
        let found = call(router, Method::GET, &path, None).await?;
        if found.0 == StatusCode::NOT_FOUND && ensure(router, &path, found, object, &[]).await? {
            tracing::info!(%path, "created an object every cluster has");
        }
    }
    // The Endpoints are read before the leases, so the leases are at least as new as what is replaced.
    let (status, current) = call(router, Method::GET, ENDPOINTS, None).await?;
    let (slices_status, current_slices) = call(router, Method::GET, &slices_path(), None).await?;
    let leases = storage.list(MASTER_LEASES, None, 0, 0).await.map_err(|e| e.to_string())?;
    let addresses: Vec<String> = leases.items.iter().map(|s| String::from_utf8_lossy(&s.value).into_owned()).collect();
    let wanted = subsets(&addresses);
    if wanted.as_array().is_none_or(Vec::is_empty) {
        return Ok(());
    }
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": wanted,
    });
    if ensure(router, ENDPOINTS, (status, current), endpoints, &["subsets"]).await? {
        tracing::info!(masters = ?addresses, "the kubernetes Endpoints now list the live masters");
    }
    // The EndpointSlices (what Service proxies read): one per port, the others deleted.
    if !slices_status.is_success() {
        return Err(format!("listing the kubernetes EndpointSlices: {slices_status}"));
    }
    let wanted = endpoint_slices(&addresses);
    let current: Vec<&Value> = current_slices["items"].as_array().into_iter().flatten().collect();
    let named = |v: &Value, name: &str| v["metadata"]["name"] == name;
    for slice in &wanted {
        let name = slice["metadata"]["name"].as_str().unwrap_or_default();
        // The list just read holds what is stored; a slice not in it is created.
        let found = match current.iter().find(|c| named(c, name)) {
            Some(c) => (StatusCode::OK, Value::clone(c)),
            None => (StatusCode::NOT_FOUND, Value::Null),
        };
        ensure(router, &format!("{SLICES}/{name}"), found, slice.clone(), &["endpoints", "ports"]).await?;
    }
    for stale in
        current.iter().filter(|c| !wanted.iter().any(|w| named(c, w["metadata"]["name"].as_str().unwrap_or(""))))
    {
        let name = stale["metadata"]["name"].as_str().unwrap_or_default();
        call(router, Method::DELETE, &format!("{SLICES}/{name}"), None).await?;
    }
    Ok(())
}

/// Where the EndpointSlices of `default` are.
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// The `kubernetes` EndpointSlices of `default`.
fn slices_path() -> String {
    format!("{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes")
}

/// The `kubernetes` EndpointSlices for these master addresses, as kube-apiserver writes its own: the
/// IPv4 masters of each port (normally one: `kubernetes`; more ports get `kubernetes-<port>`).
pub fn endpoint_slices(addresses: &[String]) -> Vec<Value> {
    let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for (ip, port) in addresses.iter().filter_map(|a| ip_and_port(a)).filter(|(ip, _)| ip.is_ipv4()) {
        let ips = by_port.entry(port).or_default();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    by_port
        .into_iter()
        .enumerate()
        .map(|(i, (port, mut ips))| {
            ips.sort();
            let name = if i == 0 { "kubernetes".to_string() } else { format!("kubernetes-{port}") };
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4",
                "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
                    .collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            })
        })
        .collect()
}

/// Makes the object at `path` (found as `found`) equal `wanted` in `fields`: created if absent, replaced
/// if different. Returns whether it wrote. A conflict (another master wrote first) is not an error.
async fn ensure(
    router: &Router,
    path: &str,
    found: (StatusCode, Value),
    wanted: Value,
    fields: &[&str],
) -> Result<bool, String> {
    let (status, current) = found;
    let (method, path, object) = match status {
        StatusCode::NOT_FOUND => {
            let collection = path.rsplit_once('/').map_or(path, |(c, _)| c);
            (Method::POST, collection.to_string(), wanted)
        }
        s if s.is_success() => {
            if fields.iter().all(|f| current.get(*f) == wanted.get(*f)) {
                return Ok(false);
            }
            let mut object = current;
            for f in fields {
                object[*f] = wanted[*f].clone();
            }
            (Method::PUT, path.to_string(), object)
        }
        s => return Err(format!("reading {path}: {s}")),
    };
    let (status, body) = call(router, method, &path, Some(&object)).await?;
    match status {
        s if s.is_success() => Ok(true),
        StatusCode::CONFLICT => Ok(false),
        s => Err(format!("writing {path}: {s} {body}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_group_addresses_by_port_in_order() {
        let addrs =
            ["10.0.0.2:6443", "10.0.0.1:6443", "127.0.0.1:26443", "[fd00::1]:6443", "m4.example:6443", "10.0.0.1:6443"]
                .map(String::from);
        assert_eq!(
            subsets(&addrs),
            json!([
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::1"}],
                 "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 26443, "protocol": "TCP"}]},
            ])
        );
        assert_eq!(subsets(&[]), json!([]));
    }

    #[test]
    fn slices_list_the_ipv4_masters_of_each_port() {
        let addrs = ["10.0.0.2:6443", "10.0.0.1:6443", "127.0.0.1:26443", "[fd00::1]:6443"].map(String::from);
        let slices = endpoint_slices(&addrs);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0]["metadata"]["name"], "kubernetes");
        assert_eq!(slices[0]["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes");
        assert_eq!(
            slices[0]["endpoints"],
            json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                   {"addresses": ["10.0.0.2"], "conditions": {"ready": true}}])
        );
        assert_eq!(slices[0]["ports"], json!([{"name": "https", "port": 6443, "protocol": "TCP"}]));
        assert_eq!(slices[1]["metadata"]["name"], "kubernetes-26443");
        assert!(endpoint_slices(&[]).is_empty());
    }

    #[test]
    fn only_ip_addresses_with_a_port_are_listed() {
        assert_eq!(ip_and_port("10.0.0.1:6443"), Some(("10.0.0.1".parse().unwrap(), 6443)));
        assert_eq!(ip_and_port("[::1]:443"), Some(("::1".parse().unwrap(), 443)));
        for bad in ["m1:6443", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:x"] {
            assert_eq!(ip_and_port(bad), None, "{bad}");
        }
    }
}
