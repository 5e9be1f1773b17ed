//! One RBAC rule against one request, as Kubernetes matches them (`rbac/v1` evaluation helpers), and
//! whether a set of rules covers another (the escalation check: a user may grant only what they hold).

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::authz::Attributes;

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|v| v == "*" || v == wanted)
}

fn list(l: &Option<Vec<String>>) -> &[String] {
    l.as_deref().unwrap_or_default()
}

/// A resource of a rule names the request's: `*`, the exact `resource` or `resource/subresource`, or
/// `*/subresource` for that subresource of any resource.
fn resource_matches(rule: &PolicyRule, resource: &str, subresource: Option<&str>) -> bool {
    let combined = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    list(&rule.resources)
        .iter()
        .any(|r| r == "*" || *r == combined || subresource.is_some_and(|sub| r.strip_prefix("*/") == Some(sub)))
}

/// A non-resource URL of a rule names the path: `*`, the exact path, or a prefix ending in `*`.
fn url_matches(rule: &PolicyRule, path: &str) -> bool {
    list(&rule.non_resource_urls)
        .iter()
        .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
}

/// Whether `rule` allows the request `a`.
pub fn allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !has(&rule.verbs, &a.verb) {
        return false;
    }
    match &a.resource {
        Some(r) => {
            has(list(&rule.api_groups), &r.group)
                && resource_matches(rule, &r.resource, r.subresource.as_deref())
                && (list(&rule.resource_names).is_empty()
                    || r.name.as_deref().is_some_and(|n| list(&rule.resource_names).iter().any(|x| x == n)))
        }
        None => url_matches(rule, &a.path),
    }
}

/// A rule cut into its simplest parts (one verb, one group, one resource, at most one name; or one verb
/// and one URL), each of which some held rule must allow on its own.
fn atoms(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |v: &String| Some(vec![v.clone()]);
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in list(&rule.non_resource_urls) {
            out.push(PolicyRule { verbs: vec![verb.clone()], non_resource_urls: one(url), ..Default::default() });
        }
        for group in list(&rule.api_groups) {
            for resource in list(&rule.resources) {
                let atom = |names: Option<Vec<String>>| PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: one(group),
                    resources: one(resource),
                    resource_names: names,
                    ..Default::default()
                };
                if list(&rule.resource_names).is_empty() {
                    out.push(atom(None));
                } else {
                    out.extend(list(&rule.resource_names).iter().map(|n| atom(one(n))));
                }
            }
        }
    }
    out
}

/// Whether the held rule `owner` allows all that the atom `atom` allows: each of its values is matched
/// by the owner's (a `*` of the owner's matches anything; a `*` of the atom's only a `*`).
fn atom_covered(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let exact = |l: &[String], v: &str| l.iter().any(|x| x == "*" || x == v);
    let verb = &atom.verbs[0];
    if !exact(&owner.verbs, verb) {
        return false;
    }
    if let Some(url) = list(&atom.non_resource_urls).first() {
        return list(&owner.non_resource_urls)
            .iter()
            .any(|u| u == "*" || u == url || u.strip_suffix('*').is_some_and(|prefix| url.starts_with(prefix)));
    }
    let (group, resource) = (&list(&atom.api_groups)[0], &list(&atom.resources)[0]);
    if !exact(list(&owner.api_groups), group) {
        return false;
    }
    let resource_ok = list(&owner.resources).iter().any(|r| {
        r == "*" || r == resource || resource.split_once('/').is_some_and(|(_, sub)| r.strip_prefix("*/") == Some(sub))
    });
    let names = list(&owner.resource_names);
    resource_ok
        && (names.is_empty() || list(&atom.resource_names).first().is_some_and(|n| names.iter().any(|x| x == n)))
}

/// The parts of `wanted` that no rule of `held` covers (empty: `held` covers it all).
pub fn uncovered(held: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted.iter().flat_map(atoms).filter(|atom| !held.iter().any(|h| atom_covered(h, atom))).collect()
}

/// Atoms (see [`uncovered`]) merged back where only their verbs differ, printed and sorted as
/// kube-apiserver lists the permissions an escalation lacks.
pub fn compact(atoms: &[PolicyRule]) -> Vec<String> {
    let mut merged: Vec<PolicyRule> = Vec::new();
    for atom in atoms {
        let same = |m: &&mut PolicyRule| {
            m.non_resource_urls.is_none()
                && atom.non_resource_urls.is_none()
                && m.api_groups == atom.api_groups
                && m.resources == atom.resources
                && m.resource_names == atom.resource_names
        };
        match merged.iter_mut().find(|m| same(m)) {
            Some(m) => {
                for verb in &atom.verbs {
                    if !m.verbs.contains(verb) {
                        m.verbs.push(verb.clone());
                    }
                }
            }
            None => merged.push(atom.clone()),
        }
    }
    let mut shown: Vec<String> = merged.iter().map(describe).collect();
    shown.sort();
    shown.dedup();
    shown
}

