//! Custom resources: what the CustomResourceDefinitions in the store make the API server serve. A
//! [`Catalog`] is read from the established CRDs; each served version of each is a [`Served`]: its
//! [`Resource`] (discovery names, scope, subresources, store prefix `/registry/<group>/<plural>/`), its
//! structural [`Schema`] with CEL rules, its printer columns and its scale paths. Pure; the API server keeps
//! its catalog current from a watch of the CRDs.
//!
//! A served version's `Resource` has `&'static` names, as the built-in ones do, so that every path of the
//! server handles both alike: each distinct set of names is leaked once, and kept for the life of the
//! process (a few hundred bytes per CRD version; re-reading a CRD whose names did not change reuses them).

pub mod columns;
pub mod rules;
pub mod schema;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::resources::Resource;
use crate::status::ApiError;
use crate::validation::Cause;
use columns::{Column, Path};
pub use schema::Schema;

/// The finalizer a CRD being deleted keeps until its custom objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One served version of a CustomResourceDefinition.
#[derive(Debug)]
pub struct Served {
    pub resource: &'static Resource,
    /// The CRD's name (`<plural>.<group>`).
    pub definition: String,
    pub schema: Schema,
    /// The schema as the definition gives it, for `/openapi/v3`.
    pub openapi: Value,
    pub columns: Vec<Column>,
    pub scale: Option<ScalePaths>,
    /// The definition is being deleted: its objects are being removed, no new ones are created.
    pub terminating: bool,
}

impl PartialEq for Served {
    fn eq(&self, other: &Served) -> bool {
        std::ptr::eq(self.resource, other.resource) && self.definition == other.definition
    }
}

impl Eq for Served {}

/// Where a custom resource keeps the numbers of its `scale` subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: Path,
    pub status_replicas: Path,
    pub label_selector: Option<Path>,
}

/// The custom resources served, from the established CRDs.
#[derive(Debug, Default)]
pub struct Catalog {
    served: Vec<Arc<Served>>,
}

impl Catalog {
    /// The catalog of `definitions` (CRD objects as stored): every served version of every established one.
    /// A definition that cannot be read (it passed validation, so this is not expected) is left out.
    pub fn new(definitions: &[Value]) -> Catalog {
        let mut served = Vec::new();
        for crd in definitions.iter().filter(|c| condition(c, "Established")) {
            if let Ok(versions) = read(crd) {
                served.extend(versions.into_iter().map(Arc::new));
            }
        }
        Catalog { served }
    }

    /// The version at `/apis/<group>/<version>/<plural>`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Served>> {
        self.served
            .iter()
            .find(|s| s.resource.group == group && s.resource.version == version && s.resource.plural == plural)
    }

    /// The version of objects with this `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&Arc<Served>> {
        self.served.iter().find(|s| s.resource.kind == kind && s.resource.api_version() == api_version)
    }

    /// The served version behind `resource`, if it is a custom one.
    pub fn of(&self, resource: &Resource) -> Option<&Arc<Served>> {
        resource.custom.then(|| self.find(resource.group, resource.version, resource.plural)).flatten()
    }

    /// Every custom resource served.
    pub fn resources(&self) -> impl Iterator<Item = &'static Resource> + '_ {
        self.served.iter().map(|s| s.resource)
    }

    /// Every custom group with its versions, most preferred first (Kubernetes' version priority), groups
    /// by name.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in &self.served {
            let versions = groups.entry(s.resource.group).or_default();
            if !versions.contains(&s.resource.version) {
                versions.push(s.resource.version);
            }
        }
        groups
            .into_iter()
            .map(|(g, mut v)| {
                v.sort_by_key(|a| version_priority(a));
                (g, v)
            })
            .collect()
    }
}

