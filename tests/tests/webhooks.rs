//! Admission webhooks (issue 25, item 5) with stock kubectl: a validating webhook served by this test
//! process over HTTPS, reached through a Service, refuses an object (on create, update and delete), a
//! mutating one at a URL adds a label (its JSON patch applied, the result
//! checked again), selectors limit what is sent, and a webhook that cannot be called fails the request or
//! not, as its failure policy says.

use std::time::Duration;

use axum::routing::post;
use axum::Json;
use base64::Engine;
use keel_tests::masters::json;
use keel_tests::{wait_for, Cluster, Options};
use serde_json::{json, Value};

/// The answer to a review: allowed (with a patch) or not.
fn answer(review: &Value, allowed: bool, message: &str, patch: Option<Value>) -> Json<Value> {
    let uid = review["request"]["uid"].clone();
    let mut response = json!({"uid": uid, "allowed": allowed});
    if !allowed {
        response["status"] = json!({"message": message, "code": 403});
    }
    if let Some(p) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p.to_string()));
        response["warnings"] = json!(["labelled by the test's webhook"]);
    }
    Json(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

/// Serves `/validate` (refuses ConfigMaps with a `forbidden` key) and `/mutate` (labels ConfigMaps) over
/// HTTPS; the CA that signed its certificate, as PEM, and its port.
async fn webhook_server() -> (String, u16) {
    let ca = keel_apiserver::tls::Authority::generate("webhook-ca").unwrap();
    let (cert, key) = ca.issue_serving(&["127.0.0.1".to_string(), "webhook.default.svc".to_string()]).unwrap();
    let tls = keel_apiserver::tls::server_config(&cert, &key).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route(
            "/validate",
            post(|Json(review): Json<Value>| async move {
                let request = &review["request"];
                if request["operation"] == "DELETE" {
                    let kept = request["oldObject"]["metadata"]["labels"].get("keep").is_some();
                    return answer(&review, !kept, "this one is kept", None);
                }
                let forbidden = request["object"]["data"].get("forbidden").is_some();
                answer(&review, !forbidden, "the key \"forbidden\" is not allowed here", None)
            }),
        )
        .route(
            // Notes whether the object carries the label `/b-label` adds (a webhook called before it).
            "/a-stamp",
            post(|Json(review): Json<Value>| async move {
                let meta = &review["request"]["object"]["metadata"];
                let saw = if meta["labels"].get("labelled").is_some() { "yes" } else { "no" };
                let patch = match meta.get("annotations") {
                    Some(_) => json!([{"op": "add", "path": "/metadata/annotations/saw-labelled", "value": saw}]),
                    None => json!([{"op": "add", "path": "/metadata/annotations", "value": {"saw-labelled": saw}}]),
                };
                answer(&review, true, "", Some(patch))
            }),
        )
        .route(
            // Labels a gadget with the version it was shown as and the version it was asked through.
            "/gadget",
            post(|Json(review): Json<Value>| async move {
                let request = &review["request"];
                let shown = request["object"]["apiVersion"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("");
                let labels = json!({"shown-as": shown, "asked-as": request["requestKind"]["version"]});
                let patch = json!([{"op": "add", "path": "/metadata/labels", "value": labels}]);
                answer(&review, true, "", Some(patch))
            }),
        )
        .route(
            "/b-label",
            post(|Json(review): Json<Value>| async move {
                let patch = match review["request"]["object"]["metadata"].get("labels") {
                    Some(_) => json!([{"op": "add", "path": "/metadata/labels/labelled", "value": "yes"}]),
                    None => json!([{"op": "add", "path": "/metadata/labels", "value": {"labelled": "yes"}}]),
                };
                answer(&review, true, "", Some(patch))
            }),
        )
        .route(
            "/mutate",
            post(|Json(review): Json<Value>| async move {
                let patch = match review["request"]["object"]["metadata"].get("labels") {
                    Some(_) => json!([{"op": "add", "path": "/metadata/labels/mutated-by", "value": "webhook"}]),
                    None => json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated-by": "webhook"}}]),
                };
                answer(&review, true, "", Some(patch))
            }),
        );
    let listener = keel_apiserver::tls::TlsListener::new(tcp, tls);
    tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });
    (ca.cert_pem().to_string(), port)
}

