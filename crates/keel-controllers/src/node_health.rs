//! The node lifecycle controller's decisions, pure: when a node has been silent (no Lease renewal, no status
//! heartbeat) for longer than the grace period, its conditions become Unknown; a node's Ready condition sets
//! its `not-ready` / `unreachable` taints (NoSchedule and NoExecute, as Kubernetes' TaintNodesByCondition
//! and taint-based eviction do; the NoExecute one when the node's zone lets it, [`NoExecute`]); and a pod on a
//! node with NoExecute taints is evicted at once when it does not tolerate one, after its tolerationSeconds
//! when it does, or never when it tolerates them for good.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keel_scheduler::tolerates;

/// The taint of a node whose Ready condition is Unknown (its kubelet stopped reporting).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The conditions a silent node has set to Unknown (those a kubelet reports).
const REPORTED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// What to change on one node.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodePlan {
    /// The node's new status conditions, when it went silent.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The node's new taints, when they change.
    pub taints: Option<Vec<Taint>>,
}

impl NodePlan {
    pub fn is_empty(&self) -> bool {
        self.conditions.is_none() && self.taints.is_none()
    }
}

/// The status of `node`'s Ready condition ("True", "False", "Unknown"; "Unknown" when absent).
pub fn ready_status(node: &Node) -> &str {
    conditions(node).iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str()).unwrap_or("Unknown")
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default()
}

/// What may happen to a not-Ready node's NoExecute taint this pass (decided by its zone: [`crate::disruption`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExecute {
    /// Add the NoExecute taint the node's Ready condition calls for: its turn in its zone's queue came.
    Add,
    /// Keep (or swap between `not-ready` and `unreachable`) one already there, but add none: the node waits
    /// its turn.
    Wait,
    /// Remove this controller's NoExecute taints and add none: every zone is fully disrupted.
    Lift,
}

/// One pass over `node`, which this controller has heard nothing new from for `silent_for`.
pub fn plan(
    node: &Node,
    silent_for: Duration,
    grace: Duration,
    now: jiff::Timestamp,
    no_execute: NoExecute,
) -> NodePlan {
    let conditions = silent_conditions(node, silent_for, grace, now);
    let ready = if conditions.is_some() { "Unknown" } else { ready_status(node) };
    let taints = plan_taints(current_taints(node), ready, now, no_execute);
    NodePlan { conditions, taints }
}

/// The node's conditions set to Unknown, when it has been silent longer than `grace` and they are not
/// already (or it never reported).
pub fn silent_conditions(
    node: &Node,
    silent_for: Duration,
    grace: Duration,
    now: jiff::Timestamp,
) -> Option<Vec<NodeCondition>> {
    let never_reported = !conditions(node).iter().any(|c| c.type_ == "Ready");
    (silent_for > grace && (ready_status(node) != "Unknown" || never_reported))
        .then(|| unknown_conditions(conditions(node), now))
}

pub fn current_taints(node: &Node) -> &[Taint] {
    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

fn is_ours(t: &Taint) -> bool {
    t.key == UNREACHABLE || t.key == NOT_READY
}

/// Whether a node whose Ready condition is `ready` waits for its NoExecute taint: not Ready, and none of
/// this controller's NoExecute taints yet.
pub fn wants_no_execute(taints: &[Taint], ready: &str) -> bool {
    ready != "True" && !taints.iter().any(|t| is_ours(t) && t.effect == "NoExecute")
}

/// The node's taints for its Ready condition `ready` (None when unchanged): the NoSchedule taint at once
/// (TaintNodesByCondition), the NoExecute one as `no_execute` allows.
pub fn plan_taints(current: &[Taint], ready: &str, now: jiff::Timestamp, no_execute: NoExecute) -> Option<Vec<Taint>> {
    let key = match ready {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let has_no_execute = current.iter().any(|t| is_ours(t) && t.effect == "NoExecute");
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if let Some(key) = key {
        wanted.push((key, "NoSchedule"));
        let add = match no_execute {
            NoExecute::Add => true,
            NoExecute::Wait => has_no_execute,
            NoExecute::Lift => false,
        };
        if add {
            wanted.push((key, "NoExecute"));
        }
    }
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !is_ours(t) || wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            let time_added = (effect == "NoExecute").then_some(Time(now));
            taints.push(Taint { key: key.to_string(), effect: effect.to_string(), time_added, value: None });
        }
    }
    (taints != current).then_some(taints)
}

