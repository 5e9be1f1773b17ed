use super::*;
use serde_json::{json, Value};

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

/// `seconds` after midnight, as the API writes times.
fn at(seconds: i64) -> String {
    let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    (t + jiff::SignedDuration::from_secs(seconds)).to_string()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn ds(extra: Value) -> DaemonSet {
    let mut v = json!({
        "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 3},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent:1"}]}
            },
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "revisionHistoryLimit": 10
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn with_image(image: &str) -> DaemonSet {
    ds(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}))
}

fn node(name: &str, extra: Value) -> Node {
    let mut v = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn nodes(names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| node(n, json!({}))).collect()
}

fn hash_of(d: &DaemonSet) -> String {
    plan(d, &[], &[], &[], now()).revision.hash
}

/// A pod of the DaemonSet on `node`, created at `created` seconds, Running and Ready since then.
fn pod(name: &str, node: &str, hash: &str, created: i64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "ns", "creationTimestamp": at(created),
            "labels": {"app": "agent", "controller-revision-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-uid", "controller": true}]
        },
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at(created)}]}
    }))
    .unwrap()
}

fn unready(mut p: Pod) -> Pod {
    p.status.as_mut().unwrap().conditions = None;
    p
}

fn phase(mut p: Pod, phase: &str) -> Pod {
    p.status.as_mut().unwrap().phase = Some(phase.into());
    p
}

fn terminating(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    p
}

fn created_on(p: &Plan) -> Vec<&str> {
    p.create.iter().map(|p| target_node(p).unwrap()).collect()
}

/// The revision the DaemonSet's current template gets, as stored (for passes after the first).
fn stored_revision(d: &DaemonSet) -> ControllerRevision {
    plan(d, &[], &[], &[], now()).revision.create.unwrap()
}

#[test]
fn one_pod_per_eligible_node_placed_by_node_affinity() {
    let d = ds(json!({}));
    let p = plan(&d, &nodes(&["n1", "n2", "n3"]), &[], &[], now());
    assert_eq!(created_on(&p), ["n1", "n2", "n3"]);
    let pod = &p.create[0];
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels[REVISION_HASH], p.revision.hash);
    assert_eq!(labels[POD_TEMPLATE_GENERATION], "3");
    assert_eq!(labels["app"], "agent");
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("DaemonSet", "ds-uid", Some(true)));
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec.get("nodeName"), None);
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]})
    );
    // The first pass also records the template.
    let revision = p.revision.create.as_ref().unwrap();
    assert_eq!(revision.revision, 1);
    assert_eq!(revision.metadata.name.as_deref(), Some(format!("agent-{}", p.revision.hash).as_str()));
}

#[test]
fn daemon_pods_tolerate_what_kubernetes_adds() {
    let d = ds(json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "custom", "operator": "Exists"}
    ]}}}}));
    let p = plan(&d, &nodes(&["n1"]), &[], &[], now());
    let tolerations = serde_json::to_value(&p.create[0].spec.as_ref().unwrap().tolerations).unwrap();
    assert_eq!(
        tolerations,
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
            {"key": "custom", "operator": "Exists"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
        ])
    );
    let host = ds(json!({"spec": {"template": {"spec": {"hostNetwork": true}}}}));
    let p = plan(&host, &nodes(&["n1"]), &[], &[], now());
    let tolerations = p.create[0].spec.as_ref().unwrap().tolerations.clone().unwrap();
    assert!(tolerations.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
}

