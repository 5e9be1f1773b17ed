//! Small tools the per-kind rules share: field paths as Kubernetes writes them, lenient reads of JSON
//! fields (a missing or mistyped field reads as empty: decoding has already refused wrong types), defaults
//! that fill only what is unset, and the causes Kubernetes' `field.Error`s render as (values printed the
//! way Go prints them: numbers bare, strings quoted, maps as `map[string]string{...}`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::validation::{Cause, CauseType};

/// `parent.name`, or `name` at the root.
pub fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// `parent[i]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `parent[key]` (map entries, as `field.Path.Key` writes them).
pub fn key(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

/// The string at `name`, "" when absent or not a string.
pub fn str_of<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `name`, when present and integral.
pub fn int_of(v: &Value, name: &str) -> Option<i64> {
    v.get(name).and_then(Value::as_i64)
}

/// The array at `name`, empty when absent.
pub fn arr_of<'a>(v: &'a Value, name: &str) -> &'a [Value] {
    v.get(name).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The object at `name`, when present (not null).
pub fn obj_of<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|o| o.is_object())
}

/// Whether `name` is present and not null.
pub fn has(v: &Value, name: &str) -> bool {
    v.get(name).is_some_and(|x| !x.is_null())
}

/// A map of strings (labels, selectors, data) at `name`; entries that are not strings are skipped.
pub fn str_map(v: &Value, name: &str) -> BTreeMap<String, String> {
    v.get(name)
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The object at `name` of `map` for writing, created when absent or null; `None` when it is something else.
pub fn ensure_obj<'a>(map: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(name).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Sets `name` when absent or null.
pub fn default_to(map: &mut Map<String, Value>, name: &str, value: Value) {
    let slot = map.entry(name).or_insert(Value::Null);
    if slot.is_null() {
        *slot = value;
    }
}

/// Sets the string `name` when absent, null or empty (Go's zero value).
pub fn default_str(map: &mut Map<String, Value>, name: &str, value: &str) {
    let slot = map.entry(name).or_insert(Value::Null);
    if slot.is_null() || slot.as_str() == Some("") {
        *slot = Value::String(value.to_string());
    }
}

/// The objects of the array at `name`, for writing.
pub fn each_obj_mut<'a>(
    map: &'a mut Map<String, Value>,
    name: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(name).and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut)
}

/// A value printed as Go's `%v`/`%q`/`%#v` print a `field.Error`'s bad value.
pub fn render(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let entries: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{}", render(v))).collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// The name of the newest object (by creation time, then name) whose `annotation` is `"true"`: the default
/// class among IngressClasses or StorageClasses, as kube's admission picks it.
pub fn newest_annotated(objects: &[Value], annotation: &str) -> Option<String> {
    let created =
        |c: &Value| c.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("").to_string();
    let name = |c: &Value| c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    objects
        .iter()
        .filter(|c| c.pointer("/metadata/annotations").and_then(|a| a.get(annotation)) == Some(&Value::from("true")))
        .min_by(|a, b| created(b).cmp(&created(a)).then_with(|| name(a).cmp(&name(b))))
        .map(name)
}

/// `Invalid value: <v>: detail`, with `v` printed as Go prints it.
pub fn invalid(field: impl Into<String>, v: &Value, detail: &str) -> Cause {
    Cause { kind: CauseType::Invalid, field: field.into(), message: format!("Invalid value: {}: {detail}", render(v)) }
}

/// `Invalid value: <v as JSON>: detail`, for structured values (selectors, strategies) that Go would print
/// as a struct.
pub fn invalid_json(field: impl Into<String>, v: &Value, detail: &str) -> Cause {
    Cause { kind: CauseType::Invalid, field: field.into(), message: format!("Invalid value: {v}: {detail}") }
}

/// `Invalid value: 7: detail`.
pub fn invalid_int(field: impl Into<String>, v: i64, detail: &str) -> Cause {
    Cause { kind: CauseType::Invalid, field: field.into(), message: format!("Invalid value: {v}: {detail}") }
}

/// `Required value`, or `Required value: detail`.
pub fn required(field: impl Into<String>, detail: &str) -> Cause {
    let message = if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
    Cause { kind: CauseType::Required, field: field.into(), message }
}

/// `Forbidden: detail`.
pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
    Cause { kind: CauseType::Forbidden, field: field.into(), message: format!("Forbidden: {detail}") }
}

/// `Not found: "name"`. [`CauseType`] has no `NotFound` (`FieldValueNotFound`) yet, so the reason reads
/// `FieldValueInvalid`; the message is Kubernetes'.
pub fn not_found(field: impl Into<String>, value: &str) -> Cause {
    Cause { kind: CauseType::Invalid, field: field.into(), message: format!("Not found: {value:?}") }
}

