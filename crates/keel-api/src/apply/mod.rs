//! Server-side apply and field management, as kube-apiserver's fieldmanager does them: every write records
//! in `metadata.managedFields` which manager set which fields ([`record_update`] for creates, updates and
//! patches: the fields a write changed become its manager's, and no one else's), and an apply
//! (`application/apply-patch+yaml`) merges the manager's configuration into the object by the schema's
//! list types ([`apply`]): a field another manager set to another value is a conflict (409 naming the
//! fields and managers) unless forced, and a field the manager applied before but no longer does is removed
//! when no one else manages it. Pure.

pub mod fields;

use serde_json::{json, Map, Value};

use crate::status::{ApiError, FieldConflicts};
use fields::{Element, FieldSet, ListType, Path, Shape};

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
            "time": self.time, "fieldsType": "FieldsV1", "fieldsV1": self.fields.to_json(),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }

    fn from_json(v: &Value) -> Entry {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Entry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource"),
            fields: FieldSet::from_json(v.get("fieldsV1").unwrap_or(&Value::Null)),
        }
    }

    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// The managed fields of an object.
pub fn managed(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(Entry::from_json)
        .collect()
}

/// Writes `entries` as the object's `metadata.managedFields` (entries with no fields left are dropped).
pub fn set_managed(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries.iter().filter(|e| !e.fields.is_empty()).map(Entry::to_json).collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: String,
    /// "" for the main resource, "status" or "scale" for a subresource.
    pub subresource: &'a str,
    pub now: &'a str,
    /// The kind's root shape.
    pub shape: Shape<'a>,
    /// Whether the object's status is written through a subresource (then it is not the main resource's).
    pub status_subresource: bool,
}

impl Writer<'_> {
    fn fields(&self, object: &Value) -> FieldSet {
        let with_status = !self.status_subresource || self.subresource == "status";
        let all = fields::of_object(object, self.shape, with_status);
        if self.subresource == "status" {
            // A status write manages only status.
            let mut only = FieldSet::default();
            for p in all.paths().into_iter().filter(|p| p.first() == Some(&Element::Field("status".into()))) {
                only.insert(&p);
            }
            return only;
        }
        all
    }
}

/// Records a create (`old` None) or an update of `old` to `new` in `new`'s managed fields: what the write
/// added or changed becomes the writer's (an "Update" entry) and no other manager's; what it removed is no
/// one's. Managed fields the client sent that differ from the stored ones replace them first (kubectl's
/// upgrade from client-side apply rewrites them so).
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer) {
    let stored = old.map(managed).unwrap_or_default();
    let sent = managed(new);
    let mut entries = if sent.is_empty()
        || old.is_some_and(|o| o.pointer("/metadata/managedFields") == new.pointer("/metadata/managedFields"))
    {
        stored
    } else {
        sent
    };
    let after = writer.fields(new);
    let before = old.map(|o| writer.fields(o)).unwrap_or_default();
    let mut changed = FieldSet::default();
    for p in after.paths() {
        let value_changed = match (old.and_then(|o| fields::get(o, &p)), fields::get(new, &p)) {
            (None, _) => true,
            // A keyed item with members below is owned through them; its own node only when it is new.
            (Some(_), _) if after.has_below(&p) => false,
            (Some(a), Some(b)) => a != b,
            (Some(_), None) => true,
        };
        if value_changed {
            changed.insert(&p);
        }
    }
    let removed = before.difference(&after);
    for e in entries.iter_mut() {
        e.fields = e.fields.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.same_owner(writer.manager, "Update", writer.subresource)) {
            Some(e) => {
                e.fields = e.fields.union(&changed);
                e.time = writer.now.to_string();
                e.api_version = writer.api_version.clone();
            }
            None => entries.push(Entry {
                manager: writer.manager.to_string(),
                operation: "Update".into(),
                api_version: writer.api_version.clone(),
                time: writer.now.to_string(),
                subresource: writer.subresource.to_string(),
                fields: changed,
            }),
        }
    }
    set_managed(new, &entries);
}

/// Fields another manager set to another value than an apply asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    /// The subresource the manager wrote through ("" for the main resource).
    pub subresource: String,
    pub path: Path,
}

impl Conflict {
    /// `"kubectl" with subresource "scale" using apps/v1`.
    fn owner(&self) -> String {
        match self.subresource.as_str() {
            "" => format!("{:?} using {}", self.manager, self.api_version),
            sub => format!("{:?} with subresource {sub:?} using {}", self.manager, self.api_version),
        }
    }
}

