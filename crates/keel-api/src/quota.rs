//! ResourceQuota's accounting, as kube-apiserver's quota admission and kube-controller-manager's quota
//! controller keep it: what one object uses (pods: their compute requests and limits while they are not
//! terminal; services: node ports and load balancers; claims: storage, per class; any object:
//! `count/<resource>.<group>`), which quotas an object falls under (the resources they limit, their scopes),
//! the check of a create or update against each quota's `status.hard` and `status.used` with kube's
//! words, and a quota's usage recalculated from every object it covers. Pure: the server charges quotas
//! in the same store transaction as the write; the controller writes what [`recalculate`] gives.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::quantity::{Format, Quantity};

/// One resource's amount, with the format Kubernetes writes it back in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount {
    pub quantity: Quantity,
    pub format: Format,
}

impl Amount {
    fn count(n: i64) -> Amount {
        Amount { quantity: Quantity::from_units(n), format: Format::Decimal }
    }

    fn parse(v: &Value) -> Option<Amount> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Quantity::parse(&text).ok().map(|quantity| Amount { quantity, format: Format::of(&text) })
    }

    /// `self + other`; a zero takes the other's format, as Kubernetes' `Quantity.Add` does.
    fn plus(self, other: Amount) -> Amount {
        let format = if self.quantity.is_zero() { other.format } else { self.format };
        Amount { quantity: self.quantity + other.quantity, format }
    }

    pub fn text(&self) -> String {
        self.quantity.to_text(self.format)
    }
}

/// A `ResourceList`: resource names and amounts.
pub type Usage = BTreeMap<String, Amount>;

/// A `ResourceList` read from JSON (entries that are not quantities left out: validation refuses them).
pub fn usage_of(v: Option<&Value>) -> Usage {
    let entries = v.and_then(Value::as_object).into_iter().flatten();
    entries.filter_map(|(k, v)| Amount::parse(v).map(|a| (k.clone(), a))).collect()
}

/// A `ResourceList` as JSON.
pub fn to_json(usage: &Usage) -> Value {
    Value::Object(usage.iter().map(|(k, a)| (k.clone(), Value::from(a.text()))).collect::<Map<_, _>>())
}

fn add(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        let sum = out.get(k).copied().unwrap_or_default().plus(*v);
        out.insert(k.clone(), sum);
    }
    out
}

/// `a - b`, never below zero (kube's `SubtractWithNonNegativeResult`).
fn subtract_non_negative(a: &Usage, b: &Usage) -> Usage {
    let mut out = Usage::new();
    for (k, v) in a {
        let less = v.quantity - b.get(k).map_or(Quantity::default(), |o| o.quantity);
        let quantity = if less.is_negative() { Quantity::default() } else { less };
        out.insert(k.clone(), Amount { quantity, format: v.format });
    }
    out
}

fn mask(usage: &Usage, names: &BTreeSet<String>) -> Usage {
    usage.iter().filter(|(k, _)| names.contains(*k)).map(|(k, v)| (k.clone(), *v)).collect()
}

/// kube's `prettyPrint`: `pods=1,requests.cpu=500m`.
fn pretty(usage: &Usage) -> String {
    usage.iter().map(|(k, v)| format!("{k}={}", v.text())).collect::<Vec<_>>().join(",")
}

/// The object-count name of a resource: `count/pods`, `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    match group {
        "" => format!("count/{plural}"),
        g => format!("count/{plural}.{g}"),
    }
}

