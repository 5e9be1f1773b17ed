//! Checkers of the whole-cluster mode (issue 22, item 4): what the Kubernetes API's clients and the nodes saw
//! while masters, nodes and links failed. Pure functions over recorded observations, each tested on good and
//! bad histories (as the store's checkers are), so the run that records them can come next.
//!
//! - [`lost_writes`]: no acknowledged API write is lost, and every object's resourceVersion only grows in
//!   real-time order;
//! - [`duplicate_identities`]: a StatefulSet pod identity (namespace/name) never runs as two pods at once;
//! - [`disturbed_pods`]: no pod is recreated or restarted across a window in which only masters failed.

use std::collections::{BTreeMap, HashMap};

/// An object, as the API names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Create,
    Update,
    Delete,
}

/// How a write ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged, with the resourceVersion the response carried (for a delete: the object's last one).
    Acked { resource_version: u64 },
    /// Refused for what it was (409, 422…): it changed nothing.
    Refused,
    /// No answer (a timeout, a broken connection, a 5xx): it may have taken effect or not.
    Unknown,
}

/// One write by a traffic client: which object, what it wrote (a marker the traffic puts in the object, e.g.
/// a label with the writer's sequence number), and when it was invoked and completed (ms since the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiWrite {
    pub key: ObjectKey,
    pub kind: WriteKind,
    pub marker: String,
    pub invoked: u64,
    pub completed: u64,
    pub outcome: WriteOutcome,
}

/// The objects read at the end of the run (after healing): key → (resourceVersion, marker).
pub type FinalState = BTreeMap<ObjectKey, (u64, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub what: String,
}

fn violation(what: String) -> Violation {
    Violation { what }
}

/// Lost writes and resourceVersions that went back. Per object, the writes are taken in completion order:
/// - real time: an acknowledged write B invoked after an acknowledged write A completed carries a higher
///   resourceVersion than A;
/// - the end: if the last acknowledged write is a create or update and no later write (acknowledged or of
///   unknown outcome) overlaps or follows it, the object exists with that write's marker, or with the marker
///   of a write of unknown outcome invoked before the final read; if the last acknowledged write is a
///   delete with nothing after it, the object is gone (or recreated by an unknown create after it).
pub fn lost_writes(writes: &[ApiWrite], end: &FinalState) -> Vec<Violation> {
    let mut by_key: HashMap<&ObjectKey, Vec<&ApiWrite>> = HashMap::new();
    for w in writes.iter().filter(|w| w.outcome != WriteOutcome::Refused) {
        by_key.entry(&w.key).or_default().push(w);
    }
    let mut out = Vec::new();
    let mut keys: Vec<&&ObjectKey> = by_key.keys().collect();
    keys.sort();
    for key in keys {
        let list = &by_key[*key];
        let acked: Vec<(&ApiWrite, u64)> = list
            .iter()
            .filter_map(|w| match w.outcome {
                WriteOutcome::Acked { resource_version } => Some((*w, resource_version)),
                _ => None,
            })
            .collect();
        for (a, rv_a) in &acked {
            for (b, rv_b) in &acked {
                // A delete answers with the object as it was, at its last resourceVersion.
                let went_back = if b.kind == WriteKind::Delete { rv_b < rv_a } else { rv_b <= rv_a };
                if b.invoked > a.completed && went_back {
                    out.push(violation(format!(
                        "{key:?}: {:?} invoked at {} ms after {:?} completed at {} ms, but its resourceVersion {rv_b} is not above {rv_a}",
                        b.kind, b.invoked, a.kind, a.completed
                    )));
                }
            }
        }
        let Some((last, _)) = acked.iter().max_by_key(|(w, _)| w.completed) else { continue };
        // Writes of unknown outcome not known to precede the last acknowledged one may have taken effect.
        let later_unknown: Vec<&&ApiWrite> =
            list.iter().filter(|w| w.outcome == WriteOutcome::Unknown && w.completed > last.invoked).collect();
        let found = end.get(*key);
        let explained_by_unknown = |marker: Option<&str>| {
            later_unknown.iter().any(|w| match (w.kind, marker) {
                (WriteKind::Delete, None) => true,
                (WriteKind::Create | WriteKind::Update, Some(m)) => w.marker == m,
                _ => false,
            })
        };
        match (last.kind, found) {
            (WriteKind::Create | WriteKind::Update, Some((_, marker))) if *marker == last.marker => {}
            (WriteKind::Delete, None) => {}
            (_, found) => {
                let marker = found.map(|(_, m)| m.as_str());
                if !explained_by_unknown(marker) {
                    let seen = match found {
                        Some((rv, m)) => format!("{m:?} at resourceVersion {rv}"),
                        None => "nothing".to_string(),
                    };
                    out.push(violation(format!(
                        "{key:?}: the last acknowledged write ({:?} of {:?}, completed at {} ms) is lost: the end shows {seen}",
                        last.kind, last.marker, last.completed
                    )));
                }
            }
        }
    }
    out
}