/// The 409 for `conflicts`, in kube-apiserver's words.
pub fn conflict_error(resource: &crate::resources::Resource, name: &str, conflicts: &[Conflict]) -> ApiError {
    let n = conflicts.len();
    let mut by_owner: Vec<(String, Vec<String>)> = Vec::new();
    for c in conflicts {
        let shown = fields::show(&c.path);
        match by_owner.iter_mut().find(|(o, _)| *o == c.owner()) {
            Some((_, paths)) => paths.push(shown),
            None => by_owner.push((c.owner(), vec![shown])),
        }
    }
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: conflict with {}: {}", by_owner[0].0, by_owner[0].1[0])
    } else {
        let parts: Vec<String> = by_owner
            .iter()
            .map(|(owner, paths)| {
                let listed: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with {owner}:\n{}", listed.join("\n"))
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let causes = conflicts
        .iter()
        .map(|c| ("FieldManagerConflict".to_string(), format!("conflict with {}", c.owner()), fields::show(&c.path)))
        .collect();
    ApiError::ApplyConflict(Box::new(FieldConflicts {
        resource: resource.into(),
        name: name.to_string(),
        message,
        causes,
    }))
}

/// An apply of `config` by `writer` to `live` (`None`: the object does not exist yet): the object to
/// store, with its managed fields, or the conflicts (none when `force`: the fields are taken over).
pub fn apply(live: Option<&Value>, config: &Value, writer: &Writer, force: bool) -> Result<Value, Vec<Conflict>> {
    let applied = writer.fields(config);
    let mut entries = live.map(managed).unwrap_or_default();
    let mut conflicts = Vec::new();
    if let Some(live) = live {
        for p in applied.paths() {
            if applied.has_below(&p) {
                continue;
            }
            let differs = match (fields::get(live, &p), fields::get(config, &p)) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            };
            if !differs {
                continue;
            }
            let others = entries.iter().filter(|e| !e.same_owner(writer.manager, "Apply", writer.subresource));
            for e in others.filter(|e| e.fields.contains(&p)) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut taken = FieldSet::default();
    for c in &conflicts {
        taken.insert(&c.path);
    }
    let mut merged = match live {
        Some(l) => merge(l, config, writer.shape, true),
        None => config.clone(),
    };
    // What this manager applied before and no longer does goes, unless another manager has it.
    let previous = entries
        .iter()
        .find(|e| e.same_owner(writer.manager, "Apply", writer.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for p in previous.difference(&applied).paths() {
        let kept =
            entries.iter().any(|e| !e.same_owner(writer.manager, "Apply", writer.subresource) && e.fields.contains(&p));
        if !kept {
            fields::remove(&mut merged, &p);
        }
    }
    for e in entries.iter_mut() {
        if !e.same_owner(writer.manager, "Apply", writer.subresource) {
            e.fields = e.fields.difference(&taken);
        }
    }
    entries.retain(|e| !e.same_owner(writer.manager, "Apply", writer.subresource));
    entries.push(Entry {
        manager: writer.manager.to_string(),
        operation: "Apply".into(),
        api_version: writer.api_version.clone(),
        time: writer.now.to_string(),
        subresource: writer.subresource.to_string(),
        fields: applied,
    });
    set_managed(&mut merged, &entries);
    Ok(merged)
}

/// `config` merged into `live` by the shape's list types: objects field by field, keyed lists item by
/// item, sets by value, atomic lists and scalars replaced.
fn merge(live: &Value, config: &Value, shape: Shape, root: bool) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if root && k == "metadata" {
                    out.insert(k.clone(), merge_metadata(l.get(k), cv, shape));
                    continue;
                }
                let (child, list) = shape.field(k);
                let merged = match l.get(k) {
                    Some(lv) => merge_field(lv, cv, child, &list),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => config.clone(),
    }
}

fn merge_field(live: &Value, config: &Value, shape: Shape, list: &ListType) -> Value {
    match (live, config, list) {
        (Value::Array(l), Value::Array(c), ListType::Set) => {
            let mut out = l.clone();
            out.extend(c.iter().filter(|v| !l.contains(v)).cloned());
            Value::Array(out)
        }
        (Value::Array(l), Value::Array(c), ListType::Map(keys)) => {
            let mut out = l.clone();
            let items = shape.items();
            for item in c {
                let key = fields::key_of(item, keys);
                match out.iter().position(|o| fields::key_of(o, keys) == key) {
                    Some(i) => out[i] = merge(&out[i], item, items, false),
                    None => out.push(item.clone()),
                }
            }
            Value::Array(out)
        }
        (Value::Object(_), Value::Object(_), _) => merge(live, config, shape, false),
        _ => config.clone(),
    }
}

/// Metadata: the managed fields merge (labels, annotations, finalizers, owner references); the rest is
/// the live object's.
fn merge_metadata(live: Option<&Value>, config: &Value, root: Shape) -> Value {
    let mut out = live.cloned().unwrap_or_else(|| json!({}));
    let (meta, _) = root.field("metadata");
    for k in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let Some(cv) = config.get(k) else { continue };
        let (child, list) = meta.field(k);
        let merged = match out.get(k) {
            Some(lv) => merge_field(lv, cv, child, &list),
            None => cv.clone(),
        };
        out[k] = merged;
    }
    out
}

/// The object an apply creates from `config` (nothing live yet): the config itself, its managed fields
/// the applier's.
pub fn new_object(config: &Value, writer: &Writer) -> Value {
    apply(None, config, writer, true).unwrap_or_else(|_| config.clone())
}

/// Parses an apply body (YAML or JSON): the configuration, which must name its apiVersion and kind.
pub fn parse_config(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value =
        serde_yaml_ng::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest("an apply patch must be an object".into()));
    }
    let map: &Map<String, Value> = v.as_object().expect("checked");
    for k in ["apiVersion", "kind"] {
        if map.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(ApiError::BadRequest(format!("invalid object type: {k} not set")));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer<'a>(manager: &'a str) -> Writer<'a> {
        Writer {
            manager,
            api_version: "apps/v1".into(),
            subresource: "",
            now: "2026-12-07T12:00:00Z",
            shape: Shape::Builtin("Deployment"),
            status_subresource: true,
        }
    }

    fn config(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn managers(o: &Value) -> Vec<(String, String)> {
        managed(o).into_iter().map(|e| (e.manager, e.operation)).collect()
    }

    #[test]
    fn two_appliers_conflict_and_force_takes_over() {
        let first = new_object(&config(2, "httpd"), &writer("alice"));
        assert_eq!(managers(&first), [("alice".to_string(), "Apply".to_string())]);
        // The same values: shared, no conflict.
        let shared = apply(Some(&first), &config(2, "httpd"), &writer("bob"), false).unwrap();
        assert_eq!(managers(&shared).len(), 2);
        // Another value of a field alice manages: a conflict naming it.
        let err = apply(Some(&shared), &config(3, "httpd"), &writer("bob"), false).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!((err[0].manager.as_str(), fields::show(&err[0].path)), ("alice", ".spec.replicas".to_string()));
        let resource = crate::resources::find("apps", "v1", "deployments").unwrap();
        let e = conflict_error(resource, "web", &err);
        assert_eq!(
            e.to_string(),
            "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas"
        );
        assert_eq!(e.code(), 409);
        // Forced: bob takes the field from alice.
        let forced = apply(Some(&shared), &config(3, "httpd"), &writer("bob"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let alice = managed(&forced).into_iter().find(|e| e.manager == "alice").unwrap();
        assert!(!alice.fields.to_json()["f:spec"].as_object().unwrap().contains_key("f:replicas"));
    }

    #[test]
    fn fields_an_applier_drops_go_unless_someone_else_has_them() {
        let mut first = config(2, "httpd");
        first["spec"]["paused"] = json!(true);
        let live = new_object(&first, &writer("alice"));
        let next = apply(Some(&live), &config(2, "httpd"), &writer("alice"), false).unwrap();
        assert!(next["spec"].get("paused").is_none(), "{next}");
        assert_eq!(next["spec"]["replicas"], 2);
        // Containers merge by name: another applier's container is kept beside this one's.
        let mut sidecar = config(2, "httpd");
        sidecar["spec"]["template"]["spec"]["containers"] = json!([{"name": "log", "image": "busybox"}]);
        sidecar["spec"].as_object_mut().unwrap().remove("replicas");
        let both = apply(Some(&next), &sidecar, &writer("bob"), false).unwrap();
        let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web", "log"]);
    }

    #[test]
    fn ports_are_told_apart_by_number_and_protocol() {
        let ports = |ports: Value| {
            let mut c = config(2, "dns");
            c["spec"]["template"]["spec"]["containers"][0]["ports"] = ports;
            c
        };
        let live = new_object(&ports(json!([{"containerPort": 53, "protocol": "UDP"}])), &writer("alice"));
        // Port 53 without a protocol is 53/TCP (the default): another item, not alice's 53/UDP.
        let both = apply(Some(&live), &ports(json!([{"containerPort": 53, "name": "dns-tcp"}])), &writer("bob"), false)
            .unwrap();
        let listed = &both["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(
            listed,
            &json!([{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "name": "dns-tcp"}])
        );
        let bob = managed(&both).into_iter().find(|e| e.manager == "bob").unwrap();
        let ports =
            &bob.fields.to_json()["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:ports"];
        assert!(ports.get("k:{\"containerPort\":53,\"protocol\":\"TCP\"}").is_some(), "{ports}");
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let live = new_object(&config(2, "httpd"), &writer("alice"));
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&live), &mut scaled, &Writer { subresource: "scale", ..writer("kubectl-scale") });
        let m = managed(&scaled);
        let scaler = m.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert_eq!(scaler.operation, "Update");
        assert_eq!(scaler.fields.paths().len(), 1);
        let alice = m.iter().find(|e| e.manager == "alice").unwrap();
        assert!(!alice.fields.to_json()["f:spec"].as_object().unwrap().contains_key("f:replicas"));
        // Now alice's apply of replicas 2 conflicts with the scaler.
        let err = apply(Some(&scaled), &config(2, "httpd"), &writer("alice"), false).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-scale");
        let resource = crate::resources::find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            conflict_error(resource, "web", &err).to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" with subresource \"scale\" using apps/v1: .spec.replicas"
        );
        // A create records its manager's fields.
        let mut created = config(1, "nginx");
        record_update(None, &mut created, &writer("kubectl-create"));
        assert_eq!(managers(&created), [("kubectl-create".to_string(), "Update".to_string())]);
    }
}
