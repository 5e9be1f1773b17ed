//! Per-kind rules, applied by the API server to every create and update after it has handled metadata:
//! [`decode`] checks the object against its k8s-openapi type (wrong JSON types, unknown fields for
//! `fieldValidation`), [`default`] fills in Kubernetes' defaults, [`validate`] and [`validate_update`]
//! return every problem with the kind's own fields as [`Cause`]s, with Kubernetes' field paths and
//! messages. Objects are the JSON values as sent and stored; all of it is pure.
//!
//! On an update the server runs [`default`] and [`validate`] on the new object, then [`validate_update`]
//! for what may not change.

pub mod apiextensions;
pub mod apiregistration;
pub mod certificates;
mod cluster;
mod config;
mod cron;
mod decode;
pub mod events;
pub(crate) mod fields;
pub mod limits;
pub mod networking;
mod pod;
pub mod policy;
pub use pod::{mount_service_account_token, SERVICE_ACCOUNT_DIR};
pub use service::carry_over_addresses;
pub mod rbac;
pub mod scheduling;
mod service;
pub mod storage;
mod workloads;

use k8s_openapi::api::{
    admissionregistration, apps, autoscaling, batch, certificates as certs, coordination, core, discovery,
    networking as net, policy as pdb, rbac as authz, scheduling as prio,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as crds;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as aggregation;
use serde_json::Value;

use crate::table::{self, Printer};
use crate::validation::Cause;
use decode::decode_as;

/// How the names of a kind's objects are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS subdomain (most kinds).
    Subdomain,
    /// A DNS label (Namespaces, Services).
    Label,
    /// Anything usable as a path segment (RBAC's kinds).
    PathSegment,
}

/// What the API server does for a kind beyond its entry's pure rules, where it needs the store, the CA or a
/// lookup: named here so that the server asks a kind's entry rather than its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Cluster IPs and node ports allocated at create, carried over by updates, released at delete.
    AllocateServiceAddresses,
    /// The service-account token volume mounted, unless the service account says not to automount.
    MountServiceAccountToken,
    /// The requester recorded, node requests auto-approved, approved requests signed by the cluster CA.
    SignCertificates,
    /// A delete is graceful (the agent finishes it) and answers with the object.
    GracefulDelete,
    /// The PriorityClass a pod names (or the default one) gives it its priority; one that does not exist
    /// refuses the pod.
    ResolvePriorityClass,
    /// A delete marks the namespace Terminating; the namespace controller empties and finalizes it.
    FinalizeNamespace,
    /// A CustomResourceDefinition's names are accepted (or found in conflict with another's) and it is
    /// established, at every write of its spec; the other definitions are looked up first.
    AcceptNames,
    /// A new Ingress that names no class (neither `ingressClassName` nor the old annotation) gets the
    /// cluster's default IngressClass (kube-apiserver's DefaultIngressClass admission).
    DefaultIngressClass,
    /// A new PersistentVolumeClaim that names no class gets the cluster's default StorageClass (kube's
    /// DefaultStorageClass admission).
    DefaultStorageClass,
    /// The namespace's LimitRanges fill in a new pod's default requests and limits and hold it (or a
    /// claim) to their min, max and ratios (kube's LimitRanger admission).
    LimitRanger,
    /// A CustomResourceDefinition's delete marks it Terminating, with a finalizer kept until its custom
    /// objects are gone (the cleanup controller removes them, then the finalizer).
    CleanUpCustomObjects,
}

/// One served kind's rules: everything kind-specific that admission, tables and the server's hooks need,
/// in one place (kube-apiserver's registry strategy and printer for the kind).
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    /// Checks an object against the kind's k8s-openapi type; lists the fields the type does not know.
    pub decode: fn(&Value) -> Result<Vec<String>, String>,
    /// Kubernetes' defaults (its `SetDefaults_*` and the API server's admission defaults), in place.
    pub default: fn(&mut Value),
    /// Every problem with the kind's own fields of an object.
    pub validate: fn(&Value) -> Vec<Cause>,
    /// What an update (old, new) may not change, beyond [`Kind::validate`] of the new object.
    pub validate_update: fn(&Value, &Value) -> Vec<Cause>,
    pub names: NameRule,
    /// Whether spec changes count in `metadata.generation`.
    pub generation: bool,
    /// What a new object's status (and anything else the server sets at create) starts as.
    pub initial: fn(&mut Value),
    /// The status fields Kubernetes' Go types always write (no `omitempty`), 0 when missing.
    pub required_status: &'static [&'static str],
    pub printer: Printer,
    pub hooks: &'static [Hook],
}

