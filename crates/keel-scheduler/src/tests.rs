//! Whole decisions: filters and scores together, assume(), the unschedulable message, and a 10 000-pod run.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::*;

fn node(name: &str, cpu: &str, memory: &str, extra: serde_json::Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, x) in m {
            v[k] = x;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    }))
    .unwrap()
}

fn place_all(s: &mut Snapshot, config: &Config, n: usize) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for i in 0..n {
        let p = pod(&format!("p{i}"), "500m", "512Mi");
        let at = schedule(s, &p, config).unwrap();
        s.assume(&p, &at);
        *per_node.entry(at).or_default() += 1;
    }
    per_node
}

/// A node with 8 cpu and 16Gi in `zone` (label `zone`), for the affinity and spread tests.
pub(crate) fn zone_node(name: &str, zone: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}
    }))
    .unwrap()
}

fn three_nodes() -> Snapshot {
    let mut s = Snapshot::new();
    for n in ["n1", "n2", "n3"] {
        s.upsert_node(&node(n, "4", "8Gi", json!({})));
    }
    s
}

#[test]
fn least_allocated_spreads_evenly() {
    let mut s = three_nodes();
    let per_node = place_all(&mut s, &Config::default(), 6);
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_node:?}");
}

#[test]
fn most_allocated_packs() {
    let mut s = three_nodes();
    let per_node = place_all(&mut s, &Config { scoring: Scoring::MostAllocated }, 6);
    assert_eq!(per_node.len(), 1, "{per_node:?}");
    assert_eq!(per_node.values().sum::<usize>(), 6);
}

#[test]
fn assume_fills_a_node_until_it_stops_fitting() {
    let mut s = Snapshot::new();
    s.upsert_node(&node("n1", "1", "1Gi", json!({})));
    let a = pod("a", "600m", "100Mi");
    assert_eq!(schedule(&s, &a, &Config::default()).unwrap(), "n1");
    s.assume(&a, "n1");
    let err = schedule(&s, &pod("b", "600m", "100Mi"), &Config::default()).unwrap_err();
    assert_eq!(err.count(&Reason::Insufficient("cpu")), 1);
    // Assuming the same pod again replaces it rather than counting it twice.
    s.assume(&a, "n1");
    assert_eq!(s.nodes()[0].requested.milli_cpu, 600);
    s.remove_pod("default/a");
    assert_eq!(schedule(&s, &pod("b", "600m", "100Mi"), &Config::default()).unwrap(), "n1");
}

#[test]
fn unschedulable_message_counts_each_node_once_per_reason() {
    let mut s = Snapshot::new();
    s.upsert_node(&node("small1", "1", "8Gi", json!({})));
    s.upsert_node(&node("small2", "1", "8Gi", json!({})));
    s.upsert_node(&node(
        "tainted",
        "8",
        "8Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    ));
    let err = schedule(&s, &pod("big", "2", "1Gi"), &Config::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
         2 No preemption victims found for incoming pod."
    );
}

#[test]
fn filters_run_in_kube_scheduler_order() {
    let mut s = Snapshot::new();
    // Cordoned and too small: cordon is reported, not resources.
    s.upsert_node(&node("cordoned", "1", "1Gi", json!({"spec": {"unschedulable": true}})));
    s.upsert_node(&node("ok", "8", "8Gi", json!({})));
    let p = pod("p", "2", "1Gi");
    assert_eq!(filter_node(&s, &p, "cordoned").unwrap(), vec![Reason::NodeUnschedulable]);
    assert_eq!(schedule(&s, &p, &Config::default()).unwrap(), "ok");
    s.remove_node("ok");
    assert_eq!(
        schedule(&s, &p, &Config::default()).unwrap_err().to_string(),
        "0/1 nodes are available: 1 node(s) were unschedulable. \
         preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
}

#[test]
fn scores_combine_preferences() {
    let mut s = Snapshot::new();
    s.upsert_node(&node("plain", "4", "8Gi", json!({})));
    s.upsert_node(&node(
        "soft-tainted",
        "4",
        "8Gi",
        json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}),
    ));
    let mut ssd = node("ssd", "4", "8Gi", json!({}));
    ssd.metadata.labels.as_mut().unwrap().insert("disk".into(), "ssd".into());
    s.upsert_node(&ssd);
    let mut p = pod("p", "100m", "100Mi");
    assert_ne!(schedule(&s, &p, &Config::default()).unwrap(), "soft-tainted");
    p.spec.as_mut().unwrap().affinity = Some(
        serde_json::from_value(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}))
        .unwrap(),
    );
    assert_eq!(schedule(&s, &p, &Config::default()).unwrap(), "ssd");
}

