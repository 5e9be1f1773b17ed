//! PodDisruptionBudgets (`policy/v1`) and what an eviction (`pods/{name}/eviction`) asks of them, as
//! kube-apiserver validates the one and decides the other: a pod that runs under a budget is evicted only
//! while the budget allows a disruption, which the eviction then uses up.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::selector::LabelSelector;
use crate::status::ApiError;
use crate::validation::Cause;

/// The spec's checks: minAvailable or maxUnavailable (not both), each a count or a percentage of at most
/// 100%, a valid selector, a known unhealthy-pod policy.
pub fn validate(pdb: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = pdb.get("spec").unwrap_or(&Value::Null);
    let (min, max) = (spec.get("minAvailable"), spec.get("maxUnavailable"));
    if min.is_some_and(|v| !v.is_null()) && max.is_some_and(|v| !v.is_null()) {
        causes.push(Cause::invalid("spec", "", "minAvailable and maxUnavailable cannot be both set"));
    }
    for (field, value) in [("spec.minAvailable", min), ("spec.maxUnavailable", max)] {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
                causes.push(Cause::invalid(field, &n.to_string(), "must be greater than or equal to 0"))
            }
            Some(Value::Number(_)) => {}
            Some(Value::String(s)) => match percent(s) {
                None => causes.push(Cause::invalid(
                    field,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or \
                     '93%', regex used for validation is '[0-9]+%')",
                )),
                Some(p) if p > 100 => causes.push(Cause::invalid(field, s, "must not be greater than 100%")),
                Some(_) => {}
            },
            Some(other) => causes.push(Cause::invalid(field, &other.to_string(), "must be an integer or a percentage")),
        }
    }
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        let parsed = serde_json::from_value(selector.clone()).map_err(|e| e.to_string());
        if let Err(e) = parsed.and_then(|s| LabelSelector::from_api(&s).map_err(|e| e.to_string())) {
            causes.push(Cause::invalid("spec.selector", "", &e));
        }
    }
    match spec.get("unhealthyPodEvictionPolicy").and_then(Value::as_str) {
        None | Some("IfHealthyBudget" | "AlwaysAllow") => {}
        Some(other) => causes.push(Cause::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            other,
            &["AlwaysAllow", "IfHealthyBudget"],
        )),
    }
    causes
}

