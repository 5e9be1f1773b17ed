//! A custom resource's table: NAME, then its version's `additionalPrinterColumns` (AGE when it names
//! none), each cell read from the object with the column's JSONPath, as kube-apiserver's table convertor
//! for custom resources fills them.

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::validation::Cause;

/// One of `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// "integer", "number", "string", "boolean" or "date".
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: Path,
}

pub const COLUMN_TYPES: [&str; 5] = ["integer", "number", "string", "boolean", "date"];

impl Column {
    /// Reads a version's columns (the default AGE column when there are none).
    pub fn parse_all(columns: Option<&Value>, at: &str) -> Result<Vec<Column>, Vec<Cause>> {
        let Some(list) = columns.and_then(Value::as_array).filter(|l| !l.is_empty()) else {
            return Ok(vec![Column {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: Path::parse(".metadata.creationTimestamp").unwrap_or_default(),
            }]);
        };
        let mut causes = Vec::new();
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let (name, type_, path) = (text("name"), text("type"), text("jsonPath"));
            if name.is_empty() {
                causes.push(Cause::required(format!("{at}.name")));
            }
            if !COLUMN_TYPES.contains(&type_.as_str()) {
                causes.push(Cause::not_supported(format!("{at}.type"), &type_, &COLUMN_TYPES));
            }
            let json_path = match Path::parse(&path) {
                Ok(p) => p,
                Err(e) => {
                    causes.push(Cause::invalid(format!("{at}.jsonPath"), &path, &e));
                    continue;
                }
            };
            out.push(Column {
                name,
                type_,
                format: text("format"),
                description: text("description"),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path,
            });
        }
        if causes.is_empty() {
            Ok(out)
        } else {
            Err(causes)
        }
    }
}

/// The `columnDefinitions` of a custom resource's table.
pub fn definitions(columns: &[Column]) -> Vec<Value> {
    let name = json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"});
    std::iter::once(name)
        .chain(columns.iter().map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description,
                "priority": c.priority})
        }))
        .collect()
}

/// One object's cells.
pub fn cells(columns: &[Column], object: &Value, now: Timestamp) -> Vec<Value> {
    let name = object.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    std::iter::once(name).chain(columns.iter().map(|c| cell(c, object, now))).collect()
}

fn cell(column: &Column, object: &Value, now: Timestamp) -> Value {
    let found = column.json_path.find(object);
    let Some(first) = found.first() else { return Value::Null };
    match column.type_.as_str() {
        "date" => match first.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
            Some(t) => json!(crate::table::since(Some(t), now)),
            None => Value::Null,
        },
        "integer" | "number" | "boolean" if found.len() == 1 => (*first).clone(),
        _ => {
            let shown: Vec<String> = found
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            json!(shown.join(","))
        }
    }
}

/// A JSONPath as printer columns and scale subresources write them: `.spec.replicas`,
/// `.status.conditions[0].type`, `.items[*].name`, `.status.conditions[?(@.type=="Ready")].status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Path(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.<field> == "<value>")]` (or `!=`).
    Filter {
        field: Vec<String>,
        equal: bool,
        value: Value,
    },
}

