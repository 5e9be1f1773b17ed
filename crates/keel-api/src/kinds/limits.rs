//! LimitRanges and ResourceQuotas (core/v1), the policies that keep a namespace within limits: their
//! defaults and validation as kube-apiserver has them, and the LimitRanger admission of pods (a
//! container's default requests and limits filled in, with kube's `kubernetes.io/limit-ranger`
//! annotation, then min, max and maxLimitRequestRatio enforced per Container and per Pod). The quota's
//! accounting is [`crate::quota`].

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::fields::{child, forbidden, index, invalid, key, required, NON_NEGATIVE};
use crate::quota::{self, Amount, Usage};
use crate::validation::Cause;

const LIMIT_RANGER_ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn items(range: &Value) -> &[Value] {
    range.pointer("/spec/limits").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// `SetDefaults_LimitRangeItem`: a Container item's default limit from its max, its default request from
/// its default limit, else from its min.
pub fn default_limit_range(range: &mut Value) {
    let Some(limits) = range.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else { return };
    for item in limits.iter_mut().filter(|i| i.get("type").and_then(Value::as_str) == Some("Container")) {
        let Some(map) = item.as_object_mut() else { continue };
        let list =
            |map: &Map<String, Value>, k: &str| map.get(k).and_then(Value::as_object).cloned().unwrap_or_default();
        let (max, min) = (list(map, "max"), list(map, "min"));
        let mut default = list(map, "default");
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        let mut default_request = list(map, "defaultRequest");
        for (k, v) in default.iter().chain(min.iter()) {
            default_request.entry(k.clone()).or_insert(v.clone());
        }
        if !default.is_empty() {
            map.insert("default".into(), Value::Object(default));
        }
        if !default_request.is_empty() {
            map.insert("defaultRequest".into(), Value::Object(default_request));
        }
    }
}

/// A resource list's entries: names and quantities checked (`path` is the list's field path).
fn checked_list(item: &Value, name: &str, path: &str, c: &mut Vec<Cause>) -> Usage {
    let mut out = Usage::new();
    for (k, v) in item.get(name).and_then(Value::as_object).into_iter().flatten() {
        let p = key(path, k);
        match quota::usage_of(Some(&json!({ k: v }))).remove(k) {
            None => c.push(invalid(&p, v, crate::quantity::QUANTITY_FORMAT)),
            Some(a) if a.quantity.is_negative() => c.push(invalid(&p, v, NON_NEGATIVE)),
            Some(a) => {
                out.insert(k.clone(), a);
            }
        }
    }
    out
}

/// `ValidateLimitRange`.
pub fn validate_limit_range(range: &Value) -> Vec<Cause> {
    let mut c = vec![];
    let mut types = BTreeSet::new();
    for (i, item) in items(range).iter().enumerate() {
        let path = index("spec.limits", i);
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            c.push(required(child(&path, "type"), ""));
        } else if !types.insert(kind) {
            c.push(Cause::duplicate(child(&path, "type"), kind));
        }
        let at = |name: &str| child(&path, name);
        let max = checked_list(item, "max", &at("max"), &mut c);
        let min = checked_list(item, "min", &at("min"), &mut c);
        let (mut default, mut default_request) = (Usage::new(), Usage::new());
        if kind == "Pod" {
            for name in ["default", "defaultRequest"] {
                if item.get(name).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
                    c.push(forbidden(at(name), "may not be specified when `type` is 'Pod'"));
                }
            }
        } else {
            default = checked_list(item, "default", &at("default"), &mut c);
            default_request = checked_list(item, "defaultRequest", &at("defaultRequest"), &mut c);
        }
        if kind == "PersistentVolumeClaim" && !min.contains_key("storage") && !max.contains_key("storage") {
            c.push(required(
                at("limits"),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let ratios = checked_list(item, "maxLimitRequestRatio", &at("maxLimitRequestRatio"), &mut c);
        let names: BTreeSet<&String> = max
            .keys()
            .chain(min.keys())
            .chain(default.keys())
            .chain(default_request.keys())
            .chain(ratios.keys())
            .collect();
        let text = |a: &Amount| Value::from(a.text());
        for k in names {
            let (mn, mx, df, dr, ratio) =
                (min.get(k), max.get(k), default.get(k), default_request.get(k), ratios.get(k));
            let greater = |a: Option<&Amount>, b: Option<&Amount>| matches!((a, b), (Some(a), Some(b)) if a.quantity > b.quantity);
            if greater(mn, mx) {
                let (mn, mx) = (mn.unwrap(), mx.unwrap());
                let detail = format!("min value {} is greater than max value {}", mn.text(), mx.text());
                c.push(invalid(key(&at("min"), k), &text(mn), &detail));
            }
            if greater(mn, dr) {
                let (mn, dr) = (mn.unwrap(), dr.unwrap());
                let detail = format!("min value {} is greater than default request value {}", mn.text(), dr.text());
                c.push(invalid(key(&at("defaultRequest"), k), &text(dr), &detail));
            }
            if greater(dr, mx) {
                let (dr, mx) = (dr.unwrap(), mx.unwrap());
                let detail = format!("default request value {} is greater than max value {}", dr.text(), mx.text());
                c.push(invalid(key(&at("defaultRequest"), k), &text(dr), &detail));
            }
            if greater(dr, df) {
                let (dr, df) = (dr.unwrap(), df.unwrap());
                let detail =
                    format!("default request value {} is greater than default limit value {}", dr.text(), df.text());
                c.push(invalid(key(&at("defaultRequest"), k), &text(dr), &detail));
            }
            if greater(mn, df) {
                let (mn, df) = (mn.unwrap(), df.unwrap());
                let detail = format!("min value {} is greater than default value {}", mn.text(), df.text());
                c.push(invalid(key(&at("default"), k), &text(df), &detail));
            }
            if greater(df, mx) {
                let (df, mx) = (df.unwrap(), mx.unwrap());
                let detail = format!("default value {} is greater than max value {}", df.text(), mx.text());
                c.push(invalid(key(&at("default"), k), &text(df), &detail));
            }
            if let Some(r) = ratio {
                if r.quantity < crate::quantity::Quantity::from_units(1) {
                    let detail = format!("ratio {} is less than 1", r.text());
                    c.push(invalid(key(&at("maxLimitRequestRatio"), k), &text(r), &detail));
                } else if let (Some(mn), Some(mx)) = (mn, mx) {
                    let bound = mx.quantity.milli_value() as f64 / mn.quantity.milli_value().max(1) as f64;
                    if r.quantity.milli_value() as f64 / 1000.0 > bound {
                        let detail = format!("ratio {} is greater than max/min = {bound:.6}", r.text());
                        c.push(invalid(key(&at("maxLimitRequestRatio"), k), &text(r), &detail));
                    }
                }
            }
        }
    }
    c
}

/// A container's (or a pod's) requests or limits.
fn list_at(v: &Value, pointer: &str) -> Usage {
    quota::usage_of(v.pointer(pointer))
}

fn min_constraint(kind: &str, name: &str, enforced: &Amount, requests: &Usage, limits: &Usage) -> Option<String> {
    let e = enforced.text();
    let Some(req) = requests.get(name) else {
        return Some(format!("minimum {name} usage per {kind} is {e}.  No request is specified"));
    };
    if req.quantity < enforced.quantity {
        return Some(format!("minimum {name} usage per {kind} is {e}, but request is {}", req.text()));
    }
    match limits.get(name) {
        Some(lim) if lim.quantity < enforced.quantity => {
            Some(format!("minimum {name} usage per {kind} is {e}, but limit is {}", lim.text()))
        }
        _ => None,
    }
}

fn max_constraint(kind: &str, name: &str, enforced: &Amount, requests: &Usage, limits: &Usage) -> Option<String> {
    let e = enforced.text();
    let Some(lim) = limits.get(name) else {
        return Some(format!("maximum {name} usage per {kind} is {e}.  No limit is specified"));
    };
    if lim.quantity > enforced.quantity {
        return Some(format!("maximum {name} usage per {kind} is {e}, but limit is {}", lim.text()));
    }
    match requests.get(name) {
        Some(req) if req.quantity > enforced.quantity => {
            Some(format!("maximum {name} usage per {kind} is {e}, but request is {}", req.text()))
        }
        _ => None,
    }
}

fn ratio_constraint(kind: &str, name: &str, enforced: &Amount, requests: &Usage, limits: &Usage) -> Option<String> {
    let e = enforced.text();
    let req = requests.get(name).map_or(0, |q| q.quantity.milli_value());
    let lim = limits.get(name).map_or(0, |q| q.quantity.milli_value());
    if req == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {e}, but no request is specified or request is 0"
        ));
    }
    if lim == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {e}, but no limit is specified or limit is 0"
        ));
    }
    let observed = lim as f64 / req as f64;
    if observed * 1000.0 > enforced.quantity.milli_value() as f64 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {e}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

