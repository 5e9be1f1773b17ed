//! Service-account tokens with stock kubectl against a master: every namespace gets its `default`
//! ServiceAccount and `kube-root-ca.crt`; `kubectl create token` issues a token that authenticates as
//! `system:serviceaccount:<ns>:<name>` and gets exactly what RBAC grants it; a token for another audience,
//! an expired one, one of a deleted service account, and one bound to a deleted pod are refused (401);
//! TokenReview answers for a token; the issuer's OIDC documents publish the signing key; a new pod gets its
//! `kube-api-access` volume.

use std::process::Command;
use std::time::Duration;

use keel_tests::masters::{json, Api};
use keel_tests::{wait_for, Cluster, Options};
use serde_json::Value;

/// `curl -k` with a bearer token: the status code and the JSON answered.
fn curl(api: &Api, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-X", method, "-w", "\n%{http_code}", &format!("{}{path}", api.url())]);
    cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_tokens_authenticate_while_what_they_name_lives() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    for ns in ["a", "b"] {
        api.ok(&["create", "namespace", ns], None).unwrap();
    }
    // Every namespace gets its default service account and the CA.
    wait_for("default service account and CA in a", Duration::from_secs(30), || {
        let sa = api.kubectl(&["get", "serviceaccount", "default", "-n", "a"], None).unwrap().status.success();
        let ca = api.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "a"], None).unwrap().status.success();
        (sa && ca, ())
    })
    .await;
    let ca = json(&api, &["get", "configmap", "kube-root-ca.crt", "-n", "a"]);
    assert!(ca["data"]["ca.crt"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    api.ok(&["create", "serviceaccount", "reader", "-n", "a"], None).unwrap();
    let token = api.ok(&["create", "token", "reader", "-n", "a"], None).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");

    // Who it is, and nothing more until RBAC says so.
    let (code, whoami) = curl(&api, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", &token, Some("{}"));
    assert_eq!(code, 201, "{whoami}");
    assert_eq!(whoami["status"]["userInfo"]["username"], "system:serviceaccount:a:reader");
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        serde_json::json!(["system:serviceaccounts", "system:serviceaccounts:a", "system:authenticated"])
    );
    let (code, denied) = curl(&api, "GET", "/api/v1/namespaces/a/pods", &token, None);
    assert_eq!(code, 403, "{denied}");
    assert_eq!(
        denied["message"],
        r#"pods is forbidden: User "system:serviceaccount:a:reader" cannot list resource "pods" in API group "" in the namespace "a""#
    );
    api.ok(&["create", "role", "pods", "-n", "a", "--verb=list,get", "--resource=pods"], None).unwrap();
    api.ok(&["create", "rolebinding", "reader-pods", "-n", "a", "--role=pods", "--serviceaccount=a:reader"], None)
        .unwrap();
    wait_for("the binding takes effect", Duration::from_secs(10), || {
        (curl(&api, "GET", "/api/v1/namespaces/a/pods", &token, None).0 == 200, ())
    })
    .await;
    assert_eq!(curl(&api, "GET", "/api/v1/namespaces/b/secrets", &token, None).0, 403);
    // The issuer's documents, which every service account may read.
    let (code, oidc) = curl(&api, "GET", "/.well-known/openid-configuration", &token, None);
    assert_eq!((code, oidc["issuer"].as_str()), (200, Some("https://kubernetes.default.svc.cluster.local")), "{oidc}");
    let (code, jwks) = curl(&api, "GET", "/openid/v1/jwks", &token, None);
    assert_eq!(code, 200);
    let header = token.split('.').next().unwrap();
    use base64::Engine as _;
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"], "{jwks}");

    // TokenReview, as the admin.
    let review =
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let answered: Value =
        serde_json::from_str(&api.ok(&["create", "-f", "-", "-o", "json"], Some(&review.to_string())).unwrap())
            .unwrap();
    assert_eq!(answered["status"]["authenticated"], true, "{answered}");
    assert_eq!(answered["status"]["user"]["username"], "system:serviceaccount:a:reader");

    // Another audience's token is not the API's; too short a life is refused.
    let vault = api.ok(&["create", "token", "reader", "-n", "a", "--audience", "vault"], None).unwrap();
    assert_eq!(curl(&api, "GET", "/api/v1/namespaces/a/pods", vault.trim(), None).0, 401);
    let short = api.kubectl(&["create", "token", "reader", "-n", "a", "--duration", "1m"], None).unwrap();
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("may not specify a duration less than 10 minutes"),
        "{short:?}"
    );

    // A token bound to a pod dies with the pod.
    api.ok(&["run", "holder", "-n", "a", "--image", "keel.test/busybox:1", "--restart=Never"], None).unwrap();
    let uid = json(&api, &["get", "pod", "holder", "-n", "a"])["metadata"]["uid"].as_str().unwrap().to_string();
    let bound = api
        .ok(
            &[
                "create",
                "token",
                "reader",
                "-n",
                "a",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "holder",
                "--bound-object-uid",
                &uid,
            ],
            None,
        )
        .unwrap();
    let bound = bound.trim();
    assert_eq!(curl(&api, "GET", "/api/v1/namespaces/a/pods", bound, None).0, 200);
    // The pod got its token volume, mounted where in-cluster clients look.
    let pod = json(&api, &["get", "pod", "holder", "-n", "a"]);
    let volume = &pod["spec"]["volumes"][0];
    assert!(volume["name"].as_str().unwrap().starts_with("kube-api-access-"), "{pod}");
    assert_eq!(volume["projected"]["sources"][0]["serviceAccountToken"]["path"], "token");
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    api.ok(&["delete", "pod", "holder", "-n", "a", "--grace-period=0", "--force"], None).unwrap();
    wait_for("the bound token refused", Duration::from_secs(10), || {
        (curl(&api, "GET", "/api/v1/namespaces/a/pods", bound, None).0 == 401, ())
    })
    .await;

    // And every token of a deleted service account.
    api.ok(&["delete", "serviceaccount", "reader", "-n", "a"], None).unwrap();
    assert_eq!(curl(&api, "GET", "/api/v1/namespaces/a/pods", &token, None).0, 401);
    // A token this cluster did not sign is not a token.
    let forged = format!("{}.{}.{}", header_b64(), "eyJzdWIiOiJhZG1pbiJ9", "c2ln");
    assert_eq!(curl(&api, "GET", "/api/v1/namespaces", &forged, None).0, 401);
}

fn header_b64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#)
}