/// One look at a pod, from a watch or a list: when (ms), which pod (its uid), on which node, and whether its
/// containers run (phase Running and not being deleted with its containers stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSighting {
    pub at: u64,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub running: bool,
}

/// Where one pod ran and from when to when it was seen running: (node, first ms, last ms).
type Span<'a> = (&'a str, u64, u64);

/// StatefulSet identities that ran twice at once: for each pod name, the time spans in which each uid was
/// seen running (from its first running sighting to its first sighting not running, or its last sighting);
/// two uids of one name whose spans overlap are a violation (Kubernetes' at-most-one guarantee for
/// StatefulSets).
pub fn duplicate_identities(sightings: &[PodSighting]) -> Vec<Violation> {
    let mut spans: BTreeMap<(&str, &str), BTreeMap<&str, Span<'_>>> = BTreeMap::new();
    let mut ended: HashMap<&str, u64> = HashMap::new();
    let mut ordered: Vec<&PodSighting> = sightings.iter().collect();
    ordered.sort_by_key(|s| s.at);
    for s in ordered {
        if !s.running {
            ended.entry(&s.uid).or_insert(s.at);
            continue;
        }
        if ended.contains_key(s.uid.as_str()) {
            continue;
        }
        let by_uid = spans.entry((&s.namespace, &s.name)).or_default();
        let span = by_uid.entry(&s.uid).or_insert((&s.node, s.at, s.at));
        span.2 = span.2.max(s.at);
    }
    let mut out = Vec::new();
    for ((ns, name), by_uid) in &spans {
        let list: Vec<(&&str, &Span)> = by_uid.iter().collect();
        for (i, (uid_a, (node_a, from_a, to_a))) in list.iter().enumerate() {
            for (uid_b, (node_b, from_b, to_b)) in &list[i + 1..] {
                if from_a <= to_b && from_b <= to_a {
                    out.push(violation(format!(
                        "{ns}/{name} ran twice at once: uid {uid_a} on {node_a} ({from_a}–{to_a} ms) and uid {uid_b} on {node_b} ({from_b}–{to_b} ms)"
                    )));
                }
            }
        }
    }
    out
}

/// A pod's identity and restarts at one moment: uid → (namespace/name, summed container restart counts).
pub type PodSnapshot = BTreeMap<String, (String, u32)>;

/// Pods disturbed across a window in which only masters failed: every pod present before must still be
/// there (same uid, not replaced) with no more restarts than before.
pub fn disturbed_pods(before: &PodSnapshot, after: &PodSnapshot) -> Vec<Violation> {
    let mut out = Vec::new();
    for (uid, (name, restarts)) in before {
        match after.get(uid) {
            None => out.push(violation(format!("{name} (uid {uid}) was evicted, deleted or recreated"))),
            Some((_, now)) if now > restarts => {
                out.push(violation(format!("{name} (uid {uid}) restarted: {restarts} → {now} restarts")))
            }
            Some(_) => {}
        }
    }
    out
}

