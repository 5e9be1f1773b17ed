//! Roles, ClusterRoles and their bindings (`rbac.authorization.k8s.io/v1`): Kubernetes' defaults (a
//! roleRef's and a subject's apiGroup) and what its RBAC validation checks (rules, aggregation, role
//! references, subjects, a roleRef that never changes).

use serde_json::{json, Value};

use super::fields::*;
use crate::validation::{self, Cause};

pub const GROUP: &str = "rbac.authorization.k8s.io";

pub fn default(kind: &str, object: &mut Value) {
    if !matches!(kind, "RoleBinding" | "ClusterRoleBinding") {
        return;
    }
    let Some(map) = object.as_object_mut() else { return };
    if let Some(role_ref) = ensure_obj(map, "roleRef") {
        if str_of(&Value::Object(role_ref.clone()), "apiGroup").is_empty() {
            role_ref.insert("apiGroup".into(), json!(GROUP));
        }
    }
    for subject in map.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(s) = subject.as_object_mut() else { continue };
        let empty = s.get("apiGroup").and_then(Value::as_str).unwrap_or("").is_empty();
        match s.get("kind").and_then(Value::as_str) {
            Some("User" | "Group") if empty => {
                s.insert("apiGroup".into(), json!(GROUP));
            }
            Some("ServiceAccount") if empty => {
                s.insert("apiGroup".into(), json!(""));
            }
            _ => {}
        }
    }
}

pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    match kind {
        "Role" | "ClusterRole" => {
            for (i, rule) in arr_of(object, "rules").iter().enumerate() {
                policy_rule(&index("rules", i), rule, kind == "Role", &mut c);
            }
            if let Some(aggregation) = obj_of(object, "aggregationRule") {
                if arr_of(aggregation, "clusterRoleSelectors").is_empty() {
                    c.push(required(
                        "aggregationRule.clusterRoleSelectors",
                        "at least one clusterRoleSelector required if aggregationRule is non-nil",
                    ));
                }
                for (i, s) in arr_of(aggregation, "clusterRoleSelectors").iter().enumerate() {
                    c.extend(label_selector(s, &index("aggregationRule.clusterRoleSelectors", i)));
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = value_at(object, "roleRef");
            let group = str_of(role_ref, "apiGroup");
            if group != GROUP {
                c.push(Cause::not_supported("roleRef.apiGroup", group, &[GROUP]));
            }
            let kinds: &[&str] = if kind == "RoleBinding" { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
            let role_kind = str_of(role_ref, "kind");
            if !kinds.contains(&role_kind) {
                c.push(Cause::not_supported("roleRef.kind", role_kind, kinds));
            }
            let name = str_of(role_ref, "name");
            if name.is_empty() {
                c.push(required("roleRef.name", ""));
            } else {
                c.extend(path_segment(name).into_iter().map(|e| Cause::invalid("roleRef.name", name, &e)));
            }
            for (i, s) in arr_of(object, "subjects").iter().enumerate() {
                subject(&index("subjects", i), s, kind == "ClusterRoleBinding", &mut c);
            }
        }
        _ => {}
    }
    c
}

pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    if !matches!(kind, "RoleBinding" | "ClusterRoleBinding") || old.get("roleRef") == new.get("roleRef") {
        return vec![];
    }
    let r = value_at(new, "roleRef");
    let shown = format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        str_of(r, "apiGroup"),
        str_of(r, "kind"),
        str_of(r, "name")
    );
    vec![Cause {
        kind: validation::CauseType::Invalid,
        field: "roleRef".into(),
        message: format!("Invalid value: {shown}: cannot change roleRef"),
    }]
}

/// Kubernetes' path-segment name rules (RBAC names may hold colons: `system:basic-user`).
pub fn path_segment(name: &str) -> Vec<String> {
    match name {
        "." => vec!["may not be '.'".into()],
        ".." => vec!["may not be '..'".into()],
        _ => {
            ["/", "%"].iter().filter(|bad| name.contains(*bad)).map(|bad| format!("may not contain '{bad}'")).collect()
        }
    }
}

