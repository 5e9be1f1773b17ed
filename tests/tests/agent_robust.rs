//! The agent survives what happens under it (as root, real containerd): containerd is killed and comes back
//! (the pod keeps its container, and a crash after that is seen and restarted); a pod force-deleted while
//! the agent is down is cleaned off the node when the agent comes back (container, snapshot, its namespaces'
//! directory and its IP lease).

use std::time::Duration;

use keel_tests::agent::{cluster_with_agent, condition, pod_ready, sleeping_pod, Hosts, BUSYBOX};
use keel_tests::masters::json;
use keel_tests::wait_for;

fn container_id(pod: &serde_json::Value) -> String {
    pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("containerd://")
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_restarts_and_pods_deleted_while_the_agent_is_down() {
    let hosts = Hosts::up(1);
    let mut flags = hosts.flags(1);
    flags.extend(["--backoff-base".to_string(), "1s".to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (_c, api, mut containerd, mut agent) = cluster_with_agent(&flags).await;
    api.ok(&["apply", "-f", "-"], Some(&sleeping_pod("steady", BUSYBOX, "IfNotPresent"))).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&sleeping_pod("doomed", BUSYBOX, "IfNotPresent"))).unwrap();
    let steady = pod_ready(&api, "steady", Duration::from_secs(60)).await;
    let id = container_id(&steady);
    let doomed = pod_ready(&api, "doomed", Duration::from_secs(60)).await;
    let doomed_id = container_id(&doomed);
    let doomed_uid = doomed["metadata"]["uid"].as_str().unwrap().to_string();
    // host-local's leases: a file per address in use.
    let leases = agent.data_dir.join("cni/ipam/keel");
    let doomed_ip = doomed["status"]["podIP"].as_str().unwrap().to_string();
    assert!(leases.join(&doomed_ip).exists(), "no lease for {doomed_ip} in {}", leases.display());

    // containerd down for 3 s and back: the container ran on (its shim did), the agent reconnects and
    // reports the same container, not restarted.
    containerd.restart(Duration::from_secs(3)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = containerd.ctr_ok(&["tasks", "ls"]).unwrap();
    assert!(tasks.lines().any(|l| l.starts_with(&id) && l.contains("RUNNING")), "{tasks}");
    let after = json(&api, &["get", "pod", "steady"]);
    assert_eq!(container_id(&after), id);
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(condition(&after, "Ready"), "True");
    // Exits are heard again: a killed container is restarted.
    containerd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]).unwrap();
    wait_for("steady restarted after containerd came back", Duration::from_secs(30), || {
        let pod = json(&api, &["get", "pod", "steady"]);
        let status = &pod["status"]["containerStatuses"][0];
        (status["restartCount"] == 1 && status["state"]["running"].is_object(), pod["status"].clone())
    })
    .await;

    // The agent down, a pod force-deleted meanwhile: back up, the agent removes its container and files.
    agent.kill();
    api.ok(&["delete", "pod", "doomed", "--force", "--grace-period=0"], None).unwrap();
    agent.restart(&api, &containerd, &flags).unwrap();
    wait_for("doomed's container gone", Duration::from_secs(30), || {
        let containers = containerd.ctr_ok(&["containers", "ls", "-q"]).unwrap();
        (!containers.contains(&doomed_id), containers)
    })
    .await;
    wait_for("doomed's directory gone", Duration::from_secs(10), || {
        (!agent.data_dir.join("pods").join(&doomed_uid).exists(), ())
    })
    .await;
    let snapshots = containerd.ctr_ok(&["snapshots", "ls"]).unwrap();
    assert!(!snapshots.contains(&doomed_id), "{snapshots}");
    assert!(!leases.join(&doomed_ip).exists(), "the lease of {doomed_ip} is left");
    let steady_ip = json(&api, &["get", "pod", "steady"])["status"]["podIP"].as_str().unwrap().to_string();
    assert!(leases.join(&steady_ip).exists(), "steady's lease of {steady_ip} is gone");
    assert_eq!(condition(&json(&api, &["get", "pod", "steady"]), "Ready"), "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_map_volumes_follow_their_config_map() {
    let (_c, api, _containerd, agent) = cluster_with_agent(&["--resync", "1s"]).await;
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: first
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: cfg, configMap: {{name: settings}}}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sh", "-c", "while true; do echo now: $(cat /cfg/greeting); sleep 1; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&manifest)).unwrap();
    let pod = pod_ready(&api, "reader", Duration::from_secs(60)).await;
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log = agent.log_dir.join(format!("default_reader_{uid}/app/0.log"));
    wait_for("first value read", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("now: first"), text)
    })
    .await;
    api.ok(&["patch", "configmap", "settings", "-p", r#"{"data":{"greeting":"second"}}"#], None).unwrap();
    wait_for("the running container sees the new value", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains("now: second"), text)
    })
    .await;
    let pod = json(&api, &["get", "pod", "reader"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
}
