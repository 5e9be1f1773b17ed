//! The HorizontalPodAutoscaler's decision, pure, as kube-controller-manager's podautoscaler makes it
//! (`horizontal.go`, `replica_calculator.go`, `metrics/utilization.go`): the replicas each Resource or
//! ContainerResource metric asks for (Utilization of the pods' requests or AverageValue, tolerance 0.1;
//! pods deleted or failed ignored, pending or not yet ready ones — for CPU, within the initialization
//! period — counted as using nothing on a scale up, pods without metrics as using their request on a scale
//! down and nothing on a scale up, and no change when that would turn the direction), the largest of
//! them, then min/max replicas and the scaling rules: without `behavior`, the 5 minute downscale
//! stabilization and the scale-up limit of max(2×, 4); with it, each direction's stabilization window and
//! policies (Pods, Percent, per period, selectPolicy Max/Min/Disabled) over the scale events it remembers
//! ([`Memory`]). The status (current and desired replicas, current metrics, the AbleToScale, ScalingActive
//! and ScalingLimited conditions) and the events carry kube's reasons and messages. The clock is an input.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keel_api::quantity::Quantity;
use keel_api::resource_metrics::decimal_quantity;
use serde_json::{json, Value};

use crate::events::Note;

#[cfg(test)]
mod tests;

/// kube-controller-manager's `--horizontal-pod-autoscaler-*` settings.
#[derive(Debug, Clone, Copy)]
pub struct Tunables {
    pub tolerance: f64,
    pub cpu_initialization_period: SignedDuration,
    pub initial_readiness_delay: SignedDuration,
    /// The scale-down stabilization of autoscalers without `behavior`.
    pub downscale_stabilization: SignedDuration,
}

impl Default for Tunables {
    fn default() -> Tunables {
        Tunables {
            tolerance: 0.1,
            cpu_initialization_period: SignedDuration::from_mins(5),
            initial_readiness_delay: SignedDuration::from_secs(30),
            downscale_stabilization: SignedDuration::from_mins(5),
        }
    }
}

// ------------------------------------------------------------------------------------------ pod metrics

/// A pod's usage of a resource in thousandths (millicores, millibytes), as the metrics client gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

pub type PodMetrics = BTreeMap<String, PodMetric>;

/// The pods' usage of `resource` (summed over their containers, or of `container` alone) from a
/// `PodMetricsList`, and the first item's timestamp (kube's `GetResourceMetric`); a pod missing a figure
/// is left out.
pub fn resource_metrics(
    list: &Value,
    resource: &str,
    container: Option<&str>,
) -> Result<(PodMetrics, Timestamp), String> {
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = PodMetrics::new();
    for item in items {
        let containers = item["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut sum = 0i64;
        let mut missing = containers.is_empty();
        let mut found = container.is_none();
        for c in containers {
            if container.is_some_and(|name| c["name"] != name) {
                continue;
            }
            found = true;
            match c["usage"][resource].as_str().and_then(|q| Quantity::parse(q).ok()) {
                Some(q) => sum += q.milli_value(),
                None => {
                    missing = true;
                    break;
                }
            }
        }
        if missing || !found {
            continue;
        }
        let (Some(name), Some(timestamp)) =
            (item["metadata"]["name"].as_str(), item["timestamp"].as_str().and_then(|t| t.parse().ok()))
        else {
            continue;
        };
        let window = item["window"].as_str().and_then(parse_go_duration).unwrap_or(SignedDuration::ZERO);
        out.insert(name.to_string(), PodMetric { value: sum, timestamp, window });
    }
    let first = items[0]["timestamp"].as_str().and_then(|t| t.parse().ok()).unwrap_or(Timestamp::UNIX_EPOCH);
    Ok((out, first))
}

/// A Go duration (`15s`, `1m0.5s`, `250ms`).
fn parse_go_duration(s: &str) -> Option<SignedDuration> {
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[u..];
    }
    SignedDuration::try_from_secs_f64(total).ok()
}

