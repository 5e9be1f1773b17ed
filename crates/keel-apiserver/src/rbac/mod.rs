//! Role-based access control (`rbac.authorization.k8s.io/v1`), as kube-apiserver enforces it: the policy
//! ([`policy`], pure), every master's watch-fed copy of it ([`cache`]), the default roles and bindings
//! every cluster starts with ([`defaults`]), and the escalation check on writes of roles and bindings
//! ([`admit`]): nobody grants what they do not hold, unless they may `escalate` (roles) or `bind` (the role
//! a binding names), or are in `system:masters`.

pub mod cache;
pub mod defaults;
pub mod policy;
pub mod rules;

use k8s_openapi::api::rbac::v1::PolicyRule;
use keel_api::resources::Resource;
use keel_api::status::{ApiError, GroupResource};
use serde_json::Value;

pub use cache::Rbac;
pub use policy::{service_account_user, Policy};

use crate::auth::{User, MASTERS};
use crate::authz::{Attributes, ResourceAttributes};

const GROUP: &str = keel_api::kinds::rbac::GROUP;

/// The attributes of `verb` on the role `kind`/`name` in `namespace` (the `escalate` and `bind` checks).
fn on_role(verb: &str, kind: &str, name: &str, namespace: Option<&str>) -> Attributes {
    let resource = if kind == "Role" { "roles" } else { "clusterroles" };
    Attributes {
        verb: verb.into(),
        path: String::new(),
        resource: Some(ResourceAttributes {
            group: GROUP.into(),
            resource: resource.into(),
            subresource: None,
            namespace: namespace.map(str::to_string),
            name: Some(name.to_string()),
        }),
    }
}

fn rules_of(object: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(object.get("rules").cloned().unwrap_or(Value::Null)).unwrap_or_default()
}

/// The escalation check of a create (`old` None) or update of a Role, ClusterRole or binding by `user`
/// (`None`: the masters' own writes). Other kinds pass.
pub fn admit(
    user: Option<&User>,
    rbac: Option<&Rbac>,
    resource: &Resource,
    namespace: Option<&str>,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let (Some(user), Some(rbac)) = (user, rbac) else { return Ok(()) };
    if resource.group != GROUP || user.in_group(MASTERS) {
        return Ok(());
    }
    let policy = rbac.policy();
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = if resource.namespaced { namespace } else { None };
    let forbidden =
        |why: String| ApiError::Forbidden(format!("{}.{GROUP} {name:?} is forbidden: {why}", resource.plural));
    let unchanged = |field: &str| old.is_some_and(|o| o.get(field) == object.get(field));
    let wanted = match resource.kind {
        "Role" | "ClusterRole" => {
            if unchanged("rules") && unchanged("aggregationRule") {
                return Ok(());
            }
            if policy.allows(user, &on_role("escalate", resource.kind, name, namespace)).is_some() {
                return Ok(());
            }
            let aggregates = |v: &Value| v.get("aggregationRule").is_some_and(|a| !a.is_null());
            if aggregates(object) || old.is_some_and(aggregates) {
                let everything: Vec<PolicyRule> = serde_json::from_value(serde_json::json!([
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]},
                ]))
                .expect("the rules parse");
                if !rules::uncovered(&policy.rules_for(user, None), &everything).is_empty() {
                    return Err(forbidden("must have cluster-admin privileges to use the aggregationRule".into()));
                }
            }
            rules_of(object)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            if unchanged("roleRef") {
                return Ok(());
            }
            let kind = object.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let role = object.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
            if policy.allows(user, &on_role("bind", kind, role, namespace)).is_some() {
                return Ok(());
            }
            match policy.role_rules(kind, role, namespace) {
                Some(rules) => rules.to_vec(),
                None => {
                    let plural = if kind == "Role" { "roles" } else { "clusterroles" };
                    let resource = GroupResource { group: GROUP.into(), resource: plural.into() };
                    return Err(ApiError::NotFound { resource, name: role.to_string() });
                }
            }
        }
        _ => return Ok(()),
    };
    let missing = rules::uncovered(&policy.rules_for(user, namespace), &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    Err(forbidden(format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rules::compact(&missing).join("\n")
    )))
}
