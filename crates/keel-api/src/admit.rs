//! One admission path for every kind, as kube-apiserver's registry strategies run it: a create or an update
//! becomes the object to store and the warnings for the client, or the error to answer with. Everything
//! kind-specific comes from the kind's entry ([`crate::kinds::Kind`]). Pure: what needs the store is looked
//! up by the server first ([`Facts`]); what needs the store or the cluster's keys to finish (allocating a
//! Service's addresses, signing a certificate) is the kind's [`Hook`], run by the server after admission.

use serde_json::Value;

use crate::custom::Served;
use crate::kinds::{self, Hook};
use crate::meta::{self, Fresh};
use crate::resources::Resource;
use crate::status::ApiError;
use crate::validation::Cause;

/// What `fieldValidation` asks for fields the object's type does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    /// kube-apiserver's default when the parameter is absent: a `Warning` header per unknown field.
    #[default]
    Warn,
    Strict,
}

/// Where a write goes and how it is to be read.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub resource: &'a Resource,
    /// The path's namespace (`None` for cluster-scoped resources).
    pub namespace: Option<&'a str>,
    pub field_validation: FieldValidation,
    /// The served version, when the resource is a custom one: its schema decides instead of a kind's rules.
    pub custom: Option<&'a Served>,
}

/// What only the server can know, looked up before admission for the kind's hooks.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// [`Hook::MountServiceAccountToken`]: whether the pod's service account automounts its token (`None`:
    /// the cluster issues no tokens; nothing is mounted).
    pub service_account_automounts: Option<bool>,
    /// [`Hook::ResolvePriorityClass`]: the class the pod names, or the default one (`None`: it names none
    /// and none is the default; `Err(name)`: the class it names does not exist).
    pub priority_class: Option<Result<kinds::scheduling::PodClass, String>>,
    /// [`Hook::DefaultIngressClass`]: the cluster's default IngressClass, if it has one.
    pub default_ingress_class: Option<String>,
    /// [`Hook::DefaultStorageClass`]: the cluster's default StorageClass, if it has one.
    pub default_storage_class: Option<String>,
    /// [`Hook::LimitRanger`]: the namespace's LimitRanges.
    pub limit_ranges: Vec<Value>,
    /// [`Hook::AcceptNames`]: every CustomResourceDefinition in the store.
    pub definitions: Vec<Value>,
}

/// What admission let through: the object to store and the warnings to send with the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A new object: metadata prepared (identity, namespace, generated name, initial status), unknown fields
/// dropped (or refused, with `Strict`), defaults filled in, the kind's admission (a pod's token volume),
/// then every problem with the metadata and the kind's fields refused together (422).
pub fn create(req: &Request, mut object: Value, fresh: &Fresh, facts: &Facts) -> Result<Admitted, ApiError> {
    let kind = kinds::of(req.resource);
    if req.custom.is_some_and(|c| c.terminating) {
        return Err(ApiError::NotAllowed("create not allowed while custom resource definition is terminating".into()));
    }
    meta::prepare_create(req.resource, &mut object, req.namespace, fresh)?;
    let warnings = known_fields(req, &mut object)?;
    if kind.has(Hook::ResolvePriorityClass) {
        kinds::scheduling::admit_pod(&mut object, facts.priority_class.clone())?;
    }
    if kind.has(Hook::DefaultIngressClass) {
        kinds::networking::admit_ingress(&mut object, facts.default_ingress_class.as_deref());
    }
    default(req, &mut object);
    if kind.has(Hook::DefaultStorageClass) {
        kinds::storage::admit_claim(&mut object, facts.default_storage_class.as_deref());
    }
    if kind == &kinds::PERSISTENT_VOLUME_CLAIM && !facts.limit_ranges.is_empty() {
        kinds::limits::limit_claim(&object, &facts.limit_ranges).map_err(|e| forbidden(req, &object, &e))?;
    } else if kind.has(Hook::LimitRanger) && !facts.limit_ranges.is_empty() {
        kinds::limits::limit_pod(&mut object, &facts.limit_ranges).map_err(|e| forbidden(req, &object, &e))?;
        // Its defaults may have changed the pod's QoS class.
        let qos = meta::qos_class(object.get("spec").unwrap_or(&Value::Null));
        if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("qosClass".into(), qos.into());
        }
    }
    if kind.has(Hook::MountServiceAccountToken) {
        if let Some(automounts) = facts.service_account_automounts {
            kinds::mount_service_account_token(&mut object, &token_volume_suffix(fresh.random), automounts);
        }
    }
    if kind.has(Hook::AcceptNames) {
        kinds::apiextensions::accept_names(&mut object, &facts.definitions, &meta::timestamp(fresh.now));
    }
    let mut causes = meta::validate_metadata(req.resource, &object);
    causes.extend(validate(req, &object, None));
    refuse(req, &object, causes)?;
    Ok(Admitted { object, warnings })
}

