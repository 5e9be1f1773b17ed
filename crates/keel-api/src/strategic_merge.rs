//! Strategic merge patch (`application/strategic-merge-patch+json`), as `kubectl apply`, `kubectl edit` and
//! `kubectl patch` send it for built-in kinds: like a JSON merge patch, except that some lists merge by a
//! key (containers by `name`, ports by `containerPort`, env by `name`, …) instead of being replaced, and the
//! directives `$patch` (`replace`, `delete`, `merge`), `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>` apply.
//!
//! The merge keys come from Kubernetes' Go types (`patchStrategy`/`patchMergeKey` tags, which its OpenAPI
//! publishes as `x-kubernetes-patch-strategy`/`-merge-key`); [`field`] holds those of the kinds keel serves.
//! A field it does not list merges as in a JSON merge patch (objects merge, lists are replaced).

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("invalid patch: {0}")]
    Invalid(String),
}

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The patch's list replaces the original (the default).
    Replace,
    /// Objects matched by this key merge; new ones are appended.
    MergeByKey(&'static str),
    /// A list of scalars: the union (finalizers).
    MergePrimitives,
}

/// The type and strategy of field `name` of Go type `ty` ("" for fields outside the table).
pub fn field(ty: &str, name: &str) -> (&'static str, Strategy) {
    use Strategy::*;
    match (ty, name) {
        (_, "metadata") => ("ObjectMeta", Replace),
        ("ObjectMeta", "finalizers") => ("", MergePrimitives),
        ("ObjectMeta", "ownerReferences") => ("", MergeByKey("uid")),
        ("Pod", "spec") | ("PodTemplateSpec", "spec") => ("PodSpec", Replace),
        ("Pod", "status") => ("PodStatus", Replace),
        ("PodStatus", "conditions") => ("", MergeByKey("type")),
        ("PodSpec", "containers") | ("PodSpec", "initContainers") => ("Container", MergeByKey("name")),
        ("PodSpec", "ephemeralContainers") => ("Container", MergeByKey("name")),
        ("PodSpec", "volumes") => ("Volume", MergeByKey("name")),
        ("PodSpec", "imagePullSecrets") => ("", MergeByKey("name")),
        ("PodSpec", "hostAliases") => ("", MergeByKey("ip")),
        ("PodSpec", "topologySpreadConstraints") => ("", MergeByKey("topologyKey")),
        ("Container", "ports") => ("", MergeByKey("containerPort")),
        ("Container", "env") => ("", MergeByKey("name")),
        ("Container", "volumeMounts") => ("", MergeByKey("mountPath")),
        ("Container", "volumeDevices") => ("", MergeByKey("devicePath")),
        ("Container", "resizePolicy") => ("", MergeByKey("resourceName")),
        ("Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job", "spec") => ("WorkloadSpec", Replace),
        ("Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job", "status") => ("WorkloadStatus", Replace),
        ("WorkloadStatus", "conditions") => ("", MergeByKey("type")),
        ("WorkloadSpec", "template") => ("PodTemplateSpec", Replace),
        ("PodTemplate", "template") => ("PodTemplateSpec", Replace),
        ("CronJob", "spec") => ("CronJobSpec", Replace),
        ("CronJobSpec", "jobTemplate") => ("JobTemplateSpec", Replace),
        ("JobTemplateSpec", "spec") => ("WorkloadSpec", Replace),
        ("Service", "spec") => ("ServiceSpec", Replace),
        ("ServiceSpec", "ports") => ("", MergeByKey("port")),
        ("Service", "status") => ("ServiceStatus", Replace),
        ("Node", "spec") => ("NodeSpec", Replace),
        ("Node", "status") => ("NodeStatus", Replace),
        ("NodeStatus", "addresses") | ("NodeStatus", "conditions") => ("", MergeByKey("type")),
        ("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration", "webhooks") => ("", MergeByKey("name")),
        _ => ("", Replace),
    }
}

/// Applies `patch` to `original`, an object of kind `kind` (the root type: "Deployment", "Pod", …).
pub fn apply(original: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => Ok(Value::Object(merge_map(o, p, kind)?)),
        (_, Value::Object(p)) => Ok(Value::Object(merge_map(&Map::new(), p, kind)?)),
        _ => Err(PatchError::Invalid("a strategic merge patch must be a JSON object".into())),
    }
}

fn directive_list(v: &Value, what: &str) -> Result<Vec<Value>, PatchError> {
    v.as_array().cloned().ok_or_else(|| PatchError::Invalid(format!("{what} must be a list")))
}

fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    ty: &str,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get("$patch").map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            let mut p = patch.clone();
            p.remove("$patch");
            return Ok(strip_directives(p));
        }
        Some(Some("delete")) => return Ok(Map::new()),
        Some(other) => return Err(PatchError::Invalid(format!("unknown $patch directive {other:?} on an object"))),
    }
    let mut out = original.clone();
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(list) = k.strip_prefix("$setElementOrder/") {
            orders.push((list.to_string(), directive_list(v, k)?));
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = directive_list(v, k)?;
            if let Some(Value::Array(items)) = out.get_mut(list) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let (child_ty, strategy) = field(ty, k);
        let merged = match (out.get(k), v) {
            (Some(Value::Object(o)), Value::Object(p)) => Value::Object(merge_map(o, p, child_ty)?),
            (None, Value::Object(p)) => Value::Object(merge_map(&Map::new(), p, child_ty)?),
            (orig, Value::Array(p)) => {
                let empty = Vec::new();
                let o = match orig {
                    Some(Value::Array(o)) => o,
                    _ => &empty,
                };
                Value::Array(merge_list(o, p, child_ty, strategy)?)
            }
            (_, v) => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    for (list, order) in orders {
        if let Some(Value::Array(items)) = out.get_mut(&list) {
            let (_, strategy) = field(ty, &list);
            reorder(items, &order, strategy);
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<String> =
            directive_list(retain, "$retainKeys")?.iter().filter_map(|v| v.as_str().map(String::from)).collect();
        out.retain(|k, _| keep.contains(k));
    }
    Ok(out)
}

/// A patch's own values may carry directives that mean nothing once they replace a field: drop them.
fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}

fn merge_list(original: &[Value], patch: &[Value], ty: &str, strategy: Strategy) -> Result<Vec<Value>, PatchError> {
    // `[{"$patch": "replace"}, items…]` replaces the list whatever its strategy.
    let replace = patch.iter().any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace || strategy == Strategy::Replace {
        let items = patch.iter().filter(|p| p.get("$patch").is_none());
        return Ok(items
            .map(|p| if let Value::Object(m) = p { Value::Object(strip_directives(m.clone())) } else { p.clone() })
            .collect());
    }
    match strategy {
        Strategy::Replace => unreachable!("handled above"),
        Strategy::MergePrimitives => {
            let mut out = original.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Ok(out)
        }
        Strategy::MergeByKey(key) => {
            let mut out = original.to_vec();
            for p in patch {
                let Some(pm) = p.as_object() else {
                    return Err(PatchError::Invalid(format!("a list merged by {key:?} must hold objects")));
                };
                let Some(id) = pm.get(key) else {
                    return Err(PatchError::Invalid(format!("an item of a list merged by key has no {key:?}")));
                };
                let at = out.iter().position(|o| o.get(key) == Some(id));
                match (pm.get("$patch").and_then(Value::as_str), at) {
                    (Some("delete"), Some(i)) => {
                        out.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (Some(d), _) if d != "merge" && d != "replace" => {
                        return Err(PatchError::Invalid(format!("unknown $patch directive {d:?} in a list item")))
                    }
                    (_, Some(i)) => {
                        let orig = out[i].as_object().cloned().unwrap_or_default();
                        out[i] = Value::Object(merge_map(&orig, pm, ty)?);
                    }
                    (_, None) => out.push(Value::Object(merge_map(&Map::new(), pm, ty)?)),
                }
            }
            Ok(out)
        }
    }
}

/// Orders `items` as `order` lists them (by merge key, or by value for scalars); items it does not list
/// keep their relative order after those it does.
fn reorder(items: &mut [Value], order: &[Value], strategy: Strategy) {
    let rank = |v: &Value| {
        let id = match strategy {
            Strategy::MergeByKey(key) => v.get(key),
            _ => Some(v),
        };
        let pos = order.iter().position(|o| match strategy {
            Strategy::MergeByKey(key) => Some(o.get(key).unwrap_or(o)) == id,
            _ => Some(o) == id,
        });
        pos.unwrap_or(order.len())
    };
    items.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(containers: Value) -> Value {
        json!({"metadata": {"name": "web", "finalizers": ["a"]}, "spec": {"replicas": 2, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name_and_their_env_by_name() {
        let orig = deployment(json!([
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "side:1"}
        ]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
            {"name": "new", "image": "new:1"}
        ]}}}});
        let out = apply(&orig, &patch, "Deployment").unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "app", "image": "app:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
                {"name": "side", "image": "side:1"},
                {"name": "new", "image": "new:1"}
            ])
        );
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let orig =
            deployment(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]));
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "b", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}]
        }}}});
        let out = apply(&orig, &patch, "Deployment").unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "c"}, {"name": "a", "image": "a"}])
        );

        let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "z"}]}}}});
        let out = apply(&orig, &patch, "Deployment").unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "z", "image": "z"}]));

        let patch = json!({"spec": {"$patch": "replace", "replicas": 5}});
        assert_eq!(apply(&orig, &patch, "Deployment").unwrap()["spec"], json!({"replicas": 5}));
    }

    #[test]
    fn nulls_delete_fields_and_unlisted_lists_are_replaced() {
        let orig = json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"a": "1", "b": "2"}}},
                          "metadata": {"labels": {"x": "1"}}});
        let patch = json!({"spec": {"replicas": null, "selector": {"matchLabels": {"b": null, "c": "3"}}}});
        assert_eq!(
            apply(&orig, &patch, "Deployment").unwrap()["spec"],
            json!({"selector": {"matchLabels": {"a": "1", "c": "3"}}})
        );

        let svc =
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}], "externalIPs": ["10.0.0.1"]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "externalIPs": ["10.0.0.2"]}});
        let out = apply(&svc, &patch, "Service").unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]));
        assert_eq!(out["spec"]["externalIPs"], json!(["10.0.0.2"]), "no strategy: replaced");
    }

    #[test]
    fn finalizers_are_a_set_with_their_own_delete_directive() {
        let orig = deployment(json!([]));
        let out = apply(&orig, &json!({"metadata": {"finalizers": ["b", "a"]}}), "Deployment").unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let out =
            apply(&out, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}), "Deployment").unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn volumes_keep_only_retained_keys() {
        let pod = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/x"}, "$retainKeys": ["hostPath", "name"]}]}});
        let out = apply(&pod, &patch, "Pod").unwrap();
        assert_eq!(out["spec"]["volumes"], json!([{"name": "v", "hostPath": {"path": "/x"}}]));
    }

    #[test]
    fn malformed_patches_are_refused() {
        let orig = deployment(json!([{"name": "a"}]));
        for bad in [
            json!([1]),
            json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": ["x"]}}}}),
            json!({"spec": {"$patch": "explode"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
        ] {
            assert!(apply(&orig, &bad, "Deployment").is_err(), "{bad}");
        }
    }
}
