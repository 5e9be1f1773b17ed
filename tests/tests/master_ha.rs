//! No single master: nodes and kubectl users reach the cluster through a load balancer (`keel-lb`, inside
//! every agent and hollow node, and `keel lb` for anyone else) that fails over between the masters and learns
//! them from the `kubernetes` Endpoints, which every master keeps equal to the live masters' addresses.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_tests::masters::{join_command, json, Api, Hollow};
use keel_tests::{free_port, keel_bin, wait_for, Cluster, Options};
use serde_json::Value;

async fn three_masters() -> Cluster {
    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    for i in 0..3 {
        c.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    c
}

/// The `kubernetes` Endpoints' addresses as `ip:port`, sorted.
fn endpoint_addresses(api: &Api) -> Vec<String> {
    let out = api.kubectl(&["-n", "default", "get", "endpoints", "kubernetes", "-o", "json"], None).unwrap();
    if !out.status.success() {
        return vec![];
    }
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut list: Vec<String> = e["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let port = s["ports"][0]["port"].as_i64().unwrap_or(0);
            s["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| format!("{}:{port}", a["ip"].as_str().unwrap_or("")))
        })
        .collect();
    list.sort();
    list
}

/// The `kubernetes` EndpointSlices' endpoints as `ip:port`, sorted (what Service proxies read).
fn slice_addresses(api: &Api) -> Vec<String> {
    let args = ["-n", "default", "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes", "-o", "json"];
    let out = api.kubectl(&args, None).unwrap();
    let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else { return vec![] };
    let mut all: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let port = s["ports"][0]["port"].as_i64().unwrap_or(0);
            s["endpoints"].as_array().cloned().unwrap_or_default().into_iter().map(move |e| {
                assert_eq!(e["conditions"]["ready"], true, "{e}");
                format!("{}:{port}", e["addresses"][0].as_str().unwrap_or(""))
            })
        })
        .collect();
    all.sort();
    all
}

fn master_addresses(c: &Cluster, which: &[usize]) -> Vec<String> {
    let mut list: Vec<String> = which.iter().map(|i| format!("127.0.0.1:{}", c.api(*i).port)).collect();
    list.sort();
    list
}

/// name → (uid, node, ready, restarts) of every pod; and whether any is being deleted.
fn pods(api: &Api) -> (BTreeMap<String, (String, String, bool)>, bool) {
    let list = json(api, &["get", "pods", "-A"]);
    let mut out = BTreeMap::new();
    let mut deleting = false;
    for p in list["items"].as_array().unwrap() {
        deleting |= !p["metadata"]["deletionTimestamp"].is_null();
        let ready = p["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        out.insert(
            p["metadata"]["name"].as_str().unwrap().to_string(),
            (
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                ready,
            ),
        );
    }
    (out, deleting)
}