const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Quota on these makes every container name its own request or limit (kube's backward-compatible rule).
const MUST_SPECIFY: &[&str] = &["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Whether a resource name is a native one (no domain, or a `kubernetes.io` one).
fn native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Which of a quota's resource names the objects of `group`/`plural` count toward.
fn matching(group: &str, plural: &str, names: &[String]) -> BTreeSet<String> {
    let count = count_name(group, plural);
    let tracked = |n: &str| -> bool {
        if n == count {
            return true;
        }
        match (group, plural) {
            ("", "pods") => {
                POD_RESOURCES.contains(&n)
                    || n.starts_with("hugepages-")
                    || n.starts_with("requests.hugepages-")
                    || (n.starts_with("requests.") && !native(n))
            }
            ("", "services") => matches!(n, "services" | "services.loadbalancers" | "services.nodeports"),
            ("", "persistentvolumeclaims") => {
                matches!(n, "persistentvolumeclaims" | "requests.storage")
                    || n.split_once(STORAGE_CLASS_SUFFIX)
                        .is_some_and(|(_, r)| r == "requests.storage" || r == "persistentvolumeclaims")
            }
            ("", "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => n == plural,
            _ => false,
        }
    };
    names.iter().filter(|n| tracked(n)).cloned().collect()
}

/// Whether `group`/`plural` is charged on updates too (a service's type, a claim's size); every other
/// resource only on create.
pub fn charged_on_update(group: &str, plural: &str) -> bool {
    group.is_empty() && matches!(plural, "services" | "persistentvolumeclaims")
}

/// A pod's requests or limits (`which`): the larger of its containers' sum and each init container's,
/// plus its overhead (kube's `PodRequests`/`PodLimits`).
pub(crate) fn pod_resources(pod: &Value, which: &str) -> Usage {
    let containers = |name: &str| pod.pointer(&format!("/spec/{name}")).and_then(Value::as_array).cloned();
    let mut sum = Usage::new();
    for c in containers("containers").unwrap_or_default() {
        sum = add(&sum, &usage_of(c.pointer(&format!("/resources/{which}"))));
    }
    for c in containers("initContainers").unwrap_or_default() {
        for (k, v) in usage_of(c.pointer(&format!("/resources/{which}"))) {
            if sum.get(&k).is_none_or(|s| s.quantity < v.quantity) {
                sum.insert(k, v);
            }
        }
    }
    if !sum.is_empty() || which == "requests" {
        sum = add(&sum, &usage_of(pod.pointer("/spec/overhead")));
    }
    sum
}

/// kube's `podComputeUsageHelper`: the quota names a pod's (or a container's) requests and limits fill.
fn compute_usage(requests: &Usage, limits: &Usage) -> Usage {
    let mut out = Usage::new();
    out.insert("pods".into(), Amount::count(1));
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(r) = requests.get(name) {
            out.insert(name.to_string(), *r);
            out.insert(format!("requests.{name}"), *r);
        }
        if let Some(l) = limits.get(name) {
            out.insert(format!("limits.{name}"), *l);
        }
    }
    for (name, r) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), *r);
            out.insert(format!("requests.{name}"), *r);
        }
        if !native(name) {
            out.insert(format!("requests.{name}"), *r);
        }
    }
    out
}

/// Whether a pod is charged for compute (kube's `QuotaV1Pod`): not terminal, and not stuck past its
/// deletion's grace period.
fn pod_charged(pod: &Value, now: jiff::Timestamp) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    let deleted = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    if let (Some(at), Some(grace)) = (deleted.and_then(|d| d.parse::<jiff::Timestamp>().ok()), grace) {
        if now > at + jiff::SignedDuration::from_secs(grace) {
            return false;
        }
    }
    true
}

/// What one object of `group`/`plural` uses, as kube's evaluators measure it.
pub fn usage(group: &str, plural: &str, object: &Value, now: jiff::Timestamp) -> Usage {
    let mut out = Usage::new();
    out.insert(count_name(group, plural), Amount::count(1));
    if !group.is_empty() {
        return out;
    }
    match plural {
        "pods" if pod_charged(object, now) => {
            let compute = compute_usage(&pod_resources(object, "requests"), &pod_resources(object, "limits"));
            out = add(&out, &compute);
        }
        "services" => {
            let ports = object.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len) as i64;
            let kind = object.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            let allocates = object.pointer("/spec/allocateLoadBalancerNodePorts").and_then(Value::as_bool);
            out.insert("services".into(), Amount::count(1));
            let node_ports = match kind {
                "NodePort" => ports,
                "LoadBalancer" if allocates != Some(false) => ports,
                _ => 0,
            };
            out.insert("services.nodeports".into(), Amount::count(node_ports));
            out.insert("services.loadbalancers".into(), Amount::count(i64::from(kind == "LoadBalancer")));
        }
        "persistentvolumeclaims" => {
            out.insert("persistentvolumeclaims".into(), Amount::count(1));
            let class = object
                .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
                .or_else(|| object.pointer("/spec/storageClassName"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if !class.is_empty() {
                out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"), Amount::count(1));
            }
            let requested = object.pointer("/spec/resources/requests/storage").and_then(Amount::parse);
            let allocated = object.pointer("/status/allocatedResources/storage").and_then(Amount::parse);
            let storage = match (requested, allocated) {
                (Some(r), Some(a)) if a.quantity > r.quantity => Some(a),
                (r, a) => r.or(a),
            };
            if let Some(s) = storage {
                out.insert("requests.storage".into(), s);
                if !class.is_empty() {
                    out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
                }
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            out.insert(plural.to_string(), Amount::count(1));
        }
        _ => {}
    }
    out
}

/// One scope requirement of a quota: its `scopes` (operator Exists) and its `scopeSelector`'s expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScopeRequirement {
    scope: String,
    operator: String,
    values: Vec<String>,
}

fn scope_requirements(quota: &Value) -> Vec<ScopeRequirement> {
    let mut out: Vec<ScopeRequirement> =
        (quota.pointer("/spec/scopes").and_then(Value::as_array).into_iter().flatten())
            .filter_map(Value::as_str)
            .map(|s| ScopeRequirement { scope: s.to_string(), operator: "Exists".into(), values: vec![] })
            .collect();
    let expressions = quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array);
    for e in expressions.into_iter().flatten() {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let values = e.get("values").and_then(Value::as_array).into_iter().flatten();
        out.push(ScopeRequirement {
            scope: text("scopeName"),
            operator: text("operator"),
            values: values.filter_map(Value::as_str).map(String::from).collect(),
        });
    }
    out
}

