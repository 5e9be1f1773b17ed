//! Probes and stop hooks on a real agent and containerd (as root): a readiness probe (exec) holds Ready at
//! False until it passes; httpGet and tcpSocket probes reach the pod's IP over CNI (the node's network is a
//! namespace the test made); a failing liveness probe restarts the container with an `Unhealthy` event;
//! a postStart hook runs before the container counts as Running, and one that fails kills it; a preStop
//! hook runs before SIGTERM when the pod is deleted. HTTPS probes accept a self-signed server's
//! certificate (as the kubelet's) and fail against a server that does not speak TLS. gRPC probes ask a
//! keel store member in the pod (`grpc.health.v1.Health`): SERVING passes, an unknown service fails.

use std::time::Duration;

use keel_tests::agent::{cluster_with_agent, condition, pod_ready, Netns, BUSYBOX};
use keel_tests::masters::json;
use keel_tests::wait_for;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn probes_gate_readiness_restart_the_unhealthy_and_pre_stop_runs() {
    let host = Netns::create().unwrap();
    let netns = host.path().display().to_string();
    let (_c, api, _containerd, agent) =
        cluster_with_agent(&["--pod-cidr", "10.244.8.0/24", "--cni-netns", &netns, "--cni-bridge", "keeltest1"]).await;
    let hooks = agent.data_dir.join("hook-output");
    std::fs::create_dir_all(&hooks).unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: late
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sh", "-c", "sleep 4; touch /tmp/ready; exec sleep 3600"]
    readinessProbe:
      exec: {{command: [cat, /tmp/ready]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: out, hostPath: {{path: {hooks}}}}}]
  containers:
  - name: web
    image: {BUSYBOX}
    command: ["sh", "-c", "mkdir -p /www; echo up > /www/healthz; exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    volumeMounts: [{{name: out, mountPath: /out}}]
    startupProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
    livenessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo started $HOSTNAME > /out/post-start"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo stopping $HOSTNAME > /out/pre-stop"]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: sick
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    livenessProbe:
      exec: {{command: ["sh", "-c", "echo feeling bad; exit 1"]}}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: deaf
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    readinessProbe:
      httpGet: {{port: 9999}}
      periodSeconds: 1
"#,
        hooks = hooks.display()
    );
    api.ok(&["apply", "-f", "-"], Some(&manifest)).unwrap();

    // Readiness (exec): running but not Ready until /tmp/ready exists.
    let early = wait_for("late running", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "late"]);
        (pod["status"]["containerStatuses"][0]["state"]["running"].is_object(), pod)
    })
    .await;
    assert_eq!(condition(&early, "Ready"), "False", "{}", early["status"]);
    assert_eq!(early["status"]["containerStatuses"][0]["ready"], false);
    pod_ready(&api, "late", Duration::from_secs(30)).await;

    // startupProbe (tcpSocket), readiness and liveness (httpGet by port name and number) against the pod's IP.
    let web = pod_ready(&api, "web", Duration::from_secs(60)).await;
    let status = &web["status"]["containerStatuses"][0];
    assert_eq!(status["started"], true, "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    assert!(web["status"]["podIP"].as_str().unwrap().starts_with("10.244.8."), "{}", web["status"]);
    // Its postStart hook ran (through a hostPath volume) before it was reported Running.
    let said = std::fs::read_to_string(hooks.join("post-start")).unwrap_or_default();
    assert_eq!(said.trim(), "started web");

    // A postStart hook that fails kills its container, which restarts, with a FailedPostStartHook event.
    let hooked = wait_for("hooked restarted", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "hooked"]);
        (pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1, pod)
    })
    .await;
    assert_eq!(hooked["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137);
    let events = json(&api, &["get", "events", "--field-selector", "involvedObject.name=hooked"]);
    let failed = events["items"].as_array().into_iter().flatten().find(|e| e["reason"] == "FailedPostStartHook");
    assert_eq!(failed.map(|e| e["message"].clone()), Some("PostStartHook failed".into()), "{events}");

    // A readiness probe nobody answers keeps the pod not Ready (and never restarts it).
    let deaf = wait_for("deaf probed", Duration::from_secs(30), || {
        let events = json(&api, &["get", "events", "--field-selector", "involvedObject.name=deaf"]);
        let unhealthy = events["items"].as_array().into_iter().flatten().any(|e| e["reason"] == "Unhealthy");
        (unhealthy, json(&api, &["get", "pod", "deaf"]))
    })
    .await;
    assert_eq!(condition(&deaf, "Ready"), "False");
    assert_eq!(deaf["status"]["containerStatuses"][0]["restartCount"], 0);

    // Liveness (exec) fails twice in a row: the container is killed and restarted, with events.
    let sick = wait_for("sick restarted", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "sick"]);
        (pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1, pod)
    })
    .await;
    let last = &sick["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "sleep ignores SIGTERM as PID 1: killed after the grace period: {last}");
    let events = json(&api, &["get", "events", "--field-selector", "involvedObject.name=sick"]);
    let events: Vec<&Value> = events["items"].as_array().unwrap().iter().collect();
    let has = |reason: &str, text: &str| {
        events.iter().any(|e| e["reason"] == reason && e["message"].as_str().unwrap_or("").contains(text))
    };
    assert!(has("Unhealthy", "Liveness probe failed: "), "{events:?}");
    assert!(has("Unhealthy", "feeling bad"), "{events:?}");
    assert!(has("Killing", "Container app failed liveness probe, will be restarted"), "{events:?}");
    assert!(has("Started", "Started container app"), "{events:?}");
    let e = events.iter().find(|e| e["reason"] == "Killing").unwrap();
    assert_eq!(e["source"]["component"], "kubelet");
    assert_eq!(e["involvedObject"]["fieldPath"], "spec.containers{app}");
    // kubectl describe shows them.
    let described = api.ok(&["describe", "pod", "sick"], None).unwrap();
    assert!(described.contains("Liveness probe failed"), "{described}");

    // Deletion runs the preStop hook first (it writes through a hostPath volume).
    api.ok(&["delete", "pod", "web", "--wait=true", "--timeout=60s"], None).unwrap();
    let said = std::fs::read_to_string(hooks.join("pre-stop")).unwrap_or_default();
    assert_eq!(said.trim(), "stopping web");
}

