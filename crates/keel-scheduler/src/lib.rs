//! keel's pod scheduler, the pure core: given a [`Snapshot`] of the nodes and the pods placed on them,
//! [`schedule`] filters the nodes a pod may go to and scores the rest, as kube-scheduler's default
//! profile does, and either names the best node or says why none fits ([`Unschedulable`], whose message is
//! kube-scheduler's "0/3 nodes are available: …"). No IO and no async: the loop that watches pods and nodes,
//! binds through `pods/binding` and records events lives elsewhere and feeds this.
//!
//! Filters, in kube-scheduler's order (a node fails on the first that refuses it): NodeUnschedulable,
//! NodeName, TaintToleration, NodeAffinity (nodeSelector + required node affinity), NodeResourcesFit,
//! PodTopologySpread (DoNotSchedule), InterPodAffinity. Scores (0–100 each, weighted as kube-scheduler
//! weights them): NodeResourcesFit ×1 (LeastAllocated or MostAllocated, see [`Scoring`]), preferred
//! NodeAffinity ×2, TaintToleration ×3, InterPodAffinity ×2, PodTopologySpread (ScheduleAnyway) ×2. Ties
//! between the best nodes go to one chosen by a hash of the pod's name, so equal nodes share the load and the
//! same inputs give the same answer.
//!
//! Cost: a node view keeps its sums up to date as pods are added, assumed and removed, so a plain pod costs
//! O(nodes) with no parsing; affinity and spread constraints add a pass over the pods that matter.

mod filters;
mod inter_pod_affinity;
mod node_info;
mod resources;
mod scores;
mod selectors;
mod topology_spread;
mod unschedulable;
mod volume_binding;

use k8s_openapi::api::core::v1::Pod;

pub use filters::{tolerates, PodContext};
pub use node_info::{AffinityTerm, NodeInfo, PodInfo, Snapshot};
pub use resources::{pod_resources, PodResources, Resources};
pub use scores::Scoring;
pub use unschedulable::{Reason, Unschedulable};
pub use volume_binding::ClaimState;

use inter_pod_affinity::InterPodFilter;
use topology_spread::SpreadFilter;
use volume_binding::VolumeFilter;

/// Score weights, kube-scheduler's defaults.
const WEIGHT_RESOURCES: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TAINT_TOLERATION: i64 = 3;
const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub scoring: Scoring,
}

/// The node the pod should go to, or why it fits none.
pub fn schedule(snapshot: &Snapshot, pod: &Pod, config: &Config) -> Result<String, Unschedulable> {
    let ctx = PodContext::new(pod);
    let nodes = snapshot.nodes();
    let feasible = feasible_nodes(snapshot, &ctx)?;
    if feasible.len() == 1 {
        return Ok(nodes[feasible[0]].name.clone());
    }
    let totals = scores(snapshot, &ctx, config, &feasible);
    let best = totals.iter().copied().max().unwrap_or(0);
    let ties: Vec<usize> = feasible.iter().zip(&totals).filter(|(_, t)| **t == best).map(|(i, _)| *i).collect();
    let pick = ties[(fnv1a(ctx.info.key().as_bytes()) % ties.len() as u64) as usize];
    Ok(nodes[pick].name.clone())
}

/// The reasons a node refuses the pod (empty: it fits), as the filters see the snapshot.
pub fn filter_node(snapshot: &Snapshot, pod: &Pod, node: &str) -> Option<Vec<Reason>> {
    let ctx = PodContext::new(pod);
    let node = snapshot.node(node)?;
    let spread = SpreadFilter::new(&ctx, snapshot);
    let inter = InterPodFilter::new(&ctx, snapshot);
    let volumes = VolumeFilter::new(&ctx, snapshot);
    let mut reasons = Vec::new();
    filter(
        &ctx,
        node,
        &Extra { spread: spread.as_ref(), inter: inter.as_ref(), volumes: volumes.as_ref() },
        &mut reasons,
    );
    Some(reasons)
}

fn feasible_nodes(snapshot: &Snapshot, ctx: &PodContext) -> Result<Vec<usize>, Unschedulable> {
    let spread = SpreadFilter::new(ctx, snapshot);
    let inter = InterPodFilter::new(ctx, snapshot);
    let volumes = VolumeFilter::new(ctx, snapshot);
    let extra = Extra { spread: spread.as_ref(), inter: inter.as_ref(), volumes: volumes.as_ref() };
    let mut feasible = Vec::new();
    let mut failure = Unschedulable::new(snapshot.nodes().len(), ctx.never_preempts);
    let mut reasons = Vec::new();
    for (i, node) in snapshot.nodes().iter().enumerate() {
        reasons.clear();
        filter(ctx, node, &extra, &mut reasons);
        if reasons.is_empty() {
            feasible.push(i);
        } else {
            failure.record(&reasons);
        }
    }
    if feasible.is_empty() {
        return Err(failure);
    }
    Ok(feasible)
}

/// The filters that look beyond the pod and the node, prepared once per decision.
struct Extra<'a> {
    spread: Option<&'a SpreadFilter>,
    inter: Option<&'a InterPodFilter<'a>>,
    volumes: Option<&'a VolumeFilter<'a>>,
}

fn filter(ctx: &PodContext, node: &NodeInfo, extra: &Extra, reasons: &mut Vec<Reason>) {
    let first = filters::node_unschedulable(ctx, node)
        .or_else(|| filters::node_name(ctx, node))
        .or_else(|| filters::taint_toleration(ctx, node))
        .or_else(|| filters::node_affinity(ctx, node));
    if let Some(r) = first {
        reasons.push(r);
        return;
    }
    filters::resources_fit(ctx, node, reasons);
    if !reasons.is_empty() {
        return;
    }
    let later = extra.volumes.and_then(|v| v.check(node));
    let later = later.or_else(|| extra.spread.and_then(|s| s.check(node)));
    if let Some(r) = later.or_else(|| extra.inter.and_then(|f| f.check(node))) {
        reasons.push(r);
    }
}

/// Weighted total score per feasible node.
fn scores(snapshot: &Snapshot, ctx: &PodContext, config: &Config, feasible: &[usize]) -> Vec<i64> {
    let nodes = snapshot.nodes();
    let mut totals: Vec<i64> =
        feasible.iter().map(|&i| WEIGHT_RESOURCES * scores::resources(config.scoring, ctx, &nodes[i])).collect();
    if !ctx.preferred_node_affinity.is_empty() {
        let mut raw: Vec<i64> = feasible.iter().map(|&i| scores::node_affinity_raw(ctx, &nodes[i])).collect();
        scores::normalize(&mut raw, false);
        add(&mut totals, &raw, WEIGHT_NODE_AFFINITY);
    }
    if feasible.iter().any(|&i| nodes[i].prefer_no_schedule) {
        let mut raw: Vec<i64> = feasible.iter().map(|&i| scores::taint_toleration_raw(ctx, &nodes[i])).collect();
        scores::normalize(&mut raw, true);
        add(&mut totals, &raw, WEIGHT_TAINT_TOLERATION);
    }
    if ctx.info.has_affinity() || nodes.iter().any(|n| n.pods_with_affinity > 0) {
        add(&mut totals, &inter_pod_affinity::score(ctx, snapshot, feasible), WEIGHT_INTER_POD_AFFINITY);
    }
    add(&mut totals, &topology_spread::score(ctx, snapshot, feasible), WEIGHT_TOPOLOGY_SPREAD);
    totals
}

fn add(totals: &mut [i64], scores: &[i64], weight: i64) {
    for (t, s) in totals.iter_mut().zip(scores) {
        *t += weight * s;
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests;