/// One look at a Deployment and its pods: its spec's replicas and maxSurge then, how many of its pods were
/// active (not terminating, not finished), and how many of those were new since the previous look. An
/// acknowledged write of the spec is a look too, with no pods: the replicas it asked for count for the
/// window even if they changed again before the pods were next looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurgeSample {
    pub at: u64,
    pub key: ObjectKey,
    /// The Deployment's uid: a Deployment deleted and created again under its name starts afresh.
    pub uid: String,
    pub replicas: u32,
    pub max_surge: u32,
    pub pods: u32,
    pub new_pods: u32,
}

/// Pods created beyond `replicas + maxSurge`: a look in which new pods appeared while the Deployment had more
/// active pods than the most replicas its spec asked for in the `window_ms` before, plus maxSurge. (Extra pods
/// left over from a scale-down the controllers have not carried out yet are not surge: nobody created them.)
pub fn surge_violations(samples: &[SurgeSample], window_ms: u64) -> Vec<Violation> {
    let mut by_uid: BTreeMap<&str, Vec<&SurgeSample>> = BTreeMap::new();
    for s in samples {
        by_uid.entry(&s.uid).or_default().push(s);
    }
    let mut out = Vec::new();
    for list in by_uid.values_mut() {
        list.sort_by_key(|s| s.at);
        for (i, s) in list.iter().enumerate() {
            if s.new_pods == 0 {
                continue;
            }
            let recent_max =
                list[..=i].iter().filter(|p| p.at + window_ms >= s.at).map(|p| p.replicas).max().unwrap_or(s.replicas);
            if s.pods > recent_max + s.max_surge {
                out.push(violation(format!(
                    "{:?} at {} ms: {} active pods ({} new) with replicas {} and maxSurge {}",
                    s.key, s.at, s.pods, s.new_pods, recent_max, s.max_surge
                )));
            }
        }
    }
    out
}

/// A workload at the end, as the API shows it: what its spec asks for and what its status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadState {
    pub key: ObjectKey,
    pub generation: i64,
    pub observed_generation: i64,
    /// Deployments and StatefulSets: spec.replicas; Jobs: completions.
    pub want: i32,
    /// Deployments: updated, available and total replicas; StatefulSets: updated, ready and total replicas;
    /// Jobs: succeeded pods (twice) and active pods.
    pub updated: i32,
    pub ready: i32,
    pub total: i32,
    /// Jobs: the Complete condition.
    pub complete: bool,
}

