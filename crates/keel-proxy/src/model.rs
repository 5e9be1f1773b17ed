//! What the proxy programs, read from the API's objects: one [`ServicePort`] per port of every Service that
//! has a cluster IP, a node port or a load-balancer address, with the endpoints of its EndpointSlices this
//! node sends traffic to. Pure: the same Services and slices give the same model, in the same order.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How long a client sticks to its endpoint under `sessionAffinity: ClientIP` unless the Service says.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' name for it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One address a Service port's traffic may go to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node (its pods' network is this node's).
    pub local: bool,
}

/// One port of one Service, as the proxy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub service: String,
    /// The port's name ("" for a Service's only, unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// Where in-cluster clients send it (spec.clusterIPs; empty for a headless Service).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// Where clients from outside send it: the port on every node's addresses (NodePort, LoadBalancer).
    pub node_port: Option<u16>,
    /// ... and the Service's load-balancer addresses (status.loadBalancer.ingress) and spec.externalIPs.
    pub external_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: seconds a client keeps its endpoint.
    pub affinity_seconds: Option<u32>,
    /// Where cluster-IP traffic goes (`internalTrafficPolicy: Local` keeps only this node's).
    pub internal: Vec<Endpoint>,
    /// Where node-port and external traffic goes (`externalTrafficPolicy: Local` keeps only this node's).
    pub external: Vec<Endpoint>,
    /// `externalTrafficPolicy: Local`: external clients keep their source address (no masquerade).
    pub external_local: bool,
}

impl ServicePort {
    /// `namespace/service:port` (port name or number), for logs and rule names.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() { self.port.to_string() } else { self.port_name.clone() };
        format!("{}/{}/{}/{port}", self.namespace, self.service, self.protocol.nft())
    }
}

/// An endpoint's state, as its EndpointSlice conditions say (unset `ready` is ready, unset `serving` is
/// `ready`, unset `terminating` is false).
#[derive(Debug, Clone, Copy)]
struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// The endpoints Kubernetes' proxies use: the ready ones; when none is ready, the serving ones that are
/// terminating (so that connections drain during a rollout instead of failing).
fn usable(candidates: &[(Endpoint, Conditions)]) -> Vec<Endpoint> {
    let pick = |keep: &dyn Fn(&Conditions) -> bool| -> Vec<Endpoint> {
        let mut v: Vec<Endpoint> = candidates.iter().filter(|(_, c)| keep(c)).map(|(e, _)| e.clone()).collect();
        v.sort();
        v.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
        v
    };
    let ready = pick(&|c| c.ready);
    if !ready.is_empty() {
        return ready;
    }
    pick(&|c| c.serving && c.terminating)
}

