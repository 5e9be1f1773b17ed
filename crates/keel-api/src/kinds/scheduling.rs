//! PriorityClasses (`scheduling.k8s.io/v1`) and the Priority admission of pods, as kube-apiserver has them:
//! a pod's `priorityClassName` (or the class marked `globalDefault`) decides its `spec.priority` and
//! `spec.preemptionPolicy`; a class that does not exist refuses the pod. The two system classes exist in
//! every cluster.

use serde_json::{json, Value};

use crate::status::ApiError;
use crate::validation::{Cause, CauseType};

/// The classes every cluster has (kube-apiserver's `SystemPriorityClasses`): name, value, description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The highest value a class other than the system ones may have.
const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

const POLICIES: [&str; 2] = ["Never", "PreemptLowerPriority"];

/// The system classes as objects to create.
pub fn system_classes() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"})
        })
        .collect()
}

pub fn default(class: &mut Value) {
    if let Some(map) = class.as_object_mut() {
        map.entry("preemptionPolicy").or_insert_with(|| json!("PreemptLowerPriority"));
    }
}

pub fn validate(class: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = crate::meta::name(class);
    let system = SYSTEM_CLASSES.iter().find(|(n, ..)| *n == name);
    let value = class.get("value").and_then(Value::as_i64);
    match (system, value) {
        (_, None) => causes.push(Cause::required("value")),
        (Some((_, wanted, _)), Some(v)) if v != *wanted => {
            causes.push(forbidden("value", &format!("value of {name} PriorityClass must be {wanted}")))
        }
        (None, Some(v)) if v > HIGHEST_USER_DEFINABLE => causes.push(forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"),
        )),
        _ => {}
    }
    if system.is_none() && name.starts_with("system-") {
        causes.push(forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    }
    if let Some(policy) = class.get("preemptionPolicy").and_then(Value::as_str) {
        if !POLICIES.contains(&policy) {
            causes.push(Cause::not_supported("preemptionPolicy", policy, &POLICIES));
        }
    }
    causes
}

/// A class's value and preemption policy never change.
pub fn validate_update(old: &Value, new: &Value) -> Vec<Cause> {
    ["value", "preemptionPolicy"]
        .into_iter()
        .filter(|f| old.get(*f) != new.get(*f))
        .map(|f| Cause::invalid(f, &new.get(f).map(Value::to_string).unwrap_or_default(), "field is immutable"))
        .collect()
}

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause { kind: CauseType::Forbidden, field: field.into(), message: format!("Forbidden: {detail}") }
}

/// The class a pod gets, as the server found it: the one it names, or the global default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodClass {
    pub name: String,
    pub value: i64,
    pub preemption_policy: Option<String>,
}

/// The Priority admission of a new pod: `class` is what the server found (`None`: the pod names none and no
/// class is the default; `Err(name)`: the class it names does not exist). The pod's priority may not be
/// set to anything else.
pub fn admit_pod(pod: &mut Value, class: Option<Result<PodClass, String>>) -> Result<(), ApiError> {
    let pod_name = crate::meta::name(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    let class = match class {
        None => return Ok(()),
        Some(Err(name)) => {
            return Err(ApiError::Forbidden(format!(
                "pods {pod_name:?} is forbidden: no PriorityClass with name {name} was found"
            )))
        }
        Some(Ok(class)) => class,
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != class.value {
            return Err(ApiError::Forbidden(format!(
                "pods {pod_name:?} is forbidden: the integer value of priority ({given}) must not be provided in pod \
                 spec; priority admission controller computed {} from the given PriorityClass name",
                class.value
            )));
        }
    }
    spec.insert("priorityClassName".into(), json!(class.name));
    spec.insert("priority".into(), json!(class.value));
    if let Some(policy) = class.preemption_policy {
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64) -> Value {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value})
    }

    #[test]
    fn classes_are_checked_as_kubernetes_checks_them() {
        assert!(validate(&class("high", 1000)).is_empty());
        for c in system_classes() {
            assert!(validate(&c).is_empty(), "{c}");
        }
        let causes = validate(&class("huge", 2_000_000_000));
        assert_eq!(causes[0].message, "Forbidden: maximum allowed value of a user defined priority is 1000000000");
        assert_eq!(validate(&class("system-mine", 10))[0].field, "metadata.name");
        assert_eq!(validate(&json!({"metadata": {"name": "x"}}))[0].field, "value");
        assert_eq!(validate_update(&class("high", 1000), &class("high", 1001))[0].field, "value");
    }

    #[test]
    fn pods_get_their_class_priority_or_are_refused() {
        let high = PodClass { name: "high".into(), value: 1000, preemption_policy: Some("Never".into()) };
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high"}});
        admit_pod(&mut pod, Some(Ok(high.clone()))).unwrap();
        assert_eq!(
            (pod["spec"]["priority"].clone(), pod["spec"]["preemptionPolicy"].clone()),
            (json!(1000), json!("Never"))
        );
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        admit_pod(&mut pod, Some(Ok(high.clone()))).unwrap();
        assert_eq!(pod["spec"]["priorityClassName"], "high", "the global default");
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "nope"}});
        let e = admit_pod(&mut pod, Some(Err("nope".into()))).unwrap_err();
        assert_eq!(e.to_string(), "pods \"p\" is forbidden: no PriorityClass with name nope was found");
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high", "priority": 5}});
        assert!(admit_pod(&mut pod, Some(Ok(high))).is_err());
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {}});
        admit_pod(&mut pod, None).unwrap();
        assert!(pod["spec"].get("priority").is_none());
    }
}
