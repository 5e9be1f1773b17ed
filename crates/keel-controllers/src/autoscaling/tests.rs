//! Cases from kube-controller-manager's `replica_calculator_test.go` and `horizontal_test.go`, and the
//! behavior rules' arithmetic.

use super::*;

fn now() -> Timestamp {
    "2026-01-01T00:10:00Z".parse().unwrap()
}

fn ago(seconds: i64) -> Timestamp {
    now() - SignedDuration::from_secs(seconds)
}

/// A Running pod started long ago, Ready since long ago, requesting `request` millicores of CPU in one
/// container.
fn pod(name: &str, request: Option<i64>) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Running", "startTime": ago(3600).to_string(),
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ago(3500).to_string()}]},
    });
    if let Some(r) = request {
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": format!("{r}m"), "memory": "64Mi"}});
    }
    serde_json::from_value(p).unwrap()
}

/// Started a minute ago and never Ready since.
fn unready(mut p: Pod) -> Pod {
    let status = p.status.as_mut().unwrap();
    status.start_time = Some(Time(ago(60)));
    let ready = &mut status.conditions.as_mut().unwrap()[0];
    ready.status = "False".into();
    ready.last_transition_time = Some(Time(ago(60)));
    p
}

#[test]
fn a_pod_that_was_ready_once_counts_after_the_initialization_period() {
    let mut was_ready = pod("a", Some(1000));
    was_ready.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    let pods = [was_ready, pod("b", Some(1000)), pod("c", Some(1000))];
    let m = metrics(&[("a", 300), ("b", 500), ("c", 700)]);
    assert_eq!(resource_replicas(3, 30, "cpu", None, &pods, &m, now(), &t()), Ok((5, 50, 500)));
}

fn metrics(values: &[(&str, i64)]) -> PodMetrics {
    values
        .iter()
        .map(|(n, v)| {
            (n.to_string(), PodMetric { value: *v, timestamp: ago(10), window: SignedDuration::from_secs(30) })
        })
        .collect()
}

fn t() -> Tunables {
    Tunables::default()
}

#[test]
fn scale_up_by_utilization() {
    let pods = [pod("a", Some(1000)), pod("b", Some(1000)), pod("c", Some(1000))];
    let m = metrics(&[("a", 300), ("b", 500), ("c", 700)]);
    assert_eq!(resource_replicas(3, 30, "cpu", None, &pods, &m, now(), &t()), Ok((5, 50, 500)));
}

#[test]
fn scale_up_with_an_unready_pod_counts_it_as_using_nothing() {
    let pods = [unready(pod("a", Some(1000))), pod("b", Some(1000)), pod("c", Some(1000))];
    let m = metrics(&[("a", 300), ("b", 500), ("c", 700)]);
    assert_eq!(resource_replicas(3, 30, "cpu", None, &pods, &m, now(), &t()), Ok((4, 60, 600)));
}

#[test]
fn a_pending_or_young_pod_is_unready_for_cpu_but_not_for_memory() {
    let mut pending = pod("a", Some(1000));
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    let mut young = pod("b", Some(1000));
    // Started a minute ago, Ready 5 s ago: its sample (10 s ago) predates readiness plus the window.
    young.status.as_mut().unwrap().start_time = Some(Time(ago(60)));
    young.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time = Some(Time(ago(5)));
    let pods = [pending, young, pod("c", Some(1000))];
    let m = metrics(&[("a", 900), ("b", 900), ("c", 900)]);
    // Only c counts: 90% of 50% → 1.8 → with a and b at 0: 30% → direction turned → no change.
    assert_eq!(resource_replicas(3, 50, "cpu", None, &pods, &m, now(), &t()), Ok((3, 90, 900)));
    // For memory the young pod counts (the pending one still does not).
    let twice_the_request = 2 * (64 << 20) * 1000;
    let memory = metrics(&[("a", 0), ("b", twice_the_request), ("c", twice_the_request)]);
    let (replicas, utilization, _) = resource_replicas(3, 100, "memory", None, &pods, &memory, now(), &t()).unwrap();
    assert_eq!(utilization, 200);
    assert_eq!(replicas, 4, "two at 200% of the request, the pending one at 0: ceil(1.333 × 3)");
}

