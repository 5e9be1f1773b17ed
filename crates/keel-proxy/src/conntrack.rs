//! UDP has no connection to end: a client that keeps sending to a Service keeps its conntrack entry, and
//! with it the endpoint it was DNATed to, even after that endpoint is gone. So, as kube-proxy does, the
//! entries of UDP traffic to a removed endpoint are deleted after the rules change, and so are the
//! entries of a UDP Service that had no endpoint (its packets were rejected) when it gets one. Pure here:
//! what to delete, as `conntrack -D` arguments; `nft.rs` runs them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::model::{Protocol, ServicePort};

/// One `conntrack -D` of UDP entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flush {
    /// The address clients sent to (a cluster or external IP); `None` for a node port (any local address).
    pub to: Option<Ipv4Addr>,
    pub port: u16,
    /// Only entries DNATed to this endpoint; `None`: every entry to the address and port.
    pub endpoint: Option<Ipv4Addr>,
}

impl Flush {
    /// The `conntrack` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-D".to_string(), "-p".into(), "udp".into()];
        if let Some(to) = self.to {
            a.extend(["--orig-dst".into(), to.to_string()]);
        }
        a.extend(["--orig-port-dst".into(), self.port.to_string()]);
        if let Some(ep) = self.endpoint {
            a.extend(["--reply-src".into(), ep.to_string()]);
        }
        a
    }
}

fn ips(endpoints: &[crate::model::Endpoint]) -> BTreeSet<Ipv4Addr> {
    endpoints.iter().map(|e| e.ip).collect()
}

/// What to delete going from `old` to `new` (both as [`crate::model::service_ports`] gives them).
pub fn stale(old: &[ServicePort], new: &[ServicePort]) -> Vec<Flush> {
    let mut out = BTreeSet::new();
    for before in old.iter().filter(|p| p.protocol == Protocol::Udp) {
        let after = new.iter().find(|p| p.id() == before.id());
        let (now_internal, now_external) = match after {
            Some(a) => (ips(&a.internal), ips(&a.external)),
            None => (BTreeSet::new(), BTreeSet::new()),
        };
        for (was, now, addresses, node_port) in [
            (ips(&before.internal), &now_internal, &before.cluster_ips, None),
            (ips(&before.external), &now_external, &before.external_ips, before.node_port),
        ] {
            for gone in was.difference(now) {
                for to in addresses {
                    out.insert(Flush { to: Some(*to), port: before.port, endpoint: Some(*gone) });
                }
                if let Some(port) = node_port {
                    out.insert(Flush { to: None, port, endpoint: Some(*gone) });
                }
            }
            if was.is_empty() && !now.is_empty() {
                for to in addresses {
                    out.insert(Flush { to: Some(*to), port: before.port, endpoint: None });
                }
                if let Some(port) = node_port {
                    out.insert(Flush { to: None, port, endpoint: None });
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;

    fn dns(endpoints: &[&str]) -> ServicePort {
        let eps: Vec<Endpoint> =
            endpoints.iter().map(|ip| Endpoint { ip: ip.parse().unwrap(), port: 5353, local: false }).collect();
        ServicePort {
            namespace: "ns".into(),
            service: "dns".into(),
            port_name: "".into(),
            protocol: Protocol::Udp,
            port: 53,
            cluster_ips: vec!["10.96.0.53".parse().unwrap()],
            node_port: Some(30053),
            external_ips: vec![],
            affinity_seconds: None,
            internal: eps.clone(),
            external: eps,
            external_local: false,
        }
    }

    #[test]
    fn removed_udp_endpoints_and_newly_served_services_are_flushed() {
        let gone = stale(&[dns(&["10.244.1.2", "10.244.2.2"])], &[dns(&["10.244.2.2"])]);
        let ep = Some("10.244.1.2".parse().unwrap());
        assert_eq!(
            gone,
            [
                Flush { to: None, port: 30053, endpoint: ep },
                Flush { to: Some("10.96.0.53".parse().unwrap()), port: 53, endpoint: ep },
            ]
        );
        assert_eq!(
            gone[1].args().join(" "),
            "-D -p udp --orig-dst 10.96.0.53 --orig-port-dst 53 --reply-src 10.244.1.2"
        );
        let served = stale(&[dns(&[])], &[dns(&["10.244.2.2"])]);
        assert!(served.iter().all(|f| f.endpoint.is_none()) && served.len() == 2, "{served:?}");
        assert!(stale(&[dns(&["10.244.2.2"])], &[dns(&["10.244.2.2"])]).is_empty());
        let mut tcp = dns(&["10.244.1.2"]);
        tcp.protocol = Protocol::Tcp;
        assert!(stale(&[tcp], &[]).is_empty(), "TCP connections end by themselves");
    }
}