/// Whether an object's `status.conditions` has `type` with status True.
pub fn condition(object: &Value, type_: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

/// The served versions of one CRD, with their schemas read; the causes if any part does not read.
pub fn read(crd: &Value) -> Result<Vec<Served>, Vec<Cause>> {
    let spec = crd.get("spec").unwrap_or(&Value::Null);
    let names = crd.pointer("/status/acceptedNames").filter(|n| n.get("plural").is_some()).unwrap_or(&spec["names"]);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let list = |v: &Value, k: &str| -> Vec<String> {
        v.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
    };
    let group = text(spec, "group");
    let namespaced = text(spec, "scope") != "Cluster";
    let mut causes = Vec::new();
    let mut out = Vec::new();
    for (i, v) in spec.get("versions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("spec.versions[{i}]");
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let openapi = v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or_default();
        let schema = match v.pointer("/schema/openAPIV3Schema") {
            Some(s) => Schema::parse(s, &format!("{at}.schema.openAPIV3Schema")),
            None => Err(vec![Cause::required(format!("{at}.schema.openAPIV3Schema"))]),
        };
        let columns = Column::parse_all(v.get("additionalPrinterColumns"), &format!("{at}.additionalPrinterColumns"));
        let scale = match v.pointer("/subresources/scale") {
            Some(s) => scale_paths(s, &format!("{at}.subresources.scale")).map(Some),
            None => Ok(None),
        };
        let (schema, columns, scale) = match (schema, columns, scale) {
            (Ok(s), Ok(c), Ok(sc)) => (s, c, sc),
            (s, c, sc) => {
                causes.extend(s.err().into_iter().flatten());
                causes.extend(c.err().into_iter().flatten());
                causes.extend(sc.err().into_iter().flatten());
                continue;
            }
        };
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push("status".to_string());
        }
        if scale.is_some() {
            subresources.push("scale".to_string());
        }
        let resource = intern(Owned {
            group: group.clone(),
            version: text(v, "name"),
            kind: text(names, "kind"),
            plural: text(names, "plural"),
            singular: text(names, "singular"),
            namespaced,
            short_names: list(names, "shortNames"),
            categories: list(names, "categories"),
            subresources,
        });
        out.push(Served {
            resource,
            definition: crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
            schema,
            openapi,
            columns,
            scale,
            terminating: crd.pointer("/metadata/deletionTimestamp").is_some(),
        });
    }
    if causes.is_empty() {
        Ok(out)
    } else {
        Err(causes)
    }
}

fn scale_paths(v: &Value, at: &str) -> Result<ScalePaths, Vec<Cause>> {
    let mut causes = Vec::new();
    let mut path = |k: &str, required: bool| -> Option<Path> {
        match v.get(k).and_then(Value::as_str) {
            None if required => {
                causes.push(Cause::required(format!("{at}.{k}")));
                None
            }
            None => None,
            Some(p) => match Path::parse(p).ok().filter(|p| p.fields().is_some()) {
                Some(p) => Some(p),
                None => {
                    causes.push(Cause::invalid(format!("{at}.{k}"), p, "should be a json path under .spec or .status"));
                    None
                }
            },
        }
    };
    let spec_replicas = path("specReplicasPath", true);
    let status_replicas = path("statusReplicasPath", true);
    let label_selector = path("labelSelectorPath", false);
    match (spec_replicas, status_replicas) {
        (Some(spec_replicas), Some(status_replicas)) if causes.is_empty() => {
            Ok(ScalePaths { spec_replicas, status_replicas, label_selector })
        }
        _ => Err(causes),
    }
}

impl ScalePaths {
    /// The autoscaling/v1 Scale of a custom object.
    pub fn scale(&self, object: &Value) -> Value {
        let meta = object.get("metadata").cloned().unwrap_or_default();
        let mut scale_meta = Map::new();
        for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            if let Some(v) = meta.get(k) {
                scale_meta.insert(k.into(), v.clone());
            }
        }
        let int = |p: &Path| p.find(object).first().and_then(|v| v.as_i64()).unwrap_or(0);
        let mut status = json!({"replicas": int(&self.status_replicas)});
        if let Some(s) = self.label_selector.as_ref().and_then(|p| p.find(object).first().and_then(|v| v.as_str())) {
            status["selector"] = json!(s);
        }
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": scale_meta,
            "spec": {"replicas": int(&self.spec_replicas)},
            "status": status,
        })
    }

    /// The object with the replicas a Scale asks for.
    pub fn apply(&self, object: &Value, scale: &Value) -> Result<Value, ApiError> {
        let replicas = crate::meta::scale_replicas(object, scale)?;
        let mut out = object.clone();
        let fields = self.spec_replicas.fields().unwrap_or_default();
        let mut at = &mut out;
        for f in &fields[..fields.len().saturating_sub(1)] {
            if !at.get(*f).is_some_and(Value::is_object) {
                at[*f] = json!({});
            }
            at = &mut at[*f];
        }
        if let Some(last) = fields.last() {
            at[*last] = json!(replicas);
        }
        Ok(out)
    }
}