#[test]
fn scale_down_by_utilization() {
    let pods: Vec<Pod> = ["a", "b", "c", "d", "e"].iter().map(|n| pod(n, Some(1000))).collect();
    let m = metrics(&[("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)]);
    assert_eq!(resource_replicas(5, 50, "cpu", None, &pods, &m, now(), &t()), Ok((3, 28, 280)));
}

#[test]
fn within_tolerance_nothing_changes() {
    let pods = [pod("a", Some(900)), pod("b", Some(1000)), pod("c", Some(1100))];
    let m = metrics(&[("a", 1010), ("b", 1030), ("c", 1020)]);
    assert_eq!(resource_replicas(3, 100, "cpu", None, &pods, &m, now(), &t()), Ok((3, 102, 1020)));
}

#[test]
fn missing_metrics_count_as_the_request_on_a_scale_down_and_nothing_on_a_scale_up() {
    let pods = [pod("a", Some(1000)), pod("b", Some(1000))];
    // 40% of a 100% target: b counted at 100% → 70% → ceil(0.7 × 2) = 2: no change.
    assert_eq!(resource_replicas(2, 100, "cpu", None, &pods, &metrics(&[("a", 400)]), now(), &t()), Ok((2, 40, 400)));
    // 200% of a 100% target: b counted at 0 → 100%: within tolerance, no change.
    assert_eq!(
        resource_replicas(2, 100, "cpu", None, &pods, &metrics(&[("a", 2000)]), now(), &t()),
        Ok((2, 200, 2000))
    );
    // 300%: b at 0 → 150% → 3.
    assert_eq!(
        resource_replicas(2, 100, "cpu", None, &pods, &metrics(&[("a", 3000)]), now(), &t()),
        Ok((3, 300, 3000))
    );
}

#[test]
fn deleted_and_failed_pods_are_ignored() {
    let mut deleted = pod("a", Some(1000));
    deleted.metadata.deletion_timestamp = Some(Time(ago(1)));
    let mut failed = pod("b", Some(1000));
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    let pods = [deleted, failed, pod("c", Some(1000))];
    let m = metrics(&[("a", 100), ("b", 100), ("c", 1000)]);
    assert_eq!(resource_replicas(3, 50, "cpu", None, &pods, &m, now(), &t()), Ok((2, 100, 1000)));
}

#[test]
fn errors_in_kubes_words() {
    let m = metrics(&[("a", 100)]);
    assert_eq!(
        resource_replicas(1, 50, "cpu", None, &[], &m, now(), &t()),
        Err("no pods returned by selector while calculating replica count".into())
    );
    assert_eq!(
        resource_replicas(1, 50, "cpu", None, &[pod("a", None)], &m, now(), &t()),
        Err("missing request for cpu in container app of Pod a".into())
    );
    assert_eq!(
        resource_replicas(1, 50, "cpu", None, &[unready(pod("a", Some(1)))], &m, now(), &t()),
        Err("did not receive metrics for targeted pods (pods might be unready)".into())
    );
}

#[test]
fn average_value_targets() {
    let pods = [pod("a", None), pod("b", None), pod("c", None)];
    let m = metrics(&[("a", 300), ("b", 500), ("c", 700)]);
    // Average 500m against 250m: ratio 2 → 6.
    assert_eq!(raw_resource_replicas(3, 250, "cpu", &pods, &m, now(), &t()), Ok((6, 500)));
    assert_eq!(raw_resource_replicas(3, 480, "cpu", &pods, &m, now(), &t()), Ok((3, 500)));
    // A missing pod counts as the target on a scale down: (100 + 1000) / 2 = 550 of 1000 → ceil(1.1) = 2.
    let two = [pod("a", None), pod("b", None)];
    assert_eq!(raw_resource_replicas(2, 1000, "cpu", &two, &metrics(&[("a", 100)]), now(), &t()), Ok((2, 100)));
}

#[test]
fn pod_metrics_are_read_from_the_metrics_api() {
    let list = json!({"kind": "PodMetricsList", "items": [
        {"metadata": {"name": "a"}, "timestamp": "2026-01-01T00:09:50Z", "window": "10.5s",
         "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "10Mi"}},
                        {"name": "side", "usage": {"cpu": "1500u", "memory": "1Mi"}}]},
        {"metadata": {"name": "b"}, "timestamp": "2026-01-01T00:09:51Z", "window": "1m0s",
         "containers": [{"name": "app", "usage": {"memory": "10Mi"}}]},
    ]});
    let (m, first) = resource_metrics(&list, "cpu", None).unwrap();
    assert_eq!(first, "2026-01-01T00:09:50Z".parse().unwrap());
    assert_eq!(m.len(), 1, "b has no CPU figure");
    assert_eq!(m["a"].value, 252, "250m + 1.5m, rounded up");
    assert_eq!(m["a"].window, SignedDuration::from_millis(10_500));
    assert_eq!(resource_metrics(&list, "memory", Some("side")).unwrap().0["a"].value, (1 << 20) * 1000);
    assert_eq!(resource_metrics(&list, "memory", Some("side")).unwrap().0.len(), 1, "b has no side container");
    assert_eq!(
        resource_metrics(&json!({"items": []}), "cpu", None),
        Err("no metrics returned from resource metrics API".into())
    );
    assert_eq!(parse_go_duration("1h2m3.5s"), Some(SignedDuration::from_millis(3_723_500)));
}

fn behavior_of(v: Value) -> Behavior {
    let b: HorizontalPodAutoscalerBehavior = serde_json::from_value(v).unwrap();
    behavior(Some(&b)).unwrap()
}

#[test]
fn behavior_defaults_are_the_apis() {
    let b = behavior_of(json!({}));
    assert_eq!(b.up.window_seconds, 0);
    assert_eq!(b.down.window_seconds, 300);
    assert_eq!(b.up.policies.len(), 2);
    assert_eq!(b.down.policies, vec![Policy { percent: true, value: 100, period_seconds: 15 }]);
    assert_eq!(behavior(None), None);
}

fn reasons(n: &Normalized) -> Vec<(&str, bool, &str)> {
    n.conditions.iter().map(|c| (c.type_, c.status, c.reason.as_str())).collect()
}

#[test]
fn scale_up_policies_limit_the_rate_by_select_policy() {
    let policies = json!([{"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 100, "periodSeconds": 60}]);
    for (select, expected) in [("Max", 10), ("Min", 9), ("Disabled", 5)] {
        let b = behavior_of(json!({"scaleUp": {"selectPolicy": select, "policies": policies}}));
        let n = normalize_with_behavior(&mut Memory::default(), &b, 5, 20, 1, 100, now());
        assert_eq!(n.replicas, expected, "{select}");
        assert_eq!(reasons(&n)[1], ("ScalingLimited", true, "ScaleUpLimit"), "{select}");
    }
    // Under the limit and the maximum: within range.
    let b = behavior_of(json!({"scaleUp": {"policies": policies}}));
    let n = normalize_with_behavior(&mut Memory::default(), &b, 5, 7, 1, 100, now());
    assert_eq!((n.replicas, reasons(&n)[1]), (7, ("ScalingLimited", false, "DesiredWithinRange")));
    // Above the maximum: TooManyReplicas.
    let n = normalize_with_behavior(&mut Memory::default(), &b, 5, 9, 1, 8, now());
    assert_eq!((n.replicas, reasons(&n)[1]), (8, ("ScalingLimited", true, "TooManyReplicas")));
}

#[test]
fn scale_events_in_the_period_move_the_policies_start() {
    let b = behavior_of(json!({
        "scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
        "scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]},
    }));
    let mut memory = Memory::default();
    // Scaled up 5 → 7 thirty seconds ago: the period started at 5, so 7 is as far as it goes.
    record_rescale(&mut memory, Some(&b), 5, 7, ago(30));
    let n = normalize_with_behavior(&mut memory, &b, 7, 10, 1, 100, now());
    assert_eq!(n.replicas, 7);
    // Down: the period started at 7 + 0 … scaled down 12 → 10 a while ago: start 12, half is 6.
    let mut memory = Memory::default();
    record_rescale(&mut memory, Some(&b), 12, 10, ago(20));
    let n = normalize_with_behavior(&mut memory, &b, 10, 1, 1, 100, now());
    assert_eq!((n.replicas, reasons(&n)[1]), (6, ("ScalingLimited", true, "ScaleDownLimit")));
    // Events older than the longest period are outdated and replaced.
    record_rescale(&mut memory, Some(&b), 10, 6, now());
    record_rescale(&mut memory, Some(&b), 6, 3, now() + SignedDuration::from_secs(120));
    assert_eq!(memory.down_events.len(), 2);
    assert!(memory.down_events.iter().all(|e| e.change == 4 || e.change == 3));
}

#[test]
fn stabilization_windows_keep_the_extreme_recent_recommendation() {
    let b = behavior_of(json!({"scaleUp": {"stabilizationWindowSeconds": 60}}));
    let mut memory = Memory {
        recommendations: vec![
            Recommendation { replicas: 5, at: ago(10) },
            Recommendation { replicas: 8, at: ago(100) },
            Recommendation { replicas: 9, at: ago(400) },
        ],
        ..Default::default()
    };
    // Down: the highest of the last 300 s is 8.
    let n = normalize_with_behavior(&mut memory, &b, 10, 4, 1, 100, now());
    assert_eq!(n.replicas, 8);
    assert_eq!(reasons(&n)[0], ("AbleToScale", true, "ScaleDownStabilized"));
    assert_eq!(memory.recommendations.len(), 3, "the sample older than both windows was replaced");
    // Up: the lowest of the last 60 s (5, 4 just now) keeps it at the current 6.
    let n = normalize_with_behavior(&mut memory, &b, 6, 12, 1, 100, now());
    assert_eq!(n.replicas, 6);
    assert_eq!(reasons(&n)[0], ("AbleToScale", true, "ScaleUpStabilized"));
}

#[test]
fn without_behavior_kubes_older_rules() {
    let t = t();
    let mut memory = Memory::default();
    let n = normalize(&mut memory, 3, 10, 1, 20, now(), &t);
    assert_eq!((n.replicas, reasons(&n)[1]), (6, ("ScalingLimited", true, "ScaleUpLimit")));
    let n = normalize(&mut Memory::default(), 1, 10, 1, 20, now(), &t);
    assert_eq!(n.replicas, 4);
    let n = normalize(&mut Memory::default(), 3, 10, 1, 5, now(), &t);
    assert_eq!((n.replicas, reasons(&n)[1]), (5, ("ScalingLimited", true, "TooManyReplicas")));
    let n = normalize(&mut Memory::default(), 3, 0, 2, 5, now(), &t);
    assert_eq!((n.replicas, reasons(&n)[1]), (2, ("ScalingLimited", true, "TooFewReplicas")));
    // A scale down within 5 minutes of a higher recommendation is held there.
    let n = normalize(&mut memory, 6, 2, 1, 20, now() + SignedDuration::from_secs(60), &t);
    assert_eq!((n.replicas, reasons(&n)[0]), (10, ("AbleToScale", true, "ScaleDownStabilized")));
    let n = normalize(&mut memory, 6, 2, 1, 20, now() + SignedDuration::from_secs(400), &t);
    assert_eq!(n.replicas, 2);
}

fn hpa(spec: Value) -> HorizontalPodAutoscaler {
    serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})).unwrap()
}

fn cpu_hpa(min: i32, max: i32) -> HorizontalPodAutoscaler {
    hpa(json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": min, "maxReplicas": max,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}))
}

fn metrics_list(values: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = values
        .iter()
        .map(|(n, cpu)| {
            json!({"metadata": {"name": n}, "timestamp": ago(10).to_string(), "window": "15s",
            "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": "1Mi"}}]})
        })
        .collect();
    json!({"items": items})
}

