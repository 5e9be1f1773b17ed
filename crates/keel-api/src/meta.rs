//! The lifecycle rules every object follows, whatever its kind: what the server sets on create (uid,
//! creationTimestamp, a generated name, generation, a reset status), what an update may and may not change
//! (identity and timestamps are the server's; the main resource ignores status and the status subresource
//! ignores everything else; generation moves when the spec does), what a delete does (at once, or marked
//! with a deletionTimestamp while finalizers or a pod's grace period run), and the scale subresource.
//! Objects are JSON values as stored; the checks of each kind's own fields are `crate::kinds`'.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::resources::Resource;
use crate::status::ApiError;
use crate::validation::{self, Cause};

/// The characters of a generated name's suffix (no vowels, no look-alikes), as Kubernetes picks them.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const GENERATED_SUFFIX: usize = 5;
const GENERATE_NAME_MAX_PREFIX: usize = 63 - GENERATED_SUFFIX;

/// What the server decides for a new object, passed in so that the rules stay deterministic.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub now: jiff::Timestamp,
    pub uid: String,
    /// Random bits for a generated name's suffix.
    pub random: u64,
}

/// RFC 3339 in whole seconds, UTC: how Kubernetes writes metav1.Time.
pub fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `prefix` plus five random characters (the prefix cut so that the name fits a DNS label).
pub fn generate_name(prefix: &str, mut random: u64) -> String {
    let mut name: String = prefix.chars().take(GENERATE_NAME_MAX_PREFIX).collect();
    for _ in 0..GENERATED_SUFFIX {
        name.push(NAME_ALPHABET[(random % NAME_ALPHABET.len() as u64) as usize] as char);
        random /= NAME_ALPHABET.len() as u64;
    }
    name
}

/// Whether the server counts spec changes in `metadata.generation` for this resource.
pub fn tracks_generation(resource: &Resource) -> bool {
    crate::kinds::of(resource).generation
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// The object's `metadata` map (created if missing); Err if the body is not an object or metadata is not one.
fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object.as_object_mut().ok_or_else(|| bad("the request body is not a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut().ok_or_else(|| bad("metadata: expected an object"))
}

pub fn str_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(object, |v, k| v.get(k))?.as_str()
}

pub fn name(object: &Value) -> &str {
    str_at(object, &["metadata", "name"]).unwrap_or("")
}

/// The object's labels (non-string values are skipped: decoding reports them).
pub fn labels(object: &Value) -> BTreeMap<String, String> {
    string_map(object.pointer("/metadata/labels"))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The value a field selector compares for `path` (`metadata.name`, `spec.nodeName`, `involvedObject.kind`):
/// strings as they are, booleans and numbers as text, absent as "".
pub fn field(object: &Value, path: &str) -> Option<String> {
    let v = path.split('.').try_fold(object, |v, k| v.get(k));
    Some(match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return None,
    })
}

/// Checks `apiVersion` and `kind` of a request body against the resource it was sent to. A body that leaves
/// them out is of the endpoint's type, as kube-apiserver's decoder takes it for built-in kinds (clients such
/// as the Python `kubernetes` client send objects without them): [`set_type`] fills them in.
pub fn check_type(resource: &Resource, object: &Value, expected_kind: &str) -> Result<(), ApiError> {
    let expected_version = if expected_kind == "Scale" { "autoscaling/v1".to_string() } else { resource.api_version() };
    let given = |field: &str| object.get(field).and_then(Value::as_str).filter(|s| !s.is_empty());
    let api_version = given("apiVersion").unwrap_or(&expected_version);
    let kind = given("kind").unwrap_or(expected_kind);
    if api_version != expected_version || kind != expected_kind {
        return Err(bad(format!(
            "the API version in the data ({api_version}) does not match the expected API version \
             ({expected_version}) or the kind in the data ({kind}) does not match the expected kind ({expected_kind})"
        )));
    }
    Ok(())
}

/// Sets the object's `apiVersion` and `kind` to the resource's (after [`check_type`] accepted them).
fn set_type(resource: &Resource, object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version()));
        map.insert("kind".into(), json!(resource.kind));
    }
}

