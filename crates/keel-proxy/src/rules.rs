//! The model as nftables rules, in one table `ip keel-proxy`, laid out as kube-proxy's nftables mode lays
//! out its own: verdict maps from (address, protocol, port) to a chain per Service port, which picks an
//! endpoint (`numgen random`, or the client's earlier one under session affinity) and jumps to a chain per
//! endpoint that DNATs. Traffic that would not come back through this node is marked and masqueraded: from
//! outside the cluster's pod range, to a node port (unless `externalTrafficPolicy: Local`), and between two
//! pods of this node's bridge (their replies would not pass the host, so they could not be un-DNATed; this
//! covers a pod reaching itself). A Service port without endpoints is in a map that rejects new
//! connections at once. This node's pods reaching beyond the cluster's pod range (a master behind the
//! `kubernetes` Service, another host) are masqueraded too, as ip-masq-agent does, since only the pod
//! network routes pod addresses.
//!
//! [`script`] turns the wanted [`Ruleset`] into one `nft -f` transaction, applied atomically: the whole
//! table the first time, then only what changed (new chains, changed chains refilled, map elements added
//! and deleted, stale objects removed; sets are kept, so session-affinity entries survive), and a refresh
//! of every chain and map on resyncs. Established connections never depend on the rules (their DNAT lives
//! in conntrack), so a restarted agent rebuilding the table drops none.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use sha2::Digest as _;

use crate::model::{Endpoint, ServicePort};

/// The table's name (family `ip`).
pub const TABLE: &str = "keel-proxy";
/// The packet mark bit of traffic to masquerade (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// An IPv4 network, `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{s:?} is not an IPv4 CIDR (a.b.c.d/n)"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the rules need to know about the node's network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Every pod address in the cluster: traffic to a cluster IP from outside it is masqueraded.
    pub cluster_cidr: Option<Cidr>,
    /// This node's pods (its bridge): traffic between two of them through a Service is masqueraded.
    pub pod_cidr: Option<Cidr>,
}

/// A chain: a base chain's hook declaration (`type nat hook prerouting priority dstnat; policy accept;`)
/// or none, and its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Chain {
    base: Option<&'static str>,
    rules: Vec<String>,
}

/// Every object of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    chains: BTreeMap<String, Chain>,
    /// name → declaration (`type ipv4_addr; flags dynamic,timeout; timeout 10800s;`)
    sets: BTreeMap<String, String>,
    /// name → (declaration, elements)
    maps: BTreeMap<String, (&'static str, Vec<String>)>,
}

impl Ruleset {
    fn chain(&mut self, name: &str, rules: Vec<String>) {
        self.chains.insert(name.to_string(), Chain { base: None, rules });
    }

    fn base(&mut self, name: &str, hook: &'static str, rules: Vec<String>) {
        self.chains.insert(name.to_string(), Chain { base: Some(hook), rules });
    }

    fn element(&mut self, map: &str, element: String) {
        if let Some((_, elements)) = self.maps.get_mut(map) {
            elements.push(element);
        }
    }

    /// How many rules and map elements it has (for logs and metrics).
    pub fn size(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum::<usize>()
            + self.maps.values().map(|(_, e)| e.len()).sum::<usize>()
    }
}

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const ADDRESS_KEY: &str = "type ipv4_addr . inet_proto . inet_service : verdict;";
const PORT_KEY: &str = "type inet_proto . inet_service : verdict;";

