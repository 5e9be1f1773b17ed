use serde_json::json;

use super::*;
use crate::validation::CauseType;

fn nginx_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
            "ports": [{"name": "http", "containerPort": 80}],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            "livenessProbe": {"httpGet": {"port": "http"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data"}]}})
}

fn defaulted(mut pod: Value) -> Value {
    default_pod(&mut pod);
    pod
}

fn fields(causes: &[Cause]) -> Vec<&str> {
    causes.iter().map(|c| c.field.as_str()).collect()
}

#[test]
fn pod_defaults_match_kubernetes() {
    let pod = defaulted(nginx_pod());
    let spec = &pod["spec"];
    for (k, v) in [
        ("dnsPolicy", json!("ClusterFirst")),
        ("restartPolicy", json!("Always")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("terminationGracePeriodSeconds", json!(30)),
        ("enableServiceLinks", json!(true)),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
        ("priority", json!(0)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ] {
        assert_eq!(spec[k], v, "{k}");
    }
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["resources"]["requests"], json!({"cpu": "500m", "memory": "128Mi"}));
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": "http", "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10,
            "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(spec["volumes"][0], json!({"name": "data", "emptyDir": {}}));
    assert_eq!(
        spec["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
        ])
    );
    // Defaulting twice changes nothing, and the result is still a well-formed Pod.
    assert_eq!(defaulted(pod.clone()), pod);
    assert_eq!(crate::kinds::decode("Pod", &pod), Ok(vec![]));
    assert_eq!(validate_pod(&pod), vec![]);
}

#[test]
fn pull_policy_follows_the_tag() {
    for (image, policy) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("registry:5000/team/app", "Always"),
        ("registry:5000/team/app:v2", "IfNotPresent"),
        ("nginx@sha256:0123abcd", "IfNotPresent"),
    ] {
        let pod = defaulted(json!({"spec": {"containers": [{"name": "c", "image": image}]}}));
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], policy, "{image}");
    }
    let pod = defaulted(json!({"spec": {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}}));
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
}

#[test]
fn templates_get_spec_defaults_only() {
    let mut t = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x:1",
        "resources": {"limits": {"cpu": "1"}}}]}});
    default_template(&mut t);
    assert_eq!(t["spec"]["restartPolicy"], "Always");
    assert!(t["spec"].get("enableServiceLinks").is_none());
    assert!(t["spec"].get("tolerations").is_none());
    assert!(t["spec"]["containers"][0]["resources"].get("requests").is_none());
}

#[test]
fn host_network_ports_and_existing_tolerations() {
    let pod = defaulted(json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x",
        "ports": [{"containerPort": 9100}]}], "tolerations": [{"operator": "Exists"}],
        "serviceAccount": "legacy"}}));
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 9100);
    assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["spec"]["serviceAccountName"], "legacy");
}

#[test]
fn containers_are_required_and_named_uniquely() {
    let c = validate_pod(&defaulted(json!({"spec": {}})));
    assert_eq!(fields(&c), ["spec.containers"]);
    assert_eq!(c[0].kind, CauseType::Required);
    let pod = defaulted(json!({"spec": {
        "initContainers": [{"name": "setup", "image": "busybox"}],
        "containers": [{"name": "setup", "image": "x"}, {"name": "Bad_Name", "image": ""}, {"image": " x"}]}}));
    let c = validate_pod(&pod);
    assert_eq!(
        fields(&c),
        [
            "spec.containers[0].name",
            "spec.containers[1].name",
            "spec.containers[1].image",
            "spec.containers[2].name",
            "spec.containers[2].image"
        ]
    );
    assert_eq!(c[0].message, "Duplicate value: \"setup\"");
    assert!(c[1].message.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"));
    assert_eq!(c[2].message, "Required value");
    assert_eq!(c[4].message, "Invalid value: \" x\": must not have leading or trailing whitespace");
}

#[test]
fn ports_are_checked() {
    let pod = defaulted(json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [
        {"containerPort": 0}, {"containerPort": 70000, "name": "HTTP"}, {"containerPort": 80, "name": "web", "protocol": "HTTP"},
        {"containerPort": 81, "name": "web", "hostPort": 8080}, {"containerPort": 82, "hostPort": 8080}]}]}}));
    let c = validate_pod(&pod);
    assert_eq!(
        fields(&c),
        [
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].ports[1].name",
            "spec.containers[0].ports[1].name",
            "spec.containers[0].ports[1].containerPort",
            "spec.containers[0].ports[2].protocol",
            "spec.containers[0].ports[3].name",
            "spec.containers[0].ports[4].hostPort",
        ]
    );
    assert_eq!(c[3].message, "Invalid value: 70000: must be between 1 and 65535, inclusive");
    assert_eq!(c[4].message, "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
    assert_eq!(c[6].message, "Duplicate value: \"8080/TCP\"");
    let host = defaulted(json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}));
    assert_eq!(validate_pod(&host)[0].message, "Invalid value: 80: must match `hostPort` when `hostNetwork` is true");
}