/// Prepares a new object sent to `namespace` (the path's; `None` for cluster-scoped resources): checks its
/// type, namespace and resourceVersion, names it (generateName), and sets what the server owns — uid,
/// creationTimestamp, generation, an initial status.
pub fn prepare_create(
    resource: &Resource,
    object: &mut Value,
    namespace: Option<&str>,
    fresh: &Fresh,
) -> Result<(), ApiError> {
    check_type(resource, object, resource.kind)?;
    set_type(resource, object);
    let meta = metadata_mut(object)?;
    match (resource.namespaced, namespace, meta.get("namespace").and_then(Value::as_str)) {
        (true, Some(path), Some(body)) if !body.is_empty() && body != path => {
            return Err(bad("the namespace of the provided object does not match the namespace sent on the request"))
        }
        (true, Some(path), _) => {
            meta.insert("namespace".into(), json!(path));
        }
        (true, None, _) => return Err(ApiError::MethodNotAllowed),
        (false, ..) => {
            meta.remove("namespace");
        }
    }
    if meta.get("resourceVersion").and_then(Value::as_str).is_some_and(|rv| !rv.is_empty()) {
        return Err(bad("resourceVersion should not be set on objects to be created"));
    }
    meta.remove("resourceVersion");
    let has_name = meta.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    if !has_name {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            let generated = generate_name(prefix, fresh.random);
            meta.insert("name".into(), json!(generated));
        }
    }
    meta.insert("uid".into(), json!(fresh.uid));
    meta.insert("creationTimestamp".into(), json!(timestamp(fresh.now)));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if tracks_generation(resource) {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    initial_status(resource, object);
    Ok(())
}

/// What a new object's status starts as: the server's, not the client's (nodes excepted: their agents
/// register them with status), as the kind's entry says.
fn initial_status(resource: &Resource, object: &mut Value) {
    (crate::kinds::of(resource).initial)(object);
    if resource.custom && resource.subresources.contains(&"status") {
        // A custom object's status is its status subresource's to write.
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
    }
    fill_required_status(resource, object);
}

/// Sets the status fields Kubernetes' Go types always write (no `omitempty`) to 0 where they are missing:
/// clients that check for them, as the official Python client does, refuse an object without them.
pub fn fill_required_status(resource: &Resource, object: &mut Value) {
    let required = crate::kinds::of(resource).required_status;
    if required.is_empty() {
        return;
    }
    let Some(map) = object.as_object_mut() else { return };
    let status = map.entry("status").or_insert_with(|| json!({}));
    if let Some(status) = status.as_object_mut() {
        for field in required {
            status.entry(*field).or_insert(json!(0));
        }
    }
}

