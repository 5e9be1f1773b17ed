//! Sets of field paths, as `metadata.managedFields` records them (`fieldsType: FieldsV1`): `f:<name>` for a
//! field of an object, `k:{"name":"web"}` for the item of a keyed list, `v:"x"` for the item of a set, `.`
//! for a node that is itself in the set and has members below it. Which lists are keyed, sets or atomic is
//! the [`Shape`]'s: Kubernetes' OpenAPI extensions for built-in kinds (the strategic-merge table), the
//! CRD's schema for custom ones.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::custom::Schema;
use crate::strategic_merge::{self, Strategy};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    /// A field of an object (or a key of a map).
    Field(String),
    /// An item of a keyed list, by its key fields (`{"name":"web"}`, keys in order).
    Key(String),
    /// An item of a set, by its value (JSON).
    Value(String),
}

impl Element {
    fn encode(&self) -> String {
        match self {
            Element::Field(f) => format!("f:{f}"),
            Element::Key(k) => format!("k:{k}"),
            Element::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(s: &str) -> Option<Element> {
        let (kind, rest) = s.split_at_checked(2)?;
        match kind {
            "f:" => Some(Element::Field(rest.to_string())),
            "k:" => Some(Element::Key(rest.to_string())),
            "v:" => Some(Element::Value(rest.to_string())),
            _ => None,
        }
    }

    /// `.spec.replicas`, `[name="web"]`: how conflicts name a path.
    fn show(&self) -> String {
        match self {
            Element::Field(f) => format!(".{f}"),
            Element::Key(k) => {
                let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Element::Value(v) => format!("[{v}]"),
        }
    }
}

/// A path from the object's root.
pub type Path = Vec<Element>;

/// Shows a path as kube-apiserver's conflicts do: `.spec.template.spec.containers[name="web"].image`.
pub fn show(path: &[Element]) -> String {
    path.iter().map(Element::show).collect()
}

/// A set of paths, as a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    children: BTreeMap<Element, Node>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// The path to this node is itself in the set.
    member: bool,
    below: FieldSet,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[Element]) {
        let Some((first, rest)) = path.split_first() else { return };
        let node = self.children.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.below.insert(rest);
        }
    }

    pub fn contains(&self, path: &[Element]) -> bool {
        let Some((first, rest)) = path.split_first() else { return false };
        match self.children.get(first) {
            Some(n) if rest.is_empty() => n.member,
            Some(n) => n.below.contains(rest),
            None => false,
        }
    }

    /// Whether the set has members below `path` (a keyed item with fields, an object with fields).
    pub fn has_below(&self, path: &[Element]) -> bool {
        let Some((first, rest)) = path.split_first() else { return !self.is_empty() };
        self.children.get(first).is_some_and(|n| n.below.has_below(rest))
    }

    /// Every member path.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        for (e, n) in &self.children {
            if n.member {
                out.push(vec![e.clone()]);
            }
            for mut p in n.below.paths() {
                p.insert(0, e.clone());
                out.push(p);
            }
        }
        out
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for p in other.paths() {
            out.insert(&p);
        }
        out
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for p in self.paths().into_iter().filter(|p| !other.contains(p)) {
            out.insert(&p);
        }
        out
    }

    /// The set as `fieldsV1`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (e, n) in &self.children {
            let mut inner = match n.below.to_json() {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            if n.member && !inner.is_empty() {
                inner.insert(".".into(), json!({}));
            }
            m.insert(e.encode(), Value::Object(inner));
        }
        Value::Object(m)
    }

    /// Reads `fieldsV1` (what cannot be read is left out).
    pub fn from_json(v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        for (k, inner) in v.as_object().into_iter().flatten() {
            let Some(e) = Element::decode(k) else { continue };
            let below = FieldSet::from_json(inner);
            let empty = inner.as_object().is_none_or(|m| m.is_empty());
            let member = empty || inner.get(".").is_some();
            out.children.insert(e, Node { member, below });
        }
        out
    }
}

/// How a list merges and is tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole, owned whole.
    Atomic,
    /// Items are values; each is owned on its own.
    Set,
    /// Items are objects told apart by these fields.
    Map(Vec<MapKey>),
}

/// One field that tells a map-list's items apart, with the value it has when an item leaves it out (its
/// schema's default: `protocol` is "TCP" in a port that names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapKey {
    pub name: String,
    pub default: Option<Value>,
}

impl MapKey {
    fn named(name: &str) -> MapKey {
        MapKey { name: name.to_string(), default: None }
    }
}