/// An admission plugin's refusal: `pods "name" is forbidden: <why>` (kube's `admission.NewForbidden`).
pub fn forbidden(req: &Request, object: &Value, why: &str) -> ApiError {
    let resource = crate::status::GroupResource::from(req.resource);
    ApiError::Forbidden(format!("{resource} {:?} is forbidden: {why}", meta::name(object)))
}

/// The kind's defaults, or the custom resource's schema's.
fn default(req: &Request, object: &mut Value) {
    match req.custom {
        Some(c) => c.schema.fill_defaults(object),
        None => (kinds::of(req.resource).default)(object),
    }
}

/// The kind's validation, or the custom resource's schema's (`old`: the stored object, on updates).
fn validate(req: &Request, object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let kind = kinds::of(req.resource);
    match (req.custom, old) {
        (Some(c), _) => c.schema.validate(object, old),
        (None, None) => (kind.validate)(object),
        (None, Some(old)) => {
            let mut causes = (kind.validate)(object);
            causes.extend((kind.validate_update)(old, object));
            causes
        }
    }
}

/// An update of `old` (as stored, without its resourceVersion) to `requested` (of the main resource, or of
/// the `subresource` it names): what the server owns carried over, unknown fields dropped, defaults filled
/// in, a Service's addresses kept, then the new object and the change checked.
pub fn update(
    req: &Request,
    subresource: Option<&str>,
    old: &Value,
    requested: Value,
    facts: &Facts,
    now: jiff::Timestamp,
) -> Result<Admitted, ApiError> {
    let kind = kinds::of(req.resource);
    let mut object = meta::prepare_update(req.resource, subresource, old, requested)?;
    let warnings = known_fields(req, &mut object)?;
    if kind.has(Hook::AllocateServiceAddresses) {
        kinds::carry_over_addresses(old, &mut object);
    }
    default(req, &mut object);
    if kind.has(Hook::AcceptNames) && subresource.is_none() {
        kinds::apiextensions::accept_names(&mut object, &facts.definitions, &meta::timestamp(now));
    }
    let mut causes = meta::validate_metadata(req.resource, &object);
    causes.extend(validate(req, &object, Some(old)));
    causes.extend(meta::validate_deleting_update(old, &object));
    refuse(req, &object, causes)?;
    Ok(Admitted { object, warnings })
}

/// An object admission let through and a mutating webhook changed since: unknown fields dropped, defaults
/// filled in and everything checked again (`old`: the stored object, on updates).
pub fn revalidate(req: &Request, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    known_fields(&Request { field_validation: FieldValidation::Ignore, ..*req }, object)?;
    default(req, object);
    let mut causes = meta::validate_metadata(req.resource, object);
    causes.extend(validate(req, object, old));
    if let Some(old) = old {
        causes.extend(meta::validate_deleting_update(old, object));
    }
    refuse(req, object, causes)
}

