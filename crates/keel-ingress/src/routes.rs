//! Where a request goes, by Kubernetes' Ingress rules (pure): the Ingresses of class `keel` (or of no
//! class, while `keel` is the default class), their Services' ports and the ready endpoints of their
//! EndpointSlices → a [`Routes`] table.
//!
//! A request's host picks one set of rules: an exact host's if there are any, else a wildcard's
//! (`*.example.com` matches one label), else the rules without a host; a host's rules do not fall through
//! to the less specific ones (as in ingress-nginx, where each host is a server). Among their paths the longest match wins, `Exact` before `Prefix`
//! at the same length; `Prefix` matches whole path elements (`/foo` matches `/foo` and `/foo/bar`, not
//! `/foobar`); `ImplementationSpecific` is `Prefix`. With no match, an Ingress's `defaultBackend`, else 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressServiceBackend};

/// The IngressClass keel serves.
pub const CLASS: &str = "keel";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where matched requests go: a Service port's ready endpoints (empty: 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `namespace/service:port`, for logs and errors.
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PathRule {
    path: String,
    exact: bool,
    backend: Backend,
}

/// A TLS certificate an Ingress names: the Secret (`namespace`, `name`) and the hosts it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub namespace: String,
    pub secret: String,
    pub hosts: Vec<String>,
}

/// The whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// host ("" for rules without a host; `*.example.com` for wildcards) → paths
    hosts: BTreeMap<String, Vec<PathRule>>,
    default: Option<Backend>,
    pub tls: Vec<Tls>,
}

/// Whether `ingress` is ours: class `keel`, or no class at all (keel is the cluster's default class).
pub fn is_ours(ingress: &Ingress) -> bool {
    let class = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    let annotation = ingress.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/ingress.class"));
    match (class, annotation) {
        (Some(c), _) => c == CLASS,
        (None, Some(a)) => a == CLASS,
        (None, None) => true,
    }
}

/// `a` is a prefix of `b` element-wise (both split on '/').
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn backend_of(
    namespace: &str,
    backend: &IngressServiceBackend,
    services: &BTreeMap<(String, String), &Service>,
    slices: &BTreeMap<(String, String), Vec<&EndpointSlice>>,
) -> Backend {
    let key = (namespace.to_string(), backend.name.clone());
    let port = backend.port.as_ref();
    let wanted_number = port.and_then(|p| p.number);
    let wanted_name = port.and_then(|p| p.name.clone());
    let label = wanted_name.clone().or(wanted_number.map(|n| n.to_string())).unwrap_or_default();
    let name = format!("{namespace}/{}:{label}", backend.name);
    // The Service port the Ingress names, and the name its endpoints' port goes by.
    let service_port = services.get(&key).and_then(|s| {
        s.spec.as_ref()?.ports.as_ref()?.iter().find(|p| match (&wanted_name, wanted_number) {
            (Some(n), _) => p.name.as_deref() == Some(n.as_str()),
            (None, Some(n)) => p.port == n,
            _ => false,
        })
    });
    let Some(service_port) = service_port else { return Backend { name, endpoints: vec![] } };
    let port_name = service_port.name.clone().unwrap_or_default();
    let mut endpoints = Vec::new();
    for slice in slices.get(&key).into_iter().flatten() {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.clone().unwrap_or_default() == port_name && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in &slice.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            endpoints.extend(e.addresses.iter().filter_map(|a| a.parse().ok()).map(|ip| SocketAddr::new(ip, port)));
        }
    }
    endpoints.sort();
    endpoints.dedup();
    Backend { name, endpoints }
}