#[test]
fn resources_are_quantities_with_requests_within_limits() {
    let pod = |res: Value| defaulted(json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": res}]}}));
    assert!(
        validate_pod(&pod(json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}))).is_empty()
    );
    let c = validate_pod(&pod(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})));
    assert_eq!(fields(&c), ["spec.containers[0].resources.requests"]);
    assert_eq!(c[0].message, "Invalid value: \"2\": must be less than or equal to cpu limit of 1");
    // A pod's requests are defaulted from its limits, so their faults show twice, as in Kubernetes.
    let c = validate_pod(&pod(json!({"limits": {"cpu": "-1", "gpu": "1", "memory": "lots"}})));
    let limits = "spec.containers[0].resources.limits";
    let requests = "spec.containers[0].resources.requests";
    assert_eq!(
        fields(&c),
        [
            format!("{limits}[cpu]"),
            format!("{limits}[gpu]"),
            format!("{limits}[memory]"),
            format!("{requests}[cpu]"),
            format!("{requests}[gpu]"),
            format!("{requests}[memory]")
        ]
    );
    assert_eq!(c[0].message, "Invalid value: \"-1\": must be greater than or equal to 0");
    assert_eq!(c[1].message, "Invalid value: \"gpu\": must be a standard resource for containers");
    assert!(c[2].message.contains("quantities must match the regular expression"));
    // Extended resources need a limit equal to the request.
    let mut template = json!({"spec": {"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"example.com/gpu": "1"}}}]}});
    default_template(&mut template);
    let c = validate_template(&template, "spec.template");
    assert_eq!(c[0].message, "Required value: Limit must be set for non overcommitable resources");
    let c = validate_pod(&pod(json!({"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "2"}})));
    assert_eq!(c[0].message, "Invalid value: \"1\": must be equal to example.com/gpu limit of 2");
}

#[test]
fn env_and_env_from() {
    let pod = defaulted(json!({"spec": {"containers": [{"name": "c", "image": "x", "env": [
        {"name": "GOOD", "value": "1"}, {"name": "A=B"}, {"value": "x"},
        {"name": "X", "valueFrom": {}},
        {"name": "Y", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "cm"}}},
        {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}},
        {"name": "R", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}],
        "envFrom": [{"prefix": "P_", "configMapRef": {"name": "cm"}}, {}]}]}}));
    let c = validate_pod(&pod);
    let p = "spec.containers[0]";
    assert_eq!(
        fields(&c),
        [
            format!("{p}.env[1].name"),
            format!("{p}.env[2].name"),
            format!("{p}.env[3].valueFrom"),
            format!("{p}.env[4].valueFrom"),
            format!("{p}.env[5].valueFrom.configMapKeyRef.key"),
            format!("{p}.env[7].valueFrom.fieldRef.fieldPath"),
            format!("{p}.env[8].valueFrom.resourceFieldRef.resource"),
            format!("{p}.envFrom[1]"),
        ]
    );
    assert_eq!(c[0].message, format!("Invalid value: \"A=B\": {RELAXED_ENV_NAME}"));
    assert_eq!(
        c[2].message,
        "Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
    );
    assert_eq!(c[3].message, "Invalid value: \"\": may not be specified when `value` is not empty");
    assert!(c[5].message.starts_with("Unsupported value: \"spec.containers\": supported values: \"metadata.name\""));
}

#[test]
fn volumes_and_mounts() {
    let pod = defaulted(json!({"spec": {"containers": [{"name": "c", "image": "x", "volumeMounts": [
        {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "missing", "mountPath": "/etc/cfg"},
        {"name": "cfg", "mountPath": "/x", "subPath": "../up"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "app", "defaultMode": 1000,
            "items": [{"key": "a", "path": "/abs"}]}},
            {"name": "cfg", "emptyDir": {}},
            {"name": "two", "emptyDir": {}, "hostPath": {"path": "/var"}},
            {"name": "secret", "secret": {}}]}}));
    let c = validate_pod(&pod);
    assert_eq!(
        fields(&c),
        [
            "spec.volumes[0].configMap.defaultMode",
            "spec.volumes[0].configMap.items[0].path",
            "spec.volumes[1].name",
            "spec.volumes[2].hostPath",
            "spec.volumes[3].secret.secretName",
            "spec.containers[0].volumeMounts[1].name",
            "spec.containers[0].volumeMounts[1].mountPath",
            "spec.containers[0].volumeMounts[2].subPath",
        ]
    );
    assert_eq!(c[0].message, "Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive");
    assert_eq!(c[1].message, "Invalid value: \"/abs\": must be a relative path");
    assert_eq!(c[3].message, "Forbidden: may not specify more than 1 volume type");
    assert_eq!(c[5].message, "Not found: \"missing\"");
    assert_eq!(c[6].message, "Invalid value: \"/etc/cfg\": must be unique");
    assert_eq!(c[7].message, "Invalid value: \"../up\": must not contain '..'");
}

#[test]
fn probes_and_container_restart_policies() {
    let pod = defaulted(json!({"spec": {
        "initContainers": [{"name": "init", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "sidecar", "image": "x", "restartPolicy": "Always", "startupProbe": {"tcpSocket": {"port": 8080}}},
            {"name": "bad", "image": "x", "restartPolicy": "Never"}],
        "containers": [{"name": "c", "image": "x", "restartPolicy": "Always",
            "livenessProbe": {"successThreshold": 2},
            "readinessProbe": {"exec": {"command": ["x"]}, "httpGet": {"port": 0}}}]}}));
    let c = validate_pod(&pod);
    assert_eq!(
        fields(&c),
        [
            "spec.initContainers[0].readinessProbe",
            "spec.initContainers[2].restartPolicy",
            "spec.containers[0].restartPolicy",
            "spec.containers[0].livenessProbe",
            "spec.containers[0].livenessProbe.successThreshold",
            "spec.containers[0].readinessProbe.httpGet",
            "spec.containers[0].readinessProbe.httpGet.port",
        ]
    );
    assert_eq!(c[0].message, "Forbidden: may not be set for init containers without restartPolicy=Always");
    assert_eq!(c[2].message, "Forbidden: may not be set for non-init containers");
    assert_eq!(c[3].message, "Required value: must specify a handler type");
    assert_eq!(c[5].message, "Forbidden: may not specify more than 1 handler type");
}

#[test]
fn spec_level_fields() {
    let mut pod = defaulted(nginx_pod());
    let spec = pod["spec"].as_object_mut().unwrap();
    spec.insert("restartPolicy".into(), json!("Sometimes"));
    spec.insert("dnsPolicy".into(), json!("None"));
    spec.insert("nodeSelector".into(), json!({"disk": "fast ssd"}));
    spec.insert("activeDeadlineSeconds".into(), json!(0));
    spec.insert("hostname".into(), json!("My.Host"));
    spec.insert("securityContext".into(), json!({"runAsUser": -1}));
    spec.insert(
        "ephemeralContainers".into(),
        json!([{"name": "debug", "image": "busybox",
        "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]),
    );
    let c = validate_pod(&pod);
    assert_eq!(
        fields(&c),
        [
            "spec.restartPolicy",
            "spec.dnsConfig",
            "spec.nodeSelector[disk]",
            "spec.hostname",
            "spec.activeDeadlineSeconds",
            "spec.securityContext.runAsUser",
            "spec.ephemeralContainers",
        ]
    );
    assert_eq!(
        c[0].message,
        "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\""
    );
    assert_eq!(c[1].message, "Required value: must provide `dnsConfig` when `dnsPolicy` is None");
    assert_eq!(c[4].message, "Invalid value: 0: must be between 1 and 4294967295, inclusive");
    assert_eq!(c[6].message, "Forbidden: cannot be set on create");
}

#[test]
fn tolerations_are_checked() {
    let pod = defaulted(json!({"spec": {"containers": [{"name": "c", "image": "x"}], "tolerations": [
        {"key": "a", "operator": "Exists", "value": "v"},
        {"operator": "Equal", "value": "v"},
        {"key": "b", "operator": "Equal", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 10},
        {"key": "c", "operator": "Like"},
        {"key": "d", "effect": "Never"}]}}));
    let c = validate_pod(&pod);
    assert_eq!(
        fields(&c),
        [
            "spec.tolerations[0].operator",
            "spec.tolerations[1].operator",
            "spec.tolerations[2].effect",
            "spec.tolerations[3].operator",
            "spec.tolerations[4].effect"
        ]
    );
    assert!(c[0].message.ends_with("value must be empty when `operator` is 'Exists'"));
    assert_eq!(
        c[1].message,
        "Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""
    );
    assert_eq!(
        c[2].message,
        "Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
    );
}

#[test]
fn pod_updates_may_change_images_deadline_and_add_tolerations() {
    let old = defaulted(nginx_pod());
    assert!(validate_pod_update(&old, &old).is_empty());
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    new["spec"]["activeDeadlineSeconds"] = json!(600);
    new["spec"]["tolerations"].as_array_mut().unwrap().push(json!({"key": "gpu", "operator": "Exists"}));
    assert_eq!(validate_pod_update(&old, &new), vec![]);

    let mut more = new.clone();
    more["spec"]["activeDeadlineSeconds"] = json!(700);
    let c = validate_pod_update(&new, &more);
    assert_eq!(c[0].message, "Invalid value: 700: must be less than or equal to previous value");
    let mut unset = new.clone();
    unset["spec"].as_object_mut().unwrap().remove("activeDeadlineSeconds");
    assert_eq!(
        validate_pod_update(&new, &unset)[0].message,
        "Invalid value: null: must not update from a positive integer to nil value"
    );

    let mut removed = old.clone();
    removed["spec"]["tolerations"] = json!([]);
    let c = validate_pod_update(&old, &removed);
    assert_eq!(fields(&c), ["spec.tolerations"]);
    let mut shorter = old.clone();
    shorter["spec"]["tolerations"][0]["tolerationSeconds"] = json!(60);
    assert!(validate_pod_update(&old, &shorter).is_empty());

    let mut ports = old.clone();
    ports["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
    let c = validate_pod_update(&old, &ports);
    assert_eq!(fields(&c), ["spec"]);
    assert_eq!(c[0].kind, CauseType::Forbidden);
    assert!(c[0]
        .message
        .starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`"));
    assert!(c[0].message.ends_with("changed: spec.containers[0].ports[0].containerPort"), "{}", c[0].message);
}

#[test]
fn service_account_admission_mounts_the_token_volume_unless_told_not_to() {
    let mut pod = json!({"spec": {
        "initContainers": [{"name": "init", "image": "x"}],
        "containers": [
            {"name": "app", "image": "x"},
            {"name": "own", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": SERVICE_ACCOUNT_DIR}]},
        ],
    }});
    mount_service_account_token(&mut pod, "abcde", true);
    assert_eq!(pod["spec"]["volumes"][0]["name"], "kube-api-access-abcde");
    let sources = &pod["spec"]["volumes"][0]["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"], json!({"expirationSeconds": 3607, "path": "token"}));
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"], "metadata.namespace");
    let mount = json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": SERVICE_ACCOUNT_DIR});
    assert_eq!(pod["spec"]["initContainers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(pod["spec"]["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(pod["spec"]["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1, "its own mount stays");
    assert!(validate_pod(&pod).iter().all(|c| !c.field.starts_with("spec.volumes")), "{:?}", validate_pod(&pod));

    for (pod_says, account_says) in [(Some(false), true), (None, false)] {
        let mut pod = json!({"spec": {"containers": [{"name": "app", "image": "x"}]}});
        if let Some(v) = pod_says {
            pod["spec"]["automountServiceAccountToken"] = json!(v);
        }
        mount_service_account_token(&mut pod, "abcde", account_says);
        assert!(pod["spec"].get("volumes").is_none(), "{pod}");
    }
    let mut pod =
        json!({"spec": {"automountServiceAccountToken": true, "containers": [{"name": "app", "image": "x"}]}});
    mount_service_account_token(&mut pod, "abcde", false);
    assert!(pod["spec"]["volumes"].is_array(), "the pod's say wins over its account's");
}
