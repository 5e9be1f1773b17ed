//! kube-scheduler's VolumeBinding filter, for what keel provisions: each PersistentVolumeClaim a pod mounts
//! must exist and not be being deleted; a bound claim's volume must allow the node (its required node
//! affinity: a local volume lives on one node); an unbound claim of a `WaitForFirstConsumer` class goes
//! wherever the pod goes (the loop then names that node on the claim, and the volume is provisioned
//! there); an unbound claim of an `Immediate` class waits for its binding.

use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolumeClaim};

use crate::node_info::{NodeInfo, Snapshot};
use crate::selectors::{NodeTerm, NodeTerms};
use crate::{PodContext, Reason};

/// What the scheduler knows of one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// Bound to a volume that allows only the nodes these terms pick (`None`: any node).
    Bound(Option<NodeTerms>),
    /// Unbound; its class binds at the first consumer's node.
    WaitForFirstConsumer,
    /// Unbound; its class binds at once (or it names no class): the pod waits.
    Unbound,
    /// Being deleted.
    Deleting,
}

impl ClaimState {
    /// A claim's state from it, its volume's node affinity (when bound) and whether its class waits for
    /// the first consumer.
    pub fn of(
        claim: &PersistentVolumeClaim,
        volume_affinity: Option<&NodeSelector>,
        waits_for_consumer: bool,
    ) -> ClaimState {
        if claim.metadata.deletion_timestamp.is_some() {
            return ClaimState::Deleting;
        }
        let bound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty());
        match (bound, waits_for_consumer) {
            (true, _) => ClaimState::Bound(
                volume_affinity.map(|s| NodeTerms(s.node_selector_terms.iter().map(NodeTerm::compile).collect())),
            ),
            (false, true) => ClaimState::WaitForFirstConsumer,
            (false, false) => ClaimState::Unbound,
        }
    }
}

/// The claims of one pod, resolved against the snapshot once per decision.
pub struct VolumeFilter<'a> {
    /// A reason every node gives (a missing or deleted claim, an unbound immediate one).
    everywhere: Option<Reason>,
    bound: Vec<&'a NodeTerms>,
}

impl<'a> VolumeFilter<'a> {
    pub fn new(ctx: &PodContext, snapshot: &'a Snapshot) -> Option<VolumeFilter<'a>> {
        let claims = ctx.claims();
        if claims.is_empty() {
            return None;
        }
        let ns = ctx.info.namespace.as_str();
        let mut filter = VolumeFilter { everywhere: None, bound: vec![] };
        for name in claims {
            match snapshot.claim(ns, &name) {
                None => filter.everywhere = Some(Reason::ClaimNotFound(name)),
                Some(ClaimState::Deleting) => filter.everywhere = Some(Reason::ClaimDeleting(name)),
                Some(ClaimState::Unbound) => filter.everywhere = Some(Reason::UnboundImmediateClaims),
                Some(ClaimState::Bound(Some(terms))) => filter.bound.push(terms),
                Some(ClaimState::Bound(None) | ClaimState::WaitForFirstConsumer) => {}
            }
            if filter.everywhere.is_some() {
                break;
            }
        }
        Some(filter)
    }

    pub fn check(&self, node: &NodeInfo) -> Option<Reason> {
        if let Some(r) = &self.everywhere {
            return Some(r.clone());
        }
        if self.bound.iter().any(|t| !t.matches(&node.name, &node.labels)) {
            return Some(Reason::VolumeNodeAffinityConflict);
        }
        None
    }
}
