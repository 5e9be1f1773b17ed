//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`), as kube-apiserver's apiextensions server has
//! them: defaults, validation (names, scope, versions, structural schemas, printer columns, scale paths),
//! what may not change, and the status the server keeps — the names accepted (or the conflict that keeps
//! them from being accepted), `NamesAccepted` and `Established`, the stored versions, and `Terminating`
//! once deleted, while the custom objects are removed (the definition keeps
//! [`crate::custom::CLEANUP_FINALIZER`] until they are gone).

use serde_json::{json, Map, Value};

use crate::custom;
use crate::validation::{self, Cause};

const SCOPES: [&str; 2] = ["Namespaced", "Cluster"];

pub fn default(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.entry("conversion").or_insert_with(|| json!({"strategy": "None"}));
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        if !kind.is_empty() {
            names.entry("singular").or_insert_with(|| json!(kind.to_lowercase()));
            names.entry("listKind").or_insert_with(|| json!(format!("{kind}List")));
        }
    }
}

pub fn validate(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = crd.get("spec").unwrap_or(&Value::Null);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let group = text(spec, "group");
    let names = spec.get("names").unwrap_or(&Value::Null);
    let plural = text(names, "plural");
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else {
        causes.extend(validation::dns1123_subdomain(&group).iter().map(|p| Cause::invalid("spec.group", &group, p)));
        if !group.contains('.') {
            causes.push(Cause::invalid("spec.group", &group, "should be a domain with at least one dot"));
        }
        if crate::resources::RESOURCES.iter().any(|r| r.group == group) {
            causes.push(Cause::invalid("spec.group", &group, "is served by the API server itself"));
        }
    }
    let name = crate::meta::name(crd);
    if name != format!("{plural}.{group}") {
        causes.push(Cause::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
    }
    for (field, label) in [("plural", true), ("singular", true), ("kind", false), ("listKind", false)] {
        let value = text(names, field);
        let at = format!("spec.names.{field}");
        if value.is_empty() {
            causes.push(Cause::required(at));
        } else if label {
            causes.extend(validation::dns1123_label(&value).iter().map(|p| Cause::invalid(&at, &value, p)));
        } else if !value.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            || !value.chars().all(|c| c.is_ascii_alphanumeric())
        {
            causes.push(Cause::invalid(at, &value, "must be an alphanumeric name starting with a letter"));
        }
    }
    if !text(names, "kind").is_empty() && text(names, "kind") == text(names, "listKind") {
        causes.push(Cause::invalid(
            "spec.names.listKind",
            &text(names, "listKind"),
            "kind and listKind cannot be the same",
        ));
    }
    for (i, short) in names.get("shortNames").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let s = short.as_str().unwrap_or_default();
        causes.extend(
            validation::dns1123_label(s).iter().map(|p| Cause::invalid(format!("spec.names.shortNames[{i}]"), s, p)),
        );
    }
    let scope = text(spec, "scope");
    if !SCOPES.contains(&scope.as_str()) {
        causes.push(match scope.is_empty() {
            true => Cause::required("spec.scope"),
            false => Cause::not_supported("spec.scope", &scope, &SCOPES),
        });
    }
    let strategy = spec.pointer("/conversion/strategy").and_then(Value::as_str).unwrap_or("None");
    if strategy != "None" {
        causes.push(Cause::not_supported("spec.conversion.strategy", strategy, &["None"]));
    }
    let versions = spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let version = text(v, "name");
        let at = format!("spec.versions[{i}].name");
        if version.is_empty() {
            causes.push(Cause::required(at));
        } else if seen.contains(&version) {
            causes.push(Cause::duplicate(at, &version));
        } else {
            causes.extend(validation::dns1123_label(&version).iter().map(|p| Cause::invalid(&at, &version, p)));
        }
        seen.push(version);
    }
    let storage = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid("spec.versions", "", "must have exactly one version marked as storage version"));
    }
    if !versions.is_empty() && !versions.iter().any(|v| v.get("served").and_then(Value::as_bool) == Some(true)) {
        causes.push(Cause::invalid("spec.versions", "", "must have at least one served version"));
    }
    // Every version's schema, columns and scale paths, served or not.
    let mut all_served = crd.clone();
    for v in all_served.pointer_mut("/spec/versions").and_then(Value::as_array_mut).into_iter().flatten() {
        v["served"] = json!(true);
    }
    if let Err(c) = custom::read(&all_served) {
        causes.extend(c);
    }
    causes
}

/// The group, scope and names of a definition stay what they were.
pub fn validate_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (pointer, field) in [("/spec/group", "spec.group"), ("/spec/scope", "spec.scope")] {
        if old.pointer(pointer) != new.pointer(pointer) {
            let shown = new.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
            causes.push(Cause::invalid(field, shown, "field is immutable"));
        }
    }
    causes
}