/// Kinds are told apart by name (their rules are functions, which have no reliable equality).
impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.name == other.name
    }
}

impl Eq for Kind {}

impl Kind {
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }
}

fn no_default(_: &mut Value) {}
fn no_causes(_: &Value) -> Vec<Cause> {
    vec![]
}
fn no_update_causes(_: &Value, _: &Value) -> Vec<Cause> {
    vec![]
}
fn unregistered(_: &Value) -> Result<Vec<String>, String> {
    Err(String::new())
}

/// The rules of a kind keel does not know: nothing to check, Kubernetes' default table.
pub const UNKNOWN: Kind = Kind {
    name: "",
    decode: unregistered,
    default: no_default,
    validate: no_causes,
    validate_update: no_update_causes,
    names: NameRule::Subdomain,
    generation: false,
    initial: initial::empty_status,
    required_status: &[],
    printer: table::DEFAULT_PRINTER,
    hooks: &[],
};

/// The kinds of workloads' controllers: generation tracked, a status of their controller's.
const WORKLOAD: Kind = Kind { generation: true, ..UNKNOWN };

/// Kinds whose status, if any, is the client's (nodes register with one; most have none).
const KEPT: Kind = Kind { initial: initial::keep, ..UNKNOWN };

/// The rules of every custom resource: its schema ([`crate::custom::Served`]) does the rest; a status
/// subresource's status is cleared at create ([`crate::meta::prepare_create`]).
pub const CUSTOM: Kind = Kind { generation: true, ..KEPT };

// Every built-in kind keel serves, with its rules; each served resource ([`crate::resources::RESOURCES`])
// names its kind's entry.

pub const NAMESPACE: Kind = Kind {
    name: "Namespace",
    decode: |o| decode_as::<core::v1::Namespace>(o),
    default: |o| cluster::default("Namespace", o),
    validate: |o| cluster::validate("Namespace", o),
    names: NameRule::Label,
    initial: initial::namespace,
    printer: table::NAMESPACES,
    hooks: &[Hook::FinalizeNamespace],
    ..UNKNOWN
};

pub const POD: Kind = Kind {
    name: "Pod",
    decode: |o| decode_as::<core::v1::Pod>(o),
    default: pod::default_pod,
    validate: pod::validate_pod,
    validate_update: pod::validate_pod_update,
    initial: initial::pod,
    printer: table::PODS,
    hooks: &[Hook::ResolvePriorityClass, Hook::LimitRanger, Hook::MountServiceAccountToken, Hook::GracefulDelete],
    ..UNKNOWN
};

pub const SERVICE: Kind = Kind {
    name: "Service",
    decode: |o| decode_as::<core::v1::Service>(o),
    default: |o| service::default("Service", o),
    validate: |o| service::validate("Service", o),
    validate_update: |old, new| service::validate_update("Service", old, new),
    names: NameRule::Label,
    initial: initial::load_balancer_status,
    printer: table::SERVICES,
    hooks: &[Hook::AllocateServiceAddresses],
    ..UNKNOWN
};

pub const ENDPOINTS: Kind = Kind {
    name: "Endpoints",
    decode: |o| decode_as::<core::v1::Endpoints>(o),
    default: |o| service::default("Endpoints", o),
    validate: |o| service::validate("Endpoints", o),
    printer: table::ENDPOINTS_PRINTER,
    ..KEPT
};

pub const CONFIG_MAP: Kind = Kind {
    name: "ConfigMap",
    decode: |o| decode_as::<core::v1::ConfigMap>(o),
    validate: |o| config::validate("ConfigMap", o),
    validate_update: |old, new| config::validate_update("ConfigMap", old, new),
    printer: table::CONFIG_MAPS,
    ..KEPT
};

pub const LIMIT_RANGE: Kind = Kind {
    name: "LimitRange",
    decode: |o| decode_as::<core::v1::LimitRange>(o),
    default: limits::default_limit_range,
    validate: limits::validate_limit_range,
    ..KEPT
};

