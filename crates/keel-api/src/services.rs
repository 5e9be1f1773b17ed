//! What a Service needs from the cluster's address plan: cluster IPs from the service range (default
//! 10.96.0.0/12, the first address kept for the `kubernetes` service) and node ports from 30000–32767.
//! These are the pure parts (ranges, candidates, what a Service asks for); reserving them is the server's.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::validation::Cause;

pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An IPv4 service range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    bits: u8,
}

impl ServiceCidr {
    pub fn parse(s: &str) -> Result<ServiceCidr, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("{s:?}: the prefix length must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - bits);
        Ok(ServiceCidr { base: u32::from(ip) & mask, bits })
    }

    /// Addresses that can be handed out: all but the network and broadcast addresses.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.bits)) - 2
    }

    /// The `n`th usable address (0 is the `kubernetes` service's).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + n % self.size())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size() + 1
    }

    /// A candidate address for a new service from random bits (never the `kubernetes` service's).
    pub fn candidate(&self, random: u64) -> Ipv4Addr {
        self.nth(1 + (random % u64::from(self.size() - 1)) as u32)
    }
}

/// A candidate node port from random bits.
pub fn node_port_candidate(random: u64) -> u16 {
    let span = u64::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
    NODE_PORTS.start() + (random % span) as u16
}

/// What a Service's cluster IP should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIp {
    /// ExternalName services have none.
    NotApplicable,
    /// `clusterIP: None`.
    Headless,
    /// The client asked for this one.
    Requested(Ipv4Addr),
    /// Pick one.
    Allocate,
}

/// Reads a new Service's clusterIP request; causes if it is not an address in `range`.
pub fn cluster_ip(service: &Value, range: &ServiceCidr) -> Result<ClusterIp, Vec<Cause>> {
    if service.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Ok(ClusterIp::NotApplicable);
    }
    match service.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("") {
        "" => Ok(ClusterIp::Allocate),
        "None" => Ok(ClusterIp::Headless),
        ip => match ip.parse::<Ipv4Addr>() {
            Ok(addr) if range.contains(addr) => Ok(ClusterIp::Requested(addr)),
            Ok(_) => Err(vec![Cause::invalid(
                "spec.clusterIPs",
                ip,
                "failed to allocate IP: the provided IP is not in the valid range",
            )]),
            Err(_) => Err(vec![Cause::invalid("spec.clusterIPs[0]", ip, "must be a valid IP address")]),
        },
    }
}

/// Records an allocated cluster IP (or headless) in the Service, with its single-stack IPv4 family.
pub fn set_cluster_ip(service: &mut Value, ip: &str) {
    service["spec"]["clusterIP"] = json!(ip);
    service["spec"]["clusterIPs"] = json!([ip]);
    service["spec"]["ipFamilies"] = json!(["IPv4"]);
    service["spec"]["ipFamilyPolicy"] = json!("SingleStack");
}

/// Whether this Service's ports get node ports (NodePort and LoadBalancer services).
pub fn wants_node_ports(service: &Value) -> bool {
    matches!(service.pointer("/spec/type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = ServiceCidr::parse(DEFAULT_SERVICE_CIDR).unwrap();
        assert_eq!(r.nth(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(r.size(), (1 << 20) - 2);
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(!r.contains(Ipv4Addr::new(10, 96, 0, 0)));
        for seed in [0, 1, u64::MAX, 12345] {
            let c = r.candidate(seed);
            assert!(r.contains(c) && c != r.nth(0), "{c}");
        }
        assert!(ServiceCidr::parse("10.0.0.0").is_err());
        assert!(ServiceCidr::parse("10.0.0.0/31").is_err());
        assert!(NODE_PORTS.contains(&node_port_candidate(u64::MAX)));
    }

    #[test]
    fn cluster_ip_requests() {
        let r = ServiceCidr::parse("10.96.0.0/12").unwrap();
        assert_eq!(cluster_ip(&json!({"spec": {}}), &r), Ok(ClusterIp::Allocate));
        assert_eq!(cluster_ip(&json!({"spec": {"clusterIP": "None"}}), &r), Ok(ClusterIp::Headless));
        assert_eq!(
            cluster_ip(&json!({"spec": {"clusterIP": "10.96.0.10"}}), &r),
            Ok(ClusterIp::Requested(Ipv4Addr::new(10, 96, 0, 10)))
        );
        assert_eq!(cluster_ip(&json!({"spec": {"type": "ExternalName"}}), &r), Ok(ClusterIp::NotApplicable));
        assert!(cluster_ip(&json!({"spec": {"clusterIP": "192.168.0.1"}}), &r).is_err());
        assert!(cluster_ip(&json!({"spec": {"clusterIP": "nope"}}), &r).is_err());
        let mut s = json!({"spec": {}});
        set_cluster_ip(&mut s, "10.96.0.10");
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    }
}
