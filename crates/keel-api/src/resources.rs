//! The resources keel serves: what discovery lists for each (names, scope, short names, categories,
//! subresources), which field selectors each accepts, and where its objects live in the store
//! (`/registry/<plural>/<namespace>/<name>`, as Kubernetes lays out etcd).

/// Every verb a served resource supports.
pub const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

use crate::kinds::{self, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// Field selector keys beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// Served for a CustomResourceDefinition ([`crate::custom`]): its objects are checked against the
    /// definition's schema and stored under `/registry/<group>/<plural>/`.
    pub custom: bool,
    /// Another version of a built-in resource, whose objects are stored (and admitted) as the resource
    /// of this `apiVersion` with the same plural, converted both ways ([`crate::kinds::events`]).
    pub stored_as: Option<&'static str>,
    /// Its kind's rules: decoding, defaults, validation, printer columns, the server's hooks
    /// ([`crate::kinds::CUSTOM`] for custom resources, whose schema does the rest).
    pub rules: &'static Kind,
}

impl Resource {
    /// `v1`, `apps/v1`: the `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        self.api_version_at(self.version)
    }

    /// The `apiVersion` of its objects as `version` of the same group shows them.
    pub fn api_version_at(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether `?fieldSelector=` may name `field` for this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name" || field == "metadata.namespace" || self.fields.contains(&field)
    }

    /// The store key of one object (`namespace` is ignored for cluster-scoped resources).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.prefix(None))
        } else {
            format!("{}{name}", self.prefix(None))
        }
    }

    /// The store prefix of a list: every object, or one namespace's. Built-in resources live at
    /// `/registry/<plural>/`, custom ones at `/registry/<group>/<plural>/`, as in kube-apiserver's etcd.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let all = match self.custom {
            true => format!("/registry/{}/{}/", self.group, self.plural),
            false => format!("/registry/{}/", self.plural),
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{all}{ns}/"),
            _ => all,
        }
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

/// The fields every resource of a group version shares; each entry below names what differs.
pub(crate) const fn group(group: &'static str, version: &'static str) -> Resource {
    Resource {
        group,
        version,
        kind: "",
        plural: "",
        singular: "",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        fields: &[],
        custom: false,
        stored_as: None,
        rules: &kinds::UNKNOWN,
    }
}

const CORE: Resource = group("", "v1");
const APPS: Resource = group("apps", "v1");
const BATCH: Resource = group("batch", "v1");
const COORDINATION: Resource = group("coordination.k8s.io", "v1");
const AUTOSCALING: Resource = group("autoscaling", "v2");
const DISCOVERY: Resource = group("discovery.k8s.io", "v1");
const NETWORKING: Resource = group("networking.k8s.io", "v1");
const RBAC: Resource = group("rbac.authorization.k8s.io", "v1");
const POLICY: Resource = group("policy", "v1");
const SCHEDULING: Resource = group("scheduling.k8s.io", "v1");
const STORAGE: Resource = group("storage.k8s.io", "v1");
const APIEXTENSIONS: Resource = group("apiextensions.k8s.io", "v1");
const ADMISSIONREGISTRATION: Resource = group("admissionregistration.k8s.io", "v1");
const APIREGISTRATION: Resource = group("apiregistration.k8s.io", "v1");
const EVENTS: Resource = group("events.k8s.io", "v1");

