//! ResourceQuotas and LimitRanges with stock kubectl on three stacked masters (issue 26, item 3): a quota
//! refuses the pod beyond its count in kube-apiserver's words, concurrent creates through every master
//! never take it past its limit, its controller gives back what deleted pods freed, compute quotas need
//! every container to name its requests, and a LimitRange's defaults appear on a pod without requests
//! while its max refuses a pod above it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keel_tests::masters::json;
use keel_tests::{wait_for, Cluster, Options};
use kube::api::PostParams;

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox, resources: {resources}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_and_limit_ranges_hold_a_namespace_to_its_limits() {
    let c = Cluster::start_with(3, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    for i in 0..3 {
        c.api(i).wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    api.ok(&["create", "namespace", "team"], None).unwrap();
    api.ok(&["-n", "team", "create", "quota", "small", "--hard=pods=3,count/configmaps=2"], None).unwrap();

    // Concurrent creates through all three masters: exactly three pods get in.
    let mut tasks = vec![];
    for i in 0..12 {
        let client = c.api(i % 3).client().await;
        tasks.push(tokio::spawn(async move {
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, "team");
            let p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("p{i}")},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }))
            .unwrap();
            pods.create(&PostParams::default(), &p).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 403, "{e:?}");
                assert!(
                    e.message.contains("exceeded quota: small, requested: pods=1, used: pods=3, limited: pods=3"),
                    "{e:?}"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 3, "pods created under a quota of 3");
    let listed = api.ok(&["-n", "team", "get", "pods", "-o", "name"], None).unwrap();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let refused = api.kubectl(&["-n", "team", "apply", "-f", "-"], Some(&pod("late", "{}"))).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(
            r#"pods "late" is forbidden: exceeded quota: small, requested: pods=1, used: pods=3, limited: pods=3"#
        ),
        "{err}"
    );
    wait_for("the quota's table", Duration::from_secs(30), || {
        let out = api.ok(&["-n", "team", "get", "quota"], None).unwrap_or_default();
        (out.contains("REQUEST") && out.contains("count/configmaps: 1/2, pods: 3/3"), out)
    })
    .await;

    // Object counts: the namespace's own kube-root-ca.crt ConfigMap counts.
    api.ok(&["-n", "team", "create", "configmap", "one"], None).unwrap();
    let err = api.kubectl(&["-n", "team", "create", "configmap", "two"], None).unwrap();
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("exceeded quota: small, requested: count/configmaps=1"),
        "{err:?}"
    );

    // A deleted pod is given back by the quota controller; then a new one fits.
    let first = api.ok(&["-n", "team", "get", "pods", "-o", "jsonpath={.items[0].metadata.name}"], None).unwrap();
    api.ok(&["-n", "team", "delete", "pod", &first, "--grace-period=0", "--force"], None).unwrap();
    wait_for("the freed pod given back", Duration::from_secs(30), || {
        let q = json(&api, &["-n", "team", "get", "quota", "small"]);
        (q["status"]["used"]["pods"] == "2", q.to_string())
    })
    .await;
    api.ok(&["-n", "team", "apply", "-f", "-"], Some(&pod("fits", "{}"))).unwrap();
    // A ReplicaSet's refused create is kube's FailedCreate: an event and the ReplicaFailure condition.
    api.ok(&["-n", "team", "create", "deployment", "more", "--image=busybox"], None).unwrap();
    wait_for("the ReplicaSet's FailedCreate", Duration::from_secs(30), || {
        let rs = json(&api, &["-n", "team", "get", "rs", "-l", "app=more"]);
        let condition = rs["items"][0]["status"]["conditions"][0].clone();
        let events = api.ok(&["-n", "team", "get", "events", "--field-selector", "reason=FailedCreate"], None);
        let seen = condition["type"] == "ReplicaFailure"
            && condition["message"].as_str().is_some_and(|m| m.contains("exceeded quota: small"))
            && events.as_deref().is_ok_and(|e| e.contains("Error creating: pods"));
        (seen, format!("{condition} {events:?}"))
    })
    .await;

    // A compute quota needs every container to name what it limits.
    api.ok(&["create", "namespace", "compute"], None).unwrap();
    api.ok(&["-n", "compute", "create", "quota", "cpu", "--hard=requests.cpu=1,limits.memory=1Gi"], None).unwrap();
    let refused = api.kubectl(&["-n", "compute", "apply", "-f", "-"], Some(&pod("bare", "{}"))).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("failed quota: cpu: must specify limits.memory for: c; requests.cpu for: c"), "{err}");

    // A LimitRange's defaults fill them in (and say so); its max refuses a pod above it.
    let range = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: defaults}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 200m, memory: 128Mi}\n    max: {cpu: \"1\"}\n";
    api.ok(&["-n", "compute", "apply", "-f", "-"], Some(range)).unwrap();
    api.ok(&["-n", "compute", "apply", "-f", "-"], Some(&pod("bare", "{}"))).unwrap();
    let p = json(&api, &["-n", "compute", "get", "pod", "bare"]);
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        serde_json::json!({"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
    );
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    assert_eq!(p["status"]["qosClass"], "Burstable");
    let q = json(&api, &["-n", "compute", "get", "quota", "cpu"]);
    assert_eq!(q["status"]["used"], serde_json::json!({"requests.cpu": "200m", "limits.memory": "256Mi"}));
    let big = api.kubectl(&["-n", "compute", "apply", "-f", "-"], Some(&pod("big", "{limits: {cpu: \"2\"}}"))).unwrap();
    let err = String::from_utf8_lossy(&big.stderr);
    assert!(err.contains(r#"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#), "{err}");
    let greedy = "{requests: {cpu: 900m}, limits: {cpu: 900m, memory: 256Mi}}";
    let over = api.kubectl(&["-n", "compute", "apply", "-f", "-"], Some(&pod("greedy", greedy))).unwrap();
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(
        err.contains(
            "exceeded quota: cpu, requested: requests.cpu=900m, used: requests.cpu=200m, limited: requests.cpu=1"
        ),
        "{err}"
    );
    let table = api.ok(&["-n", "compute", "get", "quota", "cpu"], None).unwrap();
    assert!(table.contains("requests.cpu: 200m/1") && table.contains("limits.memory: 256Mi/1Gi"), "{table}");
    let bad = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: bad}\nspec:\n  limits:\n  - type: Container\n    min: {cpu: \"2\"}\n    max: {cpu: \"1\"}\n";
    let refused = api.kubectl(&["-n", "compute", "apply", "-f", "-"], Some(bad)).unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("min value 2 is greater than max value 1"),
        "{refused:?}"
    );
}