/// A name for an object of `kind` for `what`: a hash (unique) and as much of `what` as stays readable.
fn name(kind: &str, what: &str) -> String {
    let digest = sha2::Sha256::digest(what.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let readable: String = what.chars().take(100).collect();
    format!("{kind}-{hash}-{readable}")
}

fn endpoint_id(port: &ServicePort, e: &Endpoint) -> String {
    format!("{}__{}/{}", port.id(), e.ip, e.port)
}

/// The set of clients stuck to endpoint `e` (named with its timeout too: a new timeout is a new set, as an
/// existing set's timeout cannot change).
fn affinity_set(port: &ServicePort, e: &Endpoint) -> String {
    name("aff", &format!("{}__t{}", endpoint_id(port, e), port.affinity_seconds.unwrap_or_default()))
}

/// The rules that pick one of `endpoints` (their chains by `ep_chain`), under session affinity when the
/// port has it.
fn dispatch(port: &ServicePort, endpoints: &[Endpoint], ep_chain: &dyn Fn(&Endpoint) -> String) -> Vec<String> {
    let mut rules = Vec::new();
    if port.affinity_seconds.is_some() {
        for e in endpoints {
            rules.push(format!("ip saddr @{} goto {}", affinity_set(port, e), ep_chain(e)));
        }
    }
    match endpoints {
        [] => {}
        [one] => rules.push(format!("goto {}", ep_chain(one))),
        many => {
            let arms: Vec<String> =
                many.iter().enumerate().map(|(i, e)| format!("{i} : goto {}", ep_chain(e))).collect();
            rules.push(format!("numgen random mod {} vmap {{ {} }}", many.len(), arms.join(", ")));
        }
    }
    rules
}

/// The table for `ports` on a node with network `net`.
pub fn ruleset(ports: &[ServicePort], net: &NodeNetwork) -> Ruleset {
    let mut r = Ruleset::default();
    for map in [SERVICE_IPS, NO_ENDPOINT_SERVICES] {
        r.maps.insert(map.to_string(), (ADDRESS_KEY, Vec::new()));
    }
    for map in [SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS] {
        r.maps.insert(map.to_string(), (PORT_KEY, Vec::new()));
    }
    let mark = MASQUERADE_MARK;
    r.base("nat-prerouting", "type nat hook prerouting priority dstnat; policy accept;", vec!["jump services".into()]);
    r.base("nat-output", "type nat hook output priority -100; policy accept;", vec!["jump services".into()]);
    r.base(
        "nat-postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
        vec!["jump masquerading".into()],
    );
    let check = vec!["ct state new jump service-endpoints-check".to_string()];
    r.base("filter-forward", "type filter hook forward priority -110; policy accept;", check.clone());
    r.base("filter-input", "type filter hook input priority -110; policy accept;", check.clone());
    r.base("filter-output", "type filter hook output priority -110; policy accept;", check);
    r.chain(
        "services",
        vec![
            format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
            format!("ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        ],
    );
    r.chain(
        "service-endpoints-check",
        vec![
            format!("ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
            format!(
                "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
            ),
        ],
    );
    r.chain("reject-chain", vec!["reject".into()]);
    r.chain("mark-for-masquerade", vec![format!("meta mark set meta mark | {mark:#x}")]);
    let mut masquerading = Vec::new();
    if let (Some(pods), Some(cluster)) = (net.pod_cidr, net.cluster_cidr) {
        // This node's pods reaching beyond the pod network (the masters, other hosts, the world) leave
        // with the node's address, which is routed back (ip-masq-agent's rule); between pods, addresses
        // are kept.
        masquerading.push(format!("ip saddr {pods} ip daddr != {cluster} masquerade fully-random"));
    }
    masquerading.extend([
        format!("meta mark & {mark:#x} == 0 return"),
        format!("meta mark set meta mark ^ {mark:#x}"),
        "masquerade fully-random".into(),
    ]);
    r.chain("masquerading", masquerading);

    for port in ports {
        let id = port.id();
        let proto = port.protocol.nft();
        let ep_chain = |e: &Endpoint| name("ep", &endpoint_id(port, e));
        let endpoints: BTreeSet<&Endpoint> = port.internal.iter().chain(&port.external).collect();
        for e in &endpoints {
            let mut rules = Vec::new();
            if let (true, Some(pods)) = (e.local, net.pod_cidr) {
                // Client and endpoint on this node's bridge: the reply must come back through the host.
                rules.push(format!("ip saddr {pods} jump mark-for-masquerade"));
            }
            if let Some(seconds) = port.affinity_seconds {
                let set = affinity_set(port, e);
                r.sets.insert(set.clone(), format!("type ipv4_addr; flags dynamic,timeout; timeout {seconds}s;"));
                rules.push(format!("update @{set} {{ ip saddr }}"));
            }
            rules.push(format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port));
            r.chain(&ep_chain(e), rules);
        }

        let internal = name("svc", &id);
        let address = |ip: &Ipv4Addr| format!("{ip} . {proto} . {}", port.port);
        if port.internal.is_empty() {
            for ip in &port.cluster_ips {
                r.element(NO_ENDPOINT_SERVICES, format!("{} : goto reject-chain", address(ip)));
            }
        } else if !port.cluster_ips.is_empty() {
            let mut rules = Vec::new();
            if let Some(cluster) = net.cluster_cidr {
                rules.push(format!("ip saddr != {cluster} jump mark-for-masquerade"));
            }
            rules.extend(dispatch(port, &port.internal, &ep_chain));
            r.chain(&internal, rules);
            for ip in &port.cluster_ips {
                r.element(SERVICE_IPS, format!("{} : goto {internal}", address(ip)));
            }
        }

        if port.node_port.is_none() && port.external_ips.is_empty() {
            continue;
        }
        let external = name("ext", &id);
        let target = if port.external.is_empty() {
            "goto reject-chain".to_string()
        } else {
            let mut rules = Vec::new();
            if !port.external_local {
                rules.push("jump mark-for-masquerade".to_string());
            }
            rules.extend(dispatch(port, &port.external, &ep_chain));
            r.chain(&external, rules);
            format!("goto {external}")
        };
        let (address_map, port_map) = if port.external.is_empty() {
            (NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS)
        } else {
            (SERVICE_IPS, SERVICE_NODEPORTS)
        };
        for ip in &port.external_ips {
            r.element(address_map, format!("{} : {target}", address(ip)));
        }
        if let Some(node_port) = port.node_port {
            r.element(port_map, format!("{proto} . {node_port} : {target}"));
        }
    }
    r
}

/// How a transaction gets the table from what was applied to what is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing is known of the table (a start, or after a failure): it is deleted and made whole.
    Replace,
    /// Every chain and map is emptied and refilled, the sets kept (affinity entries survive): what a
    /// periodic resync does, so that a table someone changed comes back.
    Refresh,
    /// Only what changed: new chains and sets declared, changed chains refilled, map elements added and
    /// deleted one by one, what is gone deleted. A change of one endpoint touches a few lines, whatever the
    /// number of Services.
    Update,
}

/// One `nft -f` transaction that makes the table `desired`, given what the last applied one made
/// (`applied`; ignored for [`Mode::Replace`]).
pub fn script(desired: &Ruleset, applied: &Ruleset, mode: Mode) -> String {
    let t = format!("ip {TABLE}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    if mode == Mode::Replace {
        // One block: nft reads it far faster than as many separate commands.
        let _ = writeln!(s, "delete table {t}");
        let _ = writeln!(s, "table {t} {{");
        for (name, decl) in &desired.sets {
            let _ = writeln!(s, "  set {name} {{ {decl} }}");
        }
        for (name, (decl, elements)) in &desired.maps {
            if elements.is_empty() {
                let _ = writeln!(s, "  map {name} {{ {decl} }}");
            } else {
                let _ = writeln!(s, "  map {name} {{ {decl} elements = {{ {} }} }}", elements.join(", "));
            }
        }
        for (name, chain) in &desired.chains {
            let _ = writeln!(s, "  chain {name} {{");
            if let Some(hook) = chain.base {
                let _ = writeln!(s, "    {hook}");
            }
            for rule in &chain.rules {
                let _ = writeln!(s, "    {rule}");
            }
            let _ = writeln!(s, "  }}");
        }
        let _ = writeln!(s, "}}");
        return s;
    }
    let everything = mode == Mode::Refresh;
    // Declarations (adding what exists already changes nothing).
    for (name, chain) in desired.chains.iter().filter(|(n, _)| everything || !applied.chains.contains_key(*n)) {
        match chain.base {
            Some(hook) => writeln!(s, "add chain {t} {name} {{ {hook} }}"),
            None => writeln!(s, "add chain {t} {name}"),
        }
        .ok();
    }
    for (name, decl) in desired.sets.iter().filter(|(n, _)| everything || !applied.sets.contains_key(*n)) {
        let _ = writeln!(s, "add set {t} {name} {{ {decl} }}");
    }
    for (name, (decl, _)) in desired.maps.iter().filter(|(n, _)| everything || !applied.maps.contains_key(*n)) {
        let _ = writeln!(s, "add map {t} {name} {{ {decl} }}");
    }
    // Chains that go, or change, are emptied first, so that nothing refers to what goes.
    for (name, chain) in &applied.chains {
        if everything || desired.chains.get(name) != Some(chain) {
            let _ = writeln!(s, "flush chain {t} {name}");
        }
    }
    let empty_elements = Vec::new();
    for (name, (_, elements)) in &desired.maps {
        let before = match applied.maps.get(name) {
            Some((_, old)) if !everything => old,
            Some(_) => {
                let _ = writeln!(s, "flush map {t} {name}");
                &empty_elements
            }
            None => &empty_elements,
        };
        let gone: Vec<&str> = before
            .iter()
            .filter(|e| !elements.contains(e))
            .map(|e| e.split_once(" : ").map_or(e.as_str(), |(key, _)| key))
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(s, "delete element {t} {name} {{ {} }}", gone.join(", "));
        }
        let new: Vec<&str> = elements.iter().filter(|e| !before.contains(e)).map(String::as_str).collect();
        if !new.is_empty() {
            let _ = writeln!(s, "add element {t} {name} {{ {} }}", new.join(", "));
        }
    }
    for (name, chain) in &desired.chains {
        if everything || applied.chains.get(name) != Some(chain) {
            for rule in &chain.rules {
                let _ = writeln!(s, "add rule {t} {name} {rule}");
            }
        }
    }
    for name in applied.maps.keys().filter(|n| !desired.maps.contains_key(*n)) {
        let _ = writeln!(s, "delete map {t} {name}");
    }
    for name in applied.chains.keys().filter(|n| !desired.chains.contains_key(*n)) {
        let _ = writeln!(s, "delete chain {t} {name}");
    }
    for name in applied.sets.keys().filter(|n| !desired.sets.contains_key(*n)) {
        let _ = writeln!(s, "delete set {t} {name}");
    }
    s
}

/// The script that removes the table (`keel agent` with the proxy off, or a node being cleaned up).
pub fn removal() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn ep(ip: &str, port: u16, local: bool) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port, local }
    }

    fn web(internal: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "ns".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            node_port: Some(30080),
            external_ips: vec![],
            affinity_seconds: None,
            external: internal.clone(),
            internal,
            external_local: false,
        }
    }

    fn net() -> NodeNetwork {
        NodeNetwork {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
        }
    }

    fn rules_of<'a>(r: &'a Ruleset, prefix: &str) -> Vec<(&'a String, &'a Vec<String>)> {
        r.chains.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(n, c)| (n, &c.rules)).collect()
    }

    #[test]
    fn a_service_spreads_over_its_endpoints_and_masquerades_what_would_not_return() {
        let port = web(vec![ep("10.244.1.5", 8080, true), ep("10.244.2.5", 8080, false)]);
        let r = ruleset(&[port], &net());
        let svc = name("svc", "ns/web/tcp/http");
        let ext = name("ext", "ns/web/tcp/http");
        let ep_local = name("ep", "ns/web/tcp/http__10.244.1.5/8080");
        let ep_remote = name("ep", "ns/web/tcp/http__10.244.2.5/8080");
        assert!(svc.starts_with("svc-") && svc.ends_with("-ns/web/tcp/http"), "{svc}");
        assert_eq!(
            r.chains[&svc].rules,
            [
                "ip saddr != 10.244.0.0/16 jump mark-for-masquerade".to_string(),
                format!("numgen random mod 2 vmap {{ 0 : goto {ep_local}, 1 : goto {ep_remote} }}"),
            ]
        );
        assert_eq!(r.chains[&ext].rules[0], "jump mark-for-masquerade");
        assert_eq!(
            r.chains[&ep_local].rules,
            ["ip saddr 10.244.1.0/24 jump mark-for-masquerade", "meta l4proto tcp dnat to 10.244.1.5:8080"]
        );
        assert_eq!(r.chains[&ep_remote].rules, ["meta l4proto tcp dnat to 10.244.2.5:8080"]);
        assert_eq!(
            r.chains["masquerading"].rules[0],
            "ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade fully-random"
        );
        assert_eq!(r.maps[SERVICE_IPS].1, [format!("10.96.0.10 . tcp . 80 : goto {svc}")]);
        assert_eq!(r.maps[SERVICE_NODEPORTS].1, [format!("tcp . 30080 : goto {ext}")]);
        assert!(r.maps[NO_ENDPOINT_SERVICES].1.is_empty());
    }

    #[test]
    fn a_service_without_endpoints_rejects() {
        let r = ruleset(&[web(vec![])], &net());
        assert!(rules_of(&r, "svc-").is_empty() && rules_of(&r, "ext-").is_empty() && rules_of(&r, "ep-").is_empty());
        assert_eq!(r.maps[NO_ENDPOINT_SERVICES].1, ["10.96.0.10 . tcp . 80 : goto reject-chain"]);
        assert_eq!(r.maps[NO_ENDPOINT_NODEPORTS].1, ["tcp . 30080 : goto reject-chain"]);
        assert!(r.maps[SERVICE_IPS].1.is_empty());
    }

    #[test]
    fn affinity_remembers_each_clients_endpoint_and_local_policy_keeps_the_source() {
        let mut port = web(vec![ep("10.244.2.5", 8080, false)]);
        port.affinity_seconds = Some(60);
        port.external_local = true;
        port.external = vec![];
        port.external_ips = vec!["10.200.0.50".parse().unwrap()];
        let r = ruleset(&[port], &net());
        let set = name("aff", "ns/web/tcp/http__10.244.2.5/8080__t60");
        let ep = name("ep", "ns/web/tcp/http__10.244.2.5/8080");
        assert_eq!(r.sets[&set], "type ipv4_addr; flags dynamic,timeout; timeout 60s;");
        assert_eq!(r.chains[&name("svc", "ns/web/tcp/http")].rules[1], format!("ip saddr @{set} goto {ep}"));
        assert_eq!(r.chains[&ep].rules[0], format!("update @{set} {{ ip saddr }}"));
        // No local endpoint under externalTrafficPolicy: Local: external traffic is refused.
        assert_eq!(r.maps[NO_ENDPOINT_SERVICES].1, ["10.200.0.50 . tcp . 80 : goto reject-chain"]);
        assert_eq!(r.maps[NO_ENDPOINT_NODEPORTS].1, ["tcp . 30080 : goto reject-chain"]);
    }

    #[test]
    fn the_first_script_replaces_the_table_and_later_ones_change_only_what_changed() {
        let before = ruleset(&[web(vec![ep("10.244.2.5", 8080, false)])], &net());
        let first = script(&before, &Ruleset::default(), Mode::Replace);
        assert!(first.starts_with("add table ip keel-proxy\ndelete table ip keel-proxy\ntable ip keel-proxy {\n"));
        assert!(first.contains("  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }"));
        assert!(!first.contains("delete chain"));

        let after = ruleset(&[web(vec![ep("10.244.2.6", 8080, false)])], &net());
        let next = script(&after, &before, Mode::Update);
        assert!(!next.contains("delete table") && !next.contains("element"), "no map changed: {next}");
        let gone = name("ep", "ns/web/tcp/http__10.244.2.5/8080");
        let svc = name("svc", "ns/web/tcp/http");
        let flush = next.find(&format!("flush chain ip keel-proxy {gone}\n")).unwrap();
        let refill = next.find(&format!("add rule ip keel-proxy {svc} ")).unwrap();
        let delete = next.find(&format!("delete chain ip keel-proxy {gone}\n")).unwrap();
        assert!(flush < refill && refill < delete, "{next}");
        assert!(!next.contains("nat-prerouting"), "unchanged chains are left alone: {next}");
        assert_eq!(script(&after, &after, Mode::Update), "add table ip keel-proxy\n");

        // A Service losing its last endpoint moves between maps: one element deleted, one added.
        let none = ruleset(&[web(vec![])], &net());
        let emptied = script(&none, &after, Mode::Update);
        assert!(emptied.contains("delete element ip keel-proxy service-ips { 10.96.0.10 . tcp . 80 }"), "{emptied}");
        assert!(emptied
            .contains("add element ip keel-proxy no-endpoint-services { 10.96.0.10 . tcp . 80 : goto reject-chain }"));
        let refresh = script(&after, &after, Mode::Refresh);
        assert!(
            refresh.contains("flush chain ip keel-proxy nat-prerouting")
                && refresh.contains("flush map ip keel-proxy service-ips")
        );
        assert!(!refresh.contains("delete"), "{refresh}");
    }

    #[test]
    fn cidrs_parse() {
        assert_eq!("10.244.0.0/16".parse::<Cidr>().unwrap().to_string(), "10.244.0.0/16");
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        assert!("10.244.0.0/33".parse::<Cidr>().is_err());
    }
}