/// Sets the status the API server keeps: accepted names, `NamesAccepted` and `Established`, stored
/// versions. `others` are the other definitions in the store: a name one of them has accepted in the same
/// group is a conflict, and the definition is not served until it is resolved.
pub fn accept_names(crd: &mut Value, others: &[Value], now: &str) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
    let group = crd.pointer("/spec/group").cloned().unwrap_or_default();
    let name = crate::meta::name(crd).to_string();
    let taken = |field: &str, value: &Value| {
        others.iter().filter(|o| crate::meta::name(o) != name && o.pointer("/spec/group") == Some(&group)).any(|o| {
            let accepted = o.pointer("/status/acceptedNames").unwrap_or(&Value::Null);
            match field {
                "shortNames" => accepted.get("shortNames").and_then(Value::as_array).is_some_and(|s| s.contains(value)),
                _ => ["plural", "singular", "kind", "listKind"].iter().any(|f| accepted.get(*f) == Some(value)),
            }
        })
    };
    let mut conflict = None;
    for field in ["plural", "singular", "kind", "listKind"] {
        if let Some(v) = names.get(field).filter(|v| taken(field, v)) {
            let shown = v.as_str().unwrap_or_default();
            conflict = Some((format!("{}Conflict", capitalized(field)), format!("{shown:?} is already in use")));
            break;
        }
    }
    for short in names.get("shortNames").and_then(Value::as_array).into_iter().flatten() {
        if conflict.is_none() && taken("shortNames", short) {
            let shown = short.as_str().unwrap_or_default();
            conflict = Some(("ShortNamesConflict".into(), format!("{shown:?} is already in use")));
        }
    }
    let status = status_mut(crd);
    let (accepted, established) = match &conflict {
        None => {
            status.insert("acceptedNames".into(), names);
            (
                ("True", "NoConflicts", "no conflicts found".to_string()),
                ("True", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        }
        Some((reason, message)) => {
            status.entry("acceptedNames").or_insert_with(|| json!({"plural": "", "kind": ""}));
            (("False", reason.as_str(), message.clone()), ("False", "NotAccepted", "not all names are accepted"))
        }
    };
    set_condition(status, "NamesAccepted", accepted.0, accepted.1, &accepted.2, now);
    // Established stays once reached: a definition being served is not withdrawn by a later name clash.
    if !custom::condition(crd, "Established") {
        set_condition(status_mut(crd), "Established", established.0, established.1, established.2, now);
    }
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v.get("storage").and_then(Value::as_bool) == Some(true)))
        .and_then(|v| v.get("name").cloned());
    let status = status_mut(crd);
    let stored = status.entry("storedVersions").or_insert_with(|| json!([]));
    if let (Some(list), Some(v)) = (stored.as_array_mut(), storage) {
        if !list.contains(&v) {
            list.push(v);
        }
    }
}

/// A definition being deleted: the cleanup finalizer added and the `Terminating` condition set, so the
/// delete marks it and its objects are removed first.
pub fn terminating(crd: &Value, now: &str) -> Value {
    let mut out = crd.clone();
    let mut finalizers = crate::meta::finalizers(crd);
    if !finalizers.iter().any(|f| f == custom::CLEANUP_FINALIZER) {
        finalizers.push(custom::CLEANUP_FINALIZER.to_string());
    }
    out["metadata"]["finalizers"] = json!(finalizers);
    let status = status_mut(&mut out);
    set_condition(
        status,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
        now,
    );
    out
}

fn status_mut(crd: &mut Value) -> &mut Map<String, Value> {
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    crd["status"].as_object_mut().expect("status is an object")
}

/// Sets one condition, keeping its transition time when its status does not change.
fn set_condition(status: &mut Map<String, Value>, type_: &str, value: &str, reason: &str, message: &str, now: &str) {
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else { return };
    let since = list
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == value)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    list.retain(|c| c["type"] != type_);
    list.push(
        json!({"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": since}),
    );
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(plural: &str, kind: &str) -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": plural, "kind": kind},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                        "properties": {"size": {"type": "string"}}}}}}}]}})
    }

    #[test]
    fn a_definition_is_defaulted_and_checked() {
        let mut c = crd("widgets", "Widget");
        default(&mut c);
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["conversion"]["strategy"], "None");
        assert!(validate(&c).is_empty(), "{:?}", validate(&c));

        let mut bad = c.clone();
        bad["metadata"]["name"] = json!("gadgets.example.com");
        bad["spec"]["scope"] = json!("Galaxy");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"] = json!({});
        let shown: Vec<String> = validate(&bad).iter().map(|c| c.field.clone()).collect();
        assert_eq!(
            shown,
            [
                "metadata.name",
                "spec.scope",
                "spec.versions",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type"
            ]
        );
        let mut moved = c.clone();
        moved["spec"]["scope"] = json!("Cluster");
        assert_eq!(validate_update(&c, &moved)[0].field, "spec.scope");
    }

    #[test]
    fn names_are_accepted_unless_another_definition_has_them() {
        let now = "2026-12-07T12:00:00Z";
        let mut first = crd("widgets", "Widget");
        default(&mut first);
        accept_names(&mut first, &[], now);
        assert!(custom::condition(&first, "Established") && custom::condition(&first, "NamesAccepted"));
        assert_eq!(first["status"]["acceptedNames"]["plural"], "widgets");
        assert_eq!(first["status"]["storedVersions"], json!(["v1"]));

        let mut clash = crd("gadgets", "Widget");
        default(&mut clash);
        accept_names(&mut clash, &[first.clone()], now);
        assert!(!custom::condition(&clash, "Established"));
        let names =
            clash["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "NamesAccepted").unwrap();
        assert_eq!(
            (names["reason"].as_str(), names["message"].as_str()),
            (Some("SingularConflict"), Some("\"widget\" is already in use"))
        );

        let gone = terminating(&first, now);
        assert_eq!(gone["metadata"]["finalizers"], json!([custom::CLEANUP_FINALIZER]));
        assert!(custom::condition(&gone, "Terminating"));
    }
}