#[test]
fn a_pass_scales_up_with_kubes_reason_status_and_conditions() {
    let pods = [pod("a", Some(200)), pod("b", Some(200))];
    let list = metrics_list(&[("a", "200m"), ("b", "200m")]);
    let target = Target { replicas: 2, selector: "app=web".into() };
    let mut memory = Memory::default();
    let d = decide(&cpu_hpa(1, 5), &target, &pods, Ok(&list), &mut memory, now(), &t());
    assert!(d.rescale());
    assert_eq!(d.desired, 4);
    assert_eq!(d.reason, "cpu resource utilization (percentage of request) above target");
    let (_, note) = rescaled(d.desired, &d.reason, None);
    assert_eq!(note.message, "New size: 4; reason: cpu resource utilization (percentage of request) above target");
    assert_eq!(note.reason, "SuccessfulRescale");
    let status = serde_json::to_value(&d.metrics[0]).unwrap();
    assert_eq!(
        status,
        json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "200m", "averageUtilization": 100}}})
    );
    let types: Vec<(&str, bool, &str)> = d.conditions.iter().map(|c| (c.type_, c.status, c.reason.as_str())).collect();
    assert_eq!(
        types,
        [
            ("AbleToScale", true, "SucceededGetScale"),
            ("ScalingActive", true, "ValidMetricFound"),
            ("AbleToScale", true, "ReadyForNewScale"),
            ("ScalingLimited", false, "DesiredWithinRange"),
        ]
    );
    // As the status keeps them: one per type, the last word wins.
    let s = status_of(&d);
    let conditions = s.conditions.unwrap();
    assert_eq!(conditions.len(), 3);
    assert_eq!(conditions[0].reason.as_deref(), Some("ReadyForNewScale"));
    assert_eq!(s.current_replicas, Some(2));
    assert_eq!(s.desired_replicas, 4);
}

