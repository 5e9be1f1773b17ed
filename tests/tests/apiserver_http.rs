//! The API's HTTP semantics through the router (`oneshot`, no sockets) on a real keel store member: every
//! kind of bad input gets its Status code and nothing is stored; optimistic concurrency, paging, selectors,
//! generation, status and scale subresources, and watches from a compacted revision.

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use keel_apiserver::storage::Storage;
use keel_apiserver::{app, AppState};
use keel_tests::Cluster;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn router(c: &Cluster) -> Router {
    let storage = Storage::new(c.channel(0).await.unwrap());
    keel_apiserver::namespaces::ensure_system(&storage).await.unwrap();
    app(AppState::new("127.0.0.1:6443", storage))
}

struct Reply {
    code: StatusCode,
    body: Value,
    warnings: Vec<String>,
}

async fn call(r: &Router, method: Method, path: &str, content_type: &str, body: impl Into<Body>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let code = resp.status();
    let warnings = resp.headers().get_all(header::WARNING).iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let bytes = to_bytes(resp.into_body(), 64 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { code, body, warnings }
}

async fn post(r: &Router, path: &str, v: &Value) -> Reply {
    call(r, Method::POST, path, "application/json", v.to_string()).await
}

async fn get(r: &Router, path: &str) -> Reply {
    call(r, Method::GET, path, "application/json", Body::empty()).await
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn pod(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}})
}

async fn count(r: &Router, path: &str) -> usize {
    get(r, path).await.body["items"].as_array().map_or(0, Vec::len)
}

