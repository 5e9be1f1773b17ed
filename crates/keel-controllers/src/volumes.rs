//! kube-controller-manager's persistent volume controller, pure: what to do with a claim (bind it to an
//! available volume that fits, provision one for its class, wait for its first consumer, mark it Lost)
//! and with a volume (Available, Bound, Released; deleted or kept per its reclaim policy). keel's own
//! provisioner, `keel.dev/local-path`, makes a volume on the node the scheduler chose for the claim's
//! first consumer: a CSI-style source naming keel's driver, whose directory the node's agent keeps under
//! its data dir, pinned to that node by node affinity.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use keel_api::kinds::storage::LOCAL_PROVISIONER;
use keel_api::quantity::Quantity;
use kube::ResourceExt;
use serde_json::json;

use crate::scheduling::SELECTED_NODE;

/// What a claim needs.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimStep {
    Nothing,
    /// Its class binds at the first consumer's node, and no pod has been scheduled with it yet.
    WaitForFirstConsumer,
    /// Bind it to this volume (which names it already, or is available and fits).
    Bind(String),
    /// Create this volume for it (already naming it); the next pass binds the two.
    Provision(Box<PersistentVolume>),
    /// Nothing fits and nothing provisions for it (the event's message).
    NoMatch(String),
    /// Its volume is gone.
    Lost,
}

/// What a volume needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeStep {
    Nothing,
    /// Its status phase should be this.
    Phase(&'static str),
    /// Its claim is gone and its reclaim policy is Delete.
    Delete,
}

fn storage_of(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<Quantity> {
    list.and_then(|l| l.get("storage")).and_then(|q| Quantity::parse(&q.0).ok())
}

fn claim_class(claim: &PersistentVolumeClaim) -> String {
    let annotation = claim.annotations().get("volume.beta.kubernetes.io/storage-class").cloned();
    annotation.or_else(|| claim.spec.as_ref()?.storage_class_name.clone()).unwrap_or_default()
}

/// Whether a volume's claimRef names this claim (by uid when it has one).
fn names_claim(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && r.name.as_deref() == claim.metadata.name.as_deref()
        && (r.uid.is_none() || r.uid == claim.metadata.uid)
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Whether `pv` is free and fits `claim`: same class, enough capacity, the access modes and volume mode
/// asked for, the claim's selector, and the node its first consumer goes to.
fn fits(pv: &PersistentVolume, claim: &PersistentVolumeClaim, class: &str, node: Option<&str>) -> bool {
    let (Some(spec), Some(want)) = (pv.spec.as_ref(), claim.spec.as_ref()) else { return false };
    if spec.claim_ref.is_some() || pv.metadata.deletion_timestamp.is_some() || phase_of_volume(pv) == "Released" {
        return false;
    }
    if spec.storage_class_name.as_deref().unwrap_or("") != class {
        return false;
    }
    let requested = storage_of(want.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or_default();
    if storage_of(spec.capacity.as_ref()).is_none_or(|c| c < requested) {
        return false;
    }
    let modes = spec.access_modes.clone().unwrap_or_default();
    if !want.access_modes.iter().flatten().all(|m| modes.contains(m)) {
        return false;
    }
    if spec.volume_mode.as_deref().unwrap_or("Filesystem") != want.volume_mode.as_deref().unwrap_or("Filesystem") {
        return false;
    }
    if let Some(selector) = &want.selector {
        let Ok(s) = keel_api::selector::LabelSelector::from_api(selector) else { return false };
        if !s.matches(pv.labels()) {
            return false;
        }
    }
    if let (Some(node), Some(required)) = (node, spec.node_affinity.as_ref().and_then(|a| a.required.as_ref())) {
        let on = required.node_selector_terms.iter().any(|t| {
            let hostname = |e: &k8s_openapi::api::core::v1::NodeSelectorRequirement| {
                e.key == "kubernetes.io/hostname" && e.operator == "In" && e.values.iter().flatten().any(|v| v == node)
            };
            t.match_expressions.iter().flatten().any(hostname)
        });
        if !on {
            return false;
        }
    }
    true
}

/// What `claim` needs, given every volume and class.
pub fn claim_step(claim: &PersistentVolumeClaim, volumes: &[PersistentVolume], classes: &[StorageClass]) -> ClaimStep {
    if claim.metadata.deletion_timestamp.is_some() {
        return ClaimStep::Nothing;
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
    if let Some(name) = volume_name {
        return match volumes.iter().find(|v| v.name_any() == name) {
            None if phase == "Lost" => ClaimStep::Nothing,
            None => ClaimStep::Lost,
            Some(pv) if names_claim(pv, claim) && phase == "Bound" => ClaimStep::Nothing,
            Some(pv) if names_claim(pv, claim) || pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none()) => {
                ClaimStep::Bind(name)
            }
            Some(_) => ClaimStep::Nothing,
        };
    }
    if let Some(pv) = volumes.iter().find(|v| names_claim(v, claim)) {
        return ClaimStep::Bind(pv.name_any());
    }
    let class_name = claim_class(claim);
    let class = classes.iter().find(|c| c.name_any() == class_name);
    let waits = class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
    let node = claim.annotations().get(SELECTED_NODE).cloned();
    if waits && node.is_none() {
        return ClaimStep::WaitForFirstConsumer;
    }
    let requested = |v: &&PersistentVolume| storage_of(v.spec.as_ref().and_then(|s| s.capacity.as_ref()));
    let best = volumes.iter().filter(|v| fits(v, claim, &class_name, node.as_deref())).min_by_key(requested);
    if let Some(pv) = best {
        return ClaimStep::Bind(pv.name_any());
    }
    match (class, node) {
        (Some(c), Some(node)) if c.provisioner == LOCAL_PROVISIONER => {
            ClaimStep::Provision(Box::new(local_volume(claim, c, &node)))
        }
        (Some(c), None) if c.provisioner == LOCAL_PROVISIONER => ClaimStep::NoMatch(format!(
            "storageclass.storage.k8s.io {:?}: {LOCAL_PROVISIONER} provisions on the node of a claim's first consumer: its volumeBindingMode must be WaitForFirstConsumer",
            c.name_any()
        )),
        (Some(_), _) => ClaimStep::Nothing,
        (None, _) if class_name.is_empty() => {
            ClaimStep::NoMatch("no persistent volumes available for this claim and no storage class is set".into())
        }
        (None, _) => ClaimStep::NoMatch(format!("storageclass.storage.k8s.io {class_name:?} not found")),
    }
}

/// The volume keel's local provisioner makes for `claim` on `node`.
pub fn local_volume(claim: &PersistentVolumeClaim, class: &StorageClass, node: &str) -> PersistentVolume {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": LOCAL_PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.name_any(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": claim.namespace(),
                         "name": claim.name_any(), "uid": uid},
            "csi": {"driver": LOCAL_PROVISIONER, "volumeHandle": name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    }))
    .expect("a PersistentVolume")
}

