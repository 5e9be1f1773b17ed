//! The DaemonSet controller's decision, pure: given a DaemonSet, the nodes, the pods its selector finds and
//! the ControllerRevisions it lists, [`plan`] says what one pass of Kubernetes' daemon controller does.
//!
//! - Eligibility (`NodeShouldRunDaemonPod`): a node should run the pod when the template's nodeSelector and
//!   required node affinity match it and it has no NoSchedule/NoExecute taint the pod (with the tolerations
//!   every DaemonSet pod gets) does not tolerate; a pod already there may stay while every NoExecute taint is
//!   tolerated. The node's taints are read as keel's scheduler reads them ([`keel_scheduler::NodeInfo`]: a
//!   Ready=False/Unknown node counts as tainted not-ready/unreachable NoSchedule).
//! - Placement: the controller names the node, the scheduler binds. Each new pod's required node affinity is
//!   the single term `matchFields: metadata.name In [<node>]` (Kubernetes'
//!   `ReplaceDaemonSetPodNodeNameNodeAffinity`, which replaces every required term: eligibility was checked
//!   against the template's own terms already).
//! - `manage`: a pod on each eligible node without one; failed and succeeded pods deleted (recreated on the
//!   next pass, once gone); the oldest kept of several (or, when surging, the oldest new and the oldest old
//!   one until the new is available); pods on nodes that may no longer run them, or on nodes that no longer
//!   exist, deleted. A terminating pod holds its node: no replacement until it is gone.
//! - `rollingUpdate`, only in a pass where `manage` changed nothing: pods whose `controller-revision-hash`
//!   is not the current one are old; without surge, old pods are deleted while the unavailable pods stay
//!   within maxUnavailable (an unavailable old pod is replaced at once); with maxSurge, a new pod is created
//!   beside an old one on up to maxSurge nodes and the old one deleted once the new is available.
//! - Revisions ([`history`]), status (`updateDaemonSetStatus`), and a requeue for minReadySeconds.

use crate::history;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodTemplateSpec,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_scheduler::{NodeInfo, PodContext, Snapshot};

use crate::{pods, replicas, rollout};
pub use history::REVISION_HASH;

/// The label with the DaemonSet's generation when the pod was made.
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// Tolerations every DaemonSet pod gets (key, effect; operator Exists, no tolerationSeconds).
const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// And pods on the host's network.
const HOST_NETWORK_TOLERATION: (&str, &str) = ("node.kubernetes.io/network-unavailable", "NoSchedule");

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// The revision of the current template (create or renumber it first). When `revision.collided`, the
    /// plan holds only the status that counts the collision.
    pub revision: history::Current,
    /// Pods to create, complete (generateName `<ds>-`, labels, tolerations, node affinity): one node each,
    /// which [`target_node`] reads back.
    pub create: Vec<Pod>,
    /// Pods (names) to delete.
    pub delete: Vec<String>,
    /// Matching pods without a controller, to take over.
    pub adopt: Vec<String>,
    /// Old ControllerRevisions (names) to delete.
    pub delete_revisions: Vec<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<DaemonSetStatus>,
    /// Look again after this long even if nothing changes (a pod becomes available after minReadySeconds).
    pub requeue_after: Option<Duration>,
}

