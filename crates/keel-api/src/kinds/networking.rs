//! Ingresses and IngressClasses (`networking.k8s.io/v1`): what kube-apiserver's networking validation
//! checks of them (rules, paths, backends, hosts, TLS; a class's controller).

use serde_json::{json, Value};

use super::fields::*;
use crate::validation::{self, Cause};

const PATH_TYPES: [&str; 3] = ["Exact", "Prefix", "ImplementationSpecific"];

pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    match kind {
        "Ingress" => ingress(object),
        "IngressClass" => ingress_class(object),
        _ => vec![],
    }
}

/// The annotation that marks the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The annotation that named an Ingress's class before `spec.ingressClassName`.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The default IngressClass among `classes`: the one annotated as the default, the newest if several are
/// (by creation time, then name), as kube-apiserver's DefaultIngressClass admission picks it.
pub fn default_class(classes: &[Value]) -> Option<String> {
    newest_annotated(classes, DEFAULT_CLASS_ANNOTATION)
}

/// A new Ingress that names no class, by field or annotation, gets `default` (if the cluster has one).
pub fn admit_ingress(ingress: &mut Value, default: Option<&str>) {
    let named = ingress.pointer("/spec/ingressClassName").is_some_and(|c| !c.is_null())
        || ingress.pointer("/metadata/annotations").and_then(|a| a.get(CLASS_ANNOTATION)).is_some();
    if let (false, Some(class), Some(spec)) = (named, default, ingress.get_mut("spec").and_then(Value::as_object_mut)) {
        spec.insert("ingressClassName".into(), json!(class));
    }
}

/// A host: a DNS subdomain, or `*.` and one.
fn host(field: &str, h: &str, c: &mut Vec<Cause>) {
    let name = h.strip_prefix("*.").unwrap_or(h);
    if h.parse::<std::net::IpAddr>().is_ok() {
        c.push(invalid(field, &json!(h), "must be a DNS name, not an IP address"));
        return;
    }
    for e in validation::dns1123_subdomain(name) {
        let detail = if h.starts_with("*.") { format!("a wildcard DNS-1123 subdomain: {e}") } else { e };
        c.push(invalid(field, &json!(h), &detail));
    }
}

fn backend(path: &str, b: &Value, c: &mut Vec<Cause>) {
    match (obj_of(b, "service"), obj_of(b, "resource")) {
        (Some(_), Some(_)) => c.push(invalid(path, &Value::Null, "cannot set both resource and service backends")),
        (None, None) => c.push(invalid(path, &Value::Null, "resource or service backend is required")),
        (Some(s), None) => {
            let sp = child(path, "service");
            let name = str_of(s, "name");
            if name.is_empty() {
                c.push(required(child(&sp, "name"), ""));
            } else {
                c.extend(
                    validation::dns1123_label(name).into_iter().map(|e| invalid(child(&sp, "name"), &json!(name), &e)),
                );
            }
            let port = value_at(s, "port");
            let pp = child(&sp, "port");
            match (str_of(port, "name"), int_of(port, "number")) {
                ("", None) => c.push(required(pp, "port name or number is required")),
                (n, Some(_)) if !n.is_empty() => {
                    c.push(invalid(pp, &Value::Null, "cannot set both port name & port number"))
                }
                ("", Some(n)) if !(1..=65535).contains(&n) => {
                    c.push(invalid_int(child(&pp, "number"), n, "must be between 1 and 65535, inclusive"))
                }
                _ => {}
            }
        }
        (None, Some(_)) => {}
    }
}

