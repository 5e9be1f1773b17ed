//! The descriptors of Kubernetes' protobuf messages, and the facts about the Go types behind them that the
//! descriptors do not carry: which scalar fields are pointers (an explicit zero is kept) and which message
//! fields are embedded structs (inlined into their parent in JSON).

use std::collections::HashSet;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

use crate::Error;

/// Descriptors compiled by build.rs from the Kubernetes 1.33 `.proto` files.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.fds"));

/// Proto package prefixes of the compiled files, stripped to name messages as `<group>.<version>.<Message>`
/// (for example `core.v1.PodSpec`, `meta.v1.ObjectMeta`, `util.intstr.IntOrString`).
const PACKAGE_PREFIXES: &[&str] = &[
    "api.",
    "apimachinery.pkg.apis.",
    "apimachinery.pkg.",
    "apiextensions_apiserver.pkg.apis.",
    "kube_aggregator.pkg.apis.",
    "metrics.pkg.apis.",
];

/// Kinds of `meta/v1` that every group version accepts (DeleteOptions bodies name the group of the resource).
const META_KINDS: &[&str] = &[
    "DeleteOptions",
    "CreateOptions",
    "UpdateOptions",
    "PatchOptions",
    "GetOptions",
    "ListOptions",
    "Status",
    "WatchEvent",
];