// ------------------------------------------------------------------------------------- replica counts

fn ready_condition(pod: &Pod) -> Option<(bool, Timestamp)> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == "Ready")?;
    let at = c.last_transition_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    Some((c.status == "True", at))
}

/// The pods sorted as kube's `groupPods` sorts them: ready ones counted; unready (pending, or for CPU not
/// ready yet or measured before its readiness settled), missing (no metrics) and ignored (deleted,
/// failed) ones named.
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn group_pods(pods: &[Pod], metrics: &PodMetrics, resource: &str, now: Timestamp, t: &Tunables) -> Groups {
    let mut g = Groups { ready: 0, unready: BTreeSet::new(), missing: BTreeSet::new(), ignored: BTreeSet::new() };
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            g.ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            g.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
            let unready = match (ready_condition(pod), start) {
                (Some((ready, transition)), Some(start)) => {
                    if start + t.cpu_initialization_period > now {
                        !ready || metric.timestamp < transition + metric.window
                    } else {
                        !ready && start + t.initial_readiness_delay > transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(name);
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// Each pod's request of `resource` in thousandths (of `container` alone, if named); every container
/// counted must have one.
fn pod_requests(pods: &[Pod], resource: &str, container: Option<&str>) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut sum = 0;
        for c in pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default() {
            if container.is_some_and(|n| c.name != n) {
                continue;
            }
            let request = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource));
            match request.and_then(|q| Quantity::parse(&q.0).ok()) {
                Some(q) => sum += q.milli_value(),
                None => return Err(format!("missing request for {resource} in container {} of Pod {name}", c.name)),
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// kube's `GetResourceUtilizationRatio`: (usage ratio, utilization %, average raw usage).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (name, metric) in metrics {
        let Some(request) = requests.get(name) else { continue };
        used += metric.value;
        requested += request;
        entries += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (used * 100 / requested) as i32;
    Ok((f64::from(utilization) / f64::from(target), utilization, used / entries))
}

/// kube's `GetMetricUsageRatio`: (usage ratio, average usage).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let average = total / metrics.len().max(1) as i64;
    (average as f64 / target as f64, average)
}

/// What a Resource metric's pods are, once grouped: the metrics that count and the replicas the ready ones
/// make.
fn prepared(
    pods: &[Pod],
    metrics: &PodMetrics,
    resource: &str,
    now: Timestamp,
    t: &Tunables,
) -> Result<(PodMetrics, Groups), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group_pods(pods, metrics, resource, now, t);
    let mut metrics = metrics.clone();
    metrics.retain(|name, _| !groups.ignored.contains(name) && !groups.unready.contains(name));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    Ok((metrics, groups))
}

fn zero() -> PodMetric {
    PodMetric { value: 0, timestamp: Timestamp::UNIX_EPOCH, window: SignedDuration::ZERO }
}

/// The replicas, utilization % and average raw usage for a Utilization target (kube's
/// `GetResourceReplicas`).
#[allow(clippy::too_many_arguments)]
pub fn resource_replicas(
    current: i32,
    target_utilization: i32,
    resource: &str,
    container: Option<&str>,
    pods: &[Pod],
    metrics: &PodMetrics,
    now: Timestamp,
    t: &Tunables,
) -> Result<(i32, i32, i64), String> {
    let (mut metrics, groups) = prepared(pods, metrics, resource, now, t)?;
    let requests = pod_requests(pods, resource, container)?;
    let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target_utilization)?;
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if (1.0 - ratio).abs() <= t.tolerance {
            return Ok((current, utilization, raw));
        }
        return Ok(((ratio * groups.ready as f64).ceil() as i32, utilization, raw));
    }
    if !groups.missing.is_empty() {
        for name in &groups.missing {
            let value = if ratio < 1.0 { requests.get(name).copied().unwrap_or(0) } else { 0 };
            if ratio != 1.0 {
                metrics.insert(name.clone(), PodMetric { value, ..zero() });
            }
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), zero());
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target_utilization)?;
    Ok((settle(current, ratio, new_ratio, metrics.len(), t), utilization, raw))
}

