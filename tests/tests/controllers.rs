//! The control loops end to end: 3 stacked masters (or one), hollow nodes from `keel hollow-nodes`, and
//! stock kubectl. The elected master's scheduler binds pods, its ReplicaSet and Deployment controllers roll
//! out, scale and roll back, an unschedulable pod waits with kube-scheduler's message until a node that fits
//! arrives, and a rollout survives kill -9 of the leader master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_tests::masters::json;
use keel_tests::masters::{Api, Hollow};
use keel_tests::wait_for;
use keel_tests::{Cluster, Options};
use serde_json::Value;

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The pods of `app` not being deleted, as (name, node, image).
fn live_pods(api: &Api, app: &str) -> Vec<(String, String, String)> {
    let list = json(api, &["get", "pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (s(&p["metadata"]["name"]), s(&p["spec"]["nodeName"]), s(&p["spec"]["containers"][0]["image"]))
        })
        .collect()
}

async fn ready_masters(c: &Cluster, n: usize) {
    for i in 0..n {
        c.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
}

async fn ready_nodes(api: &Api, n: usize) {
    wait_for("hollow nodes registered", Duration::from_secs(30), || {
        let nodes = json(api, &["get", "nodes"]);
        let count = nodes["items"].as_array().map_or(0, Vec::len);
        (count >= n, count)
    })
    .await;
}

fn rollout_status(api: &Api, deployment: &str) {
    api.ok(&["rollout", "status", &format!("deployment/{deployment}"), "--timeout=90s"], None).unwrap();
}

/// Samples the ready pods of `app` every ~100 ms until stopped; returns the smallest count seen.
fn sample_ready(api: Api, app: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut min = usize::MAX;
        while !stop.load(Ordering::Relaxed) {
            let out = api.kubectl(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"], None).unwrap();
            if out.status.success() {
                let list: Value = serde_json::from_slice(&out.stdout).unwrap();
                let ready = list["items"].as_array().unwrap().iter().filter(|p| is_ready(p)).count();
                min = min.min(ready);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        min
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployments_roll_out_scale_and_roll_back_on_hollow_nodes() {
    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 3).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&c.api(1), "hollow-", 3, &[]).unwrap();
    ready_nodes(&api, 3).await;

    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=6"], None).unwrap();
    rollout_status(&api, "web");
    let pods = live_pods(&api, "web");
    assert_eq!(pods.len(), 6, "{pods:?}");
    let nodes: std::collections::BTreeSet<&str> = pods.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(nodes.len(), 3, "the scheduler spreads pods over the nodes: {pods:?}");
    let events = api.ok(&["get", "events", "--field-selector", "reason=Scheduled", "-o", "name"], None).unwrap();
    assert!(events.lines().count() >= 6, "a Scheduled event per pod: {events}");

    // A rolling update never has fewer than replicas - maxUnavailable ready pods.
    api.ok(
        &[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#,
        ],
        None,
    )
    .unwrap();
    rollout_status(&api, "web");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_ready(api.clone(), "web", stop.clone());
    api.ok(&["set", "image", "deployment/web", "busybox=busybox:2"], None).unwrap();
    rollout_status(&api, "web");
    stop.store(true, Ordering::Relaxed);
    let min_ready = sampler.join().unwrap();
    assert!(min_ready >= 5, "ready pods fell to {min_ready} during the rolling update (6 replicas, maxUnavailable 1)");
    let pods = live_pods(&api, "web");
    assert_eq!(pods.len(), 6, "{pods:?}");
    assert!(pods.iter().all(|p| p.2 == "busybox:2"), "{pods:?}");

    // Scale down and up.
    api.ok(&["scale", "deployment/web", "--replicas=2"], None).unwrap();
    wait_for("scaled down to 2", Duration::from_secs(60), || {
        let pods = live_pods(&api, "web");
        (pods.len() == 2, pods)
    })
    .await;
    api.ok(&["scale", "deployment/web", "--replicas=8"], None).unwrap();
    rollout_status(&api, "web");
    assert_eq!(live_pods(&api, "web").len(), 8);

    // Roll back: the first template returns, in its old ReplicaSet, as revision 3.
    api.ok(&["rollout", "undo", "deployment/web"], None).unwrap();
    rollout_status(&api, "web");
    let pods = live_pods(&api, "web");
    assert!(pods.len() == 8 && pods.iter().all(|p| p.2 == "busybox:1"), "{pods:?}");
    let sets = json(&api, &["get", "replicasets", "-l", "app=web"]);
    let sets = sets["items"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "the rollback reuses the first ReplicaSet");
    let first = sets.iter().find(|s| s["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1").unwrap();
    assert_eq!(first["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    assert_eq!(first["spec"]["replicas"], 8);

    // A pod that fits nowhere gets kube-scheduler's message, and is placed when a node that fits arrives.
    let big = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"big","labels":{"app":"big"}},
        "spec":{"containers":[{"name":"c","image":"busybox","resources":{"requests":{"cpu":"100"}}}]}}"#;
    api.ok(&["create", "-f", "-"], Some(big)).unwrap();
    wait_for("a FailedScheduling event", Duration::from_secs(30), || {
        let events = json(&api, &["get", "events", "--field-selector", "involvedObject.name=big"]);
        let messages: Vec<String> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "FailedScheduling")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect();
        (messages.iter().any(|m| m.starts_with("0/3 nodes are available: 3 Insufficient cpu.")), messages)
    })
    .await;
    let pod = json(&api, &["get", "pod", "big"]);
    let scheduled =
        pod["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").cloned();
    assert_eq!(scheduled.as_ref().map(|c| c["reason"].clone()), Some("Unschedulable".into()), "{pod}");
    let _big_node = Hollow::start(&c.api(2), "big-", 1, &["--cpu", "200"]).unwrap();
    wait_for("the big pod placed on the big node", Duration::from_secs(30), || {
        let pods = live_pods(&api, "big");
        (pods.first().is_some_and(|p| p.1 == "big-0"), pods)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_completes_across_kill_9_of_the_leader_master() {
    let mut c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 3).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    // kubectl and the hollow nodes use the two followers, which stay up.
    let api = c.api((leader + 1) % 3);
    let _nodes = Hollow::start(&c.api((leader + 2) % 3), "hollow-", 3, &[]).unwrap();
    ready_nodes(&api, 3).await;
    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=10"], None).unwrap();
    rollout_status(&api, "web");

    api.ok(&["set", "image", "deployment/web", "busybox=busybox:2"], None).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("killing the leader master m{} mid-rollout", leader + 1);
    c.kill(leader);
    rollout_status(&api, "web");
    let pods = live_pods(&api, "web");
    assert!(pods.len() == 10 && pods.iter().all(|p| p.2 == "busybox:2"), "{pods:?}");
    let new_leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    assert_ne!(new_leader, leader);
    let lease = json(&api, &["get", "lease", "-n", "kube-system", "keel-controller-manager"]);
    assert_eq!(lease["spec"]["holderIdentity"], format!("m{}", new_leader + 1), "{lease}");

    // The old leader comes back as a follower, and the loops go on under the new one.
    c.restart(leader).unwrap();
    c.api(leader).wait_ready(Duration::from_secs(60)).await.unwrap();
    api.ok(&["scale", "deployment/web", "--replicas=4"], None).unwrap();
    // (`rollout status` may pass before a scale-down is done, as on Kubernetes: the Deployment's status
    // counts its ReplicaSet's pods as last reported.)
    wait_for("scaled down to 4", Duration::from_secs(60), || {
        let pods = live_pods(&api, "web");
        (pods.len() == 4, pods)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_master_leads_its_control_loops_again_after_a_restart() {
    let mut c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    c.restart(0).unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 1, &[]).unwrap();
    ready_nodes(&api, 1).await;
    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=2"], None).unwrap();
    rollout_status(&api, "web");
    assert_eq!(live_pods(&api, "web").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_cascade_in_the_background_and_the_foreground_or_orphan() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 2, &[]).unwrap();
    ready_nodes(&api, 2).await;
    for app in ["bg", "fg", "orphan"] {
        api.ok(&["create", "deployment", app, "--image=busybox:1", "--replicas=2"], None).unwrap();
    }
    for app in ["bg", "fg", "orphan"] {
        rollout_status(&api, app);
    }
    let sets = |app: &str| {
        let list = json(&api, &["get", "replicasets", "-l", &format!("app={app}")]);
        list["items"].as_array().unwrap().clone()
    };

    // Background (kubectl's default): the Deployment goes at once, then its ReplicaSet and pods.
    api.ok(&["delete", "deployment", "bg"], None).unwrap();
    wait_for("bg's ReplicaSet and pods collected", Duration::from_secs(30), || {
        let (s, p) = (sets("bg").len(), live_pods(&api, "bg").len());
        (s == 0 && p == 0, (s, p))
    })
    .await;

    // Foreground: kubectl waits until the Deployment is gone, which is after its dependents.
    api.ok(&["delete", "deployment", "fg", "--cascade=foreground", "--timeout=60s"], None).unwrap();
    assert!(sets("fg").is_empty(), "the ReplicaSet went before its Deployment");
    wait_for("fg's pods collected", Duration::from_secs(30), || {
        let p = live_pods(&api, "fg");
        (p.is_empty(), p)
    })
    .await;

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, no longer owned.
    api.ok(&["delete", "deployment", "orphan", "--cascade=orphan", "--timeout=60s"], None).unwrap();
    let left = sets("orphan");
    assert_eq!(left.len(), 1);
    assert!(left[0]["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "{}", left[0]);
    assert_eq!(live_pods(&api, "orphan").len(), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(live_pods(&api, "orphan").len(), 2, "orphaned pods stay");
}

/// The taint keys on `node`, as "key:effect".
fn taints(api: &Api, node: &str) -> Vec<String> {
    let node = json(api, &["get", "node", node]);
    let list = node["spec"]["taints"].as_array().cloned().unwrap_or_default();
    list.iter().map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["effect"].as_str().unwrap())).collect()
}

fn node_ready(api: &Api, node: &str) -> String {
    let node = json(api, &["get", "node", node]);
    let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    ready.map(|c| c["status"].as_str().unwrap().to_string()).unwrap_or_default()
}

/// A Deployment of `replicas` pods of `app` that tolerate their node being not ready or unreachable for 5 s
/// only (not Kubernetes' default 300 s), created from JSON.
fn create_short_tolerance_deployment(api: &Api, app: &str, replicas: u32) {
    let toleration = |key: &str| serde_json::json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox:1"}],
                    "tolerations": [toleration("node.kubernetes.io/unreachable"), toleration("node.kubernetes.io/not-ready")],
                },
            },
        },
    });
    api.ok(&["create", "-f", "-"], Some(&deployment.to_string())).unwrap();
}

fn readyz_line(api: &Api, check: &str) -> String {
    let out = api.ok(&["get", "--raw", "/readyz?verbose"], None).unwrap_or_default();
    out.lines().find(|l| l.contains(check)).unwrap_or_default().to_string()
}

/// Every node stops reporting at once (the hollow nodes' process dies: as when the nodes lose their masters):
/// kube-controller-manager's "master disruption mode". The nodes go Unknown, but no NoExecute taint is set and
/// no pod is evicted, well past the pods' 5 s tolerations; the API server's /readyz and an Event say why. When
/// the nodes come back the mode ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_every_node_goes_silent_at_once_nothing_is_evicted() {
    let options = Options {
        masters: true,
        extra_args: vec!["--node-monitor-grace-period".into(), "15s".into()],
        ..Default::default()
    };
    let c = Cluster::start_with(1, options).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let mut nodes = Hollow::start(&api, "all-", 3, &[]).unwrap();
    ready_nodes(&api, 3).await;
    create_short_tolerance_deployment(&api, "steady", 6);
    rollout_status(&api, "steady");
    let before: Vec<String> = live_pods(&api, "steady").into_iter().map(|p| p.0).collect();
    assert_eq!(before.len(), 6);
    // The controller looks at the nodes once a second: its report may still predate them.
    wait_for("the node lifecycle controller reports a normal zone", Duration::from_secs(10), || {
        let line = readyz_line(&api, "node-lifecycle");
        (line.contains("normal (1 zone)"), line)
    })
    .await;

    nodes.kill();
    let killed = Instant::now();
    let names = ["all-0", "all-1", "all-2"];
    wait_for("every node Unknown", Duration::from_secs(40), || {
        let ready: Vec<String> = names.iter().map(|n| node_ready(&api, n)).collect();
        (ready.iter().all(|r| r == "Unknown"), ready)
    })
    .await;
    let unknown_after = killed.elapsed();
    // Well past the 5 s the pods tolerate a NoExecute taint: none is set, none is evicted.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(9) {
        for n in names {
            let t = taints(&api, n);
            assert!(!t.iter().any(|t| t.ends_with(":NoExecute")), "{n} has a NoExecute taint: {t:?}");
        }
        let pods: Vec<String> = live_pods(&api, "steady").into_iter().map(|p| p.0).collect();
        assert_eq!(pods, before, "no pod evicted or replaced");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in names {
        assert!(taints(&api, n).contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()));
    }
    let line = readyz_line(&api, "node-lifecycle");
    assert_eq!(line, "[+]node-lifecycle ok: full disruption: evictions stopped in zone \"\"");
    let events = api
        .ok(&["get", "events", "-n", "kube-system", "--field-selector", "reason=EnteringMasterDisruptionMode"], None)
        .unwrap();
    assert!(events.contains("Entering master disruption mode"), "{events}");
    let evictions = api.ok(&["get", "events", "--field-selector", "reason=TaintManagerEviction"], None).unwrap();
    assert!(!evictions.contains("steady-"), "{evictions}");

    // The nodes come back: the mode ends, and the pods were never touched.
    let _back = Hollow::start(&api, "all-", 3, &[]).unwrap();
    wait_for("the node lifecycle back to normal", Duration::from_secs(20), || {
        let line = readyz_line(&api, "node-lifecycle");
        (line.contains("normal (1 zone)"), line)
    })
    .await;
    let events = api
        .ok(&["get", "events", "-n", "kube-system", "--field-selector", "reason=ExitingMasterDisruptionMode"], None)
        .unwrap();
    assert!(events.contains("Exiting master disruption mode"), "{events}");
    let pods: Vec<String> = live_pods(&api, "steady").into_iter().map(|p| p.0).collect();
    assert_eq!(pods, before);
    eprintln!("every node Unknown {unknown_after:?} after the hollow nodes died; nothing evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_stops_heartbeating_has_its_pods_recreated_elsewhere() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let mut lost = Hollow::start(&api, "lost-", 1, &[]).unwrap();
    let _kept = Hollow::start(&api, "kept-", 2, &[]).unwrap();
    ready_nodes(&api, 3).await;
    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=6"], None).unwrap();
    rollout_status(&api, "web");
    let on_lost: Vec<String> = live_pods(&api, "web").into_iter().filter(|p| p.1 == "lost-0").map(|p| p.0).collect();
    assert!(!on_lost.is_empty(), "the scheduler spreads pods over all three nodes");

    // The node's agent dies: no more Lease renewals. After the grace period (20 s) the node is Unknown and
    // tainted; its pods tolerate that for 30 s (the default toleration), then go, and come back elsewhere.
    lost.kill();
    let killed = Instant::now();
    wait_for("lost-0 unreachable", Duration::from_secs(60), || {
        let (ready, taints) = (node_ready(&api, "lost-0"), taints(&api, "lost-0"));
        let done = ready == "Unknown"
            && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
            && taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string());
        (done, (ready, taints))
    })
    .await;
    let unreachable_after = killed.elapsed();
    let still_there: Vec<String> =
        live_pods(&api, "web").into_iter().filter(|p| p.1 == "lost-0").map(|p| p.0).collect();
    assert_eq!(still_there, on_lost, "pods stay for their tolerationSeconds once the node is unreachable");
    wait_for("the pods recreated on the nodes left", Duration::from_secs(90), || {
        let pods = live_pods(&api, "web");
        let list = json(&api, &["get", "pods", "-l", "app=web"]);
        let ready = list["items"].as_array().unwrap().iter().filter(|p| is_ready(p)).count();
        let moved = pods.iter().all(|p| p.1.starts_with("kept-"));
        (pods.len() == 6 && moved && ready >= 6, pods)
    })
    .await;
    eprintln!(
        "lost-0 unreachable {unreachable_after:?} and its pods replaced {:?} after its agent died",
        killed.elapsed()
    );
    let events = api.ok(&["get", "events", "--field-selector", "reason=TaintManagerEviction"], None).unwrap();
    assert!(on_lost.iter().all(|p| events.contains(p.as_str())), "{events}");

    // The agent comes back: the node is Ready and untainted again, and the pods it lost finish going.
    let _back = Hollow::start(&api, "lost-", 1, &[]).unwrap();
    wait_for("lost-0 Ready and untainted", Duration::from_secs(30), || {
        let (ready, taints) = (node_ready(&api, "lost-0"), taints(&api, "lost-0"));
        (ready == "True" && taints.is_empty(), (ready, taints))
    })
    .await;
    wait_for("the evicted pods deleted", Duration::from_secs(30), || {
        let list = json(&api, &["get", "pods", "-l", "app=web"]);
        let names: Vec<String> =
            list["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().into()).collect();
        (names.len() == 6, names)
    })
    .await;
}

/// The value of the metric line starting with `series` (name and labels) in master `api`'s /metrics.
fn metric(api: &Api, series: &str) -> Option<i64> {
    let text = api.ok(&["get", "--raw", "/metrics"], None).unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every Deployment, ReplicaSet and pod in `default` with its resourceVersion.
fn versions(api: &Api) -> Vec<(String, String)> {
    let list = json(api, &["get", "deployments,replicasets,pods"]);
    let mut all: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let name = format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap());
            (name, o["metadata"]["resourceVersion"].as_str().unwrap().to_string())
        })
        .collect();
    all.sort();
    all
}

