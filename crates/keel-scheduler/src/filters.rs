//! The node-local filters, in kube-scheduler's order: NodeUnschedulable, NodeName, TaintToleration,
//! NodeAffinity, NodeResourcesFit. (PodTopologySpread and InterPodAffinity, which need cluster-wide counts,
//! live in their own modules.) Each reads a [`PodContext`] compiled once per decision and a [`NodeInfo`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use crate::node_info::{NodeInfo, PodInfo, TAINT_UNSCHEDULABLE};
use crate::selectors::{NodeTerm, NodeTerms};
use crate::unschedulable::Reason;

/// The pod being scheduled, compiled once per decision.
#[derive(Debug)]
pub struct PodContext<'a> {
    pub info: PodInfo,
    pub node_name: Option<&'a str>,
    pub node_selector: Option<&'a BTreeMap<String, String>>,
    pub required_node_affinity: Option<NodeTerms>,
    pub preferred_node_affinity: Vec<(i32, NodeTerm)>,
    pub tolerations: &'a [Toleration],
    pub never_preempts: bool,
    pub(crate) pod: &'a Pod,
}

impl<'a> PodContext<'a> {
    pub fn new(pod: &'a Pod) -> PodContext<'a> {
        let spec = pod.spec.as_ref();
        let node_affinity = spec.and_then(|s| s.affinity.as_ref()).and_then(|a| a.node_affinity.as_ref());
        PodContext {
            info: PodInfo::new(pod),
            node_name: spec.and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty()),
            node_selector: spec.and_then(|s| s.node_selector.as_ref()).filter(|s| !s.is_empty()),
            required_node_affinity: node_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
                .map(|s| NodeTerms(s.node_selector_terms.iter().map(NodeTerm::compile).collect())),
            preferred_node_affinity: node_affinity
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
                .into_iter()
                .flatten()
                .map(|p| (p.weight, NodeTerm::compile(&p.preference)))
                .collect(),
            tolerations: spec.and_then(|s| s.tolerations.as_deref()).unwrap_or_default(),
            never_preempts: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
            pod,
        }
    }

    /// The PersistentVolumeClaims the pod mounts, by name.
    pub fn claims(&self) -> Vec<String> {
        let volumes = self.pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default();
        volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref()).map(|c| c.claim_name.clone()).collect()
    }

    /// `nodeSelector` and required node affinity both hold on the node.
    pub fn matches_node_affinity(&self, node: &NodeInfo) -> bool {
        self.node_selector.is_none_or(|sel| sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)))
            && self.required_node_affinity.as_ref().is_none_or(|t| t.matches(&node.name, &node.labels))
    }

    /// The first NoSchedule or NoExecute taint on the node the pod does not tolerate.
    pub fn untolerated_taint<'n>(&self, node: &'n NodeInfo) -> Option<&'n Taint> {
        node.taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !self.tolerations.iter().any(|tol| tolerates(tol, t)))
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if tol.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn node_unschedulable(pod: &PodContext, node: &NodeInfo) -> Option<Reason> {
    if !node.unschedulable {
        return None;
    }
    let taint = Taint { key: TAINT_UNSCHEDULABLE.to_string(), effect: "NoSchedule".to_string(), ..Default::default() };
    (!pod.tolerations.iter().any(|t| tolerates(t, &taint))).then_some(Reason::NodeUnschedulable)
}

/// NodeName: a pod naming a node fits only there.
pub fn node_name(pod: &PodContext, node: &NodeInfo) -> Option<Reason> {
    pod.node_name.filter(|n| *n != node.name).map(|_| Reason::NodeName)
}

/// TaintToleration: NoSchedule and NoExecute taints must be tolerated (PreferNoSchedule only scores).
pub fn taint_toleration(pod: &PodContext, node: &NodeInfo) -> Option<Reason> {
    pod.untolerated_taint(node)
        .map(|t| Reason::UntoleratedTaint { key: t.key.clone(), value: t.value.clone().unwrap_or_default() })
}

/// NodeAffinity: `nodeSelector` and the required node-selector terms.
pub fn node_affinity(pod: &PodContext, node: &NodeInfo) -> Option<Reason> {
    (!pod.matches_node_affinity(node)).then_some(Reason::NodeAffinity)
}