pub const RESOURCE_QUOTA: Kind = Kind {
    name: "ResourceQuota",
    decode: |o| decode_as::<core::v1::ResourceQuota>(o),
    validate: limits::validate_quota,
    initial: limits::initial_quota,
    printer: table::RESOURCE_QUOTAS,
    ..UNKNOWN
};

pub const PERSISTENT_VOLUME: Kind = Kind {
    name: "PersistentVolume",
    decode: |o| decode_as::<core::v1::PersistentVolume>(o),
    default: storage::default_volume,
    validate: storage::validate_volume,
    validate_update: storage::validate_volume_update,
    initial: storage::initial_volume,
    printer: table::PERSISTENT_VOLUMES,
    ..UNKNOWN
};

pub const PERSISTENT_VOLUME_CLAIM: Kind = Kind {
    name: "PersistentVolumeClaim",
    decode: |o| decode_as::<core::v1::PersistentVolumeClaim>(o),
    default: storage::default_claim,
    validate: storage::validate_claim,
    validate_update: storage::validate_claim_update,
    initial: storage::initial_claim,
    printer: table::PERSISTENT_VOLUME_CLAIMS,
    hooks: &[Hook::DefaultStorageClass, Hook::LimitRanger],
    ..UNKNOWN
};

pub const STORAGE_CLASS: Kind = Kind {
    name: "StorageClass",
    decode: |o| decode_as::<k8s_openapi::api::storage::v1::StorageClass>(o),
    default: storage::default_class_fields,
    validate: storage::validate_class,
    validate_update: storage::validate_class_update,
    printer: table::STORAGE_CLASSES,
    ..KEPT
};

pub const SECRET: Kind = Kind {
    name: "Secret",
    decode: |o| decode_as::<core::v1::Secret>(o),
    default: config::default_secret,
    validate: |o| config::validate("Secret", o),
    validate_update: |old, new| config::validate_update("Secret", old, new),
    printer: table::SECRETS,
    ..KEPT
};

pub const NODE: Kind = Kind {
    name: "Node",
    decode: |o| decode_as::<core::v1::Node>(o),
    default: |o| cluster::default("Node", o),
    validate: |o| cluster::validate("Node", o),
    validate_update: |old, new| cluster::validate_update("Node", old, new),
    printer: table::NODES,
    ..KEPT
};

pub const EVENT: Kind = Kind {
    name: "Event",
    decode: |o| decode_as::<core::v1::Event>(o),
    validate: |o| cluster::validate("Event", o),
    printer: table::EVENTS,
    ..KEPT
};

pub const SERVICE_ACCOUNT: Kind = Kind {
    name: "ServiceAccount",
    decode: |o| decode_as::<core::v1::ServiceAccount>(o),
    validate: |o| config::validate("ServiceAccount", o),
    printer: table::SERVICE_ACCOUNTS,
    ..KEPT
};

pub const DEPLOYMENT: Kind = Kind {
    name: "Deployment",
    decode: |o| decode_as::<apps::v1::Deployment>(o),
    default: |o| workloads::default("Deployment", o),
    validate: |o| workloads::validate("Deployment", o),
    validate_update: |old, new| workloads::validate_update("Deployment", old, new),
    printer: table::DEPLOYMENTS,
    ..WORKLOAD
};

pub const REPLICA_SET: Kind = Kind {
    name: "ReplicaSet",
    decode: |o| decode_as::<apps::v1::ReplicaSet>(o),
    default: |o| workloads::default("ReplicaSet", o),
    validate: |o| workloads::validate("ReplicaSet", o),
    validate_update: |old, new| workloads::validate_update("ReplicaSet", old, new),
    required_status: &["replicas"],
    printer: table::REPLICA_SETS,
    ..WORKLOAD
};

pub const STATEFUL_SET: Kind = Kind {
    name: "StatefulSet",
    decode: |o| decode_as::<apps::v1::StatefulSet>(o),
    default: |o| workloads::default("StatefulSet", o),
    validate: |o| workloads::validate("StatefulSet", o),
    validate_update: |old, new| workloads::validate_update("StatefulSet", old, new),
    required_status: &["replicas"],
    printer: table::STATEFUL_SETS,
    ..WORKLOAD
};