/// Kubernetes' order of versions, most preferred first: GA before beta before alpha, higher numbers first
/// within each, then versions not of that form, alphabetically (`v2`, `v1`, `v1beta2`, `v1beta1`, `v1alpha1`,
/// `foo`).
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parsed = v.strip_prefix('v').and_then(|rest| {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: i64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (stage, rank) in [("beta", 1), ("alpha", 2)] {
            if let Some(n) = tail.strip_prefix(stage) {
                return Some((rank, -major, -n.parse::<i64>().ok()?));
            }
        }
        None
    });
    match parsed {
        Some((rank, major, minor)) if major != 0 => (rank, major, minor, String::new()),
        _ => (3, 0, 0, v.to_string()),
    }
}

/// A custom resource's names, before [`intern`] makes them `'static`.
#[derive(PartialEq)]
struct Owned {
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    namespaced: bool,
    short_names: Vec<String>,
    categories: Vec<String>,
    subresources: Vec<String>,
}

/// The `'static` Resource of these names: the one made before for the same names, or a new one, leaked.
fn intern(names: Owned) -> &'static Resource {
    static SEEN: OnceLock<Mutex<Vec<(Owned, &'static Resource)>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = seen.iter().find(|(o, _)| *o == names) {
        return r;
    }
    let s = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let l = |l: &[String]| -> &'static [&'static str] {
        Box::leak(l.iter().map(|x| s(x)).collect::<Vec<_>>().into_boxed_slice())
    };
    let resource: &'static Resource = Box::leak(Box::new(Resource {
        group: s(&names.group),
        version: s(&names.version),
        kind: s(&names.kind),
        plural: s(&names.plural),
        singular: s(&names.singular),
        namespaced: names.namespaced,
        short_names: l(&names.short_names),
        categories: l(&names.categories),
        subresources: l(&names.subresources),
        fields: &[],
        custom: true,
        stored_as: None,
        rules: &crate::kinds::CUSTOM,
    }));
    seen.push((names, resource));
    resource
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn widgets() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList",
                          "shortNames": ["wd"], "categories": ["all"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                         "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                         "status": {"type": "object", "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}}}}}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                         "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}}},
                    {"name": "v0", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]
            },
            "status": {"conditions": [{"type": "Established", "status": "True"}]}
        })
    }

    #[test]
    fn established_definitions_serve_their_served_versions() {
        let catalog = Catalog::new(&[widgets(), json!({"metadata": {"name": "pending.example.com"}})]);
        let v1 = catalog.find("example.com", "v1", "widgets").unwrap();
        let r = v1.resource;
        assert!(r.custom && r.namespaced);
        assert_eq!((r.kind, r.short_names, r.categories), ("Widget", &["wd"][..], &["all"][..]));
        assert_eq!(r.subresources, ["status", "scale"]);
        assert_eq!(r.key("a", "w"), "/registry/example.com/widgets/a/w");
        assert!(catalog.find("example.com", "v0", "widgets").is_none());
        assert_eq!(catalog.groups(), [("example.com", vec!["v1", "v1beta1"])]);
        assert!(std::ptr::eq(Catalog::new(&[widgets()]).find("example.com", "v1", "widgets").unwrap().resource, r));
        assert_eq!(catalog.by_kind("example.com/v1beta1", "Widget").unwrap().resource.version, "v1beta1");
        assert!(catalog.of(crate::resources::find("", "v1", "pods").unwrap()).is_none());
    }

    #[test]
    fn scale_reads_and_writes_the_named_paths() {
        let catalog = Catalog::new(&[widgets()]);
        let paths = catalog.find("example.com", "v1", "widgets").unwrap().scale.clone().unwrap();
        let w = json!({"metadata": {"name": "w", "namespace": "a"}, "spec": {"replicas": 2},
            "status": {"replicas": 1, "selector": "app=w"}});
        let s = paths.scale(&w);
        assert_eq!((s["spec"]["replicas"].as_i64(), s["status"]["selector"].as_str()), (Some(2), Some("app=w")));
        let scaled = paths.apply(&w, &json!({"spec": {"replicas": 5}})).unwrap();
        assert_eq!(scaled["spec"]["replicas"], 5);
        assert!(paths.apply(&w, &json!({"spec": {"replicas": -1}})).is_err());
    }

    #[test]
    fn versions_sort_as_kubernetes_sorts_them() {
        let mut v = vec!["v1alpha1", "foo", "v1", "v2beta1", "v1beta2", "v2", "v1beta1", "bar", "v10"];
        v.sort_by_key(|a| version_priority(a));
        assert_eq!(v, ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"]);
    }
}
