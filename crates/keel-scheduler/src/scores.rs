//! The node-local scores, each 0–100 after normalization: NodeResourcesFit (LeastAllocated spreads,
//! MostAllocated packs; cpu and memory at weight 1, on requests with defaults for missing ones), preferred
//! node affinity, and TaintToleration (fewer untolerated PreferNoSchedule taints is better).

use crate::filters::{tolerates, PodContext};
use crate::node_info::NodeInfo;

pub const MAX_NODE_SCORE: i64 = 100;

/// How NodeResourcesFit scores a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scoring {
    /// Prefer the node with the most room left (spread; Kubernetes' default).
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (bin packing).
    MostAllocated,
}

/// NodeResourcesFit's score: the mean over cpu and memory of the free (or used) share after placing the pod.
pub fn resources(scoring: Scoring, pod: &PodContext, node: &NodeInfo) -> i64 {
    let want = &pod.info.resources.non_zero;
    let used = &node.non_zero_requested;
    let one = |requested: i64, capacity: i64| -> i64 {
        if capacity <= 0 {
            return 0;
        }
        match scoring {
            Scoring::LeastAllocated if requested > capacity => 0,
            Scoring::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
            Scoring::MostAllocated => requested.min(capacity) * MAX_NODE_SCORE / capacity,
        }
    };
    let cpu = one(used.milli_cpu + want.milli_cpu, node.allocatable.milli_cpu);
    let memory = one(used.memory + want.memory, node.allocatable.memory);
    (cpu + memory) / 2
}

/// Preferred node affinity: the sum of the weights of the matching preferred terms (raw; see [`normalize`]).
pub fn node_affinity_raw(pod: &PodContext, node: &NodeInfo) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|(_, t)| t.matches(&node.name, &node.labels))
        .map(|(w, _)| i64::from(*w))
        .sum()
}

/// TaintToleration: the PreferNoSchedule taints the pod does not tolerate (raw, fewer is better).
pub fn taint_toleration_raw(pod: &PodContext, node: &NodeInfo) -> i64 {
    if !node.prefer_no_schedule {
        return 0;
    }
    let prefer: Vec<_> = pod
        .tolerations
        .iter()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .collect();
    node.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !prefer.iter().any(|tol| tolerates(tol, t))).count()
        as i64
}

/// Kubernetes' DefaultNormalizeScore: scale so the highest raw score is 100 (reversed: the lowest is).
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            raw.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in raw {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_info::Snapshot;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    fn node(name: &str, extra: serde_json::Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"disk": "ssd"}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
        });
        if let Some(spec) = extra.get("spec") {
            v["spec"] = spec.clone();
        }
        if let Some(labels) = extra.get("labels") {
            v["metadata"]["labels"] = labels.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}});
        if let serde_json::Value::Object(m) = extra {
            for (k, x) in m {
                v["spec"][k] = x;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn least_and_most_allocated() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("n", json!({})));
        s.assume(&pod("a", "1", "2Gi", json!({})), "n");
        let p = pod("b", "1", "2Gi", json!({}));
        let ctx = PodContext::new(&p);
        // After placing b: cpu 2/4, memory 4/8 used.
        assert_eq!(resources(Scoring::LeastAllocated, &ctx, &s.nodes()[0]), 50);
        assert_eq!(resources(Scoring::MostAllocated, &ctx, &s.nodes()[0]), 50);
        let big = pod("c", "3", "6Gi", json!({}));
        let ctx = PodContext::new(&big);
        // cpu 4/4, memory 8/8.
        assert_eq!(resources(Scoring::LeastAllocated, &ctx, &s.nodes()[0]), 0);
        assert_eq!(resources(Scoring::MostAllocated, &ctx, &s.nodes()[0]), 100);
    }

    #[test]
    fn pods_without_requests_score_with_defaults() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("n", json!({})));
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}))
                .unwrap();
        let ctx = PodContext::new(&p);
        // 100m of 4000m, 200Mi of 8Gi.
        assert_eq!(resources(Scoring::MostAllocated, &ctx, &s.nodes()[0]), (2 + 2) / 2);
    }

    #[test]
    fn preferred_node_affinity() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("ssd", json!({})));
        s.upsert_node(&node("hdd", json!({"labels": {"disk": "hdd"}})));
        let p = pod(
            "p",
            "1",
            "1Gi",
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
            ]}}}),
        );
        let ctx = PodContext::new(&p);
        let mut raw: Vec<i64> = s.nodes().iter().map(|n| node_affinity_raw(&ctx, n)).collect();
        assert_eq!(raw, vec![25, 5]);
        normalize(&mut raw, false);
        assert_eq!(raw, vec![100, 20]);
    }

    #[test]
    fn prefer_no_schedule_taints() {
        let mut s = Snapshot::new();
        s.upsert_node(&node("clean", json!({})));
        s.upsert_node(&node("one", json!({"spec": {"taints": [{"key": "a", "effect": "PreferNoSchedule"}]}})));
        s.upsert_node(&node(
            "two",
            json!({"spec": {"taints": [
            {"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]}}),
        ));
        let p = pod("p", "1", "1Gi", json!({}));
        let ctx = PodContext::new(&p);
        let mut raw: Vec<i64> = s.nodes().iter().map(|n| taint_toleration_raw(&ctx, n)).collect();
        assert_eq!(raw, vec![0, 1, 2]);
        normalize(&mut raw, true);
        assert_eq!(raw, vec![100, 50, 0]);
        let tolerant = pod(
            "p",
            "1",
            "1Gi",
            json!({"tolerations": [{"key": "b", "operator": "Exists", "effect": "PreferNoSchedule"}]}),
        );
        let ctx = PodContext::new(&tolerant);
        assert_eq!(s.nodes().iter().map(|n| taint_toleration_raw(&ctx, n)).collect::<Vec<_>>(), vec![0, 1, 1]);
    }
}
