//! Version, health and discovery through the router (no network), as kubectl asks for them.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use keel_apiserver::{app, AppState};
use serde_json::Value;
use tower::ServiceExt;

async fn get(path: &str) -> (StatusCode, Value) {
    let router = app(AppState::new("127.0.0.1:6443", unreachable_store()));
    let resp = router.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into())))
}

#[tokio::test]
async fn version_names_kubernetes_1_33() {
    let (code, v) = get("/version").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!((v["major"].as_str(), v["minor"].as_str()), (Some("1"), Some("33")));
    assert!(v["gitVersion"].as_str().unwrap().starts_with("v1.33.0"));
    // No store behind this router: alive, but neither healthy nor ready.
    assert_eq!(get("/livez").await, (StatusCode::OK, Value::String("ok".into())));
    for path in ["/healthz", "/readyz"] {
        let (code, body) = get(path).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(body.as_str().unwrap().contains("[-]etcd failed: reason withheld"), "{path}: {body}");
    }
}

#[tokio::test]
async fn discovery_lists_groups_resources_short_names_and_subresources() {
    let (_, api) = get("/api").await;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"][0], "v1");

    let (_, groups) = get("/apis").await;
    assert_eq!(groups["kind"], "APIGroupList");
    let names: Vec<&str> = groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "apps",
            "batch",
            "coordination.k8s.io",
            "autoscaling",
            "discovery.k8s.io",
            "networking.k8s.io",
            "rbac.authorization.k8s.io",
            "certificates.k8s.io",
            "scheduling.k8s.io",
            "storage.k8s.io",
            "policy",
            "apiextensions.k8s.io",
            "admissionregistration.k8s.io",
            "events.k8s.io",
            "apiregistration.k8s.io",
            "authentication.k8s.io",
            "authorization.k8s.io",
            "metrics.k8s.io"
        ]
    );
    // The reviews are created, never listed.
    let (_, authorization) = get("/apis/authorization.k8s.io/v1").await;
    let ssar = authorization["resources"].as_array().unwrap().iter().find(|r| r["name"] == "selfsubjectaccessreviews");
    assert_eq!(ssar.map(|r| r["verbs"].clone()), Some(serde_json::json!(["create"])), "{authorization}");
    assert_eq!(groups["groups"][3]["preferredVersion"]["groupVersion"], "autoscaling/v2");
    // The resource metrics API (`kubectl top`) is read only.
    let (_, metrics) = get("/apis/metrics.k8s.io/v1beta1").await;
    let listed: Vec<(&str, &str, bool, Value)> = metrics["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["name"].as_str().unwrap(), r["kind"].as_str().unwrap(), r["namespaced"] == true, r["verbs"].clone())
        })
        .collect();
    let read = serde_json::json!(["get", "list"]);
    assert_eq!(listed, [("nodes", "NodeMetrics", false, read.clone()), ("pods", "PodMetrics", true, read)]);

    let (_, core) = get("/api/v1").await;
    assert_eq!(core["kind"], "APIResourceList");
    assert_eq!(core["groupVersion"], "v1");
    let pods = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!(pods["kind"], "Pod");
    assert_eq!(pods["namespaced"], true);
    assert_eq!(pods["shortNames"][0], "po");
    assert!(pods["verbs"].as_array().unwrap().iter().any(|v| v == "watch"));
    let names: Vec<&str> = core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for n in ["pods/status", "pods/log", "pods/exec", "pods/binding", "nodes/status", "namespaces"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }

    let (_, apps) = get("/apis/apps/v1").await;
    let scale = apps["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").unwrap();
    assert_eq!((scale["kind"].as_str(), scale["group"].as_str()), (Some("Scale"), Some("autoscaling")));
    assert_eq!(get("/apis/apps").await.1["versions"][0]["groupVersion"], "apps/v1");
}

#[tokio::test]
async fn unknown_paths_get_a_404_status() {
    for path in ["/apis/nope/v1", "/apis/apps/v2", "/apis/nope", "/nothing"] {
        let (code, v) = get(path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(v["kind"], "Status", "{path}");
        assert_eq!(v["reason"], "NotFound", "{path}");
    }
}

/// Storage that is never reached: these tests do not touch objects.
fn unreachable_store() -> keel_apiserver::storage::Storage {
    keel_apiserver::storage::Storage::new(tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy())
}
