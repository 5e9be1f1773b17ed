//! Issue 7's "done when", as a user would do it (as root): `kubectl apply` of an ordinary Deployment —
//! busybox httpd, 3 replicas spread over two nodes, readiness and liveness probes, a configMap volume — on
//! a keel cluster with two agents (each in its own host network namespace from `deploy/hosts.sh`, with its
//! own containerd). The pods run as containerd tasks; `kubectl logs` shows httpd's request log; `kubectl
//! exec` in a pod on one node fetches the page from a pod on the other by pod IP; a container whose
//! liveness probe fails is restarted and gets Ready again; a deleted pod is replaced.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_tests::agent::{Containerd, TwoNodes, BUSYBOX};
use keel_tests::masters::{json, Api};
use keel_tests::wait_for;
use serde_json::Value;

fn manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: web-content}}
data:
  index.html: "hello from the configmap\n"
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
          labelSelector: {{matchLabels: {{app: web}}}}}}
      volumes:
      - {{name: content, configMap: {{name: web-content}}}}
      containers:
      - name: httpd
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        command: ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
        ports: [{{containerPort: 8080, name: http}}]
        resources: {{requests: {{cpu: 50m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
        volumeMounts: [{{name: content, mountPath: /www, readOnly: true}}]
        readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
        livenessProbe: {{exec: {{command: ["sh", "-c", "test ! -f /tmp/sick"]}}, periodSeconds: 1, failureThreshold: 2}}
"#
    )
}

/// The Deployment's pods, by name.
fn pods(api: &Api) -> BTreeMap<String, Value> {
    let list = json(api, &["get", "pods", "-l", "app=web"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| (p["metadata"]["name"].as_str().unwrap_or_default().to_string(), p.clone()))
        .collect()
}

fn ready(pod: &Value) -> bool {
    keel_tests::agent::condition(pod, "Ready") == "True"
}

fn kubectl(api: &Api, args: &[&str]) -> (bool, String) {
    let out = api.kubectl(args, None).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The ids of the tasks running in a containerd (`ctr tasks ls`).
fn running_tasks(containerd: &Containerd) -> Vec<String> {
    let out = containerd.ctr_ok(&["tasks", "ls"]).unwrap_or_default();
    out.lines()
        .skip(1)
        .filter(|l| l.contains("RUNNING"))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_runs_on_two_agents_with_logs_exec_restarts_and_cross_node_traffic() {
    let nodes = TwoNodes::start().await;
    let (api, containerd1, containerd2) = (&nodes.api, &nodes.containerd1, &nodes.containerd2);
    wait_for("two Ready nodes", Duration::from_secs(60), || {
        let nodes = json(api, &["get", "nodes"]);
        let ready = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| keel_tests::agent::condition(n, "Ready") == "True")
            .count();
        (ready == 2, nodes)
    })
    .await;

    api.ok(&["apply", "-f", "-"], Some(&manifest())).unwrap();
    api.ok(&["rollout", "status", "deployment/web", "--timeout=120s"], None).unwrap();
    let running = wait_for("3 Ready pods", Duration::from_secs(60), || {
        let pods = pods(api);
        (pods.len() == 3 && pods.values().all(ready), pods)
    })
    .await;

    // Spread over both nodes, each pod a running task in its node's containerd, with an address in its
    // node's pod CIDR.
    let on = |node: &str| running.values().filter(|p| p["spec"]["nodeName"] == node).cloned().collect::<Vec<_>>();
    let (on1, on2) = (on("agent-1"), on("agent-2"));
    assert!(!on1.is_empty() && !on2.is_empty() && on1.len() + on2.len() == 3, "{running:?}");
    for (pods, containerd, cidr) in [(&on1, containerd1, "10.244.1."), (&on2, containerd2, "10.244.2.")] {
        let tasks = running_tasks(containerd);
        for pod in pods {
            let id = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap();
            let id = id.strip_prefix("containerd://").unwrap();
            assert!(tasks.iter().any(|t| t == id), "{id} not among {tasks:?}");
            assert!(pod["status"]["podIP"].as_str().unwrap().starts_with(cidr), "{}", pod["status"]);
        }
    }

    // Cross-node: exec in a pod on agent-1, fetch the configMap's page from a pod on agent-2 by its IP.
    let (from, to) = (&on1[0], &on2[0]);
    let from_name = from["metadata"]["name"].as_str().unwrap();
    let to_name = to["metadata"]["name"].as_str().unwrap();
    let url = format!("http://{}:8080/index.html", to["status"]["podIP"].as_str().unwrap());
    let (ok, page) = kubectl(api, &["exec", from_name, "--", "timeout", "5", "wget", "-q", "-O", "-", &url]);
    assert!(ok && page.contains("hello from the configmap"), "{page}");

    // httpd's log (its stderr) shows the request from the other node, and the readiness probe's.
    let from_ip = from["status"]["podIP"].as_str().unwrap().to_string();
    wait_for("the request in the server's log", Duration::from_secs(10), || {
        let (ok, log) = kubectl(api, &["logs", to_name]);
        (ok && log.contains(&from_ip), log)
    })
    .await;

    // A failing liveness probe restarts the container; it comes back Ready, with its restart counted.
    let (ok, out) = kubectl(api, &["exec", to_name, "--", "touch", "/tmp/sick"]);
    assert!(ok, "{out}");
    let restarted = wait_for("the sick container restarted and Ready", Duration::from_secs(60), || {
        let pod = json(api, &["get", "pod", to_name]);
        (pod["status"]["containerStatuses"][0]["restartCount"] == 1 && ready(&pod), pod)
    })
    .await;
    assert!(
        restarted["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(),
        "{}",
        restarted["status"]
    );
    let (ok, events) = kubectl(api, &["get", "events", "--field-selector", &format!("involvedObject.name={to_name}")]);
    assert!(ok && events.contains("Unhealthy") && events.contains("Liveness probe failed"), "{events}");

    // A deleted pod is replaced; the Deployment gets back to 3 Ready replicas.
    api.ok(&["delete", "pod", from_name, "--wait=false"], None).unwrap();
    wait_for("3 Ready pods again, without the deleted one", Duration::from_secs(90), || {
        let pods = pods(api);
        (
            pods.len() == 3 && !pods.contains_key(from_name) && pods.values().all(ready),
            pods.keys().cloned().collect::<Vec<_>>(),
        )
    })
    .await;
    let deployment = json(api, &["get", "deployment", "web"]);
    assert_eq!(deployment["status"]["readyReplicas"], 3, "{}", deployment["status"]);
}