pub const DAEMON_SET: Kind = Kind {
    name: "DaemonSet",
    decode: |o| decode_as::<apps::v1::DaemonSet>(o),
    default: |o| workloads::default("DaemonSet", o),
    validate: |o| workloads::validate("DaemonSet", o),
    validate_update: |old, new| workloads::validate_update("DaemonSet", old, new),
    required_status: &["currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"],
    printer: table::DAEMON_SETS,
    ..WORKLOAD
};

pub const CONTROLLER_REVISION: Kind = Kind {
    name: "ControllerRevision",
    decode: |o| decode_as::<apps::v1::ControllerRevision>(o),
    validate: |o| workloads::validate("ControllerRevision", o),
    validate_update: |old, new| workloads::validate_update("ControllerRevision", old, new),
    printer: table::CONTROLLER_REVISIONS,
    ..KEPT
};

pub const JOB: Kind = Kind {
    name: "Job",
    decode: |o| decode_as::<batch::v1::Job>(o),
    default: |o| workloads::default("Job", o),
    validate: |o| workloads::validate("Job", o),
    validate_update: |old, new| workloads::validate_update("Job", old, new),
    printer: table::JOBS,
    ..WORKLOAD
};

pub const CRON_JOB: Kind = Kind {
    name: "CronJob",
    decode: |o| decode_as::<batch::v1::CronJob>(o),
    default: |o| workloads::default("CronJob", o),
    validate: |o| workloads::validate("CronJob", o),
    printer: table::CRON_JOBS,
    ..WORKLOAD
};

pub const LEASE: Kind = Kind {
    name: "Lease",
    decode: |o| decode_as::<coordination::v1::Lease>(o),
    validate: |o| cluster::validate("Lease", o),
    printer: table::LEASES,
    ..KEPT
};

pub const HORIZONTAL_POD_AUTOSCALER: Kind = Kind {
    name: "HorizontalPodAutoscaler",
    decode: |o| decode_as::<autoscaling::v2::HorizontalPodAutoscaler>(o),
    default: |o| workloads::default("HorizontalPodAutoscaler", o),
    validate: |o| workloads::validate("HorizontalPodAutoscaler", o),
    required_status: &["desiredReplicas"],
    printer: table::HPAS,
    ..WORKLOAD
};

pub const ENDPOINT_SLICE: Kind = Kind {
    name: "EndpointSlice",
    decode: |o| decode_as::<discovery::v1::EndpointSlice>(o),
    default: |o| service::default("EndpointSlice", o),
    validate: |o| service::validate("EndpointSlice", o),
    validate_update: |old, new| service::validate_update("EndpointSlice", old, new),
    printer: table::ENDPOINT_SLICES,
    ..KEPT
};

pub const INGRESS: Kind = Kind {
    name: "Ingress",
    decode: |o| decode_as::<net::v1::Ingress>(o),
    validate: |o| networking::validate("Ingress", o),
    initial: initial::load_balancer_status,
    printer: table::INGRESSES,
    hooks: &[Hook::DefaultIngressClass],
    ..UNKNOWN
};

pub const INGRESS_CLASS: Kind = Kind {
    name: "IngressClass",
    decode: |o| decode_as::<net::v1::IngressClass>(o),
    validate: |o| networking::validate("IngressClass", o),
    validate_update: |old, new| networking::validate_update("IngressClass", old, new),
    printer: table::INGRESS_CLASSES,
    ..KEPT
};

pub const ROLE: Kind = Kind {
    name: "Role",
    decode: |o| decode_as::<authz::v1::Role>(o),
    validate: |o| rbac::validate("Role", o),
    names: NameRule::PathSegment,
    ..KEPT
};

pub const CLUSTER_ROLE: Kind = Kind {
    name: "ClusterRole",
    decode: |o| decode_as::<authz::v1::ClusterRole>(o),
    validate: |o| rbac::validate("ClusterRole", o),
    names: NameRule::PathSegment,
    ..KEPT
};

pub const ROLE_BINDING: Kind = Kind {
    name: "RoleBinding",
    decode: |o| decode_as::<authz::v1::RoleBinding>(o),
    default: |o| rbac::default("RoleBinding", o),
    validate: |o| rbac::validate("RoleBinding", o),
    validate_update: |old, new| rbac::validate_update("RoleBinding", old, new),
    names: NameRule::PathSegment,
    printer: table::ROLE_BINDINGS,
    ..KEPT
};