/// A configuration of one webhook at `https://127.0.0.1:<port>/<path>`, or (`port` 0) at `/<path>` of the
/// Service `webhook` (port 443).
fn configuration(kind: &str, path: &str, port: u16, ca: &str, policy: &str, resources: &str) -> String {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    let client = match port {
        0 => format!("{{service: {{namespace: default, name: webhook, path: /{path}}}, caBundle: {bundle}}}"),
        _ => format!("{{url: \"https://127.0.0.1:{port}/{path}\", caBundle: {bundle}}}"),
    };
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata: {{name: test-{path}}}
webhooks:
- name: {path}.webhooks.keel.test
  sideEffects: None
  admissionReviewVersions: [v1]
  failurePolicy: {policy}
  timeoutSeconds: 5
  clientConfig: {client}
  objectSelector: {{matchExpressions: [{{key: skip-webhooks, operator: DoesNotExist}}]}}
  rules: [{{operations: [CREATE, UPDATE, DELETE], apiGroups: [""], apiVersions: [v1], resources: [{resources}]}}]
"#
    )
}

fn configmap(name: &str, data: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{{labels}}}}}\ndata: {{{data}}}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_refuse_mutate_and_follow_their_failure_policy() {
    let (ca, port) = webhook_server().await;
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    // The validating webhook is reached through a Service (one without a selector: its Endpoints name this
    // process), the mutating one at a URL.
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: webhook}}\nspec: {{ports: [{{name: https, port: 443, targetPort: {port}}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: webhook}}\nsubsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{name: https, port: {port}}}]}}]\n"
    );
    api.ok(&["apply", "-f", "-"], Some(&service)).unwrap();
    let validating = configuration("ValidatingWebhookConfiguration", "validate", 0, &ca, "Fail", "configmaps");
    let mutating = configuration("MutatingWebhookConfiguration", "mutate", port, &ca, "Fail", "configmaps");
    api.ok(&["apply", "-f", "-"], Some(&validating)).unwrap();
    api.ok(&["apply", "-f", "-"], Some(&mutating)).unwrap();
    let listed = api.ok(&["get", "validatingwebhookconfigurations,mutatingwebhookconfigurations"], None).unwrap();
    assert!(listed.contains("test-validate") && listed.contains("test-mutate"), "{listed}");

    // The mutating webhook labels what is created; its warning reaches kubectl.
    let out = api.kubectl(&["apply", "-f", "-"], Some(&configmap("settings", "mode: fast", "app: web"))).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("labelled by the test's webhook"));
    let cm = json(&api, &["get", "configmap", "settings"]);
    assert_eq!(
        (cm["metadata"]["labels"]["mutated-by"].as_str(), cm["metadata"]["labels"]["app"].as_str()),
        (Some("webhook"), Some("web"))
    );

    // The validating webhook refuses, in kube-apiserver's words, creates and updates alike.
    let refused = api.kubectl(&["apply", "-f", "-"], Some(&configmap("bad", "forbidden: x", ""))).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("admission webhook \"validate.webhooks.keel.test\" denied the request: the key \"forbidden\" is not allowed here"),
        "{err}"
    );
    let update = api.kubectl(&["patch", "configmap", "settings", "-p", r#"{"data":{"forbidden":"y"}}"#], None).unwrap();
    assert!(!update.status.success() && String::from_utf8_lossy(&update.stderr).contains("denied the request"));
    // Deletes are reviewed too (the old object is sent).
    api.ok(&["label", "configmap", "settings", "keep=yes"], None).unwrap();
    let kept = api.kubectl(&["delete", "configmap", "settings"], None).unwrap();
    assert!(String::from_utf8_lossy(&kept.stderr).contains("this one is kept"), "{kept:?}");
    api.ok(&["label", "configmap", "settings", "keep-"], None).unwrap();
    api.ok(&["delete", "configmap", "settings"], None).unwrap();
    // Objects the selector leaves out are not sent.
    api.ok(&["apply", "-f", "-"], Some(&configmap("exempt", "forbidden: x", "skip-webhooks: \"yes\""))).unwrap();
    assert!(json(&api, &["get", "configmap", "exempt"])["metadata"]["labels"].get("mutated-by").is_none());

    // A webhook that cannot be called: Fail refuses the request, Ignore lets it through.
    let closed = keel_tests::free_port();
    let broken = configuration("ValidatingWebhookConfiguration", "broken", closed, &ca, "Fail", "secrets");
    api.ok(&["apply", "-f", "-"], Some(&broken)).unwrap();
    let failed = api.kubectl(&["create", "secret", "generic", "s1", "--from-literal=a=b"], None).unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("failed calling webhook \"broken.webhooks.keel.test\""), "{err}");
    let ignoring = configuration("ValidatingWebhookConfiguration", "broken", closed, &ca, "Ignore", "secrets");
    api.ok(&["apply", "-f", "-"], Some(&ignoring)).unwrap();
    api.ok(&["create", "secret", "generic", "s1", "--from-literal=a=b"], None).unwrap();

    // reinvocationPolicy IfNeeded: the first webhook (configurations in name order) is called again after
    // the second changed the object, and so sees its label.
    let stamp = configuration("MutatingWebhookConfiguration", "a-stamp", port, &ca, "Fail", "podtemplates")
        .replace("sideEffects: None", "sideEffects: None\n  reinvocationPolicy: IfNeeded");
    let label = configuration("MutatingWebhookConfiguration", "b-label", port, &ca, "Fail", "podtemplates");
    api.ok(&["apply", "-f", "-"], Some(&format!("{stamp}---\n{label}"))).unwrap();
    let template = "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: t}\ntemplate: {spec: {containers: [{name: c, image: x}]}}\n";
    api.ok(&["apply", "-f", "-"], Some(template)).unwrap();
    let t = json(&api, &["get", "podtemplate", "t"]);
    assert_eq!(t["metadata"]["labels"]["labelled"], "yes", "{t}");
    assert_eq!(t["metadata"]["annotations"]["saw-labelled"], "yes", "reinvoked after the label: {t}");

    // matchPolicy Equivalent (the default): a webhook for v1 of a custom resource also gets requests made
    // through its v1beta1, shown as v1; the object stored and answered is v1beta1's again.
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
  - {name: v1beta1, served: true, storage: false, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
"#;
    api.ok(&["apply", "-f", "-"], Some(crd)).unwrap();
    let gadgets = configuration("MutatingWebhookConfiguration", "gadget", port, &ca, "Fail", "gadgets")
        .replace("apiGroups: [\"\"], apiVersions: [v1]", "apiGroups: [example.com], apiVersions: [v1]");
    api.ok(&["apply", "-f", "-"], Some(&gadgets)).unwrap();
    let gadget = "apiVersion: example.com/v1beta1\nkind: Gadget\nmetadata: {name: g}\nspec: {size: 1}\n";
    let created = wait_for("the gadget created through v1beta1", Duration::from_secs(10), || {
        let out = api.kubectl(&["create", "-o", "json", "-f", "-"], Some(gadget)).unwrap();
        let created: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), created)
    })
    .await;
    assert_eq!(created["apiVersion"], "example.com/v1beta1", "{created}");
    assert_eq!(created["metadata"]["labels"], json!({"shown-as": "v1", "asked-as": "v1beta1"}), "{created}");

    // Bad configurations are refused.
    let bad = validating.replace("sideEffects: None", "sideEffects: Some").replace("test-validate", "bad");
    let refused = api.kubectl(&["apply", "-f", "-"], Some(&bad)).unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sideEffects"), "{refused:?}");
}
