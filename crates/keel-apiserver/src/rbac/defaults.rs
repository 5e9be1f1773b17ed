//! The roles and bindings every cluster starts with, those kube-apiserver bootstraps (its
//! `rbac/bootstrap-roles` hook): `cluster-admin` for `system:masters`; `admin`, `edit` and `view`
//! aggregated from the `system:aggregate-to-*` roles; discovery, basic-user and public-info for everyone
//! authenticated; the node, scheduler, controller-manager and proxy roles. Each master reconciles them at
//! start as kube-apiserver does: a missing one is created; one whose `autoupdate` annotation is not
//! "false" gets back the rules (or subjects) it lacks, and keeps any it gained.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use serde_json::{json, Value};

use super::GROUP;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const READ: &str = "get,list,watch";
const WRITE: &str = "create,delete,deletecollection,patch,update";
const ALL: &str = "create,delete,deletecollection,get,list,patch,update,watch";

fn split(s: &str) -> Vec<&str> {
    s.split(',').filter(|p| !p.is_empty()).collect()
}

/// A resource rule: groups (`""` is the core group: write `"core"`), resources, verbs, comma-separated.
fn r(groups: &str, resources: &str, verbs: &str) -> Value {
    let groups: Vec<&str> = split(groups).into_iter().map(|g| if g == "core" { "" } else { g }).collect();
    json!({"apiGroups": groups, "resources": split(resources), "verbs": split(verbs)})
}

/// A resource rule limited to some names.
fn named(groups: &str, resources: &str, names: &str, verbs: &str) -> Value {
    let mut rule = r(groups, resources, verbs);
    rule["resourceNames"] = json!(split(names));
    rule
}

/// A non-resource rule.
fn urls(paths: &str, verbs: &str) -> Value {
    json!({"nonResourceURLs": split(paths), "verbs": split(verbs)})
}

fn meta(name: &str, labels: Value) -> Value {
    let mut all = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for (k, v) in labels.as_object().into_iter().flatten() {
        all[k] = v.clone();
    }
    json!({"name": name, "labels": all, "annotations": {AUTOUPDATE: "true"}})
}

fn role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, from: &str) -> Value {
    let mut role = role(name, labels, vec![]);
    let selector = json!({"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{from}"): "true"}});
    role["aggregationRule"] = json!({"clusterRoleSelectors": [selector]});
    role
}