/// One pass over `ds`, given every node, the pods its selector finds in its namespace and the
/// ControllerRevisions its selector finds there.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[Node],
    candidates: &[Pod],
    revisions: &[ControllerRevision],
    now: Timestamp,
) -> Plan {
    let mut plan = Plan::default();
    // Kubernetes leaves a DaemonSet being deleted alone (the garbage collector takes its pods).
    let Some(spec) = ds.spec.as_ref().filter(|_| ds.metadata.deletion_timestamp.is_none()) else { return plan };
    let old_status = ds.status.clone().unwrap_or_default();
    plan.revision =
        history::current("apps/v1", "DaemonSet", &ds.metadata, &spec.template, old_status.collision_count, revisions);
    if plan.revision.collided {
        let mut status = old_status;
        status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
        plan.status = Some(status);
        return plan;
    }
    let hash = plan.revision.hash.clone();
    let uid = ds.metadata.uid.as_deref().unwrap_or_default();

    let mut owned: Vec<&Pod> = Vec::new();
    for pod in candidates {
        match pods::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => owned.push(pod),
            Some(_) => {}
            None if pod.metadata.deletion_timestamp.is_none()
                && pods::selects(Some(&spec.selector), pod.metadata.labels.as_ref()) =>
            {
                plan.adopt.push(name(pod));
                owned.push(pod);
            }
            None => {}
        }
    }
    // Pods by the node they are for; finished pods already being deleted no longer count.
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in &owned {
        let finished = matches!(pods::phase(pod), Some("Failed" | "Succeeded"));
        if finished && pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(node) = target_node(pod) {
            by_node.entry(node.to_string()).or_default().push(pod);
        }
    }
    for list in by_node.values_mut() {
        list.sort_by(|a, b| oldest_first(a, b));
    }

    let template = daemon_template(ds, spec, &hash);
    let prototype =
        Pod { metadata: template.metadata.clone().unwrap_or_default(), spec: template.spec.clone(), status: None };
    let mut snapshot = Snapshot::new();
    for node in nodes {
        snapshot.upsert_node(node);
    }
    let ctx = PodContext::new(&prototype);
    let verdicts: BTreeMap<&str, Verdict> =
        snapshot.nodes().iter().map(|n| (n.name.as_str(), verdict(&ctx, n))).collect();
    let desired = verdicts.values().filter(|v| v.should_run).count() as i32;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available = |p: &Pod| pods::is_available(p, min_ready, now);
    let (max_surge, max_unavailable) = fenceposts(spec, desired);

    // manage
    let mut create_on: Vec<String> = Vec::new();
    let mut delete: Vec<String> = Vec::new();
    for (node, v) in &verdicts {
        let here = by_node.get(*node).map(Vec::as_slice).unwrap_or_default();
        if v.should_run && here.is_empty() {
            create_on.push(node.to_string());
        } else if v.may_continue {
            let mut running: Vec<&Pod> = Vec::new();
            for pod in here.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                match pods::phase(pod) {
                    Some("Failed" | "Succeeded") => delete.push(name(pod)),
                    _ => running.push(pod),
                }
            }
            if running.len() <= 1 {
                continue;
            }
            if max_surge == 0 {
                delete.extend(running[1..].iter().map(|p| name(p)));
                continue;
            }
            // Surging: keep the oldest new pod and the oldest old one, until the new one is available.
            let (mut oldest_new, mut oldest_old): (Option<&Pod>, Option<&Pod>) = (None, None);
            for pod in running {
                let slot = if is_updated(pod, &hash) { &mut oldest_new } else { &mut oldest_old };
                if slot.is_none() {
                    *slot = Some(pod);
                } else {
                    delete.push(name(pod));
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !pods::is_ready(old) || available(new) {
                    delete.push(name(old));
                }
            }
        } else {
            delete.extend(here.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| name(p)));
        }
    }
    // Pods for nodes that are gone (Kubernetes deletes the unscheduled ones here and leaves bound ones to its
    // pod garbage collector, which keel does not have).
    for (node, here) in &by_node {
        if !verdicts.contains_key(node.as_str()) {
            delete.extend(here.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| name(p)));
        }
    }

    let rolling =
        spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if create_on.is_empty() && delete.is_empty() && rolling {
        // Every eligible node is considered, with or without a pod.
        let mut work: BTreeMap<&str, &[&Pod]> = by_node.iter().map(|(n, p)| (n.as_str(), p.as_slice())).collect();
        for (node, v) in &verdicts {
            if v.should_run {
                work.entry(node).or_default();
            }
        }
        if max_surge == 0 {
            delete = replace_within_unavailability(&work, &hash, max_unavailable, &available);
        } else {
            (create_on, delete) = replace_with_surge(&work, &verdicts, &hash, max_surge, &available);
        }
    }
    plan.create = create_on.iter().take(replicas::BURST).map(|node| daemon_pod(ds, &template, node)).collect();
    plan.delete = delete;

    // Revisions beyond the limit that no pod runs.
    let live: BTreeSet<&str> =
        owned.iter().filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)).collect();
    let mine = history::owned(uid, revisions);
    plan.delete_revisions = history::trim(&mine, &[&plan.revision.name], spec.revision_history_limit, |r| {
        r.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH)).is_some_and(|h| live.contains(h.as_str()))
    });

    // Status: the oldest pod on each node speaks for it.
    let mut status = DaemonSetStatus {
        collision_count: old_status.collision_count,
        conditions: old_status.conditions.clone(),
        observed_generation: ds.metadata.generation.or(old_status.observed_generation),
        ..Default::default()
    };
    let (mut ready, mut avail, mut updated) = (0, 0, 0);
    for (node, v) in &verdicts {
        let first = by_node.get(*node).and_then(|p| p.first()).copied();
        match (v.should_run, first) {
            (true, None) => status.desired_number_scheduled += 1,
            (true, Some(pod)) => {
                status.desired_number_scheduled += 1;
                status.current_number_scheduled += 1;
                if pods::is_ready(pod) {
                    ready += 1;
                    if available(pod) {
                        avail += 1;
                    }
                }
                if is_updated(pod, &hash) {
                    updated += 1;
                }
            }
            (false, Some(_)) => status.number_misscheduled += 1,
            (false, None) => {}
        }
    }
    status.number_ready = ready;
    status.number_available = Some(avail);
    status.number_unavailable = Some(status.desired_number_scheduled - avail);
    status.updated_number_scheduled = Some(updated);
    if ds.status.as_ref() != Some(&status) {
        plan.status = Some(status);
    }
    plan.requeue_after = becomes_available(&owned, min_ready, now);
    plan
}