/// NodeResourcesFit: pod count, then cpu, memory and ephemeral storage requests against what is left of
/// allocatable. Every shortfall is a reason; a pod requesting nothing only needs a pod slot.
pub fn resources_fit(pod: &PodContext, node: &NodeInfo, reasons: &mut Vec<Reason>) {
    if node.pods.len() as i64 + 1 > node.allowed_pods {
        reasons.push(Reason::TooManyPods);
    }
    let want = &pod.info.resources.requests;
    let free = node.allocatable.minus(&node.requested);
    if want.milli_cpu > 0 && want.milli_cpu > free.milli_cpu {
        reasons.push(Reason::Insufficient("cpu"));
    }
    if want.memory > 0 && want.memory > free.memory {
        reasons.push(Reason::Insufficient("memory"));
    }
    if want.ephemeral_storage > 0 && want.ephemeral_storage > free.ephemeral_storage {
        reasons.push(Reason::Insufficient("ephemeral-storage"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_info::Snapshot;
    use serde_json::json;

    pub(crate) fn node(v: serde_json::Value) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(v).unwrap()
    }

    pub(crate) fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn info(n: serde_json::Value) -> NodeInfo {
        let mut s = Snapshot::new();
        s.upsert_node(&node(n));
        s.nodes()[0].clone()
    }

    fn small_node(extra: serde_json::Value) -> NodeInfo {
        let mut n = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "10Gi"}}
        });
        merge(&mut n, extra);
        info(n)
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn node_unschedulable_filter() {
        let cordoned = small_node(json!({"spec": {"unschedulable": true}}));
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(node_unschedulable(&PodContext::new(&p), &cordoned), Some(Reason::NodeUnschedulable));
        assert_eq!(node_unschedulable(&PodContext::new(&p), &small_node(json!({}))), None);
        let tolerant = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}));
        assert_eq!(node_unschedulable(&PodContext::new(&tolerant), &cordoned), None);
    }

    #[test]
    fn node_name_filter() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeName": "n2"}}));
        assert_eq!(node_name(&PodContext::new(&p), &small_node(json!({}))), Some(Reason::NodeName));
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeName": "n1"}}));
        assert_eq!(node_name(&PodContext::new(&p), &small_node(json!({}))), None);
    }

    #[test]
    fn taint_toleration_filter() {
        let n = small_node(json!({"spec": {"taints": [
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "evict", "effect": "NoExecute"}
        ]}}));
        let plain = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(
            taint_toleration(&PodContext::new(&plain), &n),
            Some(Reason::UntoleratedTaint { key: "dedicated".into(), value: "gpu".into() })
        );
        let one = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert_eq!(
            taint_toleration(&PodContext::new(&one), &n),
            Some(Reason::UntoleratedTaint { key: "evict".into(), value: "".into() })
        );
        let wrong_value = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [
            {"key": "dedicated", "value": "cpu"}, {"key": "evict", "operator": "Exists"}]}}));
        assert!(taint_toleration(&PodContext::new(&wrong_value), &n).is_some());
        let all = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": [
            {"operator": "Exists"}]}}));
        assert_eq!(taint_toleration(&PodContext::new(&all), &n), None);
    }

    #[test]
    fn not_ready_node_has_not_ready_taint() {
        let n = small_node(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(
            taint_toleration(&PodContext::new(&p), &n),
            Some(Reason::UntoleratedTaint { key: "node.kubernetes.io/not-ready".into(), value: "".into() })
        );
    }

    #[test]
    fn node_affinity_filter() {
        let n = small_node(json!({}));
        let check = |spec: serde_json::Value| {
            let mut spec = spec;
            spec["containers"] = json!([]);
            node_affinity(&PodContext::new(&pod(json!({"metadata": {"name": "p"}, "spec": spec}))), &n)
        };
        assert_eq!(check(json!({"nodeSelector": {"zone": "a"}})), None);
        assert_eq!(check(json!({"nodeSelector": {"zone": "b"}})), Some(Reason::NodeAffinity));
        let required = |terms: serde_json::Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}});
        // Terms are ORed, expressions ANDed.
        assert_eq!(
            check(required(json!([
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                      {"key": "gpu", "operator": "DoesNotExist"}]}
            ]))),
            None
        );
        assert_eq!(
            check(required(json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                                        {"key": "gpu", "operator": "Exists"}]}]))),
            Some(Reason::NodeAffinity)
        );
        assert_eq!(
            check(required(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]))),
            None
        );
        // nodeSelector and affinity must both hold.
        let mut both = required(json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]));
        both["nodeSelector"] = json!({"zone": "b"});
        assert_eq!(check(both), Some(Reason::NodeAffinity));
    }

    #[test]
    fn resources_fit_filter() {
        let mut s = Snapshot::new();
        s.upsert_node(&node(json!({
            "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2", "ephemeral-storage": "1Gi"}}
        })));
        let sized = |name: &str, cpu: &str, mem: &str| {
            pod(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}))
        };
        let check = |s: &Snapshot, p: &Pod| {
            let mut r = Vec::new();
            resources_fit(&PodContext::new(p), &s.nodes()[0], &mut r);
            r
        };
        assert!(check(&s, &sized("a", "600m", "512Mi")).is_empty());
        s.assume(&sized("a", "600m", "512Mi"), "n1");
        assert_eq!(check(&s, &sized("b", "600m", "100Mi")), vec![Reason::Insufficient("cpu")]);
        assert_eq!(
            check(&s, &sized("b", "600m", "600Mi")),
            vec![Reason::Insufficient("cpu"), Reason::Insufficient("memory")]
        );
        let eph = pod(json!({"metadata": {"name": "e"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"ephemeral-storage": "2Gi"}}}]}}));
        assert_eq!(check(&s, &eph), vec![Reason::Insufficient("ephemeral-storage")]);
        // No requests: fits on resources, but still needs a pod slot.
        let empty = pod(json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}}));
        assert!(check(&s, &empty).is_empty());
        s.assume(&empty, "n1");
        assert_eq!(
            check(&s, &pod(json!({"metadata": {"name": "y"}, "spec": {"containers": []}}))),
            vec![Reason::TooManyPods]
        );
        // Removing a pod gives its resources back.
        s.remove_pod("default/a");
        s.remove_pod("default/x");
        assert!(check(&s, &sized("b", "1", "1Gi")).is_empty());
    }
}