/// name → Ready condition status of every node.
fn nodes_ready(api: &Api) -> BTreeMap<String, String> {
    let list = json(api, &["get", "nodes"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let ready = n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            (n["metadata"]["name"].as_str().unwrap().to_string(), ready)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kubernetes_service_lists_the_live_masters() {
    let mut c = three_masters().await;
    let api = c.api(1);
    let svc = json(&api, &["-n", "default", "get", "service", "kubernetes"]);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1", "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");
    let all = master_addresses(&c, &[0, 1, 2]);
    wait_for("the Endpoints and EndpointSlices list the three masters", Duration::from_secs(20), || {
        let now = (endpoint_addresses(&api), slice_addresses(&api));
        (now.0 == all && now.1 == all, now)
    })
    .await;

    // A master killed leaves the list once its address lease expires (6 s, plus a store failover at most).
    c.kill(0);
    let killed = Instant::now();
    let rest = master_addresses(&c, &[1, 2]);
    wait_for("the killed master leaves the Endpoints and EndpointSlices", Duration::from_secs(30), || {
        let now = (endpoint_addresses(&api), slice_addresses(&api));
        (now.0 == rest && now.1 == rest, now)
    })
    .await;
    eprintln!("the killed master left the Endpoints after {:?}", killed.elapsed());
    c.restart(0).unwrap();
    wait_for("the restarted master is listed again", Duration::from_secs(30), || {
        let now = endpoint_addresses(&api);
        (now == all, now)
    })
    .await;
}

/// Hollow nodes whose kubeconfig names one master: kill -9 of that master leaves every node Ready and every
/// pod untouched, well past the node grace period (20 s), because their load balancer moved to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_master_in_the_nodes_kubeconfig_disturbs_no_node_and_no_pod() {
    let mut c = three_masters().await;
    let first = c.api(0);
    let other = first.at(&c.api(1));
    wait_for("the Endpoints list the three masters", Duration::from_secs(20), || {
        let now = endpoint_addresses(&first);
        (now.len() == 3, now)
    })
    .await;
    let hollow = Hollow::start(&first, "n-", 3, &[]).unwrap();
    wait_for("3 nodes Ready", Duration::from_secs(30), || {
        let nodes = nodes_ready(&first);
        (nodes.len() == 3 && nodes.values().all(|r| r == "True"), nodes)
    })
    .await;
    first.ok(&["create", "deployment", "web", "--image=busybox:1", "--replicas=6"], None).unwrap();
    first.ok(&["rollout", "status", "deployment/web", "--timeout=90s"], None).unwrap();
    let (before, _) = pods(&first);
    assert_eq!(before.len(), 6);
    // The balancer learned the other masters from the Endpoints.
    wait_for("the hollow nodes' balancer knows all masters", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&hollow.log).unwrap_or_default();
        let learned = log.lines().any(|l| l.contains("the masters changed") && l.matches("127.0.0.1:").count() == 3);
        (learned, ())
    })
    .await;

    c.kill(0);
    let killed = Instant::now();
    // Past the grace period (20 s) and the node monitor's period, with margin: nothing may move.
    while killed.elapsed() < Duration::from_secs(35) {
        let nodes = nodes_ready(&other);
        assert!(nodes.values().all(|r| r == "True"), "a node went NotReady after its master died: {nodes:?}");
        let (now, deleting) = pods(&other);
        assert!(!deleting, "a pod is being deleted after a master died: {now:?}");
        assert_eq!(now, before, "pods changed after a master died");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let log = std::fs::read_to_string(&hollow.log).unwrap_or_default();
    assert!(log.contains("master down"), "the balancer saw the master go: {log}");
}

struct Lb {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- keel lb log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// `keel lb` gives kubectl one address that keeps working when the master behind it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_through_keel_lb_survives_the_loss_of_a_master() {
    let mut c = three_masters().await;
    let first = c.api(0);
    let port = free_port();
    let kubeconfig = c.dir.path().join("lb.kubeconfig");
    let log = c.dir.path().join("lb.log");
    let child = Command::new(keel_bin())
        .args(["lb", "--kubeconfig"])
        .arg(&first.kubeconfig)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--write-kubeconfig"])
        .arg(&kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _lb = Lb { child, log };
    let through = Api { kubeconfig: kubeconfig.clone(), port };
    wait_for("kubectl through keel lb", Duration::from_secs(20), || {
        let ok = kubeconfig.exists()
            && through.kubectl(&["get", "namespace", "default"], None).is_ok_and(|o| o.status.success());
        (ok, ())
    })
    .await;
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(written.contains(&format!("https://127.0.0.1:{port}")), "{written}");
    wait_for("the Endpoints list the three masters", Duration::from_secs(20), || {
        let now = endpoint_addresses(&first);
        (now.len() == 3, now)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the balancer follows the Endpoints

    through.ok(&["create", "configmap", "before"], None).unwrap();
    c.kill(0);
    let killed = Instant::now();
    let mut failures = 0;
    for i in 0..10 {
        let out = through.kubectl(&["create", "configmap", &format!("after-{i}")], None).unwrap();
        if !out.status.success() {
            failures += 1;
            eprintln!("kubectl failed {:?} after the kill: {}", killed.elapsed(), String::from_utf8_lossy(&out.stderr));
        }
    }
    assert!(failures <= 1, "kubectl through keel lb failed {failures} times of 10 after a master died");
    let names = through.ok(&["get", "configmaps", "-o", "name"], None).unwrap();
    assert!(names.contains("configmap/before") && names.contains("configmap/after-9"), "{names}");
}

struct Proc(Child, std::path::PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.1.display(), std::fs::read_to_string(&self.1).unwrap_or_default());
        }
    }
}

/// The store's members as (name, learner) through `api`'s `/keel/v1/members`, sorted.
fn members(api: &Api) -> Vec<(String, bool)> {
    let Ok(out) = api.ok(&["get", "--raw", "/keel/v1/members"], None) else { return vec![] };
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut list: Vec<(String, bool)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["isLearner"].as_bool().unwrap()))
        .collect();
    list.sort();
    list
}