fn status_of(d: &Decision) -> HorizontalPodAutoscalerStatus {
    status(None, d.current, d.desired, d.metrics.clone(), &d.conditions, d.rescale(), now())
}

#[test]
fn a_pass_scales_down_when_all_metrics_are_below_target() {
    let pods = [pod("a", Some(200)), pod("b", Some(200)), pod("c", Some(200))];
    let list = metrics_list(&[("a", "10m"), ("b", "0"), ("c", "20m")]);
    let target = Target { replicas: 3, selector: "app=web".into() };
    let mut h = cpu_hpa(1, 5);
    h.spec.as_mut().unwrap().behavior =
        Some(serde_json::from_value(json!({"scaleDown": {"stabilizationWindowSeconds": 0}})).unwrap());
    let d = decide(&h, &target, &pods, Ok(&list), &mut Memory::default(), now(), &t());
    assert_eq!((d.desired, d.reason.as_str()), (1, "All metrics below target"));
}

#[test]
fn limits_zero_replicas_and_metric_failures() {
    let pods = [pod("a", Some(200))];
    let list = metrics_list(&[("a", "100m")]);
    // Outside min/max: straight there, without metrics.
    let d = decide(
        &cpu_hpa(2, 5),
        &Target { replicas: 1, selector: "a=b".into() },
        &pods,
        Ok(&list),
        &mut Memory::default(),
        now(),
        &t(),
    );
    assert_eq!((d.desired, d.reason.as_str()), (2, "Current number of replicas below Spec.MinReplicas"));
    let d = decide(
        &cpu_hpa(1, 5),
        &Target { replicas: 7, selector: "a=b".into() },
        &pods,
        Ok(&list),
        &mut Memory::default(),
        now(),
        &t(),
    );
    assert_eq!((d.desired, d.reason.as_str()), (5, "Current number of replicas above Spec.MaxReplicas"));
    // Scaled to zero by hand: the autoscaler stands aside.
    let d = decide(
        &cpu_hpa(1, 5),
        &Target { replicas: 0, selector: "a=b".into() },
        &pods,
        Ok(&list),
        &mut Memory::default(),
        now(),
        &t(),
    );
    assert_eq!(d.desired, 0);
    assert!(!d.rescale());
    assert_eq!(d.conditions[1].reason, "ScalingDisabled");
    // No metrics: ScalingActive False, kube's messages, no change.
    let target = Target { replicas: 1, selector: "a=b".into() };
    let d = decide(
        &cpu_hpa(1, 5),
        &target,
        &pods,
        Err("the server is currently unable to handle the request".into()),
        &mut Memory::default(),
        now(),
        &t(),
    );
    assert!(!d.rescale());
    let active = &d.conditions[1];
    assert_eq!(
        (active.type_, active.status, active.reason.as_str()),
        ("ScalingActive", false, "FailedGetResourceMetric")
    );
    assert_eq!(
        active.message,
        "the HPA was unable to compute the replica count: unable to get metrics for resource cpu: the server is currently unable to handle the request"
    );
    let reasons: Vec<&str> = d.notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, ["FailedGetResourceMetric", "FailedComputeMetricsReplicas"]);
    assert!(d.notes[1]
        .message
        .starts_with("invalid metrics (1 invalid out of 1), first error is: unable to get metrics"));
    // A missing selector.
    let d = decide(
        &cpu_hpa(1, 5),
        &Target { replicas: 1, selector: String::new() },
        &pods,
        Ok(&list),
        &mut Memory::default(),
        now(),
        &t(),
    );
    assert_eq!(d.conditions[1].reason, "InvalidSelector");
    assert_eq!(d.notes[0].reason, "SelectorRequired");
}

#[test]
fn transition_times_move_only_with_the_status() {
    let mut conditions = Vec::new();
    set_conditions(&mut conditions, &[condition("ScalingActive", true, "ValidMetricFound", "m")], ago(100));
    set_conditions(&mut conditions, &[condition("ScalingActive", true, "ValidMetricFound", "m2")], ago(50));
    assert_eq!(conditions[0].last_transition_time, Some(Time(ago(100))));
    assert_eq!(conditions[0].message.as_deref(), Some("m2"));
    set_conditions(&mut conditions, &[condition("ScalingActive", false, "FailedGetResourceMetric", "x")], now());
    assert_eq!(conditions[0].last_transition_time, Some(Time(now())));
    let (c, note) = failed_get_scale("deployments.apps \"web\" not found");
    assert_eq!(
        c.message,
        "the HPA controller was unable to get the target's current scale: deployments.apps \"web\" not found"
    );
    assert_eq!(note.reason, "FailedGetScale");
}