/// The kubelet-reported conditions set to Unknown, as Kubernetes' node lifecycle controller sets them
/// (heartbeats kept; a condition never reported is added).
fn unknown_conditions(current: &[NodeCondition], now: jiff::Timestamp) -> Vec<NodeCondition> {
    let mut out: Vec<NodeCondition> = current.to_vec();
    for kind in REPORTED {
        match out.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            None => out.push(NodeCondition {
                type_: kind.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
    out
}

/// What becomes of a pod on a node with taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Keep,
    Now,
    At(jiff::Timestamp),
}

/// Taint-based eviction of `pod` from a node tainted `taints`: every NoExecute taint must be tolerated; a
/// toleration with `tolerationSeconds` lasts that long from when the taint was added. Pods already going
/// (deletionTimestamp) or finished are left alone.
pub fn eviction(pod: &Pod, taints: &[Taint], now: jiff::Timestamp) -> Eviction {
    if pod.metadata.deletion_timestamp.is_some() {
        return Eviction::Keep;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Eviction::Keep;
    }
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let mut due: Option<jiff::Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations.iter().filter(|tol| tolerates(tol, taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        if matching.iter().any(|tol| tol.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = matching.iter().filter_map(|tol| tol.toleration_seconds).min().unwrap_or(0).max(0);
        let since = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = since + jiff::SignedDuration::from_secs(seconds);
        due = Some(due.map_or(at, |d| d.min(at)));
    }
    match due {
        None => Eviction::Keep,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn node(ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "reason": "KubeletReady",
                 "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"},
            ]},
        }))
        .unwrap()
    }

    const NOW: &str = "2026-01-01T00:01:00Z";

    #[test]
    fn a_node_heard_from_within_grace_is_left_alone() {
        let plan =
            plan(&node("True", json!([])), Duration::from_secs(19), Duration::from_secs(20), t(NOW), NoExecute::Add);
        assert!(plan.is_empty());
    }

    #[test]
    fn a_silent_node_goes_unknown_and_is_tainted_unreachable() {
        let plan =
            plan(&node("True", json!([])), Duration::from_secs(21), Duration::from_secs(20), t(NOW), NoExecute::Add);
        let conditions = plan.conditions.unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.last_transition_time, Some(Time(t(NOW))));
        assert_eq!(ready.last_heartbeat_time, Some(Time(t("2026-01-01T00:00:00Z"))), "heartbeat kept");
        let memory = conditions.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(memory.status, "Unknown");
        let added = conditions.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(added.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        let taints = plan.taints.unwrap();
        assert_eq!(taints.len(), 2);
        assert!(taints.iter().any(|t| t.key == UNREACHABLE && t.effect == "NoSchedule" && t.time_added.is_none()));
        let no_execute = taints.iter().find(|t| t.effect == "NoExecute").unwrap();
        assert_eq!((no_execute.key.as_str(), no_execute.time_added.clone()), (UNREACHABLE, Some(Time(t(NOW)))));
    }

    #[test]
    fn an_unknown_node_keeps_its_taints_and_conditions() {
        let taints = json!([
            {"key": UNREACHABLE, "effect": "NoSchedule"},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:30Z"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        ]);
        let plan =
            plan(&node("Unknown", taints), Duration::from_secs(90), Duration::from_secs(20), t(NOW), NoExecute::Add);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_node_ready_again_loses_only_its_condition_taints() {
        let taints = json!([
            {"key": UNREACHABLE, "effect": "NoSchedule"},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:30Z"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        ]);
        let plan = plan(&node("True", taints), Duration::ZERO, Duration::from_secs(20), t(NOW), NoExecute::Add);
        assert_eq!(plan.conditions, None);
        let taints = plan.taints.unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, "dedicated");
    }

    #[test]
    fn a_not_ready_node_is_tainted_not_ready_in_place_of_unreachable() {
        let taints = json!([{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:30Z"}]);
        let plan = plan(&node("False", taints), Duration::ZERO, Duration::from_secs(20), t(NOW), NoExecute::Add);
        let taints = plan.taints.unwrap();
        let keys: Vec<_> = taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]);
    }

    #[test]
    fn a_node_waiting_its_turn_gets_only_its_no_schedule_taint() {
        let plan =
            plan(&node("True", json!([])), Duration::from_secs(21), Duration::from_secs(20), t(NOW), NoExecute::Wait);
        let taints = plan.taints.unwrap();
        let keys: Vec<_> = taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [(UNREACHABLE, "NoSchedule")]);
        assert!(wants_no_execute(&taints, "Unknown"));
        assert!(!wants_no_execute(&taints, "True"));
    }

    #[test]
    fn waiting_keeps_a_no_execute_taint_already_there_and_swaps_its_key() {
        let taints: Vec<Taint> = serde_json::from_value(json!([
            {"key": UNREACHABLE, "effect": "NoSchedule"},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:30Z"},
        ]))
        .unwrap();
        assert_eq!(plan_taints(&taints, "Unknown", t(NOW), NoExecute::Wait), None);
        assert!(!wants_no_execute(&taints, "Unknown"));
        let swapped = plan_taints(&taints, "False", t(NOW), NoExecute::Wait).unwrap();
        let keys: Vec<_> = swapped.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]);
    }

    #[test]
    fn lifting_removes_only_the_no_execute_taints_of_this_controller() {
        let taints: Vec<Taint> = serde_json::from_value(json!([
            {"key": UNREACHABLE, "effect": "NoSchedule"},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:30Z"},
            {"key": "dedicated", "effect": "NoExecute"},
        ]))
        .unwrap();
        let lifted = plan_taints(&taints, "Unknown", t(NOW), NoExecute::Lift).unwrap();
        let keys: Vec<_> = lifted.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [(UNREACHABLE, "NoSchedule"), ("dedicated", "NoExecute")]);
        assert_eq!(plan_taints(&lifted, "Unknown", t(NOW), NoExecute::Lift), None);
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}], "tolerations": tolerations},
            "status": {"phase": "Running"},
        }))
        .unwrap()
    }

    fn unreachable(added: &str) -> Vec<Taint> {
        serde_json::from_value(json!([
            {"key": UNREACHABLE, "effect": "NoSchedule"},
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added},
        ]))
        .unwrap()
    }

    #[test]
    fn eviction_waits_for_the_toleration_seconds_from_when_the_taint_was_added() {
        let p =
            pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]));
        let taints = unreachable("2026-01-01T00:00:50Z");
        assert_eq!(eviction(&p, &taints, t(NOW)), Eviction::At(t("2026-01-01T00:01:20Z")));
        assert_eq!(eviction(&p, &taints, t("2026-01-01T00:01:20Z")), Eviction::Now);
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_at_once_and_no_schedule_taints_never_do() {
        assert_eq!(eviction(&pod(json!([])), &unreachable("2026-01-01T00:00:50Z"), t(NOW)), Eviction::Now);
        let only_no_schedule: Vec<Taint> =
            serde_json::from_value(json!([{"key": UNREACHABLE, "effect": "NoSchedule"}])).unwrap();
        assert_eq!(eviction(&pod(json!([])), &only_no_schedule, t(NOW)), Eviction::Keep);
    }

    #[test]
    fn a_toleration_without_seconds_keeps_the_pod_for_good() {
        let p = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction(&p, &unreachable("2026-01-01T00:00:00Z"), t(NOW)), Eviction::Keep);
    }

    #[test]
    fn the_shortest_matching_toleration_counts_and_every_no_execute_taint_must_be_tolerated() {
        let p = pod(json!([
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
        ]));
        assert_eq!(eviction(&p, &unreachable("2026-01-01T00:00:55Z"), t(NOW)), Eviction::At(t("2026-01-01T00:01:05Z")));
        let p = pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]));
        let mut taints = unreachable("2026-01-01T00:00:55Z");
        taints.push(Taint { key: "other".into(), effect: "NoExecute".into(), ..Default::default() });
        assert_eq!(eviction(&p, &taints, t(NOW)), Eviction::Now);
    }

    #[test]
    fn pods_already_going_or_finished_are_left_alone() {
        let mut p = pod(json!([]));
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(eviction(&p, &unreachable("2026-01-01T00:00:00Z"), t(NOW)), Eviction::Keep);
        let mut p = pod(json!([]));
        p.metadata.deletion_timestamp = Some(Time(t(NOW)));
        assert_eq!(eviction(&p, &unreachable("2026-01-01T00:00:00Z"), t(NOW)), Eviction::Keep);
    }
}
