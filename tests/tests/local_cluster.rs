//! The README's first command, `deploy/local-cluster.sh`, as root (CI): 3 masters and 2 agents on containerd,
//! each machine in a host (network namespace) of its own, and the sample app rolled out; `kubectl exec`
//! serves the sample's page through `keel lb`; the masters call an admission webhook served by a pod;
//! kill -9 of the master every agent uses first leaves every
//! node Ready and every pod untouched past the node grace period; `deploy/local-cluster.sh add-master`
//! replaces it (a join token, the CA pinned); and `deploy/local-cluster.sh stop` leaves
//! no process, namespace or mount behind. The only port the script takes on the machine itself is `keel lb`'s
//! 127.0.0.1:6443: the test reserves it from the other tests' free ports, and when something already listens
//! there (a developer's own local cluster) it says so and does nothing.

use std::path::PathBuf;
use std::process::{Command, Output};

use keel_tests::agent::repo_root;
use keel_tests::keel_bin;

/// The script's ports on the machine: `keel lb`.
const PORTS: [u16; 1] = [6443];

struct Script {
    dir: tempfile::TempDir,
}

impl Script {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo_root().join("deploy/local-cluster.sh"))
            .args(args)
            .env("KEEL", keel_bin())
            .env("KEEL_CLUSTER_DETACH", "1")
            .env("KEEL_CLUSTER_DIR", self.dir.path())
            .output()
            .expect("bash runs")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl").arg("--kubeconfig").arg(self.kubeconfig()).args(args).output().expect("kubectl runs")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// `kubectl apply -f -` of `yaml`.
    fn apply(&self, yaml: &str) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().expect("stdin").write_all(yaml.as_bytes())?;
                child.wait_with_output()
            })
            .expect("kubectl runs")
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.run(&["stop"]);
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_local_cluster_runs_the_sample_app_on_two_agents_and_stops_clean() {
    // Reserved, so that other tests' free ports are never these.
    if let Some(port) = PORTS.iter().find(|p| !keel_tests::reserve_port(**p)) {
        eprintln!("127.0.0.1:{port} is taken (a local cluster running?): not starting another");
        return;
    }
    let script = Script { dir: tempfile::tempdir().unwrap() };
    let out = script.run(&[]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("successfully rolled out") && shown.contains("2 nodes running containers"), "{shown}");

    let pods = script.kubectl(&["-n", "sample", "get", "pods", "-o", "wide"]);
    let listed = text(&pods);
    assert!(listed.contains("node-1") && listed.contains("node-2"), "{listed}");
    let page =
        script.kubectl(&["-n", "sample", "exec", "deployment/web", "--", "wget", "-qO-", "localhost:8080/index.html"]);
    assert!(page.status.success() && text(&page).contains("hello from keel"), "{}", text(&page));
    // Through the Service, by name (the node's DNS and proxy), and the API through the kubernetes Service.
    let by_name =
        script.kubectl(&["-n", "sample", "exec", "deployment/web", "--", "wget", "-qO-", "http://web.sample/"]);
    assert!(by_name.status.success() && text(&by_name).contains("hello from keel"), "{}", text(&by_name));
    // From the machine, as the launcher prints it: the sample's Ingress and NodePort on either node.
    for (args, what) in [
        (vec!["-H", "Host: web.sample.test", "http://10.200.0.11/"], "the Ingress on node-1"),
        (vec!["http://10.200.0.12:30080/"], "the NodePort on node-2"),
    ] {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--net=/run/netns/khhub", "curl", "-s", "-m", "5"]).args(&args);
        let out = cmd.output().unwrap();
        assert!(text(&out).contains("hello from keel"), "{what}: {}", text(&out));
    }
    // A LoadBalancer Service gets the nodes' addresses, and answers on each.
    let lb =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-lb, namespace: sample}\nspec:\n  type: LoadBalancer\n  \
              selector: {app: web}\n  ports: [{port: 8081, targetPort: http}]\n";
    let applied = script.apply(lb);
    assert!(applied.status.success(), "{}", text(&applied));
    let mut addresses = String::new();
    for _ in 0..50 {
        let out = script.kubectl(&[
            "-n",
            "sample",
            "get",
            "svc",
            "web-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        addresses = text(&out);
        if addresses.split_whitespace().count() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(addresses.trim(), "10.200.0.11 10.200.0.12");
    // The status comes from the masters; each node's proxy programs the port from its own watch, a
    // moment later (as kube-proxy does after a cloud controller writes the status): ask for a while.
    for ip in addresses.split_whitespace() {
        let mut answer = String::new();
        for _ in 0..40 {
            let out = Command::new("nsenter")
                .args(["--net=/run/netns/khhub", "curl", "-s", "-m", "5", &format!("http://{ip}:8081/")])
                .output()
                .unwrap();
            answer = text(&out);
            if answer.contains("hello from keel") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        assert!(answer.contains("hello from keel"), "the LoadBalancer on {ip}: {answer}");
    }
    let ingress = script.kubectl(&[
        "-n",
        "sample",
        "get",
        "ingress",
        "web",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].ip}",
    ]);
    assert_eq!(text(&ingress).trim(), "10.200.0.11 10.200.0.12", "the Ingress's address");
    let api = "echo | timeout 3 nc $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT >/dev/null && echo reached";
    let api = script.kubectl(&["-n", "sample", "exec", "deployment/web", "--", "sh", "-c", api]);
    assert!(text(&api).contains("reached"), "{}", text(&api));

    // An in-cluster client (the official Python client's load_incluster_config, the interpreter mounted
    // from the machine) lists its namespace's pods with its service-account token, through the kubernetes
    // Service, checking the API's certificate against the mounted CA; a Secret elsewhere is refused.
    for args in [
        vec!["create", "namespace", "incluster"],
        vec![
            "create",
            "rolebinding",
            "viewers",
            "-n",
            "incluster",
            "--clusterrole=view",
            "--serviceaccount=incluster:default",
        ],
    ] {
        let out = script.kubectl(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let applied = script.apply(&in_cluster_client());
    assert!(applied.status.success(), "{}", text(&applied));
    let mut phase = String::new();
    for _ in 0..60 {
        phase = text(&script.kubectl(&["-n", "incluster", "get", "pod", "client", "-o", "jsonpath={.status.phase}"]));
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let logs = text(&script.kubectl(&["-n", "incluster", "logs", "client"]));
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("pods 1") && logs.contains("secrets 403"), "{logs}");

    // An admission webhook served by a pod behind a Service: the masters, on hosts of their own, call it
    // at the pod's address (routed to its node) over TLS checked against the configuration's caBundle.
    admission_webhook_in_a_pod(&script);

    // Every agent's load balancer starts with m1: kill it. Nothing on the nodes may notice, past the node
    // grace period (20 s) and then some.
    let pods = || {
        let columns = "custom-columns=N:.metadata.name,U:.metadata.uid,R:.status.containerStatuses[0].restartCount";
        script.kubectl(&["-n", "sample", "get", "pods", "-o", columns])
    };
    let pods_before = pods();
    assert!(pods_before.status.success(), "{}", text(&pods_before));
    let m1 = format!("server --name m1 --data-dir {}/m1", script.dir.path().display());
    let killed = Command::new("pkill").args(["-9", "-f", &m1]).status().unwrap();
    assert!(killed.success(), "no process matches {m1:?}");
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let nodes = script.kubectl(&["get", "nodes", "--no-headers"]);
        let nodes = text(&nodes);
        assert!(
            nodes.lines().count() == 2 && nodes.lines().all(|l| l.split_whitespace().nth(1) == Some("Ready")),
            "{:?} after m1 died: {nodes}",
            start.elapsed()
        );
    }
    let pods_after = pods();
    assert_eq!(text(&pods_after), text(&pods_before), "pods changed after m1 died");

    // The dead master is replaced: a fourth joins with a join token, through the live masters, as a voter.
    let added = script.run(&["add-master"]);
    let shown = text(&added);
    assert!(added.status.success() && shown.contains("master m4 joined"), "{shown}");
    assert!(shown.contains("--join-token <token>") && shown.contains("--join-ca-hash sha256:"), "{shown}");
    let members = script.kubectl(&["get", "--raw", "/keel/v1/members"]);
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    let m4 = members["members"].as_array().unwrap().iter().find(|m| m["name"] == "m4").cloned();
    assert_eq!(m4.map(|m| m["isLearner"].clone()), Some(serde_json::json!(false)), "{members}");

    let stopped = script.run(&["stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = text(&namespaces);
    assert!(!namespaces.lines().any(|l| l.starts_with("kh")), "{namespaces}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&script.dir.path().display().to_string()), "mounts left under the cluster's dir");
    let dir = script.dir.path().display().to_string();
    let left = keel_tests::processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left: {left:?}");
}

/// A pod `namespace/name` running the machine's Python on `script`: its interpreter, libraries and packages
/// (the official client's included) mounted read-only from the machine (as the probe tests mount
/// binaries), with `volumes` (YAML list items) beside those and `more` appended to its container.
fn python_pod(namespace: &str, name: &str, script: &str, restart: &str, volumes: &[&str], more: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys, kubernetes\nprint(os.path.realpath(sys.executable))\nprint(sys.prefix)\n\
             print(os.path.dirname(os.path.dirname(kubernetes.__file__)))",
        ])
        .output()
        .expect("python3 runs");
    let found = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = found.lines().collect();
    assert_eq!(lines.len(), 3, "python3 and its kubernetes package: {found}{}", String::from_utf8_lossy(&out.stderr));
    let (python, prefix, packages) = (lines[0], lines[1], lines[2]);
    let mut mounts = vec![("/usr", "/usr".to_string()), ("/usr/lib64", "/lib64".into()), ("/usr/lib", "/lib".into())];
    for dir in [prefix, packages] {
        if !dir.starts_with("/usr/") && dir != "/usr" && !mounts.iter().any(|(_, m)| dir.starts_with(m.as_str())) {
            mounts.push((dir, dir.to_string()));
        }
    }
    let volumes: Vec<String> = mounts
        .iter()
        .enumerate()
        .map(|(i, (host, _))| format!("  - {{name: m{i}, hostPath: {{path: {host}}}}}"))
        .chain(volumes.iter().map(|v| format!("  - {v}")))
        .collect();
    let volume_mounts: Vec<String> = mounts
        .iter()
        .enumerate()
        .map(|(i, (_, at))| format!("    - {{name: m{i}, mountPath: {at}, readOnly: true}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}\nspec:\n\
         \x20 restartPolicy: {restart}\n  volumes:\n{}\n  containers:\n  - name: {name}\n    image: keel.test/busybox:1\n\
         \x20   command: [{python:?}, \"-c\", {script:?}]\n    volumeMounts:\n{}\n{more}",
        volumes.join("\n"),
        volume_mounts.join("\n")
    )
}

/// The official Python client in-cluster: it lists its namespace's pods and is refused kube-system's
/// Secrets.
fn in_cluster_client() -> String {
    let script = "import kubernetes as k\n\
        k.config.load_incluster_config()\n\
        v = k.client.CoreV1Api()\n\
        ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n\
        print('pods', len(v.list_namespaced_pod(ns).items))\n\
        try:\n  v.list_namespaced_secret('kube-system')\n\
        except k.client.ApiException as e:\n  print('secrets', e.status)\n";
    python_pod("incluster", "client", script, "Never", &[], "")
}

/// A validating webhook in a pod (the machine's Python serving HTTPS with a certificate for
/// `hook.sample.svc` from a TLS Secret) that refuses ConfigMaps labelled `deny: "yes"`; only ConfigMaps with
/// a `deny` label are sent to it.
fn admission_webhook_in_a_pod(script: &Script) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=hook.sample.svc", "-addext", "subjectAltName=DNS:hook.sample.svc", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let secret =
        script.kubectl(&["-n", "sample", "create", "secret", "tls", "hook-tls", "--cert", &cert_s, "--key", &key_s]);
    assert!(secret.status.success(), "{}", text(&secret));
    let server = "import http.server, json, ssl\n\
        class Hook(http.server.BaseHTTPRequestHandler):\n\
        \x20   def do_POST(self):\n\
        \x20       request = json.loads(self.rfile.read(int(self.headers['Content-Length'])))['request']\n\
        \x20       labels = request['object']['metadata'].get('labels') or {}\n\
        \x20       answer = {'uid': request['uid'], 'allowed': labels.get('deny') != 'yes',\n\
        \x20                 'status': {'code': 403, 'message': 'refused by the hook pod'}}\n\
        \x20       body = json.dumps({'apiVersion': 'admission.k8s.io/v1', 'kind': 'AdmissionReview',\n\
        \x20                          'response': answer}).encode()\n\
        \x20       self.send_response(200)\n\
        \x20       self.send_header('Content-Type', 'application/json')\n\
        \x20       self.send_header('Content-Length', str(len(body)))\n\
        \x20       self.end_headers()\n\
        \x20       self.wfile.write(body)\n\
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        tls.load_cert_chain('/tls/tls.crt', '/tls/tls.key')\n\
        server = http.server.HTTPServer(('0.0.0.0', 8443), Hook)\n\
        server.socket = tls.wrap_socket(server.socket, server_side=True)\n\
        server.serve_forever()\n";
    let more = "    - {name: tls, mountPath: /tls, readOnly: true}\n    ports: [{containerPort: 8443}]\n    \
                readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}\n";
    let pod = python_pod("sample", "hook", server, "Always", &["{name: tls, secret: {secretName: hook-tls}}"], more);
    let ca = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&cert).unwrap())
    };
    let objects = format!(
        "{pod}---\napiVersion: v1\nkind: Service\nmetadata: {{name: hook, namespace: sample}}\nspec:\n  \
         selector: {{app: hook}}\n  ports: [{{port: 443, targetPort: 8443}}]\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: hook}}\n\
         webhooks:\n- name: hook.sample.svc\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  \
         failurePolicy: Fail\n  clientConfig:\n    caBundle: {ca}\n    service: {{name: hook, namespace: sample}}\n  \
         objectSelector: {{matchExpressions: [{{key: deny, operator: Exists}}]}}\n  rules:\n  - {{apiGroups: [\"\"], \
         apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}\n"
    );
    let applied = script.apply(&objects);
    assert!(applied.status.success(), "{}", text(&applied));
    let ready = script.kubectl(&["-n", "sample", "wait", "pod/hook", "--for=condition=Ready", "--timeout=60s"]);
    assert!(ready.status.success(), "{}", text(&ready));
    // The Service's endpoint may take a moment to reach the masters' reads: until then the call fails, and
    // failurePolicy Fail refuses with another message.
    let out = script.kubectl(&["-n", "sample", "create", "configmap", "unlabelled", "--from-literal=a=b"]);
    assert!(out.status.success(), "a ConfigMap without the label is not sent: {}", text(&out));
    let mut refused = String::new();
    for _ in 0..30 {
        let create =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: denied, namespace: sample, labels: {deny: \"yes\"}}\n";
        refused = text(&script.apply(create));
        if refused.contains("refused by the hook pod") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(refused.contains("admission webhook \"hook.sample.svc\" denied the request"), "{refused}");
    let allowed =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: allowed, namespace: sample, labels: {deny: \"no\"}}\n";
    let out = script.apply(allowed);
    assert!(out.status.success(), "the hook allows it: {}", text(&out));
}
