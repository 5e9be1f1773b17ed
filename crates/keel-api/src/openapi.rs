//! The OpenAPI documents kubectl fetches before it writes: `/openapi/v3` (an index of group versions), one
//! document per group version, and an empty `/openapi/v2`.
//!
//! They are deliberately small. What kubectl 1.33 needs from them was found by probing it against a mock
//! server:
//! - With `--validate=strict` (the default) `apply`, `create` and `replace` fail unless, in the group
//!   version's v3 document, the `patch` operation of some path carries the object's kind in
//!   `x-kubernetes-group-version-kind` and lists the query parameter `fieldValidation`. Then kubectl leaves
//!   validation to the server and sends `?fieldValidation=Strict` (keel honours it). Without the parameter
//!   it validates client-side against the v2 schema.
//! - No operation has a `requestBody`: kubectl computes a strategic merge patch from the v3 schema only when
//!   the operation accepts `application/strategic-merge-patch+json`, and keel has no schemas to give. It
//!   then falls back to v2 (empty) and to its compiled-in types, which know every kind keel serves and key
//!   `containers` by `name` as they should.
//! - `components.schemas` is empty for built-in kinds, so `kubectl explain` says the kind is not found in
//!   the schema instead of failing inside a template. A custom resource's document holds its schema (with
//!   `x-kubernetes-group-version-kind`), so `kubectl explain` shows its fields.
//! - `/openapi/v2` matters only for files of `kind: List`, which kubectl validates client-side against the
//!   v2 document: a document without definitions lets it skip that (the server still validates each item).
//!   kubectl asks for it as protobuf only.

use serde_json::{json, Value};

use crate::custom::Catalog;
use crate::resources::{self, Resource};

/// The Kubernetes version the documents describe.
const KUBERNETES_VERSION: &str = "v1.33.0";

/// The `Content-Type` of [`v2_protobuf`] (kubectl fails on the `@` form it puts in its `Accept`).
pub const V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v3`: every group version served, each with the URL of its document, e.g.
/// `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, "apis/apps/v1": …}}`.
/// The hash changes with the document, so clients may cache documents by URL.
pub fn index(catalog: &Catalog) -> Value {
    let mut paths = serde_json::Map::new();
    let custom = catalog.groups().into_iter().flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v)));
    for (group, version) in resources::group_versions().into_iter().chain(custom) {
        let path = gv_path(group, version);
        let hash = group_version(catalog, group, version).map(|doc| hash(&doc)).unwrap_or_default();
        paths.insert(path.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }));
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`: the group version's document (group "" for
/// the core group), `None` if keel does not serve it.
pub fn group_version(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in resources::RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        paths.insert(object_path(r), json!({ "patch": patch_operation(r) }));
    }
    for r in catalog.resources().filter(|r| r.group == group && r.version == version) {
        paths.insert(object_path(r), json!({ "patch": patch_operation(r) }));
        if let Some(served) = catalog.of(r) {
            schemas.insert(schema_name(r), custom_schema(r, &served.openapi));
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

/// `com.example.v1.Widget`: the name Kubernetes gives a custom kind's schema (the group reversed).
fn schema_name(r: &Resource) -> String {
    let group: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), r.version, r.kind)
}

/// A custom kind's schema as kube-apiserver publishes it: the CRD's, with the fields every object has.
fn custom_schema(r: &Resource, schema: &Value) -> Value {
    let mut out = schema.clone();
    if !out.get("properties").is_some_and(Value::is_object) {
        out["properties"] = json!({});
    }
    let props = &mut out["properties"];
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
    props["metadata"] = json!({"type": "object", "description": "Standard object's metadata."});
    out["x-kubernetes-group-version-kind"] = json!([{ "group": r.group, "version": r.version, "kind": r.kind }]);
    out
}

/// The document at `/openapi/v3/<path>` for `path` as the index names it (`api/v1`, `apis/apps/v1`), `None`
/// for any other path.
pub fn by_path(catalog: &Catalog, path: &str) -> Option<Value> {
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => group_version(catalog, "", version),
        ["apis", group, version] if !group.is_empty() => group_version(catalog, group, version),
        _ => None,
    }
}

/// `/openapi/v2` as protobuf (gnostic's `openapi_v2.Document`): version, title and no paths or definitions.
pub fn v2_protobuf() -> Vec<u8> {
    let mut info = Vec::new();
    proto_bytes(&mut info, 1, b"Kubernetes");
    proto_bytes(&mut info, 2, KUBERNETES_VERSION.as_bytes());
    let mut doc = Vec::new();
    proto_bytes(&mut doc, 1, b"2.0"); // swagger
    proto_bytes(&mut doc, 2, &info);
    proto_bytes(&mut doc, 8, &[]); // paths
    doc
}

/// A short fingerprint of a document (FNV-1a, 64 bits, upper-case hex), for the `hash` of its URL.
pub fn hash(doc: &Value) -> String {
    let bytes = doc.to_string();
    let h = bytes.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016X}")
}

/// `api/v1`, `apis/apps/v1`: where a group version lives, without the leading slash.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/api/v1/namespaces/{namespace}/configmaps/{name}`, `/api/v1/nodes/{name}`.
fn object_path(r: &Resource) -> String {
    let scope = if r.namespaced { "/namespaces/{namespace}" } else { "" };
    format!("/{}{scope}/{}/{{name}}", gv_path(r.group, r.version), r.plural)
}