const LEADING: &str = "leader_election_master_status{name=\"keel-controller-manager\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_paused_mid_rollout_and_resumed_after_a_new_one_took_over_changes_nothing() {
    let mut c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 3).await;
    let old = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let api = c.api((old + 1) % 3);
    let _nodes = Hollow::start(&c.api((old + 2) % 3), "hollow-", 3, &[]).unwrap();
    ready_nodes(&api, 3).await;
    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=10"], None).unwrap();
    rollout_status(&api, "web");
    let old_fence = wait_for("the leader's fence in its metrics", Duration::from_secs(10), || {
        let fence = metric(&c.api(old), "keel_controller_fence").unwrap_or(0);
        (fence > 0, fence)
    })
    .await;

    // SIGSTOP of the leader mid-rollout: it keeps its caches and whatever it was about to write.
    api.ok(&["set", "image", "deployment/web", "busybox=busybox:2"], None).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.pause(old).unwrap();
    let new = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    assert_ne!(new, old);
    let new_fence = wait_for("the new leader leads the loops", Duration::from_secs(20), || {
        let fence = metric(&c.api(new), "keel_controller_fence").unwrap_or(0);
        (fence > old_fence, fence)
    })
    .await;
    rollout_status(&api, "web");
    // At rest: nothing changed for 2 s and no pod still terminating (a node finishing a deletion later is
    // not the deposed leader's doing).
    let quiet = wait_for("the cluster at rest under the new leader", Duration::from_secs(60), || {
        let before = versions(&api);
        std::thread::sleep(Duration::from_secs(2));
        let after = versions(&api);
        let pods = json(&api, &["get", "pods"]);
        let terminating =
            pods["items"].as_array().unwrap().iter().any(|p| !p["metadata"]["deletionTimestamp"].is_null());
        (before == after && !terminating, after)
    })
    .await;

    // SIGCONT: the old leader wakes up believing it leads, with a stale view of a half-done rollout.
    c.resume(old).unwrap();
    wait_for("the old leader steps down", Duration::from_secs(20), || {
        let leading = metric(&c.api(old), LEADING);
        (leading == Some(0), leading)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(versions(&api), quiet, "the deposed leader changed something");
    let pods = live_pods(&api, "web");
    assert!(pods.len() == 10 && pods.iter().all(|p| p.2 == "busybox:2"), "{pods:?}");
    // Whatever the old leader wrote under its fence applied before the new leader's election.
    let last = metric(&c.api(old), &format!("keel_fenced_write_last_revision{{fence=\"{old_fence}\"}}"));
    assert!(last.is_some_and(|r| r < new_fence), "old fence {old_fence} wrote at {last:?}, new fence {new_fence}");
    let refused = metric(&c.api(old), "keel_fenced_writes_total{outcome=\"fenced\"}").unwrap_or(0);
    eprintln!("the deposed leader's fenced writes refused after it resumed: {refused}");
    let leaders: usize = (0..3).map(|i| metric(&c.api(i), LEADING).unwrap_or(0) as usize).sum();
    assert_eq!(leaders, 1, "exactly one master runs the control loops");
}

const BATCH: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations: {hollow.keel.dev/exit-code: "0", hollow.keel.dev/run-seconds: "1"}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: busybox:1}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 2
  template:
    metadata:
      annotations: {hollow.keel.dev/exit-code: "1", hollow.keel.dev/run-seconds: "0.2"}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: busybox:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {hollow.keel.dev/exit-code: "0", hollow.keel.dev/run-seconds: "1"}
        spec:
          restartPolicy: OnFailure
          containers: [{name: work, image: busybox:1}]
