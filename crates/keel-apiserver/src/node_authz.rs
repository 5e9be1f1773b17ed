//! What a node may do, as kube-apiserver's Node authorizer and NodeRestriction admission decide it for
//! `system:node:<name>` in `system:nodes`: it reads the Secrets, ConfigMaps and PersistentVolumeClaims of
//! the pods bound to it, and asks for tokens of their service accounts, and nothing of anyone else's; it
//! changes only its own Node and Lease and the pods bound to it. Secrets of type `kubernetes.io/tls` may be
//! listed and watched (with that field selector only): every node's Ingress proxy serves the Ingresses'
//! certificates. Everything else a node does goes to RBAC (`keel:node`).
//!
//! The pods come from every master's own watch ([`NodeGraph`]), so a decision never reads the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use crate::auth::User;
use crate::authz::Attributes;
use crate::storage::{Change, Storage, StorageError, Watched};

pub const NODES: &str = "system:nodes";
const PREFIX: &str = "system:node:";

/// What a node's decision is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, whatever RBAC says.
    Deny,
    /// Not a node, or not a node matter: RBAC decides.
    NoOpinion,
}

/// The objects a pod uses: (kind, namespace, name) with kind `secrets`, `configmaps`,
/// `persistentvolumeclaims` or `serviceaccounts`.
type Uses = BTreeSet<(&'static str, String, String)>;

/// Each pod bound to a node: where, and what it uses.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// pod (namespace, name) → (node, uses).
    pods: BTreeMap<(String, String), (String, Uses)>,
}

fn uses(pod: &Pod) -> Uses {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Uses::new();
    let Some(spec) = &pod.spec else { return out };
    let mut add = |kind: &'static str, name: &str| {
        if !name.is_empty() {
            out.insert((kind, ns.clone(), name.to_string()));
        }
    };
    add("serviceaccounts", spec.service_account_name.as_deref().unwrap_or("default"));
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            add("secrets", s);
        }
        if let Some(c) = &v.config_map {
            add("configmaps", &c.name);
        }
        if let Some(c) = &v.persistent_volume_claim {
            add("persistentvolumeclaims", &c.claim_name);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &source.config_map {
                add("configmaps", &c.name);
            }
            if let Some(s) = &source.secret {
                add("secrets", &s.name);
            }
        }
    }
    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    for c in containers {
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &e.secret_key_ref {
                add("secrets", &r.name);
            }
            if let Some(r) = &e.config_map_key_ref {
                add("configmaps", &r.name);
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.secret_ref {
                add("secrets", &r.name);
            }
            if let Some(r) = &e.config_map_ref {
                add("configmaps", &r.name);
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add("secrets", &s.name);
    }
    out
}

impl Graph {
    pub fn from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Graph {
        let mut g = Graph::default();
        for pod in pods {
            g.put(pod);
        }
        g
    }

    fn put(&mut self, pod: &Pod) {
        let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
        match pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
            Some(node) => {
                self.pods.insert(key, (node, uses(pod)));
            }
            None => {
                self.pods.remove(&key);
            }
        }
    }

    fn node_of(&self, namespace: &str, pod: &str) -> Option<&str> {
        self.pods.get(&(namespace.to_string(), pod.to_string())).map(|(n, _)| n.as_str())
    }

    fn used_by_node(&self, node: &str, kind: &str, namespace: &str, name: &str) -> bool {
        self.pods
            .values()
            .any(|(n, uses)| n == node && uses.iter().any(|(k, ns, x)| *k == kind && ns == namespace && x == name))
    }
}

/// The node a user is, if it is one.
pub fn node_of(user: &User) -> Option<&str> {
    user.name.strip_prefix(PREFIX).filter(|_| user.in_group(NODES)).filter(|n| !n.is_empty())
}

/// The node authorizer's decision on `a` (`query` the request's, for its field selector).
pub fn decide(user: &User, a: &Attributes, query: Option<&str>, graph: &Graph) -> Decision {
    let Some(node) = node_of(user) else { return Decision::NoOpinion };
    let Some(r) = &a.resource else { return Decision::NoOpinion };
    if !r.group.is_empty() && r.group != "coordination.k8s.io" {
        return Decision::NoOpinion;
    }
    let ns = r.namespace.as_deref().unwrap_or_default();
    let name = r.name.as_deref().unwrap_or_default();
    let sub = r.subresource.as_deref();
    let allow_if = |yes: bool| if yes { Decision::Allow } else { Decision::Deny };
    match (r.group.as_str(), r.resource.as_str(), sub, a.verb.as_str()) {
        ("", "secrets", None, "list" | "watch") => {
            // The Ingress proxy's certificates, and nothing else.
            let selector = query.unwrap_or_default().split('&').find_map(|p| p.strip_prefix("fieldSelector="));
            let decoded = selector.map(|s| s.replace("%3D", "=").replace("%2F", "/"));
            allow_if(decoded.as_deref() == Some("type=kubernetes.io/tls"))
        }
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", None, "get") => {
            allow_if(graph.used_by_node(node, &r.resource, ns, name))
        }
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", None, _) => Decision::Deny,
        // A claim's volume, to mount it (kube follows claim → volume in its graph; keel's graph holds pods
        // only, and a volume holds no secret: any volume may be read).
        ("", "persistentvolumes", None, "get") => Decision::Allow,
        ("", "persistentvolumes", ..) => Decision::Deny,
        ("", "serviceaccounts", Some("token"), "create") => {
            allow_if(graph.used_by_node(node, "serviceaccounts", ns, name))
        }
        // NodeRestriction: its own Node, and its own Lease.
        ("", "nodes", _, "update" | "patch" | "delete") => allow_if(name == node),
        ("coordination.k8s.io", "leases", _, "create") if ns == "kube-node-lease" => Decision::NoOpinion,
        ("coordination.k8s.io", "leases", _, "update" | "patch" | "delete" | "get") if ns == "kube-node-lease" => {
            allow_if(name == node)
        }
        // The pods bound to it: their status, and their deletion once finished.
        ("", "pods", Some("status"), "update" | "patch") | ("", "pods", None, "delete") => {
            allow_if(graph.node_of(ns, name) == Some(node))
        }
        ("", "pods", None, "update" | "patch" | "create") => Decision::Deny,
        _ => Decision::NoOpinion,
    }
}

