//! What an authenticated user may do. A request's attributes are read from its method and path as
//! kube-apiserver's request-info resolver reads them (verb; group, resource, subresource, namespace and
//! name, or a non-resource path), and a denial is worded as kube-apiserver words it.
//!
//! [`decide`] asks, in kube-apiserver's order, fixed rules first: the cluster's administrators
//! (`system:masters`) may do anything; anonymous users only what [`crate::auth`] lets them reach; a
//! bootstrap token's user may read `kube-public/cluster-info`, and one in [`MASTERS_GROUP`] may also list
//! the store's members and add one (`keel server --join`). Then RBAC ([`crate::rbac`]): what the roles
//! bound to the user allow.

use axum::http::Method;
use keel_api::status::ApiError;

use crate::auth::{User, MASTERS};
use crate::bootstrap_tokens::{self, MASTERS_GROUP};

/// What a resource request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// A request as an authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for a non-resource
    /// request, the HTTP method in lower case.
    pub verb: String,
    pub path: String,
    /// `None` for a non-resource request (discovery, health, `/keel/v1/...`).
    pub resource: Option<ResourceAttributes>,
}

/// The parts of `path` after an API group version prefix, with the group; `None` for other paths.
fn group_version_rest(path: &str) -> Option<(&str, Vec<&str>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => Some(("", rest.to_vec())),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => Some((group, rest.to_vec())),
        _ => None,
    }
}

