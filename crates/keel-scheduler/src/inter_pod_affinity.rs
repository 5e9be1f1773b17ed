//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, and the required
//! anti-affinity of pods already placed against it, over topology domains (filter); preferred terms of
//! both sides, and existing pods' required affinity at weight 1, as a score. Counts are built once per
//! decision from the nodes that have relevant pods, then each node is an O(terms) lookup.

use std::collections::HashMap;

use crate::filters::PodContext;
use crate::node_info::{AffinityTerm, NodeInfo, PodInfo, Snapshot};
use crate::unschedulable::Reason;

/// Kubernetes' `hardPodAffinityWeight` default.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// topology key → topology value → count (or score).
#[derive(Debug, Default)]
struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    fn add(&mut self, term: &AffinityTerm, node: &NodeInfo, n: i64) {
        if let Some(v) = node.labels.get(&term.topology_key) {
            *self.0.entry(term.topology_key.clone()).or_default().entry(v.clone()).or_default() += n;
        }
    }

    fn get(&self, key: &str, node: &NodeInfo) -> Option<i64> {
        let v = node.labels.get(key)?;
        Some(self.0.get(key).and_then(|m| m.get(v)).copied().unwrap_or(0))
    }

    /// Any key of the map with a positive count at the node's value for it.
    fn any_positive(&self, node: &NodeInfo) -> bool {
        self.0.iter().any(|(k, m)| node.labels.get(k).and_then(|v| m.get(v)).is_some_and(|n| *n > 0))
    }

    /// Sum over the map's keys of the node's domain's value.
    fn sum(&self, node: &NodeInfo) -> i64 {
        self.0.iter().filter_map(|(k, m)| node.labels.get(k).and_then(|v| m.get(v))).sum()
    }
}

#[derive(Debug)]
pub struct InterPodFilter<'a> {
    pod: &'a PodInfo,
    affinity: TopologyCounts,
    anti_affinity: TopologyCounts,
    existing_anti_affinity: TopologyCounts,
    self_affinity: bool,
}

