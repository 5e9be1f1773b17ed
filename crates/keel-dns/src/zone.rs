//! The cluster's names, as Kubernetes' DNS specification gives them, read from Services and EndpointSlices
//! (pure; rebuilt whole on every change):
//! - `<svc>.<ns>.svc.<domain>`: A of the cluster IP; for a headless Service, A of every ready endpoint;
//!   an ExternalName Service is a CNAME;
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV per named port (to the Service's name, or per endpoint
//!   of a headless Service, to its own name);
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: an endpoint with a hostname (a StatefulSet pod under its
//!   governing Service); a headless endpoint without one is `<a-b-c-d>.<svc>.<ns>.svc.<domain>`;
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A of that address (computed, as kube-dns does);
//! - PTR for cluster IPs and named endpoints.
//!
//! A name under the domain that is none of these is NXDOMAIN; a name that exists without records of the
//! asked type (or is an ancestor of one that does) is an empty answer; anything else is not ours.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Seconds answers may be cached (CoreDNS's kubernetes plugin's default).
pub const TTL: u32 = 5;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a query gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Records(Vec<Record>),
    /// The name exists, with nothing of that type.
    NoData,
    NxDomain,
    /// Not a cluster name: for the upstream resolvers.
    NotOurs,
}

/// Every cluster name and its records.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    domain: Option<Name>,
    names: BTreeMap<Name, Vec<Record>>,
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok().map(|n| n.to_lowercase())
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn reverse(ip: Ipv4Addr) -> Option<Name> {
    let o = ip.octets();
    name(&format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]))
}

