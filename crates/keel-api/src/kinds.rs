//! Per-kind rules, applied by the API server to every create and update after it has handled metadata:
//! [`decode`] checks the object against its k8s-openapi type (wrong JSON types, unknown fields for
//! `fieldValidation`), [`default`] fills in Kubernetes' defaults, [`validate`] and [`validate_update`]
//! return every problem with the kind's own fields as [`Cause`]s, with Kubernetes' field paths and
//! messages. Objects are the JSON values as sent and stored; all of it is pure.
//!
//! On an update the server runs [`default`] and [`validate`] on the new object, then [`validate_update`]
//! for what may not change.

pub mod certificates;
mod cluster;
mod config;
mod cron;
mod decode;
mod fields;
mod networking;
mod pod;
pub use pod::{mount_service_account_token, SERVICE_ACCOUNT_DIR};
pub mod rbac;
mod service;
mod workloads;

use k8s_openapi::api::{
    apps, autoscaling, batch, certificates as certs, coordination, core, discovery, networking as net, rbac as authz,
};
use serde_json::Value;

use crate::validation::Cause;

/// Decodes `object` as the k8s-openapi type of `kind`. `Err` (for a 400 Bad Request) names the field that
/// does not fit and why; `Ok` lists the fields the type does not know (`spec.containers[0].imagee`), which
/// `fieldValidation=Strict` rejects and `Warn` reports.
pub fn decode(kind: &str, object: &Value) -> Result<Vec<String>, String> {
    use decode::decode_as;
    let result = match kind {
        "Namespace" => decode_as::<core::v1::Namespace>(object),
        "Pod" => decode_as::<core::v1::Pod>(object),
        "Service" => decode_as::<core::v1::Service>(object),
        "Endpoints" => decode_as::<core::v1::Endpoints>(object),
        "ConfigMap" => decode_as::<core::v1::ConfigMap>(object),
        "Secret" => decode_as::<core::v1::Secret>(object),
        "Node" => decode_as::<core::v1::Node>(object),
        "Event" => decode_as::<core::v1::Event>(object),
        "ServiceAccount" => decode_as::<core::v1::ServiceAccount>(object),
        "Deployment" => decode_as::<apps::v1::Deployment>(object),
        "ReplicaSet" => decode_as::<apps::v1::ReplicaSet>(object),
        "StatefulSet" => decode_as::<apps::v1::StatefulSet>(object),
        "DaemonSet" => decode_as::<apps::v1::DaemonSet>(object),
        "ControllerRevision" => decode_as::<apps::v1::ControllerRevision>(object),
        "Job" => decode_as::<batch::v1::Job>(object),
        "CronJob" => decode_as::<batch::v1::CronJob>(object),
        "Lease" => decode_as::<coordination::v1::Lease>(object),
        "HorizontalPodAutoscaler" => decode_as::<autoscaling::v2::HorizontalPodAutoscaler>(object),
        "EndpointSlice" => decode_as::<discovery::v1::EndpointSlice>(object),
        "Ingress" => decode_as::<net::v1::Ingress>(object),
        "IngressClass" => decode_as::<net::v1::IngressClass>(object),
        "Role" => decode_as::<authz::v1::Role>(object),
        "ClusterRole" => decode_as::<authz::v1::ClusterRole>(object),
        "RoleBinding" => decode_as::<authz::v1::RoleBinding>(object),
        "ClusterRoleBinding" => decode_as::<authz::v1::ClusterRoleBinding>(object),
        "CertificateSigningRequest" => decode_as::<certs::v1::CertificateSigningRequest>(object),
        other => return Err(format!("no kind {other:?} is registered")),
    };
    let version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    result.map_err(|e| format!("{kind} in version {version:?} cannot be handled as a {kind}: {e}"))
}

/// Kubernetes' defaults for `kind` (its `SetDefaults_*` functions, and those the API server's admission
/// adds), filled in place where the object leaves them unset. Unknown kinds are left alone.
pub fn default(kind: &str, object: &mut Value) {
    match kind {
        "Pod" => pod::default_pod(object),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" | "HorizontalPodAutoscaler" => {
            workloads::default(kind, object)
        }
        "Service" | "Endpoints" | "EndpointSlice" => service::default(kind, object),
        "Secret" => config::default_secret(object),
        "Namespace" | "Node" => cluster::default(kind, object),
        "RoleBinding" | "ClusterRoleBinding" => rbac::default(kind, object),
        _ => {}
    }
}

