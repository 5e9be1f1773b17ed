use serde_json::json;

use super::*;
use crate::kinds;

fn template(labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}})
}

fn defaulted(kind: &str, mut object: Value) -> Value {
    kinds::default(kind, &mut object);
    object
}

fn fields(causes: &[Cause]) -> Vec<&str> {
    causes.iter().map(|c| c.field.as_str()).collect()
}

#[test]
fn deployment_defaults() {
    let d = defaulted("Deployment", deployment());
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(kinds::decode("Deployment", &d), Ok(vec![]));
    assert_eq!(validate("Deployment", &d), vec![]);
    let recreate = defaulted("Deployment", json!({"spec": {"strategy": {"type": "Recreate"}}}));
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn deployment_selector_must_select_the_template() {
    let mut d = defaulted("Deployment", deployment());
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let c = validate("Deployment", &d);
    assert_eq!(fields(&c), ["spec.template.metadata.labels"]);
    assert_eq!(
        c[0].message,
        "Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
    );
    d["spec"]["selector"] = json!({});
    let c = validate("Deployment", &d);
    assert_eq!(c[0].message, "Invalid value: {}: empty selector is invalid for deployment");
    d["spec"].as_object_mut().unwrap().remove("selector");
    assert_eq!(fields(&validate("Deployment", &d)), ["spec.selector"]);
}

#[test]
fn deployment_fields() {
    let mut d = defaulted("Deployment", deployment());
    d["spec"]["replicas"] = json!(-1);
    d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
    d["spec"]["progressDeadlineSeconds"] = json!(5);
    d["spec"]["minReadySeconds"] = json!(10);
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    d["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(10);
    let c = validate("Deployment", &d);
    assert_eq!(
        fields(&c),
        [
            "spec.replicas",
            "spec.template.spec.restartPolicy",
            "spec.template.spec.activeDeadlineSeconds",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "spec.progressDeadlineSeconds",
        ]
    );
    assert_eq!(c[0].message, "Invalid value: -1: must be greater than or equal to 0");
    assert_eq!(c[1].message, "Unsupported value: \"Never\": supported values: \"Always\"");
    assert_eq!(c[2].message, "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported");
    assert_eq!(c[3].message, "Invalid value: 0: may not be 0 when `maxSurge` is 0");
    assert_eq!(c[4].message, "Invalid value: 5: must be greater than minReadySeconds");
    let mut r = defaulted("Deployment", deployment());
    r["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}});
    assert_eq!(
        validate("Deployment", &r)[0].message,
        "Forbidden: may not be specified when strategy `type` is 'Recreate'"
    );
}

#[test]
fn template_containers_are_validated_with_their_paths() {
    let mut d = defaulted("Deployment", deployment());
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    d["spec"]["template"]["metadata"]["labels"]["bad key"] = json!("x");
    let c = validate("Deployment", &d);
    assert_eq!(fields(&c), ["spec.template.metadata.labels", "spec.template.spec.containers[0].image"]);
}

#[test]
fn replica_sets_daemon_sets_and_stateful_sets() {
    let rs = defaulted(
        "ReplicaSet",
        json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}}),
    );
    assert_eq!(rs["spec"]["replicas"], 1);
    assert!(validate("ReplicaSet", &rs).is_empty());

    let ds = defaulted(
        "DaemonSet",
        json!({"spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template(json!({"app": "agent"}))}}),
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    assert!(validate("DaemonSet", &ds).is_empty());
    let mut both = ds.clone();
    both["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": 1, "maxSurge": 1});
    assert_eq!(
        validate("DaemonSet", &both)[0].message,
        "Invalid value: 1: may not be set when maxUnavailable is non-zero"
    );

    let sts = defaulted(
        "StatefulSet",
        json!({"spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": template(json!({"app": "db"})),
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
    );
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(sts["spec"]["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
    assert_eq!(kinds::decode("StatefulSet", &sts), Ok(vec![]));
    assert!(validate("StatefulSet", &sts).is_empty());
    let mut bad = sts.clone();
    bad["spec"]["podManagementPolicy"] = json!("Eager");
    bad["spec"]["updateStrategy"] = json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
    let c = validate("StatefulSet", &bad);
    assert_eq!(fields(&c), ["spec.podManagementPolicy", "spec.updateStrategy.rollingUpdate"]);
    assert_eq!(c[0].message, "Invalid value: \"Eager\": must be 'OrderedReady' or 'Parallel'");
}

#[test]
fn workload_selectors_are_immutable() {
    let old = defaulted("Deployment", deployment());
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(3);
    assert!(validate_update("Deployment", &old, &new).is_empty());
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    let c = validate_update("Deployment", &old, &new);
    assert_eq!(fields(&c), ["spec.selector"]);
    assert!(c[0].message.ends_with(": field is immutable"));

    let sts = defaulted(
        "StatefulSet",
        json!({"spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template(json!({"app": "db"}))}}),
    );
    let mut scaled = sts.clone();
    scaled["spec"]["replicas"] = json!(5);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:17");
    assert!(validate_update("StatefulSet", &sts, &scaled).is_empty());
    scaled["spec"]["serviceName"] = json!("other");
    let c = validate_update("StatefulSet", &sts, &scaled);
    assert_eq!(c[0].field, "spec");
    assert!(c[0].message.starts_with("Forbidden: updates to statefulset spec for fields other than 'replicas'"));
}

fn job() -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default", "uid": "1234-abcd"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "pi", "image": "perl:5.34", "command": ["perl", "-e", "print 1"]}]}}}})
}

#[test]
fn job_defaults_and_generated_selector() {
    let j = defaulted("Job", job());
    let spec = &j["spec"];
    assert_eq!((spec["completions"].clone(), spec["parallelism"].clone()), (json!(1), json!(1)));
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(spec["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "1234-abcd"}}));
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"batch.kubernetes.io/controller-uid": "1234-abcd", "batch.kubernetes.io/job-name": "pi",
            "controller-uid": "1234-abcd", "job-name": "pi"})
    );
    assert_eq!(j["metadata"]["labels"], spec["template"]["metadata"]["labels"]);
    assert_eq!(kinds::decode("Job", &j), Ok(vec![]));
    assert_eq!(validate("Job", &j), vec![]);
    assert_eq!(defaulted("Job", j.clone()), j);
    let parallel = defaulted("Job", json!({"spec": {"parallelism": 3}}));
    assert!(parallel["spec"].get("completions").is_none());
}

#[test]
fn job_validation() {
    let mut j = defaulted("Job", job());
    j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    j["spec"]["completionMode"] = json!("Indexed");
    j["spec"].as_object_mut().unwrap().remove("completions");
    j["spec"]["backoffLimit"] = json!(-1);
    let c = validate("Job", &j);
    assert_eq!(fields(&c), ["spec.backoffLimit", "spec.completions", "spec.template.spec.restartPolicy"]);
    assert_eq!(c[1].message, "Required value: when completion mode is Indexed");
    assert_eq!(c[2].message, "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"");
    let mut manual = job();
    manual["spec"]["manualSelector"] = json!(true);
    manual["spec"]["selector"] = json!({"matchLabels": {"app": "pi"}});
    let manual = defaulted("Job", manual);
    assert_eq!(validate("Job", &manual)[0].field, "spec.template.metadata.labels");
}

#[test]
fn job_template_is_immutable_unless_suspended_and_unstarted() {
    let old = defaulted("Job", job());
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
    let c = validate_update("Job", &old, &new);
    assert_eq!(fields(&c), ["spec.template"]);
    new["spec"]["suspend"] = json!(true);
    assert!(validate_update("Job", &old, &new).is_empty());
    let mut started = old.clone();
    started["status"] = json!({"startTime": "2025-01-01T00:00:00Z"});
    assert_eq!(fields(&validate_update("Job", &started, &new)), ["spec.template"]);
    let mut sel = old.clone();
    sel["spec"]["selector"] = json!({"matchLabels": {"x": "y"}});
    sel["spec"]["completions"] = json!(5);
    assert_eq!(fields(&validate_update("Job", &old, &sel)), ["spec.selector", "spec.completions"]);
}

#[test]
fn cron_jobs() {
    let cj = defaulted(
        "CronJob",
        json!({"metadata": {"name": "hello"}, "spec": {"schedule": "*/1 * * * *",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "hello", "image": "busybox:1.28"}]}}}}}}),
    );
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    assert!(cj["spec"]["jobTemplate"]["spec"].get("backoffLimit").is_none());
    assert_eq!(validate("CronJob", &cj), vec![]);
    let mut bad = cj.clone();
    bad["metadata"]["name"] = json!("x".repeat(53));
    bad["spec"]["schedule"] = json!("TZ=UTC 61 * * * *");
    bad["spec"]["concurrencyPolicy"] = json!("Sometimes");
    bad["spec"]["timeZone"] = json!("Local");
    bad["spec"]["jobTemplate"]["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
    let c = validate("CronJob", &bad);
    assert_eq!(
        fields(&c),
        [
            "metadata.name",
            "spec.schedule",
            "spec.schedule",
            "spec.timeZone",
            "spec.concurrencyPolicy",
            "spec.jobTemplate.spec.selector"
        ]
    );
    assert_eq!(c[1].message, "Invalid value: \"TZ=UTC 61 * * * *\": end of range (61) above maximum (59): 61");
    assert_eq!(
        c[2].message,
        "Invalid value: \"TZ=UTC 61 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    );
}

#[test]
fn horizontal_pod_autoscalers() {
    let hpa = defaulted(
        "HorizontalPodAutoscaler",
        json!({"spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 60);
    assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
    assert_eq!(hpa["spec"]["behavior"]["scaleUp"]["policies"].as_array().unwrap().len(), 2);
    assert_eq!(kinds::decode("HorizontalPodAutoscaler", &hpa), Ok(vec![]));
    assert_eq!(validate("HorizontalPodAutoscaler", &hpa), vec![]);
    let bad = json!({"spec": {"scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 3, "maxReplicas": 2,
        "metrics": [{"type": "Resource"}, {"type": "Magic"},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}],
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 3600}]}}}});
    let c = validate("HorizontalPodAutoscaler", &bad);
    assert_eq!(
        fields(&c),
        [
            "spec.scaleTargetRef.name",
            "spec.maxReplicas",
            "spec.metrics[0].resource",
            "spec.metrics[1].type",
            "spec.metrics[2].resource.target.averageUtilization",
            "spec.behavior.scaleUp.policies[0].value",
            "spec.behavior.scaleUp.policies[0].periodSeconds",
        ]
    );
    assert_eq!(c[1].message, "Invalid value: 2: must be greater than or equal to `minReplicas`");
}

#[test]
fn controller_revisions() {
    let c = validate("ControllerRevision", &json!({"revision": -1}));
    assert_eq!(fields(&c), ["data", "revision"]);
    assert_eq!(c[0].message, "Required value: data is mandatory");
    let old = json!({"data": {"spec": {}}, "revision": 1});
    let c = validate_update("ControllerRevision", &old, &json!({"data": {"spec": {"x": 1}}, "revision": 2}));
    assert_eq!(fields(&c), ["data"]);
}