impl<'a> InterPodFilter<'a> {
    /// None when neither the pod nor any placed pod has a required (anti-)affinity term.
    pub fn new(ctx: &'a PodContext, snapshot: &Snapshot) -> Option<InterPodFilter<'a>> {
        let pod = &ctx.info;
        let incoming = !(pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty());
        let mut f = InterPodFilter {
            pod,
            affinity: TopologyCounts::default(),
            anti_affinity: TopologyCounts::default(),
            existing_anti_affinity: TopologyCounts::default(),
            self_affinity: !pod.required_affinity.is_empty()
                && pod.required_affinity.iter().all(|t| t.matches(pod, snapshot.namespace_labels(&pod.namespace))),
        };
        let own_ns = snapshot.namespace_labels(&pod.namespace);
        let mut existing_any = false;
        for node in snapshot.nodes() {
            if !incoming && node.pods_with_required_anti_affinity == 0 {
                continue;
            }
            for p in &node.pods {
                for t in &p.required_anti_affinity {
                    if t.matches(pod, own_ns) {
                        f.existing_anti_affinity.add(t, node, 1);
                        existing_any = true;
                    }
                }
                if !incoming {
                    continue;
                }
                let ns = snapshot.namespace_labels(&p.namespace);
                if !pod.required_affinity.is_empty() && pod.required_affinity.iter().all(|t| t.matches(p, ns)) {
                    for t in &pod.required_affinity {
                        f.affinity.add(t, node, 1);
                    }
                }
                for t in &pod.required_anti_affinity {
                    if t.matches(p, ns) {
                        f.anti_affinity.add(t, node, 1);
                    }
                }
            }
        }
        (incoming || existing_any).then_some(f)
    }

    pub fn check(&self, node: &NodeInfo) -> Option<Reason> {
        let terms = &self.pod.required_affinity;
        if !terms.is_empty() {
            let mut pods_exist = true;
            for t in terms {
                match self.affinity.get(&t.topology_key, node) {
                    None => return Some(Reason::PodAffinity),
                    Some(n) if n <= 0 => pods_exist = false,
                    Some(_) => {}
                }
            }
            // The first of a group of pods with affinity to each other may go anywhere with the keys.
            let first_of_group = self.affinity.0.is_empty() && self.self_affinity;
            if !(pods_exist || first_of_group) {
                return Some(Reason::PodAffinity);
            }
        }
        if self
            .pod
            .required_anti_affinity
            .iter()
            .any(|t| self.anti_affinity.get(&t.topology_key, node).unwrap_or(0) > 0)
        {
            return Some(Reason::PodAntiAffinity);
        }
        if self.existing_anti_affinity.any_positive(node) {
            return Some(Reason::ExistingPodsAntiAffinity);
        }
        None
    }
}

/// Preferred inter-pod affinity scores for the feasible nodes, min–max normalized to 0–100.
pub fn score(ctx: &PodContext, snapshot: &Snapshot, feasible: &[usize]) -> Vec<i64> {
    let pod = &ctx.info;
    let own_terms = !(pod.preferred_affinity.is_empty() && pod.preferred_anti_affinity.is_empty());
    let own_ns = snapshot.namespace_labels(&pod.namespace);
    let mut scores = TopologyCounts::default();
    for node in snapshot.nodes() {
        if !own_terms && node.pods_with_affinity == 0 {
            continue;
        }
        for p in &node.pods {
            if !own_terms && !p.has_affinity() {
                continue;
            }
            let ns = snapshot.namespace_labels(&p.namespace);
            for (w, t) in &pod.preferred_affinity {
                if t.matches(p, ns) {
                    scores.add(t, node, i64::from(*w));
                }
            }
            for (w, t) in &pod.preferred_anti_affinity {
                if t.matches(p, ns) {
                    scores.add(t, node, -i64::from(*w));
                }
            }
            for t in &p.required_affinity {
                if t.matches(pod, own_ns) {
                    scores.add(t, node, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for (w, t) in &p.preferred_affinity {
                if t.matches(pod, own_ns) {
                    scores.add(t, node, i64::from(*w));
                }
            }
            for (w, t) in &p.preferred_anti_affinity {
                if t.matches(pod, own_ns) {
                    scores.add(t, node, -i64::from(*w));
                }
            }
        }
    }
    if scores.0.is_empty() {
        return vec![0; feasible.len()];
    }
    let nodes = snapshot.nodes();
    let raw: Vec<i64> = feasible.iter().map(|&i| scores.sum(&nodes[i])).collect();
    let min = raw.iter().copied().min().unwrap_or(0);
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter().map(|&s| if max > min { 100 * (s - min) / (max - min) } else { 0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::zone_node;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(name: &str, app: &str, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"containers": [], "affinity": affinity}
        }))
        .unwrap()
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn cluster() -> Snapshot {
        let mut s = Snapshot::new();
        s.upsert_node(&zone_node("a1", "a"));
        s.upsert_node(&zone_node("a2", "a"));
        s.upsert_node(&zone_node("b1", "b"));
        s
    }

    fn check(s: &Snapshot, p: &Pod, node: &str) -> Option<Reason> {
        let ctx = PodContext::new(p);
        InterPodFilter::new(&ctx, s).and_then(|f| f.check(s.node(node).unwrap()))
    }

    #[test]
    fn required_affinity_follows_the_domain() {
        let mut s = cluster();
        s.assume(&pod("db", "db", json!(null)), "a1");
        let p = pod(
            "web",
            "web",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
        );
        assert_eq!(check(&s, &p, "a2"), None, "same zone as the db");
        assert_eq!(check(&s, &p, "b1"), Some(Reason::PodAffinity));
        // Nothing matches anywhere and the pod does not match itself: nowhere.
        let lonely = pod(
            "web",
            "web",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}),
        );
        assert_eq!(check(&s, &lonely, "a1"), Some(Reason::PodAffinity));
        // The first of a self-affine group may go anywhere.
        let first = pod(
            "c1",
            "cache",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}),
        );
        assert_eq!(check(&s, &first, "b1"), None);
    }

    #[test]
    fn required_anti_affinity_of_incoming_pod() {
        let mut s = cluster();
        s.assume(&pod("w1", "web", json!(null)), "a1");
        let p = pod(
            "w2",
            "web",
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}),
        );
        assert_eq!(check(&s, &p, "a1"), Some(Reason::PodAntiAffinity));
        assert_eq!(check(&s, &p, "a2"), None);
        let zonal = pod(
            "w2",
            "web",
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}),
        );
        assert_eq!(check(&s, &zonal, "a2"), Some(Reason::PodAntiAffinity));
        assert_eq!(check(&s, &zonal, "b1"), None);
    }

    #[test]
    fn existing_pods_anti_affinity_against_incoming_pod() {
        let mut s = cluster();
        s.assume(
            &pod(
                "loner",
                "loner",
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}),
            ),
            "a1",
        );
        let p = pod("w", "web", json!(null));
        assert_eq!(check(&s, &p, "a2"), Some(Reason::ExistingPodsAntiAffinity));
        assert_eq!(check(&s, &p, "b1"), None);
        // Namespaces: the term names the loner's namespace only, so a pod elsewhere is not affected.
        let mut other = p.clone();
        other.metadata.namespace = Some("other".into());
        assert_eq!(check(&s, &other, "a2"), None);
    }

    #[test]
    fn namespace_selector() {
        let mut s = cluster();
        s.set_namespace_labels("team-a", [("team".to_string(), "a".to_string())].into());
        let mut db = pod("db", "db", json!(null));
        db.metadata.namespace = Some("team-a".into());
        s.assume(&db, "b1");
        let mut t = term("db", "zone");
        t["namespaceSelector"] = json!({"matchLabels": {"team": "a"}});
        let p = pod("web", "web", json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}));
        assert_eq!(check(&s, &p, "b1"), None);
        assert_eq!(check(&s, &p, "a1"), Some(Reason::PodAffinity));
    }

    #[test]
    fn preferred_affinity_and_anti_affinity_score() {
        let mut s = cluster();
        s.assume(&pod("db", "db", json!(null)), "b1");
        s.assume(&pod("noisy", "noisy", json!(null)), "a1");
        let p = pod(
            "web",
            "web",
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term("db", "zone")}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": term("noisy", "kubernetes.io/hostname")}]}
            }),
        );
        let ctx = PodContext::new(&p);
        // a1: -5, a2: 0, b1: +10.
        assert_eq!(score(&ctx, &s, &[0, 1, 2]), vec![0, 33, 100]);
        let plain = pod("x", "x", json!(null));
        assert_eq!(score(&PodContext::new(&plain), &s, &[0, 1, 2]), vec![0, 0, 0]);
    }
}