/// Every problem with the kind-specific fields of a new object (metadata is the server's to check).
pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    match kind {
        "Pod" => pod::validate_pod(object),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "CronJob"
        | "HorizontalPodAutoscaler"
        | "ControllerRevision" => workloads::validate(kind, object),
        "Service" | "Endpoints" | "EndpointSlice" => service::validate(kind, object),
        "ConfigMap" | "Secret" | "ServiceAccount" => config::validate(kind, object),
        "Namespace" | "Node" | "Event" | "Lease" => cluster::validate(kind, object),
        "Ingress" | "IngressClass" => networking::validate(kind, object),
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => rbac::validate(kind, object),
        "CertificateSigningRequest" => certificates::validate(object),
        _ => vec![],
    }
}

/// What an update may not change, beyond [`validate`] of the new object: a pod's spec but for images,
/// deadline and tolerations, workload selectors, a job's template, a service's cluster IP, immutable
/// ConfigMaps and Secrets, …
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    match kind {
        "Pod" => pod::validate_pod_update(old, new),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ControllerRevision" => {
            workloads::validate_update(kind, old, new)
        }
        "Service" | "EndpointSlice" => service::validate_update(kind, old, new),
        "ConfigMap" | "Secret" => config::validate_update(kind, old, new),
        "Node" => cluster::validate_update(kind, old, new),
        "IngressClass" => networking::validate_update(kind, old, new),
        "RoleBinding" | "ClusterRoleBinding" => rbac::validate_update(kind, old, new),
        "CertificateSigningRequest" => certificates::validate_update(old, new),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decode_knows_every_served_kind() {
        for r in crate::resources::RESOURCES {
            let object = json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            assert_eq!(decode(r.kind, &object), Ok(vec![]), "{}", r.kind);
        }
        assert!(decode("Widget", &json!({})).unwrap_err().contains("no kind \"Widget\" is registered"));
        assert!(validate("Widget", &json!({})).is_empty());
        let mut w = json!({"spec": {}});
        default("Widget", &mut w);
        assert_eq!(w, json!({"spec": {}}));
    }

    #[test]
    fn decode_errors_read_like_kubernetes() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "three"}});
        let err = decode("Deployment", &d).unwrap_err();
        assert_eq!(
            err,
            "Deployment in version \"apps/v1\" cannot be handled as a Deployment: spec.replicas: invalid type: \
             string \"three\", expected i32"
        );
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1, "replica": 2}});
        assert_eq!(decode("Deployment", &d), Ok(vec!["spec.replica".to_string()]));
    }
}

/// Removes the fields [`decode`] reported unknown (`spec.containers[0].imagee`), as Kubernetes drops them
/// when it does not refuse them: what is stored is what the type holds.
pub fn drop_unknown(object: &mut Value, paths: &[String]) {
    for path in paths {
        let mut segments: Vec<Segment> = Vec::new();
        for part in path.split('.') {
            let (name, rest) = part.split_once('[').unwrap_or((part, ""));
            segments.push(Segment::Field(name));
            for index in rest.split('[').filter(|s| !s.is_empty()) {
                match index.trim_end_matches(']').parse() {
                    Ok(i) => segments.push(Segment::Index(i)),
                    Err(_) => return,
                }
            }
        }
        let Some((Segment::Field(last), parents)) = segments.split_last() else { continue };
        let parent = parents.iter().try_fold(&mut *object, |v, s| match s {
            Segment::Field(f) => v.get_mut(*f),
            Segment::Index(i) => v.get_mut(*i),
        });
        if let Some(map) = parent.and_then(Value::as_object_mut) {
            map.remove(*last);
        }
    }
}

enum Segment<'a> {
    Field(&'a str),
    Index(usize),
}

#[cfg(test)]
mod drop_tests {
    use serde_json::json;

    #[test]
    fn unknown_fields_are_dropped_where_decode_found_them() {
        let mut pod = json!({"spec": {"foo": 1, "containers": [{"name": "a"}, {"name": "b", "imagee": "x"}]}});
        let unknown = super::decode(
            "Pod",
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"foo": 1, "containers": [{"name": "a"}, {"name": "b", "imagee": "x"}]}}),
        )
        .unwrap();
        assert_eq!(unknown, ["spec.containers[1].imagee", "spec.foo"]);
        super::drop_unknown(&mut pod, &unknown);
        assert_eq!(pod, json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}));
    }
}