pub const CLUSTER_ROLE_BINDING: Kind = Kind {
    name: "ClusterRoleBinding",
    decode: |o| decode_as::<authz::v1::ClusterRoleBinding>(o),
    default: |o| rbac::default("ClusterRoleBinding", o),
    validate: |o| rbac::validate("ClusterRoleBinding", o),
    validate_update: |old, new| rbac::validate_update("ClusterRoleBinding", old, new),
    names: NameRule::PathSegment,
    printer: table::ROLE_BINDINGS,
    ..KEPT
};

pub const CERTIFICATE_SIGNING_REQUEST: Kind = Kind {
    name: "CertificateSigningRequest",
    decode: |o| decode_as::<certs::v1::CertificateSigningRequest>(o),
    validate: certificates::validate,
    validate_update: certificates::validate_update,
    printer: table::CSRS,
    hooks: &[Hook::SignCertificates],
    ..UNKNOWN
};

pub const REPLICATION_CONTROLLER: Kind = Kind {
    name: "ReplicationController",
    decode: |o| decode_as::<core::v1::ReplicationController>(o),
    default: |o| workloads::default("ReplicationController", o),
    validate: |o| workloads::validate("ReplicationController", o),
    validate_update: |old, new| workloads::validate_update("ReplicationController", old, new),
    required_status: &["replicas"],
    printer: table::REPLICATION_CONTROLLERS,
    ..WORKLOAD
};

pub const POD_TEMPLATE: Kind = Kind {
    name: "PodTemplate",
    decode: |o| decode_as::<core::v1::PodTemplate>(o),
    default: |o| {
        if let Some(template) = o.get_mut("template") {
            pod::default_template(template)
        }
    },
    validate: |o| pod::validate_template(o.get("template").unwrap_or(&Value::Null), "template"),
    printer: table::POD_TEMPLATES,
    ..KEPT
};

pub const PRIORITY_CLASS: Kind = Kind {
    name: "PriorityClass",
    decode: |o| decode_as::<prio::v1::PriorityClass>(o),
    default: scheduling::default,
    validate: scheduling::validate,
    validate_update: scheduling::validate_update,
    printer: table::PRIORITY_CLASSES,
    ..KEPT
};

pub const POD_DISRUPTION_BUDGET: Kind = Kind {
    name: "PodDisruptionBudget",
    decode: |o| decode_as::<pdb::v1::PodDisruptionBudget>(o),
    validate: policy::validate,
    required_status: &["currentHealthy", "desiredHealthy", "disruptionsAllowed", "expectedPods"],
    printer: table::POD_DISRUPTION_BUDGETS,
    ..WORKLOAD
};

pub const CUSTOM_RESOURCE_DEFINITION: Kind = Kind {
    name: "CustomResourceDefinition",
    decode: |o| decode_as::<crds::CustomResourceDefinition>(o),
    default: apiextensions::default,
    validate: apiextensions::validate,
    validate_update: apiextensions::validate_update,
    generation: true,
    printer: table::DEFAULT_PRINTER,
    hooks: &[Hook::AcceptNames, Hook::CleanUpCustomObjects],
    ..UNKNOWN
};

pub const MUTATING_WEBHOOK_CONFIGURATION: Kind = Kind {
    name: "MutatingWebhookConfiguration",
    decode: |o| decode_as::<admissionregistration::v1::MutatingWebhookConfiguration>(o),
    default: |o| crate::webhooks::default(o, true),
    validate: crate::webhooks::validate,
    generation: true,
    ..KEPT
};

pub const A_P_I_SERVICE: Kind = Kind {
    name: "APIService",
    decode: |o| decode_as::<aggregation::APIService>(o),
    validate: apiregistration::validate,
    initial: apiregistration::initial,
    printer: table::API_SERVICES,
    ..UNKNOWN
};

pub const VALIDATING_WEBHOOK_CONFIGURATION: Kind = Kind {
    name: "ValidatingWebhookConfiguration",
    decode: |o| decode_as::<admissionregistration::v1::ValidatingWebhookConfiguration>(o),
    default: |o| crate::webhooks::default(o, false),
    validate: crate::webhooks::validate,
    generation: true,
    ..KEPT
};