/// How long until the first ready pod that is not yet available (minReadySeconds) becomes so.
pub(crate) fn becomes_available(owned: &[&Pod], min_ready: i32, now: Timestamp) -> Option<Duration> {
    if min_ready <= 0 {
        return None;
    }
    owned
        .iter()
        .filter(|p| pods::is_active(p))
        .filter_map(|p| pods::ready_since(p).flatten())
        .map(|since| since + jiff::SignedDuration::from_secs(i64::from(min_ready)))
        .filter(|at| *at > now)
        .min()
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
}

/// The node a DaemonSet pod is for: its `spec.nodeName`, or else the one node its required node affinity names
/// with a single `matchFields: metadata.name In [<node>]` term (Kubernetes' `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else { return None };
    let [field] = term.match_fields.as_deref()? else { return None };
    let [value] = field.values.as_deref()? else { return None };
    (field.key == "metadata.name" && field.operator == "In").then_some(value.as_str())
}

/// Whether a node should run the daemon pod, and whether a pod already there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    should_run: bool,
    may_continue: bool,
}

fn verdict(ctx: &PodContext, node: &NodeInfo) -> Verdict {
    if !ctx.matches_node_affinity(node) {
        return Verdict { should_run: false, may_continue: false };
    }
    if ctx.untolerated_taint(node).is_none() {
        return Verdict { should_run: true, may_continue: true };
    }
    let evicting = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .any(|t| !ctx.tolerations.iter().any(|tol| keel_scheduler::tolerates(tol, t)));
    Verdict { should_run: false, may_continue: !evicting }
}

/// maxSurge and maxUnavailable against the nodes that should run the pod (both rounded up; 0 and 1 for
/// OnDelete, and maxUnavailable 1 if both come to 0).
fn fenceposts(spec: &DaemonSetSpec, desired: i32) -> (i32, i32) {
    let strategy = spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()).is_some_and(|t| t != "RollingUpdate") {
        return (0, 1);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let value = |v: Option<&IntOrString>, default: i32| {
        v.and_then(|v| rollout::scaled_value(v, desired, true)).unwrap_or(default).max(0)
    };
    let surge = value(rolling.and_then(|r| r.max_surge.as_ref()), 0);
    let mut unavailable = value(rolling.and_then(|r| r.max_unavailable.as_ref()), 1);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// The template's pods as this DaemonSet makes them: the revision hash and generation labels, the daemon
/// tolerations.
fn daemon_template(ds: &DaemonSet, spec: &DaemonSetSpec, hash: &str) -> PodTemplateSpec {
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_HASH.into(), hash.into());
    if let Some(generation) = ds.metadata.generation {
        labels.insert(POD_TEMPLATE_GENERATION.into(), generation.to_string());
    }
    let pod_spec = template.spec.get_or_insert_with(Default::default);
    let host_network = pod_spec.host_network == Some(true);
    let tolerations = pod_spec.tolerations.get_or_insert_with(Vec::new);
    let extra = host_network.then_some(HOST_NETWORK_TOLERATION);
    for &(key, effect) in DAEMON_TOLERATIONS.iter().chain(extra.iter()) {
        add_or_update_toleration(tolerations, key, effect);
    }
    template
}