"#;

fn pod_phases(api: &Api, selector: &str) -> Vec<String> {
    let list = json(api, &["get", "pods", "-l", selector]);
    let mut phases: Vec<String> =
        list["items"].as_array().unwrap().iter().map(|p| p["status"]["phase"].as_str().unwrap_or("").into()).collect();
    phases.sort();
    phases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_complete_or_fail_after_their_backoff_limit_and_a_cronjob_fires_on_schedule() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 2, &[]).unwrap();
    ready_nodes(&api, 2).await;
    api.ok(&["apply", "-f", "-"], Some(BATCH)).unwrap();

    // Three completions, two at a time.
    api.ok(&["wait", "--for=condition=complete", "job/ok", "--timeout=60s"], None).unwrap();
    let ok = json(&api, &["get", "job", "ok"]);
    assert_eq!(ok["status"]["succeeded"], 3, "{}", ok["status"]);
    assert!(ok["status"]["completionTime"].is_string());
    assert_eq!(pod_phases(&api, "job-name=ok"), ["Succeeded"; 3]);

    // A pod failing every time: tried 1 + backoffLimit times (10 s, then 20 s apart), then the Job fails.
    api.ok(&["wait", "--for=condition=failed", "job/fails", "--timeout=90s"], None).unwrap();
    let fails = json(&api, &["get", "job", "fails"]);
    let failed = fails["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").cloned();
    assert_eq!(failed.as_ref().map(|c| c["reason"].clone()), Some("BackoffLimitExceeded".into()), "{fails}");
    assert_eq!(fails["status"]["failed"], 3, "{}", fails["status"]);
    assert_eq!(pod_phases(&api, "job-name=fails"), ["Failed"; 3]);

    // The CronJob's first run comes at the next whole minute, and completes.
    let fired = wait_for("the CronJob's Job completed", Duration::from_secs(90), || {
        let jobs = json(&api, &["get", "jobs"]);
        let done: Vec<Value> = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "tick" && j["status"]["succeeded"] == 1)
            .cloned()
            .collect();
        (!done.is_empty(), done.len())
    })
    .await;
    assert!(fired >= 1);
    let tick = wait_for("the CronJob's status", Duration::from_secs(10), || {
        let tick = json(&api, &["get", "cronjob", "tick"]);
        (tick["status"]["lastSuccessfulTime"].is_string(), tick)
    })
    .await;
    assert!(tick["status"]["lastScheduleTime"].is_string(), "{tick}");
    let events = api.ok(&["get", "events", "--field-selector", "involvedObject.name=tick"], None).unwrap();
    assert!(events.contains("SuccessfulCreate"), "{events}");
}