#[test]
fn node_selector_affinity_and_taints_decide_eligibility() {
    let all = [
        node("edge", json!({"metadata": {"labels": {"role": "edge"}}})),
        node("plain", json!({})),
        node(
            "tainted",
            json!({"metadata": {"labels": {"role": "edge"}}, "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}),
        ),
        node(
            "cordoned",
            json!({"metadata": {"labels": {"role": "edge"}}, "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        ),
        node(
            "not-ready",
            json!({"metadata": {"labels": {"role": "edge"}}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
        node(
            "soft",
            json!({"metadata": {"labels": {"role": "edge"}}, "spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}),
        ),
    ];
    let selected = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
    assert_eq!(created_on(&plan(&selected, &all, &[], &[], now())), ["cordoned", "edge", "soft"]);

    let tolerant = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}}}));
    assert_eq!(created_on(&plan(&tolerant, &all, &[], &[], now())), ["cordoned", "edge", "soft", "tainted"]);

    let affinity = ds(json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}]}}}}}}}));
    let p = plan(&affinity, &all, &[], &[], now());
    assert_eq!(created_on(&p), ["plain"]);
    // The node term replaces the template's required terms on the pod.
    let terms = &p.create[0]
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    assert!(terms[0].match_expressions.is_none());
}

#[test]
fn pods_leave_nodes_that_may_no_longer_run_them() {
    let d = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"role": "edge"}}}}}));
    let h = hash_of(&d);
    let edge = |name: &str, extra: Value| {
        let mut v = json!({"metadata": {"labels": {"role": "edge"}}});
        merge(&mut v, extra);
        node(name, v)
    };
    let all = [
        edge("kept", json!({})),
        node("relabelled", json!({})),
        edge("no-schedule", json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}})),
        edge("no-execute", json!({"spec": {"taints": [{"key": "gpu", "effect": "NoExecute"}]}})),
        edge(
            "unreachable",
            json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        ),
    ];
    let pods = [
        pod("a", "kept", &h, 0),
        pod("b", "relabelled", &h, 0),
        pod("c", "no-schedule", &h, 0),
        pod("d", "no-execute", &h, 0),
        pod("e", "unreachable", &h, 0),
        pod("f", "deleted-node", &h, 0),
    ];
    let p = plan(&d, &all, &pods, &[], now());
    assert!(p.create.is_empty());
    assert_eq!(p.delete, ["d", "b", "f"]);
    let status = p.status.unwrap();
    // "no-schedule" and "unreachable" keep their pods but no longer want one; "relabelled" and
    // "no-execute" are misscheduled until their pods go.
    assert_eq!((status.desired_number_scheduled, status.current_number_scheduled), (1, 1));
    assert_eq!(status.number_misscheduled, 4);
}

#[test]
fn duplicates_go_keeping_the_oldest_and_terminating_pods_hold_their_node() {
    let d = ds(json!({}));
    let h = hash_of(&d);
    let pods = [pod("young", "n1", &h, 20), pod("old", "n1", &h, 10), terminating(pod("leaving", "n2", &h, 0))];
    let p = plan(&d, &nodes(&["n1", "n2"]), &pods, &[], now());
    assert_eq!(p.delete, ["young"]);
    assert!(p.create.is_empty(), "n2 waits for its pod to be gone");
}

#[test]
fn failed_pods_are_deleted_then_replaced() {
    let d = ds(json!({}));
    let h = hash_of(&d);
    let p = plan(&d, &nodes(&["n1"]), &[phase(pod("crashed", "n1", &h, 0), "Failed")], &[], now());
    assert_eq!((p.delete.as_slice(), p.create.len()), (["crashed".to_string()].as_slice(), 0));
    let p = plan(&d, &nodes(&["n1"]), &[terminating(phase(pod("crashed", "n1", &h, 0), "Failed"))], &[], now());
    assert_eq!((p.delete.len(), created_on(&p)), (0, vec!["n1"]));
}