/// The min, max and ratio of one item against requests and limits, in kube's order (names sorted).
fn enforce(item: &Value, kind: &str, requests: &Usage, limits: &Usage, errors: &mut Vec<String>) {
    for (name, enforced) in quota::usage_of(item.get("min")) {
        errors.extend(min_constraint(kind, &name, &enforced, requests, limits));
    }
    for (name, enforced) in quota::usage_of(item.get("max")) {
        errors.extend(max_constraint(kind, &name, &enforced, requests, limits));
    }
    for (name, enforced) in quota::usage_of(item.get("maxLimitRequestRatio")) {
        errors.extend(ratio_constraint(kind, &name, &enforced, requests, limits));
    }
}

/// kube's LimitRanger on a new pod: each container's missing requests and limits from the Container items'
/// `defaultRequest` and `default` (recorded in the `kubernetes.io/limit-ranger` annotation), then every
/// item's constraints. The refusal is kube's aggregate of messages (the server makes it a 403).
pub fn limit_pod(pod: &mut Value, ranges: &[Value]) -> Result<(), String> {
    let (mut default_requests, mut default_limits) = (Map::new(), Map::new());
    for item in ranges.iter().flat_map(items).filter(|i| i.get("type").and_then(Value::as_str) == Some("Container")) {
        for (list, name) in [(&mut default_requests, "defaultRequest"), (&mut default_limits, "default")] {
            for (k, v) in item.get(name).and_then(Value::as_object).into_iter().flatten() {
                list.insert(k.clone(), v.clone());
            }
        }
    }
    let mut notes = vec![];
    if !default_requests.is_empty() || !default_limits.is_empty() {
        let containers = pod.pointer_mut("/spec/containers").and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            let name = container.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let Some(c) = container.as_object_mut() else { continue };
            let resources = c.entry("resources").or_insert_with(|| json!({}));
            let Some(resources) = resources.as_object_mut() else { continue };
            let mut set = |list: &str, defaults: &Map<String, Value>| -> Vec<String> {
                let entry = resources.entry(list).or_insert_with(|| json!({}));
                let Some(map) = entry.as_object_mut() else { return vec![] };
                let mut added: Vec<String> = vec![];
                for (k, v) in defaults {
                    if !map.contains_key(k) {
                        map.insert(k.clone(), v.clone());
                        added.push(k.clone());
                    }
                }
                added.sort();
                added
            };
            let requests = set("requests", &default_requests);
            let limits = set("limits", &default_limits);
            for (added, what) in [(requests, "request"), (limits, "limit")] {
                if !added.is_empty() {
                    notes.push(format!("{} {what} for container {name}", added.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(
                    LIMIT_RANGER_ANNOTATION.into(),
                    format!("LimitRanger plugin set: {}", notes.join("; ")).into(),
                );
            }
        }
    }
    let mut errors = vec![];
    for item in ranges.iter().flat_map(items) {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
                    let (requests, limits) = (list_at(c, "/resources/requests"), list_at(c, "/resources/limits"));
                    enforce(item, "Container", &requests, &limits, &mut errors);
                }
            }
            Some("Pod") => {
                let requests = quota::pod_resources(pod, "requests");
                let limits = quota::pod_resources(pod, "limits");
                enforce(item, "Pod", &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    aggregate(errors)
}

/// kube's LimitRanger on a claim: its storage request within each PersistentVolumeClaim item's min and max.
pub fn limit_claim(claim: &Value, ranges: &[Value]) -> Result<(), String> {
    let mut errors = vec![];
    let requests = list_at(claim, "/spec/resources/requests");
    let kind = "PersistentVolumeClaim";
    for item in ranges.iter().flat_map(items).filter(|i| i.get("type").and_then(Value::as_str) == Some(kind)) {
        for (name, enforced) in quota::usage_of(item.get("min")) {
            errors.extend(min_constraint(kind, &name, &enforced, &requests, &Usage::new()));
        }
        for (name, enforced) in quota::usage_of(item.get("max")) {
            let e = enforced.text();
            match requests.get(&name) {
                None => errors.push(format!("maximum {name} usage per {kind} is {e}.  No request is specified")),
                Some(r) if r.quantity > enforced.quantity => {
                    errors.push(format!("maximum {name} usage per {kind} is {e}, but request is {}", r.text()))
                }
                _ => {}
            }
        }
    }
    aggregate(errors)
}

/// Go's `utilerrors.NewAggregate(...).Error()`: one message as it is, several in brackets (duplicates once).
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let unique: Vec<String> = errors.into_iter().filter(|e| seen.insert(e.clone())).collect();
    match unique.len() {
        0 => Ok(()),
        1 => Err(unique[0].clone()),
        _ => Err(format!("[{}]", unique.join(", "))),
    }
}

/// Scopes a ResourceQuota may name, and the resources each may limit.
const COMPUTE: &[&str] = &["pods", "cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];
const SCOPES: &[&str] =
    &["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity"];

fn scope_allows(scope: &str, resource: &str) -> bool {
    match scope {
        "BestEffort" => resource == "pods",
        _ => COMPUTE.contains(&resource),
    }
}

/// What a new ResourceQuota starts as: its hard limits in its status at once, so that admission holds
/// the namespace to them from the first write after (kube waits for its controller; keel's server counts
/// the namespace when it first charges the quota).
pub fn initial_quota(rq: &mut Value) {
    let hard = rq.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
    if let Some(map) = rq.as_object_mut() {
        map.insert("status".into(), json!({ "hard": hard }));
    }
}

/// `ValidateResourceQuota`: resource names and non-negative quantities (whole ones for counts), scopes
/// known, not in conflict, and only on the resources they apply to.
pub fn validate_quota(rq: &Value) -> Vec<Cause> {
    let mut c = vec![];
    let hard = rq.pointer("/spec/hard").cloned().unwrap_or(Value::Null);
    let mut names = vec![];
    for (k, v) in hard.as_object().into_iter().flatten() {
        let p = key("spec.hard", k);
        names.push(k.as_str());
        if k.is_empty() || k.contains(' ') {
            c.push(Cause::invalid(&p, k, "must be a standard resource type or fully qualified"));
        }
        match quota::usage_of(Some(&json!({ k: v }))).remove(k) {
            None => c.push(invalid(&p, v, crate::quantity::QUANTITY_FORMAT)),
            Some(a) if a.quantity.is_negative() => c.push(invalid(&p, v, NON_NEGATIVE)),
            Some(a) => {
                let counted = k == "pods"
                    || k.starts_with("count/")
                    || k.starts_with("services")
                    || matches!(
                        k.as_str(),
                        "configmaps"
                            | "secrets"
                            | "persistentvolumeclaims"
                            | "replicationcontrollers"
                            | "resourcequotas"
                    );
                if counted && a.quantity.milli_value() % 1000 != 0 {
                    c.push(invalid(&p, v, "must be an integer"));
                }
            }
        }
    }
    let mut scopes: Vec<&str> =
        rq.pointer("/spec/scopes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (i, s) in scopes.iter().enumerate() {
        if !SCOPES.contains(s) {
            c.push(Cause::not_supported(index("spec.scopes", i), s, SCOPES));
        }
    }
    let expressions = rq.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array);
    for (i, e) in expressions.into_iter().flatten().enumerate() {
        let path = index("spec.scopeSelector.matchExpressions", i);
        let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let operator = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let values = e.get("values").and_then(Value::as_array).map_or(0, Vec::len);
        if !SCOPES.contains(&scope) {
            c.push(Cause::not_supported(child(&path, "scopeName"), scope, SCOPES));
        }
        match operator {
            "In" | "NotIn" if values == 0 => c.push(required(
                child(&path, "values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            )),
            "Exists" | "DoesNotExist" if values > 0 => c.push(Cause::invalid(
                child(&path, "values"),
                "",
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => c.push(Cause::not_supported(
                child(&path, "operator"),
                other,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            )),
        }
        if scope != "PriorityClass" && !matches!(operator, "Exists" | "DoesNotExist") && SCOPES.contains(&scope) {
            c.push(Cause::invalid(child(&path, "operator"), operator, "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"));
        }
        scopes.push(scope);
    }
    let has = |s: &str| scopes.contains(&s);
    if (has("Terminating") && has("NotTerminating")) || (has("BestEffort") && has("NotBestEffort")) {
        c.push(Cause::invalid("spec.scopes", &scopes.join(", "), "conflicting scopes"));
    }
    for scope in scopes.iter().filter(|s| SCOPES.contains(s)) {
        for name in &names {
            if !scope_allows(scope, name) {
                c.push(Cause::invalid(key("spec.hard", name), name, "unsupported scope applied to resource"));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests;