/// A rule as kube-apiserver prints it in escalation errors:
/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
pub fn describe(rule: &PolicyRule) -> String {
    let quoted = |l: &[String]| l.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(" ");
    let mut parts = Vec::new();
    for (label, values) in [
        ("APIGroups", list(&rule.api_groups)),
        ("Resources", list(&rule.resources)),
        ("NonResourceURLs", list(&rule.non_resource_urls)),
        ("ResourceNames", list(&rule.resource_names)),
    ] {
        if !values.is_empty() {
            parts.push(format!("{label}:[{}]", quoted(values)));
        }
    }
    parts.push(format!("Verbs:[{}]", quoted(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
        let l = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        PolicyRule {
            api_groups: l(groups),
            resources: l(resources),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resource_names: l(names),
            non_resource_urls: None,
        }
    }

    fn urls(urls: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            non_resource_urls: Some(urls.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn req(method: Method, path: &str) -> Attributes {
        Attributes::of(&method, path, None)
    }

    #[test]
    fn rules_match_as_kubernetes_matches_them() {
        let pods = rule(&[""], &["pods"], &["get", "list"], &[]);
        assert!(allows(&pods, &req(Method::GET, "/api/v1/namespaces/a/pods")));
        assert!(allows(&pods, &req(Method::GET, "/api/v1/namespaces/a/pods/web")));
        assert!(!allows(&pods, &req(Method::DELETE, "/api/v1/namespaces/a/pods/web")));
        assert!(!allows(&pods, &req(Method::GET, "/api/v1/namespaces/a/pods/web/log")), "a subresource is its own");
        assert!(!allows(&pods, &req(Method::GET, "/apis/apps/v1/namespaces/a/deployments")));
        let logs = rule(&[""], &["*/log"], &["get"], &[]);
        assert!(allows(&logs, &req(Method::GET, "/api/v1/namespaces/a/pods/web/log")));
        assert!(!allows(&logs, &req(Method::GET, "/api/v1/namespaces/a/pods/web")));
        let named = rule(&[""], &["configmaps"], &["get", "update"], &["settings"]);
        assert!(allows(&named, &req(Method::GET, "/api/v1/namespaces/a/configmaps/settings")));
        assert!(!allows(&named, &req(Method::GET, "/api/v1/namespaces/a/configmaps/other")));
        assert!(!allows(
            &rule(&[""], &["configmaps"], &["list"], &["settings"]),
            &req(Method::GET, "/api/v1/configmaps")
        ));
        let everything = rule(&["*"], &["*"], &["*"], &[]);
        assert!(allows(&everything, &req(Method::PATCH, "/apis/apps/v1/namespaces/b/deployments/d/scale")));
        assert!(!allows(&everything, &req(Method::GET, "/healthz")), "resource rules do not reach paths");
        let health = urls(&["/healthz", "/livez/*"], &["get"]);
        assert!(allows(&health, &req(Method::GET, "/healthz")));
        assert!(allows(&health, &req(Method::GET, "/livez/ping")));
        assert!(!allows(&health, &req(Method::GET, "/livez")));
        assert!(!allows(&health, &req(Method::GET, "/api/v1/pods")));
    }

    #[test]
    fn rules_cover_only_what_they_hold() {
        let held = [rule(&["", "apps"], &["pods", "deployments", "*/scale"], &["get", "list"], &[])];
        assert!(uncovered(&held, &[rule(&["apps"], &["deployments"], &["get"], &[])]).is_empty());
        assert!(uncovered(&held, &[rule(&["apps"], &["deployments/scale"], &["list"], &["d"])]).is_empty());
        let missing = uncovered(&held, &[rule(&[""], &["pods", "secrets"], &["get", "delete"], &[])]);
        let shown: Vec<String> = missing.iter().map(describe).collect();
        assert_eq!(
            shown,
            [
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["delete"]}"#,
            ]
        );
        assert_eq!(
            compact(&missing),
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}"#,
            ]
        );
        // A `*` asked for is covered only by a `*` held.
        assert_eq!(uncovered(&held, &[rule(&["*"], &["pods"], &["get"], &[])]).len(), 1);
        assert!(uncovered(&[rule(&["*"], &["*"], &["*"], &[])], &[rule(&["*"], &["*"], &["*"], &[])]).is_empty());
        assert!(uncovered(&[urls(&["/logs/*"], &["get"])], &[urls(&["/logs/a"], &["get"])]).is_empty());
        assert_eq!(uncovered(&[urls(&["/logs/a"], &["get"])], &[urls(&["/logs/*"], &["get"])]).len(), 1);
    }
}