impl Routes {
    /// The table for `ingresses` (ours only), with their Services and slices.
    pub fn build(ingresses: &[Ingress], services: &[Service], slices: &[EndpointSlice]) -> Routes {
        let services: BTreeMap<(String, String), &Service> = services
            .iter()
            .filter_map(|s| Some(((s.metadata.namespace.clone()?, s.metadata.name.clone()?), s)))
            .collect();
        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                by_service.entry((ns, svc.clone())).or_default().push(slice);
            }
        }
        let mut routes = Routes::default();
        // Oldest first, so that the first Ingress to claim a host and path keeps it.
        let mut ours: Vec<&Ingress> = ingresses.iter().filter(|i| is_ours(i)).collect();
        ours.sort_by_key(|i| (i.metadata.creation_timestamp.clone().map(|t| t.0), i.metadata.name.clone()));
        for ingress in ours {
            let (Some(spec), Some(ns)) = (ingress.spec.as_ref(), ingress.metadata.namespace.as_deref()) else {
                continue;
            };
            if let (None, Some(b)) = (&routes.default, spec.default_backend.as_ref().and_then(|b| b.service.as_ref())) {
                routes.default = Some(backend_of(ns, b, &services, &by_service));
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
                let paths = routes.hosts.entry(host).or_default();
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let Some(service) = p.backend.service.as_ref() else { continue };
                    let path = p.path.clone().unwrap_or_else(|| "/".to_string());
                    let exact = p.path_type == "Exact";
                    if paths.iter().any(|r| r.path == path && r.exact == exact) {
                        continue;
                    }
                    paths.push(PathRule { path, exact, backend: backend_of(ns, service, &services, &by_service) });
                }
            }
            for tls in spec.tls.iter().flatten() {
                let Some(secret) = tls.secret_name.clone() else { continue };
                let hosts = tls.hosts.clone().unwrap_or_default().iter().map(|h| h.to_ascii_lowercase()).collect();
                routes.tls.push(Tls { namespace: ns.to_string(), secret, hosts });
            }
        }
        routes
    }

    /// The backend for a request to `host` (a Host header, port allowed) and `path`; `None` for 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Backend> {
        let host =
            host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let wildcard = host.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        let candidates = [Some(host.clone()), wildcard, Some(String::new())];
        let rules = candidates.iter().flatten().find_map(|h| self.hosts.get(h));
        let best = rules
            .into_iter()
            .flatten()
            .filter(|r| if r.exact { r.path == path } else { prefix_matches(&r.path, path) })
            .max_by_key(|r| (r.path.trim_end_matches('/').len(), r.exact));
        best.map(|rule| &rule.backend).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn objects() -> (Vec<Ingress>, Vec<Service>, Vec<EndpointSlice>) {
        let ingresses = serde_json::from_value(json!([
            {"metadata": {"namespace": "shop", "name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
             "spec": {"ingressClassName": "keel",
                      "tls": [{"hosts": ["shop.example"], "secretName": "shop-tls"}],
                      "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
                      "rules": [
                {"host": "shop.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"name": "http"}}}},
                    {"path": "/api/v2", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                ]}},
                {"host": "*.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"number": 8080}}}},
                ]}},
            ]}},
            {"metadata": {"namespace": "shop", "name": "other-class"},
             "spec": {"ingressClassName": "nginx", "rules": [{"host": "nginx.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}},
        ]))
        .unwrap();
        let services = serde_json::from_value(json!([
            {"metadata": {"namespace": "shop", "name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"metadata": {"namespace": "shop", "name": "api"}, "spec": {"ports": [{"name": "http", "port": 8080}]}},
        ]))
        .unwrap();
        let slices = serde_json::from_value(json!([
            {"metadata": {"namespace": "shop", "name": "web-1", "labels": {SERVICE_NAME_LABEL: "web"}},
             "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
             "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.2"], "conditions": {"ready": false}}]},
            {"metadata": {"namespace": "shop", "name": "api-1", "labels": {SERVICE_NAME_LABEL: "api"}},
             "addressType": "IPv4", "ports": [{"name": "http", "port": 9000}],
             "endpoints": [{"addresses": ["10.244.2.3"]}]},
        ]))
        .unwrap();
        (ingresses, services, slices)
    }

    fn to(routes: &Routes, host: &str, path: &str) -> Option<String> {
        routes.route(host, path).map(|b| format!("{} {:?}", b.name, b.endpoints))
    }

    #[test]
    fn hosts_and_paths_pick_backends_as_kubernetes_says() {
        let (i, s, e) = objects();
        let r = Routes::build(&i, &s, &e);
        let web = Some("shop/web:80 [10.244.1.2:8080]".to_string());
        let api = Some("shop/api:http [10.244.2.3:9000]".to_string());
        assert_eq!(to(&r, "shop.example", "/"), web);
        assert_eq!(to(&r, "SHOP.example:443", "/index.html"), web);
        assert_eq!(to(&r, "shop.example", "/api"), api);
        assert_eq!(to(&r, "shop.example", "/api/v1/items"), api);
        assert_eq!(to(&r, "shop.example", "/apix"), web, "prefixes match whole elements");
        assert_eq!(to(&r, "shop.example", "/api/v2"), web, "exact beats a shorter prefix");
        assert_eq!(to(&r, "shop.example", "/api/v2/x"), api);
        assert_eq!(to(&r, "m.example", "/x"), Some("shop/api:8080 [10.244.2.3:9000]".to_string()), "wildcard");
        assert_eq!(to(&r, "a.b.example", "/x"), web, "a wildcard matches one label; the default backend");
        assert_eq!(to(&r, "nginx.test", "/"), web, "another class's Ingress is not served");
        assert_eq!(
            r.tls,
            [Tls { namespace: "shop".into(), secret: "shop-tls".into(), hosts: vec!["shop.example".into()] }]
        );
    }

    #[test]
    fn without_a_default_unmatched_requests_are_404() {
        let (mut i, s, e) = objects();
        i[0].spec.as_mut().unwrap().default_backend = None;
        let r = Routes::build(&i, &s, &e);
        assert_eq!(r.route("nowhere.test", "/"), None);
        // A host with rules but no matching path gets the default backend, not the rules without a host.
        let hostless = json!({"http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}});
        i[0].spec.as_mut().unwrap().rules.as_mut().unwrap().push(serde_json::from_value(hostless).unwrap());
        i[0].spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths.remove(0);
        let r = Routes::build(&i, &s, &e);
        assert_eq!(r.route("shop.example", "/index.html"), None, "shop.example has no / rule");
        assert!(r.route("nowhere.test", "/").is_some(), "the rules without a host serve other hosts");
        assert!(prefix_matches("/", "/anything") && prefix_matches("/a/", "/a/b") && !prefix_matches("/a", "/ab"));
    }
}
