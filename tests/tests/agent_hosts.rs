//! Two nodes on one machine (as root): `deploy/hosts.sh` makes each node's "host" network a namespace
//! joined through a hub namespace, with routes between the pod CIDRs; each node has its own containerd and
//! agent (CNI in its host). A pod on one node fetches a page from a pod on the other by pod IP. Only
//! namespaces the test made carry traffic.

use std::time::Duration;

use keel_tests::agent::{pod_ready, TwoNodes, BUSYBOX};
use keel_tests::masters::json;
use keel_tests::wait_for;

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_two_nodes_reach_each_other_by_pod_ip() {
    let nodes = TwoNodes::start().await;
    let (api, agent1) = (&nodes.api, &nodes.agent1);

    let server = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: server
spec:
  nodeName: agent-2
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: ["sh", "-c", "mkdir /www; echo hello from $(hostname) > /www/index.html; exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&server)).unwrap();
    let server = pod_ready(api, "server", Duration::from_secs(60)).await;
    let ip = server["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.244.2."), "{ip}");

    let client = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: agent-1
  restartPolicy: Never
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do timeout 3 wget -q -O - http://{ip}:8080/ && exit 0; sleep 1; done; exit 1"]
"#
    );
    api.ok(&["apply", "-f", "-"], Some(&client)).unwrap();
    let client = wait_for("client done", Duration::from_secs(60), || {
        let pod = json(api, &["get", "pod", "client"]);
        let phase = pod["status"]["phase"].as_str().unwrap_or("").to_string();
        (phase == "Succeeded" || phase == "Failed", pod)
    })
    .await;
    assert!(client["status"]["podIP"].as_str().unwrap().starts_with("10.244.1."), "{}", client["status"]);
    let uid = client["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(agent1.log_dir.join(format!("default_client_{uid}/app/0.log"))).unwrap();
    assert_eq!(client["status"]["phase"], "Succeeded", "{log}");
    assert!(log.contains("hello from server"), "{log}");
}