impl Zone {
    /// The names of `services` and `slices` under `domain` (e.g. `cluster.local`).
    pub fn build(services: &[Service], slices: &[EndpointSlice], domain: &str) -> Zone {
        let domain = domain.trim_end_matches('.');
        let mut zone = Zone { domain: name(&format!("{domain}.")), names: BTreeMap::new() };
        // (namespace, service) → slices
        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.clone(),
                slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).cloned(),
            ) else {
                continue;
            };
            by_service.entry((ns, svc)).or_default().push(slice);
        }
        for service in services {
            let (Some(spec), Some(ns), Some(svc)) =
                (service.spec.as_ref(), service.metadata.namespace.as_ref(), service.metadata.name.as_ref())
            else {
                continue;
            };
            let Some(base) = name(&format!("{svc}.{ns}.svc.{domain}.")) else { continue };
            zone.names.entry(base.clone()).or_default();
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) =
                    spec.external_name.as_deref().and_then(|t| name(&format!("{}.", t.trim_end_matches('.'))))
                {
                    zone.add(&base, RData::CNAME(CNAME(target)));
                }
                continue;
            }
            let cluster_ips: Vec<Ipv4Addr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                for ip in &cluster_ips {
                    zone.add(&base, RData::A(A(*ip)));
                    if let Some(rev) = reverse(*ip) {
                        zone.add(&rev, RData::PTR(PTR(base.clone())));
                    }
                }
                for port in spec.ports.iter().flatten() {
                    let (Some(port_name), Ok(number)) = (port.name.as_deref(), u16::try_from(port.port)) else {
                        continue;
                    };
                    let proto = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    if let Some(srv) = name(&format!("_{port_name}._{proto}.{base}")) {
                        zone.add(&srv, RData::SRV(SRV::new(0, 100, number, base.clone())));
                    }
                }
                continue;
            }
            // Headless: the endpoints themselves.
            let publish_all = spec.publish_not_ready_addresses == Some(true);
            for slice in by_service.get(&(ns.clone(), svc.clone())).into_iter().flatten() {
                for endpoint in &slice.endpoints {
                    let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready && !publish_all {
                        continue;
                    }
                    for ip in endpoint.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                        zone.add(&base, RData::A(A(ip)));
                        let label = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip));
                        let Some(own) = name(&format!("{label}.{base}")) else { continue };
                        zone.add(&own, RData::A(A(ip)));
                        if endpoint.hostname.is_some() {
                            if let Some(rev) = reverse(ip) {
                                zone.add(&rev, RData::PTR(PTR(own.clone())));
                            }
                        }
                        for port in slice.ports.iter().flatten() {
                            let (Some(port_name), Some(Ok(number))) =
                                (port.name.as_deref().filter(|n| !n.is_empty()), port.port.map(u16::try_from))
                            else {
                                continue;
                            };
                            let proto = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            if let Some(srv) = name(&format!("_{port_name}._{proto}.{base}")) {
                                zone.add(&srv, RData::SRV(SRV::new(0, 100, number, own.clone())));
                            }
                        }
                    }
                }
            }
        }
        for records in zone.names.values_mut() {
            records.sort_by_key(|r| r.data.to_string());
            records.dedup_by(|a, b| a.data == b.data);
        }
        zone
    }

    fn add(&mut self, at: &Name, data: RData) {
        self.names.entry(at.clone()).or_default().push(Record::from_rdata(at.clone(), TTL, data));
    }

    /// The answer to a query for `qname` of type `qtype`.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let qname = qname.to_lowercase();
        let Some(domain) = &self.domain else { return Answer::NotOurs };
        let reverse_zone = name("in-addr.arpa.").expect("a valid name");
        let ours = domain.zone_of(&qname);
        if !ours && !reverse_zone.zone_of(&qname) {
            return Answer::NotOurs;
        }
        let records: Vec<Record> = match self.names.get(&qname) {
            Some(records) => records.clone(),
            None => match self.pod_address(&qname, domain) {
                Some(record) => vec![record],
                None if self.names.range(qname.clone()..).next().is_some_and(|(n, _)| qname.zone_of(n)) => vec![],
                // An address we know nothing of is someone else's to name.
                None if !ours => return Answer::NotOurs,
                None if qname == *domain => vec![],
                None => return Answer::NxDomain,
            },
        };
        let matching: Vec<Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype || r.record_type() == RecordType::CNAME)
            .cloned()
            .collect();
        if matching.is_empty() {
            Answer::NoData
        } else {
            Answer::Records(matching)
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>`'s A record.
    fn pod_address(&self, qname: &Name, domain: &Name) -> Option<Record> {
        let labels: Vec<String> = qname.iter().map(|l| String::from_utf8_lossy(l).to_string()).collect();
        let depth = usize::from(domain.num_labels());
        if labels.len() != depth + 3 || labels[2] != "pod" {
            return None;
        }
        let ip: Ipv4Addr = labels[0].replace('-', ".").parse().ok()?;
        Some(Record::from_rdata(qname.clone(), TTL, RData::A(A(ip))))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn zone() -> Zone {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"namespace": "ns", "name": "web"},
             "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                      "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}},
            {"metadata": {"namespace": "ns", "name": "db"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
            {"metadata": {"namespace": "ns", "name": "ext"},
             "spec": {"type": "ExternalName", "externalName": "example.org"}},
        ]))
        .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"namespace": "ns", "name": "db-x", "labels": {SERVICE_NAME_LABEL: "db"}},
             "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432}],
             "endpoints": [
                {"addresses": ["10.244.1.7"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.8"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.9"], "hostname": "db-2", "conditions": {"ready": false}},
             ]},
        ]))
        .unwrap();
        Zone::build(&services, &slices, "cluster.local")
    }

    fn ask(z: &Zone, q: &str, t: RecordType) -> Vec<String> {
        match z.answer(&Name::from_ascii(q).unwrap(), t) {
            Answer::Records(rs) => rs.iter().map(|r| r.data.to_string()).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn services_have_their_cluster_ips_ports_and_reverse_names() {
        let z = zone();
        assert_eq!(ask(&z, "web.ns.svc.cluster.local.", RecordType::A), ["10.96.0.20"]);
        assert_eq!(ask(&z, "WEB.ns.svc.cluster.local.", RecordType::A), ["10.96.0.20"], "names are case-blind");
        assert_eq!(
            ask(&z, "_http._tcp.web.ns.svc.cluster.local.", RecordType::SRV),
            ["0 100 80 web.ns.svc.cluster.local."]
        );
        assert_eq!(
            ask(&z, "_dns._udp.web.ns.svc.cluster.local.", RecordType::SRV),
            ["0 100 53 web.ns.svc.cluster.local."]
        );
        assert_eq!(ask(&z, "20.0.96.10.in-addr.arpa.", RecordType::PTR), ["web.ns.svc.cluster.local."]);
        assert_eq!(ask(&z, "web.ns.svc.cluster.local.", RecordType::AAAA), ["NoData"]);
        assert_eq!(ask(&z, "ext.ns.svc.cluster.local.", RecordType::A), ["example.org."]);
    }

    #[test]
    fn headless_services_name_their_ready_endpoints() {
        let z = zone();
        assert_eq!(ask(&z, "db.ns.svc.cluster.local.", RecordType::A), ["10.244.1.7", "10.244.2.8"]);
        assert_eq!(ask(&z, "db-0.db.ns.svc.cluster.local.", RecordType::A), ["10.244.1.7"]);
        assert_eq!(ask(&z, "10-244-2-8.db.ns.svc.cluster.local.", RecordType::A), ["10.244.2.8"]);
        assert_eq!(ask(&z, "db-2.db.ns.svc.cluster.local.", RecordType::A), ["NxDomain"], "not ready");
        assert_eq!(
            ask(&z, "_pg._tcp.db.ns.svc.cluster.local.", RecordType::SRV),
            ["0 100 5432 10-244-2-8.db.ns.svc.cluster.local.", "0 100 5432 db-0.db.ns.svc.cluster.local."]
        );
        assert_eq!(ask(&z, "7.1.244.10.in-addr.arpa.", RecordType::PTR), ["db-0.db.ns.svc.cluster.local."]);
    }

    #[test]
    fn pods_unknown_names_and_other_zones() {
        let z = zone();
        assert_eq!(ask(&z, "10-244-1-5.ns.pod.cluster.local.", RecordType::A), ["10.244.1.5"]);
        assert_eq!(ask(&z, "nope.ns.svc.cluster.local.", RecordType::A), ["NxDomain"]);
        assert_eq!(ask(&z, "ns.svc.cluster.local.", RecordType::A), ["NoData"], "an ancestor of names exists");
        assert_eq!(ask(&z, "cluster.local.", RecordType::A), ["NoData"]);
        assert_eq!(ask(&z, "example.org.", RecordType::A), ["NotOurs"]);
        assert_eq!(ask(&z, "1.0.0.127.in-addr.arpa.", RecordType::PTR), ["NotOurs"]);
    }
}
