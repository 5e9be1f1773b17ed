//! The StatefulSet controller's decision, pure: given a StatefulSet, the pods its selector finds and the
//! ControllerRevisions it lists, [`plan`] says what one pass of Kubernetes' `updateStatefulSet` does.
//!
//! - Identity: pod `<set>-<ordinal>` for each ordinal in `start..start+replicas` (`spec.ordinals.start`), with
//!   hostname = its name, subdomain = `spec.serviceName`, labels `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index` and `controller-revision-hash` = the revision's name, and for each
//!   volumeClaimTemplate a volume of that name on claim `<template>-<set>-<ordinal>` ([`member_claims`]: made
//!   before the pod if missing, and kept when pods and the set go, as `Retain` keeps them). A member whose pod-name label is
//!   wrong is relabelled; pods of the set named otherwise are ignored, as Kubernetes ignores them.
//! - Members in range, lowest ordinal first: a missing one is created; a failed or succeeded one deleted (and
//!   created again once gone); under `OrderedReady` the pass stops at the first pod it created or deleted, or
//!   that is terminating or not Running, Ready and available. Then the members beyond the range, highest
//!   ordinal first: under `OrderedReady` one at a time, waiting on a terminating one, and only an unhealthy
//!   pod if it is the first unhealthy one. `Parallel` does all of it at once.
//! - RollingUpdate, only when that went through: from the highest ordinal down to the partition, the first pod
//!   not on the update revision is deleted (recreated from it by a later pass), waiting for each to be
//!   Running and Ready. A missing pod below the partition is recreated from the current revision. OnDelete
//!   replaces nothing.
//! - Revisions ([`crate::history`]), status; `currentRevision` becomes `updateRevision` once
//!   every pod is updated and ready (also under OnDelete, where Kubernetes leaves it behind).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};

use crate::history::{self, REVISION_HASH};
use crate::pods;

/// The label with the pod's own name.
pub const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The update revision (of the current template): create or renumber it first. When
    /// `revision.collided`, the plan holds only the status that counts the collision.
    pub revision: history::Current,
    /// Pods to create, complete and named.
    pub create: Vec<Pod>,
    /// Pods (names) to delete.
    pub delete: Vec<String>,
    /// Matching members without a controller, to take over.
    pub adopt: Vec<String>,
    /// Members whose identity labels must be set: (name, labels to merge).
    pub relabel: Vec<(String, BTreeMap<String, String>)>,
    /// Old ControllerRevisions (names) to delete.
    pub delete_revisions: Vec<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<StatefulSetStatus>,
    /// Look again after this long even if nothing changes (a pod becomes available after minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// One pass over `set`, given the pods and the ControllerRevisions its selector finds in its namespace.
