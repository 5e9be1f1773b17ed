//! The cluster's RBAC objects at one moment, and what they allow: Kubernetes' RBAC authorizer. A request
//! is allowed when a ClusterRoleBinding, or a RoleBinding in the request's namespace, binds a role with a
//! rule that allows it to the user, one of their groups, or (for `system:serviceaccount:<ns>:<name>`) their
//! service account. Nothing is denied explicitly: no rule, no permission. An aggregated ClusterRole holds
//! the rules of every ClusterRole its selectors pick (and theirs, transitively), besides its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use keel_api::selector::LabelSelector;

use super::rules;
use crate::auth::User;
use crate::authz::Attributes;

/// A binding of a role to subjects.
#[derive(Debug, Clone, PartialEq)]
struct Binding {
    name: String,
    /// The RoleBinding's namespace; `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    /// `Role` or `ClusterRole`.
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

/// Every Role, ClusterRole and binding, with the ClusterRoles' aggregated rules resolved.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<Binding>,
    /// By namespace.
    bindings: HashMap<String, Vec<Binding>>,
}

/// The name a service account's tokens authenticate as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl Binding {
    fn applies_to(&self, user: &User) -> Option<&Subject> {
        self.subjects.iter().find(|s| match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.in_group(&s.name),
            "ServiceAccount" => {
                let namespace = s.namespace.as_deref().filter(|n| !n.is_empty()).or(self.namespace.as_deref());
                namespace.is_some_and(|ns| user.name == service_account_user(ns, &s.name))
            }
            _ => false,
        })
    }
}

/// The rules of every ClusterRole, each aggregated one with the rules of those its selectors pick.
fn aggregate(roles: &[ClusterRole]) -> HashMap<String, Vec<PolicyRule>> {
    let by_name: BTreeMap<&str, &ClusterRole> =
        roles.iter().map(|r| (r.metadata.name.as_deref().unwrap_or_default(), r)).collect();
    let picks = |role: &ClusterRole| -> Vec<&str> {
        let Some(rule) = &role.aggregation_rule else { return vec![] };
        let selectors: Vec<LabelSelector> =
            rule.cluster_role_selectors.iter().flatten().filter_map(|s| LabelSelector::from_api(s).ok()).collect();
        by_name
            .iter()
            .filter(|(_, r)| {
                let labels = r.metadata.labels.clone().unwrap_or_default();
                selectors.iter().any(|s| !s.is_empty() && s.matches(&labels))
            })
            .map(|(name, _)| *name)
            .collect()
    };
    let mut out = HashMap::new();
    for (name, role) in &by_name {
        let mut rules: Vec<PolicyRule> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::from([*name]);
        let mut todo: Vec<&ClusterRole> = vec![role];
        while let Some(r) = todo.pop() {
            for rule in r.rules.iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
            for picked in picks(r) {
                if seen.insert(picked) {
                    todo.push(by_name[picked]);
                }
            }
        }
        out.insert(name.to_string(), rules);
    }
    out
}

impl Policy {
    pub fn new(
        cluster_roles: &[ClusterRole],
        roles: &[Role],
        cluster_bindings: &[ClusterRoleBinding],
        bindings: &[RoleBinding],
    ) -> Policy {
        let mut policy = Policy { cluster_roles: aggregate(cluster_roles), ..Policy::default() };
        for r in roles {
            let key = (r.metadata.namespace.clone().unwrap_or_default(), r.metadata.name.clone().unwrap_or_default());
            policy.roles.insert(key, r.rules.clone().unwrap_or_default());
        }
        for b in cluster_bindings {
            policy.cluster_bindings.push(Binding {
                name: b.metadata.name.clone().unwrap_or_default(),
                namespace: None,
                role_kind: b.role_ref.kind.clone(),
                role_name: b.role_ref.name.clone(),
                subjects: b.subjects.clone().unwrap_or_default(),
            });
        }
        for b in bindings {
            let namespace = b.metadata.namespace.clone().unwrap_or_default();
            policy.bindings.entry(namespace.clone()).or_default().push(Binding {
                name: b.metadata.name.clone().unwrap_or_default(),
                namespace: Some(namespace),
                role_kind: b.role_ref.kind.clone(),
                role_name: b.role_ref.name.clone(),
                subjects: b.subjects.clone().unwrap_or_default(),
            });
        }
        policy
    }