#[test]
fn rolling_update_stays_within_max_unavailable() {
    let old = hash_of(&with_image("agent:0"));
    let d = ds(json!({}));
    let new = hash_of(&d);
    let three = nodes(&["n1", "n2", "n3"]);
    let olds = [pod("a", "n1", &old, 0), pod("b", "n2", &old, 0), pod("c", "n3", &old, 0)];
    let p = plan(&d, &three, &olds, &[], now());
    assert_eq!((p.delete.as_slice(), p.create.len()), (["a".to_string()].as_slice(), 0));

    // n1's replacement is not ready yet: nothing more goes.
    let midway = [unready(pod("a2", "n1", &new, 100)), pod("b", "n2", &old, 0), pod("c", "n3", &old, 0)];
    assert!(plan(&d, &three, &midway, &[], now()).delete.is_empty());
    // Ready: the next one.
    let midway = [pod("a2", "n1", &new, 100), pod("b", "n2", &old, 0), pod("c", "n3", &old, 0)];
    assert_eq!(plan(&d, &three, &midway, &[], now()).delete, ["b"]);
    // A node without its pod yet counts as unavailable.
    let gap = [pod("b", "n2", &old, 0), terminating(pod("a", "n1", &old, 0)), pod("c", "n3", &old, 0)];
    let p = plan(&d, &three, &gap, &[], now());
    assert!(p.delete.is_empty() && p.create.is_empty());
    // An old pod that is not available is replaced whatever the budget.
    let broken = [unready(pod("a2", "n1", &new, 100)), unready(pod("b", "n2", &old, 0)), pod("c", "n3", &old, 0)];
    assert_eq!(plan(&d, &three, &broken, &[], now()).delete, ["b"]);

    let wider = ds(json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "50%"}}}}));
    assert_eq!(plan(&wider, &three, &olds, &[], now()).delete, ["a", "b"]);
}

#[test]
fn rolling_update_with_surge_creates_before_deleting() {
    let old = hash_of(&with_image("agent:0"));
    let d = ds(json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}}));
    let new = hash_of(&d);
    let two = nodes(&["n1", "n2"]);
    let olds = [pod("a", "n1", &old, 0), pod("b", "n2", &old, 0)];
    let p = plan(&d, &two, &olds, &[], now());
    assert_eq!((created_on(&p), p.delete.len()), (vec!["n1"], 0));
    // The new pod is not available yet: wait.
    let surged = [pod("a", "n1", &old, 0), unready(pod("a2", "n1", &new, 100)), pod("b", "n2", &old, 0)];
    let p = plan(&d, &two, &surged, &[], now());
    assert!(p.create.is_empty() && p.delete.is_empty());
    // Available: the old one goes.
    let surged = [pod("a", "n1", &old, 0), pod("a2", "n1", &new, 100), pod("b", "n2", &old, 0)];
    let p = plan(&d, &two, &surged, &[], now());
    assert_eq!((p.delete.as_slice(), p.create.len()), (["a".to_string()].as_slice(), 0));
    // An old pod that is unavailable gets its replacement at once, beyond the surge budget.
    let mixed = [pod("a", "n1", &old, 0), unready(pod("a2", "n1", &new, 100)), unready(pod("b", "n2", &old, 0))];
    assert_eq!(created_on(&plan(&d, &two, &mixed, &[], now())), ["n2"]);
}

#[test]
fn on_delete_never_replaces_but_new_pods_get_the_new_template() {
    let old = hash_of(&with_image("agent:0"));
    let d = ds(json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}));
    let new = hash_of(&d);
    let p = plan(&d, &nodes(&["n1", "n2"]), &[pod("a", "n1", &old, 0)], &[], now());
    assert!(p.delete.is_empty());
    assert_eq!(created_on(&p), ["n2"]);
    assert_eq!(p.create[0].metadata.labels.as_ref().unwrap()[REVISION_HASH], new);
    assert_eq!(p.status.unwrap().updated_number_scheduled, Some(0));
}

#[test]
fn revisions_are_reused_renumbered_and_trimmed() {
    let d = ds(json!({"spec": {"revisionHistoryLimit": 1}}));
    let v0 = stored_revision(&with_image("agent:0"));
    let mut v1 = stored_revision(&d);
    v1.revision = 2;
    let mut v2 = stored_revision(&with_image("agent:2"));
    v2.revision = 3;
    let mut v3 = stored_revision(&with_image("agent:3"));
    v3.revision = 4;
    let revisions = [v0.clone(), v1.clone(), v2.clone(), v3.clone()];
    // The template of revision 2 is current again: it becomes revision 5. Of the three old ones, two are
    // beyond the limit: revision 1 stays while a pod runs it, so 3 and 4 go.
    let h0 = v0.metadata.labels.as_ref().unwrap()[REVISION_HASH].clone();
    let p = plan(&d, &nodes(&["n1"]), &[pod("a", "n1", &h0, 0)], &revisions, now());
    assert!(p.revision.create.is_none());
    assert_eq!(p.revision.name, v1.metadata.name.clone().unwrap());
    assert_eq!(p.revision.renumber, Some(5));
    assert_eq!(p.delete_revisions, [v2.metadata.name.clone().unwrap(), v3.metadata.name.clone().unwrap()]);
    // Revisions of another owner are neither counted nor trimmed.
    let mut foreign = v3.clone();
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let p = plan(&d, &nodes(&["n1"]), &[], &[v1.clone(), foreign], now());
    assert_eq!((p.revision.renumber, p.delete_revisions.len()), (None, 0));
}