pub fn plan(set: &StatefulSet, candidates: &[Pod], revisions: &[ControllerRevision], now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = set.spec.as_ref() else { return plan };
    let old = set.status.clone().unwrap_or_default();
    plan.revision =
        history::current("apps/v1", "StatefulSet", &set.metadata, &spec.template, old.collision_count, revisions);
    if plan.revision.collided {
        let mut status = old;
        status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
        plan.status = Some(status);
        return plan;
    }
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let uid = set.metadata.uid.as_deref().unwrap_or_default();
    let deleting = set.metadata.deletion_timestamp.is_some();
    let update = plan.revision.name.clone();
    let mine = history::owned(uid, revisions);
    let (current, current_template) = old
        .current_revision
        .as_ref()
        .and_then(|name| mine.iter().find(|r| r.metadata.name.as_ref() == Some(name)))
        .and_then(|r| Some((r.metadata.name.clone()?, history::template_of(r)?)))
        .unwrap_or_else(|| (update.clone(), spec.template.clone()));

    let mut members: BTreeMap<i32, &Pod> = BTreeMap::new();
    for pod in candidates {
        let Some(ordinal) = ordinal_of(set_name, pod) else { continue };
        match pods::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {}
            Some(_) => continue,
            None if !deleting
                && pod.metadata.deletion_timestamp.is_none()
                && pods::selects(Some(&spec.selector), pod.metadata.labels.as_ref()) =>
            {
                plan.adopt.push(name(pod));
            }
            None => continue,
        }
        members.insert(ordinal, pod);
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let running_ready = |p: &Pod| pods::phase(p) == Some("Running") && pods::is_ready(p);
    let available = |p: &Pod| running_ready(p) && pods::is_available(p, min_ready, now);
    let healthy = |p: &Pod| running_ready(p) && !terminating(p);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let range = start..start.saturating_add(replicas);
    let condemned: Vec<(i32, &Pod)> =
        members.iter().rev().filter(|(o, _)| !range.contains(o)).map(|(o, p)| (*o, *p)).collect();
    let first_unhealthy: Option<i32> = range
        .clone()
        .find(|o| members.get(o).is_none_or(|p| !healthy(p)))
        .or_else(|| condemned.iter().rev().find(|(_, p)| !healthy(p)).map(|(o, _)| *o));
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition);
    // Below this ordinal a missing pod comes back at the current revision (Kubernetes uses the current
    // replicas when no partition is set).
    let keep_current_below = match partition {
        _ if !rolling => i32::MIN,
        Some(p) => p,
        None => start.saturating_add(old.current_replicas.unwrap_or(0)),
    };

    let mut deleted: BTreeSet<String> = BTreeSet::new();
    if !deleting {
        'pass: {
            for ordinal in range.clone() {
                match members.get(&ordinal).copied() {
                    None => {
                        let (revision, template) = if ordinal < keep_current_below {
                            (&current, &current_template)
                        } else {
                            (&update, &spec.template)
                        };
                        plan.create.push(member_pod(set, spec, template, revision, ordinal));
                        if monotonic {
                            break 'pass;
                        }
                    }
                    Some(pod) if matches!(pods::phase(pod), Some("Failed" | "Succeeded")) => {
                        if !terminating(pod) {
                            deleted.insert(name(pod));
                        }
                        if monotonic {
                            break 'pass;
                        }
                    }
                    Some(pod) if terminating(pod) || !available(pod) => {
                        if monotonic {
                            break 'pass;
                        }
                    }
                    Some(pod) => {
                        let labels = pod.metadata.labels.as_ref();
                        if labels.and_then(|l| l.get(POD_NAME)) != pod.metadata.name.as_ref() {
                            plan.relabel.push((name(pod), identity_labels(set_name, ordinal)));
                        }
                    }
                }
            }
            for (ordinal, pod) in &condemned {
                if terminating(pod) {
                    if monotonic {
                        break 'pass;
                    }
                    continue;
                }
                if monotonic && !available(pod) && first_unhealthy != Some(*ordinal) {
                    break 'pass;
                }
                deleted.insert(name(pod));
                if monotonic {
                    break 'pass;
                }
            }
            if !rolling {
                break 'pass;
            }
            let lowest = partition.unwrap_or(0);
            for ordinal in range.clone().rev().take_while(|o| *o >= lowest) {
                // A pod created in this pass is not healthy yet.
                let Some(pod) = members.get(&ordinal).copied() else { break 'pass };
                let going = terminating(pod) || deleted.contains(&name(pod));
                if revision_of(pod) != Some(update.as_str()) && !going {
                    deleted.insert(name(pod));
                    break 'pass;
                }
                if going || !healthy(pod) {
                    break 'pass;
                }
            }
        }
    }
    // Deletions highest ordinal first, as they were decided.
    plan.delete = members.values().rev().map(|p| name(p)).filter(|n| deleted.contains(n)).collect();

    // Status.
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation.or(old.observed_generation),
        collision_count: Some(old.collision_count.unwrap_or(0)),
        conditions: old.conditions.clone(),
        current_revision: Some(current.clone()),
        update_revision: Some(update.clone()),
        ..Default::default()
    };
    let (mut ready, mut avail, mut at_current, mut at_update) = (0, 0, 0, 0);
    for pod in members.values() {
        status.replicas += 1;
        if running_ready(pod) {
            ready += 1;
            if available(pod) {
                avail += 1;
            }
        }
        if !terminating(pod) {
            let revision = revision_of(pod);
            at_current += i32::from(revision == Some(current.as_str()));
            at_update += i32::from(revision == Some(update.as_str()));
        }
    }
    if at_update == status.replicas && ready == status.replicas {
        at_current = at_update;
        status.current_revision = Some(update.clone());
    }
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(avail);
    status.current_replicas = Some(at_current);
    status.updated_replicas = Some(at_update);

    // Revisions beyond the limit that no pod runs.
    let mut keep: BTreeSet<&str> = members.values().filter_map(|p| revision_of(p)).collect();
    keep.insert(&update);
    keep.insert(&current);
    if let Some(c) = status.current_revision.as_deref() {
        keep.insert(c);
    }
    let keep: Vec<&str> = keep.into_iter().collect();
    plan.delete_revisions = history::trim(&mine, &keep, spec.revision_history_limit, |_| false);
    if deleting {
        plan.revision.create = None;
        plan.revision.renumber = None;
        plan.delete_revisions.clear();
    }

    if set.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    let owned: Vec<&Pod> = members.values().copied().collect();
    plan.requeue_after = crate::daemonsets::becomes_available(&owned, min_ready, now);
    plan
}

