//! PersistentVolumes and PersistentVolumeClaims (core/v1) and StorageClasses (`storage.k8s.io/v1`): their
//! defaults and validation as kube-apiserver has them, the protection finalizers its
//! StorageObjectInUseProtection admission adds, and the DefaultStorageClass admission of claims. The
//! cluster's default class, `local`, provisions a directory on the node of a claim's first consumer.

use serde_json::{json, Value};

use super::fields::*;
use crate::validation::Cause;

/// The annotation that marks the cluster's default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The finalizers kube-apiserver's StorageObjectInUseProtection adds, removed by the protection controllers.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// The provisioner of keel's local directory volumes, and the cluster's default class that uses it.
pub const LOCAL_PROVISIONER: &str = "keel.dev/local-path";
pub const LOCAL_CLASS: &str = "local";

const ACCESS_MODES: [&str; 4] = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];
const RECLAIM_POLICIES: [&str; 3] = ["Delete", "Recycle", "Retain"];
const BINDING_MODES: [&str; 2] = ["Immediate", "WaitForFirstConsumer"];
const VOLUME_MODES: [&str; 2] = ["Block", "Filesystem"];
/// The volume sources keel's agent can mount from a PersistentVolume.
const SOURCES: [&str; 2] = ["hostPath", "local"];

/// The cluster's default class (made by the masters, recreated if deleted).
pub fn local_class() -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": LOCAL_PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"})
}

/// The default StorageClass among `classes`: the newest of those annotated as the default (kube's
/// DefaultStorageClass admission), by creation time, then name.
pub fn default_class(classes: &[Value]) -> Option<String> {
    newest_annotated(classes, DEFAULT_CLASS_ANNOTATION)
}

/// A new claim that names no class (the field absent, not `""`) gets the default one, if any.
pub fn admit_claim(claim: &mut Value, default: Option<&str>) {
    let named = claim.pointer("/spec/storageClassName").is_some_and(|c| !c.is_null())
        || claim.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class").is_some();
    if let (false, Some(class), Some(spec)) = (named, default, claim.get_mut("spec").and_then(Value::as_object_mut)) {
        spec.insert("storageClassName".into(), json!(class));
    }
}

fn add_finalizer(object: &mut Value, finalizer: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        if !list.iter().any(|f| f == finalizer) {
            list.push(json!(finalizer));
        }
    }
}

/// A new claim: Pending, protected while pods use it.
pub fn initial_claim(claim: &mut Value) {
    add_finalizer(claim, PVC_PROTECTION);
    if let Some(map) = claim.as_object_mut() {
        map.insert("status".into(), json!({"phase": "Pending"}));
    }
}

/// A new volume: Pending (the binder makes it Available), protected while bound.
pub fn initial_volume(pv: &mut Value) {
    add_finalizer(pv, PV_PROTECTION);
    if let Some(map) = pv.as_object_mut() {
        map.insert("status".into(), json!({"phase": "Pending"}));
    }
}

pub fn default_volume(pv: &mut Value) {
    if let Some(spec) = pv.get_mut("spec").and_then(Value::as_object_mut) {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_str(spec, "volumeMode", "Filesystem");
    }
}

pub fn default_claim(claim: &mut Value) {
    if let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) {
        default_str(spec, "volumeMode", "Filesystem");
    }
}

pub fn default_class_fields(class: &mut Value) {
    if let Some(map) = class.as_object_mut() {
        default_str(map, "reclaimPolicy", "Delete");
        default_str(map, "volumeBindingMode", "Immediate");
    }
}

fn access_modes(spec: &Value, path: &str, c: &mut Vec<Cause>) {
    let modes = arr_of(spec, "accessModes");
    if modes.is_empty() {
        c.push(required(child(path, "accessModes"), "at least 1 access mode is required"));
    }
    for (i, m) in modes.iter().enumerate() {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            c.push(Cause::not_supported(index(&child(path, "accessModes"), i), m, &ACCESS_MODES));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        c.push(forbidden(child(path, "accessModes"), "may not use ReadWriteOncePod with other access modes"));
    }
}

fn positive_storage(list: Option<&Value>, path: &str, c: &mut Vec<Cause>) {
    let p = key(path, "storage");
    match list.and_then(|l| l.get("storage")) {
        None => c.push(required(p, "")),
        Some(v) => match crate::quota::usage_of(Some(&json!({"storage": v}))).remove("storage") {
            None => c.push(invalid(p, v, crate::quantity::QUANTITY_FORMAT)),
            Some(a) if a.quantity.is_negative() || a.quantity.is_zero() => {
                c.push(invalid(p, v, "must be greater than zero"))
            }
            Some(_) => {}
        },
    }
}