fn aggregate_to(to: &str) -> Value {
    json!({format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"})
}

/// The default ClusterRoles, with Kubernetes 1.33's rules.
pub fn cluster_roles() -> Vec<Value> {
    let none = json!({});
    vec![
        role("cluster-admin", none.clone(), vec![r("*", "*", "*"), urls("*", "*")]),
        aggregated("admin", none.clone(), "admin"),
        aggregated("edit", aggregate_to("admin"), "edit"),
        aggregated("view", aggregate_to("edit"), "view"),
        role(
            "system:aggregate-to-admin",
            aggregate_to("admin"),
            vec![r("authorization.k8s.io", "localsubjectaccessreviews", "create"), r(GROUP, "rolebindings,roles", ALL)],
        ),
        role(
            "system:aggregate-to-edit",
            aggregate_to("edit"),
            vec![
                r("core", "pods/attach,pods/exec,pods/portforward,pods/proxy,secrets,services/proxy", READ),
                r("core", "serviceaccounts", "impersonate"),
                r("core", "pods,pods/attach,pods/exec,pods/portforward,pods/proxy", WRITE),
                r("core", "pods/eviction", "create"),
                r("core", "configmaps,events,persistentvolumeclaims,replicationcontrollers,replicationcontrollers/scale,secrets,serviceaccounts,services,services/proxy", WRITE),
                r("core", "serviceaccounts/token", "create"),
                r("apps", "daemonsets,deployments,deployments/rollback,deployments/scale,replicasets,replicasets/scale,statefulsets,statefulsets/scale", WRITE),
                r("autoscaling", "horizontalpodautoscalers", WRITE),
                r("batch", "cronjobs,jobs", WRITE),
                r("extensions", "daemonsets,deployments,deployments/rollback,deployments/scale,ingresses,networkpolicies,replicasets,replicasets/scale,replicationcontrollers/scale", WRITE),
                r("policy", "poddisruptionbudgets", WRITE),
                r("networking.k8s.io", "ingresses,networkpolicies", WRITE),
                r("coordination.k8s.io", "leases", ALL),
            ],
        ),
        role(
            "system:aggregate-to-view",
            aggregate_to("view"),
            vec![
                r("core", "configmaps,endpoints,persistentvolumeclaims,persistentvolumeclaims/status,pods,replicationcontrollers,replicationcontrollers/scale,serviceaccounts,services,services/status", READ),
                r("core", "bindings,events,limitranges,namespaces/status,pods/log,pods/status,replicationcontrollers/status,resourcequotas,resourcequotas/status", READ),
                r("core", "namespaces", READ),
                r("discovery.k8s.io", "endpointslices", READ),
                r("apps", "controllerrevisions,daemonsets,daemonsets/status,deployments,deployments/scale,deployments/status,replicasets,replicasets/scale,replicasets/status,statefulsets,statefulsets/scale,statefulsets/status", READ),
                r("autoscaling", "horizontalpodautoscalers,horizontalpodautoscalers/status", READ),
                r("batch", "cronjobs,cronjobs/status,jobs,jobs/status", READ),
                r("extensions", "daemonsets,daemonsets/status,deployments,deployments/scale,deployments/status,ingresses,ingresses/status,networkpolicies,replicasets,replicasets/scale,replicasets/status,replicationcontrollers/scale", READ),
                r("policy", "poddisruptionbudgets,poddisruptionbudgets/status", READ),
                r("networking.k8s.io", "ingresses,ingresses/status,networkpolicies", READ),
            ],
        ),
        // What metrics-server's manifest adds: reading the resource metrics API.
        role(
            "system:aggregated-metrics-reader",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true",
                   "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                   "rbac.authorization.k8s.io/aggregate-to-view": "true"}),
            vec![r("metrics.k8s.io", "nodes,pods", READ)],
        ),
        role(
            "system:basic-user",
            none.clone(),
            vec![
                r("authorization.k8s.io", "selfsubjectaccessreviews,selfsubjectrulesreviews", "create"),
                r("authentication.k8s.io", "selfsubjectreviews", "create"),
            ],
        ),
        role(
            "system:discovery",
            none.clone(),
            vec![urls("/api,/api/*,/apis,/apis/*,/healthz,/livez,/openapi,/openapi/*,/readyz,/version,/version/", "get")],
        ),
        role("system:public-info-viewer", none.clone(), vec![urls("/healthz,/livez,/readyz,/version,/version/", "get")]),
        role(
            "system:monitoring",
            none.clone(),
            vec![urls("/healthz,/healthz/*,/livez,/livez/*,/metrics,/metrics/slis,/readyz,/readyz/*", "get")],
        ),
        role(
            "system:service-account-issuer-discovery",
            none.clone(),
            vec![urls("/.well-known/openid-configuration,/openid/v1/jwks", "get")],
        ),
        role("system:node-bootstrapper", none.clone(), vec![r("certificates.k8s.io", "certificatesigningrequests", "create,get,list,watch")]),
        role("system:node", none.clone(), kubelet_rules()),
        keel_node(),
        role(
            "keel:controller-manager",
            none.clone(),
            vec![
                // The garbage collector and the namespace controller act on objects of every kind.
                r("*", "*", "delete,deletecollection,get,list,patch,update,watch"),
                r("core", "configmaps,endpoints,events,persistentvolumeclaims,persistentvolumes,pods,serviceaccounts", "create"),
                r("core", "pods/eviction,serviceaccounts/token", "create"),
                r("apps", "controllerrevisions,replicasets", "create"),
                r("batch", "jobs", "create"),
                r("discovery.k8s.io", "endpointslices", "create"),
                r("events.k8s.io", "events", "create"),
                // ClusterRole aggregation writes rules its user does not hold.
                r("rbac.authorization.k8s.io", "clusterroles", "escalate"),
            ],
        ),
        role(
            "system:node-proxier",
            none.clone(),
            vec![
                r("core", "endpoints,services", "list,watch"),
                r("core", "nodes", READ),
                r("core,events.k8s.io", "events", "create,patch,update"),
                r("discovery.k8s.io", "endpointslices", "list,watch"),
            ],
        ),
        role(
            "system:kube-scheduler",
            none.clone(),
            vec![
                r("core,events.k8s.io", "events", "create,patch,update"),
                r("coordination.k8s.io", "leases", "create"),
                named("coordination.k8s.io", "leases", "kube-scheduler", "get,update"),
                r("core", "nodes", READ),
                r("core", "pods", "delete,get,list,watch"),
                r("core", "bindings,pods/binding", "create"),
                r("core", "pods/status", "patch,update"),
                r("core", "replicationcontrollers,services", READ),
                r("apps,extensions", "replicasets", READ),
                r("apps", "statefulsets", READ),
                r("policy", "poddisruptionbudgets", READ),
                r("core", "persistentvolumeclaims,persistentvolumes", READ),
                r("authentication.k8s.io", "tokenreviews", "create"),
                r("authorization.k8s.io", "subjectaccessreviews", "create"),
                r("storage.k8s.io", "csinodes", READ),
                r("core", "namespaces", READ),
                r("storage.k8s.io", "csidrivers", READ),
                r("storage.k8s.io", "csistoragecapacities", READ),
            ],
        ),
        role(
            "system:volume-scheduler",
            none.clone(),
            vec![
                r("core", "persistentvolumes", "get,list,patch,update,watch"),
                r("storage.k8s.io", "storageclasses", READ),
                r("core", "persistentvolumeclaims", "get,list,patch,update,watch"),
            ],
        ),
        role(
            "system:kube-controller-manager",
            none,
            vec![
                r("core,events.k8s.io", "events", "create,patch,update"),
                r("coordination.k8s.io", "leases", "create"),
                named("coordination.k8s.io", "leases", "kube-controller-manager", "get,update"),
                r("core", "secrets,serviceaccounts", "create"),
                r("core", "secrets", "delete"),
                r("core", "configmaps,namespaces,secrets,serviceaccounts", "get"),
                r("core", "secrets,serviceaccounts", "update"),
                r("authentication.k8s.io", "tokenreviews", "create"),
                r("authorization.k8s.io", "subjectaccessreviews", "create"),
                r("*", "*", "list,watch"),
                r("core", "serviceaccounts/token", "create"),
            ],
        ),
    ]
}

fn subject(kind: &str, name: &str) -> Value {
    match kind {
        "ServiceAccount" => {
            let (ns, name) = name.split_once('/').unwrap_or(("", name));
            json!({"kind": kind, "name": name, "namespace": ns})
        }
        _ => json!({"kind": kind, "name": name, "apiGroup": GROUP}),
    }
}

/// The default ClusterRoleBindings: each binds the ClusterRole of its name.
pub fn cluster_role_bindings() -> Vec<Value> {
    let binding = |name: &str, subjects: Vec<Value>| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta(name, json!({})),
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
            "subjects": subjects,
        })
    };
    vec![
        binding("cluster-admin", vec![subject("Group", crate::auth::MASTERS)]),
        binding("system:basic-user", vec![subject("Group", crate::auth::AUTHENTICATED)]),
        binding("system:discovery", vec![subject("Group", crate::auth::AUTHENTICATED)]),
        binding(
            "system:public-info-viewer",
            vec![subject("Group", crate::auth::AUTHENTICATED), subject("Group", "system:unauthenticated")],
        ),
        binding("system:monitoring", vec![subject("Group", "system:monitoring")]),
        binding("system:service-account-issuer-discovery", vec![subject("Group", "system:serviceaccounts")]),
        binding("system:kube-controller-manager", vec![subject("User", "system:kube-controller-manager")]),
        binding("system:kube-scheduler", vec![subject("User", "system:kube-scheduler")]),
        binding("system:node-proxier", vec![subject("User", "system:kube-proxy")]),
        binding("system:node", vec![]),
    ]
    .into_iter()
    .chain([
        named_binding("keel:node-bootstrapper", "system:node-bootstrapper", crate::bootstrap_tokens::NODES_GROUP),
        named_binding("keel:node-proxiers", "system:node-proxier", "system:nodes"),
        named_binding("keel:node", "keel:node", "system:nodes"),
        user_binding("keel:controller-manager", "keel:controller-manager", "system:kube-controller-manager"),
        user_binding("system:volume-scheduler", "system:volume-scheduler", "system:kube-scheduler"),
    ])
    .collect()
}