/// The pod's ordinal, when its name is `<set>-<ordinal>`.
pub fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let digits = name.strip_prefix(set)?.strip_prefix('-')?;
    let ordinal: i32 = digits.parse().ok()?;
    (ordinal >= 0 && ordinal.to_string() == digits).then_some(ordinal)
}

/// `<set>-<ordinal>`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The claims a member's pod mounts, from the set's volumeClaimTemplates: `<template>-<set>-<ordinal>`,
/// labelled with the template's labels and the set's selector's, as Kubernetes makes them.
pub fn member_claims(set: &StatefulSet, ordinal: i32) -> Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim> {
    let spec = set.spec.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let templates = spec.volume_claim_templates.unwrap_or_default();
    templates
        .into_iter()
        .map(|mut claim| {
            let template = claim.metadata.name.clone().unwrap_or_default();
            let mut labels = claim.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector.clone());
            claim.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(claim_name(&template, &set_name, ordinal)),
                namespace: set.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: claim.metadata.annotations.clone(),
                ..Default::default()
            };
            claim.status = None;
            claim
        })
        .collect()
}

/// `<template>-<set>-<ordinal>`, the claim a member's volume of that template names.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn identity_labels(set: &str, ordinal: i32) -> BTreeMap<String, String> {
    [(POD_NAME.to_string(), pod_name(set, ordinal)), (POD_INDEX.to_string(), ordinal.to_string())].into()
}

/// The member with `ordinal`, from `template` at `revision`.
fn member_pod(
    set: &StatefulSet,
    spec: &StatefulSetSpec,
    template: &PodTemplateSpec,
    revision: &str,
    ordinal: i32,
) -> Pod {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let name = pod_name(set_name, ordinal);
    let owner = pods::controller_reference("apps/v1", "StatefulSet", &set.metadata);
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    let mut pod = pods::pod_from_template(template, namespace, "", owner);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.extend(identity_labels(set_name, ordinal));
    labels.insert(REVISION_HASH.into(), revision.into());
    let pod_spec = pod.spec.get_or_insert_with(Default::default);
    pod_spec.hostname = Some(name);
    if let Some(service) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(service.into());
    }
    let claims = spec.volume_claim_templates.as_deref().unwrap_or_default();
    if !claims.is_empty() {
        let claimed: Vec<&str> = claims.iter().filter_map(|c| c.metadata.name.as_deref()).collect();
        let mut volumes: Vec<Volume> = claimed
            .iter()
            .map(|claim| Volume {
                name: claim.to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(claim, set_name, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            })
            .collect();
        let others = pod_spec.volumes.take().unwrap_or_default();
        volumes.extend(others.into_iter().filter(|v| !claimed.contains(&v.name.as_str())));
        pod_spec.volumes = Some(volumes);
    }
    pod
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}
