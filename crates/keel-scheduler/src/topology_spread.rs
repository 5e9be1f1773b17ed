//! PodTopologySpread: `whenUnsatisfiable: DoNotSchedule` constraints filter (the pod may not raise a
//! domain's count of matching pods more than maxSkew above the least-populated domain), `ScheduleAnyway`
//! constraints score (fewer matching pods in the node's domain is better), as kube-scheduler does.
//! Counting covers the pods in the incoming pod's namespace that are not terminating, on nodes that have
//! every constraint's topology key and pass the node-inclusion policies (nodeAffinityPolicy Honor and
//! nodeTaintsPolicy Ignore by default). Kubernetes' cluster-level default constraints are not applied.

use std::collections::HashMap;

use crate::filters::PodContext;
use crate::node_info::{NodeInfo, Snapshot, LABEL_HOSTNAME};
use crate::selectors::PodSelector;
use crate::unschedulable::Reason;

#[derive(Debug)]
struct Constraint {
    max_skew: i32,
    key: String,
    selector: PodSelector,
    min_domains: i32,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn includes(&self, pod: &PodContext, node: &NodeInfo) -> bool {
        (!self.honor_affinity || pod.matches_node_affinity(node))
            && (!self.honor_taints || pod.untolerated_taint(node).is_none())
    }

    /// Matching pods on the node (kube-scheduler's countPodsMatchSelector: an empty selector counts none).
    fn count(&self, pod: &PodContext, node: &NodeInfo) -> i64 {
        if self.selector.is_everything() {
            return 0;
        }
        node.pods
            .iter()
            .filter(|p| !p.terminating && p.namespace == pod.info.namespace && self.selector.matches(&p.labels))
            .count() as i64
    }
}

