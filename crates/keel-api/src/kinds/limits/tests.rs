use serde_json::{json, Value};

use super::*;

fn range(limits: Value) -> Value {
    let mut r = json!({"metadata": {"name": "limits"}, "spec": {"limits": limits}});
    default_limit_range(&mut r);
    r
}

fn messages(causes: &[Cause]) -> Vec<String> {
    causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
}

#[test]
fn container_items_default_their_limits_and_requests() {
    let r = range(
        json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}, "default": {"memory": "256Mi"}}]),
    );
    assert_eq!(
        r["spec"]["limits"][0],
        json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"},
               "default": {"cpu": "2", "memory": "256Mi"}, "defaultRequest": {"cpu": "2", "memory": "256Mi"}})
    );
    let pod_item = range(json!([{"type": "Pod", "max": {"cpu": "2"}}]));
    assert_eq!(pod_item["spec"]["limits"][0], json!({"type": "Pod", "max": {"cpu": "2"}}));
}

#[test]
fn limit_ranges_are_validated_in_kubes_words() {
    let bad = range(json!([
        {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"memory": "500m"}},
        {"type": "Pod", "default": {"cpu": "1"}},
        {"type": "Container"},
        {"type": "PersistentVolumeClaim", "max": {"cpu": "x"}}
    ]));
    let m = messages(&validate_limit_range(&bad));
    assert!(
        m.contains(
            &"spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1".to_string()
        ),
        "{m:?}"
    );
    assert!(
        m.contains(
            &"spec.limits[0].maxLimitRequestRatio[memory]: Invalid value: \"500m\": ratio 500m is less than 1"
                .to_string()
        ),
        "{m:?}"
    );
    assert!(
        m.contains(&"spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'".to_string()),
        "{m:?}"
    );
    assert!(m.contains(&"spec.limits[2].type: Duplicate value: \"Container\"".to_string()), "{m:?}");
    assert!(m.iter().any(|l| l.starts_with("spec.limits[3].max[cpu]: Invalid value: \"x\"")), "{m:?}");
    assert!(m.iter().any(|l| l.contains("either minimum or maximum storage value is required")), "{m:?}");
    let good = range(
        json!([{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}}]),
    );
    assert_eq!(messages(&validate_limit_range(&good)), Vec::<String>::new());
}

fn pod(resources: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x", "resources": resources}]}})
}

#[test]
fn a_pod_without_requests_gets_the_defaults_and_kubes_annotation() {
    let r = range(
        json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m"}}]),
    );
    let mut p = pod(json!({"limits": {"memory": "64Mi"}}));
    limit_pod(&mut p, &[r]).unwrap();
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}})
    );
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu limit for container app"
    );
}

#[test]
fn min_max_and_ratios_refuse_in_kubes_words() {
    let r = range(
        json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}, "maxLimitRequestRatio": {"memory": "2"}}]),
    );
    let mut over = pod(json!({"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "50m", "memory": "256Mi"}}));
    let err = limit_pod(&mut over, std::slice::from_ref(&r)).unwrap_err();
    assert_eq!(
        err,
        "[minimum cpu usage per Container is 100m, but request is 50m, maximum cpu usage per Container is 1, but limit is 2, memory max limit to request ratio per Container is 2, but provided ratio is 4.000000]"
    );
    let mut no_limit = pod(json!({"requests": {"memory": "1Gi"}}));
    let pods = range(json!([{"type": "Pod", "max": {"memory": "2Gi"}}]));
    assert_eq!(
        limit_pod(&mut no_limit, &[pods]).unwrap_err(),
        "maximum memory usage per Pod is 2Gi.  No limit is specified"
    );
    let mut fine = pod(json!({"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}));
    assert_eq!(limit_pod(&mut fine, &[r]), Ok(()), "max's default limit and request fill in: {fine}");
    assert_eq!(fine["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
}

#[test]
fn claims_stay_within_their_storage_bounds() {
    let r = range(json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
    let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
    assert_eq!(limit_claim(&claim("5Gi"), std::slice::from_ref(&r)), Ok(()));
    assert_eq!(
        limit_claim(&claim("20Gi"), std::slice::from_ref(&r)).unwrap_err(),
        "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
    );
    assert_eq!(
        limit_claim(&claim("500Mi"), &[r]).unwrap_err(),
        "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
    );
}

#[test]
fn quotas_are_validated_in_kubes_words() {
    let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1.5", "requests.cpu": "-1", "services": "2"},
        "scopes": ["BestEffort", "NotBestEffort"]}});
    let m = messages(&validate_quota(&q));
    assert!(m.contains(&"spec.hard[pods]: Invalid value: \"1.5\": must be an integer".to_string()), "{m:?}");
    assert!(
        m.contains(&"spec.hard[requests.cpu]: Invalid value: \"-1\": must be greater than or equal to 0".to_string()),
        "{m:?}"
    );
    assert!(m.iter().any(|l| l.ends_with("conflicting scopes")), "{m:?}");
    assert!(
        m.contains(
            &"spec.hard[services]: Invalid value: \"services\": unsupported scope applied to resource".to_string()
        ),
        "{m:?}"
    );
    let good = json!({"spec": {"hard": {"pods": "10", "requests.memory": "1Gi", "count/deployments.apps": "2"}}});
    assert_eq!(messages(&validate_quota(&good)), Vec::<String>::new());
}