/// What kubectl reads to decide that the server validates fields itself: the kind the operation writes and
/// the `fieldValidation` query parameter.
fn patch_operation(r: &Resource) -> Value {
    json!({
        "x-kubernetes-group-version-kind": { "group": r.group, "version": r.version, "kind": r.kind },
        "parameters": [{
            "name": "fieldValidation",
            "in": "query",
            "description": "Ignore, Warn or Strict: what to do with unknown or duplicate fields in the object",
            "schema": { "type": "string" },
        }],
    })
}

/// Appends a length-delimited protobuf field.
fn proto_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    proto_varint(out, u64::from(field) << 3 | 2);
    proto_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn proto_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_every_group_version_with_a_hashed_url() {
        let idx = index(&Catalog::default());
        let paths = idx["paths"].as_object().unwrap();
        assert_eq!(paths.len(), resources::group_versions().len());
        let core = paths["api/v1"]["serverRelativeURL"].as_str().unwrap();
        let doc = group_version(&Catalog::default(), "", "v1").unwrap();
        assert_eq!(core, format!("/openapi/v3/api/v1?hash={}", hash(&doc)));
        let apps = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(apps.starts_with("/openapi/v3/apis/apps/v1?hash="));
        assert!(paths.contains_key("apis/autoscaling/v2"));
        assert_ne!(core.split('=').nth(1), apps.split('=').nth(1));
    }

    #[test]
    fn every_resource_has_a_patch_operation_with_its_kind_and_field_validation() {
        for r in resources::RESOURCES {
            let doc = group_version(&Catalog::default(), r.group, r.version).unwrap();
            let op = &doc["paths"][object_path(r)]["patch"];
            let gvk = &op["x-kubernetes-group-version-kind"];
            assert_eq!((gvk["group"].as_str(), gvk["version"].as_str()), (Some(r.group), Some(r.version)));
            assert_eq!(gvk["kind"], r.kind);
            let params = op["parameters"].as_array().unwrap();
            assert!(params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"), "{}", r.kind);
            // A request body would make kubectl compute patches from (absent) schemas.
            assert!(op.get("requestBody").is_none());
        }
    }

    #[test]
    fn documents_hold_only_their_group_version() {
        let apps = group_version(&Catalog::default(), "apps", "v1").unwrap();
        let paths = apps["paths"].as_object().unwrap();
        assert!(paths.contains_key("/apis/apps/v1/namespaces/{namespace}/deployments/{name}"));
        assert!(paths.keys().all(|p| p.starts_with("/apis/apps/v1/")));
        assert_eq!(apps["openapi"], "3.0.0");
        assert_eq!(apps["components"], json!({ "schemas": {} }));
        let core = group_version(&Catalog::default(), "", "v1").unwrap();
        assert!(core["paths"].get("/api/v1/namespaces/{name}").is_some(), "cluster-scoped path");
        assert!(core["paths"].get("/api/v1/namespaces/{namespace}/configmaps/{name}").is_some());
        assert!(group_version(&Catalog::default(), "apps", "v2").is_none());
        assert!(group_version(&Catalog::default(), "", "v2").is_none());
        assert!(group_version(&Catalog::default(), "nope", "v1").is_none());
    }

    #[test]
    fn documents_are_found_by_the_paths_the_index_gives() {
        assert_eq!(by_path(&Catalog::default(), "api/v1"), group_version(&Catalog::default(), "", "v1"));
        assert_eq!(by_path(&Catalog::default(), "apis/apps/v1"), group_version(&Catalog::default(), "apps", "v1"));
        for bad in ["", "api", "apis/apps", "api/v1/x", "apis//v1", "apis/apps/v9", "v1"] {
            assert!(by_path(&Catalog::default(), bad).is_none(), "{bad}");
        }
        for url in index(&Catalog::default())["paths"].as_object().unwrap().values() {
            let url = url["serverRelativeURL"].as_str().unwrap();
            let path = url.trim_start_matches("/openapi/v3/").split('?').next().unwrap();
            assert!(by_path(&Catalog::default(), path).is_some(), "{url}");
        }
    }

    #[test]
    fn hashes_are_stable_and_tell_documents_apart() {
        assert_eq!(hash(&json!({"a": 1})), hash(&json!({"a": 1})));
        assert_ne!(hash(&json!({"a": 1})), hash(&json!({"a": 2})));
        assert_eq!(hash(&json!({})).len(), 16);
    }

    #[test]
    fn v2_is_a_protobuf_document_with_no_paths() {
        let expected: Vec<u8> =
            [&[0x0a, 3][..], b"2.0", &[0x12, 21, 0x0a, 10], b"Kubernetes", &[0x12, 7], b"v1.33.0", &[0x42, 0]].concat();
        assert_eq!(v2_protobuf(), expected);
    }

    #[test]
    fn varints_continue_past_seven_bits() {
        let mut out = Vec::new();
        proto_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        proto_bytes(&mut out, 2, &[7; 130]);
        assert_eq!(&out[..3], &[0x12, 0x82, 0x01]);
        assert_eq!(out.len(), 133);
    }
}
