use serde_json::{json, Value};

use super::*;

fn now() -> jiff::Timestamp {
    "2026-12-07T12:00:00Z".parse().unwrap()
}

fn quota(name: &str, hard: Value, used: Option<Value>) -> Value {
    let mut q = json!({"metadata": {"name": name, "namespace": "team"}, "spec": {"hard": hard.clone()}});
    if let Some(used) = used {
        q["status"] = json!({"hard": hard, "used": used});
    }
    q
}

fn pod(name: &str, requests: Value, limits: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [
        {"name": "app", "image": "x", "resources": {"requests": requests, "limits": limits}}
    ]}})
}

fn charge_pod(quotas: &[Value], object: &Value) -> Result<Vec<(usize, Value)>, String> {
    charge(quotas, &Charged { group: "", plural: "pods", object, old: None, now: now() })
        .map_err(|e| e.message().to_string())
}

fn charge_any(quotas: &[Value], write: &Charged) -> Result<Vec<(usize, Value)>, String> {
    charge(quotas, write).map_err(|e| e.message().to_string())
}

#[test]
fn a_pod_uses_its_requests_limits_and_a_count() {
    let p = json!({"metadata": {"name": "p"}, "spec": {
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
        ],
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]
    }});
    let u = usage("", "pods", &p, now());
    let text = |k: &str| u.get(k).map(Amount::text);
    assert_eq!(text("pods").as_deref(), Some("1"));
    assert_eq!(text("count/pods").as_deref(), Some("1"));
    assert_eq!(text("requests.cpu").as_deref(), Some("2"), "the init container's larger request");
    assert_eq!(text("cpu").as_deref(), Some("2"));
    assert_eq!(text("requests.memory").as_deref(), Some("128Mi"));
    assert_eq!(text("limits.cpu").as_deref(), Some("1"));
    assert_eq!(text("limits.memory"), None);
    // Terminal pods count as objects only.
    let mut done = p.clone();
    done["status"] = json!({"phase": "Succeeded"});
    assert_eq!(usage("", "pods", &done, now()).keys().collect::<Vec<_>>(), ["count/pods"]);
    // So does one stuck past its deletion's grace period.
    let mut stuck = p.clone();
    stuck["metadata"]["deletionTimestamp"] = json!("2026-12-07T11:00:00Z");
    stuck["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    assert!(!usage("", "pods", &stuck, now()).contains_key("pods"));
}

#[test]
fn pods_beyond_the_count_are_refused_in_kubes_words() {
    let q = quota("pods-max", json!({"pods": "2"}), Some(json!({"pods": "1"})));
    let charged = charge_pod(std::slice::from_ref(&q), &pod("p", json!({}), json!({}))).unwrap();
    assert_eq!(charged, vec![(0, json!({"pods": "2"}))]);
    let full = quota("pods-max", json!({"pods": "2"}), Some(json!({"pods": "2"})));
    assert_eq!(
        charge_pod(&[full], &pod("p", json!({}), json!({}))).unwrap_err(),
        "exceeded quota: pods-max, requested: pods=1, used: pods=2, limited: pods=2"
    );
}

#[test]
fn compute_quota_needs_every_container_to_say_its_requests() {
    let q = quota(
        "compute",
        json!({"requests.cpu": "1", "limits.memory": "1Gi"}),
        Some(json!({"requests.cpu": "0", "limits.memory": "0"})),
    );
    let err = charge_pod(std::slice::from_ref(&q), &pod("p", json!({}), json!({}))).unwrap_err();
    assert_eq!(err, "failed quota: compute: must specify limits.memory for: app; requests.cpu for: app");
    let ok = pod("p", json!({"cpu": "500m"}), json!({"memory": "512Mi"}));
    let charged = charge_pod(std::slice::from_ref(&q), &ok).unwrap();
    assert_eq!(charged, vec![(0, json!({"requests.cpu": "500m", "limits.memory": "512Mi"}))]);
    let big = pod("p", json!({"cpu": "1500m"}), json!({"memory": "512Mi"}));
    assert_eq!(
        charge_pod(&[q], &big).unwrap_err(),
        "exceeded quota: compute, requested: requests.cpu=1500m, used: requests.cpu=0, limited: requests.cpu=1"
    );
}

#[test]
fn a_quota_without_usage_yet_is_counted_first() {
    // Before anything set its status.hard, kube's admission passes it by (the controller counts the pod).
    let fresh = quota("fresh", json!({"pods": "5"}), None);
    assert_eq!(charge_pod(&[fresh], &pod("p", json!({}), json!({}))).unwrap(), vec![]);
    // With hard limits but no usage: the server is told to count.
    let mut unknown = quota("fresh", json!({"pods": "5", "secrets": "1"}), None);
    unknown["status"] = json!({"hard": {"pods": "5", "secrets": "1"}, "used": {"secrets": "0"}});
    let refused = charge(
        &[json!({"metadata": {"name": "a"}}), unknown],
        &Charged { group: "", plural: "pods", object: &pod("p", json!({}), json!({})), old: None, now: now() },
    );
    assert_eq!(refused, Err(Refused::StatusUnknown(1, "status unknown for quota: fresh, resources: pods".into())));
}

