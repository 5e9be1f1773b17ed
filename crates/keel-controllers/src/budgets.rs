//! A PodDisruptionBudget's status, as kube-controller-manager's disruption controller computes it (pure):
//! how many pods are expected, how many must stay healthy, how many are, and so how many may be disrupted
//! now. Pods an eviction took in the last two minutes (`disruptedPods`) count as gone already, so two
//! evictions never spend the same disruption while the first pod is still shutting down.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_api::kinds::policy::scaled;
use serde_json::{json, Value};

/// How long an eviction's entry in `disruptedPods` holds its pod out of the healthy count.
pub const DISRUPTION_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// The status of `pdb` given the pods its selector picks (`pods`) and, for a percentage or a
/// maxUnavailable, the summed scale of their controllers (`scale`: `Err` says why there is none).
pub fn status(pdb: &PodDisruptionBudget, pods: &[Pod], scale: Result<i32, String>, now: jiff::Timestamp) -> Value {
    let spec = pdb.spec.clone().unwrap_or_default();
    let live = |name: &str| {
        pods.iter().any(|p| p.metadata.name.as_deref() == Some(name) && p.metadata.deletion_timestamp.is_none())
    };
    let disrupted: BTreeMap<String, String> = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| live(name) && now.duration_since(at.0) < DISRUPTION_WINDOW)
        .map(|(name, at)| (name, at.0.to_string()))
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .filter(|p| crate::pods::is_ready(p))
        .count() as i32;
    let counted = pods.len() as i32;
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => match scale {
            Ok(expected) => (expected, (expected - scaled(max, expected).unwrap_or(expected)).max(0)),
            Err(why) => return failed(pdb, healthy, counted, why),
        },
        (None, Some(IntOrString::Int(n))) => (counted, *n),
        (None, Some(min)) => match scale {
            Ok(expected) => (expected, scaled(min, expected).unwrap_or(expected)),
            Err(why) => return failed(pdb, healthy, counted, why),
        },
        (None, None) => (counted, 0),
    };
    let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
    let condition = if allowed > 0 {
        condition(pdb, "True", "SufficientPods", "")
    } else {
        condition(pdb, "False", "InsufficientPods", "")
    };
    let mut out = json!({
        "observedGeneration": pdb.metadata.generation.unwrap_or(0),
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "conditions": [condition],
    });
    if !disrupted.is_empty() {
        out["disruptedPods"] = json!(disrupted);
    }
    out
}

/// A status that allows nothing, saying why (kube's `SyncFailed`).
fn failed(pdb: &PodDisruptionBudget, healthy: i32, expected: i32, why: String) -> Value {
    json!({
        "observedGeneration": pdb.metadata.generation.unwrap_or(0),
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": 0,
        "disruptionsAllowed": 0,
        "conditions": [condition(pdb, "False", "SyncFailed", &why)],
    })
}

/// The `DisruptionAllowed` condition, its transition time kept while its status does not change.
fn condition(pdb: &PodDisruptionBudget, status: &str, reason: &str, message: &str) -> Value {
    let previous = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.0.to_string());
    let since = previous.unwrap_or_else(|| keel_api::meta::timestamp(jiff::Timestamp::now()));
    json!({"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
        "observedGeneration": pdb.metadata.generation.unwrap_or(0), "lastTransitionTime": since})
}

/// Whether the budget's numbers differ from `status` (conditions' times aside): whether to write it.
pub fn changed(pdb: &PodDisruptionBudget, status: &Value) -> bool {
    let current = serde_json::to_value(pdb.status.clone().unwrap_or_default()).unwrap_or_default();
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(conditions) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conditions {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
        if let Some(map) = v.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        v
    };
    strip(&current) != strip(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    fn budget(spec: Value, status: Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 2}, "spec": spec, "status": status}))
            .unwrap()
    }

    fn now() -> jiff::Timestamp {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_min_available_count_allows_what_is_healthy_beyond_it() {
        let pdb = budget(json!({"minAvailable": 2}), json!({}));
        let pods = [pod("a", true), pod("b", true), pod("c", true), pod("d", false)];
        let s = status(&pdb, &pods, Err("not needed".into()), now());
        assert_eq!((s["expectedPods"].clone(), s["currentHealthy"].clone()), (json!(4), json!(3)));
        assert_eq!((s["desiredHealthy"].clone(), s["disruptionsAllowed"].clone()), (json!(2), json!(1)));
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["conditions"][0]["reason"], "SufficientPods");
        let s = status(&pdb, &pods[..2], Err("".into()), now());
        assert_eq!(
            (s["disruptionsAllowed"].clone(), s["conditions"][0]["reason"].clone()),
            (json!(0), json!("InsufficientPods"))
        );
    }

    #[test]
    fn percentages_and_max_unavailable_go_by_the_controllers_scale() {
        let pods = [pod("a", true), pod("b", true), pod("c", true)];
        let s = status(&budget(json!({"maxUnavailable": 1}), json!({})), &pods, Ok(3), now());
        assert_eq!((s["desiredHealthy"].clone(), s["disruptionsAllowed"].clone()), (json!(2), json!(1)));
        let s = status(&budget(json!({"minAvailable": "50%"}), json!({})), &pods, Ok(3), now());
        assert_eq!((s["desiredHealthy"].clone(), s["disruptionsAllowed"].clone()), (json!(2), json!(1)));
        let s = status(
            &budget(json!({"maxUnavailable": "10%"}), json!({})),
            &pods,
            Err("found no controllers".into()),
            now(),
        );
        assert_eq!(
            (s["disruptionsAllowed"].clone(), s["conditions"][0]["reason"].clone()),
            (json!(0), json!("SyncFailed"))
        );
    }

    #[test]
    fn a_pod_an_eviction_took_counts_as_gone_for_two_minutes() {
        let pods = [pod("a", true), pod("b", true), pod("c", true)];
        let taken = budget(json!({"minAvailable": 2}), json!({"disruptedPods": {"a": "2026-12-07T11:59:30Z"}}));
        let s = status(&taken, &pods, Err("".into()), now());
        assert_eq!((s["currentHealthy"].clone(), s["disruptionsAllowed"].clone()), (json!(2), json!(0)));
        assert_eq!(s["disruptedPods"]["a"], "2026-12-07T11:59:30Z");
        let later: jiff::Timestamp = "2026-12-07T12:02:00Z".parse().unwrap();
        let s = status(&taken, &pods, Err("".into()), later);
        assert_eq!(s["disruptionsAllowed"], 1);
        assert!(s.get("disruptedPods").is_none());
        assert!(changed(&taken, &s));
    }
}
