//! What the controllers ask of pods and owners, pure: activity, readiness and availability as Kubernetes
//! counts them, controller references, a pod from a template, selectors as `?labelSelector=` strings, and the
//! order in which pods are given up when scaling down.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time};
use keel_api::selector::LabelSelector as ParsedSelector;

/// Neither finished (Succeeded/Failed) nor being deleted: it counts toward its owner's replicas.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), Some("Succeeded" | "Failed"))
}

pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// When the pod's Ready condition turned True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (a Ready condition without a time counts as available).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => since + jiff::SignedDuration::from_secs(min_ready_seconds as i64) <= now,
    }
}

/// The owner reference that marks the object's controller.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` (blocking its foreground deletion, as Kubernetes' controllers set).
pub fn controller_reference(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod from `template`, named by the server from `generate_name`, controlled by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// A selector as `?labelSelector=` carries it; `None` for a missing or malformed one (it selects nothing).
/// An empty selector is `Some("")`, which selects everything.
pub fn selector_query(selector: Option<&LabelSelector>) -> Option<String> {
    compile(selector).map(|(query, _)| query)
}

/// Whether `labels` match `selector` (a missing or malformed selector matches nothing).
pub fn selects(selector: Option<&LabelSelector>, labels: Option<&BTreeMap<String, String>>) -> bool {
    compile(selector).is_some_and(|(_, parsed)| parsed.matches(labels.unwrap_or(&BTreeMap::new())))
}

/// A selector as a query string and compiled (keel-api's one conversion).
fn compile(selector: Option<&LabelSelector>) -> Option<(String, ParsedSelector)> {
    let parsed = ParsedSelector::from_api(selector?).ok()?;
    Some((parsed.to_string(), parsed))
}

/// Kubernetes' order for giving pods up (controller.ActivePods): unassigned before assigned, Pending before
/// Unknown before Running, not ready before ready, ready for less time before longer, more restarts before
/// fewer, newer before older. The first pods in this order are deleted first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase_rank = |p: &Pod| match phase(p) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t: &Time| t.0);
    let ready_at = |p: &Pod| ready_since(p).flatten();
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        // Ready more recently goes first.
        .then(ready_at(b).cmp(&ready_at(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    pub(crate) fn pod(name: &str, node: Option<&str>, phase: &str, ready: Option<jiff::Timestamp>) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PodSpec { node_name: node.map(Into::into), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(t)),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let p = pod("a", Some("n"), "Running", Some(t0));
        assert!(is_ready(&p));
        assert!(is_available(&p, 0, t0));
        assert!(!is_available(&p, 10, t0 + jiff::SignedDuration::from_secs(9)));
        assert!(is_available(&p, 10, t0 + jiff::SignedDuration::from_secs(10)));
        assert!(!is_available(&pod("b", Some("n"), "Running", None), 0, t0));
    }

    #[test]
    fn selectors_become_queries() {
        let s = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement { key: "canary".into(), operator: "DoesNotExist".into(), values: None },
            ]),
        };
        assert_eq!(selector_query(Some(&s)).unwrap(), "app=web,tier in (a,b),!canary");
        let labels: BTreeMap<String, String> = [("app".into(), "web".into()), ("tier".into(), "b".into())].into();
        assert!(selects(Some(&s), Some(&labels)));
        assert!(!selects(None, Some(&labels)));
        assert!(selects(Some(&LabelSelector::default()), None));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(selector_query(Some(&bad)), None);
    }

    #[test]
    fn scale_down_gives_up_the_least_established_pods_first() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later = t0 + jiff::SignedDuration::from_secs(60);
        let mut pods = [
            pod("ready-long", Some("n"), "Running", Some(t0)),
            pod("ready-recent", Some("n"), "Running", Some(later)),
            pod("running-not-ready", Some("n"), "Running", None),
            pod("pending", Some("n"), "Pending", None),
            pod("unassigned", None, "Pending", None),
        ];
        pods.reverse();
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["unassigned", "pending", "running-not-ready", "ready-recent", "ready-long"]);
    }
}