/// The ready addresses of Endpoints `name`, sorted.
fn endpoint_ips(api: &Api, name: &str) -> Vec<String> {
    let out = api.kubectl(&["get", "endpoints", name, "-o", "json"], None).unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    let ep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ips: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips
}

fn pod_ips(api: &Api, app: &str) -> Vec<String> {
    let list = json(api, &["get", "pods", "-l", &format!("app={app}")]);
    let mut ips: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect();
    ips.sort();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_services_endpoints_and_slices_follow_its_ready_pods() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 2, &[]).unwrap();
    ready_nodes(&api, 2).await;
    api.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=3"], None).unwrap();
    api.ok(&["expose", "deployment", "web", "--port=80", "--target-port=8080"], None).unwrap();
    rollout_status(&api, "web");
    let ips = wait_for("Endpoints with the 3 pods", Duration::from_secs(30), || {
        let (want, have) = (pod_ips(&api, "web"), endpoint_ips(&api, "web"));
        (want.len() == 3 && want == have, (want, have))
    })
    .await;
    let ep = json(&api, &["get", "endpoints", "web"]);
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080, "{ep}");
    let slices = json(&api, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let slice = &slices["items"][0];
    let mut addresses: Vec<String> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["conditions"]["ready"] == true)
        .map(|e| e["addresses"][0].as_str().unwrap().to_string())
        .collect();
    addresses.sort();
    assert_eq!((slice["addressType"].as_str(), addresses), (Some("IPv4"), ips.1), "{slice}");

    api.ok(&["scale", "deployment/web", "--replicas=1"], None).unwrap();
    wait_for("Endpoints down to 1 pod", Duration::from_secs(30), || {
        let (want, have) = (pod_ips(&api, "web"), endpoint_ips(&api, "web"));
        (have.len() == 1 && want == have, (want, have))
    })
    .await;

    api.ok(&["delete", "service", "web"], None).unwrap();
    wait_for("Endpoints and slices gone with their Service", Duration::from_secs(30), || {
        let e = api.kubectl(&["get", "endpoints", "web"], None).unwrap().status.success();
        let s = json(&api, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
        let slices = s["items"].as_array().map_or(0, Vec::len);
        (!e && slices == 0, (e, slices))
    })
    .await;
}