/// A pod's QoS class is BestEffort when no container (init ones included) requests or limits CPU or memory.
fn best_effort(pod: &Value) -> bool {
    let containers = ["containers", "initContainers"]
        .into_iter()
        .flat_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array).cloned().unwrap_or_default());
    !containers.into_iter().any(|c| {
        ["requests", "limits"].iter().any(|w| {
            let list = usage_of(c.pointer(&format!("/resources/{w}")));
            list.contains_key("cpu") || list.contains_key("memory")
        })
    })
}

fn cross_namespace_affinity(pod: &Value) -> bool {
    let term_crosses = |t: &Value| {
        let t = t.get("podAffinityTerm").unwrap_or(t);
        t.get("namespaces").and_then(Value::as_array).is_some_and(|n| !n.is_empty())
            || t.get("namespaceSelector").is_some()
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|a| {
        ["requiredDuringSchedulingIgnoredDuringExecution", "preferredDuringSchedulingIgnoredDuringExecution"]
            .iter()
            .any(|w| {
                let terms = pod.pointer(&format!("/spec/affinity/{a}/{w}")).and_then(Value::as_array);
                terms.into_iter().flatten().any(term_crosses)
            })
    })
}

fn pod_in_scope(req: &ScopeRequirement, pod: &Value) -> bool {
    let terminating = pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|s| s >= 0);
    match req.scope.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or("");
            match req.operator.as_str() {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => !class.is_empty() && req.values.iter().any(|v| v == class),
                "NotIn" => class.is_empty() || !req.values.iter().any(|v| v == class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        _ => false,
    }
}

fn hard_names(quota: &Value) -> Vec<String> {
    quota.pointer("/status/hard").and_then(Value::as_object).map(|h| h.keys().cloned().collect()).unwrap_or_default()
}

/// Whether a quota covers an object: it limits something the object uses, and the object is in every one
/// of its scopes (only pods are in any scope).
fn covers(quota: &Value, group: &str, plural: &str, object: &Value) -> bool {
    if matching(group, plural, &hard_names(quota)).is_empty() {
        return false;
    }
    let pod = group.is_empty() && plural == "pods";
    scope_requirements(quota).iter().all(|r| pod && pod_in_scope(r, object))
}