/// Drops the fields the kind's type does not know, as `fieldValidation` says: the warnings to send, or a 400
/// (the object does not decode, or `Strict` found unknown fields).
fn known_fields(req: &Request, object: &mut Value) -> Result<Vec<String>, ApiError> {
    let unknown = match req.custom {
        Some(c) => c.schema.prune(object),
        None => {
            let unknown = kinds::decode(req.resource.kind, object).map_err(ApiError::BadRequest)?;
            kinds::drop_unknown(object, &unknown);
            unknown
        }
    };
    let listed = || unknown.iter().map(|f| format!("unknown field {f:?}")).collect::<Vec<_>>();
    match req.field_validation {
        FieldValidation::Ignore => Ok(vec![]),
        FieldValidation::Warn => Ok(listed()),
        FieldValidation::Strict if unknown.is_empty() => Ok(vec![]),
        FieldValidation::Strict => Err(ApiError::BadRequest(format!("strict decoding error: {}", listed().join(", ")))),
    }
}

/// A 422 naming every cause, if there is any.
fn refuse(req: &Request, object: &Value, causes: Vec<Cause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(req.resource, meta::name(object), causes))
}

/// kube-apiserver's random suffix of a token volume's name (`kube-api-access-<5>`: no vowels, no look-alikes).
fn token_volume_suffix(random: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|i| ALPHABET[((random >> (i * 8)) % ALPHABET.len() as u64) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::find;

    fn fresh() -> Fresh {
        Fresh { now: "2026-12-07T12:00:00Z".parse().unwrap(), uid: "u-1".into(), random: 7 }
    }

    #[test]
    fn a_create_is_prepared_defaulted_admitted_and_checked_in_one_call() {
        let pods = find("", "v1", "pods").unwrap();
        let req =
            Request { resource: pods, namespace: Some("a"), field_validation: FieldValidation::Warn, custom: None };
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "imagee": "x"}]}});
        let facts = Facts { service_account_automounts: Some(true), ..Default::default() };
        let admitted = create(&req, pod.clone(), &fresh(), &facts).unwrap();
        assert_eq!(admitted.warnings, ["unknown field \"spec.containers[0].imagee\""]);
        let o = &admitted.object;
        assert_eq!((o["metadata"]["namespace"].as_str(), o["metadata"]["uid"].as_str()), (Some("a"), Some("u-1")));
        assert_eq!(o["spec"]["restartPolicy"], "Always", "defaulted");
        assert_eq!(o["status"]["phase"], "Pending");
        assert!(o["spec"]["volumes"][0]["name"].as_str().unwrap().starts_with("kube-api-access-"));
        assert!(o["spec"]["containers"][0].get("imagee").is_none());

        let strict = Request { field_validation: FieldValidation::Strict, ..req };
        assert!(matches!(create(&strict, pod, &fresh(), &Facts::default()), Err(ApiError::BadRequest(_))));
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "P"}, "spec": {"containers": []}});
        let Err(ApiError::Invalid { causes, .. }) = create(&req, bad, &fresh(), &Facts::default()) else { panic!() };
        assert!(
            causes.iter().any(|c| c.field == "metadata.name") && causes.iter().any(|c| c.field == "spec.containers")
        );
    }

    #[test]
    fn an_update_keeps_what_the_server_owns_and_checks_the_change() {
        let services = find("", "v1", "services").unwrap();
        let req =
            Request { resource: services, namespace: Some("a"), field_validation: FieldValidation::Warn, custom: None };
        let old = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "a", "uid": "u"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
        let new = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"a": "b"}},
            "spec": {"ports": [{"port": 80}]}});
        let admitted = update(&req, None, &old, new, &Facts::default(), fresh().now).unwrap();
        assert_eq!(admitted.object["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(admitted.object["metadata"]["uid"], "u");
        let moved = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.96.0.8", "ports": [{"port": 80}]}});
        assert!(matches!(
            update(&req, None, &old, moved, &Facts::default(), fresh().now),
            Err(ApiError::Invalid { .. })
        ));
    }
}