/// Scalar fields that are pointers in the Go types (`*int32`, `*bool`, `*string`…), by message: on the wire
/// an explicit zero and an absent field differ, and Go's JSON keeps the zero (`replicas: 0`,
/// `automountServiceAccountToken: false`). Every other scalar is a plain Go value whose zero JSON omits.
const POINTERS: &[(&str, &[&str])] = &[
    // meta/v1
    ("meta.v1.ObjectMeta", &["deletionGracePeriodSeconds"]),
    ("meta.v1.OwnerReference", &["controller", "blockOwnerDeletion"]),
    ("meta.v1.ListMeta", &["remainingItemCount"]),
    (
        "meta.v1.DeleteOptions",
        &[
            "gracePeriodSeconds",
            "orphanDependents",
            "propagationPolicy",
            "ignoreStoreReadErrorWithClusterBreakingPotential",
        ],
    ),
    ("meta.v1.Preconditions", &["uid", "resourceVersion"]),
    ("meta.v1.PatchOptions", &["force"]),
    ("meta.v1.ListOptions", &["timeoutSeconds", "sendInitialEvents"]),
    // core/v1: pods and their volumes
    (
        "core.v1.PodSpec",
        &[
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "automountServiceAccountToken",
            "shareProcessNamespace",
            "priority",
            "runtimeClassName",
            "enableServiceLinks",
            "preemptionPolicy",
            "setHostnameAsFQDN",
            "hostUsers",
        ],
    ),
    (
        "core.v1.PodSecurityContext",
        &[
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "supplementalGroupsPolicy",
            "fsGroup",
            "fsGroupChangePolicy",
            "seLinuxChangePolicy",
        ],
    ),
    (
        "core.v1.SecurityContext",
        &[
            "privileged",
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
            "procMount",
        ],
    ),
    (
        "core.v1.WindowsSecurityContextOptions",
        &["gmsaCredentialSpecName", "gmsaCredentialSpec", "runAsUserName", "hostProcess"],
    ),
    ("core.v1.SeccompProfile", &["localhostProfile"]),
    ("core.v1.AppArmorProfile", &["localhostProfile"]),
    ("core.v1.PodDNSConfigOption", &["value"]),
    ("core.v1.Container", &["restartPolicy"]),
    ("core.v1.EphemeralContainerCommon", &["restartPolicy"]),
    ("core.v1.Probe", &["terminationGracePeriodSeconds"]),
    ("core.v1.GRPCAction", &["service"]),
    ("core.v1.Lifecycle", &["stopSignal"]),
    ("core.v1.VolumeMount", &["recursiveReadOnly", "mountPropagation"]),
    ("core.v1.VolumeMountStatus", &["recursiveReadOnly"]),
    ("core.v1.ContainerStatus", &["started", "stopSignal"]),
    ("core.v1.Toleration", &["tolerationSeconds"]),
    ("core.v1.TopologySpreadConstraint", &["minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy"]),
    ("core.v1.PodResourceClaim", &["resourceClaimName", "resourceClaimTemplateName"]),
    ("core.v1.PodResourceClaimStatus", &["resourceClaimName"]),
    ("core.v1.ConfigMapKeySelector", &["optional"]),
    ("core.v1.SecretKeySelector", &["optional"]),
    ("core.v1.ConfigMapEnvSource", &["optional"]),
    ("core.v1.SecretEnvSource", &["optional"]),
    ("core.v1.SecretVolumeSource", &["defaultMode", "optional"]),
    ("core.v1.ConfigMapVolumeSource", &["defaultMode", "optional"]),
    ("core.v1.SecretProjection", &["optional"]),
    ("core.v1.ConfigMapProjection", &["optional"]),
    ("core.v1.ProjectedVolumeSource", &["defaultMode"]),
    ("core.v1.DownwardAPIVolumeSource", &["defaultMode"]),
    ("core.v1.DownwardAPIVolumeFile", &["mode"]),
    ("core.v1.KeyToPath", &["mode"]),
    ("core.v1.ServiceAccountTokenProjection", &["expirationSeconds"]),
    ("core.v1.ClusterTrustBundleProjection", &["name", "signerName", "optional"]),
    ("core.v1.HostPathVolumeSource", &["type"]),
    ("core.v1.ISCSIVolumeSource", &["initiatorName"]),
    ("core.v1.ISCSIPersistentVolumeSource", &["initiatorName"]),
    ("core.v1.FCVolumeSource", &["lun"]),
    ("core.v1.AzureDiskVolumeSource", &["cachingMode", "fsType", "readOnly", "kind"]),
    ("core.v1.AzureFilePersistentVolumeSource", &["secretNamespace"]),
    ("core.v1.GlusterfsPersistentVolumeSource", &["endpointsNamespace"]),
    ("core.v1.LocalVolumeSource", &["fsType"]),
    ("core.v1.CSIVolumeSource", &["readOnly", "fsType"]),
    ("core.v1.PersistentVolumeSpec", &["volumeMode", "volumeAttributesClassName"]),
    ("core.v1.PersistentVolumeClaimSpec", &["storageClassName", "volumeMode", "volumeAttributesClassName"]),
    ("core.v1.PersistentVolumeClaimStatus", &["currentVolumeAttributesClassName"]),
    ("core.v1.TypedLocalObjectReference", &["apiGroup"]),
    ("core.v1.TypedObjectReference", &["apiGroup", "namespace"]),
    // core/v1: services, endpoints, nodes, accounts, configuration
    (
        "core.v1.ServiceSpec",
        &[
            "ipFamilyPolicy",
            "allocateLoadBalancerNodePorts",
            "loadBalancerClass",
            "internalTrafficPolicy",
            "trafficDistribution",
        ],
    ),
    ("core.v1.ServicePort", &["appProtocol"]),
    ("core.v1.ClientIPConfig", &["timeoutSeconds"]),
    ("core.v1.LoadBalancerIngress", &["ipMode"]),
    ("core.v1.PortStatus", &["error"]),
    ("core.v1.EndpointAddress", &["nodeName"]),
    ("core.v1.EndpointPort", &["appProtocol"]),
    ("core.v1.NodeRuntimeHandlerFeatures", &["recursiveReadOnlyMounts", "userNamespaces"]),
    ("core.v1.NodeFeatures", &["supplementalGroupsPolicy"]),
    ("core.v1.NodeSwapStatus", &["capacity"]),
    ("core.v1.ServiceAccount", &["automountServiceAccountToken"]),
    ("core.v1.Secret", &["immutable"]),
    ("core.v1.ConfigMap", &["immutable"]),
    ("core.v1.Preconditions", &["uid"]),
    ("core.v1.PodLogOptions", &["sinceSeconds", "tailLines", "limitBytes", "stream"]),
    ("core.v1.ReplicationControllerSpec", &["replicas"]),
    // apps/v1
    ("apps.v1.DeploymentSpec", &["replicas", "revisionHistoryLimit", "progressDeadlineSeconds"]),
    ("apps.v1.DeploymentStatus", &["terminatingReplicas", "collisionCount"]),
    ("apps.v1.ReplicaSetSpec", &["replicas"]),
    ("apps.v1.ReplicaSetStatus", &["terminatingReplicas"]),
    ("apps.v1.StatefulSetSpec", &["replicas", "revisionHistoryLimit"]),
    ("apps.v1.StatefulSetStatus", &["collisionCount"]),
    ("apps.v1.RollingUpdateStatefulSetStrategy", &["partition"]),
    ("apps.v1.DaemonSetSpec", &["revisionHistoryLimit"]),
    ("apps.v1.DaemonSetStatus", &["collisionCount"]),
    // batch/v1
    (
        "batch.v1.JobSpec",
        &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "manualSelector",
            "ttlSecondsAfterFinished",
            "completionMode",
            "suspend",
            "podReplacementPolicy",
            "managedBy",
        ],
    ),
    ("batch.v1.JobStatus", &["terminating", "failedIndexes", "ready"]),
    ("batch.v1.PodFailurePolicyOnExitCodesRequirement", &["containerName"]),
    ("batch.v1.SuccessPolicyRule", &["succeededIndexes", "succeededCount"]),
    (
        "batch.v1.CronJobSpec",
        &["startingDeadlineSeconds", "suspend", "successfulJobsHistoryLimit", "failedJobsHistoryLimit", "timeZone"],
    ),
    // autoscaling
    ("autoscaling.v1.HorizontalPodAutoscalerSpec", &["minReplicas", "targetCPUUtilizationPercentage"]),
    ("autoscaling.v1.HorizontalPodAutoscalerStatus", &["observedGeneration", "currentCPUUtilizationPercentage"]),
    ("autoscaling.v2.HorizontalPodAutoscalerSpec", &["minReplicas"]),
    ("autoscaling.v2.HorizontalPodAutoscalerStatus", &["observedGeneration"]),
    ("autoscaling.v2.HPAScalingRules", &["stabilizationWindowSeconds", "selectPolicy"]),
    ("autoscaling.v2.MetricTarget", &["averageUtilization"]),
    ("autoscaling.v2.MetricValueStatus", &["averageUtilization"]),
    // discovery/v1
    ("discovery.v1.Endpoint", &["hostname", "nodeName", "zone"]),
    ("discovery.v1.EndpointConditions", &["ready", "serving", "terminating"]),
    ("discovery.v1.EndpointPort", &["name", "protocol", "port", "appProtocol"]),
    // coordination/v1
    (
        "coordination.v1.LeaseSpec",
        &["holderIdentity", "leaseDurationSeconds", "leaseTransitions", "strategy", "preferredHolder"],
    ),
    // policy/v1
    ("policy.v1.PodDisruptionBudgetSpec", &["unhealthyPodEvictionPolicy"]),
];