/// `curl -k` to a master with an optional bearer token: the status code and the JSON answered.
fn curl(api: &Api, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-X", method, "-w", "\n%{http_code}", &format!("{}{path}", api.url())]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `keel server --join https://<a master> --join-token T --join-ca-hash H` adds a fourth master in one
/// command (learner, then voter); it serves the API, is listed in the `kubernetes` Endpoints, and leaves
/// again by `kubectl delete --raw`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_joins_with_one_command_and_leaves_with_another() {
    let c = three_masters().await;
    let first = c.api(0);
    let (join_url, token, ca_hash) = join_command(&first, "master");
    let (client, peer, api_port) = (free_port(), free_port(), free_port());
    let dir = c.dir.path().join("m4");
    let log = c.dir.path().join("m4.log");
    let child = Command::new(keel_bin())
        .args(["server", "--name", "m4", "--api-listen", &format!("127.0.0.1:{api_port}")])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--join", &join_url, "--join-token", &token, "--join-ca-hash", &ca_hash])
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut m4 = Proc(child, log);
    let fourth = Api { kubeconfig: dir.join("admin.kubeconfig"), port: api_port };
    fourth.wait_ready(Duration::from_secs(60)).await.unwrap();
    let all: Vec<(String, bool)> = ["m1", "m2", "m3", "m4"].iter().map(|n| (n.to_string(), false)).collect();
    wait_for("m4 a voter", Duration::from_secs(60), || {
        let now = members(&first);
        (now == all, now)
    })
    .await;
    fourth.ok(&["create", "configmap", "through-m4"], None).unwrap();
    assert!(first.ok(&["get", "configmap", "through-m4"], None).is_ok());
    wait_for("the Endpoints list four masters", Duration::from_secs(20), || {
        let now = endpoint_addresses(&first);
        (now.len() == 4, now)
    })
    .await;

    // Leaving: the member goes first (refused if it would cost the quorum), then the process.
    let listed: Value = serde_json::from_str(&first.ok(&["get", "--raw", "/keel/v1/members"], None).unwrap()).unwrap();
    let id = listed["members"].as_array().unwrap().iter().find(|m| m["name"] == "m4").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    first.ok(&["delete", "--raw", &format!("/keel/v1/members/{id}")], None).unwrap();
    let _ = m4.0.kill();
    let three: Vec<(String, bool)> = ["m1", "m2", "m3"].iter().map(|n| (n.to_string(), false)).collect();
    assert_eq!(members(&first), three);
    first.ok(&["create", "configmap", "after-m4-left"], None).unwrap();
    // A bad id is a clear 400.
    let bad = first.kubectl(&["delete", "--raw", "/keel/v1/members/m4"], None).unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a member id"), "{bad:?}");
}