/// The keys of a built-in map-list as Kubernetes' OpenAPI gives them (`x-kubernetes-list-map-keys`), where
/// they are more than the strategic-merge key: ports are told apart by number and protocol.
fn builtin_keys(ty: &str, name: &str, merge_key: &str) -> Vec<MapKey> {
    let protocol = MapKey { name: "protocol".into(), default: Some(Value::String("TCP".into())) };
    match (ty, name) {
        ("Container", "ports") | ("ServiceSpec", "ports") => vec![MapKey::named(merge_key), protocol],
        ("PodSpec", "topologySpreadConstraints") => vec![MapKey::named(merge_key), MapKey::named("whenUnsatisfiable")],
        _ => vec![MapKey::named(merge_key)],
    }
}

/// What is known of the type at a point of an object.
#[derive(Debug, Clone, Copy)]
pub enum Shape<'a> {
    /// A built-in kind: the Go type's name in the strategic-merge table ("" where it says nothing).
    Builtin(&'static str),
    /// A custom kind: its schema's node (`None` below preserved unknown fields).
    Custom(Option<&'a Schema>),
}

impl<'a> Shape<'a> {
    /// The shape of field `name` of an object of this shape, and how that field merges if it is a list.
    pub fn field(&self, name: &str) -> (Shape<'a>, ListType) {
        match self {
            Shape::Builtin(ty) => {
                let (child, strategy) = strategic_merge::field(ty, name);
                let list = match strategy {
                    Strategy::Replace => ListType::Atomic,
                    Strategy::MergePrimitives => ListType::Set,
                    Strategy::MergeByKey(k) => ListType::Map(builtin_keys(ty, name, k)),
                };
                (Shape::Builtin(child), list)
            }
            Shape::Custom(schema) => {
                let child = schema.and_then(|s| s.field(name));
                let list = match child.map(|c| c.list_type.as_str()) {
                    Some("set") => ListType::Set,
                    Some("map") => {
                        let item = child.and_then(|c| c.items.as_deref());
                        let keys = child.map(|c| c.list_map_keys.as_slice()).unwrap_or_default();
                        let default = |k: &str| item.and_then(|i| i.field(k)).and_then(|f| f.default.clone());
                        ListType::Map(keys.iter().map(|k| MapKey { name: k.clone(), default: default(k) }).collect())
                    }
                    _ => ListType::Atomic,
                };
                (Shape::Custom(child), list)
            }
        }
    }

    /// The shape of a list's items.
    pub fn items(&self) -> Shape<'a> {
        match self {
            Shape::Builtin(ty) => Shape::Builtin(ty),
            Shape::Custom(schema) => Shape::Custom(schema.and_then(|s| s.items.as_deref())),
        }
    }
}

/// The metadata fields that are managed (the rest are the server's).
const MANAGED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The key element of a keyed list's item (a key it leaves out has its default).
pub fn key_of(item: &Value, keys: &[MapKey]) -> Element {
    let value = |k: &MapKey| item.get(&k.name).cloned().or_else(|| k.default.clone()).unwrap_or(Value::Null);
    let m: Map<String, Value> = keys.iter().map(|k| (k.name.clone(), value(k))).collect();
    Element::Key(Value::Object(m).to_string())
}

fn value_of(item: &Value) -> Element {
    Element::Value(item.to_string())
}

/// Every managed path of an object (`root` the kind's root shape): its fields but `apiVersion`, `kind`,
/// the server's metadata, and `status` when `with_status` is false.
pub fn of_object(object: &Value, root: Shape, with_status: bool) -> FieldSet {
    let mut out = FieldSet::default();
    for (k, v) in object.as_object().into_iter().flatten() {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if !with_status => {}
            "metadata" => {
                let (meta, _) = root.field("metadata");
                for (mk, mv) in
                    v.as_object().into_iter().flatten().filter(|(mk, _)| MANAGED_METADATA.contains(&mk.as_str()))
                {
                    let (shape, list) = meta.field(mk);
                    walk(mv, shape, &list, &mut vec![Element::Field(k.clone()), Element::Field(mk.clone())], &mut out);
                }
            }
            _ => {
                let (shape, list) = root.field(k);
                walk(v, shape, &list, &mut vec![Element::Field(k.clone())], &mut out);
            }
        }
    }
    out
}

fn walk(v: &Value, shape: Shape, list: &ListType, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let (s, l) = shape.field(k);
                path.push(Element::Field(k.clone()));
                walk(child, s, &l, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list {
            ListType::Atomic => out.insert(path),
            ListType::Set => {
                for item in items {
                    path.push(value_of(item));
                    out.insert(path);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    path.push(key_of(item, keys));
                    out.insert(path);
                    let items_shape = shape.items();
                    for (k, child) in item.as_object().into_iter().flatten() {
                        let (s, l) = items_shape.field(k);
                        path.push(Element::Field(k.clone()));
                        walk(child, s, &l, path, out);
                        path.pop();
                    }
                    path.pop();
                }
            }
        },
        _ => out.insert(path),
    }
}