/// Whether a claim that exists holds `pv` (its claimRef names it, by uid when it has one).
pub fn claimed(pv: &PersistentVolume, claims: &[PersistentVolumeClaim]) -> bool {
    claims.iter().any(|c| names_claim(pv, c))
}

/// What `pv` needs, given every claim.
pub fn volume_step(pv: &PersistentVolume, claims: &[PersistentVolumeClaim]) -> VolumeStep {
    if pv.metadata.deletion_timestamp.is_some() {
        return VolumeStep::Nothing;
    }
    let phase = phase_of_volume(pv);
    let spec = pv.spec.clone().unwrap_or_default();
    let Some(r) = spec.claim_ref.as_ref() else {
        return if phase == "Available" { VolumeStep::Nothing } else { VolumeStep::Phase("Available") };
    };
    let claim = claims.iter().find(|c| {
        c.metadata.namespace == r.namespace && c.metadata.name == r.name && (r.uid.is_none() || r.uid == c.metadata.uid)
    });
    match claim {
        Some(c) if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv.name_any().as_str()) => {
            if phase == "Bound" {
                VolumeStep::Nothing
            } else {
                VolumeStep::Phase("Bound")
            }
        }
        // Pre-bound to a claim that has not taken it yet.
        Some(_) => {
            if phase == "Available" || phase == "Bound" {
                VolumeStep::Nothing
            } else {
                VolumeStep::Phase("Available")
            }
        }
        // Pre-bound by its maker to a claim not made yet: it waits for it.
        None if r.uid.is_none() => {
            if phase == "Available" {
                VolumeStep::Nothing
            } else {
                VolumeStep::Phase("Available")
            }
        }
        None => match spec.persistent_volume_reclaim_policy.as_deref() {
            Some("Delete") => VolumeStep::Delete,
            _ if phase == "Released" => VolumeStep::Nothing,
            _ => VolumeStep::Phase("Released"),
        },
    }
}

#[cfg(test)]
mod tests;
