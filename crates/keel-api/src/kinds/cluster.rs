//! Namespaces, Nodes, Events and Leases: the namespace's name label, a node's allocatable defaulting to
//! its capacity, and what each checks of its own fields.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::fields::*;
use super::service::is_cidr;
use crate::validation::{self, Cause};

pub fn default(kind: &str, object: &mut Value) {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(obj) = object.as_object_mut() else { return };
    match kind {
        "Namespace" if !name.is_empty() => {
            if let Some(labels) = ensure_obj(obj, "metadata").and_then(|m| ensure_obj(m, "labels")) {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        "Node" => {
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                if let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned() {
                    default_to(status, "allocatable", capacity);
                }
            }
        }
        _ => {}
    }
}

pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    match kind {
        "Namespace" => namespace(object),
        "Node" => node(object),
        "Event" => event(object),
        "Lease" => lease(object),
        _ => vec![],
    }
}

fn namespace(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for f in object.get("spec").map(|s| arr_of(s, "finalizers")).unwrap_or(&[]) {
        let f = f.as_str().unwrap_or("");
        let errs = validation::qualified_name(f);
        if !errs.is_empty() {
            c.extend(errs.iter().map(|e| Cause::invalid("spec.finalizers", f, e)));
        } else if !f.contains('/') && f != "kubernetes" {
            c.push(Cause::invalid(
                "spec.finalizers",
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    c
}

const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn node(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = value_at(object, "spec");
    let cidrs: Vec<&str> = arr_of(spec, "podCIDRs").iter().map(|v| v.as_str().unwrap_or("")).collect();
    for (i, cidr) in cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            c.push(Cause::invalid(index("spec.podCIDRs", i), cidr, "must be a valid CIDR"));
        }
    }
    let pod_cidr = str_of(spec, "podCIDR");
    if !pod_cidr.is_empty() && cidrs.first().is_some_and(|first| *first != pod_cidr) {
        c.push(invalid("spec.podCIDRs", value_at(spec, "podCIDRs"), "first value must match `podCIDR`"));
    }
    let mut seen = BTreeSet::new();
    for (i, taint) in arr_of(spec, "taints").iter().enumerate() {
        let p = index("spec.taints", i);
        let k = str_of(taint, "key");
        if k.is_empty() {
            c.push(required(child(&p, "key"), ""));
        } else {
            c.extend(validation::qualified_name(k).iter().map(|e| Cause::invalid(child(&p, "key"), k, e)));
        }
        let v = str_of(taint, "value");
        c.extend(validation::label_value(v).iter().map(|e| Cause::invalid(child(&p, "value"), v, e)));
        let effect = str_of(taint, "effect");
        if effect.is_empty() {
            c.push(required(child(&p, "effect"), ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            c.push(Cause::not_supported(child(&p, "effect"), effect, &TAINT_EFFECTS));
        }
        if !seen.insert((k, effect)) {
            c.push(Cause::duplicate(&p, &format!("{k}={v}:{effect}")));
        }
    }
    c
}

fn event(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let involved_ns = object.pointer("/involvedObject/namespace").and_then(Value::as_str).unwrap_or("");
    let mismatch = if has(object, "eventTime") {
        involved_ns.is_empty() && ns != "default" && ns != "kube-system"
    } else if involved_ns.is_empty() {
        !ns.is_empty() && ns != "default"
    } else {
        ns != involved_ns
    };
    if mismatch {
        c.push(Cause::invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"));
    }
    if has(object, "eventTime") {
        let controller = str_of(object, "reportingComponent");
        if controller.is_empty() {
            c.push(required("reportingComponent", ""));
        } else {
            c.extend(
                validation::qualified_name(controller)
                    .iter()
                    .map(|e| Cause::invalid("reportingComponent", controller, e)),
            );
        }
        for (f, max) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = str_of(object, f);
            if v.is_empty() {
                c.push(required(f, ""));
            } else if v.len() > max {
                c.push(Cause::too_long(f, max));
            }
        }
        if str_of(object, "message").len() > 1024 {
            c.push(Cause::too_long("message", 1024));
        }
    }
    c
}

fn lease(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let spec = value_at(object, "spec");
    if let Some(d) = int_of(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        c.push(invalid_int("spec.leaseDurationSeconds", d, "must be greater than 0"));
    }
    non_negative(spec, "leaseTransitions", "spec", &mut c);
    c
}

/// A node's pod CIDRs and provider id are set once.
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    if kind != "Node" {
        return c;
    }
    let (os, ns) = (value_at(old, "spec"), value_at(new, "spec"));
    if !arr_of(os, "podCIDRs").is_empty() && arr_of(os, "podCIDRs") != arr_of(ns, "podCIDRs") {
        c.push(forbidden("spec.podCIDRs", "node updates may not change podCIDR except from \"\" to valid"));
    }
    let old_provider = str_of(os, "providerID");
    if !old_provider.is_empty() && old_provider != str_of(ns, "providerID") {
        c.push(forbidden("spec.providerID", "node updates may not change providerID except from \"\" to valid"));
    }
    c
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn namespaces_carry_their_name_label() {
        let mut ns = json!({"metadata": {"name": "team-a", "labels": {"x": "y"}}});
        default("Namespace", &mut ns);
        assert_eq!(ns["metadata"]["labels"], json!({"x": "y", "kubernetes.io/metadata.name": "team-a"}));
        let mut unnamed = json!({"metadata": {"generateName": "t-"}});
        default("Namespace", &mut unnamed);
        assert!(unnamed["metadata"].get("labels").is_none());
    }

    #[test]
    fn namespace_finalizers() {
        let ns = json!({"spec": {"finalizers": ["kubernetes", "example.com/cleanup", "other", "a b"]}});
        let c = validate("Namespace", &ns);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(
            c[0].message,
            "Invalid value: \"other\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }

    #[test]
    fn nodes() {
        let mut node = json!({"status": {"capacity": {"cpu": "4", "pods": "110"}}});
        default("Node", &mut node);
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4", "pods": "110"}));
        let node = json!({"spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24", "fd00::/300"], "taints": [
            {"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "Sometimes"}, {"effect": "NoExecute"}]}});
        let c = validate("Node", &node);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.podCIDRs[1]", "spec.taints[1]", "spec.taints[2].effect", "spec.taints[3].key"],
            "{c:?}"
        );
        let old = json!({"spec": {"podCIDRs": ["10.0.0.0/24"], "providerID": "kind://x"}});
        assert!(validate_update("Node", &old, &old).is_empty());
        let new = json!({"spec": {"podCIDRs": ["10.0.1.0/24"], "providerID": "kind://y"}});
        assert_eq!(validate_update("Node", &old, &new).len(), 2);
        let fresh = json!({"spec": {}});
        assert!(validate_update("Node", &fresh, &old).is_empty());
    }

    #[test]
    fn events_and_leases() {
        let ev = json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Pod", "namespace": "other"}});
        assert_eq!(validate("Event", &ev)[0].message, "Invalid value: \"other\": does not match event.namespace");
        let ev = json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Node"}});
        assert!(validate("Event", &ev).is_empty());
        let ev = json!({"metadata": {"namespace": "apps"}, "involvedObject": {"namespace": "apps"},
            "eventTime": "2025-01-01T00:00:00.000000Z"});
        let fields: Vec<String> = validate("Event", &ev).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["reportingComponent", "reportingInstance", "action", "reason"]);
        let lease = json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        let c = validate("Lease", &lease);
        assert_eq!(c[0].message, "Invalid value: 0: must be greater than 0");
        assert_eq!(c[1].field, "spec.leaseTransitions");
        assert!(validate("Lease", &json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).is_empty());
    }
}
