//! The structural schema of a CustomResourceDefinition version (its `openAPIV3Schema`), and what the API
//! server does with it for every custom object it is sent, in kube-apiserver's order: unknown fields are
//! pruned (and reported, for `fieldValidation`), nulls dropped where the schema does not allow them,
//! defaults filled in, then the object validated: types, `required`, `enum`, `pattern`, `format`,
//! bounds of numbers, strings, lists and maps, `x-kubernetes-int-or-string`, list types (`set`, `map`) and
//! the value validations `allOf`, `anyOf`, `oneOf` and `not`. The messages are kube-apiserver's.
//!
//! [`Schema::parse`] also checks that a schema is structural (what a CRD's validation refuses otherwise).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::validation::{Cause, CauseType};

use super::rules::Rule;

/// One node of a structural schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// "object", "array", "string", "integer", "number", "boolean" (empty: any, for int-or-string and
    /// preserve-unknown-fields nodes).
    pub type_: String,
    pub properties: BTreeMap<String, Schema>,
    pub required: Vec<String>,
    pub items: Option<Box<Schema>>,
    /// `additionalProperties` as a schema (a map's values); `Some(None)`: any value is kept.
    pub additional: Option<Option<Box<Schema>>>,
    pub enum_: Vec<Value>,
    pub pattern: Option<Pattern>,
    pub format: String,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub nullable: bool,
    pub default: Option<Value>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded_resource: bool,
    /// `x-kubernetes-list-type`: "atomic", "set" or "map".
    pub list_type: String,
    pub list_map_keys: Vec<String>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
    /// `x-kubernetes-validations`: CEL rules on this node.
    pub rules: Vec<Rule>,
}

/// A compiled `pattern` (Kubernetes uses Go's RE2 syntax; Rust's `regex` is of the same family).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: regex::Regex,
}

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];
const LIST_TYPES: [&str; 3] = ["atomic", "set", "map"];

impl Schema {
    /// Reads `v` (a version's `openAPIV3Schema`) found at `at` (for the causes), and checks it is
    /// structural: every node typed (but int-or-string and preserve-unknown-fields ones), the root an
    /// object, `properties` and `additionalProperties` not together, arrays with `items`, patterns and CEL
    /// rules that compile.
    pub fn parse(v: &Value, at: &str) -> Result<Schema, Vec<Cause>> {
        let mut causes = Vec::new();
        let schema = node(v, at, true, &mut causes);
        if schema.type_ != "object" {
            causes.push(Cause::not_supported(format!("{at}.type"), &schema.type_, &["object"]));
        }
        if causes.is_empty() {
            Ok(schema)
        } else {
            Err(causes)
        }
    }

    /// The schema of the field `name` of an object of this schema (a property, or the map's values).
    pub fn field(&self, name: &str) -> Option<&Schema> {
        self.properties.get(name).or(match &self.additional {
            Some(Some(s)) => Some(s),
            _ => None,
        })
    }

