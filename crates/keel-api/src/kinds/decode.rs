//! Decoding an object as its k8s-openapi type, with a deserializer over the JSON value that knows where it
//! is: a type error names the field it happened at (`spec.containers[0].ports`), the fields the type does
//! not know (which k8s-openapi skips as `IgnoredAny`) are collected for strict field validation, and
//! quantities are parsed as the API server parses them. `null` reads as Go reads it: an absent value.

use std::cell::RefCell;
use std::fmt;

use k8s_openapi::serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use k8s_openapi::serde::{forward_to_deserialize_any, Deserialize};
use serde_json::Value;

use crate::quantity::Quantity;

/// Where in the object the deserializer is.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A decoding error and the path of the field it happened at (set by the innermost field that saw it).
#[derive(Debug)]
struct Error {
    path: Option<String>,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_deref() {
            Some(p) if !p.is_empty() => write!(f, "{p}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error { path: None, message: msg.to_string() }
    }
}

/// Decodes `object` as `T`: the paths of the fields `T` does not know, or the error with its path.
pub fn decode_as<'de, T: Deserialize<'de>>(object: &'de Value) -> Result<Vec<String>, String> {
    let unknown = RefCell::new(Vec::new());
    let de = Tracked { value: object, path: &Path::Root, unknown: &unknown };
    T::deserialize(de).map_err(|e| e.to_string())?;
    Ok(unknown.into_inner())
}

struct Tracked<'de, 'a> {
    value: &'de Value,
    path: &'a Path<'a>,
    unknown: &'a RefCell<Vec<String>>,
}

/// Gives an error that has no path yet the one it surfaced at.
fn locate<T>(path: &Path<'_>, r: Result<T, Error>) -> Result<T, Error> {
    r.map_err(|mut e| {
        if e.path.is_none() {
            e.path = Some(path.to_string());
        }
        e
    })
}

impl<'de> Deserializer<'de> for Tracked<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(de::Error::custom(format!("invalid number {n}"))),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = Seq { items, next: 0, path: self.path, unknown: self.unknown };
                visitor.visit_seq(&mut seq)
            }
            Value::Object(map) => {
                visitor.visit_map(Fields { iter: map.iter(), pending: None, path: self.path, unknown: self.unknown })
            }
        };
        locate(self.path, r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            let path = self.path;
            let r = visitor.visit_some(self);
            locate(path, r)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        if name == "Quantity" {
            if let Value::String(s) = self.value {
                if let Err(e) = Quantity::parse(s) {
                    return locate(self.path, Err(de::Error::custom(e)));
                }
            }
        }
        let path = self.path;
        let r = visitor.visit_newtype_struct(self);
        locate(path, r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.unknown.borrow_mut().push(self.path.to_string());
        visitor.visit_unit()
    }

    // Go leaves a field it reads `null` for at its zero value; the zero of a list, map or struct is empty.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.value.is_null() {
            return visitor.visit_seq(Seq { items: &[], next: 0, path: self.path, unknown: self.unknown });
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.value.is_null() {
            static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> = std::sync::OnceLock::new();
            let empty = EMPTY.get_or_init(serde_json::Map::new);
            return visitor.visit_map(Fields {
                iter: empty.iter(),
                pending: None,
                path: self.path,
                unknown: self.unknown,
            });
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier
    }
}

struct Seq<'de, 'a> {
    items: &'de [Value],
    next: usize,
    path: &'a Path<'a>,
    unknown: &'a RefCell<Vec<String>>,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some(value) = self.items.get(self.next) else { return Ok(None) };
        let path = Path::Index(self.path, self.next);
        self.next += 1;
        seed.deserialize(Tracked { value, path: &path, unknown: self.unknown }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct Fields<'de, 'a> {
    iter: serde_json::map::Iter<'de>,
    pending: Option<(&'de str, &'de Value)>,
    path: &'a Path<'a>,
    unknown: &'a RefCell<Vec<String>>,
}

impl<'de> MapAccess<'de> for Fields<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.iter.next() else { return Ok(None) };
        self.pending = Some((k.as_str(), v));
        seed.deserialize(de::value::BorrowedStrDeserializer::new(k.as_str())).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let Some((k, value)) = self.pending.take() else {
            return Err(de::Error::custom("value requested before its key"));
        };
        let path = Path::Field(self.path, k);
        seed.deserialize(Tracked { value, path: &path, unknown: self.unknown })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_listed_with_their_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "key"}, "extra": 1},
            "spec": {"foo": {"bar": 1}, "containers": [{"name": "c", "image": "nginx"}, {"name": "d", "imagee": "x"}]}});
        let unknown = decode_as::<Pod>(&pod).unwrap();
        assert_eq!(unknown, ["metadata.extra", "spec.containers[1].imagee", "spec.foo"]);
    }

    #[test]
    fn type_errors_name_the_field() {
        let pod = json!({"spec": {"containers": "nginx"}});
        let err = decode_as::<Pod>(&pod).unwrap_err();
        assert_eq!(err, "spec.containers: invalid type: string \"nginx\", expected a sequence");
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}});
        let err = decode_as::<Pod>(&pod).unwrap_err();
        assert!(err.starts_with("spec.containers[0].ports[0].containerPort: invalid type: string \"80\""), "{err}");
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1e20}]}]}});
        assert!(decode_as::<Pod>(&pod).unwrap_err().starts_with("spec.containers[0].ports[0].containerPort: invalid"));
        let pod = json!({"kind": "Service"});
        assert_eq!(decode_as::<Pod>(&pod).unwrap_err(), "invalid value: string \"Service\", expected Pod");
    }

    #[test]
    fn quantities_are_parsed() {
        let pod = |q: Value| json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": q}}}]}});
        assert!(decode_as::<Pod>(&pod(json!("500m"))).is_ok());
        assert!(decode_as::<Pod>(&pod(json!(2))).is_ok());
        let err = decode_as::<Pod>(&pod(json!("5 cores"))).unwrap_err();
        assert!(err.starts_with("spec.containers[0].resources.limits.cpu: quantities must match"), "{err}");
    }

    #[test]
    fn nulls_read_as_absent() {
        let pod = json!({"metadata": null, "spec": {"containers": null, "nodeSelector": null, "hostNetwork": null}});
        assert_eq!(decode_as::<Pod>(&pod).unwrap(), Vec::<String>::new());
        let secret = json!({"data": {"a": "aGk="}, "immutable": true});
        assert!(decode_as::<k8s_openapi::api::core::v1::Secret>(&secret).is_ok());
        let secret = json!({"data": {"a": "not base64!"}});
        assert!(decode_as::<k8s_openapi::api::core::v1::Secret>(&secret).unwrap_err().starts_with("data.a: "));
    }
}