/// The value at `path` in `object`, if there is one.
pub fn get<'v>(object: &'v Value, path: &[Element]) -> Option<&'v Value> {
    path.iter().try_fold(object, |v, e| match e {
        Element::Field(f) => v.get(f),
        Element::Key(k) => {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            v.as_array()?.iter().find(|item| key.iter().all(|(kk, kv)| item.get(kk).unwrap_or(&Value::Null) == kv))
        }
        Element::Value(s) => {
            let want: Value = serde_json::from_str(s).ok()?;
            v.as_array()?.iter().find(|item| **item == want)
        }
    })
}

/// Removes the value at `path` from `object` (a field, a keyed item, a set item).
pub fn remove(object: &mut Value, path: &[Element]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = object;
    for e in parents {
        let next = match e {
            Element::Field(f) => at.get_mut(f),
            Element::Key(_) | Element::Value(_) => {
                let i = position(at, e);
                match i {
                    Some(i) => at.get_mut(i),
                    None => None,
                }
            }
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    match last {
        Element::Field(f) => {
            if let Some(m) = at.as_object_mut() {
                m.remove(f);
            }
        }
        e => {
            if let Some(i) = position(at, e) {
                if let Some(items) = at.as_array_mut() {
                    items.remove(i);
                }
            }
        }
    }
}

fn position(list: &Value, e: &Element) -> Option<usize> {
    let items = list.as_array()?;
    match e {
        Element::Key(k) => {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            items.iter().position(|item| key.iter().all(|(kk, kv)| item.get(kk).unwrap_or(&Value::Null) == kv))
        }
        Element::Value(s) => {
            let want: Value = serde_json::from_str(s).ok()?;
            items.iter().position(|item| *item == want)
        }
        Element::Field(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "uid": "u", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "httpd", "args": ["-x"]}]}}},
            "status": {"replicas": 2}})
    }

    #[test]
    fn sets_round_trip_through_fields_v1() {
        let set = of_object(&deployment(), Shape::Builtin("Deployment"), false);
        let v1 = set.to_json();
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert_eq!(v1["f:metadata"]["f:finalizers"]["v:\"a\""], json!({}));
        let container = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(container["."], json!({}));
        assert_eq!(container["f:args"], json!({}), "atomic list owned whole");
        assert!(v1.get("f:status").is_none() && v1["f:metadata"].get("f:uid").is_none());
        assert_eq!(FieldSet::from_json(&v1), set);
        let image = vec![
            Element::Field("spec".into()),
            Element::Field("template".into()),
            Element::Field("spec".into()),
            Element::Field("containers".into()),
            Element::Key("{\"name\":\"web\"}".into()),
            Element::Field("image".into()),
        ];
        assert!(set.contains(&image));
        assert_eq!(get(&deployment(), &image), Some(&json!("httpd")));
        assert_eq!(show(&image), ".spec.template.spec.containers[name=\"web\"].image");
        let mut d = deployment();
        remove(&mut d, &image[..5]);
        assert_eq!(d["spec"]["template"]["spec"]["containers"], json!([]));
    }

    #[test]
    fn set_algebra() {
        let a = of_object(&json!({"spec": {"a": 1, "b": 2}}), Shape::Builtin(""), true);
        let b = of_object(&json!({"spec": {"b": 3, "c": 4}}), Shape::Builtin(""), true);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert_eq!(show(&a.difference(&b).paths()[0]), ".spec.a");
    }

    #[test]
    fn a_map_key_an_item_leaves_out_has_its_default() {
        let (_, list) = Shape::Builtin("ServiceSpec").field("ports");
        assert_eq!(
            key_of(&json!({"port": 53}), &keys(&list)),
            key_of(&json!({"port": 53, "protocol": "TCP"}), &keys(&list))
        );
        assert_ne!(
            key_of(&json!({"port": 53}), &keys(&list)),
            key_of(&json!({"port": 53, "protocol": "UDP"}), &keys(&list))
        );
        let (_, spread) = Shape::Builtin("PodSpec").field("topologySpreadConstraints");
        let names: Vec<String> = keys(&spread).into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["topologyKey", "whenUnsatisfiable"]);
        let schema = crate::custom::schema::Schema::parse(
            &json!({"type": "object", "properties": {"rules": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name", "zone"], "items": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "zone": {"type": "string", "default": "a"}}}}}}),
            "",
        )
        .unwrap();
        let (_, list) = Shape::Custom(Some(&schema)).field("rules");
        assert_eq!(key_of(&json!({"name": "x"}), &keys(&list)), Element::Key(r#"{"name":"x","zone":"a"}"#.into()));
    }

    fn keys(list: &ListType) -> Vec<MapKey> {
        match list {
            ListType::Map(keys) => keys.clone(),
            other => panic!("not a map-list: {other:?}"),
        }
    }
}