impl Path {
    /// Reads a path (optionally wrapped in `{…}`); the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Path, String> {
        let t = text.trim();
        let t = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(t).trim();
        if !t.starts_with('.') {
            return Err("must be a simple JSON path starting with a dot".into());
        }
        let mut steps = Vec::new();
        let mut rest = t;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(format!("unexpected {:?}", &r[..1.min(r.len())]));
                }
                steps.push(Step::Field(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or("unclosed [")?;
                let inner = r[..end].trim();
                // A filter may hold `]` in its quoted value only if it ends with `)]`.
                let (inner, after) = if inner.starts_with("?(") {
                    let close = r.find(")]").ok_or("unclosed filter")?;
                    (&r[..close + 1], &r[close + 2..])
                } else {
                    (inner, &r[end + 1..])
                };
                steps.push(bracket(inner)?);
                rest = after;
            } else {
                return Err(format!("unexpected {:?}", &rest[..1]));
            }
        }
        Ok(Path(steps))
    }

    /// Every value the path reaches in `v`.
    pub fn find<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(f) => next.extend(v.get(f)),
                    Step::Index(i) => next.extend(v.get(*i)),
                    Step::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter { field, equal, value } => {
                        for item in v.as_array().into_iter().flatten() {
                            let got = field.iter().try_fold(item, |v, f| v.get(f));
                            if (got == Some(value)) == *equal {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            current = next;
        }
        current
    }

    /// The path as JSON pointer segments, if it is only field names (for scale's replicas paths).
    pub fn fields(&self) -> Option<Vec<&str>> {
        self.0
            .iter()
            .map(|s| match s {
                Step::Field(f) => Some(f.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Ok(i) = inner.parse() {
        return Ok(Step::Index(i));
    }
    let body = inner.strip_prefix("?(").and_then(|b| b.strip_suffix(')')).ok_or(format!("unsupported [{inner}]"))?;
    let (lhs, equal, rhs) = match (body.split_once("=="), body.split_once("!=")) {
        (Some((l, r)), _) => (l, true, r),
        (None, Some((l, r))) => (l, false, r),
        _ => return Err(format!("unsupported filter {body:?}")),
    };
    let field = lhs.trim().strip_prefix("@.").ok_or(format!("a filter must compare @.<field>: {body:?}"))?;
    let rhs = rhs.trim();
    let value = if let Some(s) = rhs.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Value::String(s.to_string())
    } else if let Some(s) = rhs.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Value::String(s.to_string())
    } else {
        serde_json::from_str(rhs).map_err(|_| format!("unsupported value {rhs:?}"))?
    };
    Ok(Step::Filter { field: field.split('.').map(str::to_string).collect(), equal, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_fields_items_and_filtered_items() {
        let o = json!({"spec": {"replicas": 3}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        let p = |s: &str| Path::parse(s).unwrap();
        assert_eq!(p(".spec.replicas").find(&o), [&json!(3)]);
        assert_eq!(p("{.status.conditions[1].type}").find(&o), [&json!("Synced")]);
        assert_eq!(p(".status.conditions[?(@.type==\"Ready\")].status").find(&o), [&json!("True")]);
        assert_eq!(p(".status.conditions[?(@.type != 'Ready')].status").find(&o), [&json!("False")]);
        assert_eq!(p(".status.conditions[*].type").find(&o).len(), 2);
        assert!(p(".spec.missing").find(&o).is_empty());
        assert_eq!(p(".spec.replicas").fields(), Some(vec!["spec", "replicas"]));
        assert!(Path::parse("spec").is_err() && Path::parse(".a[").is_err());
    }

    #[test]
    fn cells_follow_the_columns_types() {
        let cols = Column::parse_all(
            Some(&json!([
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                {"name": "Size", "type": "string", "jsonPath": ".spec.size", "priority": 1},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ])),
            "c",
        )
        .unwrap();
        let now: Timestamp = "2026-12-07T12:05:00Z".parse().unwrap();
        let o =
            json!({"metadata": {"name": "w", "creationTimestamp": "2026-12-07T12:00:00Z"}, "spec": {"replicas": 2}});
        assert_eq!(cells(&cols, &o, now), [json!("w"), json!(2), Value::Null, json!("5m")]);
        assert_eq!(definitions(&cols).len(), 4);
        let default = Column::parse_all(None, "c").unwrap();
        assert_eq!(cells(&default, &o, now), [json!("w"), json!("5m")]);
        let bad = Column::parse_all(Some(&json!([{"name": "X", "type": "map", "jsonPath": "spec"}])), "c").unwrap_err();
        assert_eq!(bad.len(), 2);
    }
}
