//! The resource metrics API end to end, as root with a real containerd: the agent samples its pods'
//! cgroups and the machine, the masters serve `metrics.k8s.io/v1beta1` from the agents' summaries, and
//! stock `kubectl top pods` (`--containers`, `-l`, `-A`, by name) shows a busy pod's CPU rising above an
//! idle one's, `kubectl top nodes` lists the node, and a user bound to the `view` role may read them.

use std::time::Duration;

use keel_tests::agent::{cluster_with_agent, pod_ready, BUSYBOX};
use keel_tests::masters::Api;
use keel_tests::wait_for;
use serde_json::Value;

fn pod(name: &str, app: &str, command: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {command:?}]
  - name: side
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
    )
}

/// `kubectl top …`'s rows (header dropped), split into columns.
fn top(api: &Api, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["top"];
    all.extend(args);
    let out = api.kubectl(&all, None).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().skip(1).map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

/// Millicores from kubectl's `250m`.
fn millis(cell: &str) -> u64 {
    cell.trim_end_matches('m').parse().unwrap_or_else(|_| panic!("not millicores: {cell}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_top_shows_pods_and_nodes() {
    let (_c, api, _containerd, _agent) = cluster_with_agent(&["--housekeeping-interval", "2s"]).await;
    api.ok(&["apply", "-f", "-"], Some(&pod("busy", "burn", "while :; do :; done"))).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&pod("idle", "rest", "exec sleep 3600"))).unwrap();
    pod_ready(&api, "busy", Duration::from_secs(60)).await;
    pod_ready(&api, "idle", Duration::from_secs(60)).await;

    // Discovery names the API, as kubectl top needs.
    assert!(api.ok(&["api-versions"], None).unwrap().lines().any(|l| l == "metrics.k8s.io/v1beta1"));

    // The busy pod's CPU rises well above the idle one's (a busy loop takes a core when it can; the
    // machine is shared, so only "well above" is asked).
    let rows = wait_for("kubectl top pods shows the busy pod burning CPU", Duration::from_secs(120), || {
        let rows = top(&api, &["pods"]);
        let cpu = |name: &str| rows.iter().find(|r| r[0] == name).map(|r| millis(&r[1]));
        (matches!((cpu("busy"), cpu("idle")), (Some(b), Some(i)) if b >= 100 && i < b / 2), rows)
    })
    .await;
    for row in &rows {
        assert_eq!(row.len(), 3, "{rows:?}");
        assert!(row[2].ends_with("Mi"), "memory in Mi: {rows:?}");
    }

    // By name, by label, every namespace, and per container.
    let one = top(&api, &["pod", "busy"]);
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0][0], "busy");
    let labelled = top(&api, &["pods", "-l", "app=rest"]);
    assert_eq!(labelled.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["idle"]);
    let everywhere = top(&api, &["pods", "-A"]);
    assert!(everywhere.iter().any(|r| r[0] == "default" && r[1] == "busy"), "{everywhere:?}");
    let containers = top(&api, &["pods", "busy", "--containers"]);
    let names: Vec<&str> = containers.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["main", "side"], "{containers:?}");
    assert!(millis(&containers[0][2]) > millis(&containers[1][2]), "{containers:?}");

    // The objects as metrics-server shapes them.
    let raw = api.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy"], None).unwrap();
    let metrics: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (metrics["kind"].as_str(), metrics["apiVersion"].as_str()),
        (Some("PodMetrics"), Some("metrics.k8s.io/v1beta1"))
    );
    assert_eq!(metrics["metadata"]["labels"]["app"], "burn");
    assert!(metrics["timestamp"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{metrics}");
    let window = metrics["window"].as_str().unwrap();
    assert!(window.ends_with('s') && window.starts_with(['1', '2', '3']), "about the 2 s interval: {metrics}");
    let cpu = metrics["containers"][0]["usage"]["cpu"].as_str().unwrap();
    assert!(cpu.ends_with(['n', 'u', 'm']) || cpu.chars().all(|c| c.is_ascii_digit()), "{metrics}");
    let (ok, _, err) = run(&api, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope"]);
    assert!(!ok && (err.contains("NotFound") || err.contains("not found")), "{err}");

    // The node, with its share of the machine.
    let nodes = wait_for("kubectl top nodes lists the node", Duration::from_secs(60), || {
        let rows = top(&api, &["nodes"]);
        (rows.iter().any(|r| r[0] == "agent-1"), rows)
    })
    .await;
    let node = nodes.iter().find(|r| r[0] == "agent-1").unwrap();
    assert_eq!(node.len(), 5, "NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%): {nodes:?}");
    assert!(millis(&node[1]) >= 100, "the busy pod runs there: {nodes:?}");
    assert!(node[2].ends_with('%') && node[3].ends_with("Mi") && node[4].ends_with('%'), "{nodes:?}");
    let raw = api.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/agent-1"], None).unwrap();
    assert!(raw.contains("\"kind\":\"NodeMetrics\""), "{raw}");

    // The view role (through the aggregated metrics reader) lets a user read them, and no more.
    api.ok(&["create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice"], None).unwrap();
    wait_for("alice may read pod metrics", Duration::from_secs(30), || {
        let (ok, out, _) = run(&api, &["top", "pods", "--as=alice"]);
        (ok && out.contains("busy"), ())
    })
    .await;
    let (ok, _, err) = run(&api, &["top", "nodes", "--as=alice"]);
    assert!(!ok && err.contains("forbidden"), "nodes are cluster-scoped; alice has a namespace's view: {err}");
}

fn run(api: &Api, args: &[&str]) -> (bool, String, String) {
    let out = api.kubectl(args, None).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
