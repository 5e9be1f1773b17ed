//! The generated transactions as the kernel takes them (as root, with Debian's nftables): applied into a
//! network namespace of the test's own, first whole, then changed in place, then removed.

use std::net::Ipv4Addr;
use std::process::Command;

use keel_proxy::model::{Endpoint, Protocol, ServicePort};
use keel_proxy::nft::{Nft, Nftables as _};
use keel_proxy::rules::{self, Mode, NodeNetwork, Ruleset};

struct Netns(String);

impl Netns {
    fn create() -> Netns {
        let name = format!("keel-proxy-t{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap().success();
        assert!(ok, "ip netns add {name} (run as root)");
        Netns(name)
    }

    fn nft(&self) -> Nft {
        Nft { netns: Some(format!("/run/netns/{}", self.0).into()) }
    }

    fn list(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.0, "nft", "list", "ruleset"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn port(name: &str, endpoints: &[(&str, bool)], affinity: Option<u32>) -> ServicePort {
    let endpoints: Vec<Endpoint> =
        endpoints.iter().map(|(ip, local)| Endpoint { ip: ip.parse().unwrap(), port: 8080, local: *local }).collect();
    ServicePort {
        namespace: "default".into(),
        service: name.into(),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ips: vec!["10.96.0.10".parse().unwrap()],
        node_port: Some(30080),
        external_ips: vec![Ipv4Addr::new(10, 200, 0, 50)],
        affinity_seconds: affinity,
        internal: endpoints.clone(),
        external: endpoints,
        external_local: false,
    }
}

#[test]
fn transactions_apply_whole_then_in_place_then_go() {
    let ns = Netns::create();
    let nft = ns.nft();
    nft.check().unwrap();
    let net = NodeNetwork {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        pod_cidr: Some("10.244.1.0/24".parse().unwrap()),
    };

    let first = rules::ruleset(
        &[port("web", &[("10.244.1.5", true), ("10.244.2.5", false)], Some(60)), port("empty", &[], None)],
        &net,
    );
    nft.apply(&rules::script(&first, &Ruleset::default(), Mode::Replace)).unwrap();
    let listed = ns.list();
    assert!(listed.contains("dnat to 10.244.2.5:8080") && listed.contains("numgen random mod 2"), "{listed}");
    assert!(listed.contains("goto reject-chain"), "{listed}");

    // An endpoint goes, another comes, affinity goes: changed in place, the stale chains and sets deleted.
    let second = rules::ruleset(&[port("web", &[("10.244.2.6", false)], None)], &net);
    nft.apply(&rules::script(&second, &first, Mode::Update)).unwrap();
    let listed = ns.list();
    assert!(listed.contains("dnat to 10.244.2.6:8080") && !listed.contains("10.244.2.5"), "{listed}");
    assert!(!listed.contains("aff-"), "{listed}");
    // The same again is accepted (nothing to change), and the whole table replaced is too (a restart).
    nft.apply(&rules::script(&second, &second, Mode::Update)).unwrap();
    nft.apply(&rules::script(&second, &second, Mode::Refresh)).unwrap();
    // The empty Service gets an endpoint, the other loses its: elements move between maps in place.
    let third = rules::ruleset(&[port("web", &[], None), port("empty", &[("10.244.1.9", true)], Some(30))], &net);
    nft.apply(&rules::script(&third, &second, Mode::Update)).unwrap();
    let listed = ns.list();
    assert!(listed.contains("dnat to 10.244.1.9:8080") && !listed.contains("10.244.2.6"), "{listed}");
    nft.apply(&rules::script(&second, &Ruleset::default(), Mode::Replace)).unwrap();

    // An agent started with the proxy off removes the table, and a table already gone is no error.
    keel_proxy::remove(nft.netns.clone()).unwrap();
    assert!(!ns.list().contains("keel-proxy"));
    keel_proxy::remove(nft.netns.clone()).unwrap();
    assert!(nft.apply("add table ip keel-proxy\nnonsense\n").is_err(), "a bad script is an error");
}