    /// The rules of the role a binding names (none when the role does not exist).
    fn rules_of(&self, b: &Binding) -> &[PolicyRule] {
        let found = match (b.role_kind.as_str(), &b.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&b.role_name),
            ("Role", Some(ns)) => self.roles.get(&(ns.clone(), b.role_name.clone())),
            _ => None,
        };
        found.map(Vec::as_slice).unwrap_or_default()
    }

    /// The bindings that apply in `namespace` (the cluster-wide ones, then the namespace's).
    fn bindings_in<'a>(&'a self, namespace: Option<&str>) -> impl Iterator<Item = &'a Binding> + 'a {
        let local = namespace.and_then(|ns| self.bindings.get(ns)).into_iter().flatten();
        self.cluster_bindings.iter().chain(local)
    }

    /// Why `user` may make the request `a` (as kube-apiserver's RBAC authorizer words it), or `None`.
    pub fn allows(&self, user: &User, a: &Attributes) -> Option<String> {
        let namespace = a.resource.as_ref().and_then(|r| r.namespace.as_deref());
        for b in self.bindings_in(namespace) {
            let Some(subject) = b.applies_to(user) else { continue };
            if self.rules_of(b).iter().any(|rule| rules::allows(rule, a)) {
                let binding = match &b.namespace {
                    Some(ns) => format!("RoleBinding \"{}/{ns}\"", b.name),
                    None => format!("ClusterRoleBinding {:?}", b.name),
                };
                let who = match subject.kind.as_str() {
                    "ServiceAccount" => format!(
                        "ServiceAccount \"{}/{}\"",
                        subject.namespace.as_deref().or(b.namespace.as_deref()).unwrap_or_default(),
                        subject.name
                    ),
                    kind => format!("{kind} {:?}", subject.name),
                };
                return Some(format!("RBAC: allowed by {binding} of {} {:?} to {who}", b.role_kind, b.role_name));
            }
        }
        None
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included): what they hold there.
    pub fn rules_for(&self, user: &User, namespace: Option<&str>) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for b in self.bindings_in(namespace) {
            if b.applies_to(user).is_some() {
                for rule in self.rules_of(b) {
                    if !out.contains(rule) {
                        out.push(rule.clone());
                    }
                }
            }
        }
        out
    }

    /// The rules of a role, as a binding in `namespace` (`None`: a ClusterRoleBinding) would grant them.
    pub fn role_rules(&self, kind: &str, name: &str, namespace: Option<&str>) -> Option<&[PolicyRule]> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).map(Vec::as_slice),
            "Role" => self.roles.get(&(namespace?.to_string(), name.to_string())).map(Vec::as_slice),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use serde_json::json;

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn policy() -> Policy {
        let cluster_roles: Vec<ClusterRole> = vec![
            from(json!({"metadata": {"name": "cluster-admin"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]})),
            from(json!({"metadata": {"name": "view"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-view": "true"}}]}})),
            from(json!({"metadata": {"name": "edit", "labels": {"aggregate-to-admin": "true"}},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-edit": "true"}}]}})),
            from(json!({"metadata": {"name": "admin"},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to-admin": "true"}}]}})),
            from(
                json!({"metadata": {"name": "pods-view", "labels": {"aggregate-to-view": "true", "aggregate-to-edit": "true"}},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
            ),
            from(json!({"metadata": {"name": "pods-edit", "labels": {"aggregate-to-edit": "true"}},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]}]})),
        ];
        let roles: Vec<Role> = vec![from(json!({"metadata": {"name": "cm", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}))];
        let cluster_bindings: Vec<ClusterRoleBinding> = vec![from(json!({"metadata": {"name": "admins"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "Group", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}]}))];
        let bindings: Vec<RoleBinding> = vec![
            from(json!({"metadata": {"name": "bob-cm", "namespace": "a"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
                "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]})),
            from(json!({"metadata": {"name": "robot-edit", "namespace": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "robot"}]})),
        ];
        Policy::new(&cluster_roles, &roles, &cluster_bindings, &bindings)
    }

    fn can(p: &Policy, user: &User, method: Method, path: &str) -> bool {
        p.allows(user, &Attributes::of(&method, path, None)).is_some()
    }

    #[test]
    fn bindings_grant_their_roles_rules_where_they_apply() {
        let p = policy();
        let bob = User::authenticated("bob", []);
        assert!(can(&p, &bob, Method::GET, "/api/v1/namespaces/a/configmaps/x"));
        assert!(!can(&p, &bob, Method::GET, "/api/v1/namespaces/c/configmaps/x"), "a Role binds in its namespace");
        assert!(!can(&p, &bob, Method::GET, "/api/v1/configmaps"));
        let ops = User::authenticated("carol", ["ops".to_string()]);
        assert!(can(&p, &ops, Method::DELETE, "/api/v1/nodes/n1"));
        assert!(can(&p, &ops, Method::GET, "/healthz"));
        assert_eq!(
            p.allows(&ops, &Attributes::of(&Method::GET, "/api/v1/pods", None)).as_deref(),
            Some(r#"RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "cluster-admin" to Group "ops""#)
        );
        assert_eq!(
            p.allows(&bob, &Attributes::of(&Method::GET, "/api/v1/namespaces/a/configmaps/x", None)).as_deref(),
            Some(r#"RBAC: allowed by RoleBinding "bob-cm/a" of Role "cm" to User "bob""#)
        );
        assert!(!can(&p, &User::authenticated("eve", []), Method::GET, "/api/v1/namespaces/a/configmaps/x"));
    }

    #[test]
    fn service_accounts_and_aggregated_roles() {
        let p = policy();
        let robot = User::authenticated(service_account_user("b", "robot"), []);
        // admin ⊇ edit ⊇ (pods-view, pods-edit), through two levels of aggregation.
        assert!(can(&p, &robot, Method::DELETE, "/api/v1/namespaces/b/pods/web"));
        assert!(can(&p, &robot, Method::GET, "/api/v1/namespaces/b/pods"));
        assert!(!can(&p, &robot, Method::GET, "/api/v1/namespaces/b/secrets"));
        assert!(!can(&p, &robot, Method::GET, "/api/v1/namespaces/a/pods"));
        let other = User::authenticated(service_account_user("a", "robot"), []);
        assert!(!can(&p, &other, Method::GET, "/api/v1/namespaces/b/pods"), "the subject's namespace is b's");
        assert_eq!(p.rules_for(&robot, Some("b")).len(), 2);
        assert_eq!(p.role_rules("ClusterRole", "view", None).map(<[PolicyRule]>::len), Some(1));
    }
}
