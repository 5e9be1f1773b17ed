//! Decoded messages rendered as the JSON of Kubernetes' Go types.

use base64::Engine;
use prost_reflect::{DynamicMessage, FieldDescriptor, MapKey, ReflectMessage, Value};
use serde_json::{Map, Value as Json};

use crate::schema::{short_name, Schema};
use crate::time;

/// Messages with a JSON form of their own (Go types with custom marshalling).
pub(crate) fn message(schema: &Schema, message: &DynamicMessage) -> Result<Json, String> {
    let descriptor = message.descriptor();
    match short_name(descriptor.full_name()) {
        "api.resource.Quantity" => Ok(Json::String(match string(message, "string") {
            s if s.is_empty() => "0".into(),
            s => s,
        })),
        "util.intstr.IntOrString" => Ok(if int(message, "type") == 1 {
            Json::String(string(message, "strVal"))
        } else {
            Json::from(int(message, "intVal"))
        }),
        "meta.v1.Time" => Ok(timestamp(message, time::rfc3339_seconds)),
        "meta.v1.MicroTime" => Ok(timestamp(message, time::rfc3339_micros)),
        "meta.v1.Duration" => Ok(Json::String(time::go_duration(int(message, "duration")))),
        "meta.v1.FieldsV1" => raw_json(&bytes(message, "Raw")),
        "runtime.RawExtension" => raw_json(&bytes(message, "raw")),
        "meta.v1.Verbs" | "authentication.v1.ExtraValue" | "authorization.v1.ExtraValue" => {
            match message.get_field_by_name("items").as_deref() {
                Some(list @ Value::List(_)) => value(schema, list),
                _ => Ok(Json::Array(Vec::new())),
            }
        }
        _ => object(schema, message).map(Json::Object),
    }
}

/// A plain message: its present fields, by JSON name.
fn object(schema: &Schema, message: &DynamicMessage) -> Result<Map<String, Json>, String> {
    let descriptor = message.descriptor();
    let mut map = Map::new();
    for field in descriptor.fields() {
        if !message.has_field(&field) {
            if field.is_list() && schema.keeps_zero(&descriptor, field.name()) {
                map.insert(json_name(&descriptor, &field), Json::Null);
            }
            continue;
        }
        let present = message.get_field(&field);
        if schema.is_inline(&descriptor, field.name()) {
            if let Value::Message(embedded) = present.as_ref() {
                map.extend(object(schema, embedded)?);
            }
            continue;
        }
        if is_zero_scalar(&field, &present) && !schema.keeps_zero(&descriptor, field.name()) {
            continue;
        }
        let rendered = value(schema, &present).map_err(|e| format!("{}: {e}", field.name()))?;
        map.insert(json_name(&descriptor, &field), rendered);
    }
    Ok(map)
}

fn value(schema: &Schema, value: &Value) -> Result<Json, String> {
    Ok(match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(n) => float(f64::from(*n))?,
        Value::F64(n) => float(*n)?,
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::EnumNumber(n) => Json::from(*n),
        Value::Message(m) => message(schema, m)?,
        Value::List(items) => {
            Json::Array(items.iter().map(|item| self::value(schema, item)).collect::<Result<_, _>>()?)
        }
        Value::Map(entries) => {
            let mut map = Map::new();
            for (key, entry) in entries {
                map.insert(map_key(key), self::value(schema, entry)?);
            }
            Json::Object(map)
        }
    })
}

fn float(n: f64) -> Result<Json, String> {
    serde_json::Number::from_f64(n).map(Json::Number).ok_or_else(|| format!("{n} has no JSON form"))
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

/// Zero scalars, which Go's JSON omits unless the field is a pointer or has no `omitempty`.
fn is_zero_scalar(field: &FieldDescriptor, value: &Value) -> bool {
    if field.is_list() || field.is_map() {
        return false;
    }
    match value {
        Value::Bool(b) => !b,
        Value::I32(n) => *n == 0,
        Value::I64(n) => *n == 0,
        Value::U32(n) => *n == 0,
        Value::U64(n) => *n == 0,
        Value::F32(n) => *n == 0.0,
        Value::F64(n) => *n == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        Value::EnumNumber(n) => *n == 0,
        Value::Message(_) | Value::List(_) | Value::Map(_) => false,
    }
}

/// Field names are the JSON names, except where JSON uses characters proto names cannot
/// (apiextensions' `$ref`, `$schema` and `x-kubernetes-*`).
fn json_name(message: &prost_reflect::MessageDescriptor, field: &FieldDescriptor) -> String {
    let name = field.name();
    if !short_name(message.full_name()).ends_with(".JSONSchemaProps") {
        return name.to_owned();
    }
    match name {
        "ref" => "$ref".into(),
        "schema" => "$schema".into(),
        _ => match name.strip_prefix("xKubernetes") {
            Some(rest) => {
                let mut kebab = String::from("x-kubernetes");
                for c in rest.chars() {
                    if c.is_ascii_uppercase() {
                        kebab.push('-');
                    }
                    kebab.push(c.to_ascii_lowercase());
                }
                kebab
            }
            None => name.to_owned(),
        },
    }
}

/// A `Time`/`MicroTime`: null when unset (Go's zero time), else formatted.
fn timestamp(message: &DynamicMessage, format: fn(i64, i32) -> Option<String>) -> Json {
    if !has(message, "seconds") && !has(message, "nanos") {
        return Json::Null;
    }
    let nanos = i32::try_from(int(message, "nanos")).unwrap_or(0);
    format(int(message, "seconds"), nanos).map_or(Json::Null, Json::String)
}

/// Raw bytes holding an embedded object: JSON, or a nested Kubernetes protobuf body.
fn raw_json(raw: &[u8]) -> Result<Json, String> {
    if raw.is_empty() {
        return Ok(Json::Null);
    }
    if raw.starts_with(crate::PREFIX) {
        return crate::decode(raw).map_err(|e| e.to_string());
    }
    serde_json::from_slice(raw).map_err(|e| format!("embedded object is neither JSON nor protobuf: {e}"))
}

fn has(message: &DynamicMessage, name: &str) -> bool {
    message.descriptor().get_field_by_name(name).is_some_and(|f| message.has_field(&f))
}

fn string(message: &DynamicMessage, name: &str) -> String {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn bytes(message: &DynamicMessage, name: &str) -> Vec<u8> {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    }
}

fn int(message: &DynamicMessage, name: &str) -> i64 {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::I32(n)) => i64::from(*n),
        Some(Value::I64(n)) => *n,
        _ => 0,
    }
}