/// Go's `%#v` of a string slice: `[]string{"/x", "/y"}`.
fn go_strings(values: &[Value]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{:?}", v.as_str().unwrap_or_default())).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn policy_rule(path: &str, rule: &Value, namespaced: bool, c: &mut Vec<Cause>) {
    let invalid_urls = |detail: &str| Cause {
        kind: validation::CauseType::Invalid,
        field: child(path, "nonResourceURLs"),
        message: format!("Invalid value: {}: {detail}", go_strings(arr_of(rule, "nonResourceURLs"))),
    };
    if arr_of(rule, "verbs").is_empty() {
        c.push(required(child(path, "verbs"), "verbs must contain at least one value"));
    }
    if !arr_of(rule, "nonResourceURLs").is_empty() {
        if namespaced {
            c.push(invalid_urls("namespaced rules cannot apply to non-resource URLs"));
        }
        if ["apiGroups", "resources", "resourceNames"].iter().any(|f| !arr_of(rule, f).is_empty()) {
            c.push(invalid_urls("rules cannot apply to both regular resources and non-resource URLs"));
        }
        return;
    }
    if arr_of(rule, "apiGroups").is_empty() {
        c.push(required(child(path, "apiGroups"), "resource rules must supply at least one api group"));
    }
    if arr_of(rule, "resources").is_empty() {
        c.push(required(child(path, "resources"), "resource rules must supply at least one resource"));
    }
}

fn subject(path: &str, s: &Value, cluster: bool, c: &mut Vec<Cause>) {
    let name = str_of(s, "name");
    if name.is_empty() {
        c.push(required(child(path, "name"), ""));
    }
    let group = str_of(s, "apiGroup");
    match str_of(s, "kind") {
        "ServiceAccount" => {
            if !name.is_empty() {
                c.extend(
                    validation::dns1123_subdomain(name)
                        .into_iter()
                        .map(|e| Cause::invalid(child(path, "name"), name, &e)),
                );
            }
            if !group.is_empty() {
                c.push(Cause::not_supported(child(path, "apiGroup"), group, &[""]));
            }
            if cluster && str_of(s, "namespace").is_empty() {
                c.push(required(child(path, "namespace"), ""));
            }
        }
        "User" | "Group" => {
            if group != GROUP {
                c.push(Cause::not_supported(child(path, "apiGroup"), group, &[GROUP]));
            }
        }
        other => c.push(Cause::not_supported(child(path, "kind"), other, &["ServiceAccount", "User", "Group"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn rules_are_checked_as_kubernetes_checks_them() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"]},
            {"nonResourceURLs": ["/x"], "verbs": ["get"]},
            {"verbs": ["get"]},
        ]});
        assert_eq!(
            messages(&validate("Role", &role)),
            [
                "rules[1].verbs: Required value: verbs must contain at least one value",
                r#"rules[2].nonResourceURLs: Invalid value: []string{"/x"}: namespaced rules cannot apply to non-resource URLs"#,
                "rules[3].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[3].resources: Required value: resource rules must supply at least one resource",
            ]
        );
        let cluster_role = json!({"rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}], "aggregationRule": {}});
        assert_eq!(
            messages(&validate("ClusterRole", &cluster_role)),
            ["aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"]
        );
    }

    #[test]
    fn bindings_are_defaulted_and_checked() {
        let mut b = json!({"roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "robot"}, {"kind": "Robot", "name": "x"}]});
        default("RoleBinding", &mut b);
        assert_eq!(b["roleRef"]["apiGroup"], GROUP);
        assert_eq!(b["subjects"][0]["apiGroup"], GROUP);
        assert_eq!(b["subjects"][1]["apiGroup"], "");
        assert_eq!(
            messages(&validate("RoleBinding", &b)),
            [r#"subjects[2].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#]
        );
        assert_eq!(
            messages(&validate("ClusterRoleBinding", &b)),
            [
                r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#,
                "subjects[1].namespace: Required value",
                r#"subjects[2].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#,
            ]
        );
        let mut changed = b.clone();
        changed["roleRef"]["name"] = json!("view");
        assert_eq!(
            messages(&validate_update("RoleBinding", &b, &changed)),
            [
                r#"roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"view"}: cannot change roleRef"#
            ]
        );
        assert!(validate_update("RoleBinding", &b, &b).is_empty());
        assert_eq!(path_segment("system:basic-user"), Vec::<String>::new());
        assert_eq!(path_segment("a/b"), ["may not contain '/'"]);
    }
}