/// Plain (non-pointer) scalar fields whose Go JSON tag has no `omitempty`: Go writes their zero too
/// (`"disruptionsAllowed": 0`), and lists without `omitempty` are `null` when empty. Mostly required fields
/// and status counters; listed for the kinds keel serves.
const NOT_OMITTED: &[(&str, &[&str])] = &[
    ("meta.v1.OwnerReference", &["apiVersion", "kind", "name", "uid"]),
    ("core.v1.Container", &["name"]),
    ("core.v1.ContainerPort", &["containerPort"]),
    ("core.v1.ServicePort", &["port"]),
    ("core.v1.EndpointPort", &["port"]),
    ("core.v1.ContainerStatus", &["name", "ready", "restartCount", "image", "imageID"]),
    ("core.v1.ContainerStateTerminated", &["exitCode"]),
    ("core.v1.WeightedPodAffinityTerm", &["weight"]),
    ("core.v1.PreferredSchedulingTerm", &["weight"]),
    ("core.v1.TopologySpreadConstraint", &["maxSkew"]),
    ("core.v1.Event", &["reportingComponent", "reportingInstance"]),
    ("apps.v1.ReplicaSetStatus", &["replicas"]),
    ("apps.v1.StatefulSetStatus", &["replicas", "availableReplicas"]),
    (
        "apps.v1.DaemonSetStatus",
        &["currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"],
    ),
    ("apps.v1.ControllerRevision", &["revision"]),
    ("autoscaling.v1.ScaleStatus", &["replicas"]),
    ("autoscaling.v2.HorizontalPodAutoscalerSpec", &["maxReplicas"]),
    ("autoscaling.v2.HorizontalPodAutoscalerStatus", &["desiredReplicas", "currentMetrics"]),
    (
        "policy.v1.PodDisruptionBudgetStatus",
        &["disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"],
    ),
];

