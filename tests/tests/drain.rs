//! Evictions and PodDisruptionBudgets (issue 25, item 3), with stock kubectl on hollow nodes: a budget's
//! status follows its pods, an eviction the budget does not allow is refused with 429 and kube-apiserver's
//! words, and `kubectl drain` empties a node one pod at a time without the ready pods ever falling below the
//! budget's minAvailable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_tests::masters::{json, Api, Hollow};
use keel_tests::{wait_for, Cluster, Options};
use serde_json::Value;

fn ready_pods(api: &Api) -> Vec<Value> {
    let list = json(api, &["get", "pods", "-l", "app=web"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
        .cloned()
        .collect()
}

fn budget(api: &Api) -> Value {
    json(api, &["get", "pdb", "web"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_evicts_one_pod_at_a_time_within_the_budget() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let _nodes = Hollow::start(&api, "hollow-", 2, &[]).unwrap();
    wait_for("two nodes", Duration::from_secs(30), || {
        let n = json(&api, &["get", "nodes"])["items"].as_array().map_or(0, Vec::len);
        (n == 2, n)
    })
    .await;
    // Every pod on hollow-0 first, the node to drain.
    api.ok(&["cordon", "hollow-1"], None).unwrap();
    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=3"], None).unwrap();
    api.ok(&["rollout", "status", "deployment/web", "--timeout=60s"], None).unwrap();
    api.ok(&["uncordon", "hollow-1"], None).unwrap();
    api.ok(&["create", "pdb", "web", "--selector=app=web", "--min-available=2"], None).unwrap();
    wait_for("the budget's status", Duration::from_secs(30), || {
        let s = budget(&api)["status"].clone();
        (s["disruptionsAllowed"] == 1 && s["currentHealthy"] == 3 && s["desiredHealthy"] == 2, s)
    })
    .await;
    let table = api.ok(&["get", "pdb", "web"], None).unwrap();
    assert!(
        table.contains("MIN AVAILABLE") && table.lines().nth(1).unwrap().split_whitespace().nth(3) == Some("1"),
        "{table}"
    );

    // An eviction the budget does not allow: 429, and the pod stays.
    api.ok(&["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec":{"minAvailable":3}}"#], None).unwrap();
    wait_for("no disruption allowed", Duration::from_secs(30), || {
        let s = budget(&api)["status"].clone();
        (s["disruptionsAllowed"] == 0 && s["observedGeneration"] == budget(&api)["metadata"]["generation"], s)
    })
    .await;
    let victim = ready_pods(&api)[0]["metadata"]["name"].as_str().unwrap().to_string();
    let eviction = format!(
        "{{\"apiVersion\": \"policy/v1\", \"kind\": \"Eviction\", \"metadata\": {{\"name\": \"{victim}\", \"namespace\": \"default\"}}}}"
    );
    let path = format!("/api/v1/namespaces/default/pods/{victim}/eviction");
    let refused = api.kubectl(&["create", "--raw", &path, "-f", "-"], Some(&eviction)).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    assert_eq!(ready_pods(&api).len(), 3);
    api.ok(&["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec":{"minAvailable":2}}"#], None).unwrap();
    wait_for("one disruption allowed again", Duration::from_secs(30), || {
        let s = budget(&api)["status"].clone();
        (s["disruptionsAllowed"] == 1, s)
    })
    .await;

    // Drain: every pod leaves hollow-0, and at least two are ready throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (api, stop) = (api.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut min = usize::MAX;
            while !stop.load(Ordering::Relaxed) {
                min = min.min(ready_pods(&api).len());
                std::thread::sleep(Duration::from_millis(100));
            }
            min
        })
    };
    let drained = api.kubectl(&["drain", "hollow-0", "--ignore-daemonsets", "--timeout=120s"], None).unwrap();
    stop.store(true, Ordering::Relaxed);
    let min = sampler.join().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&drained.stdout), String::from_utf8_lossy(&drained.stderr));
    assert!(drained.status.success(), "{out}");
    assert!(out.contains("evicting pod default/web-") && out.contains("node/hollow-0 drained"), "{out}");
    assert!(min >= 2, "ready pods fell to {min} during the drain:\n{out}");
    let node = json(&api, &["get", "node", "hollow-0"]);
    assert_eq!(node["spec"]["unschedulable"], true);
    wait_for("three ready pods on hollow-1", Duration::from_secs(60), || {
        let nodes: Vec<String> =
            ready_pods(&api).iter().map(|p| p["spec"]["nodeName"].as_str().unwrap_or_default().to_string()).collect();
        (nodes.len() == 3 && nodes.iter().all(|n| n == "hollow-1"), nodes)
    })
    .await;
}