const SETS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: "agent:1"}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "db:1"}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemonset_runs_on_every_node_and_a_statefulset_keeps_its_identities() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 3, &[]).unwrap();
    ready_nodes(&api, 3).await;
    api.ok(&["apply", "-f", "-"], Some(SETS)).unwrap();

    // One daemon pod per node, and on a node that joins.
    api.ok(&["rollout", "status", "ds/agent", "--timeout=60s"], None).unwrap();
    let nodes_of = |api: &Api| {
        let mut n: Vec<String> = live_pods(api, "agent").into_iter().map(|p| p.1).collect();
        n.sort();
        n
    };
    assert_eq!(nodes_of(&api), ["hollow-0", "hollow-1", "hollow-2"]);
    let _more = Hollow::start(&api, "late-", 1, &[]).unwrap();
    wait_for("a daemon pod on the new node", Duration::from_secs(30), || {
        let n = nodes_of(&api);
        (n.len() == 4 && n.contains(&"late-0".to_string()), n)
    })
    .await;
    api.ok(&["rollout", "status", "ds/agent", "--timeout=60s"], None).unwrap();
    // A rolling update, its history, and undo.
    api.ok(&["set", "image", "ds/agent", "agent=agent:2"], None).unwrap();
    api.ok(&["rollout", "status", "ds/agent", "--timeout=90s"], None).unwrap();
    let images = |api: &Api| live_pods(api, "agent").into_iter().map(|p| p.2).collect::<Vec<_>>();
    assert_eq!(images(&api), ["agent:2"; 4]);
    let history = api.ok(&["rollout", "history", "ds/agent"], None).unwrap();
    assert!(history.contains('1') && history.contains('2'), "{history}");
    api.ok(&["rollout", "undo", "ds/agent"], None).unwrap();
    api.ok(&["rollout", "status", "ds/agent", "--timeout=90s"], None).unwrap();
    wait_for("agent:1 again everywhere", Duration::from_secs(30), || {
        let i = images(&api);
        (i == ["agent:1"; 4], i)
    })
    .await;

    // Ordinal names, stable identity, claims named per pod.
    api.ok(&["rollout", "status", "sts/db", "--timeout=60s"], None).unwrap();
    let mut names: Vec<String> = live_pods(&api, "db").into_iter().map(|p| p.0).collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    let db1 = json(&api, &["get", "pod", "db-1"]);
    assert_eq!((db1["spec"]["hostname"].as_str(), db1["spec"]["subdomain"].as_str()), (Some("db-1"), Some("db")));
    let claim = db1["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "data").cloned();
    assert_eq!(claim.map(|v| v["persistentVolumeClaim"]["claimName"].clone()), Some("data-db-1".into()));
    // OrderedReady: each ordinal was created after the one before it.
    let created =
        |n: &str| json(&api, &["get", "pod", n])["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    assert!(created("db-0") <= created("db-1") && created("db-1") <= created("db-2"));
    // Scale down from the highest ordinal; a rolling update keeps the names.
    api.ok(&["scale", "sts/db", "--replicas=1"], None).unwrap();
    wait_for("db down to db-0", Duration::from_secs(30), || {
        let p: Vec<String> = live_pods(&api, "db").into_iter().map(|p| p.0).collect();
        (p == ["db-0"], p)
    })
    .await;
    api.ok(&["set", "image", "sts/db", "db=db:2"], None).unwrap();
    api.ok(&["rollout", "status", "sts/db", "--timeout=60s"], None).unwrap();
    wait_for("db-0 on db:2", Duration::from_secs(30), || {
        let p = live_pods(&api, "db");
        (p.len() == 1 && p[0].0 == "db-0" && p[0].2 == "db:2", p)
    })
    .await;
}

/// The namespace's deletion condition of `type_`, as (status, message).
fn ns_condition(api: &Api, ns: &str, type_: &str) -> Option<(String, String)> {
    let out = api.kubectl(&["get", "namespace", ns, "-o", "json"], None).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let c = v["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
    Some((c["status"].as_str()?.to_string(), c["message"].as_str().unwrap_or("").to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_namespace_deletes_its_content_then_waits_for_finalizers() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 1, &[]).unwrap();
    ready_nodes(&api, 1).await;
    api.ok(&["create", "namespace", "shop"], None).unwrap();
    api.ok(&["-n", "shop", "create", "deployment", "web", "--image=busybox:1", "--replicas=2"], None).unwrap();
    api.ok(&["-n", "shop", "rollout", "status", "deployment/web", "--timeout=60s"], None).unwrap();
    api.ok(&["-n", "shop", "expose", "deployment", "web", "--port=80"], None).unwrap();
    api.ok(&["-n", "shop", "create", "configmap", "held", "--from-literal=k=v"], None).unwrap();
    let hold = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    api.ok(&["-n", "shop", "patch", "configmap", "held", "--type=merge", "-p", hold], None).unwrap();

    api.ok(&["delete", "namespace", "shop", "--wait=false"], None).unwrap();
    // Everything goes (the pods through their grace period, finished by the node) but the held ConfigMap,
    // and the namespace's conditions say so, in kube-controller-manager's words.
    let (_, message) = wait_for("only the held ConfigMap left", Duration::from_secs(60), || {
        let held = ns_condition(&api, "shop", "NamespaceFinalizersRemaining");
        let left = ns_condition(&api, "shop", "NamespaceContentRemaining");
        let only_held = left.as_ref().is_some_and(|(s, m)| {
            s == "True" && m == "Some resources are remaining: configmaps. has 1 resource instances"
        });
        (only_held && held.as_ref().is_some_and(|(s, _)| s == "True"), held.unwrap_or_default())
    })
    .await;
    assert_eq!(
        message,
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    let pods = json(&api, &["-n", "shop", "get", "pods,deployments,replicasets,services,endpoints"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(0), "{pods}");
    let ns = json(&api, &["get", "namespace", "shop"]);
    assert_eq!(
        (ns["status"]["phase"].as_str(), &ns["spec"]["finalizers"]),
        (Some("Terminating"), &serde_json::json!(["kubernetes"]))
    );
    let refused = api.kubectl(&["-n", "shop", "create", "configmap", "late"], None).unwrap();
    assert!(!refused.status.success(), "a create in a Terminating namespace");

    // The finalizer's owner lets go: the ConfigMap goes, then the namespace.
    api.ok(
        &["-n", "shop", "patch", "configmap", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#],
        None,
    )
    .unwrap();
    wait_for("the namespace gone", Duration::from_secs(30), || {
        let out = api.kubectl(&["get", "namespace", "shop"], None).unwrap();
        (!out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    })
    .await;
    // A namespace of the same name can be made again, empty (but for the CA every namespace gets).
    api.ok(&["create", "namespace", "shop"], None).unwrap();
    let fresh = json(&api, &["-n", "shop", "get", "configmaps"]);
    let names: Vec<&str> =
        fresh["items"].as_array().unwrap().iter().filter_map(|c| c["metadata"]["name"].as_str()).collect();
    assert!(names.iter().all(|n| *n == "kube-root-ca.crt"), "{fresh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replication_controller_keeps_its_replicas() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    ready_masters(&c, 1).await;
    let api = c.api(0);
    let _nodes = Hollow::start(&api, "hollow-", 1, &[]).unwrap();
    ready_nodes(&api, 1).await;
    // The selector and the controller's labels default to the template's labels.
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {app: legacy}}\n    spec: {containers: [{name: c, image: busybox}]}\n";
    api.ok(&["apply", "-f", "-"], Some(rc)).unwrap();
    let stored = json(&api, &["get", "rc", "legacy"]);
    assert_eq!(
        (stored["spec"]["selector"]["app"].as_str(), stored["metadata"]["labels"]["app"].as_str()),
        (Some("legacy"), Some("legacy"))
    );
    wait_for("three pods of the ReplicationController", Duration::from_secs(60), || {
        let pods = live_pods(&api, "legacy");
        (pods.len() == 3, pods)
    })
    .await;
    let pod = &json(&api, &["get", "pods", "-l", "app=legacy"])["items"][0];
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicationController");
    api.ok(&["scale", "rc", "legacy", "--replicas=1"], None).unwrap();
    wait_for("scaled down to one", Duration::from_secs(60), || {
        let pods = live_pods(&api, "legacy");
        (pods.len() == 1, pods)
    })
    .await;
    wait_for("its status and table", Duration::from_secs(30), || {
        let table = api.ok(&["get", "rc", "legacy"], None).unwrap_or_default();
        let row: Vec<String> =
            table.lines().nth(1).unwrap_or_default().split_whitespace().map(str::to_string).collect();
        (row.get(1..4) == Some(&["1".to_string(), "1".to_string(), "1".to_string()][..]), table)
    })
    .await;
    api.ok(&["delete", "rc", "legacy"], None).unwrap();
    wait_for("its pods collected", Duration::from_secs(60), || {
        let pods = live_pods(&api, "legacy");
        (pods.is_empty(), pods)
    })
    .await;
}
