//! Stock kubectl against 3 masters — stacked (each with its store member) and on a 3-member external store —
//! as a user drives a cluster: apply (create, update, no change), create -f, get (tables, -o yaml/json,
//! selectors), describe, patch, scale, get -w, delete, for namespaces, configmaps, secrets, deployments,
//! pods and services; and what one master writes every other master serves.

use std::time::Duration;

use keel_tests::masters::json;
use keel_tests::masters::{Api, ExternalMasters};
use keel_tests::{Cluster, Options};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: web}
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: shop
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.local/web:1
        ports: [{containerPort: 8080}]
      - name: sidecar
        image: registry.local/proxy:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  namespace: shop
  labels: {app: debug}
spec:
  containers: [{name: shell, image: registry.local/busybox:1}]
"#;

/// The whole user session, through `apis[0]` for writes and every master for reads.
async fn drive(apis: &[Api]) {
    let a = &apis[0];
    let applied = a.ok(&["apply", "-f", "-"], Some(APP)).unwrap();
    for what in
        ["namespace/shop", "configmap/settings", "secret/creds", "deployment.apps/web", "service/web", "pod/debug"]
    {
        assert!(applied.contains(&format!("{what} created")), "{applied}");
    }

    // Tables, as kubectl prints them.
    let cms = a.ok(&["-n", "shop", "get", "configmaps"], None).unwrap();
    assert!(cms.starts_with("NAME") && cms.contains("DATA") && cms.contains("settings"), "{cms}");
    let deploy = a.ok(&["-n", "shop", "get", "deploy", "-o", "wide"], None).unwrap();
    assert!(
        deploy.contains("UP-TO-DATE") && deploy.contains("registry.local/web:1,registry.local/proxy:1"),
        "{deploy}"
    );
    let svc = a.ok(&["-n", "shop", "get", "svc", "web"], None).unwrap();
    assert!(svc.contains("CLUSTER-IP") && svc.contains("10.") && svc.contains("80/TCP"), "{svc}");
    let pods = a.ok(&["-n", "shop", "get", "pods"], None).unwrap();
    assert!(pods.contains("debug") && pods.contains("Pending"), "{pods}");
    let nss = a.ok(&["get", "ns"], None).unwrap();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "shop"] {
        assert!(nss.contains(ns), "{nss}");
    }
    let all = a.ok(&["get", "configmaps", "-A", "-l", "app=web"], None).unwrap();
    assert!(all.contains("NAMESPACE") && all.contains("shop") && all.contains("settings"), "{all}");

    // Objects as stored: server-set fields, defaults, stringData folded into data.
    let cm = json(a, &["-n", "shop", "get", "cm", "settings"]);
    assert_eq!(cm["data"]["color"], "blue");
    assert!(cm["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(cm["metadata"]["creationTimestamp"].as_str().is_some());
    let secret = json(a, &["-n", "shop", "get", "secret", "creds"]);
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert!(secret.get("stringData").is_none());
    let service = json(a, &["-n", "shop", "get", "svc", "web"]);
    assert!(service["spec"]["clusterIP"].as_str().unwrap().starts_with("10."), "{service}");
    let yaml = a.ok(&["-n", "shop", "get", "deploy", "web", "-o", "yaml"], None).unwrap();
    assert!(yaml.contains("kind: Deployment") && yaml.contains("generation: 1"), "{yaml}");
    let described = a.ok(&["-n", "shop", "describe", "configmap", "settings"], None).unwrap();
    assert!(described.contains("Name:         settings") && described.contains("blue"), "{described}");

    // Every master serves what the first wrote.
    for other in &apis[1..] {
        let b = a.at(other);
        let cm = json(&b, &["-n", "shop", "get", "cm", "settings"]);
        assert_eq!(cm["data"]["color"], "blue", "master on port {}", other.port);
    }

    // apply again: an update (a strategic merge patch), then no change at all.
    let changed = APP.replace("color: blue", "color: green").replace("registry.local/web:1", "registry.local/web:2");
    let out = a.ok(&["apply", "-f", "-"], Some(&changed)).unwrap();
    assert!(out.contains("configmap/settings configured") && out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    // (A Secret applied with stringData is "configured" every time, as with Kubernetes: stringData is
    // write-only, so kubectl never finds it on the server.)
    let out = a.ok(&["apply", "-f", "-"], Some(&changed)).unwrap();
    for what in ["namespace/shop", "configmap/settings", "deployment.apps/web", "service/web", "pod/debug"] {
        assert!(out.contains(&format!("{what} unchanged")), "{out}");
    }
    let d = json(a, &["-n", "shop", "get", "deploy", "web"]);
    assert_eq!(d["metadata"]["generation"], 2);
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "the strategic merge kept the sidecar: {d}");
    assert_eq!(containers[0]["image"], "registry.local/web:2");

    // scale (a merge patch of the scale subresource), patch, label.
    a.ok(&["-n", "shop", "scale", "deploy", "web", "--replicas=5"], None).unwrap();
    assert_eq!(json(a, &["-n", "shop", "get", "deploy", "web"])["spec"]["replicas"], 5);
    a.ok(&["-n", "shop", "patch", "cm", "settings", "-p", r#"{"data":{"size":"xl"}}"#], None).unwrap();
    a.ok(&["-n", "shop", "label", "cm", "settings", "tier=front"], None).unwrap();
    let cm = json(&a.at(&apis[apis.len() - 1]), &["-n", "shop", "get", "cm", "settings"]);
    assert_eq!((cm["data"]["size"].as_str(), cm["metadata"]["labels"]["tier"].as_str()), (Some("xl"), Some("front")));

    // get -w sees a create, an update and a delete, in order.
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("watch.out");
    let mut watch = a
        .at(&apis[apis.len() - 1])
        .kubectl_background(&["-n", "shop", "get", "cm", "-w", "--output-watch-events", "-l", "watched=yes"], &out_path)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watched = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seen, labels: {watched: \"yes\"}}\ndata: {a: b}\n";
    a.ok(&["-n", "shop", "create", "-f", "-"], Some(watched)).unwrap();
    a.ok(&["-n", "shop", "patch", "cm", "seen", "-p", r#"{"data":{"a":"c"}}"#], None).unwrap();
    a.ok(&["-n", "shop", "delete", "cm", "seen"], None).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while std::time::Instant::now() < deadline {
        seen = std::fs::read_to_string(&out_path).unwrap_or_default();
        if seen.contains("DELETED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let events: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "EVENT" && w.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    assert_eq!(events, ["ADDED", "MODIFIED", "DELETED"], "{seen}");

    typed_creates(apis);

    // delete: objects, then the namespace with what is left in it.
    a.ok(&["-n", "shop", "delete", "pod", "debug"], None).unwrap();
    let gone = a.kubectl(&["-n", "shop", "get", "pod", "debug"], None).unwrap();
    assert!(!gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"), "{gone:?}");
    a.ok(&["delete", "namespace", "shop", "--timeout=60s"], None).unwrap();
    let left = a.ok(&["get", "cm,secret,deploy,svc", "-n", "shop", "-o", "name"], None).unwrap();
    assert!(left.trim().is_empty(), "{left}");
    let ns = a.kubectl(&["get", "ns", "shop"], None).unwrap();
    assert!(!ns.status.success(), "namespace still there");
}

/// kubectl's typed generators (`create configmap`, `create deployment`, `expose`…) send protobuf bodies;
/// what they created is read back as JSON through another master.
fn typed_creates(apis: &[Api]) {
    let a = &apis[0];
    let b = a.at(&apis[apis.len() - 1]);
    let n = |args: &[&'static str]| [&["-n", "tools"], args].concat();
    a.ok(&["create", "namespace", "tools"], None).unwrap();
    a.ok(&n(&["create", "configmap", "conf", "--from-literal=a=1", "--from-literal=b=two"]), None).unwrap();
    a.ok(&n(&["create", "secret", "generic", "creds", "--from-literal=user=admin"]), None).unwrap();
    a.ok(&n(&["create", "deployment", "api", "--image=registry.local/api:1", "--replicas=2", "--port=8080"]), None)
        .unwrap();
    a.ok(&n(&["create", "service", "clusterip", "api", "--tcp=80:8080"]), None).unwrap();
    a.ok(
        &n(&["expose", "deployment", "api", "--name=api-np", "--type=NodePort", "--port=81", "--target-port=8080"]),
        None,
    )
    .unwrap();
    a.ok(&n(&["create", "job", "once", "--image=registry.local/tool:1", "--", "echo", "hi"]), None).unwrap();
    a.ok(
        &n(&["create", "cronjob", "tick", "--image=registry.local/tool:1", "--schedule=*/5 * * * *", "--", "date"]),
        None,
    )
    .unwrap();
    a.ok(&n(&["create", "serviceaccount", "bot"]), None).unwrap();
    a.ok(&n(&["autoscale", "deployment", "api", "--min=1", "--max=3", "--cpu-percent=80"]), None).unwrap();
    a.ok(&n(&["run", "shell", "--image=registry.local/tool:1", "--restart=Never", "--", "sleep", "1"]), None).unwrap();

    assert_eq!(json(&b, &["get", "namespace", "tools"])["status"]["phase"], "Active");
    let cm = json(&b, &n(&["get", "configmap", "conf"]));
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "two"}), "{cm}");
    let secret = json(&b, &n(&["get", "secret", "creds"]));
    assert_eq!(
        (secret["type"].as_str(), secret["data"]["user"].as_str()),
        (Some("Opaque"), Some("YWRtaW4=")),
        "{secret}"
    );
    let d = json(&b, &n(&["get", "deployment", "api"]));
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "api", "{d}");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (container["image"].as_str(), &container["ports"][0]["containerPort"]),
        (Some("registry.local/api:1"), &serde_json::json!(8080))
    );
    let svc = json(&b, &n(&["get", "service", "api"]));
    assert_eq!(
        (&svc["spec"]["ports"][0]["port"], &svc["spec"]["ports"][0]["targetPort"]),
        (&serde_json::json!(80), &serde_json::json!(8080)),
        "{svc}"
    );
    assert!(svc["spec"]["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty()), "{svc}");
    let np = json(&b, &n(&["get", "service", "api-np"]));
    assert_eq!(np["spec"]["type"], "NodePort", "{np}");
    assert!(np["spec"]["ports"][0]["nodePort"].as_i64().is_some_and(|p| (30000..32768).contains(&p)), "{np}");
    assert_eq!(np["spec"]["selector"]["app"], "api", "{np}");
    let job = json(&b, &n(&["get", "job", "once"]));
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]), "{job}");
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never", "{job}");
    let cron = json(&b, &n(&["get", "cronjob", "tick"]));
    assert_eq!(cron["spec"]["schedule"], "*/5 * * * *", "{cron}");
    assert_eq!(json(&b, &n(&["get", "serviceaccount", "bot"]))["metadata"]["name"], "bot");
    let hpa = json(&b, &n(&["get", "hpa", "api"]));
    assert_eq!(
        (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
        (&serde_json::json!(1), &serde_json::json!(3)),
        "{hpa}"
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "api", "{hpa}");
    let pod = json(&b, &n(&["get", "pod", "shell"]));
    assert_eq!(pod["spec"]["containers"][0]["args"], serde_json::json!(["sleep", "1"]), "{pod}");
    a.ok(&["delete", "namespace", "tools", "--timeout=60s"], None).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_drives_three_stacked_masters() {
    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    let apis: Vec<Api> = (0..3).map(|i| c.api(i)).collect();
    for api in &apis {
        api.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    drive(&apis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_drives_three_masters_on_an_external_store() {
    let store = Cluster::start(3).await.unwrap();
    let masters = ExternalMasters::start(&store, 3).unwrap();
    let apis: Vec<Api> = (0..3).map(|i| masters.api(i)).collect();
    for api in &apis {
        api.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    drive(&apis).await;
}

/// A client (kube-rs, as operators use) creates a namespace and at once something in it, through a follower
/// master: the follower's own store member may not have applied the namespace yet, and the create must not
/// fail for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_created_in_a_namespace_just_created_through_a_follower() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::PostParams;

    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    for i in 0..3 {
        c.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let client = c.api((leader + 1) % 3).client().await;
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    for i in 0..40 {
        let name = format!("fresh-{i}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        namespaces.create(&PostParams::default(), &ns).await.unwrap();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}})).unwrap();
        let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &name);
        if let Err(e) = configmaps.create(&PostParams::default(), &cm).await {
            panic!("create in namespace {name} just created: {e}");
        }
    }
}