/// Whether container `name` of the pod is ready.
fn container_ready(pod: &Value, name: &str) -> bool {
    pod["status"]["containerStatuses"].as_array().into_iter().flatten().any(|c| c["name"] == name && c["ready"] == true)
}

/// Waits for an `Unhealthy` event of pod `pod` whose message has every one of `words`.
async fn unhealthy_event(api: &keel_tests::masters::Api, pod: &str, words: &[&str]) {
    let selector = format!("involvedObject.name={pod}");
    wait_for(&format!("an Unhealthy event of {pod} with {words:?}"), Duration::from_secs(30), || {
        let events = json(api, &["get", "events", "--field-selector", &selector]);
        let messages: Vec<String> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "Unhealthy")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect();
        (messages.iter().any(|m| words.iter().all(|w| m.contains(w))), messages)
    })
    .await;
}

/// An HTTPS server on 8443 (python's, from the machine: the container chroots into the host's root, mounted
/// read-only) with a self-signed certificate.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("0.0.0.0", 8443), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn https_probes_accept_any_certificate_and_need_tls() {
    let (_c, api, _containerd, agent) = cluster_with_agent(&[]).await;
    let certs = agent.data_dir.join("probe-certs");
    std::fs::create_dir_all(&certs).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["server.invalid".to_string()]).unwrap().self_signed(&key).unwrap();
    let (cert_file, key_file) = (certs.join("tls.crt"), certs.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "secure"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
            "containers": [
                {"name": "tls", "image": BUSYBOX,
                 "command": ["chroot", "/host", "python3", "-c", HTTPS_SERVER, cert_file, key_file],
                 "volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": true}],
                 "readinessProbe": {"httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": 8443},
                                    "periodSeconds": 1}},
                {"name": "plain", "image": BUSYBOX,
                 "command": ["sh", "-c", "mkdir -p /www; echo ok > /www/healthz; exec httpd -f -p 8080 -h /www"],
                 "readinessProbe": {"httpGet": {"scheme": "HTTPS", "path": "/healthz", "port": 8080},
                                    "periodSeconds": 1}},
            ],
        },
    });
    api.ok(&["apply", "-f", "-"], Some(&pod.to_string())).unwrap();
    let pod = wait_for("the HTTPS server's container Ready", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "secure"]);
        (container_ready(&pod, "tls"), pod)
    })
    .await;
    assert!(!container_ready(&pod, "plain"), "{}", pod["status"]);
    assert_eq!(condition(&pod, "Ready"), "False");
    // The plain server's probe fails in the TLS handshake, and says so.
    unhealthy_event(&api, "secure", &["Readiness probe failed", "tls"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_probes_ask_the_health_service() {
    let (_c, api, _containerd, _agent) = cluster_with_agent(&[]).await;
    // A keel store member (the test's own binary, run from the machine's root) serves gRPC health in the pod;
    // its data on the machine's /dev/shm (the root is mounted read-only), removed at the end.
    struct RemovedOnDrop(String);
    impl Drop for RemovedOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let data = format!("/dev/shm/keel-probe-test-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&data);
    let _removed = RemovedOnDrop(data.clone());
    let keel = keel_tests::keel_bin().display().to_string();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rpc"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
            "containers": [
                {"name": "kv", "image": BUSYBOX,
                 "command": ["chroot", "/host", keel, "kv", "--data-dir", data,
                             "--listen-client-urls", "http://0.0.0.0:2379"],
                 "volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": true}],
                 "readinessProbe": {"grpc": {"port": 2379}, "periodSeconds": 1}},
                {"name": "other", "image": BUSYBOX, "command": ["sleep", "3600"],
                 "readinessProbe": {"grpc": {"port": 2379, "service": "no.such.Service"}, "periodSeconds": 1}},
            ],
        },
    });
    api.ok(&["apply", "-f", "-"], Some(&pod.to_string())).unwrap();
    let pod = wait_for("the store member's container Ready", Duration::from_secs(60), || {
        let pod = json(&api, &["get", "pod", "rpc"]);
        (container_ready(&pod, "kv"), pod)
    })
    .await;
    assert!(!container_ready(&pod, "other"), "{}", pod["status"]);
    unhealthy_event(&api, "rpc", &["Readiness probe failed", "NotFound"]).await;
    // The member stops before its data goes.
    api.ok(&["delete", "pod", "rpc", "--wait=true", "--timeout=60s"], None).unwrap();
}