pub fn validate_volume(pv: &Value) -> Vec<Cause> {
    let mut c = vec![];
    let spec = pv.get("spec").cloned().unwrap_or(Value::Null);
    access_modes(&spec, "spec", &mut c);
    positive_storage(spec.get("capacity"), "spec.capacity", &mut c);
    let policy = str_of(&spec, "persistentVolumeReclaimPolicy");
    if !RECLAIM_POLICIES.contains(&policy) {
        c.push(Cause::not_supported("spec.persistentVolumeReclaimPolicy", policy, &RECLAIM_POLICIES));
    }
    let mode = str_of(&spec, "volumeMode");
    if !VOLUME_MODES.contains(&mode) {
        c.push(Cause::not_supported("spec.volumeMode", mode, &VOLUME_MODES));
    }
    let known = ["hostPath", "local", "nfs", "csi", "iscsi", "fc", "cephfs", "rbd", "flexVolume", "glusterfs"];
    let sources: Vec<&str> = known.into_iter().filter(|k| spec.get(*k).is_some_and(|v| !v.is_null())).collect();
    match sources.as_slice() {
        [] => c.push(required("spec", "must specify a volume type")),
        [_] => {}
        [_, second, ..] => c.push(forbidden(child("spec", second), "may not specify more than 1 volume type")),
    }
    for source in ["hostPath", "local"] {
        if let Some(s) = spec.get(source).filter(|s| !s.is_null()) {
            if str_of(s, "path").is_empty() {
                c.push(required(format!("spec.{source}.path"), ""));
            }
        }
    }
    if spec.get("local").is_some_and(|l| !l.is_null()) && spec.get("nodeAffinity").is_none_or(Value::is_null) {
        c.push(required("spec.nodeAffinity", "Local volume requires node affinity"));
    }
    c
}

pub fn validate_claim(claim: &Value) -> Vec<Cause> {
    let mut c = vec![];
    let spec = claim.get("spec").cloned().unwrap_or(Value::Null);
    access_modes(&spec, "spec", &mut c);
    positive_storage(spec.pointer("/resources/requests"), "spec.resources", &mut c);
    let mode = str_of(&spec, "volumeMode");
    if !VOLUME_MODES.contains(&mode) {
        c.push(Cause::not_supported("spec.volumeMode", mode, &VOLUME_MODES));
    }
    c
}

/// A claim's spec is immutable but for its storage request (growing only) and, while unset, its volume.
pub fn validate_claim_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = vec![];
    let strip = |v: &Value| {
        let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(m) = spec.as_object_mut() {
            m.remove("resources");
            m.remove("volumeAttributesClassName");
            if old.pointer("/spec/volumeName").is_none_or(|n| n == "") {
                m.remove("volumeName");
            }
        }
        spec
    };
    if strip(old) != strip(new) {
        c.push(forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let size = |v: &Value| {
        let list = v.pointer("/spec/resources/requests");
        crate::quota::usage_of(list).remove("storage").map(|a| a.quantity)
    };
    if let (Some(before), Some(after)) = (size(old), size(new)) {
        if after < before {
            let v = new.pointer("/spec/resources/requests/storage").cloned().unwrap_or(Value::Null);
            c.push(forbidden(
                "spec.resources.requests.storage",
                &format!("field can not be less than status.capacity (previous value: {})", render(&v)),
            ));
        }
    }
    c
}

/// A volume's source and capacity may not change once set (keel's agent has nothing to resize).
pub fn validate_volume_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = vec![];
    for source in SOURCES {
        immutable(
            old.get("spec").unwrap_or(&Value::Null),
            new.get("spec").unwrap_or(&Value::Null),
            source,
            "spec",
            &mut c,
        );
    }
    c
}

pub fn validate_class(class: &Value) -> Vec<Cause> {
    let mut c = vec![];
    if str_of(class, "provisioner").is_empty() {
        c.push(required("provisioner", ""));
    }
    let policy = str_of(class, "reclaimPolicy");
    if !["Delete", "Retain"].contains(&policy) {
        c.push(Cause::not_supported("reclaimPolicy", policy, &["Delete", "Retain"]));
    }
    let mode = str_of(class, "volumeBindingMode");
    if !BINDING_MODES.contains(&mode) {
        c.push(Cause::not_supported("volumeBindingMode", mode, &BINDING_MODES));
    }
    c
}

pub fn validate_class_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = vec![];
    for (name, message) in [
        ("provisioner", "updates to provisioner are forbidden."),
        ("parameters", "updates to parameters are forbidden."),
        ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
        ("volumeBindingMode", "field is immutable"),
    ] {
        if value_at(old, name) != value_at(new, name) {
            c.push(forbidden(name, message));
        }
    }
    c
}

/// kubectl's short names of access modes, in its order (`RWO,ROX,RWX,RWOP`).
pub fn access_modes_text(modes: Option<&Value>) -> String {
    let modes: Vec<&str> = modes.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(m, _)| modes.contains(m))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}