impl Attributes {
    /// The attributes of a request for `path` (query `query`) with `method`.
    pub fn of(method: &Method, path: &str, query: Option<&str>) -> Attributes {
        let non_resource =
            || Attributes { verb: method.as_str().to_ascii_lowercase(), path: path.to_string(), resource: None };
        let Some((group, mut parts)) = group_version_rest(path) else { return non_resource() };
        let mut watching = query
            .unwrap_or_default()
            .split('&')
            .any(|pair| matches!(pair.split_once('='), Some(("watch", "true" | "1"))));
        if parts.first() == Some(&"watch") {
            // The old `/api/v1/watch/...` form.
            parts.remove(0);
            watching = true;
        }
        let mut namespace = None;
        if parts.first() == Some(&"namespaces") && parts.len() > 1 {
            namespace = Some(parts[1].to_string());
            // namespaces/{ns}/{resource}..., unless it is the namespace's own status or finalize.
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        let (resource, name, subresource) = match parts.as_slice() {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
            [] => return non_resource(),
        };
        let verb = match (method.as_str(), name.is_some()) {
            ("GET" | "HEAD", _) if watching => "watch",
            ("GET" | "HEAD", true) => "get",
            ("GET" | "HEAD", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            (other, _) => return Attributes { verb: other.to_ascii_lowercase(), ..non_resource() },
        };
        Attributes {
            verb: verb.to_string(),
            path: path.to_string(),
            resource: Some(ResourceAttributes {
                group: group.to_string(),
                resource: resource.to_string(),
                subresource: subresource.map(str::to_string),
                namespace,
                name: name.map(str::to_string),
            }),
        }
    }

    /// Whether this is `verb` of the non-resource `path`.
    fn is_path(&self, verb: &str, path: &str) -> bool {
        self.resource.is_none() && self.verb == verb && self.path.trim_end_matches('/') == path
    }
}

/// Why `user` may make the request `a` (with `query`), or `None`: what every request and every access review
/// is decided by. A node is decided by the node authorizer first (`nodes`, its pods; `""`), then the fixed
/// rules (`""`), then RBAC's `policy` when there is one.
pub fn authorize(
    user: &User,
    a: &Attributes,
    query: Option<&str>,
    nodes: Option<&crate::node_authz::Graph>,
    policy: Option<&crate::rbac::Policy>,
) -> Option<String> {
    use crate::node_authz::Decision;
    match nodes.map_or(Decision::NoOpinion, |graph| crate::node_authz::decide(user, a, query, graph)) {
        Decision::Allow => Some(String::new()),
        Decision::Deny => None,
        Decision::NoOpinion => decide(user, a, policy),
    }
}

/// Why `user` may make the request `a` (`""` for the fixed rules), or `None`: the fixed rules, then RBAC's
/// `policy` when there is one.
pub fn decide(user: &User, a: &Attributes, policy: Option<&crate::rbac::Policy>) -> Option<String> {
    if allows(user, a) {
        return Some(String::new());
    }
    policy?.allows(user, a)
}

/// Whether `user` may make the request `a` by the fixed rules in the module docs.
pub fn allows(user: &User, a: &Attributes) -> bool {
    if user.in_group(MASTERS) || *user == User::anonymous() {
        // Anonymous users only got this far on a public path.
        return true;
    }
    if user.in_group(bootstrap_tokens::GROUP) {
        let cluster_info = a.resource.as_ref().is_some_and(|r| {
            a.verb == "get"
                && r.group.is_empty()
                && r.resource == "configmaps"
                && r.namespace.as_deref() == Some("kube-public")
                && r.name.as_deref() == Some(bootstrap_tokens::CLUSTER_INFO)
        });
        let members = a.is_path("get", crate::members::PATH) || a.is_path("post", crate::members::PATH);
        return cluster_info || (members && user.in_group(MASTERS_GROUP));
    }
    false
}

/// kube-apiserver's 403 for `user` refused `a`.
pub fn forbidden(user: &User, a: &Attributes) -> ApiError {
    let Some(r) = &a.resource else {
        return ApiError::Forbidden(format!("forbidden: User {:?} cannot {} path {:?}", user.name, a.verb, a.path));
    };
    let resource = match &r.subresource {
        Some(sub) => format!("{}/{sub}", r.resource),
        None => r.resource.clone(),
    };
    let scope = match &r.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let why =
        format!("User {:?} cannot {} resource {resource:?} in API group {:?} {scope}", user.name, a.verb, r.group);
    let qualified = if r.group.is_empty() { r.resource.clone() } else { format!("{}.{}", r.resource, r.group) };
    match &r.name {
        Some(name) => ApiError::Forbidden(format!("{qualified} {name:?} is forbidden: {why}")),
        None => ApiError::Forbidden(format!("{qualified} is forbidden: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, path: &str, query: Option<&str>) -> (String, Option<ResourceAttributes>) {
        let a = Attributes::of(&method, path, query);
        (a.verb, a.resource)
    }

    fn res(group: &str, resource: &str, sub: Option<&str>, ns: Option<&str>, name: Option<&str>) -> ResourceAttributes {
        ResourceAttributes {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(Into::into),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn requests_are_read_as_kube_apiserver_reads_them() {
        let pods = |ns, name, sub| Some(res("", "pods", sub, ns, name));
        assert_eq!(attrs(Method::GET, "/api/v1/pods", None), ("list".into(), pods(None, None, None)));
        assert_eq!(attrs(Method::GET, "/api/v1/pods", Some("watch=true")), ("watch".into(), pods(None, None, None)));
        assert_eq!(
            attrs(Method::GET, "/api/v1/watch/namespaces/a/pods", None),
            ("watch".into(), pods(Some("a"), None, None))
        );
        assert_eq!(
            attrs(Method::GET, "/api/v1/namespaces/a/pods/web/log", None),
            ("get".into(), pods(Some("a"), Some("web"), Some("log")))
        );
        assert_eq!(
            attrs(Method::POST, "/api/v1/namespaces/a/pods", None),
            ("create".into(), pods(Some("a"), None, None))
        );
        assert_eq!(
            attrs(Method::DELETE, "/api/v1/namespaces/a/pods", None),
            ("deletecollection".into(), pods(Some("a"), None, None))
        );
        let ns = |sub| Some(res("", "namespaces", sub, Some("a"), Some("a")));
        assert_eq!(attrs(Method::GET, "/api/v1/namespaces/a", None), ("get".into(), ns(None)));
        assert_eq!(attrs(Method::PUT, "/api/v1/namespaces/a/finalize", None), ("update".into(), ns(Some("finalize"))));
        let deployment = Some(res("apps", "deployments", Some("scale"), Some("b"), Some("d")));
        assert_eq!(
            attrs(Method::PATCH, "/apis/apps/v1/namespaces/b/deployments/d/scale", None),
            ("patch".into(), deployment)
        );
        for path in ["/api", "/api/v1", "/apis/apps/v1", "/healthz", "/keel/v1/members"] {
            assert_eq!(attrs(Method::GET, path, None), ("get".into(), None), "{path}");
        }
        assert_eq!(attrs(Method::POST, "/keel/v1/members", None), ("post".into(), None));
    }

    fn bootstrapper(extra: &[&str]) -> User {
        let mut groups = vec![bootstrap_tokens::GROUP.to_string()];
        groups.extend(extra.iter().map(|g| g.to_string()));
        User::authenticated("system:bootstrap:abcdef", groups)
    }

    #[test]
    fn bootstrap_tokens_reach_only_what_joining_needs() {
        let a = |method: Method, path: &str| Attributes::of(&method, path, None);
        let info = a(Method::GET, "/api/v1/namespaces/kube-public/configmaps/cluster-info");
        let members = a(Method::GET, "/keel/v1/members");
        let add = a(Method::POST, "/keel/v1/members");
        let remove = a(Method::DELETE, "/keel/v1/members/1f");
        let secrets = a(Method::GET, "/api/v1/namespaces/kube-system/secrets");
        let node = bootstrapper(&[]);
        let master = bootstrapper(&[MASTERS_GROUP]);
        assert!(allows(&node, &info) && allows(&master, &info));
        assert!(!allows(&node, &members) && !allows(&node, &add));
        assert!(allows(&master, &members) && allows(&master, &add));
        assert!(!allows(&master, &remove) && !allows(&master, &secrets));
        let admin = User::admin("admin");
        assert!([&info, &members, &add, &remove, &secrets].iter().all(|r| allows(&admin, r)));
        assert!(!allows(&User::authenticated("bob", []), &info));
    }

    #[test]
    fn denials_are_worded_as_kube_apiserver_words_them() {
        let bob = User::authenticated("bob", []);
        let msg = |method: Method, path: &str| forbidden(&bob, &Attributes::of(&method, path, None)).to_string();
        assert_eq!(
            msg(Method::GET, "/api/v1/namespaces/x/secrets/s"),
            r#"secrets "s" is forbidden: User "bob" cannot get resource "secrets" in API group "" in the namespace "x""#
        );
        assert_eq!(
            msg(Method::GET, "/api/v1/pods"),
            r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" at the cluster scope"#
        );
        assert_eq!(
            msg(Method::PUT, "/apis/apps/v1/namespaces/x/deployments/d/scale"),
            r#"deployments.apps "d" is forbidden: User "bob" cannot update resource "deployments/scale" in API group "apps" in the namespace "x""#
        );
        assert_eq!(
            msg(Method::POST, "/keel/v1/members"),
            r#"forbidden: User "bob" cannot post path "/keel/v1/members""#
        );
        assert_eq!(forbidden(&bob, &Attributes::of(&Method::GET, "/", None)).code(), 403);
    }
}