#[test]
fn scopes_pick_the_pods_a_quota_covers() {
    let mut best_effort = quota("be", json!({"pods": "1"}), Some(json!({"pods": "1"})));
    best_effort["spec"]["scopes"] = json!(["BestEffort"]);
    // A pod with requests is not BestEffort: that quota does not cover it.
    let burstable = pod("p", json!({"cpu": "100m"}), json!({}));
    assert_eq!(charge_pod(std::slice::from_ref(&best_effort), &burstable).unwrap(), vec![]);
    assert!(charge_pod(std::slice::from_ref(&best_effort), &pod("p", json!({}), json!({}))).is_err());
    // Scoped quotas never cover other kinds.
    let mut scoped = quota("scoped", json!({"count/configmaps": "0"}), Some(json!({"count/configmaps": "0"})));
    scoped["spec"]["scopes"] = json!(["NotTerminating"]);
    let cm = json!({"metadata": {"name": "c"}});
    let write = Charged { group: "", plural: "configmaps", object: &cm, old: None, now: now() };
    assert_eq!(charge_any(&[scoped], &write).unwrap(), vec![]);
    // PriorityClass selectors.
    let mut high = quota("high", json!({"pods": "0"}), Some(json!({"pods": "0"})));
    high["spec"]["scopeSelector"] =
        json!({"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]});
    let mut p = pod("p", json!({}), json!({}));
    assert_eq!(charge_pod(std::slice::from_ref(&high), &p).unwrap(), vec![]);
    p["spec"]["priorityClassName"] = json!("high");
    assert!(charge_pod(std::slice::from_ref(&high), &p).unwrap_err().starts_with("exceeded quota: high"));
    // Terminating: pods with an active deadline.
    let mut terminating = quota("t", json!({"pods": "0"}), Some(json!({"pods": "0"})));
    terminating["spec"]["scopes"] = json!(["Terminating"]);
    assert_eq!(charge_pod(std::slice::from_ref(&terminating), &p).unwrap(), vec![]);
    p["spec"]["activeDeadlineSeconds"] = json!(60);
    assert!(charge_pod(&[terminating], &p).is_err());
}

#[test]
fn object_counts_services_and_claims() {
    let q = quota(
        "objects",
        json!({"count/deployments.apps": "1", "services.nodeports": "2", "services": "5", "requests.storage": "1Gi",
               "local.storageclass.storage.k8s.io/persistentvolumeclaims": "1"}),
        Some(
            json!({"count/deployments.apps": "1", "services.nodeports": "1", "services": "0", "requests.storage": "0",
               "local.storageclass.storage.k8s.io/persistentvolumeclaims": "0"}),
        ),
    );
    let d = json!({"metadata": {"name": "d"}});
    let write = Charged { group: "apps", plural: "deployments", object: &d, old: None, now: now() };
    assert_eq!(
        charge_any(std::slice::from_ref(&q), &write).unwrap_err(),
        "exceeded quota: objects, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"
    );
    let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    let write = Charged { group: "", plural: "services", object: &svc, old: None, now: now() };
    assert_eq!(
        charge_any(std::slice::from_ref(&q), &write).unwrap(),
        vec![(
            0,
            json!({
        "count/deployments.apps": "1", "services.nodeports": "2", "services": "1", "requests.storage": "0",
        "local.storageclass.storage.k8s.io/persistentvolumeclaims": "0"})
        )]
    );
    // An update is charged the difference: a ClusterIP Service turned NodePort with two ports.
    let old = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}, {"port": 81}]}});
    let new = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
    let write = Charged { group: "", plural: "services", object: &new, old: Some(&old), now: now() };
    assert!(charge_any(std::slice::from_ref(&q), &write).unwrap_err().contains("requested: services.nodeports=2"));
    let claim = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": "local", "resources": {"requests": {"storage": "2Gi"}}}});
    let write = Charged { group: "", plural: "persistentvolumeclaims", object: &claim, old: None, now: now() };
    assert_eq!(
        charge_any(&[q], &write).unwrap_err(),
        "exceeded quota: objects, requested: requests.storage=2Gi, used: requests.storage=0, limited: requests.storage=1Gi"
    );
}

#[test]
fn the_controller_recalculates_usage_from_every_covered_object() {
    let q = quota("q", json!({"pods": "10", "requests.memory": "1Gi", "count/configmaps": "5", "secrets": "3"}), None);
    let resources = counted_resources(&q);
    assert!(resources.contains(&(String::new(), "pods".into())));
    assert!(resources.contains(&(String::new(), "configmaps".into())));
    assert!(resources.contains(&(String::new(), "secrets".into())));
    assert!(!resources.contains(&(String::new(), "services".into())));
    let mut done = pod("d", json!({"memory": "1Gi"}), json!({}));
    done["status"] = json!({"phase": "Failed"});
    let objects = vec![
        (
            "".to_string(),
            "pods".to_string(),
            vec![
                pod("a", json!({"memory": "128Mi"}), json!({})),
                pod("b", json!({"memory": "128Mi"}), json!({})),
                done,
            ],
        ),
        ("".to_string(), "configmaps".to_string(), vec![json!({"metadata": {"name": "c"}})]),
        ("".to_string(), "secrets".to_string(), vec![]),
    ];
    let status = recalculate(&q, &objects, now());
    assert_eq!(
        status,
        json!({"hard": {"pods": "10", "requests.memory": "1Gi", "count/configmaps": "5", "secrets": "3"},
               "used": {"pods": "2", "requests.memory": "256Mi", "count/configmaps": "1", "secrets": "0"}})
    );
}
