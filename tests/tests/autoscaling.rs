//! The HorizontalPodAutoscaler end to end, as root with a real containerd: `kubectl autoscale` makes an
//! autoscaler for a Deployment whose pods burn CPU while their ConfigMap says so; it scales the Deployment up
//! to its maximum (`kubectl get hpa` shows `cpu: N%/50%`, a `SuccessfulRescale` event kube's words), and
//! back down to its minimum once the burning stops, with short stabilization windows set in `behavior` and
//! a short sync period (`--horizontal-pod-autoscaler-sync-period`).

use std::time::Duration;

use keel_tests::agent::{Agent, Containerd, BUSYBOX};
use keel_tests::masters::{json, Api};
use keel_tests::{wait_for, Cluster, Options};
use serde_json::Value;

fn deployment() -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: mode
data:
  burn: "yes"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: burner
spec:
  replicas: 1
  selector:
    matchLabels: {{app: burner}}
  template:
    metadata:
      labels: {{app: burner}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes:
      - name: mode
        configMap: {{name: mode}}
      containers:
      - name: app
        image: {BUSYBOX}
        imagePullPolicy: IfNotPresent
        resources:
          requests: {{cpu: 100m}}
        volumeMounts:
        - {{name: mode, mountPath: /mode}}
        command: ["sh", "-c", "while :; do if [ -e /mode/burn ]; then :; else sleep 1; fi; done"]
"#
    )
}

fn replicas(api: &Api) -> i64 {
    json(api, &["get", "deployment", "burner"])["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn rescale_events(api: &Api) -> Vec<String> {
    let events = json(api, &["get", "events", "--field-selector", "reason=SuccessfulRescale"]);
    events["items"].as_array().into_iter().flatten().filter_map(|e| e["message"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_autoscaler_scales_a_busy_deployment_up_and_back_down() {
    let options = Options {
        masters: true,
        extra_args: vec!["--horizontal-pod-autoscaler-sync-period".into(), "2s".into()],
        ..Default::default()
    };
    let c = Cluster::start_with(1, options).await.expect("a cluster starts");
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.expect("the master gets ready");
    let containerd = Containerd::start().await.expect("containerd starts");
    containerd.import_busybox().expect("the busybox image imports");
    let _agent = Agent::start(&api, &containerd, "agent-1", &["--housekeeping-interval", "2s", "--resync", "2s"])
        .expect("the agent starts");

    api.ok(&["apply", "-f", "-"], Some(&deployment())).unwrap();
    api.ok(&["autoscale", "deployment", "burner", "--cpu-percent=50", "--min=1", "--max=3"], None).unwrap();
    let hpa = json(&api, &["get", "hpa", "burner"]);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
    // Short windows so the test need not wait out kube's five minutes.
    let behavior = r#"{"spec":{"behavior":{
        "scaleUp":{"stabilizationWindowSeconds":0,"policies":[{"type":"Pods","value":4,"periodSeconds":5}]},
        "scaleDown":{"stabilizationWindowSeconds":4,"policies":[{"type":"Percent","value":100,"periodSeconds":5}]}}}}"#;
    api.ok(&["patch", "hpa", "burner", "--type=merge", "-p", behavior], None).unwrap();

    // Up: one pod burning a core is far above 50% of its 100m request; the maximum caps it.
    wait_for("the autoscaler scales the deployment to its maximum", Duration::from_secs(180), || {
        (replicas(&api) == 3, replicas(&api))
    })
    .await;
    let events = rescale_events(&api);
    assert!(
        events.iter().any(|m| m.starts_with("New size: ")
            && m.ends_with("; reason: cpu resource utilization (percentage of request) above target")),
        "{events:?}"
    );
    let hpa = wait_for("the status shows the utilization", Duration::from_secs(60), || {
        let hpa = json(&api, &["get", "hpa", "burner"]);
        (
            hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64().unwrap_or(0) > 50,
            hpa,
        )
    })
    .await;
    assert_eq!(hpa["status"]["desiredReplicas"], 3, "{hpa}");
    assert!(hpa["status"]["lastScaleTime"].is_string(), "{hpa}");
    let condition = |hpa: &Value, t: &str| {
        hpa["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == t).cloned().unwrap_or_default()
    };
    assert_eq!(condition(&hpa, "ScalingActive")["reason"], "ValidMetricFound", "{hpa}");
    assert_eq!(condition(&hpa, "AbleToScale")["status"], "True", "{hpa}");
    // kubectl's columns: TARGETS as `cpu: <current>%/50%`.
    let table = api.ok(&["get", "hpa", "burner"], None).unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1]), ("burner", "Deployment/burner"), "{table}");
    assert_eq!(row[2], "cpu:", "{table}");
    assert!(row[3].ends_with("%/50%") && !row[3].starts_with("<unknown>"), "{table}");

    // Down: the pods stop burning; every metric below target brings it to the minimum.
    api.ok(&["patch", "configmap", "mode", "--type=json", "-p", r#"[{"op":"remove","path":"/data/burn"}]"#], None)
        .unwrap();
    wait_for("the autoscaler scales the deployment back to its minimum", Duration::from_secs(180), || {
        (replicas(&api) == 1, replicas(&api))
    })
    .await;
    let events = rescale_events(&api);
    assert!(events.iter().any(|m| m == "New size: 1; reason: All metrics below target"), "{events:?}");
    let hpa = json(&api, &["get", "hpa", "burner"]);
    assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max", "defaulted by the API: {hpa}");
}