/// Kubernetes' `AddOrUpdateTolerationInPodSpec` for an `Exists` toleration: one with the same key, operator,
/// value and effect is replaced (dropping its tolerationSeconds), otherwise it is added.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, key: &str, effect: &str) {
    let wanted = Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let same = |t: &Toleration| {
        t.key.as_deref() == Some(key)
            && t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().unwrap_or_default().is_empty()
            && t.effect.as_deref() == Some(effect)
    };
    match tolerations.iter_mut().find(|t| same(t)) {
        Some(existing) => *existing = wanted,
        None => tolerations.push(wanted),
    }
}

/// A new pod for `node`.
fn daemon_pod(ds: &DaemonSet, template: &PodTemplateSpec, node: &str) -> Pod {
    let owner = pods::controller_reference("apps/v1", "DaemonSet", &ds.metadata);
    let namespace = ds.metadata.namespace.as_deref().unwrap_or("default");
    let generate_name = format!("{}-", ds.metadata.name.as_deref().unwrap_or_default());
    let mut pod = pods::pod_from_template(template, namespace, &generate_name, owner);
    let spec = pod.spec.get_or_insert_with(Default::default);
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        Some(NodeSelector { node_selector_terms: vec![term] });
    pod
}

/// Without surge: delete old pods while the unavailable ones stay within `max_unavailable`
/// (Kubernetes' `rollingUpdate`, maxSurge 0). Unavailable old pods go at once.
fn replace_within_unavailability(
    work: &BTreeMap<&str, &[&Pod]>,
    hash: &str,
    max_unavailable: i32,
    available: &dyn Fn(&Pod) -> bool,
) -> Vec<String> {
    let mut unavailable = 0;
    let mut replace: Vec<String> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    for here in work.values() {
        match new_and_old(here, hash) {
            None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
            Some((Some(new), None)) => {
                if !available(new) {
                    unavailable += 1;
                }
            }
            Some((None, Some(old))) => {
                if !available(old) {
                    replace.push(name(old));
                } else if unavailable < max_unavailable {
                    candidates.push(name(old));
                }
            }
        }
    }
    let room = (max_unavailable - unavailable).max(0) as usize;
    replace.extend(candidates.into_iter().take(room));
    replace
}

/// With surge: a new pod beside an old one on up to `max_surge` nodes (at once where the old one is
/// unavailable), and the old one deleted once the new one is available. Returns (nodes to create on, pods to
/// delete).
fn replace_with_surge(
    work: &BTreeMap<&str, &[&Pod]>,
    verdicts: &BTreeMap<&str, Verdict>,
    hash: &str,
    max_surge: i32,
    available: &dyn Fn(&Pod) -> bool,
) -> (Vec<String>, Vec<String>) {
    let mut surging = 0;
    let mut delete = Vec::new();
    let mut allowed: Vec<String> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    for (node, here) in work {
        let should_run = verdicts.get(node).is_some_and(|v| v.should_run);
        match new_and_old(here, hash) {
            None => surging += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !available(old) {
                    if should_run {
                        allowed.push(node.to_string());
                    } else {
                        delete.push(name(old));
                    }
                } else if should_run && surging < max_surge {
                    candidates.push(node.to_string());
                }
            }
            Some((Some(new), Some(old))) => {
                if available(new) {
                    delete.push(name(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = (max_surge - surging).max(0) as usize;
    allowed.extend(candidates.into_iter().take(room));
    (allowed, delete)
}

/// The one up-to-date and the one old pod on a node, leaving out terminating ones; `None` when there are
/// more of either (the manage pass sorts that node out first).
fn new_and_old<'a>(here: &[&'a Pod], hash: &str) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in here.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let slot = if is_updated(pod, hash) { &mut new } else { &mut old };
        if slot.replace(pod).is_some() {
            return None;
        }
    }
    Some((new, old))
}

fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_HASH)).is_some_and(|h| h == hash)
}

/// Kubernetes' `podByCreationTimestampAndPhase`: scheduled pods first, then the oldest, then by name.
fn oldest_first(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(b).cmp(&scheduled(a)).then(created(a).cmp(&created(b))).then(a.metadata.name.cmp(&b.metadata.name))
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}