/// kube's end of both calculations: no change if within tolerance or if the direction turned.
fn settle(current: i32, ratio: f64, new_ratio: f64, counted: usize, t: &Tunables) -> i32 {
    if (1.0 - new_ratio).abs() <= t.tolerance || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
        return current;
    }
    let replicas = (new_ratio * counted as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return current;
    }
    replicas
}

/// The replicas and average usage (thousandths) for an AverageValue target (kube's
/// `GetRawResourceReplicas` → `calcPlainMetricReplicas`).
pub fn raw_resource_replicas(
    current: i32,
    target: i64,
    resource: &str,
    pods: &[Pod],
    metrics: &PodMetrics,
    now: Timestamp,
    t: &Tunables,
) -> Result<(i32, i64), String> {
    let (mut metrics, groups) = prepared(pods, metrics, resource, now, t)?;
    let (ratio, usage) = usage_ratio(&metrics, target);
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if (1.0 - ratio).abs() <= t.tolerance {
            return Ok((current, usage));
        }
        return Ok(((ratio * groups.ready as f64).ceil() as i32, usage));
    }
    for name in &groups.missing {
        let value = if ratio < 1.0 { target } else { 0 };
        metrics.insert(name.clone(), PodMetric { value, ..zero() });
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), zero());
        }
    }
    let (new_ratio, _) = usage_ratio(&metrics, target);
    Ok((settle(current, ratio, new_ratio, metrics.len(), t), usage))
}

// ---------------------------------------------------------------------------------------- per metric

/// A metric's proposal: replicas, the name the rescale reason uses, its status, its timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    pub name: String,
    pub status: MetricStatus,
    pub timestamp: Timestamp,
}

/// Why a metric gave no proposal: the ScalingActive=False condition's reason and message, and the error.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFailure {
    pub reason: String,
    pub message: String,
    pub error: String,
}

/// The metrics the autoscaler's pods report, or why they could not be read.
pub type PodMetricsList<'a> = Result<&'a Value, String>;