/// Embedded Go structs (`json:",inline"`): the proto field holds a message whose fields JSON shows in
/// the parent object.
const INLINE: &[(&str, &str)] = &[
    ("core.v1.Volume", "volumeSource"),
    ("core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("core.v1.Probe", "handler"),
    ("core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("core.v1.ConfigMapVolumeSource", "localObjectReference"),
    ("core.v1.ConfigMapProjection", "localObjectReference"),
    ("core.v1.ConfigMapKeySelector", "localObjectReference"),
    ("core.v1.ConfigMapEnvSource", "localObjectReference"),
    ("core.v1.SecretProjection", "localObjectReference"),
    ("core.v1.SecretKeySelector", "localObjectReference"),
    ("core.v1.SecretEnvSource", "localObjectReference"),
    ("networking.v1.IngressRule", "ingressRuleValue"),
    ("networking.v1beta1.IngressRule", "ingressRuleValue"),
    ("admissionregistration.v1.RuleWithOperations", "rule"),
    ("admissionregistration.v1.NamedRuleWithOperations", "ruleWithOperations"),
];

/// The decoding schema: descriptors plus the Go facts above.
pub(crate) struct Schema {
    pool: DescriptorPool,
    /// `runtime.Unknown`, the envelope of every body.
    pub(crate) unknown: MessageDescriptor,
    /// Scalar fields whose zero Go's JSON writes: pointers and fields without `omitempty`.
    keep_zero: HashSet<(String, String)>,
    inline: HashSet<(String, String)>,
}

impl Schema {
    pub(crate) fn get() -> Result<&'static Schema, Error> {
        static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
        SCHEMA.get_or_init(Schema::load).as_ref().map_err(|e| Error::Schema(e.clone()))
    }

    fn load() -> Result<Schema, String> {
        let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string())?;
        let unknown =
            pool.get_message_by_name("apimachinery.pkg.runtime.Unknown").ok_or("no runtime.Unknown message")?;
        let pairs = |entries: &mut dyn Iterator<Item = (&str, &str)>| {
            entries.map(|(m, f)| (m.to_owned(), f.to_owned())).collect()
        };
        let pointers =
            pairs(&mut POINTERS.iter().chain(NOT_OMITTED).flat_map(|(m, fields)| fields.iter().map(move |f| (*m, *f))));
        let inline = pairs(&mut INLINE.iter().copied());
        Ok(Schema { pool, unknown, keep_zero: pointers, inline })
    }

    /// The message of a kind, from the envelope's apiVersion (`v1`, `apps/v1`…) and kind.
    pub(crate) fn kind(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if !is_identifier(version) || !is_identifier(kind) {
            return None;
        }
        let found = self.pool.get_message_by_name(&format!("{}.{version}.{kind}", package(group)));
        found.or_else(|| {
            META_KINDS
                .contains(&kind)
                .then(|| self.pool.get_message_by_name(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
                .flatten()
        })
    }

    /// Whether Go's JSON writes a zero in this scalar field (a pointer, or a field without `omitempty`).
    pub(crate) fn keeps_zero(&self, message: &MessageDescriptor, field: &str) -> bool {
        self.keep_zero.contains(&(short_name(message.full_name()).to_owned(), field.to_owned()))
    }

    /// Whether a message field is an embedded Go struct, inlined into its parent in JSON.
    pub(crate) fn is_inline(&self, message: &MessageDescriptor, field: &str) -> bool {
        self.inline.contains(&(short_name(message.full_name()).to_owned(), field.to_owned()))
    }

    #[cfg(test)]
    fn message(&self, short: &str) -> Option<MessageDescriptor> {
        PACKAGE_PREFIXES.iter().find_map(|prefix| self.pool.get_message_by_name(&format!("{prefix}{short}")))
    }
}

/// The proto package of an API group's types (the group's first DNS label, with a few exceptions).
fn package(group: &str) -> String {
    match group {
        "" => "api.core".into(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".into(),
        "internal.apiserver.k8s.io" => "api.apiserverinternal".into(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".into(),
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration".into(),
        "metrics.k8s.io" => "metrics.pkg.apis.metrics".into(),
        "custom.metrics.k8s.io" => "metrics.pkg.apis.custom_metrics".into(),
        "external.metrics.k8s.io" => "metrics.pkg.apis.external_metrics".into(),
        _ => format!("api.{}", group.split('.').next().unwrap_or(group)),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `core.v1.PodSpec` for `api.core.v1.PodSpec`.
pub(crate) fn short_name(full: &str) -> &str {
    PACKAGE_PREFIXES.iter().find_map(|prefix| full.strip_prefix(prefix)).unwrap_or(full)
}

/// The fields of a `runtime.Unknown` envelope.
pub(crate) struct Envelope {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) raw: Vec<u8>,
    pub(crate) content_encoding: String,
    pub(crate) content_type: String,
}

impl Envelope {
    pub(crate) fn read(unknown: &DynamicMessage) -> Result<Envelope, Error> {
        let string = |message: &DynamicMessage, name: &str| match message.get_field_by_name(name).as_deref() {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::Envelope(format!("field {name} is not a string"))),
            None => Err(Error::Envelope(format!("no field {name}"))),
        };
        let type_meta = match unknown.get_field_by_name("typeMeta").as_deref() {
            Some(Value::Message(m)) => m.clone(),
            _ => return Err(Error::Envelope("no typeMeta".into())),
        };
        let raw = match unknown.get_field_by_name("raw").as_deref() {
            Some(Value::Bytes(b)) => b.to_vec(),
            _ => return Err(Error::Envelope("no raw object".into())),
        };
        Ok(Envelope {
            api_version: string(&type_meta, "apiVersion")?,
            kind: string(&type_meta, "kind")?,
            raw,
            content_encoding: string(unknown, "contentEncoding")?,
            content_type: string(unknown, "contentType")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pointer_and_inline_entry_names_a_field_of_the_schema() {
        let schema = Schema::get().expect("schema");
        let entries = POINTERS
            .iter()
            .chain(NOT_OMITTED)
            .flat_map(|(m, fields)| fields.iter().map(move |f| (*m, *f)))
            .chain(INLINE.iter().copied());
        let mut wrong = Vec::new();
        for (message, name) in entries {
            let field = schema.message(message).and_then(|m| m.get_field_by_name(name));
            let inline = INLINE.contains(&(message, name));
            if field.is_none_or(|f| (f.kind().as_message().is_some() && !f.is_list()) != inline) {
                wrong.push(format!("{message}.{name}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "not scalar or list fields (pointers, no omitempty) or message fields (inline): {wrong:?}"
        );
    }

    #[test]
    fn finds_the_kinds_keel_serves() {
        let schema = Schema::get().expect("schema");
        let kinds = [
            ("v1", "Namespace"),
            ("v1", "Pod"),
            ("v1", "Service"),
            ("v1", "Endpoints"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "Node"),
            ("v1", "Event"),
            ("v1", "ServiceAccount"),
            ("v1", "Binding"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("apps/v1", "ControllerRevision"),
            ("batch/v1", "Job"),
            ("batch/v1", "CronJob"),
            ("coordination.k8s.io/v1", "Lease"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("autoscaling/v1", "Scale"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("meta.k8s.io/v1", "DeleteOptions"),
            ("v1", "DeleteOptions"),
            ("apps/v1", "DeleteOptions"),
            ("policy/v1", "Eviction"),
        ];
        for (api_version, kind) in kinds {
            let found = schema.kind(api_version, kind).unwrap_or_else(|| panic!("no message for {api_version} {kind}"));
            assert_eq!(found.name(), kind);
        }
        assert!(schema.kind("v1", "NoSuchKind").is_none());
        assert!(schema.kind("example.com/v1", "Widget").is_none());
        assert!(schema.kind("v1", "Pod.Spec").is_none());
    }
}
