//! Why a pod fits no node, counted per reason over the nodes, and rendered as kube-scheduler renders its
//! FitError (the event and PodScheduled condition message): "0/3 nodes are available: 2 Insufficient cpu,
//! 1 node(s) had untolerated taint {key: value}. preemption: 0/3 nodes are available: 1 Preemption is not
//! helpful for scheduling, 2 No preemption victims found for incoming pod."

use std::collections::HashMap;
use std::fmt;

/// One filter's reason for refusing a node, worded as Kubernetes 1.33 words it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// NodeUnschedulable: the node is cordoned.
    NodeUnschedulable,
    /// NodeName: `spec.nodeName` names another node.
    NodeName,
    /// TaintToleration: the first NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint { key: String, value: String },
    /// NodeAffinity: `nodeSelector` or required node affinity.
    NodeAffinity,
    /// NodeResourcesFit: "cpu", "memory" or "ephemeral-storage".
    Insufficient(&'static str),
    /// NodeResourcesFit: allocatable `pods` reached.
    TooManyPods,
    /// PodTopologySpread: maxSkew would be exceeded.
    TopologySpread,
    /// PodTopologySpread: the node lacks a constraint's topology key.
    TopologySpreadMissingLabel,
    /// InterPodAffinity: no pod the pod needs is in the node's domain.
    PodAffinity,
    /// InterPodAffinity: a pod the pod must avoid is in the node's domain.
    PodAntiAffinity,
    /// InterPodAffinity: a pod in the node's domain must avoid this pod.
    ExistingPodsAntiAffinity,
    /// VolumeBinding: a claim the pod mounts does not exist.
    ClaimNotFound(String),
    /// VolumeBinding: a claim the pod mounts is being deleted.
    ClaimDeleting(String),
    /// VolumeBinding: a claim of an `Immediate` class is not bound yet.
    UnboundImmediateClaims,
    /// VolumeBinding: a bound claim's volume does not allow the node.
    VolumeNodeAffinityConflict,
}

impl Reason {
    /// Kubernetes' UnschedulableAndUnresolvable: removing pods from the node would not help.
    pub fn unresolvable(&self) -> bool {
        !matches!(
            self,
            Reason::Insufficient(_)
                | Reason::TooManyPods
                | Reason::TopologySpread
                | Reason::PodAntiAffinity
                | Reason::ExistingPodsAntiAffinity
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NodeUnschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::TopologySpread => f.write_str("node(s) didn't match pod topology spread constraints"),
            Reason::TopologySpreadMissingLabel => {
                f.write_str("node(s) didn't match pod topology spread constraints (missing required label)")
            }
            Reason::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingPodsAntiAffinity => f.write_str("node(s) didn't satisfy existing pods anti-affinity rules"),
            Reason::ClaimNotFound(name) => write!(f, "persistentvolumeclaim {name:?} not found"),
            Reason::ClaimDeleting(name) => write!(f, "persistentvolumeclaim {name:?} is being deleted"),
            Reason::UnboundImmediateClaims => f.write_str("pod has unbound immediate PersistentVolumeClaims"),
            Reason::VolumeNodeAffinityConflict => f.write_str("node(s) had volume node affinity conflict"),
        }
    }
}

/// No node fits the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// How many nodes refused the pod for each reason (a node can give several, e.g. cpu and memory).
    pub reasons: HashMap<Reason, usize>,
    /// Nodes whose refusal no preemption could change.
    pub unresolvable_nodes: usize,
    /// The pod has `preemptionPolicy: Never`.
    pub never_preempts: bool,
}

impl Unschedulable {
    pub(crate) fn new(nodes: usize, never_preempts: bool) -> Unschedulable {
        Unschedulable { nodes, reasons: HashMap::new(), unresolvable_nodes: 0, never_preempts }
    }

    pub(crate) fn record(&mut self, reasons: &[Reason]) {
        if reasons.iter().any(Reason::unresolvable) {
            self.unresolvable_nodes += 1;
        }
        for r in reasons {
            *self.reasons.entry(r.clone()).or_default() += 1;
        }
    }

    /// The nodes that failed for `reason`.
    pub fn count(&self, reason: &Reason) -> usize {
        self.reasons.get(reason).copied().unwrap_or(0)
    }
}

/// "count reason" parts sorted as strings, as kube-scheduler sorts its histogram.
fn histogram<'a>(parts: impl Iterator<Item = (String, usize)> + 'a) -> String {
    let mut v: Vec<String> = parts.filter(|(_, n)| *n > 0).map(|(r, n)| format!("{n} {r}")).collect();
    v.sort();
    v.join(", ")
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.nodes)?;
        let filters = histogram(self.reasons.iter().map(|(r, n)| (r.to_string(), *n)));
        if !filters.is_empty() {
            write!(f, " {filters}.")?;
        }
        // keel does not preempt (yet): the message says what kube-scheduler's preemption says when it finds
        // no lower-priority victims.
        if self.never_preempts {
            return f.write_str(" preemption: not eligible due to preemptionPolicy=Never.");
        }
        let resolvable = self.nodes - self.unresolvable_nodes;
        let preemption = histogram(
            [
                ("Preemption is not helpful for scheduling".to_string(), self.unresolvable_nodes),
                ("No preemption victims found for incoming pod".to_string(), resolvable),
            ]
            .into_iter(),
        );
        write!(f, " preemption: 0/{} nodes are available: {preemption}.", self.nodes)
    }
}

impl std::error::Error for Unschedulable {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_kube_scheduler() {
        let mut u = Unschedulable::new(3, false);
        u.record(&[Reason::Insufficient("cpu")]);
        u.record(&[Reason::Insufficient("cpu")]);
        u.record(&[Reason::UntoleratedTaint { key: "k".into(), value: "v".into() }]);
        assert_eq!(
            u.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn message_all_unresolvable_and_several_reasons_per_node() {
        let mut u = Unschedulable::new(2, false);
        u.record(&[Reason::UntoleratedTaint { key: "node-role.kubernetes.io/control-plane".into(), value: "".into() }]);
        u.record(&[Reason::NodeAffinity]);
        assert_eq!(
            u.to_string(),
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
        let mut u = Unschedulable::new(1, true);
        u.record(&[Reason::Insufficient("cpu"), Reason::Insufficient("memory")]);
        assert_eq!(
            u.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. \
             preemption: not eligible due to preemptionPolicy=Never."
        );
        assert_eq!(Unschedulable::new(0, false).to_string(), "no nodes available to schedule pods");
    }
}