fn milli(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> i64 {
    Quantity::parse(&q.0).map(|q| q.milli_value()).unwrap_or(0)
}

/// One metric's proposal (kube's `computeReplicasForMetric` for Resource and ContainerResource).
pub fn metric_proposal(
    spec: &MetricSpec,
    current: i32,
    pods: &[Pod],
    list: PodMetricsList<'_>,
    now: Timestamp,
    t: &Tunables,
) -> Result<Proposal, MetricFailure> {
    let (resource, container, target, failed_reason): (&str, Option<&str>, &MetricTarget, &str) =
        match (spec.type_.as_str(), &spec.resource, &spec.container_resource) {
            ("Resource", Some(r), _) => (&r.name, None, &r.target, "FailedGetResourceMetric"),
            ("ContainerResource", _, Some(r)) => {
                (&r.name, Some(r.container.as_str()), &r.target, "FailedGetContainerResourceMetric")
            }
            (other, _, _) => {
                let error =
                    format!("keel serves no metrics API for {other} metrics (only Resource and ContainerResource)");
                return Err(MetricFailure {
                    reason: format!("FailedGet{other}Metric"),
                    message: format!("the HPA was unable to compute the replica count: {error}"),
                    error,
                });
            }
        };
    let fail = |error: String| MetricFailure {
        reason: failed_reason.to_string(),
        message: format!("the HPA was unable to compute the replica count: {error}"),
        error,
    };
    let (metrics, timestamp) = list
        .and_then(|l| resource_metrics(l, resource, container))
        .map_err(|e| fail(format!("unable to get metrics for resource {resource}: {e}")))?;
    let what = if container.is_some() { "container resource" } else { "resource" };
    let source = |current: Value| {
        let mut s = json!({"name": resource, "current": current});
        if let Some(c) = container {
            s["container"] = json!(c);
        }
        s
    };
    let (replicas, name, source) = if let Some(average) = &target.average_value {
        let (replicas, usage) =
            raw_resource_replicas(current, milli(average), resource, pods, &metrics, now, t).map_err(fail)?;
        (replicas, format!("{resource} {what}"), source(json!({"averageValue": decimal_quantity(usage.into(), -3)})))
    } else {
        let Some(target_utilization) = target.average_utilization else {
            return Err(fail(
                "invalid resource metric source: neither a utilization target nor a value target was set".into(),
            ));
        };
        let (replicas, utilization, raw) =
            resource_replicas(current, target_utilization, resource, container, pods, &metrics, now, t)
                .map_err(fail)?;
        let current = json!({"averageValue": decimal_quantity(raw.into(), -3), "averageUtilization": utilization});
        (replicas, format!("{resource} {what} utilization (percentage of request)"), source(current))
    };
    let key = if container.is_some() { "containerResource" } else { "resource" };
    let status: MetricStatus = serde_json::from_value(json!({"type": spec.type_, key: source}))
        .map_err(|e| fail(format!("cannot make the metric's status: {e}")))?;
    Ok(Proposal { replicas, name, status, timestamp })
}

// ------------------------------------------------------------------------------------------ behavior

/// How one direction may scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window_seconds: i32,
    pub select: Select,
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub percent: bool,
    pub value: i32,
    pub period_seconds: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn rules(given: Option<&HPAScalingRules>, up: bool) -> Rules {
    let default_policies = if up {
        vec![
            Policy { percent: false, value: 4, period_seconds: 15 },
            Policy { percent: true, value: 100, period_seconds: 15 },
        ]
    } else {
        vec![Policy { percent: true, value: 100, period_seconds: 15 }]
    };
    let policies = given.and_then(|g| g.policies.as_ref()).filter(|p| !p.is_empty()).map(|ps| {
        ps.iter()
            .map(|p| Policy { percent: p.type_ == "Percent", value: p.value, period_seconds: p.period_seconds })
            .collect()
    });
    Rules {
        window_seconds: given.and_then(|g| g.stabilization_window_seconds).unwrap_or(if up { 0 } else { 300 }),
        select: match given.and_then(|g| g.select_policy.as_deref()) {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        },
        policies: policies.unwrap_or(default_policies),
    }
}

/// The autoscaler's scaling rules with the API's defaults filled in; `None` without `behavior` (kube then
/// applies its older rules).
pub fn behavior(given: Option<&HorizontalPodAutoscalerBehavior>) -> Option<Behavior> {
    let b = given?;
    Some(Behavior { up: rules(b.scale_up.as_ref(), true), down: rules(b.scale_down.as_ref(), false) })
}

/// A recommendation made at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    pub at: Timestamp,
}

/// A rescale made at some time (`change` > 0), remembered for the policies' periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub change: i32,
    pub at: Timestamp,
    pub outdated: bool,
}

/// What the controller remembers of one autoscaler between passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub recommendations: Vec<Recommendation>,
    pub up_events: Vec<ScaleEvent>,
    pub down_events: Vec<ScaleEvent>,
}

/// A condition to set: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn condition(type_: &'static str, status: bool, reason: &str, message: &str) -> Condition {
    Condition { type_, status, reason: reason.into(), message: message.into() }
}

/// The normalized recommendation and the AbleToScale and ScalingLimited conditions it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    pub conditions: Vec<Condition>,
}

fn record(recommendations: &mut Vec<Recommendation>, replicas: i32, now: Timestamp, old: Option<usize>) {
    let r = Recommendation { replicas, at: now };
    match old {
        Some(i) => recommendations[i] = r,
        None => recommendations.push(r),
    }
}

