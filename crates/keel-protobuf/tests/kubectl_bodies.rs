//! Request bodies captured from kubectl 1.33 (`tests/fixtures/*.pb`, the bytes it POSTed or PUT to a
//! mock API server), decoded and compared with the JSON kubectl prints for the same command with
//! `--dry-run=client -o json` (`tests/fixtures/*.json`): the JSON Kubernetes would have received.

use std::path::PathBuf;

use serde_json::{json, Value};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn decoded(name: &str) -> Value {
    keel_protobuf::decode(&fixture(&format!("{name}.pb"))).unwrap_or_else(|e| panic!("decoding {name}: {e}"))
}

fn kubectl_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("{name}.json"))).expect("fixture JSON")
}

#[test]
fn every_body_decodes_to_the_json_kubectl_would_have_sent() {
    for name in [
        "configmap",
        "secret",
        "deployment",
        "deployment-zero-replicas",
        "service",
        "namespace",
        "job",
        "cronjob",
        "serviceaccount",
        "resourcequota",
        "poddisruptionbudget",
        "horizontalpodautoscaler",
    ] {
        assert_eq!(decoded(name), kubectl_json(name), "{name}");
    }
}

#[test]
fn configmap_data_is_a_string_map() {
    let cm = decoded("configmap");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"], json!({"name": "cm1", "creationTimestamp": null}));
    assert_eq!(cm["data"], json!({"a": "1", "b": "two"}));
}

#[test]
fn secret_bytes_are_base64() {
    let secret = decoded("secret");
    assert_eq!(secret["data"]["user"], "YWRtaW4=");
    assert_eq!(secret["data"]["pw"], "cEBzcyB3MHJkIQ==");
    assert!(secret.get("type").is_none(), "an empty type is omitted");
}

#[test]
fn deployment_keeps_nested_lists_and_an_explicit_zero_pointer() {
    let deployment = decoded("deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers,
        &json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 8080}], "resources": {}}])
    );
    assert_eq!(deployment["spec"]["strategy"], json!({}), "non-pointer structs are kept even when empty");

    let zero = decoded("deployment-zero-replicas");
    assert_eq!(zero["spec"]["replicas"], 0, "replicas is *int32: an explicit 0 is not dropped");
}

#[test]
fn service_target_ports_are_int_or_string() {
    let service = decoded("service");
    let ports = &service["spec"]["ports"];
    assert_eq!(ports[0], json!({"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}));
    assert_eq!(ports[1]["targetPort"], "https");
    assert_eq!(service["spec"]["type"], "ClusterIP");
}

#[test]
fn job_and_cronjob_carry_their_pod_templates() {
    let job = decoded("job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["echo", "hi", "there"]));
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");

    let cronjob = decoded("cronjob");
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
}

#[test]
fn quantities_are_strings() {
    let quota = decoded("resourcequota");
    assert_eq!(quota["spec"]["hard"], json!({"cpu": "1500m", "memory": "2Gi", "pods": "10"}));
}

#[test]
fn a_percentage_is_an_int_or_string_string() {
    let pdb = decoded("poddisruptionbudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], "50%");
}

#[test]
fn autoscale_builds_an_autoscaling_v2_hpa() {
    let hpa = decoded("horizontalpodautoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(hpa["spec"]["scaleTargetRef"], json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}));
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"],
        json!({"type": "Utilization", "averageUtilization": 80})
    );
}

#[test]
fn token_request_expiration_is_a_pointer() {
    let token = decoded("tokenrequest");
    assert_eq!(token["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(token["kind"], "TokenRequest");
    assert_eq!(token["spec"]["expirationSeconds"], 3600);
}

#[test]
fn certificate_approval_carries_times_and_bytes() {
    let csr = decoded("csr-approval");
    assert_eq!(csr["metadata"]["uid"], "csr1uid");
    assert_eq!(csr["metadata"]["resourceVersion"], "7");
    assert_eq!(csr["spec"]["request"], "cmVx", "bytes are base64");
    assert_eq!(csr["spec"]["usages"], json!(["client auth"]));
    let condition = &csr["status"]["conditions"][0];
    assert_eq!(condition["type"], "Approved");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "KubectlApprove");
    let updated = condition["lastUpdateTime"].as_str().expect("lastUpdateTime is a string");
    assert!(
        updated.len() == 20 && updated.ends_with('Z') && updated.starts_with("20"),
        "RFC 3339 in seconds: {updated}"
    );
    assert_eq!(condition["lastTransitionTime"], Value::Null, "an empty Time is null");
}

#[test]
fn unknown_kinds_are_refused() {
    let mut body = fixture("configmap.pb");
    // The envelope's kind "ConfigMap" → "ConfigMop", a kind no schema describes.
    let at = body.windows(9).position(|w| w == b"ConfigMap").expect("kind in envelope");
    body[at + 7] = b'o';
    let error = keel_protobuf::decode(&body).expect_err("unknown kind");
    assert!(matches!(&error, keel_protobuf::Error::UnsupportedKind { kind, .. } if kind == "ConfigMop"), "{error}");
    assert_eq!(error.to_string(), r#"protobuf bodies of kind "ConfigMop" in "v1" are not supported"#);
}