/// The kubelet's rules (`system:node`).
fn kubelet_rules() -> Vec<Value> {
    vec![
        r("authentication.k8s.io", "tokenreviews", "create"),
        r("authorization.k8s.io", "localsubjectaccessreviews,subjectaccessreviews", "create"),
        r("core", "services", READ),
        r("core", "nodes", "create,get,list,watch"),
        r("core", "nodes/status", "patch,update"),
        r("core", "nodes", "patch,update"),
        r("core", "events", "create,patch,update"),
        r("core", "pods", READ),
        r("core", "pods", "create,delete"),
        r("core", "pods/status", "patch,update"),
        r("core", "pods/eviction", "create"),
        r("core", "configmaps,secrets", READ),
        r("core", "persistentvolumeclaims,persistentvolumes", "get"),
        r("core", "endpoints", "get"),
        r("certificates.k8s.io", "certificatesigningrequests", "create,get,list,watch"),
        r("coordination.k8s.io", "leases", "create,delete,get,patch,update"),
        r("storage.k8s.io", "volumeattachments", "get"),
        r("core", "serviceaccounts/token", "create"),
        r("core", "persistentvolumeclaims/status", "get,patch,update"),
        r("storage.k8s.io", "csidrivers", READ),
        r("storage.k8s.io", "csinodes", "create,delete,get,patch,update"),
        r("node.k8s.io", "runtimeclasses", READ),
    ]
}