fn ingress(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = value_at(object, "spec");
    let rules = arr_of(spec, "rules");
    match obj_of(spec, "defaultBackend") {
        Some(b) => backend("spec.defaultBackend", b, &mut c),
        None if rules.is_empty() => {
            c.push(invalid("spec.rules", &Value::Null, "either `defaultBackend` or `rules` must be specified"))
        }
        None => {}
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = index("spec.rules", i);
        let h = str_of(rule, "host");
        if !h.is_empty() {
            host(&child(&rp, "host"), h, &mut c);
        }
        let Some(http) = obj_of(rule, "http") else { continue };
        let paths = arr_of(http, "paths");
        let hp = child(&child(&rp, "http"), "paths");
        if paths.is_empty() {
            c.push(required(hp.clone(), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let pp = index(&hp, j);
            let path_type = str_of(p, "pathType");
            let path = str_of(p, "path");
            if path_type.is_empty() {
                c.push(required(child(&pp, "pathType"), "pathType must be specified"));
            } else if !PATH_TYPES.contains(&path_type) {
                c.push(Cause::not_supported(child(&pp, "pathType"), path_type, &PATH_TYPES));
            }
            if !path.starts_with('/') && (path_type == "Exact" || path_type == "Prefix" || !path.is_empty()) {
                c.push(invalid(child(&pp, "path"), &json!(path), "must be an absolute path"));
            }
            backend(&child(&pp, "backend"), value_at(p, "backend"), &mut c);
        }
    }
    for (i, tls) in arr_of(spec, "tls").iter().enumerate() {
        for (j, h) in arr_of(tls, "hosts").iter().enumerate() {
            host(&index(&child(&index("spec.tls", i), "hosts"), j), h.as_str().unwrap_or(""), &mut c);
        }
    }
    c
}

fn ingress_class(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let controller = str_of(value_at(object, "spec"), "controller");
    if controller.is_empty() {
        c.push(required("spec.controller", ""));
    } else if controller.len() > 250 {
        c.push(Cause::too_long("spec.controller", 250));
    } else if !controller.contains('/') {
        c.push(invalid(
            "spec.controller",
            &json!(controller),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        ));
    }
    c
}

/// A class's controller does not change.
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    if kind == "IngressClass" {
        immutable(value_at(old, "spec"), value_at(new, "spec"), "controller", "spec", &mut c);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(c: &[Cause]) -> Vec<String> {
        c.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn a_good_ingress_passes_and_bad_ones_say_why() {
        let good = json!({"spec": {"rules": [{"host": "shop.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
            "tls": [{"hosts": ["*.example"], "secretName": "t"}]}});
        assert_eq!(messages(&validate("Ingress", &good)), Vec::<String>::new());
        let bad = json!({"spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {}}}},
            {"path": "/", "backend": {}}]}}]}});
        let got = messages(&validate("Ingress", &bad));
        assert!(got.iter().any(|m| m.starts_with("spec.rules[0].host: Invalid value: \"10.0.0.1\"")), "{got:?}");
        assert!(
            got.iter()
                .any(|m| m == "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path"),
            "{got:?}"
        );
        assert!(
            got.iter().any(|m| m
                == "spec.rules[0].http.paths[0].backend.service.port: Required value: port name or number is required"),
            "{got:?}"
        );
        assert!(
            got.iter().any(|m| m == "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified"),
            "{got:?}"
        );
        assert!(got.iter().any(|m| m.starts_with("spec.rules[0].http.paths[1].backend: Invalid value")), "{got:?}");
        let empty = messages(&validate("Ingress", &json!({"spec": {}})));
        assert_eq!(empty, ["spec.rules: Invalid value: null: either `defaultBackend` or `rules` must be specified"]);
    }

    #[test]
    fn classes_name_a_controller_that_stays() {
        assert!(validate("IngressClass", &json!({"spec": {"controller": "keel.dev/ingress"}})).is_empty());
        assert_eq!(messages(&validate("IngressClass", &json!({"spec": {}}))), ["spec.controller: Required value"]);
        let old = json!({"spec": {"controller": "keel.dev/ingress"}});
        let new = json!({"spec": {"controller": "other.dev/x"}});
        assert_eq!(validate_update("IngressClass", &old, &new).len(), 1);
    }

    #[test]
    fn an_ingress_without_a_class_gets_the_newest_default_one() {
        let class = |name: &str, created: &str, default: bool| {
            let annotations = if default { json!({DEFAULT_CLASS_ANNOTATION: "true"}) } else { json!({}) };
            json!({"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations}})
        };
        let classes = [
            class("old", "2026-01-01T00:00:00Z", true),
            class("new", "2026-02-01T00:00:00Z", true),
            class("newest-but-not-default", "2026-03-01T00:00:00Z", false),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        assert_eq!(default_class(&classes[2..]), None);
        let mut plain = json!({"spec": {}});
        admit_ingress(&mut plain, Some("new"));
        assert_eq!(plain["spec"]["ingressClassName"], "new");
        let mut named = json!({"spec": {"ingressClassName": "nginx"}});
        admit_ingress(&mut named, Some("new"));
        assert_eq!(named["spec"]["ingressClassName"], "nginx");
        let mut annotated = json!({"metadata": {"annotations": {CLASS_ANNOTATION: "nginx"}}, "spec": {}});
        admit_ingress(&mut annotated, Some("new"));
        assert_eq!(annotated["spec"].get("ingressClassName"), None, "the old annotation names a class");
        let mut none = json!({"spec": {}});
        admit_ingress(&mut none, None);
        assert_eq!(none["spec"].get("ingressClassName"), None);
    }
}