/// `"25%"` as 25.
fn percent(s: &str) -> Option<u32> {
    let digits = s.strip_suffix('%')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// `value` (a count, or a percentage of `total`, rounded up as Kubernetes' `GetScaledValueFromIntOrPercent`
/// does for budgets); `None` for a malformed percentage.
pub fn scaled(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let p = i64::from(percent(s)?);
            Some(((p * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// Whether a budget's selector picks a pod with `labels` (in policy/v1 an empty selector picks every pod of
/// the namespace; a missing or malformed one none).
pub fn selects(pdb: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let Some(selector) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else { return false };
    serde_json::from_value(selector.clone())
        .ok()
        .and_then(|s| LabelSelector::from_api(&s).ok())
        .is_some_and(|s| s.matches(labels))
}

/// What an eviction of `pod` does, given the budgets of its namespace: `Ok(None)` deletes the pod without
/// touching a budget (none picks it, or it is not running, or it is unhealthy and its budget lets such pods
/// go); `Ok(Some(i))` deletes it and uses one disruption of `budgets[i]`; `Err` refuses it (429 while the
/// budget allows none, or has not been looked at since it last changed).
pub fn eviction(pod: &Value, budgets: &[Value]) -> Result<Option<usize>, ApiError> {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    if pod.pointer("/metadata/deletionTimestamp").is_some() || matches!(phase, "Succeeded" | "Failed" | "Pending") {
        return Ok(None);
    }
    let labels = crate::meta::labels(pod);
    let picked: Vec<usize> = budgets.iter().enumerate().filter(|(_, b)| selects(b, &labels)).map(|(i, _)| i).collect();
    let i = match picked.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(ApiError::StoreRefused(
                "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction \
                 subresource does not support."
                    .into(),
            ))
        }
    };
    let budget = &budgets[i];
    let name = crate::meta::name(budget);
    let int = |pointer: &str| budget.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    let refused = |cause: String| ApiError::TooManyRequests {
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        causes: vec![("DisruptionBudget".into(), cause)],
    };
    if int("/status/observedGeneration") < int("/metadata/generation") {
        return Err(refused(format!("The disruption budget {name} is still being processed by the server.")));
    }
    let (healthy, desired) = (int("/status/currentHealthy"), int("/status/desiredHealthy"));
    if !is_ready(pod) {
        let policy = budget.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str);
        if policy == Some("AlwaysAllow") || (healthy >= desired && desired > 0) {
            return Ok(None);
        }
    }
    if int("/status/disruptionsAllowed") <= 0 {
        return Err(refused(format!(
            "The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
        )));
    }
    Ok(Some(i))
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// `budget` with one disruption used for the pod `pod` at `now` (RFC 3339): what the eviction stores, with
/// the budget's resourceVersion as read, before it deletes the pod.
pub fn use_disruption(budget: &Value, pod: &str, now: &str) -> Value {
    let mut out = budget.clone();
    let allowed = budget.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
    out["status"]["disruptionsAllowed"] = (allowed - 1).max(0).into();
    match out["status"].get_mut("disruptedPods").and_then(Value::as_object_mut) {
        Some(map) => {
            map.insert(pod.to_string(), now.into());
        }
        None => out["status"]["disruptedPods"] = serde_json::json!({ pod: now }),
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn budget(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": 1}, "spec": spec, "status": status})
    }

    fn running(ready: bool) -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn budgets_are_checked_as_kubernetes_checks_them() {
        assert!(validate(&budget(json!({"minAvailable": 2, "selector": {}}), json!({}))).is_empty());
        assert!(validate(&budget(json!({"maxUnavailable": "25%"}), json!({}))).is_empty());
        let both = validate(&budget(json!({"minAvailable": 1, "maxUnavailable": 1}), json!({})));
        assert_eq!(both[0].message, "Invalid value: \"\": minAvailable and maxUnavailable cannot be both set");
        let fields = |spec: Value| validate(&budget(spec, json!({}))).into_iter().map(|c| c.field).collect::<Vec<_>>();
        assert_eq!(fields(json!({"minAvailable": -1})), ["spec.minAvailable"]);
        assert_eq!(fields(json!({"maxUnavailable": "150%"})), ["spec.maxUnavailable"]);
        assert_eq!(fields(json!({"maxUnavailable": "half"})), ["spec.maxUnavailable"]);
        assert_eq!(
            fields(json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}})),
            ["spec.selector"]
        );
        assert_eq!(scaled(&IntOrString::String("25%".into()), 3), Some(1));
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::Int(4), 3), Some(4));
    }

    #[test]
    fn an_eviction_uses_a_disruption_or_is_refused() {
        let allows = budget(
            json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
            json!({"observedGeneration": 1, "currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1}),
        );
        assert_eq!(eviction(&running(true), std::slice::from_ref(&allows)).unwrap(), Some(0));
        let used = use_disruption(&allows, "p", "2026-12-07T12:00:00Z");
        assert_eq!(used["status"]["disruptionsAllowed"], 0);
        assert_eq!(used["status"]["disruptedPods"]["p"], "2026-12-07T12:00:00Z");
        let Err(refused) = eviction(&running(true), std::slice::from_ref(&used)) else { panic!() };
        assert_eq!((refused.code(), refused.reason()), (429, "TooManyRequests"));
        assert_eq!(refused.to_string(), "Cannot evict pod as it would violate the pod's disruption budget.");
        // Another namespace's labels, a pod that does not run, an unhealthy pod under a healthy budget: no budget.
        assert_eq!(
            eviction(
                &json!({"metadata": {"labels": {"app": "db"}}, "status": {"phase": "Running"}}),
                std::slice::from_ref(&used)
            )
            .unwrap(),
            None
        );
        assert_eq!(
            eviction(
                &json!({"metadata": {"labels": {"app": "web"}}, "status": {"phase": "Pending"}}),
                std::slice::from_ref(&used)
            )
            .unwrap(),
            None
        );
        assert_eq!(eviction(&running(false), std::slice::from_ref(&allows)).unwrap(), None);
        // Not looked at since it changed; two budgets.
        let stale = budget(
            json!({"minAvailable": 1, "selector": {}}),
            json!({"observedGeneration": 0, "disruptionsAllowed": 5}),
        );
        assert_eq!(eviction(&running(true), &[stale]).unwrap_err().code(), 429);
        assert_eq!(eviction(&running(true), &[allows.clone(), allows]).unwrap_err().code(), 500);
    }
}