/// Every resource served, in discovery order.
pub const RESOURCES: &[Resource] = &[
    Resource {
        kind: "Namespace",
        rules: &kinds::NAMESPACE,
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status", "finalize"],
        fields: &["status.phase"],
        ..CORE
    },
    Resource {
        kind: "Pod",
        rules: &kinds::POD,
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        categories: ALL,
        subresources: &["status", "binding", "eviction", "log", "exec", "portforward"],
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ..CORE
    },
    Resource {
        kind: "Service",
        rules: &kinds::SERVICE,
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        categories: ALL,
        subresources: STATUS,
        ..CORE
    },
    Resource {
        kind: "Endpoints",
        rules: &kinds::ENDPOINTS,
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        ..CORE
    },
    Resource {
        kind: "ConfigMap",
        rules: &kinds::CONFIG_MAP,
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        ..CORE
    },
    Resource {
        kind: "LimitRange",
        rules: &kinds::LIMIT_RANGE,
        plural: "limitranges",
        singular: "limitrange",
        short_names: &["limits"],
        ..CORE
    },
    Resource {
        kind: "ResourceQuota",
        rules: &kinds::RESOURCE_QUOTA,
        plural: "resourcequotas",
        singular: "resourcequota",
        short_names: &["quota"],
        subresources: STATUS,
        ..CORE
    },
    Resource {
        kind: "PersistentVolume",
        rules: &kinds::PERSISTENT_VOLUME,
        plural: "persistentvolumes",
        singular: "persistentvolume",
        namespaced: false,
        short_names: &["pv"],
        subresources: STATUS,
        ..CORE
    },
    Resource {
        kind: "PersistentVolumeClaim",
        rules: &kinds::PERSISTENT_VOLUME_CLAIM,
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short_names: &["pvc"],
        subresources: STATUS,
        ..CORE
    },
    Resource {
        kind: "Secret",
        rules: &kinds::SECRET,
        plural: "secrets",
        singular: "secret",
        fields: &["type"],
        ..CORE
    },
    Resource {
        kind: "Node",
        rules: &kinds::NODE,
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        subresources: STATUS,
        fields: &["spec.unschedulable"],
        ..CORE
    },
    Resource {
        kind: "Event",
        rules: &kinds::EVENT,
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        fields: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ..CORE
    },
    Resource {
        kind: "ServiceAccount",
        rules: &kinds::SERVICE_ACCOUNT,
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        subresources: &["token"],
        ..CORE
    },
    Resource {
        kind: "Deployment",
        rules: &kinds::DEPLOYMENT,
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        categories: ALL,
        subresources: STATUS_SCALE,
        ..APPS
    },
    Resource {
        kind: "ReplicaSet",
        rules: &kinds::REPLICA_SET,
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        categories: ALL,
        subresources: STATUS_SCALE,
        fields: &["status.replicas"],
        ..APPS
    },
    Resource {
        kind: "StatefulSet",
        rules: &kinds::STATEFUL_SET,
        plural: "statefulsets",
        singular: "statefulset",
        short_names: &["sts"],
        categories: ALL,
        subresources: STATUS_SCALE,
        ..APPS
    },
    Resource {
        kind: "DaemonSet",
        rules: &kinds::DAEMON_SET,
        plural: "daemonsets",
        singular: "daemonset",
        short_names: &["ds"],
        categories: ALL,
        subresources: STATUS,
        ..APPS
    },
    Resource {
        kind: "ControllerRevision",
        rules: &kinds::CONTROLLER_REVISION,
        plural: "controllerrevisions",
        singular: "controllerrevision",
        ..APPS
    },
    Resource {
        kind: "Job",
        rules: &kinds::JOB,
        plural: "jobs",
        singular: "job",
        categories: ALL,
        subresources: STATUS,
        fields: &["status.successful"],
        ..BATCH
    },
    Resource {
        kind: "CronJob",
        rules: &kinds::CRON_JOB,
        plural: "cronjobs",
        singular: "cronjob",
        short_names: &["cj"],
        categories: ALL,
        subresources: STATUS,
        ..BATCH
    },
    Resource { kind: "Lease", rules: &kinds::LEASE, plural: "leases", singular: "lease", ..COORDINATION },
    Resource {
        kind: "HorizontalPodAutoscaler",
        rules: &kinds::HORIZONTAL_POD_AUTOSCALER,
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        short_names: &["hpa"],
        categories: ALL,
        subresources: STATUS,
        ..AUTOSCALING
    },
    Resource {
        kind: "EndpointSlice",
        rules: &kinds::ENDPOINT_SLICE,
        plural: "endpointslices",
        singular: "endpointslice",
        ..DISCOVERY
    },
    Resource {
        kind: "IngressClass",
        rules: &kinds::INGRESS_CLASS,
        plural: "ingressclasses",
        singular: "ingressclass",
        namespaced: false,
        ..NETWORKING
    },
    Resource {
        kind: "Ingress",
        rules: &kinds::INGRESS,
        plural: "ingresses",
        singular: "ingress",
        short_names: &["ing"],
        subresources: STATUS,
        ..NETWORKING
    },
    Resource {
        kind: "ClusterRole",
        rules: &kinds::CLUSTER_ROLE,
        plural: "clusterroles",
        singular: "clusterrole",
        namespaced: false,
        ..RBAC
    },
    Resource {
        kind: "ClusterRoleBinding",
        rules: &kinds::CLUSTER_ROLE_BINDING,
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        namespaced: false,
        ..RBAC
    },
    Resource { kind: "Role", rules: &kinds::ROLE, plural: "roles", singular: "role", ..RBAC },
    Resource {
        kind: "RoleBinding",
        rules: &kinds::ROLE_BINDING,
        plural: "rolebindings",
        singular: "rolebinding",
        ..RBAC
    },
    Resource {
        kind: "CertificateSigningRequest",
        rules: &kinds::CERTIFICATE_SIGNING_REQUEST,
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        namespaced: false,
        short_names: &["csr"],
        subresources: &["status", "approval"],
        ..CERTIFICATES
    },
    Resource {
        kind: "PodTemplate",
        rules: &kinds::POD_TEMPLATE,
        plural: "podtemplates",
        singular: "podtemplate",
        ..CORE
    },
    Resource {
        kind: "ReplicationController",
        rules: &kinds::REPLICATION_CONTROLLER,
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        short_names: &["rc"],
        categories: ALL,
        subresources: STATUS_SCALE,
        ..CORE
    },
    Resource {
        kind: "PriorityClass",
        rules: &kinds::PRIORITY_CLASS,
        plural: "priorityclasses",
        singular: "priorityclass",
        namespaced: false,
        short_names: &["pc"],
        ..SCHEDULING
    },
    Resource {
        kind: "StorageClass",
        rules: &kinds::STORAGE_CLASS,
        plural: "storageclasses",
        singular: "storageclass",
        namespaced: false,
        short_names: &["sc"],
        ..STORAGE
    },
    Resource {
        kind: "PodDisruptionBudget",
        rules: &kinds::POD_DISRUPTION_BUDGET,
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        short_names: &["pdb"],
        subresources: STATUS,
        ..POLICY
    },
    Resource {
        kind: "CustomResourceDefinition",
        rules: &kinds::CUSTOM_RESOURCE_DEFINITION,
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: STATUS,
        ..APIEXTENSIONS
    },
    Resource {
        kind: "MutatingWebhookConfiguration",
        rules: &kinds::MUTATING_WEBHOOK_CONFIGURATION,
        plural: "mutatingwebhookconfigurations",
        singular: "mutatingwebhookconfiguration",
        namespaced: false,
        categories: &["api-extensions"],
        ..ADMISSIONREGISTRATION
    },
    Resource {
        kind: "ValidatingWebhookConfiguration",
        rules: &kinds::VALIDATING_WEBHOOK_CONFIGURATION,
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        namespaced: false,
        categories: &["api-extensions"],
        ..ADMISSIONREGISTRATION
    },
    Resource {
        kind: "Event",
        rules: &kinds::EVENT,
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        stored_as: Some("v1"),
        ..EVENTS
    },
    Resource {
        kind: "APIService",
        rules: &kinds::A_P_I_SERVICE,
        plural: "apiservices",
        singular: "apiservice",
        namespaced: false,
        categories: &["api-extensions"],
        subresources: STATUS,
        ..APIREGISTRATION
    },
];