/// What keel's nodes may do by RBAC: the kubelet's `system:node` but for Secrets, ConfigMaps and volumes
/// (the node authorizer gives each node those of its own pods, `crate::node_authz`), and what keel's agent
/// does besides: the Service proxy and DNS (the kube-dns slice of its node), the Ingress proxy.
fn keel_node() -> Value {
    let by_graph = ["configmaps", "secrets", "persistentvolumeclaims", "persistentvolumes"];
    let mut rules: Vec<Value> = kubelet_rules()
        .into_iter()
        .filter(|rule| {
            !rule["resources"].as_array().into_iter().flatten().any(|x| by_graph.contains(&x.as_str().unwrap_or("")))
        })
        .collect();
    rules.push(r("discovery.k8s.io", "endpointslices", "create,delete,get,list,patch,update,watch"));
    rules.push(r("networking.k8s.io", "ingresses,ingressclasses", READ));
    role("keel:node", json!({}), rules)
}

/// A ClusterRoleBinding `name` of the ClusterRole `role` to the group `group`.
fn named_binding(name: &str, role: &str, group: &str) -> Value {
    binding_of(name, role, subject("Group", group))
}

/// A ClusterRoleBinding `name` of the ClusterRole `role` to the user `user`.
fn user_binding(name: &str, role: &str, user: &str) -> Value {
    binding_of(name, role, subject("User", user))
}

fn binding_of(name: &str, role: &str, subject: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta(name, json!({})),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    })
}

/// What `current` lacks of `wanted` (rules, aggregation selectors or subjects) added to it; `None` when it
/// lacks nothing or its annotation says it is not to be updated.
fn reconciled(current: &Value, wanted: &Value) -> Option<Value> {
    if current.pointer(&format!("/metadata/annotations/{}", AUTOUPDATE.replace('/', "~1"))).and_then(Value::as_str)
        == Some("false")
    {
        return None;
    }
    let mut out = current.clone();
    let mut changed = false;
    for field in ["rules", "subjects"] {
        for item in wanted.get(field).and_then(Value::as_array).into_iter().flatten() {
            let list = out.get_mut(field).filter(|l| l.is_array());
            let present = list.as_ref().and_then(|l| l.as_array()).is_some_and(|l| l.contains(item));
            if !present {
                match out.get_mut(field).and_then(Value::as_array_mut) {
                    Some(list) => list.push(item.clone()),
                    None => out[field] = json!([item]),
                }
                changed = true;
            }
        }
    }
    if out.get("aggregationRule").is_none_or(Value::is_null) && wanted.get("aggregationRule").is_some() {
        out["aggregationRule"] = wanted["aggregationRule"].clone();
        changed = true;
    }
    changed.then_some(out)
}

