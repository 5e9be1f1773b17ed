//! APIServices (`apiregistration.k8s.io/v1`): the group versions the cluster's API serves, as the
//! aggregator lists them. Every built-in group version has a local one (`v1.apps`, `v1.` for the core
//! group), made by the masters; an APIService naming a Service (an aggregated API server) is stored and
//! listed, and marked not Available: keel does not proxy aggregated APIs yet.

use serde_json::{json, Value};

use crate::validation::Cause;

/// The local APIServices of the built-in group versions, with kube-apiserver's group priorities.
pub fn local() -> Vec<Value> {
    crate::resources::group_versions()
        .into_iter()
        .map(|(group, version)| {
            let priority = match group {
                "" => 18000,
                "apps" => 17800,
                "events.k8s.io" | "authentication.k8s.io" | "authorization.k8s.io" => 17750,
                "autoscaling" => 17500,
                "batch" => 17400,
                "certificates.k8s.io" => 17300,
                "networking.k8s.io" => 17200,
                "policy" => 17100,
                "rbac.authorization.k8s.io" => 17000,
                "storage.k8s.io" => 16800,
                "admissionregistration.k8s.io" => 16700,
                "apiextensions.k8s.io" => 16700,
                "scheduling.k8s.io" => 16600,
                "coordination.k8s.io" => 16500,
                "discovery.k8s.io" => 16200,
                _ => 15000,
            };
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": format!("{version}.{group}"), "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": priority, "versionPriority": 15}})
        })
        .collect()
}

pub fn validate(service: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = service.get("spec").unwrap_or(&Value::Null);
    let text = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default();
    let (group, version) = (text("group"), text("version"));
    let name = crate::meta::name(service);
    if name != format!("{version}.{group}") {
        causes.push(Cause::invalid("metadata.name", name, &format!("must be {version}.{group}")));
    }
    if version.is_empty() {
        causes.push(Cause::required("spec.version"));
    }
    for (field, max) in [("groupPriorityMinimum", 20000), ("versionPriority", 1000)] {
        match spec.get(field).and_then(Value::as_i64) {
            None => causes.push(Cause::required(format!("spec.{field}"))),
            Some(p) if !(1..=max).contains(&p) => causes.push(Cause::invalid(
                format!("spec.{field}"),
                &p.to_string(),
                &format!("must be positive and less than {}", max + 1),
            )),
            _ => {}
        }
    }
    if spec.get("service").is_some_and(Value::is_object) {
        let insecure = spec.get("insecureSkipTLSVerify").and_then(Value::as_bool).unwrap_or(false);
        if insecure && spec.get("caBundle").and_then(Value::as_str).is_some_and(|b| !b.is_empty()) {
            causes.push(Cause::invalid("spec.insecureSkipTLSVerify", "true", "may not be true if caBundle is present"));
        }
    }
    causes
}

/// A new APIService's status: available when local, not when it names a Service (no proxying yet).
pub fn initial(service: &mut Value) {
    let local = !service.pointer("/spec/service").is_some_and(Value::is_object);
    let now = service.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null);
    let condition = match local {
        true => {
            json!({"type": "Available", "status": "True", "reason": "Local", "message": "Local APIServices are always available", "lastTransitionTime": now})
        }
        false => json!({"type": "Available", "status": "False", "reason": "ServiceNotFound",
            "message": "keel does not proxy aggregated API servers yet", "lastTransitionTime": now}),
    };
    if let Some(map) = service.as_object_mut() {
        map.insert("status".into(), json!({"conditions": [condition]}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_group_version_has_a_valid_local_apiservice() {
        let all = local();
        assert!(all.iter().any(|s| s["metadata"]["name"] == "v1." && s["spec"]["groupPriorityMinimum"] == 18000));
        assert!(all.iter().any(|s| s["metadata"]["name"] == "v1.apps"));
        for s in &all {
            assert!(validate(s).is_empty(), "{s}: {:?}", validate(s));
        }
        let mut remote = json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"namespace": "kube-system", "name": "metrics-server"}}});
        initial(&mut remote);
        assert_eq!(remote["status"]["conditions"][0]["status"], "False");
        let bad = json!({"metadata": {"name": "x"}, "spec": {"group": "g", "version": "v1"}});
        assert_eq!(validate(&bad).len(), 3);
    }
}