/// The entry of `kind`, if keel serves it.
pub fn find(kind: &str) -> Option<&'static Kind> {
    crate::resources::RESOURCES.iter().map(|r| r.rules).find(|k| k.name == kind && !k.name.is_empty())
}

/// The rules of `kind`: its entry, or those of a kind keel does not know.
pub fn rules(kind: &str) -> &'static Kind {
    find(kind).unwrap_or(&UNKNOWN)
}

/// An object of the resource a [`crate::resources::Resource::stored_as`] resource is stored as, shown as
/// `resource`'s.
pub fn from_storage(resource: &crate::resources::Resource, object: &Value) -> Value {
    match (resource.group, resource.kind) {
        ("events.k8s.io", "Event") => events::from_core(object),
        _ => object.clone(),
    }
}

/// An object of `resource` as the resource it is stored as.
pub fn to_storage(resource: &crate::resources::Resource, object: &Value) -> Value {
    match (resource.group, resource.kind) {
        ("events.k8s.io", "Event") => events::to_core(object),
        _ => object.clone(),
    }
}

/// The rules of a served resource's objects (a custom resource's kind may share a built-in kind's name).
pub fn of(resource: &crate::resources::Resource) -> &'static Kind {
    resource.rules
}

/// What the server sets on a new object besides metadata, per kind ([`Kind::initial`]).
mod initial {
    use serde_json::{json, Value};

    /// The client's status, if any, stays.
    pub fn keep(_: &mut Value) {}

    pub fn empty_status(object: &mut Value) {
        set(object, json!({}));
    }

    pub fn load_balancer_status(object: &mut Value) {
        set(object, json!({"loadBalancer": {}}));
    }

    pub fn pod(object: &mut Value) {
        let qos = crate::meta::qos_class(object.get("spec").unwrap_or(&Value::Null));
        set(object, json!({"phase": "Pending", "qosClass": qos}));
    }

    /// Active, with the namespace controller's finalizer.
    pub fn namespace(object: &mut Value) {
        set(object, json!({"phase": "Active"}));
        let Some(map) = object.as_object_mut() else { return };
        let spec = map.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.entry("finalizers").or_insert_with(|| json!(["kubernetes"]));
        }
    }

    fn set(object: &mut Value, status: Value) {
        if let Some(map) = object.as_object_mut() {
            map.insert("status".into(), status);
        }
    }
}

/// Decodes `object` as the k8s-openapi type of `kind`. `Err` (for a 400 Bad Request) names the field that
/// does not fit and why; `Ok` lists the fields the type does not know (`spec.containers[0].imagee`), which
/// `fieldValidation=Strict` rejects and `Warn` reports.
pub fn decode(kind: &str, object: &Value) -> Result<Vec<String>, String> {
    let Some(entry) = find(kind) else { return Err(format!("no kind {kind:?} is registered")) };
    let version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    (entry.decode)(object).map_err(|e| format!("{kind} in version {version:?} cannot be handled as a {kind}: {e}"))
}

/// Kubernetes' defaults for `kind`, filled in place where the object leaves them unset. Unknown kinds are
/// left alone.
pub fn default(kind: &str, object: &mut Value) {
    (rules(kind).default)(object)
}

/// Every problem with the kind-specific fields of a new object (metadata is the server's to check).
pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    (rules(kind).validate)(object)
}

/// What an update may not change, beyond [`validate`] of the new object: a pod's spec but for images,
/// deadline and tolerations, workload selectors, a job's template, a service's cluster IP, immutable
/// ConfigMaps and Secrets, …
pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    (rules(kind).validate_update)(old, new)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The resources admitted by their own kind's rules (not as the resource they are stored as).
    fn admitted() -> impl Iterator<Item = &'static crate::resources::Resource> {
        crate::resources::RESOURCES.iter().filter(|r| r.stored_as.is_none())
    }

    #[test]
    fn every_served_resource_names_its_own_kinds_rules() {
        for r in crate::resources::RESOURCES {
            let reviews = r.kind.ends_with("Review");
            assert!(r.rules.name == r.kind || (reviews && r.rules.name.is_empty()), "{}: {}", r.kind, r.rules.name);
        }
    }

    #[test]
    fn decode_knows_every_served_kind() {
        for r in admitted() {
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