/// A join token is checked as Kubernetes checks bootstrap tokens, and a joiner checks the cluster's CA
/// against its pin before it sends the token anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_tokens_are_scoped_revocable_and_never_sent_to_a_stranger() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();

    // Anonymous users may read the CA (kubeadm's cluster-info), and nothing else.
    let (code, info) = curl(&api, "GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", None);
    assert_eq!(code, 200, "{info}");
    assert!(info["data"]["kubeconfig"].as_str().unwrap().contains("certificate-authority-data"), "{info}");
    assert_eq!(curl(&api, "GET", "/api/v1/namespaces/kube-system/secrets", None).0, 401);

    // A master token may list and add members, and nothing else: 403 worded as kube-apiserver words it.
    let (join_url, token, ca_hash) = join_command(&api, "master");
    assert_eq!(join_url, api.url());
    let id = token.split('.').next().unwrap();
    assert_eq!(curl(&api, "GET", "/keel/v1/members", Some(&token)).0, 200);
    let (code, status) = curl(&api, "GET", "/api/v1/namespaces/kube-system/secrets", Some(&token));
    assert_eq!((code, status["reason"].as_str()), (403, Some("Forbidden")), "{status}");
    assert_eq!(
        status["message"],
        format!(
            "secrets is forbidden: User \"system:bootstrap:{id}\" cannot list resource \"secrets\" in API group \"\" \
             in the namespace \"kube-system\""
        )
    );
    let listed = Command::new(keel_bin())
        .args(["server", "token", "list", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.lines().any(|l| l.starts_with(id) && l.contains("system:bootstrappers:keel:masters")), "{listed}");
    assert!(!listed.contains(&token), "a list shows no secret: {listed}");

    // A token without the masters' group may not touch the members; an expired one is not a token at all.
    let secret = |id: &str, expiration: &str, groups: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bootstrap-token-{id}, namespace: kube-system}}\n\
             type: bootstrap.kubernetes.io/token\nstringData: {{token-id: {id}, token-secret: 0123456789abcdef, \
             usage-bootstrap-authentication: \"true\", expiration: \"{expiration}\", auth-extra-groups: \"{groups}\"}}\n"
        )
    };
    api.ok(&["apply", "-f", "-"], Some(&secret("nodeaa", "2999-01-01T00:00:00Z", ""))).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&secret("oldaaa", "2020-01-01T00:00:00Z", "system:bootstrappers:keel:masters")))
        .unwrap();
    let (code, status) = curl(&api, "POST", "/keel/v1/members", Some("nodeaa.0123456789abcdef"));
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["message"], "forbidden: User \"system:bootstrap:nodeaa\" cannot post path \"/keel/v1/members\"");
    assert_eq!(curl(&api, "GET", "/keel/v1/members", Some("oldaaa.0123456789abcdef")).0, 401);
    assert_eq!(curl(&api, "GET", "/keel/v1/members", Some("nodeaa.0123456789abcdee")).0, 401, "wrong secret");
    // The token cleaner deletes the expired one, and only that.
    wait_for("the expired token deleted", Duration::from_secs(30), || {
        let out = api.kubectl(&["get", "secret", "-n", "kube-system", "bootstrap-token-oldaaa"], None).unwrap();
        (String::from_utf8_lossy(&out.stderr).contains("NotFound"), out)
    })
    .await;
    api.ok(&["get", "secret", "-n", "kube-system", "bootstrap-token-nodeaa"], None).unwrap();

    // A joiner pinning another CA stops before it sends the token: no member is added.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let dir = c.dir.path().join("stranger");
    let (client, peer) = (free_port(), free_port());
    let out = Command::new(keel_bin())
        .args(["server", "--name", "m9", "--api-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--join", &join_url, "--join-token", &token, "--join-ca-hash", &wrong])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refusing to send it the join token"), "{err}");
    assert!(err.contains(&ca_hash), "the error names the CA presented: {err}");
    assert_eq!(members(&api).len(), 1);

    // Revoked: refused at once.
    let deleted = Command::new(keel_bin())
        .args(["server", "token", "delete", &token, "--kubeconfig"])
        .arg(&api.kubeconfig)
        .output();
    assert!(deleted.unwrap().status.success());
    assert_eq!(curl(&api, "GET", "/keel/v1/members", Some(&token)).0, 401);
    let again =
        Command::new(keel_bin()).args(["server", "token", "delete", id, "--kubeconfig"]).arg(&api.kubeconfig).output();
    let again = again.unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not found"), "{again:?}");
}