/// The value at `name` as a cause would print it (null when absent).
pub fn value_at<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.get(name).unwrap_or(&Value::Null)
}

pub const NON_NEGATIVE: &str = "must be greater than or equal to 0";
pub const IMMUTABLE: &str = "field is immutable";

/// `ValidateNonnegativeField` on the integer at `name`, if any.
pub fn non_negative(v: &Value, name: &str, path: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = int_of(v, name).filter(|n| *n < 0) {
        causes.push(invalid_int(child(path, name), n, NON_NEGATIVE));
    }
}

/// A field that may not change: `Invalid value: <new>: field is immutable` when it did.
pub fn immutable(old: &Value, new: &Value, name: &str, path: &str, causes: &mut Vec<Cause>) {
    let (o, n) = (value_at(old, name), value_at(new, name));
    if o != n {
        causes.push(invalid(child(path, name), n, IMMUTABLE));
    }
}

/// `IsValidPortNum`: problems with `port` as a port number.
pub fn port_num(port: i64) -> Option<&'static str> {
    (!(1..=65535).contains(&port)).then_some("must be between 1 and 65535, inclusive")
}

/// `IsValidPortName`: problems with `name` as an IANA service name (container and target ports).
pub fn port_name(name: &str) -> Vec<&'static str> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters");
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen");
    }
    errs
}

/// An int-or-string port (`targetPort`, a probe's `port`): a number in range or a valid port name.
pub fn port_num_or_name(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    match v {
        Value::Number(n) => {
            let port = n.as_i64().unwrap_or(0);
            if let Some(e) = port_num(port) {
                causes.push(invalid_int(path, port, e));
            }
        }
        Value::String(s) => {
            causes.extend(port_name(s).into_iter().map(|e| Cause::invalid(path, s, e)));
        }
        _ => causes.push(required(path, "")),
    }
}

const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// `IsConfigMapKey`: problems with `k` as a key of a ConfigMap's or Secret's data.
pub fn config_key(k: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if k.len() > crate::validation::DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {} characters", crate::validation::DNS1123_SUBDOMAIN_MAX));
    }
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        errs.push(format!(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or \
             'KEY_NAME',  or 'key-name', regex used for validation is '{CONFIG_KEY_FMT}')"
        ));
    }
    if k == "." {
        errs.push("must not be '.'".to_string());
    } else if k == ".." {
        errs.push("must not be '..'".to_string());
    } else if k.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// `IsValidPercent` / an int-or-percent (`maxSurge`, `maxUnavailable`): its value, or a cause.
pub fn int_or_percent(v: &Value, path: &str, causes: &mut Vec<Cause>) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(-1);
            if n < 0 {
                causes.push(invalid_int(path, n, NON_NEGATIVE));
                return None;
            }
            Some(n)
        }
        Value::String(s) => {
            let digits = s.strip_suffix('%').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits.and_then(|d| d.parse::<i64>().ok()) {
                Some(p) if p > 100 => {
                    causes.push(Cause::invalid(path, s, "must not be greater than 100%"));
                    None
                }
                Some(p) => Some(p),
                None => {
                    causes.push(Cause::invalid(
                        path,
                        s,
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or \
                         '93%', regex used for validation is '[0-9]+%')",
                    ));
                    None
                }
            }
        }
        _ => None,
    }
}