/// kube's pod `Constraints`: under a quota of CPU or memory, every container names its request (or limit).
fn pod_constraints(required: &BTreeSet<String>, pod: &Value) -> Result<(), String> {
    let required: BTreeSet<&str> = required.iter().map(String::as_str).filter(|r| MUST_SPECIFY.contains(r)).collect();
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for k in ["containers", "initContainers"] {
        for c in pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array).into_iter().flatten() {
            let has =
                compute_usage(&usage_of(c.pointer("/resources/requests")), &usage_of(c.pointer("/resources/limits")));
            for r in &required {
                if !has.contains_key(*r) {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                    missing.entry(r).or_default().insert(name);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = missing
        .iter()
        .map(|(r, names)| format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    Err(format!("must specify {}", each.join("; ")))
}

/// A request's object, as the quota check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Charged<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub object: &'a Value,
    /// The stored object, on an update.
    pub old: Option<&'a Value>,
    pub now: jiff::Timestamp,
}

/// Why [`charge`] did not let a write through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// In kube's words (the server puts `<resource> "<name>" is forbidden: ` before them).
    Forbidden(String),
    /// The quota at this index covers the object but has not counted what it limits yet (kube refuses
    /// with the message; keel's server counts the namespace itself, then charges again).
    StatusUnknown(usize, String),
}

impl Refused {
    pub fn message(&self) -> &str {
        match self {
            Refused::Forbidden(m) | Refused::StatusUnknown(_, m) => m,
        }
    }
}

impl From<String> for Refused {
    fn from(message: String) -> Refused {
        Refused::Forbidden(message)
    }
}

/// The new `status.used` of each quota (by its index in `quotas`) a write charges, or why the write is
/// refused. `quotas` are the namespace's, by name.
pub fn charge(quotas: &[Value], write: &Charged) -> Result<Vec<(usize, Value)>, Refused> {
    let Charged { group, plural, object, old, now } = *write;
    if old.is_some() && !charged_on_update(group, plural) {
        return Ok(vec![]);
    }
    let mut interesting = vec![];
    for (i, quota) in quotas.iter().enumerate() {
        if !covers(quota, group, plural, object) {
            continue;
        }
        let name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let restricted = matching(group, plural, &hard_names(quota));
        if group.is_empty() && plural == "pods" {
            pod_constraints(&restricted, object)
                .map_err(|e| Refused::Forbidden(format!("failed quota: {name}: {e}")))?;
        }
        let used = usage_of(quota.pointer("/status/used"));
        if restricted.iter().any(|r| !used.contains_key(r)) {
            let names = restricted.iter().cloned().collect::<Vec<_>>().join(",");
            return Err(Refused::StatusUnknown(i, format!("status unknown for quota: {name}, resources: {names}")));
        }
        interesting.push(i);
    }
    if interesting.is_empty() {
        return Ok(vec![]);
    }
    let input = usage(group, plural, object, now);
    let negative: Vec<&str> = input.iter().filter(|(_, a)| a.quantity.is_negative()).map(|(k, _)| k.as_str()).collect();
    if !negative.is_empty() {
        return Err(format!("quota usage is negative for resource(s): {}", negative.join(",")).into());
    }
    let mut charged = vec![];
    for i in interesting {
        let quota = &quotas[i];
        let mut delta = input.clone();
        if let Some(old) = old {
            if covers(quota, group, plural, old) {
                delta = subtract_non_negative(&input, &usage(group, plural, old, now));
            }
        }
        delta.retain(|_, a| !a.quantity.is_zero());
        let hard = usage_of(quota.pointer("/status/hard"));
        let requested = mask(&delta, &hard.keys().cloned().collect());
        if requested.is_empty() {
            continue;
        }
        let used = usage_of(quota.pointer("/status/used"));
        let new_used = add(&used, &requested);
        let exceeded: BTreeSet<String> = requested
            .keys()
            .filter(|k| hard.get(*k).is_some_and(|h| new_used[*k].quantity > h.quantity))
            .cloned()
            .collect();
        if !exceeded.is_empty() {
            let name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            return Err(Refused::Forbidden(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                pretty(&mask(&requested, &exceeded)),
                pretty(&mask(&used, &exceeded)),
                pretty(&mask(&hard, &exceeded)),
            )));
        }
        charged.push((i, to_json(&new_used)));
    }
    Ok(charged)
}

/// The resources (group, plural) whose objects a quota's hard limits count: what the quota controller
/// lists to recalculate its usage.
pub fn counted_resources(quota: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let core = [
        "pods",
        "services",
        "persistentvolumeclaims",
        "configmaps",
        "secrets",
        "replicationcontrollers",
        "resourcequotas",
    ];
    let hard = quota.pointer("/spec/hard").and_then(Value::as_object).map(|h| h.keys().cloned().collect::<Vec<_>>());
    let names = hard.unwrap_or_default();
    for plural in core {
        if !matching("", plural, &names).is_empty() {
            out.insert((String::new(), plural.to_string()));
        }
    }
    for name in &names {
        if let Some(rest) = name.strip_prefix("count/") {
            let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
            out.insert((group.to_string(), plural.to_string()));
        }
    }
    out
}

/// A quota's status from every object of the resources it counts in its namespace (`objects`: group,
/// plural and the objects): `hard` from its spec, `used` summed over the objects it covers, zero for what
/// none uses (kube's quota controller).
pub fn recalculate(quota: &Value, objects: &[(String, String, Vec<Value>)], now: jiff::Timestamp) -> Value {
    let hard = usage_of(quota.pointer("/spec/hard"));
    let names: Vec<String> = hard.keys().cloned().collect();
    // Scopes and limits as the spec has them now: the status is what is being computed.
    let mut with_hard = quota.clone();
    with_hard["status"] = serde_json::json!({ "hard": to_json(&hard) });
    let mut used: Usage = names.iter().map(|n| (n.clone(), Amount::default())).collect();
    for (group, plural, items) in objects {
        let tracked = matching(group, plural, &names);
        if tracked.is_empty() {
            continue;
        }
        for object in items.iter().filter(|o| covers(&with_hard, group, plural, o)) {
            used = add(&used, &mask(&usage(group, plural, object, now), &tracked));
        }
    }
    serde_json::json!({"hard": to_json(&hard), "used": to_json(&used)})
}

#[cfg(test)]
mod tests;