#[test]
fn pods_follow_their_nodes() {
    let mut s = Snapshot::new();
    let mut bound = pod("b", "1", "1Gi");
    bound.spec.as_mut().unwrap().node_name = Some("late".into());
    // The pod is seen before its node: it counts once the node appears.
    s.apply_pod(&bound);
    s.upsert_node(&node("late", "1", "8Gi", json!({})));
    assert_eq!(s.node("late").unwrap().requested.milli_cpu, 1000);
    // A finished pod gives its resources back.
    bound.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    s.apply_pod(&bound);
    assert_eq!(s.node("late").unwrap().requested.milli_cpu, 0);
    assert_eq!(s.pod_node("default/b"), None);
}

#[test]
fn no_nodes() {
    let err = schedule(&Snapshot::new(), &pod("p", "1", "1Gi"), &Config::default()).unwrap_err();
    assert_eq!(err.to_string(), "no nodes available to schedule pods");
}

/// 10 000 pods over 1000 nodes, each decision assumed before the next. Not a timed assertion: the time is
/// printed (run with `--nocapture`).
#[test]
fn ten_thousand_pods_over_a_thousand_nodes() {
    let mut s = Snapshot::new();
    for i in 0..1000 {
        let mut n = node(&format!("node-{i:04}"), "16", "64Gi", json!({}));
        n.metadata.labels.as_mut().unwrap().insert("zone".into(), format!("zone-{}", i % 3));
        s.upsert_node(&n);
    }
    let pods: Vec<Pod> = (0..10_000).map(|i| pod(&format!("p{i}"), "100m", "128Mi")).collect();
    let config = Config::default();
    let start = Instant::now();
    for p in &pods {
        let at = schedule(&s, p, &config).unwrap();
        s.assume(p, &at);
    }
    let elapsed = start.elapsed();
    eprintln!("scheduled 10000 pods over 1000 nodes in {elapsed:?} ({:.0} pods/s)", 10_000.0 / elapsed.as_secs_f64());
    let counts: Vec<usize> = s.nodes().iter().map(|n| n.pods.len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 10_000);
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    eprintln!("pods per node: min {min}, max {max}");
    // Scores are whole numbers 0–100, as in kube-scheduler: 100m of 16 CPUs moves a node's score by less
    // than a point, so equally good nodes differ by a pod or two.
    assert!(max - min <= 3, "LeastAllocated spreads identical pods: {min}..{max}");
}

fn with_spec(mut p: Pod, spec: serde_json::Value) -> Pod {
    let mut v = serde_json::to_value(p.spec.take().unwrap()).unwrap();
    if let serde_json::Value::Object(m) = spec {
        for (k, x) in m {
            v[k] = x;
        }
    }
    p.spec = Some(serde_json::from_value(v).unwrap());
    p
}

#[test]
fn anti_affinity_replicas_one_per_host_then_unschedulable() {
    let mut s = three_nodes();
    let replica = |i: usize| {
        with_spec(
            pod(&format!("r{i}"), "100m", "64Mi"),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        )
    };
    let mut used = Vec::new();
    for i in 0..3 {
        let p = replica(i);
        let at = schedule(&s, &p, &Config { scoring: Scoring::MostAllocated }).unwrap();
        s.assume(&p, &at);
        used.push(at);
    }
    used.sort();
    assert_eq!(used, ["n1", "n2", "n3"]);
    assert_eq!(
        schedule(&s, &replica(3), &Config::default()).unwrap_err().to_string(),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
}

#[test]
fn topology_spread_through_schedule() {
    let mut s = Snapshot::new();
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        let mut n = node(name, "8", "8Gi", json!({}));
        n.metadata.labels.as_mut().unwrap().insert("zone".into(), zone.into());
        s.upsert_node(&n);
    }
    let spread = |i: usize| {
        with_spec(
            pod(&format!("s{i}"), "100m", "64Mi"),
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    };
    // MostAllocated would pack; the constraint alternates zones anyway.
    let config = Config { scoring: Scoring::MostAllocated };
    let mut zones = Vec::new();
    for i in 0..4 {
        let p = spread(i);
        let at = schedule(&s, &p, &config).unwrap();
        zones.push(s.node(&at).unwrap().labels["zone"].clone());
        s.assume(&p, &at);
    }
    assert_eq!(zones.iter().filter(|z| *z == "a").count(), 2, "{zones:?}");
    assert_eq!(zones.iter().filter(|z| *z == "b").count(), 2, "{zones:?}");
}