fn ipv4s<'a>(list: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = list.into_iter().filter_map(|s| s.parse().ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// Every Service port this node proxies, with its endpoints from `slices`, in a stable order.
pub fn service_ports(services: &[Service], slices: &[EndpointSlice], node: &str) -> Vec<ServicePort> {
    // (namespace, service) → (port name, protocol) → candidate endpoints.
    type Candidates = BTreeMap<(String, Protocol), Vec<(Endpoint, Conditions)>>;
    let mut by_service: BTreeMap<(String, String), Candidates> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        let ports = by_service.entry((namespace, service.clone())).or_default();
        for port in slice.ports.iter().flatten() {
            let (Some(number), Some(protocol)) = (port.port, Protocol::parse(port.protocol.as_deref())) else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else { continue };
            let candidates = ports.entry((port.name.clone().unwrap_or_default(), protocol)).or_default();
            for endpoint in &slice.endpoints {
                let c = endpoint.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let conditions = Conditions {
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                };
                let local = endpoint.node_name.as_deref() == Some(node);
                for ip in ipv4s(&endpoint.addresses) {
                    candidates.push((Endpoint { ip, port: number, local }, conditions));
                }
            }
        }
    }

    let mut out = Vec::new();
    for service in services {
        let (Some(spec), Some(namespace), Some(name)) =
            (service.spec.as_ref(), service.metadata.namespace.as_ref(), service.metadata.name.as_ref())
        else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let mut cluster_ips = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ipv4s(ips),
            _ => ipv4s(spec.cluster_ip.iter()),
        };
        if spec.cluster_ip.as_deref() == Some("None") {
            cluster_ips.clear();
        }
        let mut external_ips = ipv4s(spec.external_ips.iter().flatten());
        let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        external_ips.extend(ipv4s(ingress.into_iter().flatten().filter_map(|i| i.ip.as_ref())));
        external_ips.sort();
        external_ips.dedup();
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let candidates = by_service.get(&(namespace.clone(), name.clone()));
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
            let Ok(number) = u16::try_from(port.port) else { continue };
            let node_port = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0);
            if cluster_ips.is_empty() && node_port.is_none() && external_ips.is_empty() {
                continue;
            }
            let port_name = port.name.clone().unwrap_or_default();
            let all = candidates.and_then(|c| c.get(&(port_name.clone(), protocol))).map(Vec::as_slice).unwrap_or(&[]);
            let all = usable(all);
            let local: Vec<Endpoint> = all.iter().filter(|e| e.local).cloned().collect();
            out.push(ServicePort {
                namespace: namespace.clone(),
                service: name.clone(),
                port_name,
                protocol,
                port: number,
                cluster_ips: cluster_ips.clone(),
                node_port,
                external_ips: external_ips.clone(),
                affinity_seconds,
                internal: if internal_local { local.clone() } else { all.clone() },
                external: if external_local { local } else { all },
                external_local,
            });
        }
    }
    out.sort_by_key(ServicePort::id);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec})).unwrap()
    }

    fn slice(name: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": name, "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(ip: &str, port: u16, local: bool) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port, local }
    }

    #[test]
    fn ready_endpoints_of_every_slice_serve_each_port() {
        let svc = service(json!({
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "type": "NodePort",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
        }));
        let ports = json!([{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]);
        let a = slice(
            "web-a",
            ports.clone(),
            json!([
                {"addresses": ["10.244.1.2"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.2"], "nodeName": "n2"},
                {"addresses": ["10.244.2.3"], "nodeName": "n2", "conditions": {"ready": false}},
            ]),
        );
        let b = slice("web-b", ports, json!([{"addresses": ["10.244.1.9"], "nodeName": "n1"}]));
        let model = service_ports(&[svc], &[a, b], "n1");
        assert_eq!(model.iter().map(ServicePort::id).collect::<Vec<_>>(), ["ns/web/tcp/http", "ns/web/udp/dns"]);
        let http = &model[0];
        assert_eq!(
            (http.port, http.node_port, http.cluster_ips.clone()),
            (80, Some(30080), vec!["10.96.0.10".parse().unwrap()])
        );
        let want = vec![ep("10.244.1.2", 8080, true), ep("10.244.1.9", 8080, true), ep("10.244.2.2", 8080, false)];
        assert_eq!(http.internal, want);
        assert_eq!(http.external, want);
        assert_eq!(model[1].internal[0], ep("10.244.1.2", 5353, true));
        assert_eq!(model[1].node_port, None);
    }

    #[test]
    fn traffic_policies_keep_this_nodes_endpoints() {
        let svc = service(json!({
            "clusterIP": "10.96.0.10", "type": "LoadBalancer", "internalTrafficPolicy": "Local",
            "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}],
            "sessionAffinity": "ClientIP",
        }));
        let mut svc = svc;
        svc.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.200.0.50"}]}})).unwrap();
        let s = slice(
            "web-a",
            json!([{"port": 8080}]),
            json!([
                {"addresses": ["10.244.1.2"], "nodeName": "n1"}, {"addresses": ["10.244.2.2"], "nodeName": "n2"},
            ]),
        );
        let model = service_ports(&[svc], &[s], "n2");
        let p = &model[0];
        assert_eq!(p.id(), "ns/web/tcp/80");
        assert_eq!(p.internal, [ep("10.244.2.2", 8080, true)]);
        assert_eq!(p.external, [ep("10.244.2.2", 8080, true)]);
        assert!(p.external_local);
        assert_eq!(p.external_ips, ["10.200.0.50".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(p.affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let svc = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let draining = json!([
            {"addresses": ["10.244.1.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.1.3"], "conditions": {"ready": false, "serving": false, "terminating": true}},
        ]);
        let model = service_ports(std::slice::from_ref(&svc), &[slice("a", json!([{"port": 80}]), draining)], "n1");
        assert_eq!(model[0].internal, [ep("10.244.1.2", 80, false)]);
        let none = service_ports(&[svc], &[], "n1");
        assert!(none[0].internal.is_empty(), "a Service without endpoints is still served (with rejects)");
    }

    #[test]
    fn headless_and_external_name_services_are_not_proxied() {
        let headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        let external = service(json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}));
        assert!(service_ports(&[headless, external], &[], "n1").is_empty());
    }
}