    /// Removes every field the schema does not describe from `object` (a whole custom object: its
    /// `apiVersion`, `kind` and `metadata` are the server's), and nulls where they are not allowed; the
    /// paths of the unknown fields removed (`spec.colour`), for warnings or a strict refusal.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        if let Value::Object(map) = object {
            for (k, v) in map.iter_mut() {
                if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = self.properties.get(k) {
                    s.prune_at(v, k, &mut unknown);
                }
            }
            let known = |k: &str| matches!(k, "apiVersion" | "kind" | "metadata") || self.properties.contains_key(k);
            if !self.preserve_unknown {
                for k in map.keys().filter(|k| !known(k)) {
                    unknown.push(k.clone());
                }
                map.retain(|k, _| known(k));
            }
            map.retain(|k, v| !v.is_null() || known_null(self.properties.get(k)));
        }
        unknown
    }

    fn prune_at(&self, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
        match value {
            Value::Object(map) if self.type_ == "object" || !self.properties.is_empty() => {
                let mut drop = Vec::new();
                for (k, v) in map.iter_mut() {
                    let child = format!("{path}.{k}");
                    match self.field(k) {
                        Some(s) => s.prune_at(v, &child, unknown),
                        None if self.keeps_unknown(k) => {}
                        None => {
                            unknown.push(child);
                            drop.push(k.clone());
                        }
                    }
                }
                for k in drop {
                    map.remove(&k);
                }
                map.retain(|k, v| !v.is_null() || self.keeps_unknown(k) || known_null(self.field(k)));
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        s.prune_at(item, &format!("{path}[{i}]"), unknown);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether an object of this schema keeps a field it does not describe.
    fn keeps_unknown(&self, field: &str) -> bool {
        self.preserve_unknown
            || matches!(self.additional, Some(None))
            || (self.embedded_resource && matches!(field, "apiVersion" | "kind" | "metadata"))
    }

    /// Fills in the `default` of every absent field the schema gives one, outside in.
    pub fn fill_defaults(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, s) in &self.properties {
                    if let Some(d) = &s.default {
                        if map.get(k).is_none_or(|v| v.is_null() && !s.nullable) {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                }
                for (k, v) in map.iter_mut() {
                    if let Some(s) = self.field(k) {
                        s.fill_defaults(v);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for item in items {
                        s.fill_defaults(item);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every problem with a custom object (`apiVersion`, `kind` and `metadata` are checked elsewhere),
    /// `old` being the stored object on an update (for CEL transition rules).
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        let Value::Object(map) = object else { return causes };
        let old_map = old.and_then(Value::as_object);
        for name in &self.required {
            if map.get(name).is_none_or(Value::is_null) {
                causes.push(Cause::required(name.clone()));
            }
        }
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = self.properties.get(k) {
                s.check(v, old_map.and_then(|m| m.get(k)), k, &mut causes);
            }
        }
        causes.extend(super::rules::evaluate(&self.rules, object, old, ""));
        causes
    }

    fn check(&self, value: &Value, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
        if value.is_null() {
            if !self.nullable {
                causes.push(type_error(path, value, &self.type_));
            }
            return;
        }
        if !self.type_matches(value) {
            let expected = if self.int_or_string { "integer,string" } else { &self.type_ };
            causes.push(type_error(path, value, expected));
            return;
        }
        let before = causes.len();
        if !self.enum_.is_empty() && !self.enum_.contains(value) {
            let supported: Vec<String> = self.enum_.iter().map(plain).collect();
            let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
            causes.push(Cause::not_supported(path, &plain(value), &supported));
        }
        match value {
            Value::String(s) => self.check_string(s, path, causes),
            Value::Number(n) => self.check_number(n, path, causes),
            Value::Array(items) => self.check_array(items, old, path, causes),
            Value::Object(map) => self.check_object(map, old, path, causes),
            _ => {}
        }
        for s in &self.all_of {
            s.check_values(value, path, causes);
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(|s| s.passes(value, path)) {
            causes.push(invalid(path, value, format!("{path} in body must be of type anyOf")));
        }
        if !self.one_of.is_empty() && self.one_of.iter().filter(|s| s.passes(value, path)).count() != 1 {
            causes.push(invalid(path, value, format!("{path} in body must validate one and only one schema (oneOf)")));
        }
        if let Some(not) = &self.not {
            if not.passes(value, path) {
                causes.push(invalid(path, value, format!("{path} in body should not validate the schema (not)")));
            }
        }
        // CEL rules run only on values that passed the schema, as in kube-apiserver.
        if causes.len() == before && !self.rules.is_empty() {
            causes.extend(super::rules::evaluate(&self.rules, value, old, path));
        }
    }

    /// The value validations of a node in `allOf`, `anyOf`, `oneOf` or `not` (such nodes carry no types
    /// of their own in a structural schema; when they do, the type is checked too).
    fn check_values(&self, value: &Value, path: &str, causes: &mut Vec<Cause>) {
        let mut s = self.clone();
        if s.type_.is_empty() {
            s.type_ = json_type(value).to_string();
        }
        s.check(value, None, path, causes);
    }

    fn passes(&self, value: &Value, path: &str) -> bool {
        let mut causes = Vec::new();
        self.check_values(value, path, &mut causes);
        causes.is_empty()
    }

    fn type_matches(&self, value: &Value) -> bool {
        if self.int_or_string {
            return value.is_string() || value.is_i64() || value.is_u64();
        }
        match self.type_.as_str() {
            "" => true,
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => false,
        }
    }

    fn check_string(&self, s: &str, path: &str, causes: &mut Vec<Cause>) {
        let value = Value::String(s.to_string());
        let chars = s.chars().count() as u64;
        if let Some(max) = self.max_length.filter(|m| chars > *m) {
            causes.push(Cause::too_long(path, max as usize));
        }
        if let Some(min) = self.min_length.filter(|m| chars < *m) {
            causes.push(invalid(path, &value, format!("{path} in body should be at least {min} chars long")));
        }
        if let Some(p) = self.pattern.as_ref().filter(|p| !p.regex.is_match(s)) {
            causes.push(invalid(path, &value, format!("{path} in body should match '{}'", p.source)));
        }
        if !self.format.is_empty() && !format_ok(&self.format, s) {
            causes.push(invalid(path, &value, format!("{path} in body must be of type {}: {s:?}", self.format)));
        }
    }

    fn check_number(&self, n: &serde_json::Number, path: &str, causes: &mut Vec<Cause>) {
        let value = Value::Number(n.clone());
        let Some(f) = n.as_f64() else { return };
        if let Some(min) = self.minimum {
            if (self.exclusive_minimum && f <= min) || f < min {
                let how = if self.exclusive_minimum { "greater than" } else { "greater than or equal to" };
                causes.push(invalid(path, &value, format!("{path} in body should be {how} {}", number(min))));
            }
        }
        if let Some(max) = self.maximum {
            if (self.exclusive_maximum && f >= max) || f > max {
                let how = if self.exclusive_maximum { "less than" } else { "less than or equal to" };
                causes.push(invalid(path, &value, format!("{path} in body should be {how} {}", number(max))));
            }
        }
        if let Some(m) = self.multiple_of.filter(|m| *m != 0.0 && (f / m).fract() != 0.0) {
            causes.push(invalid(path, &value, format!("{path} in body should be a multiple of {}", number(m))));
        }
        if self.format == "int32" && (f < f64::from(i32::MIN) || f > f64::from(i32::MAX)) {
            causes.push(invalid(path, &value, format!("{path} in body must be of type int32: {}", plain(&value))));
        }
    }

    fn check_array(&self, items: &[Value], old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
        let n = items.len() as u64;
        if let Some(max) = self.max_items.filter(|m| n > *m) {
            causes.push(Cause {
                kind: CauseType::TooMany,
                field: path.to_string(),
                message: format!("Too many: {n}: must have at most {max} items"),
            });
        }
        if let Some(min) = self.min_items.filter(|m| n < *m) {
            let v = Value::from(n);
            causes.push(invalid(path, &v, format!("{path} in body should have at least {min} items")));
        }
        match self.list_type.as_str() {
            "set" => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        causes.push(Cause::duplicate(format!("{path}[{i}]"), &plain(item)));
                    }
                }
            }
            "map" => {
                let key = |item: &Value| -> Vec<Value> {
                    self.list_map_keys.iter().map(|k| item.get(k).cloned().unwrap_or(Value::Null)).collect()
                };
                for (i, item) in items.iter().enumerate() {
                    if items[..i].iter().any(|other| key(other) == key(item)) {
                        let shown: Map<String, Value> =
                            self.list_map_keys.iter().cloned().zip(key(item)).filter(|(_, v)| !v.is_null()).collect();
                        causes.push(Cause::duplicate(format!("{path}[{i}]"), &Value::Object(shown).to_string()));
                    }
                }
            }
            _ => {}
        }
        if let Some(s) = &self.items {
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                // An item's old value, for transition rules: by key in a map list, else none.
                let before = match (self.list_type.as_str(), old_items) {
                    ("map", Some(olds)) => {
                        olds.iter().find(|o| self.list_map_keys.iter().all(|k| o.get(k) == item.get(k)))
                    }
                    _ => None,
                };
                s.check(item, before, &format!("{path}[{i}]"), causes);
            }
        }
    }

    fn check_object(&self, map: &Map<String, Value>, old: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
        let n = map.len() as u64;
        if let Some(max) = self.max_properties.filter(|m| n > *m) {
            causes.push(Cause {
                kind: CauseType::TooMany,
                field: path.to_string(),
                message: format!("Too many: {n}: must have at most {max} items"),
            });
        }
        if let Some(min) = self.min_properties.filter(|m| n < *m) {
            let v = Value::from(n);
            causes.push(invalid(path, &v, format!("{path} in body should have at least {min} properties")));
        }
        for name in &self.required {
            if map.get(name).is_none_or(Value::is_null) {
                causes.push(Cause::required(format!("{path}.{name}")));
            }
        }
        let old_map = old.and_then(Value::as_object);
        for (k, v) in map {
            if let Some(s) = self.field(k) {
                s.check(v, old_map.and_then(|m| m.get(k)), &format!("{path}.{k}"), causes);
            }
        }
    }

    /// Every node of the schema with CEL rules, for checking that the rules compile.
    fn each_rule(&self) -> Vec<&Rule> {
        let mut out: Vec<&Rule> = self.rules.iter().collect();
        for s in self.properties.values() {
            out.extend(s.each_rule());
        }
        if let Some(s) = &self.items {
            out.extend(s.each_rule());
        }
        if let Some(Some(s)) = &self.additional {
            out.extend(s.each_rule());
        }
        out
    }

    /// How many CEL rules the schema carries.
    pub fn rule_count(&self) -> usize {
        self.each_rule().len()
    }
}

/// Whether a null stays where the schema (if any) says it may.
fn known_null(schema: Option<&Schema>) -> bool {
    schema.is_some_and(|s| s.nullable)
}

/// Reads one schema node, noting what makes it not structural.
fn node(v: &Value, at: &str, root: bool, causes: &mut Vec<Cause>) -> Schema {
    let Some(m) = v.as_object() else {
        causes.push(Cause::invalid(at, "", "must be an object"));
        return Schema::default();
    };
    let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    let num = |k: &str| m.get(k).and_then(Value::as_f64);
    let count = |k: &str| m.get(k).and_then(Value::as_u64);
    let mut s = Schema {
        type_: text("type"),
        required: m
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        enum_: m.get("enum").and_then(Value::as_array).cloned().unwrap_or_default(),
        format: text("format"),
        minimum: num("minimum"),
        maximum: num("maximum"),
        exclusive_minimum: flag("exclusiveMinimum"),
        exclusive_maximum: flag("exclusiveMaximum"),
        multiple_of: num("multipleOf"),
        min_length: count("minLength"),
        max_length: count("maxLength"),
        min_items: count("minItems"),
        max_items: count("maxItems"),
        min_properties: count("minProperties"),
        max_properties: count("maxProperties"),
        nullable: flag("nullable"),
        default: m.get("default").cloned(),
        preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
        int_or_string: flag("x-kubernetes-int-or-string"),
        embedded_resource: flag("x-kubernetes-embedded-resource"),
        list_type: text("x-kubernetes-list-type"),
        list_map_keys: m
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        ..Schema::default()
    };
    if !s.type_.is_empty() && !TYPES.contains(&s.type_.as_str()) {
        causes.push(Cause::not_supported(format!("{at}.type"), &s.type_, &TYPES));
    }
    if s.type_.is_empty() && !s.int_or_string && !s.preserve_unknown && !root {
        causes.push(Cause::required(format!("{at}.type")));
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(p) {
            Ok(regex) => s.pattern = Some(Pattern { source: p.to_string(), regex }),
            Err(e) => causes.push(Cause::invalid(
                format!("{at}.pattern"),
                p,
                &format!("must be a valid regular expression: {e}"),
            )),
        }
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        if !s.type_.is_empty() && s.type_ != "object" {
            causes.push(Cause::invalid(format!("{at}.properties"), "", "must only be used with type: object"));
        }
        for (k, p) in props {
            s.properties.insert(k.clone(), node(p, &format!("{at}.properties[{k}]"), false, causes));
        }
    }
    match m.get("additionalProperties") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => s.additional = Some(None),
        Some(a) => s.additional = Some(Some(Box::new(node(a, &format!("{at}.additionalProperties"), false, causes)))),
    }
    if s.additional.is_some() && !s.properties.is_empty() {
        causes.push(Cause {
            kind: CauseType::Forbidden,
            field: format!("{at}.additionalProperties"),
            message: "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        });
    }
    match m.get("items") {
        Some(i) => s.items = Some(Box::new(node(i, &format!("{at}.items"), false, causes))),
        None if s.type_ == "array" => causes.push(Cause::required(format!("{at}.items"))),
        None => {}
    }
    if !s.list_type.is_empty() && !LIST_TYPES.contains(&s.list_type.as_str()) {
        causes.push(Cause::not_supported(format!("{at}.x-kubernetes-list-type"), &s.list_type, &LIST_TYPES));
    }
    if s.list_type == "map" && s.list_map_keys.is_empty() {
        causes.push(Cause::required(format!("{at}.x-kubernetes-list-map-keys")));
    }
    for (key, list) in [("allOf", &mut s.all_of), ("anyOf", &mut s.any_of), ("oneOf", &mut s.one_of)] {
        if let Some(subs) = m.get(key).and_then(Value::as_array) {
            for (i, sub) in subs.iter().enumerate() {
                list.push(value_node(sub, &format!("{at}.{key}[{i}]"), causes));
            }
        }
    }
    if let Some(not) = m.get("not") {
        s.not = Some(Box::new(value_node(not, &format!("{at}.not"), causes)));
    }
    if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
        for (i, r) in rules.iter().enumerate() {
            match Rule::parse(r, &format!("{at}.x-kubernetes-validations[{i}]")) {
                Ok(rule) => s.rules.push(rule),
                Err(c) => causes.push(c),
            }
        }
    }
    s
}

/// A node of `allOf`/`anyOf`/`oneOf`/`not`: value validations only, so no type is required.
fn value_node(v: &Value, at: &str, causes: &mut Vec<Cause>) -> Schema {
    let mut inner = Vec::new();
    let s = node(v, at, true, &mut inner);
    causes.extend(inner);
    s
}

/// The JSON type of a value, as OpenAPI names it (what `Invalid value: "string"` shows).
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"`.
fn type_error(path: &str, value: &Value, expected: &str) -> Cause {
    let given = json_type(value);
    Cause::invalid(path, given, &format!("{path} in body must be of type {expected}: {given:?}"))
}

/// An `Invalid value` cause showing the value as Go's validation does (strings quoted, numbers bare).
fn invalid(path: &str, value: &Value, detail: String) -> Cause {
    Cause { kind: CauseType::Invalid, field: path.to_string(), message: format!("Invalid value: {value}: {detail}") }
}

/// A value as `Unsupported value` lists it: strings without JSON's quotes (the cause quotes them).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `1` rather than `1.0` for whole bounds.
fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

/// The string formats kube-apiserver checks (others are accepted as any string, as there).
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok(),
        "uuid" => {
            let b = s.as_bytes();
            b.len() == 36
                && b.iter().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => *c == b'-',
                    _ => c.is_ascii_hexdigit(),
                })
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
        }),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "int32" | "int64" | "float" | "double" => s.parse::<f64>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn widget() -> Schema {
        Schema::parse(
            &json!({
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "string", "enum": ["small", "large"]},
                            "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                            "port": {"x-kubernetes-int-or-string": true},
                            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            "when": {"type": "string", "format": "date-time"},
                            "note": {"type": "string", "nullable": true}
                        }
                    },
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                }
            }),
            "spec.versions[0].schema.openAPIV3Schema",
        )
        .unwrap()
    }

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported() {
        let s = widget();
        let mut o = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "x": 1},
            "spec": {"size": "small", "colour": "red", "labels": {"a": "b"}, "extra": {"any": {"thing": 1}},
                     "note": null, "name": null},
            "top": 1});
        let unknown = s.prune(&mut o);
        assert_eq!(unknown, ["spec.colour", "top"]);
        assert_eq!(
            o["spec"],
            json!({"size": "small", "labels": {"a": "b"}, "extra": {"any": {"thing": 1}}, "note": null})
        );
        assert_eq!(o["metadata"]["x"], 1, "metadata is the server's to check");
    }

    #[test]
    fn defaults_fill_absent_fields() {
        let s = widget();
        let mut o = json!({"spec": {"size": "small"}});
        s.fill_defaults(&mut o);
        assert_eq!(o["spec"]["replicas"], 1);
        let mut o = json!({"spec": {"size": "small", "replicas": 3}});
        s.fill_defaults(&mut o);
        assert_eq!(o["spec"]["replicas"], 3);
    }

    #[test]
    fn validation_reads_like_kube_apiserver() {
        let s = widget();
        let o = json!({"spec": {"size": "huge", "replicas": "three", "name": "ABCDEFGHIJ", "port": 1.5,
            "tags": ["a", "a"], "labels": {"a": 1}, "when": "yesterday"}});
        let got = fields(&s.validate(&o, None));
        assert_eq!(
            got,
            [
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
                "spec.name: Too long: may not be more than 8 bytes",
                "spec.name: Invalid value: \"ABCDEFGHIJ\": spec.name in body should match '^[a-z]+$'",
                "spec.port: Invalid value: \"number\": spec.port in body must be of type integer,string: \"number\"",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\"",
                "spec.tags[1]: Duplicate value: \"a\"",
                "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            ]
        );
        let got = fields(&s.validate(&json!({"spec": {"replicas": 0, "port": "http"}}), None));
        assert_eq!(
            got,
            [
                "spec.size: Required value",
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            ]
        );
        assert!(s.validate(&json!({"spec": {"size": "large", "replicas": 10, "port": 80}}), None).is_empty());
    }

    #[test]
    fn schemas_must_be_structural() {
        let at = "s";
        let untyped = json!({"type": "object", "properties": {"a": {"properties": {}}}});
        assert_eq!(fields(&Schema::parse(&untyped, at).unwrap_err()), ["s.properties[a].type: Required value"]);
        let both = json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}},
            "additionalProperties": {"type": "string"}}}});
        assert!(fields(&Schema::parse(&both, at).unwrap_err())[0].contains("mutual exclusive"));
        let list = json!({"type": "object", "properties": {"a": {"type": "array"}}});
        assert_eq!(fields(&Schema::parse(&list, at).unwrap_err()), ["s.properties[a].items: Required value"]);
        let pattern = json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}});
        assert!(Schema::parse(&pattern, at).is_err());
        assert!(Schema::parse(&json!({"type": "string"}), at).is_err());
        assert!(Schema::parse(&json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}), at).is_ok());
    }

    #[test]
    fn list_maps_are_keyed() {
        let s = Schema::parse(
            &json!({"type": "object", "properties": {"ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}}),
            "s",
        )
        .unwrap();
        let o = json!({"ports": [{"name": "a", "port": 1}, {"name": "a", "port": 2}]});
        assert_eq!(fields(&s.validate(&o, None)), ["ports[1]: Duplicate value: \"{\\\"name\\\":\\\"a\\\"}\""]);
    }
}