/// Creates or completes one default object through the master's own router.
async fn ensure_one(router: &Router, collection: &str, wanted: &Value) -> Result<(), String> {
    let name = wanted.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let path = format!("{collection}/{name}");
    let (status, current) = crate::masters::call(router, Method::GET, &path, None).await?;
    let (method, target, body) = match status {
        StatusCode::NOT_FOUND => (Method::POST, collection.to_string(), wanted.clone()),
        s if s.is_success() => match reconciled(&current, wanted) {
            Some(updated) => (Method::PUT, path.clone(), updated),
            None => return Ok(()),
        },
        s => return Err(format!("reading {path}: {s}")),
    };
    let (status, answer) = crate::masters::call(router, method, &target, Some(&body)).await?;
    match status {
        s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
        s => Err(format!("writing {path}: {s}: {}", answer["message"])),
    }
}

/// [`ensure`], then waits for `rbac` (this master's copy of the policy) to show them, and says so on `done`:
/// kube-apiserver's `rbac/bootstrap-roles` post-start hook, which `/readyz` and the control loops wait for.
pub async fn bootstrap(
    router: Router,
    rbac: super::Rbac,
    stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::watch::Sender<bool>,
) {
    ensure(router, stop.clone()).await;
    // The last binding written lets the controller manager list pods.
    let controllers = crate::auth::User::authenticated("system:kube-controller-manager", []);
    let list_pods = crate::authz::Attributes::of(&Method::GET, "/api/v1/pods", None);
    while rbac.policy().allows(&controllers, &list_pods).is_none() {
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.send_replace(true);
}

/// Reconciles every default role and binding, retrying until all are in place (or `stop`).
pub async fn ensure(router: Router, mut stop: tokio::sync::watch::Receiver<bool>) {
    let objects: Vec<(&str, Value)> = cluster_roles()
        .into_iter()
        .map(|o| ("/apis/rbac.authorization.k8s.io/v1/clusterroles", o))
        .chain(
            cluster_role_bindings().into_iter().map(|o| ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", o)),
        )
        .collect();
    let mut left = objects;
    while !left.is_empty() {
        let mut failed = Vec::new();
        for (collection, object) in left {
            if let Err(e) = ensure_one(&router, collection, &object).await {
                tracing::debug!(error = %e, "a default RBAC object is not in place yet");
                failed.push((collection, object));
            }
        }
        left = failed;
        if left.is_empty() {
            tracing::info!("the default RBAC roles and bindings are in place");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_object_is_valid() {
        for role in cluster_roles() {
            let name = role["metadata"]["name"].as_str().unwrap().to_string();
            assert!(keel_api::kinds::validate("ClusterRole", &role).is_empty(), "{name}");
            assert_eq!(keel_api::kinds::decode("ClusterRole", &role), Ok(vec![]), "{name}");
        }
        let roles: Vec<String> =
            cluster_roles().iter().map(|r| r["metadata"]["name"].as_str().unwrap().to_string()).collect();
        for binding in cluster_role_bindings() {
            assert!(keel_api::kinds::validate("ClusterRoleBinding", &binding).is_empty(), "{binding}");
            assert!(roles.iter().any(|r| binding["roleRef"]["name"] == *r), "{binding}");
        }
    }

    #[test]
    fn reconciling_adds_what_is_missing_and_keeps_what_was_added() {
        let wanted = role("r", json!({}), vec![r("core", "pods", "get"), r("core", "secrets", "get")]);
        let mut current = role("r", json!({}), vec![r("core", "pods", "get"), r("apps", "deployments", "get")]);
        let updated = reconciled(&current, &wanted).expect("a rule was missing");
        assert_eq!(updated["rules"].as_array().unwrap().len(), 3);
        assert_eq!(reconciled(&updated, &wanted), None);
        current["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert_eq!(reconciled(&current, &wanted), None, "protected");
        let admin = aggregated("admin", json!({}), "admin");
        let mut bare = admin.clone();
        bare.as_object_mut().unwrap().remove("aggregationRule");
        assert_eq!(reconciled(&bare, &admin).unwrap()["aggregationRule"], admin["aggregationRule"]);
    }
}