/// A pod's quality-of-service class from its containers' requests and limits (cpu and memory).
pub fn qos_class(spec: &Value) -> &'static str {
    let containers =
        ["initContainers", "containers"].iter().filter_map(|k| spec.get(k).and_then(Value::as_array)).flatten();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = string_map(c.pointer("/resources/requests"));
        let limits = string_map(c.pointer("/resources/limits"));
        for r in ["cpu", "memory"] {
            let (req, lim) = (requests.get(r), limits.get(r));
            any |= req.is_some() || lim.is_some();
            // A missing request defaults to the limit.
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if !same_quantity(q, l) => guaranteed = false,
                _ => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    match (crate::quantity::Quantity::parse(a), crate::quantity::Quantity::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Causes against the metadata every kind shares: the name (a DNS label for namespaces and services, a
/// subdomain otherwise, or generateName's requirement), labels and annotations.
pub fn validate_metadata(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = name(object);
    if name.is_empty() {
        causes.push(Cause {
            kind: validation::CauseType::Required,
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    } else {
        let problems = match crate::kinds::of(resource).names {
            crate::kinds::NameRule::Label => validation::dns1123_label(name),
            crate::kinds::NameRule::PathSegment => crate::kinds::rbac::path_segment(name),
            crate::kinds::NameRule::Subdomain => validation::dns1123_subdomain(name),
        };
        causes.extend(problems.iter().map(|p| Cause::invalid("metadata.name", name, p)));
    }
    let meta = object.get("metadata").unwrap_or(&Value::Null);
    for (field, f) in [
        ("labels", validation::labels as fn(&BTreeMap<String, String>, &str) -> Vec<Cause>),
        ("annotations", validation::annotations),
    ] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {
                causes.extend(f(&string_map(Some(&meta[field])), &format!("metadata.{field}")))
            }
            Some(_) => causes.push(Cause::invalid(format!("metadata.{field}"), "", "must be a map of strings")),
        }
    }
    causes
}

/// Whether anything but metadata and status differs (what bumps `metadata.generation`).
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let rest = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    rest(old) != rest(new)
}

/// The metadata fields an update cannot change: they are carried over from the stored object.
const SERVER_METADATA: [&str; 6] =
    ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace"];

/// The object an update (of the main resource, or of its `status` subresource) stores, from the stored
/// `old` and the request's `new`: identity from `old`, status from `old` unless `subresource` is status
/// (then everything but status is `old`'s), generation bumped on a spec change. Checks the body's type and
/// name first.
pub fn prepare_update(
    resource: &Resource,
    subresource: Option<&str>,
    old: &Value,
    mut new: Value,
) -> Result<Value, ApiError> {
    check_type(resource, &new, resource.kind)?;
    set_type(resource, &mut new);
    let old_name = name(old).to_string();
    let new_meta = metadata_mut(&mut new)?;
    match new_meta.get("name").and_then(Value::as_str) {
        Some(n) if n == old_name => {}
        Some(n) if !n.is_empty() => {
            return Err(bad(format!("the name of the object ({n}) does not match the name on the URL ({old_name})")))
        }
        _ => {
            new_meta.insert("name".into(), json!(old_name));
        }
    }
    if resource.namespaced {
        let old_ns = str_at(old, &["metadata", "namespace"]).unwrap_or("");
        if new_meta.get("namespace").and_then(Value::as_str).is_some_and(|ns| !ns.is_empty() && ns != old_ns) {
            return Err(bad("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    let has_status = resource.subresources.contains(&"status");
    let mut merged = match subresource {
        // A CertificateSigningRequest's approval: its conditions, nothing else.
        Some("approval") => {
            let mut m = old.clone();
            m["status"]["conditions"] = new.pointer("/status/conditions").cloned().unwrap_or(json!([]));
            m
        }
        Some("status") => {
            let mut m = old.clone();
            match new.get("status") {
                Some(s) => m["status"] = s.clone(),
                None => {
                    if let Some(map) = m.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            m
        }
        _ => {
            if has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            new
        }
    };
    let old_meta = old.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    let meta = metadata_mut(&mut merged)?;
    for k in SERVER_METADATA {
        match old_meta.get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    meta.remove("resourceVersion");
    if tracks_generation(resource) && spec_changed(old, &merged) {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        metadata_mut(&mut merged)?.insert("generation".into(), json!(generation + 1));
    }
    fill_required_status(resource, &mut merged);
    Ok(merged)
}

/// Causes against an update of an object being deleted: no new finalizers.
pub fn validate_deleting_update(old: &Value, new: &Value) -> Vec<Cause> {
    if old.pointer("/metadata/deletionTimestamp").is_none() {
        return vec![];
    }
    let old_f = finalizers(old);
    let added: Vec<String> = finalizers(new).into_iter().filter(|f| !old_f.contains(f)).collect();
    if added.is_empty() {
        return vec![];
    }
    vec![Cause {
        kind: validation::CauseType::Forbidden,
        field: "metadata.finalizers".into(),
        message: format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
        ),
    }]
}

pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Nothing holds the object from deletion: no finalizers, and (a namespace) no spec.finalizers, which hold
/// it until the namespace controller has emptied it.
pub fn unheld(object: &Value) -> bool {
    let spec_held = object.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    finalizers(object).is_empty() && !spec_held
}

/// An update that leaves an object being deleted without finalizers completes its deletion, unless a grace
/// period runs (a pod its node is stopping: the node deletes it with grace 0 when done), as Kubernetes'
/// `ShouldDeleteDuringUpdate` decides.
pub fn deletion_complete(object: &Value) -> bool {
    let grace = object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
    object.pointer("/metadata/deletionTimestamp").is_some() && unheld(object) && grace == 0
}

/// How a delete request asks dependents to be handled (recorded as a finalizer for the garbage collector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Result<Propagation, ApiError> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(bad(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// What a delete does to a stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// Remove it from the store now.
    Now,
    /// Store this marked version (deletionTimestamp set; finalizers or a pod's grace period pending).
    Mark(Value),
    /// Already being deleted and nothing changes: answer with the object as it is.
    Pending,
}

/// Decides a delete: a pod on a node that has not finished gets its grace period (the node's agent
/// completes it); an object with finalizers (including the garbage collector's for Foreground and Orphan)
/// is marked; anything else goes now.
pub fn delete(
    object: &Value,
    resource: &Resource,
    grace_period: Option<i64>,
    propagation: Option<Propagation>,
    now: jiff::Timestamp,
) -> Deletion {
    let mut marked = object.clone();
    let mut changed = false;
    let mut fins = finalizers(object);
    let gc_finalizer = match propagation {
        Some(Propagation::Foreground) => Some("foregroundDeletion"),
        Some(Propagation::Orphan) => Some("orphan"),
        _ => None,
    };
    if let Some(f) = gc_finalizer {
        if !fins.iter().any(|x| x == f) {
            fins.push(f.to_string());
            marked["metadata"]["finalizers"] = json!(fins);
            changed = true;
        }
    }
    let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
    let graceful = crate::kinds::of(resource).has(crate::kinds::Hook::GracefulDelete);
    let grace = if graceful { pod_grace(object, grace_period) } else { 0 };
    if fins.is_empty() && grace == 0 {
        return Deletion::Now;
    }
    if !deleting {
        let at = now + jiff::SignedDuration::from_secs(grace);
        marked["metadata"]["deletionTimestamp"] = json!(timestamp(at));
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        changed = true;
    } else if grace < object.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) {
        // A shorter grace period may replace a longer one.
        marked["metadata"]["deletionTimestamp"] = json!(timestamp(now + jiff::SignedDuration::from_secs(grace)));
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        changed = true;
    }
    if deleting && grace == 0 && fins.is_empty() {
        return Deletion::Now;
    }
    if changed {
        Deletion::Mark(marked)
    } else {
        Deletion::Pending
    }
}

/// A pod's grace period: none for a pod no node runs (unscheduled or finished), else the request's or the
/// pod's `terminationGracePeriodSeconds` (30 by default).
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let node = str_at(pod, &["spec", "nodeName"]).unwrap_or("");
    let phase = str_at(pod, &["status", "phase"]).unwrap_or("");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    requested
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

/// An object as meta.k8s.io's PartialObjectMetadata: its metadata only.
pub fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The autoscaling/v1 Scale of a workload (deployments, replicasets, statefulsets).
pub fn scale(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let mut scale_meta = Map::new();
    for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = meta.get(k) {
            scale_meta.insert(k.into(), v.clone());
        }
    }
    // A LabelSelector's matchLabels, or a ReplicationController's plain map.
    let labels = object.pointer("/spec/selector/matchLabels").or_else(|| {
        object.pointer("/spec/selector").filter(|s| s.as_object().is_some_and(|m| m.values().all(Value::is_string)))
    });
    let selector = labels
        .map(|l| string_map(Some(l)).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// The workload with the replicas a Scale asks for; Err if the Scale is not one.
pub fn apply_scale(object: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale_replicas(object, scale)?;
    let mut out = object.clone();
    out["spec"]["replicas"] = json!(replicas);
    Ok(out)
}

/// The replicas a Scale (of `object`) asks for, checked.
pub fn scale_replicas(object: &Value, scale: &Value) -> Result<i64, ApiError> {
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| bad("spec.replicas: expected an integer"))?,
    };
    if !(0..=i64::from(i32::MAX)).contains(&replicas) {
        return Err(ApiError::Invalid {
            kind: "Scale".into(),
            resource: crate::status::GroupResource { group: "autoscaling".into(), resource: "scale".into() },
            name: name(object).into(),
            causes: vec![Cause::invalid("spec.replicas", &replicas.to_string(), "must be greater than or equal to 0")],
        });
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn fresh() -> Fresh {
        Fresh { now: "2026-11-24T10:00:00.5Z".parse().unwrap(), uid: "u-1".into(), random: 12345 }
    }

    #[test]
    fn create_sets_what_the_server_owns() {
        let cm = find("", "v1", "configmaps").unwrap();
        let mut o =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cfg-"}, "data": {"a": "b"}});
        prepare_create(cm, &mut o, Some("default"), &fresh()).unwrap();
        let name = name(&o);
        assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["uid"], "u-1");
        assert_eq!(o["metadata"]["creationTimestamp"], "2026-11-24T10:00:00Z");
        assert!(o["metadata"].get("generation").is_none());
        assert!(o.get("status").is_none());

        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                           "spec": {"replicas": 2}, "status": {"replicas": 9}});
        prepare_create(deploy, &mut d, Some("a"), &fresh()).unwrap();
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["status"], json!({}));
        // The status fields Kubernetes always writes are there from the start, and kept by updates.
        let daemons = find("apps", "v1", "daemonsets").unwrap();
        let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"}});
        prepare_create(daemons, &mut ds, Some("a"), &fresh()).unwrap();
        assert_eq!(ds["status"]["numberReady"], 0);
        assert_eq!(ds["status"]["desiredNumberScheduled"], 0);
        let partial = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "status": {"numberReady": 3}});
        let updated = prepare_update(daemons, Some("status"), &ds, partial).unwrap();
        assert_eq!(
            (updated["status"]["numberReady"].clone(), updated["status"]["numberMisscheduled"].clone()),
            (json!(3), json!(0))
        );

        let ns = find("", "v1", "namespaces").unwrap();
        let mut n = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "namespace": "y"}});
        prepare_create(ns, &mut n, None, &fresh()).unwrap();
        assert!(n["metadata"].get("namespace").is_none());
        assert_eq!(n["status"]["phase"], "Active");
        assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
    }

    #[test]
    fn create_refuses_mismatches() {
        let cm = find("", "v1", "configmaps").unwrap();
        let cases = [
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}}),
            json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"kind": "Secret", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "other"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "5"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "a"}),
            json!(["not", "an", "object"]),
        ];
        for mut c in cases {
            let e = prepare_create(cm, &mut c, Some("default"), &fresh()).unwrap_err();
            assert_eq!(e.code(), 400, "{e}");
        }
        let mut ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        assert_eq!(prepare_create(cm, &mut ok, None, &fresh()), Err(ApiError::MethodNotAllowed));
    }

    #[test]
    fn a_body_without_its_type_is_of_the_endpoints_type() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        prepare_create(deploy, &mut d, Some("a"), &fresh()).unwrap();
        assert_eq!((&d["apiVersion"], &d["kind"]), (&json!("apps/v1"), &json!("Deployment")));
        let mut no_version = json!({"kind": "Deployment", "metadata": {"name": "web"}});
        prepare_create(deploy, &mut no_version, Some("a"), &fresh()).unwrap();
        assert_eq!(no_version["apiVersion"], "apps/v1");
        let updated = prepare_update(deploy, None, &d, json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}}));
        assert_eq!(updated.unwrap()["kind"], "Deployment");
        assert!(check_type(deploy, &json!({"spec": {"replicas": 3}}), "Scale").is_ok());
    }

    #[test]
    fn metadata_causes() {
        let svc = find("", "v1", "services").unwrap();
        let o = json!({"metadata": {"name": "a.b", "labels": {"-x": "ok"}, "annotations": {"a": 1}}});
        let fields: Vec<String> = validate_metadata(svc, &o).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["metadata.name", "metadata.labels", "metadata.annotations"]);
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(validate_metadata(cm, &json!({"metadata": {"name": "a.b"}})).is_empty());
        let missing = validate_metadata(cm, &json!({"metadata": {}}));
        assert_eq!(missing[0].to_string(), "metadata.name: Required value: name or generateName is required");
    }

    #[test]
    fn updates_keep_identity_and_split_spec_from_status() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let old = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "a", "uid": "u", "creationTimestamp": "t", "generation": 3},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": "forged", "generation": 99, "resourceVersion": "7", "labels": {"a": "b"}},
            "spec": {"replicas": 2}, "status": {"replicas": 50}});
        let m = prepare_update(deploy, None, &old, new.clone()).unwrap();
        assert_eq!(m["metadata"]["uid"], "u");
        assert_eq!(m["metadata"]["generation"], 4);
        assert_eq!(m["metadata"]["namespace"], "a");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        assert_eq!(m["spec"]["replicas"], 2);
        assert_eq!(m["status"]["replicas"], 1);
        assert!(m["metadata"].get("resourceVersion").is_none());

        let s = prepare_update(deploy, Some("status"), &old, new).unwrap();
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["status"]["replicas"], 50);
        assert_eq!(s["metadata"]["generation"], 3);
        assert!(s["metadata"].get("labels").is_none());

        let renamed = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other"}});
        assert_eq!(prepare_update(deploy, None, &old, renamed).unwrap_err().code(), 400);
    }

    #[test]
    fn deletes_now_or_marked() {
        let now: jiff::Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let cm = json!({"metadata": {"name": "c"}});
        assert_eq!(delete(&cm, find("", "v1", "configmaps").unwrap(), None, None, now), Deletion::Now);
        let Deletion::Mark(m) =
            delete(&cm, find("", "v1", "configmaps").unwrap(), None, Some(Propagation::Foreground), now)
        else {
            panic!()
        };
        assert_eq!(m["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert_eq!(m["metadata"]["deletionTimestamp"], "2026-11-24T10:00:00Z");

        let with_fin = json!({"metadata": {"name": "c", "finalizers": ["x/y"]}});
        let Deletion::Mark(m) = delete(&with_fin, find("", "v1", "configmaps").unwrap(), None, None, now) else {
            panic!()
        };
        assert!(!deletion_complete(&m));
        assert_eq!(delete(&m, find("", "v1", "configmaps").unwrap(), None, None, now), Deletion::Pending);
        let mut done = m.clone();
        done["metadata"]["finalizers"] = json!([]);
        assert!(deletion_complete(&done));
        // A Terminating namespace is held by its spec.finalizers too, until the controller finalizes it.
        let mut ns = done.clone();
        ns["spec"] = json!({"finalizers": ["kubernetes"]});
        assert!(!deletion_complete(&ns));
        ns["spec"]["finalizers"] = json!([]);
        assert!(deletion_complete(&ns));
        assert_eq!(validate_deleting_update(&m, &with_fin), vec![]);
        let mut more = m.clone();
        more["metadata"]["finalizers"] = json!(["x/y", "new"]);
        assert_eq!(validate_deleting_update(&m, &more).len(), 1);

        let pending_pod = json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(delete(&pending_pod, find("", "v1", "pods").unwrap(), None, None, now), Deletion::Now);
        let running = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10},
                             "status": {"phase": "Running"}});
        let Deletion::Mark(m) = delete(&running, find("", "v1", "pods").unwrap(), None, None, now) else { panic!() };
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 10);
        assert_eq!(m["metadata"]["deletionTimestamp"], "2026-11-24T10:00:10Z");
        // Its node's status updates while it stops do not delete it: the grace period runs.
        assert!(!deletion_complete(&m));
        assert_eq!(delete(&m, find("", "v1", "pods").unwrap(), Some(0), None, now), Deletion::Now);
        assert_eq!(delete(&running, find("", "v1", "pods").unwrap(), Some(0), None, now), Deletion::Now);
    }

    #[test]
    fn qos_classes() {
        assert_eq!(qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                                     "requests": {"cpu": "1000m", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn scale_round_trip_and_fields() {
        let d = json!({"metadata": {"name": "web", "namespace": "a", "resourceVersion": "5"},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "tier": "x"}}},
                       "status": {"replicas": 1}});
        let s = scale(&d);
        assert_eq!(s["spec"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web,tier=x");
        let scaled = apply_scale(&d, &json!({"spec": {"replicas": 5}})).unwrap();
        assert_eq!(scaled["spec"]["replicas"], 5);
        assert_eq!(apply_scale(&d, &json!({"spec": {"replicas": -1}})).unwrap_err().code(), 422);
        assert_eq!(field(&d, "metadata.name").as_deref(), Some("web"));
        assert_eq!(field(&d, "spec.nodeName").as_deref(), Some(""));
        assert_eq!(field(&json!({"spec": {"hostNetwork": true}}), "spec.hostNetwork").as_deref(), Some("true"));
    }

    #[test]
    fn generated_names_fit() {
        let n = generate_name(&"x".repeat(80), u64::MAX);
        assert_eq!(n.len(), 63);
        assert!(n[58..].bytes().all(|c| NAME_ALPHABET.contains(&c)));
    }
}
