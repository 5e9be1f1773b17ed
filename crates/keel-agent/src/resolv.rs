//! A pod's /etc/resolv.conf, as the kubelet writes it for its `dnsPolicy` (pure):
//! - `ClusterFirst` (the default): the cluster DNS server, the search path `<ns>.svc.<domain>
//!   svc.<domain> <domain>` then the node's own search domains, and `options ndots:5`; a pod on the host's
//!   network gets the node's file instead (unless `ClusterFirstWithHostNet`), and so does every pod when
//!   the node has no cluster DNS;
//! - `Default`: the node's file;
//! - `None`: only what `dnsConfig` says.
//!
//! `dnsConfig` is then merged in: its nameservers and searches appended (duplicates dropped), its options
//! replacing those of the same name.

use k8s_openapi::api::core::v1::Pod;

/// The cluster DNS a node's pods use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The `kube-dns` Service's address.
    pub server: String,
    /// `cluster.local`.
    pub domain: String,
}

#[derive(Debug, Default)]
struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

impl Resolv {
    fn parse(text: &str) -> Resolv {
        let mut r = Resolv::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => r.searches = words.map(str::to_string).collect(),
                Some("options") => r.options.extend(words.map(option)),
                _ => {}
            }
        }
        r
    }

    fn add_search(&mut self, s: &str) {
        if !s.is_empty() && !self.searches.iter().any(|x| x == s) {
            self.searches.push(s.to_string());
        }
    }

    fn set_option(&mut self, name: String, value: Option<String>) {
        match self.options.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => self.options.push((name, value)),
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            let opts: Vec<String> = self
                .options
                .iter()
                .map(|(n, v)| v.as_ref().map_or_else(|| n.clone(), |v| format!("{n}:{v}")))
                .collect();
            out.push_str(&format!("options {}\n", opts.join(" ")));
        }
        out
    }
}

fn option(word: &str) -> (String, Option<String>) {
    match word.split_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (word.to_string(), None),
    }
}

/// The pod's resolv.conf, given the node's own (`host`) and the node's cluster DNS.
pub fn resolv_conf(pod: &Pod, dns: Option<&ClusterDns>, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster = match (policy, dns) {
        ("ClusterFirstWithHostNet", Some(dns)) => Some(dns),
        ("ClusterFirst", Some(dns)) if !host_network => Some(dns),
        _ => None,
    };
    let mut r = match (policy, cluster) {
        ("None", _) => Resolv::default(),
        (_, Some(dns)) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = &dns.domain;
            let mut r = Resolv { nameservers: vec![dns.server.clone()], ..Default::default() };
            for s in [format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()] {
                r.add_search(&s);
            }
            for s in Resolv::parse(host).searches {
                r.add_search(&s);
            }
            r.options.push(("ndots".into(), Some("5".into())));
            r
        }
        _ => Resolv::parse(host),
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for ns in config.nameservers.iter().flatten() {
            if !r.nameservers.contains(ns) {
                r.nameservers.push(ns.clone());
            }
        }
        for s in config.searches.iter().flatten() {
            r.add_search(s);
        }
        for o in config.options.iter().flatten() {
            if let Some(name) = &o.name {
                r.set_option(name.clone(), o.value.clone());
            }
        }
    }
    r.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HOST: &str = "# host\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec})).unwrap()
    }

    fn dns() -> ClusterDns {
        ClusterDns { server: "10.96.0.10".into(), domain: "cluster.local".into() }
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_kubernetes_search_path() {
        let got = resolv_conf(&pod(json!({"containers": []})), Some(&dns()), HOST);
        assert_eq!(
            got,
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_host_network_and_no_cluster_dns_get_the_nodes_file() {
        let want = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
        assert_eq!(resolv_conf(&pod(json!({"dnsPolicy": "Default"})), Some(&dns()), HOST), want);
        assert_eq!(resolv_conf(&pod(json!({"hostNetwork": true})), Some(&dns()), HOST), want);
        assert_eq!(resolv_conf(&pod(json!({})), None, HOST), want);
        let with_host_net = pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert!(resolv_conf(&with_host_net, Some(&dns()), HOST).starts_with("nameserver 10.96.0.10\n"));
    }

    #[test]
    fn dns_config_is_merged_and_none_takes_only_it() {
        let config = json!({"nameservers": ["1.2.3.4"], "searches": ["a.example"],
                            "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]});
        let merged = resolv_conf(&pod(json!({"dnsConfig": config})), Some(&dns()), HOST);
        assert_eq!(
            merged,
            "nameserver 10.96.0.10\nnameserver 1.2.3.4\nsearch shop.svc.cluster.local svc.cluster.local cluster.local \
             corp.example a.example\noptions ndots:2 single-request\n"
        );
        let only = resolv_conf(&pod(json!({"dnsPolicy": "None", "dnsConfig": config})), Some(&dns()), HOST);
        assert_eq!(only, "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 single-request\n");
    }
}