/// The workloads that have not converged to their spec: why, one line each.
pub fn not_converged(states: &[WorkloadState]) -> Vec<String> {
    let mut out = Vec::new();
    for s in states {
        let why = if s.key.resource == "jobs" {
            (!s.complete || s.ready < s.want).then(|| format!("{} of {} completions", s.ready, s.want))
        } else if s.observed_generation < s.generation {
            Some(format!("generation {} observed {}", s.generation, s.observed_generation))
        } else if (s.updated, s.ready, s.total) != (s.want, s.want, s.want) {
            Some(format!("want {}: {} updated, {} ready, {} in all", s.want, s.updated, s.ready, s.total))
        } else {
            None
        };
        if let Some(why) = why {
            out.push(format!("{}/{} {}: {why}", s.key.resource, s.key.namespace, s.key.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey { resource: "configmaps".into(), namespace: "chaos".into(), name: name.into() }
    }

    fn w(name: &str, kind: WriteKind, marker: &str, span: (u64, u64), outcome: WriteOutcome) -> ApiWrite {
        ApiWrite { key: key(name), kind, marker: marker.into(), invoked: span.0, completed: span.1, outcome }
    }

    fn acked(rv: u64) -> WriteOutcome {
        WriteOutcome::Acked { resource_version: rv }
    }

    fn end(entries: &[(&str, u64, &str)]) -> FinalState {
        entries.iter().map(|(n, rv, m)| (key(n), (*rv, m.to_string()))).collect()
    }

    #[test]
    fn kept_writes_pass() {
        let writes = [
            w("a", WriteKind::Create, "1", (0, 10), acked(5)),
            w("a", WriteKind::Update, "2", (20, 30), acked(9)),
            w("b", WriteKind::Create, "1", (0, 10), acked(6)),
            w("b", WriteKind::Delete, "", (20, 30), acked(6)),
            w("c", WriteKind::Create, "1", (0, 10), WriteOutcome::Refused),
        ];
        assert_eq!(lost_writes(&writes, &end(&[("a", 9, "2")])), vec![]);
    }

    #[test]
    fn a_lost_update_or_delete_or_create_is_found() {
        let writes = [
            w("a", WriteKind::Create, "1", (0, 10), acked(5)),
            w("a", WriteKind::Update, "2", (20, 30), acked(9)),
            w("b", WriteKind::Create, "1", (0, 10), acked(6)),
            w("b", WriteKind::Delete, "", (20, 30), acked(6)),
            w("c", WriteKind::Create, "1", (0, 10), acked(7)),
        ];
        let found = lost_writes(&writes, &end(&[("a", 5, "1"), ("b", 6, "1")]));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|v| v.what.contains("is lost")), "{found:?}");
    }

    #[test]
    fn writes_of_unknown_outcome_may_explain_the_end() {
        let writes = [
            w("a", WriteKind::Create, "1", (0, 10), acked(5)),
            w("a", WriteKind::Update, "2", (20, 30), WriteOutcome::Unknown),
            w("b", WriteKind::Create, "1", (0, 10), acked(6)),
            w("b", WriteKind::Delete, "", (5, 40), WriteOutcome::Unknown),
        ];
        assert_eq!(lost_writes(&writes, &end(&[("a", 8, "2")])), vec![], "the update took effect, the delete too");
        assert_eq!(lost_writes(&writes, &end(&[("a", 5, "1"), ("b", 6, "1")])), vec![], "or neither did");
        let unrelated = lost_writes(&writes, &end(&[("a", 8, "3"), ("b", 6, "1")]));
        assert_eq!(unrelated.len(), 1, "a marker no write made: {unrelated:?}");
    }

    #[test]
    fn resource_versions_must_grow_in_real_time_order() {
        let writes =
            [w("a", WriteKind::Create, "1", (0, 10), acked(9)), w("a", WriteKind::Update, "2", (20, 30), acked(7))];
        let found = lost_writes(&writes, &end(&[("a", 7, "2")]));
        assert_eq!(found.len(), 1);
        assert!(found[0].what.contains("is not above 9"), "{found:?}");
        // Overlapping writes may complete in either order.
        let overlapping =
            [w("a", WriteKind::Update, "1", (0, 30), acked(9)), w("a", WriteKind::Update, "2", (10, 20), acked(7))];
        assert_eq!(lost_writes(&overlapping, &end(&[("a", 9, "1")])), vec![]);
    }

    fn seen(at: u64, name: &str, uid: &str, node: &str, running: bool) -> PodSighting {
        PodSighting { at, namespace: "chaos".into(), name: name.into(), uid: uid.into(), node: node.into(), running }
    }

    #[test]
    fn a_statefulset_pod_replaced_after_it_stopped_is_fine() {
        let sightings = [
            seen(0, "db-0", "u1", "node-1", true),
            seen(100, "db-0", "u1", "node-1", true),
            seen(150, "db-0", "u1", "node-1", false),
            seen(200, "db-0", "u2", "node-2", true),
            seen(300, "db-1", "u3", "node-2", true),
            seen(310, "db-0", "u1", "node-1", true), // a stale sighting after it ended does not extend it
        ];
        assert_eq!(duplicate_identities(&sightings), vec![]);
    }

    #[test]
    fn two_pods_of_one_identity_running_at_once_are_found() {
        let sightings = [
            seen(0, "db-0", "u1", "node-1", true),
            seen(200, "db-0", "u2", "node-2", true),
            seen(250, "db-0", "u1", "node-1", true),
            seen(400, "db-0", "u1", "node-1", false),
        ];
        let found = duplicate_identities(&sightings);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.contains("ran twice at once"), "{found:?}");
    }

    #[test]
    fn pods_recreated_or_restarted_across_a_master_fault_are_found() {
        let before: PodSnapshot = [("u1", ("chaos/web-a", 0)), ("u2", ("chaos/web-b", 1))]
            .map(|(u, (n, r))| (u.into(), (n.into(), r)))
            .into();
        assert_eq!(disturbed_pods(&before, &before), vec![]);
        let mut after = before.clone();
        after.insert("u3".into(), ("chaos/web-c".into(), 0)); // new pods are not disturbances
        assert_eq!(disturbed_pods(&before, &after), vec![]);
        after.remove("u1");
        after.insert("u2".into(), ("chaos/web-b".into(), 2));
        let found = disturbed_pods(&before, &after);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    fn sample(at: u64, replicas: u32, pods: u32, new_pods: u32) -> SurgeSample {
        SurgeSample { at, key: key("d"), uid: "u1".into(), replicas, max_surge: 1, pods, new_pods }
    }

    #[test]
    fn surge_within_bounds_and_scale_down_lag_pass() {
        let samples = [
            sample(0, 2, 2, 2),
            // A rollout: one extra pod.
            sample(1000, 2, 3, 1),
            sample(2000, 2, 2, 0),
            // Scaled down to 0: pods linger, nobody creates new ones.
            sample(3000, 0, 2, 0),
            // Scaled 3 → 1 a moment ago and a pod created for the 3: within the window.
            sample(4000, 3, 2, 0),
            sample(5000, 1, 3, 1),
        ];
        assert!(surge_violations(&samples, 5000).is_empty());
    }

    #[test]
    fn pods_created_past_max_surge_are_found() {
        // Created with 2 replicas and scaled to 0 before the first look at its pods: the write's own look
        // (no pods) says what was asked for.
        let samples = [sample(0, 2, 0, 0), sample(300, 0, 2, 2)];
        assert!(surge_violations(&samples, 5000).is_empty());
        assert_eq!(surge_violations(&samples[1..], 5000).len(), 1);
        let samples = [sample(0, 2, 2, 2), sample(1000, 2, 4, 2)];
        let v = surge_violations(&samples, 5000);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("4 active pods"));
        // Another Deployment (uid) under the same name does not inherit the first one's replicas.
        let mut other = sample(1500, 0, 2, 2);
        other.uid = "u2".into();
        assert_eq!(surge_violations(&[sample(0, 3, 3, 3), other], 5000).len(), 1);
    }

    fn workload(
        resource: &str,
        want: i32,
        (updated, ready, total): (i32, i32, i32),
        gens: (i64, i64),
        complete: bool,
    ) -> WorkloadState {
        WorkloadState {
            key: ObjectKey { resource: resource.into(), namespace: "chaos".into(), name: "w".into() },
            generation: gens.0,
            observed_generation: gens.1,
            want,
            updated,
            ready,
            total,
            complete,
        }
    }

    #[test]
    fn converged_workloads_pass_and_the_others_say_why() {
        let good = [
            workload("deployments", 2, (2, 2, 2), (3, 3), false),
            workload("statefulsets", 0, (0, 0, 0), (1, 1), false),
            workload("jobs", 1, (1, 1, 0), (1, 1), true),
        ];
        assert!(not_converged(&good).is_empty());
        let bad = [
            workload("deployments", 2, (2, 2, 2), (4, 3), false),
            workload("deployments", 2, (1, 2, 3), (3, 3), false),
            workload("statefulsets", 2, (2, 1, 2), (1, 1), false),
            workload("jobs", 1, (0, 0, 1), (1, 1), false),
        ];
        let why = not_converged(&bad);
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("generation 4 observed 3"));
        assert!(why[3].contains("0 of 1 completions"));
    }
}