/// kube's `normalizeDesiredReplicas` (no `behavior`): the highest recommendation of the stabilization window,
/// then min, max and the scale-up limit max(2 × current, 4).
pub fn normalize(
    memory: &mut Memory,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
    t: &Tunables,
) -> Normalized {
    let cutoff = now - t.downscale_stabilization;
    let mut stabilized = desired;
    let mut old = None;
    for (i, r) in memory.recommendations.iter().enumerate() {
        if r.at < cutoff {
            old = Some(i);
        } else if r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    record(&mut memory.recommendations, desired, now, old);
    let able = if stabilized != desired {
        condition(
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
    } else {
        condition("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size")
    };
    let scale_up_limit = (2 * current).max(4);
    let (maximum, limit_reason, limit_message) = if max > scale_up_limit {
        (scale_up_limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
    } else {
        (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
    };
    let (replicas, reason, message) = if stabilized < min {
        (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
    } else if stabilized > maximum {
        (maximum, limit_reason, limit_message)
    } else {
        (stabilized, "DesiredWithinRange", "the desired count is within the acceptable range")
    };
    let limited = condition("ScalingLimited", replicas != stabilized, reason, message);
    Normalized { replicas, conditions: vec![able, limited] }
}

/// Replicas changed in the last `period_seconds` by `events`.
fn change_in_period(period_seconds: i32, events: &[ScaleEvent], now: Timestamp) -> i32 {
    let cutoff = now - SignedDuration::from_secs(period_seconds.into());
    events.iter().filter(|e| e.at > cutoff).map(|e| e.change).sum()
}

fn scale_up_limit(current: i32, memory: &Memory, rules: &Rules, now: Timestamp) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MAX, i32::min),
        Select::Max => (i32::MIN, i32::max),
    };
    for p in &rules.policies {
        let start = current - change_in_period(p.period_seconds, &memory.up_events, now)
            + change_in_period(p.period_seconds, &memory.down_events, now);
        let proposed = if p.percent {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        } else {
            start + p.value
        };
        result = pick(result, proposed);
    }
    result
}

fn scale_down_limit(current: i32, memory: &Memory, rules: &Rules, now: Timestamp) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select {
        Select::Disabled => return current,
        Select::Min => (i32::MIN, i32::max),
        Select::Max => (i32::MAX, i32::min),
    };
    for p in &rules.policies {
        let start = current - change_in_period(p.period_seconds, &memory.up_events, now)
            + change_in_period(p.period_seconds, &memory.down_events, now);
        let proposed =
            if p.percent { (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32 } else { start - p.value };
        result = pick(result, proposed);
    }
    result
}

/// kube's `normalizeDesiredReplicasWithBehaviors`: stabilization (the lowest recommendation of the
/// scale-up window, the highest of the scale-down one, the current count between them), then the
/// policies' rate limits and min/max.
#[allow(clippy::too_many_arguments)]
pub fn normalize_with_behavior(
    memory: &mut Memory,
    behavior: &Behavior,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
) -> Normalized {
    let up_cutoff = now - SignedDuration::from_secs(behavior.up.window_seconds.into());
    let down_cutoff = now - SignedDuration::from_secs(behavior.down.window_seconds.into());
    let (mut up, mut down) = (desired, desired);
    let mut old = None;
    for (i, r) in memory.recommendations.iter().enumerate() {
        if r.at > up_cutoff {
            up = up.min(r.replicas);
        }
        if r.at > down_cutoff {
            down = down.max(r.replicas);
        }
        if r.at < up_cutoff && r.at < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up).min(down);
    record(&mut memory.recommendations, desired, now, old);
    let able = match (stabilized != desired, desired >= current) {
        (false, _) => condition("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size"),
        (true, true) => condition(
            "AbleToScale",
            true,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent recommendation",
        ),
        (true, false) => condition(
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        ),
    };
    let mut result = (stabilized, "DesiredWithinRange", "the desired count is within the acceptable range");
    if stabilized > current {
        let limit = scale_up_limit(current, memory, &behavior.up, now).max(current);
        let (maximum, reason, message) = if max > limit {
            (limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if stabilized > maximum {
            result = (maximum, reason, message);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, memory, &behavior.down, now).min(current);
        let (minimum, reason, message) = if min < limit {
            (limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if stabilized < minimum {
            result = (minimum, reason, message);
        }
    }
    let limited = condition("ScalingLimited", result.0 != stabilized, result.1, result.2);
    Normalized { replicas: result.0, conditions: vec![able, limited] }
}

/// Remembers a rescale from `previous` to `new` for the policies' periods (kube's `storeScaleEvent`):
/// events older than the direction's longest period are marked outdated and reused.
pub fn record_rescale(memory: &mut Memory, behavior: Option<&Behavior>, previous: i32, new: i32, now: Timestamp) {
    let Some(behavior) = behavior else { return };
    let (events, rules, change) = if new > previous {
        (&mut memory.up_events, &behavior.up, new - previous)
    } else {
        (&mut memory.down_events, &behavior.down, previous - new)
    };
    let longest = rules.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0);
    let cutoff = now - SignedDuration::from_secs(longest.into());
    for e in events.iter_mut() {
        if e.at < cutoff {
            e.outdated = true;
        }
    }
    let event = ScaleEvent { change, at: now, outdated: false };
    match events.iter().position(|e| e.outdated) {
        Some(i) => events[i] = event,
        None => events.push(event),
    }
}

// ------------------------------------------------------------------------------------------- a pass

/// What the scale subresource says of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub replicas: i32,
    /// `status.selector`, the pods' label selector as a query.
    pub selector: String,
}

/// What one pass decided: the replicas to scale to (if different), why, the status to write and the
/// events to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub current: i32,
    pub desired: i32,
    pub reason: String,
    pub metrics: Vec<MetricStatus>,
    pub conditions: Vec<Condition>,
    pub notes: Vec<Note>,
}

impl Decision {
    pub fn rescale(&self) -> bool {
        self.desired != self.current
    }
}

/// The conditions and event of a target whose scale could not be read.
pub fn failed_get_scale(error: &str) -> (Condition, Note) {
    (
        condition(
            "AbleToScale",
            false,
            "FailedGetScale",
            &format!("the HPA controller was unable to get the target's current scale: {error}"),
        ),
        Note::warning("FailedGetScale", error),
    )
}

/// One pass over an autoscaler whose target's scale was read (kube's `reconcileAutoscaler` up to the
/// scale update): `pods` are those the scale's selector picks, `list` their PodMetrics.
pub fn decide(
    hpa: &HorizontalPodAutoscaler,
    target: &Target,
    pods: &[Pod],
    list: PodMetricsList<'_>,
    memory: &mut Memory,
    now: Timestamp,
    t: &Tunables,
) -> Decision {
    let spec = hpa.spec.clone().unwrap_or_default();
    let current = target.replicas;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut conditions = vec![condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    )];
    let mut notes = Vec::new();
    let decision = |desired, reason: String, metrics, conditions, notes| Decision {
        current,
        desired,
        reason,
        metrics,
        conditions,
        notes,
    };
    if current == 0 && min != 0 {
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
        return decision(0, String::new(), vec![], conditions, notes);
    }
    if current > max {
        return decision(max, "Current number of replicas above Spec.MaxReplicas".into(), vec![], conditions, notes);
    }
    if current < min {
        return decision(min, "Current number of replicas below Spec.MinReplicas".into(), vec![], conditions, notes);
    }
    if target.selector.is_empty() {
        notes.push(Note::warning("SelectorRequired", "selector is required"));
        conditions.push(condition(
            "ScalingActive",
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector",
        ));
        let statuses = hpa.status.as_ref().and_then(|s| s.current_metrics.clone()).unwrap_or_default();
        return decision(current, String::new(), statuses, conditions, notes);
    }
    let default_metric: MetricSpec = serde_json::from_value(json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80}}}))
    .expect("the default metric");
    let specs = spec.metrics.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| vec![default_metric]);
    let mut statuses = Vec::with_capacity(specs.len());
    let mut replicas = 0;
    let mut name = String::new();
    let mut invalid: Option<MetricFailure> = None;
    let mut invalid_count = 0;
    for spec in &specs {
        match metric_proposal(spec, current, pods, list.clone(), now, t) {
            Ok(p) => {
                if replicas == 0 || p.replicas > replicas {
                    replicas = p.replicas;
                    name = p.name;
                }
                statuses.push(p.status);
            }
            Err(f) => {
                notes.push(Note::warning(&f.reason, f.error.clone()));
                statuses.push(MetricStatus::default());
                invalid_count += 1;
                invalid.get_or_insert(f);
            }
        }
    }
    if let Some(f) = invalid.as_ref().filter(|_| invalid_count >= specs.len() || replicas < current) {
        conditions.push(condition("ScalingActive", false, &f.reason, &f.message));
        let error =
            format!("invalid metrics ({invalid_count} invalid out of {}), first error is: {}", specs.len(), f.error);
        notes.push(Note::warning("FailedComputeMetricsReplicas", error));
        return decision(current, String::new(), statuses, conditions, notes);
    }
    conditions.push(condition(
        "ScalingActive",
        true,
        "ValidMetricFound",
        &format!("the HPA was able to successfully calculate a replica count from {name}"),
    ));
    let reason = if replicas > current {
        format!("{name} above target")
    } else if replicas < current {
        "All metrics below target".to_string()
    } else {
        String::new()
    };
    let normalized = match behavior(spec.behavior.as_ref()) {
        Some(b) => normalize_with_behavior(memory, &b, current, replicas, min, max, now),
        None => normalize(memory, current, replicas, min, max, now, t),
    };
    conditions.extend(normalized.conditions);
    decision(normalized.replicas, reason, statuses, conditions, notes)
}