/// Every problem with a `metav1.LabelSelector` at `path` (`ValidateLabelSelector`).
pub fn label_selector(sel: &Value, path: &str) -> Vec<Cause> {
    let mut causes = crate::validation::labels(&str_map(sel, "matchLabels"), &child(path, "matchLabels"));
    for (i, req) in arr_of(sel, "matchExpressions").iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let values = arr_of(req, "values");
        match str_of(req, "operator") {
            "In" | "NotIn" if values.is_empty() => {
                causes.push(required(child(&p, "values"), "must be specified when `operator` is 'In' or 'NotIn'"))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(forbidden(
                child(&p, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => causes.push(Cause::invalid(child(&p, "operator"), op, "not a valid selector operator")),
        }
        let k = str_of(req, "key");
        causes.extend(crate::validation::qualified_name(k).iter().map(|e| Cause::invalid(child(&p, "key"), k, e)));
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            causes.extend(
                crate::validation::label_value(v).iter().map(|e| Cause::invalid(index(&child(&p, "values"), j), v, e)),
            );
        }
    }
    causes
}

/// Whether a selector has no terms (and so would select everything, which workloads may not).
pub fn selector_is_empty(sel: &Value) -> bool {
    str_map(sel, "matchLabels").is_empty() && arr_of(sel, "matchExpressions").is_empty()
}

/// Whether `labels` satisfy a `metav1.LabelSelector` (an unknown operator matches nothing).
pub fn selector_matches(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    use crate::selector::{Operator, Requirement};
    let mut reqs: Vec<Requirement> = str_map(sel, "matchLabels")
        .into_iter()
        .map(|(key, v)| Requirement { key, op: Operator::In, values: vec![v] })
        .collect();
    for req in arr_of(sel, "matchExpressions") {
        let op = match str_of(req, "operator") {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return false,
        };
        let values = arr_of(req, "values").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        reqs.push(Requirement { key: str_of(req, "key").to_string(), op, values });
    }
    reqs.iter().all(|r| r.matches(labels))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_and_renderings() {
        assert_eq!(child("", "spec"), "spec");
        assert_eq!(index(&child("spec", "containers"), 2), "spec.containers[2]");
        assert_eq!(key("data", "a.b"), "data[a.b]");
        assert_eq!(render(&json!({"app": "web", "tier": "fe"})), r#"map[string]string{"app":"web", "tier":"fe"}"#);
        assert_eq!(render(&json!(3)), "3");
        assert_eq!(render(&Value::Null), "null");
        assert_eq!(invalid("spec.x", &json!("a"), "bad").message, "Invalid value: \"a\": bad");
        assert_eq!(required("x", "").message, "Required value");
        assert_eq!(required("x", "why").message, "Required value: why");
    }

    #[test]
    fn defaults_fill_only_unset_fields() {
        let mut m = json!({"a": "", "b": null, "c": "kept", "d": 0}).as_object().cloned().unwrap();
        default_str(&mut m, "a", "x");
        default_to(&mut m, "b", json!(1));
        default_str(&mut m, "c", "x");
        default_to(&mut m, "d", json!(5));
        default_to(&mut m, "e", json!(true));
        assert_eq!(Value::Object(m), json!({"a": "x", "b": 1, "c": "kept", "d": 0, "e": true}));
    }

    #[test]
    fn port_names_and_numbers() {
        assert!(port_name("http").is_empty());
        assert!(port_name("web-8080").is_empty());
        assert_eq!(port_name("8080"), vec!["must contain at least one letter (a-z)"]);
        assert_eq!(port_name("a--b"), vec!["must not contain consecutive hyphens"]);
        assert_eq!(port_name("Http").len(), 1);
        assert_eq!(port_name("a-very-long-port-name").len(), 1);
        assert!(port_num(65535).is_none() && port_num(0).is_some() && port_num(65536).is_some());
        let mut c = vec![];
        port_num_or_name(&json!(70000), "p", &mut c);
        port_num_or_name(&json!("web"), "p", &mut c);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].message, "Invalid value: 70000: must be between 1 and 65535, inclusive");
    }

    #[test]
    fn config_keys() {
        for ok in ["a", "A_b-c.d", ".hidden", "..a.b".trim_start_matches("..")] {
            assert!(config_key(ok).is_empty(), "{ok}");
        }
        assert_eq!(config_key("."), vec!["must not be '.'"]);
        assert_eq!(config_key("..x"), vec!["must not start with '..'"]);
        assert!(config_key("a/b")[0].starts_with("a valid config key must consist of alphanumeric characters"));
        assert_eq!(config_key(&"a".repeat(254)).len(), 1);
    }

    #[test]
    fn int_or_percent_values() {
        let mut c = vec![];
        assert_eq!(int_or_percent(&json!("25%"), "p", &mut c), Some(25));
        assert_eq!(int_or_percent(&json!(2), "p", &mut c), Some(2));
        assert!(c.is_empty());
        assert_eq!(int_or_percent(&json!("25"), "p", &mut c), None);
        assert_eq!(int_or_percent(&json!("101%"), "p", &mut c), None);
        assert_eq!(int_or_percent(&json!(-1), "p", &mut c), None);
        assert_eq!(c.len(), 3);
        assert!(c[0].message.contains("a valid percent string"), "{c:?}");
        assert!(c[1].message.ends_with("must not be greater than 100%"));
    }

    #[test]
    fn label_selectors_are_checked_and_matched() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "legacy", "operator": "DoesNotExist"}]});
        assert!(label_selector(&sel, "spec.selector").is_empty());
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(selector_matches(&sel, &labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!selector_matches(&sel, &labels(&[("app", "web"), ("tier", "db")])));
        assert!(!selector_matches(&sel, &labels(&[("app", "web"), ("tier", "fe"), ("legacy", "")])));
        let bad = json!({"matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Gt", "values": ["1"]}]});
        let c = label_selector(&bad, "spec.selector");
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator"
            ]
        );
        assert!(selector_is_empty(&json!({})));
        assert!(!selector_is_empty(&sel));
    }
}