fn constraints(pod: &PodContext, hard: bool) -> Vec<Constraint> {
    let Some(spec) = pod.pod.spec.as_ref() else { return Vec::new() };
    spec.topology_spread_constraints
        .iter()
        .flatten()
        .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
        .map(|c| Constraint {
            max_skew: c.max_skew,
            key: c.topology_key.clone(),
            selector: PodSelector::compile(c.label_selector.as_ref())
                .and_label_keys(c.match_label_keys.as_deref().unwrap_or_default(), &pod.info.labels),
            min_domains: c.min_domains.unwrap_or(1),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
        .collect()
}

fn has_keys(constraints: &[Constraint], node: &NodeInfo) -> bool {
    constraints.iter().all(|c| node.labels.contains_key(&c.key))
}

/// The DoNotSchedule constraints with the counts per domain, computed once per decision.
#[derive(Debug)]
pub struct SpreadFilter {
    constraints: Vec<Constraint>,
    /// Per constraint: topology value → matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the global minimum (0 when there are fewer domains than minDomains).
    min: Vec<i64>,
    /// Per constraint: the incoming pod matches its own selector.
    self_match: Vec<i64>,
}

impl SpreadFilter {
    /// None when the pod has no DoNotSchedule constraint.
    pub fn new(pod: &PodContext, snapshot: &Snapshot) -> Option<SpreadFilter> {
        let constraints = constraints(pod, true);
        if constraints.is_empty() {
            return None;
        }
        let mut counts = vec![HashMap::<String, i64>::new(); constraints.len()];
        for node in snapshot.nodes().iter().filter(|n| has_keys(&constraints, n)) {
            for (c, counts) in constraints.iter().zip(&mut counts) {
                if c.includes(pod, node) {
                    *counts.entry(node.labels[&c.key].clone()).or_default() += c.count(pod, node);
                }
            }
        }
        let min = constraints
            .iter()
            .zip(&counts)
            .map(|(c, counts)| {
                if (counts.len() as i64) < i64::from(c.min_domains) {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        let self_match = constraints.iter().map(|c| i64::from(c.selector.matches(&pod.info.labels))).collect();
        Some(SpreadFilter { constraints, counts, min, self_match })
    }

    pub fn check(&self, node: &NodeInfo) -> Option<Reason> {
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.key) else { return Some(Reason::TopologySpreadMissingLabel) };
            let here = self.counts[i].get(value).copied().unwrap_or(0);
            if here + self.self_match[i] - self.min[i] > i64::from(c.max_skew) {
                return Some(Reason::TopologySpread);
            }
        }
        None
    }
}

/// ScheduleAnyway scores for the feasible nodes, normalized to 0–100 (kube-scheduler's PreScore, Score
/// and NormalizeScore). All zero when the pod has no ScheduleAnyway constraint.
pub fn score(pod: &PodContext, snapshot: &Snapshot, feasible: &[usize]) -> Vec<i64> {
    let constraints = constraints(pod, false);
    if constraints.is_empty() {
        return vec![0; feasible.len()];
    }
    let nodes = snapshot.nodes();
    // Domains among the feasible nodes; nodes missing a key are ignored (score 0).
    let ignored: Vec<bool> = feasible.iter().map(|&i| !has_keys(&constraints, &nodes[i])).collect();
    let mut pair_counts = vec![HashMap::<&str, i64>::new(); constraints.len()];
    for (&i, _) in feasible.iter().zip(&ignored).filter(|(_, ig)| !**ig) {
        for (c, counts) in constraints.iter().zip(&mut pair_counts) {
            if c.key != LABEL_HOSTNAME {
                counts.entry(nodes[i].labels[&c.key].as_str()).or_insert(0);
            }
        }
    }
    let considered = ignored.iter().filter(|i| !**i).count();
    let weights: Vec<f64> = constraints
        .iter()
        .zip(&pair_counts)
        .map(|(c, counts)| {
            let size = if c.key == LABEL_HOSTNAME { considered } else { counts.len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    // Count matching pods over all nodes in those domains.
    for node in nodes.iter().filter(|n| has_keys(&constraints, n)) {
        for (c, counts) in constraints.iter().zip(&mut pair_counts) {
            if c.key == LABEL_HOSTNAME || !c.includes(pod, node) {
                continue;
            }
            if let Some(n) = counts.get_mut(node.labels[&c.key].as_str()) {
                *n += c.count(pod, node);
            }
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|&i| {
            let node = &nodes[i];
            let mut s = 0.0;
            for ((c, counts), w) in constraints.iter().zip(&pair_counts).zip(&weights) {
                let Some(value) = node.labels.get(&c.key) else { continue };
                let cnt = if c.key == LABEL_HOSTNAME {
                    c.count(pod, node)
                } else {
                    counts.get(value.as_str()).copied().unwrap_or(0)
                };
                s += cnt as f64 * w + f64::from(c.max_skew - 1);
            }
            s.round() as i64
        })
        .collect();
    let considered_scores = raw.iter().zip(&ignored).filter(|(_, ig)| !**ig).map(|(s, _)| *s);
    let min = considered_scores.clone().min().unwrap_or(0);
    let max = considered_scores.max().unwrap_or(0);
    raw.iter()
        .zip(&ignored)
        .map(|(&s, &ig)| {
            if ig {
                0
            } else if max == 0 {
                100
            } else {
                100 * (max + min - s) / max
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::PodContext;
    use crate::tests::zone_node;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn web(name: &str, when: &str, max_skew: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [], "topologySpreadConstraints": [{
                "maxSkew": max_skew, "topologyKey": "zone", "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": {"app": "web"}}
            }]}
        }))
        .unwrap()
    }

    fn cluster() -> Snapshot {
        let mut s = Snapshot::new();
        s.upsert_node(&zone_node("a1", "a"));
        s.upsert_node(&zone_node("a2", "a"));
        s.upsert_node(&zone_node("b1", "b"));
        s
    }

    #[test]
    fn do_not_schedule_max_skew() {
        let mut s = cluster();
        s.assume(&web("w1", "DoNotSchedule", 1), "a1");
        let p = web("w2", "DoNotSchedule", 1);
        let ctx = PodContext::new(&p);
        let f = SpreadFilter::new(&ctx, &s).unwrap();
        // zone a has 1, zone b 0: another in a would make skew 2.
        assert_eq!(f.check(s.node("a2").unwrap()), Some(Reason::TopologySpread));
        assert_eq!(f.check(s.node("b1").unwrap()), None);
        // A pod in another namespace does not count.
        let mut other = web("o", "DoNotSchedule", 1);
        other.metadata.namespace = Some("other".into());
        s.assume(&other, "b1");
        let f = SpreadFilter::new(&ctx, &s).unwrap();
        assert_eq!(f.check(s.node("a2").unwrap()), Some(Reason::TopologySpread));
        // A node without the key cannot take the pod.
        let mut bare = zone_node("x", "x");
        bare.metadata.labels = None;
        s.upsert_node(&bare);
        let f = SpreadFilter::new(&ctx, &s).unwrap();
        assert_eq!(f.check(s.node("x").unwrap()), Some(Reason::TopologySpreadMissingLabel));
    }

    #[test]
    fn min_domains_makes_minimum_zero() {
        let mut s = Snapshot::new();
        s.upsert_node(&zone_node("a1", "a"));
        s.upsert_node(&zone_node("b1", "b"));
        s.assume(&web("w1", "DoNotSchedule", 1), "a1");
        s.assume(&web("w2", "DoNotSchedule", 1), "b1");
        let mut p = web("w3", "DoNotSchedule", 1);
        let ctx = PodContext::new(&p);
        assert_eq!(SpreadFilter::new(&ctx, &s).unwrap().check(s.node("a1").unwrap()), None);
        p.spec.as_mut().unwrap().topology_spread_constraints.as_mut().unwrap()[0].min_domains = Some(3);
        let ctx = PodContext::new(&p);
        // Only 2 of the 3 required domains exist: the minimum counts as 0, skew would be 2.
        assert_eq!(SpreadFilter::new(&ctx, &s).unwrap().check(s.node("a1").unwrap()), Some(Reason::TopologySpread));
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domain() {
        let mut s = cluster();
        s.assume(&web("w1", "ScheduleAnyway", 1), "a1");
        let p = web("w2", "ScheduleAnyway", 1);
        let ctx = PodContext::new(&p);
        assert!(SpreadFilter::new(&ctx, &s).is_none());
        let scores = score(&ctx, &s, &[0, 1, 2]);
        assert_eq!(scores[0], scores[1]);
        assert!(scores[2] > scores[0], "{scores:?}");
        assert_eq!(scores[2], 100);
    }
}