const AUTHORIZATION: Resource = group("authorization.k8s.io", "v1");
const CERTIFICATES: Resource = group("certificates.k8s.io", "v1");

/// Requests rather than objects: only created (POST), answered at once, never stored or listed.
pub const REVIEWS: &[Resource] = &[
    Resource {
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        namespaced: false,
        ..group("authentication.k8s.io", "v1")
    },
    Resource {
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        ..AUTHORIZATION
    },
    Resource {
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        namespaced: false,
        ..AUTHORIZATION
    },
    Resource {
        kind: "TokenReview",
        plural: "tokenreviews",
        singular: "tokenreview",
        namespaced: false,
        ..group("authentication.k8s.io", "v1")
    },
    Resource {
        kind: "LocalSubjectAccessReview",
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        namespaced: true,
        ..AUTHORIZATION
    },
    Resource {
        kind: "SubjectAccessReview",
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        namespaced: false,
        ..AUTHORIZATION
    },
];

/// The resource at `/api/v1/<plural>` (group "") or `/apis/<group>/<version>/<plural>`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Whether the API server itself serves `group` (the core group is "").
pub fn builtin_group(group: &str) -> bool {
    RESOURCES.iter().chain(REVIEWS).any(|r| r.group == group)
}

/// The resource of objects with this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The groups served, with their one version each, in discovery order (the core group first, as "").
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_so_store_keys_are() {
        // Another version of a resource shares its plural (and store keys) on purpose.
        let own: Vec<&Resource> = RESOURCES.iter().filter(|r| r.stored_as.is_none()).collect();
        for r in RESOURCES.iter().filter(|r| r.stored_as.is_some()) {
            let (group, version) = r.stored_as.unwrap().split_once('/').unwrap_or(("", r.stored_as.unwrap()));
            assert!(find(group, version, r.plural).is_some(), "{} is stored as a resource that exists", r.plural);
        }
        let mut plurals: Vec<&str> = own.iter().map(|r| r.plural).collect();
        plurals.sort();
        plurals.dedup();
        assert_eq!(plurals.len(), own.len());
        let mut shorts: Vec<&str> = own.iter().flat_map(|r| r.short_names.iter().copied()).collect();
        let n = shorts.len();
        shorts.sort();
        shorts.dedup();
        assert_eq!(shorts.len(), n);
    }

    #[test]
    fn lookups_keys_and_prefixes() {
        let d = find("apps", "v1", "deployments").unwrap();
        assert_eq!(d.api_version(), "apps/v1");
        assert_eq!(d.key("default", "web"), "/registry/deployments/default/web");
        assert_eq!(d.prefix(Some("default")), "/registry/deployments/default/");
        assert_eq!(d.prefix(None), "/registry/deployments/");
        let ns = by_kind("v1", "Namespace").unwrap();
        assert_eq!(ns.key("ignored", "kube-system"), "/registry/namespaces/kube-system");
        assert_eq!(ns.prefix(Some("x")), "/registry/namespaces/");
        assert!(find("", "v1", "deployments").is_none());
        assert!(by_kind("apps/v1", "Pod").is_none());
        let pods = find("", "v1", "pods").unwrap();
        assert!(pods.supports_field("spec.nodeName") && pods.supports_field("metadata.name"));
        assert!(!pods.supports_field("spec.containers"));
    }

    #[test]
    fn groups_come_in_discovery_order() {
        let g = group_versions();
        assert_eq!(g[0], ("", "v1"));
        assert!(g.contains(&("apps", "v1")) && g.contains(&("autoscaling", "v2")));
        assert!(g.contains(&("networking.k8s.io", "v1")));
        assert!(g.contains(&("rbac.authorization.k8s.io", "v1")));
        assert!(g.contains(&("certificates.k8s.io", "v1")));
        assert!(g.contains(&("policy", "v1")) && g.contains(&("scheduling.k8s.io", "v1")));
        assert!(g.contains(&("storage.k8s.io", "v1")));
        assert_eq!(g.len(), 16);
    }
}