fn causes(reply: &Reply) -> Vec<String> {
    reply.body["details"]["causes"]
        .as_array()
        .map(|a| a.iter().map(|c| c["field"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_status_and_stores_nothing() {
    let c = Cluster::start(1).await.unwrap();
    let r = router(&c).await;

    let bad_name = post(&r, CMS, &cm("Bad_Name")).await;
    assert_eq!(bad_name.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad_name.body);
    assert_eq!((bad_name.body["kind"].as_str(), bad_name.body["reason"].as_str()), (Some("Status"), Some("Invalid")));
    assert_eq!(causes(&bad_name), ["metadata.name"]);

    let mut labels = cm("labels");
    labels["metadata"]["labels"] = json!({"-bad": "ok", "good": "not ok!"});
    assert_eq!(causes(&post(&r, CMS, &labels).await), ["metadata.labels", "metadata.labels[good]"]);

    let bad_pod = post(
        &r,
        PODS,
        &pod(
            "p",
            json!([
                {"name": "a", "image": "x", "ports": [{"containerPort": 70000}]},
                {"name": "a", "image": "x"},
                {"name": "b"}
            ]),
        ),
    )
    .await;
    assert_eq!(bad_pod.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad_pod.body);
    let fields = causes(&bad_pod);
    for f in ["spec.containers[0].ports[0].containerPort", "spec.containers[1].name", "spec.containers[2].image"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    let quantity = pod("q", json!([{"name": "a", "image": "x", "resources": {"limits": {"cpu": "lots"}}}]));
    assert!(post(&r, PODS, &quantity).await.code.is_client_error());

    let malformed = call(&r, Method::POST, CMS, "application/json", "{\"apiVersion\": ").await;
    assert_eq!(malformed.code, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["reason"], "BadRequest");
    let wrong_type =
        post(&r, CMS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "data": [1]})).await;
    assert_eq!(wrong_type.code, StatusCode::BAD_REQUEST, "{}", wrong_type.body);
    let wrong_kind = post(&r, CMS, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}})).await;
    assert_eq!(wrong_kind.code, StatusCode::BAD_REQUEST);

    let mut big = cm("big");
    big["data"]["k"] = json!("x".repeat(4 << 20));
    let too_large = post(&r, CMS, &big).await;
    assert_eq!(too_large.code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.body["kind"], "Status");

    let text = call(&r, Method::POST, CMS, "text/plain", cm("t").to_string()).await;
    assert_eq!(text.code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n data: [\n";
    let malformed_yaml = call(&r, Method::POST, CMS, "application/yaml", yaml).await;
    assert_eq!(malformed_yaml.code, StatusCode::BAD_REQUEST, "{}", malformed_yaml.body);
    assert!(malformed_yaml.body["message"].as_str().unwrap().contains("YAML"), "{}", malformed_yaml.body);
    let pb = "application/vnd.kubernetes.protobuf";
    let malformed_pb = call(&r, Method::POST, CMS, pb, &b"k8s\x00\x0a\x05\x0a"[..]).await;
    assert_eq!(malformed_pb.code, StatusCode::BAD_REQUEST, "{}", malformed_pb.body);
    let not_pb = call(&r, Method::POST, CMS, pb, cm("t").to_string()).await;
    assert_eq!(not_pb.code, StatusCode::BAD_REQUEST, "{}", not_pb.body);

    let mut unknown = cm("unknown");
    unknown["spec"] = json!({"replicas": 1});
    let strict = post(&r, &format!("{CMS}?fieldValidation=Strict"), &unknown).await;
    assert_eq!(strict.code, StatusCode::BAD_REQUEST);
    assert!(
        strict.body["message"].as_str().unwrap().contains("unknown field \\\"spec\\\"")
            || strict.body["message"].as_str().unwrap().contains("spec"),
        "{}",
        strict.body
    );

    let no_ns = post(&r, "/api/v1/namespaces/nowhere/configmaps", &cm("orphan")).await;
    assert_eq!(no_ns.code, StatusCode::NOT_FOUND);
    assert_eq!(no_ns.body["message"], "namespaces \"nowhere\" not found");

    assert_eq!(count(&r, CMS).await, 0, "a refused request stored something");
    assert_eq!(count(&r, PODS).await, 0, "a refused request stored something");

    // Warn (the default) stores, and says what it dropped.
    let warned = post(&r, CMS, &unknown).await;
    assert_eq!(warned.code, StatusCode::CREATED, "{}", warned.body);
    assert!(warned.warnings.iter().any(|w| w.starts_with("299 - ") && w.contains("spec")), "{:?}", warned.warnings);
    assert!(warned.body.get("spec").is_none());

    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  n: \"1\"\n";
    let from_yaml = call(&r, Method::POST, CMS, "application/yaml", yaml).await;
    assert_eq!(from_yaml.code, StatusCode::CREATED, "{}", from_yaml.body);
    assert_eq!(from_yaml.body["data"]["n"], "1");

    let dup = post(&r, CMS, &unknown).await;
    assert_eq!((dup.code, dup.body["reason"].as_str()), (StatusCode::CONFLICT, Some("AlreadyExists")));

    let missing = get(&r, &format!("{CMS}/nope")).await;
    assert_eq!((missing.code, missing.body["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
    assert_eq!(
        call(&r, Method::DELETE, &format!("{CMS}/nope"), "application/json", Body::empty()).await.code,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&r, "/api/v1/widgets").await.code, StatusCode::NOT_FOUND);
    assert_eq!(get(&r, &format!("{CMS}?labelSelector=a%20in%20(b")).await.code, StatusCode::BAD_REQUEST);
    assert_eq!(get(&r, &format!("{CMS}?fieldSelector=spec.nodeName%3Dx")).await.code, StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&r, Method::POST, &format!("{CMS}/unknown"), "application/json", "{}").await.code,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // A server-side apply must name its field manager.
    let ssa = call(&r, Method::PATCH, &format!("{CMS}/unknown"), "application/apply-patch+yaml", "{}").await;
    assert_eq!(ssa.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(ssa.body["message"].as_str().unwrap_or_default().contains("fieldManager"), "{}", ssa.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_paging_subresources_and_compacted_watches() {
    let c = Cluster::start(1).await.unwrap();
    let r = router(&c).await;

    // Optimistic concurrency: an update from an old resourceVersion is a 409 and changes nothing.
    let created = post(&r, CMS, &cm("c")).await;
    assert_eq!(created.code, StatusCode::CREATED);
    let rv = created.body["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut v1 = created.body.clone();
    v1["data"]["k"] = json!("one");
    let ok = call(&r, Method::PUT, &format!("{CMS}/c"), "application/json", v1.to_string()).await;
    assert_eq!(ok.code, StatusCode::OK, "{}", ok.body);
    let mut stale = created.body.clone();
    stale["data"]["k"] = json!("two");
    stale["metadata"]["resourceVersion"] = json!(rv);
    let conflict = call(&r, Method::PUT, &format!("{CMS}/c"), "application/json", stale.to_string()).await;
    assert_eq!((conflict.code, conflict.body["reason"].as_str()), (StatusCode::CONFLICT, Some("Conflict")));
    assert_eq!(get(&r, &format!("{CMS}/c")).await.body["data"]["k"], "one");

    // Patches of each kind.
    let merge =
        call(&r, Method::PATCH, &format!("{CMS}/c"), "application/merge-patch+json", r#"{"data":{"m":"1"}}"#).await;
    assert_eq!(merge.body["data"], json!({"k": "one", "m": "1"}));
    let jp = r#"[{"op":"test","path":"/data/k","value":"nope"},{"op":"remove","path":"/data/k"}]"#;
    assert_eq!(
        call(&r, Method::PATCH, &format!("{CMS}/c"), "application/json-patch+json", jp).await.code,
        StatusCode::BAD_REQUEST
    );
    let jp = r#"[{"op":"remove","path":"/data/k"}]"#;
    assert_eq!(
        call(&r, Method::PATCH, &format!("{CMS}/c"), "application/json-patch+json", jp).await.body["data"],
        json!({"m": "1"})
    );

    // Paging: limit and continue, at one revision.
    for i in 0..5 {
        assert_eq!(post(&r, CMS, &cm(&format!("page-{i}"))).await.code, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut path = format!("{CMS}?limit=2");
    loop {
        let page = get(&r, &path).await;
        names.extend(
            page.body["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{CMS}?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(names, ["c", "page-0", "page-1", "page-2", "page-3", "page-4"]);

    // Deployments: generation moves with the spec; status and scale are their own subresources.
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
    let created = post(&r, deploys, &d).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        (created.body["metadata"]["generation"].as_i64(), created.body["spec"]["replicas"].as_i64()),
        (Some(1), Some(1))
    );
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                        "spec": {"replicas": 99}, "status": {"replicas": 1, "observedGeneration": 1}});
    let s = call(&r, Method::PUT, &format!("{deploys}/web/status"), "application/json", status.to_string()).await;
    assert_eq!(s.code, StatusCode::OK, "{}", s.body);
    assert_eq!((s.body["spec"]["replicas"].as_i64(), s.body["status"]["replicas"].as_i64()), (Some(1), Some(1)));
    assert_eq!(s.body["metadata"]["generation"], 1);
    let scaled = call(
        &r,
        Method::PATCH,
        &format!("{deploys}/web/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":3}}"#,
    )
    .await;
    assert_eq!((scaled.body["kind"].as_str(), scaled.body["spec"]["replicas"].as_i64()), (Some("Scale"), Some(3)));
    let after = get(&r, &format!("{deploys}/web")).await.body;
    assert_eq!((after["spec"]["replicas"].as_i64(), after["metadata"]["generation"].as_i64()), (Some(3), Some(2)));
    assert_eq!(after["status"]["replicas"], 1);

    // A watch from a compacted revision ends with a 410 ERROR event.
    let mut kv = c.kv(0).await.unwrap();
    let rev = keel_tests::put(&c, 0, "/unrelated", "x").await.unwrap();
    kv.compact(keel_proto::etcdserverpb::CompactionRequest { revision: rev, physical: true }).await.unwrap();
    let watch = get(&r, &format!("{CMS}?watch=1&resourceVersion=2")).await;
    let line = watch.body.as_str().map(str::to_string).unwrap_or_else(|| watch.body.to_string());
    let event: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!((event["type"].as_str(), event["object"]["code"].as_i64()), (Some("ERROR"), Some(410)), "{line}");
}

async fn text(r: &Router, path: &str) -> (StatusCode, String) {
    let req = Request::builder().uri(path).body(Body::empty()).unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let code = resp.status();
    (code, String::from_utf8(to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_report_the_store() {
    let mut c = Cluster::start(1).await.unwrap();
    let r = router(&c).await;
    assert_eq!(text(&r, "/readyz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(text(&r, "/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        text(&r, "/readyz?verbose").await,
        (
            StatusCode::OK,
            "[+]ping ok\n[+]etcd ok\n[+]poststarthook/rbac/bootstrap-roles ok\n[+]controller-leader ok\n[+]node-lifecycle ok\nreadyz check passed\n"
                .into()
        )
    );
    assert_eq!(
        text(&r, "/readyz?verbose&exclude=etcd").await.1,
        "[+]ping ok\n[+]poststarthook/rbac/bootstrap-roles ok\n[+]controller-leader ok\n[+]node-lifecycle ok\nreadyz check passed\n"
    );
    assert_eq!(text(&r, "/livez?verbose").await.1, "[+]ping ok\nlivez check passed\n");
    assert_eq!(text(&r, "/readyz/etcd").await, (StatusCode::OK, "ok".into()));
    assert_eq!(text(&r, "/readyz/nope").await.0, StatusCode::NOT_FOUND);

    // Without its store a master is alive but neither healthy nor ready.
    c.kill(0);
    let (code, body) = text(&r, "/readyz").await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body,
        "[+]ping ok\n[-]etcd failed: reason withheld\n[+]poststarthook/rbac/bootstrap-roles ok\n[+]controller-leader ok\n[+]node-lifecycle ok\nreadyz check failed\n"
    );
    assert_eq!(text(&r, "/healthz").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(&r, "/readyz/etcd").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(&r, "/livez").await, (StatusCode::OK, "ok".into()));
}

/// A write carrying `keel-fence: <fence>`.
async fn fenced(r: &Router, method: Method, path: &str, fence: &str, body: &Value) -> Reply {
    let content_type = if method == Method::PATCH { "application/merge-patch+json" } else { "application/json" };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, content_type)
        .header("keel-fence", fence)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let code = resp.status();
    let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    Reply { code, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), warnings: vec![] }
}

#[tokio::test(flavor = "multi_thread")]
async fn fenced_writes_apply_only_while_the_leader_key_stands() {
    let c = Cluster::start(1).await.unwrap();
    let r = router(&c).await;
    let key = keel_apiserver::storage::LEADER_KEY;
    let first = keel_tests::put(&c, 0, key, "leader-a").await.unwrap().to_string();

    let created = fenced(&r, Method::POST, CMS, &first, &cm("f1")).await;
    assert_eq!(created.code, StatusCode::CREATED, "{}", created.body);
    let patch = json!({"data": {"k": "a"}});
    assert_eq!(fenced(&r, Method::PATCH, &format!("{CMS}/f1"), &first, &patch).await.code, StatusCode::OK);

    // Another leader takes over: the first one's writes change nothing any more.
    let second = keel_tests::put(&c, 0, key, "leader-b").await.unwrap().to_string();
    let late_create = fenced(&r, Method::POST, CMS, &first, &cm("f2")).await;
    assert_eq!(late_create.code, StatusCode::CONFLICT, "{}", late_create.body);
    assert!(late_create.body["message"].as_str().unwrap().contains("fenced"), "{}", late_create.body);
    let stale = json!({"data": {"k": "stale"}});
    assert_eq!(fenced(&r, Method::PATCH, &format!("{CMS}/f1"), &first, &stale).await.code, StatusCode::CONFLICT);
    let mut replaced = get(&r, &format!("{CMS}/f1")).await.body;
    replaced["data"]["k"] = json!("replaced");
    assert_eq!(fenced(&r, Method::PUT, &format!("{CMS}/f1"), &first, &replaced).await.code, StatusCode::CONFLICT);
    assert_eq!(fenced(&r, Method::DELETE, &format!("{CMS}/f1"), &first, &json!({})).await.code, StatusCode::CONFLICT);
    let f1 = get(&r, &format!("{CMS}/f1")).await;
    assert_eq!((f1.code, &f1.body["data"]["k"]), (StatusCode::OK, &json!("a")), "a fenced write changed f1");
    assert_eq!(get(&r, &format!("{CMS}/f2")).await.code, StatusCode::NOT_FOUND, "a fenced create stored f2");

    // The current leader's fence works, and an unreadable fence is refused.
    assert_eq!(fenced(&r, Method::DELETE, &format!("{CMS}/f1"), &second, &json!({})).await.code, StatusCode::OK);
    assert_eq!(fenced(&r, Method::POST, CMS, "soon", &cm("f3")).await.code, StatusCode::BAD_REQUEST);
    assert_eq!(count(&r, CMS).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_over_four_mebibytes_and_deleting_their_namespace() {
    let c = Cluster::start(1).await.unwrap();
    let r = router(&c).await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "big"}});
    assert_eq!(post(&r, "/api/v1/namespaces", &ns).await.code, StatusCode::CREATED);
    let cms = "/api/v1/namespaces/big/configmaps";
    for i in 0..6 {
        let mut big = cm(&format!("big-{i}"));
        big["data"]["k"] = json!("x".repeat(900 << 10));
        assert_eq!(post(&r, cms, &big).await.code, StatusCode::CREATED);
    }
    // 5.4 MB in one unpaged list: more than a gRPC client reads by default.
    let list = get(&r, cms).await;
    assert_eq!(list.code, StatusCode::OK, "{}", list.body.to_string().chars().take(300).collect::<String>());
    assert_eq!(list.body["items"].as_array().unwrap().len(), 6);

    let gone = call(&r, Method::DELETE, "/api/v1/namespaces/big", "application/json", Body::empty()).await;
    assert_eq!(gone.code, StatusCode::ACCEPTED, "{}", gone.body);
    assert_eq!(gone.body["status"]["phase"], "Terminating");
    assert_eq!(post(&r, cms, &cm("late")).await.code, StatusCode::FORBIDDEN, "a create in a Terminating namespace");

    // What the namespace controller does (no control loops run here): it deletes the content, a
    // collection over 4 MiB in one go, then removes its finalizer, and that write deletes the namespace.
    let emptied = call(&r, Method::DELETE, cms, "application/json", Body::empty()).await;
    assert_eq!(emptied.code, StatusCode::OK, "{}", emptied.body.to_string().chars().take(300).collect::<String>());
    assert_eq!(count(&r, cms).await, 0);
    let held = get(&r, "/api/v1/namespaces/big").await;
    assert_eq!((held.code, &held.body["spec"]["finalizers"]), (StatusCode::OK, &json!(["kubernetes"])));
    let mut finalize = held.body.clone();
    finalize["spec"]["finalizers"] = json!([]);
    let body = Body::from(finalize.to_string());
    let done = call(&r, Method::PUT, "/api/v1/namespaces/big/finalize", "application/json", body).await;
    assert_eq!(done.code, StatusCode::OK, "{}", done.body);
    assert_eq!(get(&r, "/api/v1/namespaces/big").await.code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_over_the_stores_request_limit_gets_the_stores_words_and_is_not_stored() {
    // The store refuses requests over 64 KiB (the API's own body limit is 3 MiB, so the store decides).
    let options = keel_tests::Options {
        extra_args: vec!["--max-request-bytes".into(), (64 * 1024).to_string()],
        ..Default::default()
    };
    let c = Cluster::start_with(1, options).await.unwrap();
    let r = router(&c).await;
    let mut big = cm("big");
    big["data"]["k"] = json!("x".repeat(100 * 1024));
    let refused = post(&r, CMS, &big).await;
    // As kube-apiserver answers it: etcd's error passed through as a 500 with no reason, not a 503.
    assert_eq!(refused.code, StatusCode::INTERNAL_SERVER_ERROR, "{}", refused.body);
    assert_eq!(refused.body["message"], "etcdserver: request is too large", "{}", refused.body);
    assert_eq!(refused.body["code"], 500);
    assert!(refused.body.get("reason").is_none(), "{}", refused.body);
    assert_eq!(get(&r, &format!("{CMS}/big")).await.code, StatusCode::NOT_FOUND);
    // Under the limit, the same object is stored.
    big["data"]["k"] = json!("x".repeat(32 * 1024));
    assert_eq!(post(&r, CMS, &big).await.code, StatusCode::CREATED);
    // An update over the limit is refused the same way and changes nothing.
    let mut bigger = get(&r, &format!("{CMS}/big")).await.body;
    bigger["data"]["k"] = json!("y".repeat(100 * 1024));
    let path = format!("{CMS}/big");
    let refused = call(&r, Method::PUT, &path, "application/json", bigger.to_string()).await;
    assert_eq!(
        (refused.code, refused.body["message"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("etcdserver: request is too large"))
    );
    assert!(get(&r, &path).await.body["data"]["k"].as_str().unwrap().starts_with('x'));
}