/// Every master's graph of pods, from one list and watch of the pods (relisted when the watch breaks).
#[derive(Clone)]
pub struct NodeGraph {
    graph: watch::Receiver<Arc<Graph>>,
}

impl NodeGraph {
    pub fn follow(storage: Storage, stop: watch::Receiver<bool>) -> NodeGraph {
        let (tx, rx) = watch::channel(Arc::new(Graph::default()));
        let what = "the node authorizer's pods";
        crate::storage::keep_following(what, storage, tx, stop, |storage, tx| async move { sync(&storage, &tx).await });
        NodeGraph { graph: rx }
    }

    pub fn graph(&self) -> Arc<Graph> {
        self.graph.borrow().clone()
    }
}

fn decode(bytes: &[u8]) -> Option<Pod> {
    serde_json::from_slice(bytes).ok()
}

async fn sync(storage: &Storage, tx: &watch::Sender<Arc<Graph>>) -> Result<(), StorageError> {
    const PODS: &str = "/registry/pods/";
    let page = storage.list(PODS, None, 0, 0).await?;
    let mut graph = Graph::from_pods(page.items.iter().filter_map(|s| decode(&s.value)).collect::<Vec<_>>().iter());
    tx.send_replace(Arc::new(graph.clone()));
    let mut watch = storage.watch(PODS, page.revision + 1).await?;
    while let Some(item) = watch.next().await {
        match item? {
            Watched::Changes(changes) => {
                for change in changes {
                    match change {
                        Change::Put { object, .. } => {
                            if let Some(pod) = decode(&object.value) {
                                graph.put(&pod);
                            }
                        }
                        Change::Delete { previous, .. } => {
                            if let Some(pod) = decode(&previous.value) {
                                let key = (
                                    pod.metadata.namespace.clone().unwrap_or_default(),
                                    pod.metadata.name.clone().unwrap_or_default(),
                                );
                                graph.pods.remove(&key);
                            }
                        }
                    }
                }
                tx.send_replace(Arc::new(graph.clone()));
            }
            Watched::Progress { .. } => {}
            Watched::Compacted { compacted } => {
                return Err(StorageError::Unavailable(format!("the pod watch fell behind compaction ({compacted})")));
            }
        }
    }
    Err(StorageError::Unavailable("the pod watch ended".into()))
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use serde_json::json;

    use super::*;

    fn graph() -> Graph {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "a"},
            "spec": {"nodeName": "n1", "serviceAccountName": "robot",
                "volumes": [{"name": "v", "secret": {"secretName": "creds"}},
                            {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}}]}]},
        }))
        .unwrap();
        Graph::from_pods([&pod])
    }

    fn node(name: &str) -> User {
        User::authenticated(format!("system:node:{name}"), [NODES.to_string()])
    }

    fn check(user: &User, method: Method, path: &str, query: Option<&str>) -> Decision {
        decide(user, &Attributes::of(&method, path, query), query, &graph())
    }

    #[test]
    fn a_node_reaches_only_what_its_pods_use() {
        let n1 = node("n1");
        let n2 = node("n2");
        for path in [
            "/api/v1/namespaces/a/secrets/creds",
            "/api/v1/namespaces/a/configmaps/settings",
            "/api/v1/namespaces/a/configmaps/kube-root-ca.crt",
        ] {
            assert_eq!(check(&n1, Method::GET, path, None), Decision::Allow, "{path}");
            assert_eq!(check(&n2, Method::GET, path, None), Decision::Deny, "{path}");
        }
        assert_eq!(check(&n1, Method::GET, "/api/v1/namespaces/a/secrets/other", None), Decision::Deny);
        assert_eq!(check(&n1, Method::GET, "/api/v1/secrets", None), Decision::Deny);
        assert_eq!(
            check(&n1, Method::GET, "/api/v1/secrets", Some("fieldSelector=type%3Dkubernetes.io%2Ftls")),
            Decision::Allow
        );
        assert_eq!(check(&n1, Method::POST, "/api/v1/namespaces/a/serviceaccounts/robot/token", None), Decision::Allow);
        assert_eq!(check(&n2, Method::POST, "/api/v1/namespaces/a/serviceaccounts/robot/token", None), Decision::Deny);
        assert_eq!(check(&n1, Method::PATCH, "/api/v1/nodes/n1/status", None), Decision::Allow);
        assert_eq!(check(&n1, Method::PATCH, "/api/v1/nodes/n2/status", None), Decision::Deny);
        assert_eq!(
            check(&n1, Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2", None),
            Decision::Deny
        );
        assert_eq!(check(&n1, Method::PATCH, "/api/v1/namespaces/a/pods/web/status", None), Decision::Allow);
        assert_eq!(check(&n2, Method::PATCH, "/api/v1/namespaces/a/pods/web/status", None), Decision::Deny);
        assert_eq!(check(&n1, Method::GET, "/api/v1/pods", None), Decision::NoOpinion);
        let bob = User::authenticated("bob", []);
        assert_eq!(check(&bob, Method::GET, "/api/v1/namespaces/a/secrets/creds", None), Decision::NoOpinion);
    }
}