/// The conditions after a rescale: updated (AbleToScale SucceededRescale) or refused (FailedUpdateScale),
/// and its event.
pub fn rescaled(desired: i32, reason: &str, failure: Option<&str>) -> (Condition, Note) {
    match failure {
        None => (
            condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                &format!("the HPA controller was able to update the target scale to {desired}"),
            ),
            Note::normal("SuccessfulRescale", format!("New size: {desired}; reason: {reason}")),
        ),
        Some(e) => (
            condition(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                &format!("the HPA controller was unable to update the target scale: {e}"),
            ),
            Note::warning("FailedRescale", format!("New size: {desired}; reason: {reason}; error: {e}")),
        ),
    }
}

/// Sets conditions as kube's `setCondition` does: a condition's transition time changes only with its
/// status; new types are appended.
pub fn set_conditions(existing: &mut Vec<HorizontalPodAutoscalerCondition>, set: &[Condition], now: Timestamp) {
    for c in set {
        let status = if c.status { "True" } else { "False" };
        match existing.iter_mut().find(|e| e.type_ == c.type_) {
            Some(e) => {
                if e.status != status {
                    e.last_transition_time = Some(Time(now));
                }
                e.status = status.into();
                e.reason = Some(c.reason.clone());
                e.message = Some(c.message.clone());
            }
            None => existing.push(HorizontalPodAutoscalerCondition {
                type_: c.type_.into(),
                status: status.into(),
                reason: Some(c.reason.clone()),
                message: Some(c.message.clone()),
                last_transition_time: Some(Time(now)),
            }),
        }
    }
}

/// The status after a pass (kube's `setStatus`): `rescaled` sets lastScaleTime.
pub fn status(
    before: Option<&HorizontalPodAutoscalerStatus>,
    current: i32,
    desired: i32,
    metrics: Vec<MetricStatus>,
    conditions: &[Condition],
    rescaled: bool,
    now: Timestamp,
) -> HorizontalPodAutoscalerStatus {
    let mut all = before.and_then(|s| s.conditions.clone()).unwrap_or_default();
    set_conditions(&mut all, conditions, now);
    HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: desired,
        current_metrics: (!metrics.is_empty()).then_some(metrics),
        last_scale_time: if rescaled { Some(Time(now)) } else { before.and_then(|s| s.last_scale_time.clone()) },
        conditions: Some(all),
        observed_generation: before.and_then(|s| s.observed_generation),
    }
}
