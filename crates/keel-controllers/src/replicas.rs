//! The ReplicaSet controller's decision, pure: given a ReplicaSet and the pods its selector finds, how many
//! pods to create, which to delete, which orphans to adopt, and the status to report.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::pods;

/// At most this many pods are created or deleted in one pass (Kubernetes' burstReplicas).
pub const BURST: usize = 500;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: usize,
    /// Pods (names) to delete, the least established first.
    pub delete: Vec<String>,
    /// Matching pods without a controller, to take over.
    pub adopt: Vec<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<ReplicaSetStatus>,
    /// Look again after this long even if nothing changes (a pod becomes available after minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// One pass over `rs`, whose selector found `candidates` in its namespace.
pub fn plan(rs: &ReplicaSet, candidates: &[Pod], now: jiff::Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = rs.spec.as_ref() else { return plan };
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in candidates {
        match pods::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => owned.push(pod),
            Some(_) => {}
            None if !deleting
                && pod.metadata.deletion_timestamp.is_none()
                && pods::selects(Some(&spec.selector), pod.metadata.labels.as_ref()) =>
            {
                plan.adopt.push(pod.metadata.name.clone().unwrap_or_default());
                owned.push(pod);
            }
            None => {}
        }
    }
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| pods::is_active(p)).collect();
    let wanted = spec.replicas.unwrap_or(1).max(0) as usize;
    if !deleting {
        if active.len() < wanted {
            plan.create = (wanted - active.len()).min(BURST);
        } else if active.len() > wanted {
            active.sort_by(|a, b| pods::deletion_order(a, b));
            let excess = (active.len() - wanted).min(BURST);
            plan.delete = active[..excess].iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        }
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref());
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels.into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let available = active.iter().filter(|p| pods::is_available(p, min_ready, now)).count();
    if min_ready > 0 {
        // The soonest a ready pod that is not yet available becomes so.
        plan.requeue_after = active
            .iter()
            .filter_map(|p| pods::ready_since(p).flatten())
            .map(|since| since + jiff::SignedDuration::from_secs(min_ready as i64))
            .filter(|at| *at > now)
            .min()
            .and_then(|at| Duration::try_from(at.duration_since(now)).ok());
    }
    let old = rs.status.clone().unwrap_or_default();
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: rs.metadata.generation.or(old.observed_generation),
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if status != old {
        plan.status = Some(status);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn labels() -> std::collections::BTreeMap<String, String> {
        [("app".to_string(), "web".to_string())].into()
    }

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("rs-uid".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector { match_labels: Some(labels()), ..Default::default() },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(labels()), ..Default::default() }),
                    spec: None,
                }),
                min_ready_seconds: None,
            }),
            status: None,
        }
    }

    fn pod(name: &str, owner: Option<&str>, ready: bool) -> Pod {
        let mut p = Pod {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels()), ..Default::default() },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(now())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        };
        if let Some(uid) = owner {
            let mut r = pods::controller_reference("apps/v1", "ReplicaSet", &ObjectMeta::default());
            r.uid = uid.into();
            p.metadata.owner_references = Some(vec![r]);
        }
        p
    }

    #[test]
    fn creates_the_missing_pods_up_to_the_burst() {
        assert_eq!(plan(&rs(3), &[], now()).create, 3);
        assert_eq!(plan(&rs(3), &[pod("a", Some("rs-uid"), true)], now()).create, 2);
        assert_eq!(plan(&rs(2000), &[], now()).create, BURST);
    }

    #[test]
    fn deletes_the_excess_least_ready_first_and_ignores_finished_and_foreign_pods() {
        let mut failed = pod("failed", Some("rs-uid"), false);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods =
            [pod("a", Some("rs-uid"), true), pod("b", Some("rs-uid"), false), pod("c", Some("other"), true), failed];
        let p = plan(&rs(1), &pods, now());
        assert_eq!(p.create, 0);
        assert_eq!(p.delete, ["b"]);
        let p = plan(&rs(2), &pods, now());
        assert_eq!((p.create, p.delete.len()), (0, 0));
    }

    #[test]
    fn adopts_matching_orphans() {
        let p = plan(&rs(1), &[pod("orphan", None, true)], now());
        assert_eq!(p.adopt, ["orphan"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn status_counts_and_is_written_only_when_it_changes() {
        let pods = [pod("a", Some("rs-uid"), true), pod("b", Some("rs-uid"), false)];
        let mut r = rs(2);
        let status = plan(&r, &pods, now()).status.unwrap();
        assert_eq!(status.replicas, 2);
        assert_eq!(status.ready_replicas, Some(1));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(2));
        r.status = Some(status);
        assert_eq!(plan(&r, &pods, now()).status, None);
    }

    #[test]
    fn min_ready_seconds_delays_availability_and_asks_to_look_again() {
        let mut r = rs(1);
        r.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let p = plan(&r, &[pod("a", Some("rs-uid"), true)], now());
        assert_eq!(p.status.unwrap().available_replicas, Some(0));
        assert_eq!(p.requeue_after, Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_replicaset_being_deleted_creates_nothing() {
        let mut r = rs(3);
        r.metadata.deletion_timestamp = Some(Time(now()));
        let p = plan(&r, &[pod("orphan", None, true)], now());
        assert_eq!((p.create, p.adopt.len()), (0, 0));
    }
}