#[test]
fn a_revision_name_collision_only_counts_it() {
    let d = ds(json!({}));
    let mut clash = stored_revision(&d);
    clash.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let p = plan(&d, &nodes(&["n1"]), &[], &[clash], now());
    assert!(p.revision.collided && p.create.is_empty());
    assert_eq!(p.status.unwrap().collision_count, Some(1));
    let mut counted = d.clone();
    counted.status = Some(DaemonSetStatus { collision_count: Some(1), ..Default::default() });
    assert_ne!(hash_of(&counted), hash_of(&d));
}

#[test]
fn status_counts_nodes_and_is_written_only_when_it_changes() {
    let mut d = ds(json!({"spec": {"minReadySeconds": 30}}));
    let h = hash_of(&d);
    let old = hash_of(&with_image("agent:0"));
    let pods = [
        pod("a", "n1", &h, 0),
        pod("b", "n2", &old, 0),
        unready(pod("c", "n3", &h, 0)),
        pod("d", "n4", &h, 590),
        pod("x", "elsewhere", &h, 0),
    ];
    let all = [
        node("n1", json!({})),
        node("n2", json!({})),
        node("n3", json!({})),
        node("n4", json!({})),
        node("n5", json!({})),
        node("elsewhere", json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})),
    ];
    let p = plan(&d, &all, &pods, &[], now());
    assert_eq!(created_on(&p), ["n5"]);
    let status = p.status.clone().unwrap();
    assert_eq!(status.desired_number_scheduled, 5);
    assert_eq!(status.current_number_scheduled, 4);
    assert_eq!(status.number_misscheduled, 1);
    assert_eq!(status.number_ready, 3);
    assert_eq!(status.number_available, Some(2), "d has been ready for 10s of 30");
    assert_eq!(status.number_unavailable, Some(3));
    assert_eq!(status.updated_number_scheduled, Some(3));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    d.status = Some(status);
    assert_eq!(plan(&d, &all, &pods, &[], now()).status, None);
}

#[test]
fn orphans_are_adopted_and_foreign_pods_ignored() {
    let d = ds(json!({}));
    let h = hash_of(&d);
    let mut orphan = pod("orphan", "n1", &h, 0);
    orphan.metadata.owner_references = None;
    let mut foreign = pod("foreign", "n2", &h, 0);
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
    let p = plan(&d, &nodes(&["n1", "n2"]), &[orphan, foreign], &[], now());
    assert_eq!(p.adopt, ["orphan"]);
    assert_eq!(created_on(&p), ["n2"]);
}

#[test]
fn a_daemonset_being_deleted_is_left_alone() {
    let mut d = ds(json!({}));
    d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    assert_eq!(plan(&d, &nodes(&["n1"]), &[], &[], now()), Plan::default());
}

#[test]
fn target_node_reads_the_node_name_or_the_single_match_fields_term() {
    let p: Pod = serde_json::from_value(json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]}}}}}))
    .unwrap();
    assert_eq!(target_node(&p), Some("n7"));
    let mut bound = p.clone();
    bound.spec.as_mut().unwrap().node_name = Some("n8".into());
    assert_eq!(target_node(&bound), Some("n8"));
    let two: Pod = serde_json::from_value(json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}]}}}}}))
    .unwrap();
    assert_eq!(target_node(&two), None);
}
