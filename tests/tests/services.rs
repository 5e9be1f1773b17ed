//! Services that route, on two nodes of their own (as root: `deploy/hosts.sh` hosts, a containerd and an
//! agent each, the agents' Service proxy in each host): a cluster IP spreads a client's requests over ready
//! backends on both nodes, a pod reaches itself through its Service, a backend that stops being ready
//! leaves the rotation, a node port answers on each node's address (only with local backends, which see the
//! client's address, under `externalTrafficPolicy: Local`), a Service without endpoints refuses at once,
//! and the rules outlive their agent, an established connection through a cluster IP included; pods find
//! Services by name through their node's DNS server (A, headless, a pod's name under its subdomain, SRV,
//! NXDOMAIN). Traffic goes only to addresses inside the test's hosts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use keel_tests::agent::{pod_ready, sleeping_pod, TwoNodes, BUSYBOX};
use keel_tests::masters::{json, Api};
use keel_tests::wait_for;

/// A web server pod on `node` that answers with its name while /www/ready exists (its readiness probe),
/// and the client's address at /cgi-bin/ip; an echo server on port 9000. Its hostname is under the
/// headless Service `db` (`<name>.db.default.svc.cluster.local`), as a StatefulSet's pods are.
fn backend(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  nodeName: {node}
  hostname: {name}
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: ["sh", "-c", "mkdir -p /www/cgi-bin; echo {name} > /www/index.html; printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip; chmod +x /www/cgi-bin/ip; touch /www/ready; nc -ll -p 9000 -e cat & exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      exec: {{command: ["test", "-f", "/www/ready"]}}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: sticky
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: local
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: web}
  ports: [{port: 9000}]
---
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  selector: {app: nothing}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// `wget` of `url` from pod `pod`, `n` times (each within 2 s): the answers, one per line ("-" for a failure).
fn fetch(api: &Api, pod: &str, url: &str, n: u32) -> Vec<String> {
    let script = format!("for i in $(seq 1 {n}); do timeout 2 wget -q -O - {url} 2>/dev/null || echo -; done");
    let out = api.kubectl(&["exec", pod, "--", "sh", "-c", &script], None).unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn answers(list: &[String]) -> BTreeSet<String> {
    list.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ips_and_node_ports_reach_ready_backends_on_both_nodes() {
    let mut nodes = TwoNodes::start().await;
    let api = nodes.api.clone();
    for (name, node) in [("web-1", "agent-1"), ("web-2", "agent-2")] {
        api.ok(&["apply", "-f", "-"], Some(&backend(name, node))).unwrap();
    }
    // The Services first: a container gets the variables of the Services that exist when it starts.
    api.ok(&["apply", "-f", "-"], Some(SERVICES)).unwrap();
    let client = sleeping_pod("client", BUSYBOX, "Never").replace("spec:\n", "spec:\n  nodeName: agent-1\n");
    api.ok(&["apply", "-f", "-"], Some(&client)).unwrap();
    for pod in ["web-1", "web-2", "client"] {
        pod_ready(&api, pod, Duration::from_secs(60)).await;
    }
    let service = json(&api, &["get", "service", "web"]);
    let ip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let both: BTreeSet<String> = ["web-1".to_string(), "web-2".to_string()].into();

    // A client on node 1 reaches both backends through the cluster IP (the slices may take a moment).
    let url = format!("http://{ip}/");
    wait_for("both backends through the cluster IP", Duration::from_secs(30), || {
        let got = answers(&fetch(&api, "client", &url, 12));
        (got == both, got)
    })
    .await;

    // Under ClientIP affinity a client keeps its backend.
    let sticky = json(&api, &["get", "service", "sticky"]);
    let sticky_url = format!("http://{}/", sticky["spec"]["clusterIP"].as_str().unwrap());
    let got = answers(&fetch(&api, "client", &sticky_url, 12));
    assert_eq!(got.len(), 1, "one backend for one client under ClientIP affinity: {got:?}");
    assert!(got.is_subset(&both), "{got:?}");

    // The Services' variables, as the kubelet sets them.
    let env = api.ok(&["exec", "client", "--", "env"], None).unwrap();
    for want in ["KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", &format!("WEB_SERVICE_HOST={ip}")]
    {
        assert!(env.lines().any(|l| l == want), "{want} not in {env}");
    }
    assert!(env.lines().any(|l| l == format!("WEB_PORT=tcp://{ip}:80")), "{env}");

    // By name, through the node's DNS server behind the kube-dns Service.
    let resolv = api.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"], None).unwrap();
    assert_eq!(
        resolv,
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );
    for by_name in ["http://web/", "http://web.default.svc.cluster.local/"] {
        let got = answers(&fetch(&api, "client", by_name, 12));
        assert_eq!(got, both, "{by_name}");
    }
    let lookup = |args: &[&str]| {
        let mut cmd = vec!["exec", "client", "--", "nslookup"];
        cmd.extend(args);
        String::from_utf8_lossy(&api.kubectl(&cmd, None).unwrap().stdout).to_string()
    };
    let web_ips: Vec<String> = ["web-1", "web-2"]
        .iter()
        .map(|p| json(&api, &["get", "pod", p])["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    let headless = lookup(&["db.default.svc.cluster.local"]);
    assert!(web_ips.iter().all(|ip| headless.contains(&format!("Address: {ip}"))), "{headless}");
    // A pod whose subdomain is a headless Service has a name under it, as a StatefulSet's pods do.
    let own_name = lookup(&["web-1.db.default.svc.cluster.local"]);
    assert!(own_name.contains(&format!("Address: {}", web_ips[0])), "{own_name}");
    assert!(!own_name.contains(&web_ips[1]), "{own_name}");
    let srv = lookup(&["-type=SRV", "_http._tcp.web.default.svc.cluster.local"]);
    assert!(srv.contains("0 100 80 web.default.svc.cluster.local"), "{srv}");
    let missing = lookup(&["nope.default.svc.cluster.local"]);
    assert!(missing.contains("NXDOMAIN"), "{missing}");
    let dns = json(&api, &["-n", "kube-system", "get", "endpointslices", "-l", "kubernetes.io/service-name=kube-dns"]);
    assert_eq!(dns["items"].as_array().map(Vec::len), Some(2), "one kube-dns endpoint per node: {dns}");

    // A backend reaches its own Service, itself included (hairpin).
    let from_web1 = answers(&fetch(&api, "web-1", &url, 16));
    assert_eq!(from_web1, both, "web-1 through its own Service");

    // The node port answers on each node's address, from the other node's host.
    let through_node = |from: &str, to: &str, port: i64, path: &str| -> BTreeSet<String> {
        let url = format!("http://{}:{port}{path}", nodes.hosts.ip(to));
        (0..12)
            .map(|_| {
                let out = nodes.hosts.exec(from, &["curl", "-s", "-m", "2", &url]);
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
            .collect()
    };
    let node_port_answers = |from: &str, to: &str| through_node(from, to, node_port, "/");
    assert_eq!(node_port_answers("2", "1"), both, "node port {node_port} on node 1");
    assert_eq!(node_port_answers("1", "2"), both, "node port {node_port} on node 2");

    // Under externalTrafficPolicy Local a node port reaches only its own node's backends, which see the
    // client's own address.
    let local = json(&api, &["get", "service", "local"])["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    for (from, to, backend) in [("2", "1", "web-1"), ("1", "2", "web-2")] {
        assert_eq!(through_node(from, to, local, "/"), [backend.to_string()].into(), "Local node port on node {to}");
        // (httpd listens on IPv6 too and writes the address v4-mapped: `[::ffff:10.200.0.12]`.)
        let seen: BTreeSet<String> = through_node(from, to, local, "/cgi-bin/ip")
            .iter()
            .map(|a| a.trim_start_matches("[::ffff:").trim_end_matches(']').to_string())
            .collect();
        assert_eq!(seen, [nodes.hosts.ip(from).to_string()].into(), "the client's address kept");
    }

    // A Service without endpoints refuses at once.
    let empty = json(&api, &["get", "service", "empty"]);
    let empty_url = format!("http://{}/", empty["spec"]["clusterIP"].as_str().unwrap());
    let started = Instant::now();
    let refused = fetch(&api, "client", &empty_url, 1);
    assert_eq!(refused, ["-"], "{refused:?}");
    assert!(started.elapsed() < Duration::from_millis(1500), "refusing took {:?}", started.elapsed());

    // web-2 stops being ready: it leaves the rotation within a few probe periods (failureThreshold 1,
    // periodSeconds 1; the time is printed, not asserted).
    api.ok(&["exec", "web-2", "--", "rm", "/www/ready"], None).unwrap();
    let unready = Instant::now();
    wait_for("web-2 out of the rotation", Duration::from_secs(15), || {
        let got = answers(&fetch(&api, "client", &url, 4));
        (got == ["web-1".to_string()].into(), got)
    })
    .await;
    eprintln!("web-2 left the rotation {:?} after its readiness file went", unready.elapsed());
    api.ok(&["exec", "web-2", "--", "touch", "/www/ready"], None).unwrap();
    wait_for("web-2 back in the rotation", Duration::from_secs(15), || {
        let got = answers(&fetch(&api, "client", &url, 12));
        (got == both, got)
    })
    .await;

    // An Ingress routes two hosts to two Services on every node's port 80, one of them over TLS (443).
    ingress_routes_hosts_to_services(&api, &nodes.hosts, &both).await;

    // A long-lived connection from node 1 through a cluster IP: an echo client that counts its connections
    // (it reconnects only if one breaks) and the lines echoed back.
    let echo_ip = json(&api, &["get", "service", "echo"])["spec"]["clusterIP"].as_str().unwrap().to_string();
    let flow = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: flow}}\nspec:\n  nodeName: agent-1\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {BUSYBOX}\n    command: [sh, -c, \
         'i=0; while true; do i=$((i+1)); echo $i > /tmp/conns; (while sleep 0.2; do echo ping; done) | nc {echo_ip} \
         9000 >> /tmp/echo; sleep 1; done']\n"
    );
    api.ok(&["apply", "-f", "-"], Some(&flow)).unwrap();
    let flow_state = || {
        let out = api.kubectl(&["exec", "flow", "--", "sh", "-c", "cat /tmp/conns; wc -l < /tmp/echo"], None).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut n = text.split_whitespace().map(|w| w.parse::<u64>().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0))
    };
    let (conns, echoed) = wait_for("the echo flow running", Duration::from_secs(60), || {
        let state = flow_state();
        (state.1 > 5, state)
    })
    .await;

    // The rules are the kernel's: with agent-1 gone node 1 still routes (its node port, reached from node
    // 2), and its successor replaces them without losing a beat.
    nodes.agent1.kill();
    assert_eq!(node_port_answers("2", "1"), both, "node 1's node port with agent-1 down");
    // It comes back with an upstream resolver of the test's own (on loopback) for names outside the cluster.
    let upstream = FakeUpstream::start().await;
    let mut flags = nodes.hosts.flags(1);
    flags.extend(["--dns-upstream".to_string(), upstream.addr.to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    nodes.agent1.restart(&api, &nodes.containerd1, &flags).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(answers(&fetch(&api, "client", &url, 12)), both, "after agent-1's restart");
    assert_eq!(node_port_answers("2", "1"), both, "node 1's node port after agent-1's restart");
    // The established flow outlived the agent and its rules' replacement: the same connection still echoes.
    let (conns_after, echoed_after) = wait_for("the flow echoing after the restart", Duration::from_secs(10), || {
        let state = flow_state();
        (state.1 > echoed + 10, state)
    })
    .await;
    assert_eq!(conns_after, conns, "the connection broke across the agent's restart ({echoed} then {echoed_after})");
    let outside = wait_for("a name outside the cluster, forwarded", Duration::from_secs(20), || {
        let out = api.kubectl(&["exec", "client", "--", "nslookup", "example.org"], None).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.contains(FakeUpstream::ANSWER), text)
    })
    .await;
    assert!(outside.contains("example.org"), "{outside}");
}

/// A DNS server on loopback that answers every A query with [`FakeUpstream::ANSWER`] (and every other
/// type with no records): the upstream a node's DNS server forwards names outside the cluster to.
struct FakeUpstream {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    const ANSWER: &'static str = "192.0.2.7";

    async fn start() -> FakeUpstream {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = Self::reply(&buf[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        FakeUpstream { addr, task }
    }

    /// The answer to one query: its header and question echoed, flags of a recursive answer, and one A
    /// record pointing back at the question's name when it asked for A.
    fn reply(query: &[u8]) -> Option<Vec<u8>> {
        let mut end = 12;
        while *query.get(end)? != 0 {
            end += 1 + usize::from(query[end]);
        }
        let question_end = end + 5;
        let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
        let mut reply = query.get(..question_end)?.to_vec();
        reply[2] = 0x81; // response, recursion desired
        reply[3] = 0x80; // recursion available, NOERROR
        let answers: u16 = if qtype == 1 { 1 } else { 0 };
        reply[6..8].copy_from_slice(&answers.to_be_bytes());
        reply[8..12].fill(0);
        if qtype == 1 {
            reply.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        }
        Some(reply)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const INGRESS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: other
  labels: {app: other}
spec:
  nodeName: agent-2
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: keel.test/busybox:1
    command: ["sh", "-c", "mkdir /www; echo other > /www/index.html; exec httpd -f -p 8080 -h /www"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata:
  name: other
spec:
  selector: {app: other}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: two-hosts
spec:
  tls: [{hosts: [secure.test], secretName: secure-tls}]
  rules:
  - host: web.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}]}
  - host: secure.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}]}
"#;

/// `curl` on host `from` with `args`: what it printed.
fn curl_on(hosts: &keel_tests::agent::Hosts, from: &str, args: &[&str]) -> String {
    let mut all = vec!["curl", "-s", "-m", "3"];
    all.extend(args);
    String::from_utf8_lossy(&hosts.exec(from, &all).stdout).trim().to_string()
}

async fn ingress_routes_hosts_to_services(api: &Api, hosts: &keel_tests::agent::Hosts, both: &BTreeSet<String>) {
    // A certificate for secure.test, in a TLS Secret.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    api.ok(&["create", "secret", "tls", "secure-tls", "--cert", &cert_s, "--key", &key_s], None).unwrap();
    api.ok(&["apply", "-f", "-"], Some(INGRESS)).unwrap();
    pod_ready(api, "other", Duration::from_secs(60)).await;
    let class = json(api, &["get", "ingressclass", "keel"]);
    assert_eq!(class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"], "true", "{class}");

    for node in ["1", "2"] {
        let address = hosts.ip(node);
        let web = format!("http://{address}/");
        wait_for(&format!("web.test through node {node}'s ingress"), Duration::from_secs(20), || {
            let got: BTreeSet<String> = (0..10)
                .map(|_| curl_on(hosts, if node == "1" { "2" } else { "1" }, &["-H", "Host: web.test", &web]))
                .collect();
            (got == *both, got)
        })
        .await;
        let resolve = format!("secure.test:443:{address}");
        let secure = curl_on(hosts, "1", &["--cacert", &cert_s, "--resolve", &resolve, "https://secure.test/"]);
        assert_eq!(secure, "other", "secure.test over TLS through node {node}");
        let unknown = curl_on(hosts, "1", &["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nowhere.test", &web]);
        assert_eq!(unknown, "404");
    }
    let ingress = json(api, &["get", "ingress", "two-hosts"]);
    assert_eq!(ingress["spec"]["ingressClassName"], "keel", "the default class given at create: {ingress}");
    let listed = api.ok(&["get", "ingress", "two-hosts"], None).unwrap();
    assert!(listed.contains("web.test,secure.test") && listed.contains("80, 443"), "{listed}");
}

const TWO_TIERS: &str = include_str!("../../deploy/sample/two-tier.yaml");

/// The issue's two-tier app: a web tier that reads a value from a database Service by name, deployed with
/// `kubectl apply`, reached from another host through the Ingress and a NodePort on each node, the load
/// spread over both web replicas (one per node).
#[tokio::test(flavor = "multi_thread")]
async fn a_two_tier_app_works_across_two_nodes() {
    let nodes = TwoNodes::start().await;
    let api = nodes.api.clone();
    api.ok(&["apply", "-f", "-"], Some(TWO_TIERS)).unwrap();
    for deployment in ["db", "front"] {
        api.ok(&["rollout", "status", &format!("deployment/{deployment}"), "--timeout=90s"], None).unwrap();
    }
    let fronts = json(&api, &["get", "pods", "-l", "tier=front"]);
    let on: BTreeSet<String> = fronts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(on.len(), 2, "one web replica per node: {on:?}");
    let node_port = json(&api, &["get", "service", "front"])["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    for (from, to) in [("2", "1"), ("1", "2")] {
        let address = nodes.hosts.ip(to);
        let urls = [
            vec!["-H".to_string(), "Host: app.test".to_string(), format!("http://{address}/cgi-bin/value")],
            vec![format!("http://{address}:{node_port}/cgi-bin/value")],
        ];
        for url in urls {
            let writers = wait_for("both web replicas answer with the stored value", Duration::from_secs(30), || {
                let mut writers = BTreeSet::new();
                for _ in 0..12 {
                    let mut args = vec!["curl", "-s", "-m", "3"];
                    args.extend(url.iter().map(String::as_str));
                    let answer = String::from_utf8_lossy(&nodes.hosts.exec(from, &args).stdout).trim().to_string();
                    if let Some(writer) = answer.strip_suffix(" read stored-value-42") {
                        writers.insert(writer.to_string());
                    }
                }
                (writers.len() == 2, writers)
            })
            .await;
            assert!(writers.iter().all(|w| w.starts_with("front-")), "{writers:?}");
        }
    }
}
