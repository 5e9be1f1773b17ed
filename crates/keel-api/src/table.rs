//! Table responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the columns kubectl shows for
//! each kind and one row's cells, computed as kube-apiserver's printers compute them, so that `kubectl get`
//! prints what users know ("1/2", "CrashLoopBackOff", "3 (2m ago)", "80/TCP,443:30443/TCP", ...).
//!
//! Like kube-apiserver, the server always fills every column, `-o wide` ones (priority 1) included; kubectl
//! hides those unless asked. Objects arrive as the JSON stored; a missing field never fails a row, and where
//! kube-apiserver would have defaulted a field on create (a service's type, a deployment's replicas, a port's
//! protocol), the default is shown. Kinds without printers get Kubernetes' default table (Name, Created At).

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

/// One column of a table, as a `TableColumnDefinition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Shown upper-cased by kubectl ("Ready" prints as READY).
    pub name: &'static str,
    /// An OpenAPI type: "string", "integer", "boolean", "date".
    pub type_: &'static str,
    /// "name" for the column naming the object, else "".
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

impl Column {
    /// The `TableColumnDefinition` JSON object.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// A kind's table: its columns and how one object fills them (each kind's entry in
/// [`crate::kinds::Kind`] names its printer).
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub columns: &'static [Column],
    pub cells: fn(&Value, Timestamp) -> Vec<Value>,
}

impl Printer {
    const fn of(columns: &'static [Column], cells: fn(&Value, Timestamp) -> Vec<Value>) -> Printer {
        Printer { columns, cells }
    }
}

/// Kubernetes' default table (Name, Created At), for kinds without printers.
pub const DEFAULT_PRINTER: Printer = Printer::of(DEFAULT, default_cells);
pub const NAMESPACES: Printer = Printer::of(NAMESPACE, namespace_cells);
pub const PODS: Printer = Printer::of(POD, pod_cells);
pub const SERVICES: Printer = Printer::of(SERVICE, service_cells);
pub const ENDPOINTS_PRINTER: Printer = Printer::of(ENDPOINTS, endpoints_cells);
pub const CONFIG_MAPS: Printer = Printer::of(CONFIG_MAP, config_map_cells);
pub const SECRETS: Printer = Printer::of(SECRET, secret_cells);
pub const NODES: Printer = Printer::of(NODE, node_cells);
pub const EVENTS: Printer = Printer::of(EVENT, event_cells);
pub const SERVICE_ACCOUNTS: Printer = Printer::of(SERVICE_ACCOUNT, service_account_cells);
pub const DEPLOYMENTS: Printer = Printer::of(DEPLOYMENT, deployment_cells);
pub const REPLICA_SETS: Printer = Printer::of(REPLICA_SET, replica_set_cells);
pub const STATEFUL_SETS: Printer = Printer::of(STATEFUL_SET, stateful_set_cells);
pub const DAEMON_SETS: Printer = Printer::of(DAEMON_SET, daemon_set_cells);
pub const CONTROLLER_REVISIONS: Printer = Printer::of(CONTROLLER_REVISION, controller_revision_cells);
pub const JOBS: Printer = Printer::of(JOB, job_cells);
pub const CRON_JOBS: Printer = Printer::of(CRON_JOB, cron_job_cells);
pub const LEASES: Printer = Printer::of(LEASE, lease_cells);
pub const HPAS: Printer = Printer::of(HPA, hpa_cells);
pub const ENDPOINT_SLICES: Printer = Printer::of(ENDPOINT_SLICE, endpoint_slice_cells);
pub const INGRESSES: Printer = Printer::of(INGRESS, ingress_cells);
pub const INGRESS_CLASSES: Printer = Printer::of(INGRESS_CLASS, ingress_class_cells);
pub const ROLE_BINDINGS: Printer = Printer::of(ROLE_BINDING, role_binding_cells);
pub const CSRS: Printer = Printer::of(CSR, csr_cells);
pub const POD_DISRUPTION_BUDGETS: Printer = Printer::of(PDB, pdb_cells);
pub const REPLICATION_CONTROLLERS: Printer = Printer::of(REPLICA_SET, replication_controller_cells);
pub const POD_TEMPLATES: Printer = Printer::of(POD_TEMPLATE, pod_template_cells);
pub const PRIORITY_CLASSES: Printer = Printer::of(PRIORITY_CLASS, priority_class_cells);
pub const API_SERVICES: Printer = Printer::of(API_SERVICE, api_service_cells);
pub const RESOURCE_QUOTAS: Printer = Printer::of(RESOURCE_QUOTA, resource_quota_cells);
pub const PERSISTENT_VOLUMES: Printer = Printer::of(PERSISTENT_VOLUME, persistent_volume_cells);
pub const PERSISTENT_VOLUME_CLAIMS: Printer = Printer::of(PERSISTENT_VOLUME_CLAIM, persistent_volume_claim_cells);
pub const STORAGE_CLASSES: Printer = Printer::of(STORAGE_CLASS, storage_class_cells);

/// The columns of `kind`'s table, in order.
pub fn columns(kind: &str) -> &'static [Column] {
    crate::kinds::rules(kind).printer.columns
}

/// The `TableColumnDefinition` JSON objects of `kind`'s table.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    columns(kind).iter().map(Column::definition).collect()
}

/// One row's cells for `object` (the object's JSON as stored), one per column of [`columns`], with ages
/// measured at `now`.
pub fn cells(kind: &str, object: &Value, now: Timestamp) -> Vec<Value> {
    (crate::kinds::rules(kind).printer.cells)(object, now)
}

/// The NAME and AGE cells of `o`, as closures for a printer's `vec![…]`.
fn name_and_age(o: &Value, now: Timestamp) -> (impl Fn() -> Value + '_, impl Fn() -> Value + '_) {
    (
        move || Value::from(text(o, "/metadata/name")),
        move || Value::from(since(time(o, "/metadata/creationTimestamp"), now)),
    )
}

fn default_cells(o: &Value, _: Timestamp) -> Vec<Value> {
    vec![Value::from(text(o, "/metadata/name")), created_at(time(o, "/metadata/creationTimestamp")).into()]
}

fn namespace_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), or(text(o, "/status/phase"), "Active").into(), age()]
}

fn endpoints_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), format_endpoints(o).into(), age()]
}

fn config_map_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), (count(o, "/data") + count(o, "/binaryData")).into(), age()]
}

fn secret_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), or(text(o, "/type"), "Opaque").into(), secret_keys(o).into(), age()]
}

fn service_account_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), list(o, "/secrets").len().into(), age()]
}

fn replica_set_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let (names, images) = containers(o, "/spec/template/spec/containers");
    vec![
        name(),
        int_or(o, "/spec/replicas", 1).into(),
        int(o, "/status/replicas").into(),
        int(o, "/status/readyReplicas").into(),
        age(),
        names.into(),
        images.into(),
        format_label_selector(o.pointer("/spec/selector")).into(),
    ]
}

fn stateful_set_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let (names, images) = containers(o, "/spec/template/spec/containers");
    let ready = format!("{}/{}", int(o, "/status/readyReplicas"), int_or(o, "/spec/replicas", 1));
    vec![name(), ready.into(), age(), names.into(), images.into()]
}

fn daemon_set_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let (names, images) = containers(o, "/spec/template/spec/containers");
    vec![
        name(),
        int(o, "/status/desiredNumberScheduled").into(),
        int(o, "/status/currentNumberScheduled").into(),
        int(o, "/status/numberReady").into(),
        int(o, "/status/updatedNumberScheduled").into(),
        int(o, "/status/numberAvailable").into(),
        format_labels(o.pointer("/spec/template/spec/nodeSelector")).into(),
        age(),
        names.into(),
        images.into(),
        format_label_selector(o.pointer("/spec/selector")).into(),
    ]
}

fn controller_revision_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), controller_of(o).into(), int(o, "/revision").into(), age()]
}

fn lease_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![name(), text(o, "/spec/holderIdentity").into(), age()]
}

fn endpoint_slice_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![
        name(),
        text(o, "/addressType").into(),
        format_slice_ports(list(o, "/ports")).into(),
        format_slice_endpoints(list(o, "/endpoints")).into(),
        age(),
    ]
}

/// The aggregator's columns: where the group version is served, and whether it is available ("False
/// (Reason)" when not).
fn api_service_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let service = match o.pointer("/spec/service") {
        Some(s) if s.is_object() => format!("{}/{}", text(s, "/namespace"), text(s, "/name")),
        _ => "Local".to_string(),
    };
    let available = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .map(|c| match (text(c, "/status"), text(c, "/reason")) {
            ("True", _) => "True".to_string(),
            (status, "") => status.to_string(),
            (status, reason) => format!("{status} ({reason})"),
        })
        .unwrap_or_else(|| "Unknown".to_string());
    vec![name(), service.into(), available.into(), age()]
}

fn csr_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let duration = o
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map_or_else(|| "<none>".to_string(), |s| human_duration(std::time::Duration::from_secs(s)));
    let mut conditions: Vec<&str> =
        list(o, "/status/conditions").iter().filter_map(|c| c.get("type").and_then(Value::as_str)).collect();
    if conditions.is_empty() {
        conditions.push("Pending");
    }
    if o.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty()) {
        conditions.push("Issued");
    }
    vec![
        name(),
        age(),
        text(o, "/spec/signerName").into(),
        text(o, "/spec/username").into(),
        duration.into(),
        conditions.join(",").into(),
    ]
}

fn role_binding_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let role = format!("{}/{}", text(o, "/roleRef/kind"), text(o, "/roleRef/name"));
    let subjects = |kind: &str| {
        let names: Vec<String> = list(o, "/subjects")
            .iter()
            .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
            .map(|s| {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                match s.get("namespace").and_then(Value::as_str) {
                    Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                    _ if kind == "ServiceAccount" => format!("/{name}"),
                    _ => name.to_string(),
                }
            })
            .collect();
        Value::from(names.join(", "))
    };
    vec![name(), role.into(), age(), subjects("User"), subjects("Group"), subjects("ServiceAccount")]
}

/// A ReplicaSet's cells, its selector a plain map.
fn replication_controller_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = replica_set_cells(o, now);
    if let Some(last) = cells.last_mut() {
        *last = format_labels(o.pointer("/spec/selector")).into();
    }
    cells
}

fn pod_template_cells(o: &Value, _: Timestamp) -> Vec<Value> {
    let (names, images) = containers(o, "/template/spec/containers");
    let labels = format_labels(o.pointer("/template/metadata/labels"));
    vec![Value::from(text(o, "/metadata/name")), names.into(), images.into(), labels.into()]
}

fn priority_class_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    vec![
        name(),
        int(o, "/value").into(),
        flag(o, "/globalDefault").into(),
        age(),
        or(text(o, "/preemptionPolicy"), "PreemptLowerPriority").into(),
    ]
}

fn persistent_volume_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let claim = match (text(o, "/spec/claimRef/namespace"), text(o, "/spec/claimRef/name")) {
        (_, "") => String::new(),
        (ns, n) => format!("{ns}/{n}"),
    };
    vec![
        name(),
        text(o, "/spec/capacity/storage").into(),
        crate::kinds::storage::access_modes_text(o.pointer("/spec/accessModes")).into(),
        text(o, "/spec/persistentVolumeReclaimPolicy").into(),
        text(o, "/status/phase").into(),
        claim.into(),
        text(o, "/spec/storageClassName").into(),
        or(text(o, "/spec/volumeAttributesClassName"), "<unset>").into(),
        text(o, "/status/reason").into(),
        age(),
        or(text(o, "/spec/volumeMode"), "<unset>").into(),
    ]
}

fn persistent_volume_claim_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let bound = !text(o, "/spec/volumeName").is_empty();
    let (capacity, modes) = match bound {
        true => (
            text(o, "/status/capacity/storage").to_string(),
            crate::kinds::storage::access_modes_text(o.pointer("/status/accessModes")),
        ),
        false => (String::new(), String::new()),
    };
    let phase =
        if o.pointer("/metadata/deletionTimestamp").is_some() { "Terminating" } else { text(o, "/status/phase") };
    vec![
        name(),
        phase.into(),
        text(o, "/spec/volumeName").into(),
        capacity.into(),
        modes.into(),
        text(o, "/spec/storageClassName").into(),
        or(text(o, "/spec/volumeAttributesClassName"), "<unset>").into(),
        age(),
        or(text(o, "/spec/volumeMode"), "<unset>").into(),
    ]
}

fn storage_class_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (_, age) = name_and_age(o, now);
    let default =
        o.pointer("/metadata/annotations").and_then(|a| a.get(crate::kinds::storage::DEFAULT_CLASS_ANNOTATION));
    let mut name = text(o, "/metadata/name").to_string();
    if default == Some(&Value::from("true")) {
        name.push_str(" (default)");
    }
    vec![
        name.into(),
        text(o, "/provisioner").into(),
        or(text(o, "/reclaimPolicy"), "Delete").into(),
        or(text(o, "/volumeBindingMode"), "Immediate").into(),
        flag(o, "/allowVolumeExpansion").into(),
        age(),
    ]
}

/// kube's ResourceQuota printer: `used/hard` of each limited resource, limits.* in their own column.
fn resource_quota_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let mut names: Vec<&String> =
        o.pointer("/spec/hard").and_then(Value::as_object).into_iter().flat_map(|h| h.keys()).collect();
    names.sort();
    let (mut requests, mut limits) = (vec![], vec![]);
    for n in names {
        let amount = |list: &str| match o.pointer(&format!("/status/{list}")).and_then(|l| l.get(n.as_str())) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "0".to_string(),
        };
        let cell = format!("{n}: {}/{}", amount("used"), amount("hard"));
        match n.split_once('.') {
            Some(("limits", _)) => limits.push(cell),
            _ => requests.push(cell),
        }
    }
    vec![name(), age(), requests.join(", ").into(), limits.join(", ").into()]
}

fn pdb_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let bound = |pointer: &str| match o.pointer(pointer) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_string(),
    };
    vec![
        name(),
        bound("/spec/minAvailable").into(),
        bound("/spec/maxUnavailable").into(),
        int(o, "/status/disruptionsAllowed").into(),
        age(),
    ]
}

fn ingress_class_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let (name, age) = name_and_age(o, now);
    let params = match o.pointer("/spec/parameters") {
        Some(p) if p.is_object() => {
            let kind = p.get("kind").and_then(Value::as_str).unwrap_or("");
            let group = p.get("apiGroup").and_then(Value::as_str).filter(|g| !g.is_empty());
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            match group {
                Some(g) => format!("{kind}.{g}/{name}"),
                None => format!("{kind}/{name}"),
            }
        }
        _ => "<none>".to_string(),
    };
    vec![name(), text(o, "/spec/controller").into(), params.into(), age()]
}

/// kube's Ingress printer: the class, the rules' hosts (`*` for a rule without one), the load balancer's
/// addresses, and `80` or `80, 443` with TLS.
fn ingress_cells(o: &Value, now: Timestamp) -> Vec<Value> {
    let age = Value::from(since(time(o, "/metadata/creationTimestamp"), now));
    let class = o.pointer("/spec/ingressClassName").and_then(Value::as_str).unwrap_or("<none>");
    let hosts: Vec<&str> = list(o, "/spec/rules")
        .iter()
        .map(|r| r.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()).unwrap_or("*"))
        .collect();
    let addresses: Vec<&str> = list(o, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| i.get("ip").or_else(|| i.get("hostname")).and_then(Value::as_str))
        .collect();
    let ports = if list(o, "/spec/tls").is_empty() { "80" } else { "80, 443" };
    vec![
        json!(o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")),
        json!(class),
        json!(if hosts.is_empty() { "*".to_string() } else { hosts.join(",") }),
        json!(addresses.join(",")),
        json!(ports),
        age,
    ]
}

/// The `TableRowCondition`s of one row: a pod that succeeded or failed is `Completed`.
pub fn row_conditions(kind: &str, object: &Value) -> Vec<Value> {
    let completed = |reason: &str, message: &str| {
        vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
    };
    match (kind, text(object, "/status/phase")) {
        ("Pod", "Succeeded") => completed("Succeeded", "The pod has completed successfully."),
        ("Pod", "Failed") => completed("Failed", "The pod failed."),
        _ => Vec::new(),
    }
}

/// apimachinery's `duration.HumanDuration`, what AGE shows: about two significant figures ("45s", "3m2s",
/// "25m", "5h7m", "30h", "2d3h", "20d", "3y20d", "9y").
pub fn human_duration(d: std::time::Duration) -> String {
    human_signed(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
}

/// [`human_duration`] of a signed duration: up to a second in the future reads "0s" (clock skew), more
/// reads "<invalid>", as in Kubernetes.
fn human_signed(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    let days = hours / 24;
    if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Columns. Descriptions are the API documentation of the field each column shows, as kube-apiserver sends.

const D_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const D_CREATED: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const D_CONTAINERS: &str = "Names of each container in the template.";
const D_IMAGES: &str = "Images referenced by each container in the template.";
const D_READY_PODS: &str = "Number of the pod with ready state";

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column { name, type_, format: "", description, priority: 0 }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column { name, type_, format: "", description, priority: 1 }
}

const NAME: Column = Column { name: "Name", type_: "string", format: "name", description: D_NAME, priority: 0 };
const AGE: Column = col("Age", "string", D_CREATED);
const CONTAINERS: Column = wide("Containers", "string", D_CONTAINERS);
const IMAGES: Column = wide("Images", "string", D_IMAGES);

const DEFAULT: &[Column] = &[NAME, col("Created At", "date", D_CREATED)];

const NAMESPACE: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

const POD: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename"),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates"),
];

const SERVICE: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types"),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system."),
    col("Port(s)", "string", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/"),
];

const ENDPOINTS: &[Column] = &[
    NAME,
    col("Endpoints", "string", "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service."),
    AGE,
];

const CONFIG_MAP: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
    AGE,
];

const SECRET: &[Column] = &[
    NAME,
    col("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
    col("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
    AGE,
];

const D_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

const NODE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", D_NODE_ADDRESSES),
    wide("External-IP", "string", D_NODE_ADDRESSES),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

const EVENT: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { priority: 1, ..NAME },
];

const SERVICE_ACCOUNT: &[Column] = &[
    NAME,
    col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret"),
    AGE,
];

const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", D_READY_PODS),
    col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
];

const REPLICA_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller"),
    col("Current", "integer", "Replicas is the most recently oberved number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller"),
    col("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
];

const STATEFUL_SET: &[Column] = &[NAME, col("Ready", "string", D_READY_PODS), AGE, CONTAINERS, IMAGES];

const DAEMON_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
    col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
    col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
];

const CONTROLLER_REVISION: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col("Revision", "string", "Revision indicates the revision of the state represented by Data."),
    AGE,
];

const D_JOB_SELECTOR: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

const JOB: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col("Completions", "string", "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs."),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", D_JOB_SELECTOR),
];

const CRON_JOB: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones"),
    col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", D_JOB_SELECTOR),
];

const INGRESS: &[Column] = &[
    NAME,
    col("Class", "string", "ingressClassName is the name of an IngressClass cluster resource."),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the HTTPIngressRuleValue is matched.",
    ),
    col("Address", "string", "Address is a list containing ingress points for the load-balancer."),
    col("Ports", "string", "Ports of TLS configurations that open."),
    AGE,
];

const INGRESS_CLASS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller that is responsible for handling this class."),
    col("Parameters", "string", "A reference to a resource with additional parameters."),
    AGE,
];

const LEASE: &[Column] = &[
    NAME,
    col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field."),
    AGE,
];

const HPA: &[Column] = &[
    NAME,
    col("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
    col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization."),
    col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available."),
    col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas."),
    col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    AGE,
];

const API_SERVICE: &[Column] = &[
    NAME,
    col("Service", "string", "The service that serves the group version, or Local."),
    col("Available", "string", "Whether the group version is available."),
    AGE,
];

const CSR: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "string", "signerName indicates the requested signer, and is a qualified name."),
    col("Requestor", "string", "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block. When serialized as JSON or YAML, the data is additionally base64-encoded."),
    col("RequestedDuration", "string", "expirationSeconds is the requested duration of validity of the issued certificate."),
    col("Condition", "string", "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\"."),
];

const ROLE_BINDING: &[Column] = &[
    NAME,
    col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable."),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
];

const POD_TEMPLATE: &[Column] = &[
    NAME,
    col("Containers", "string", D_CONTAINERS),
    col("Images", "string", D_IMAGES),
    col("Pod Labels", "string", "The labels of the pods made from the template."),
];

const PRIORITY_CLASS: &[Column] = &[
    NAME,
    col("Value", "integer", "The priority of the pods of this class."),
    col("Global-Default", "boolean", "Whether this class is the default for pods that name none."),
    AGE,
    col("PreemptionPolicy", "string", "Whether pods of this class may preempt pods of lower priority."),
];

const PERSISTENT_VOLUME: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    col("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
    col("VolumeAttributesClass", "string", "Name of VolumeAttributesClass to which this persistent volume belongs."),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
];

const PERSISTENT_VOLUME_CLAIM: &[Column] = &[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
    col("StorageClass", "string", "storageClassName is the name of the StorageClass required by the claim."),
    col(
        "VolumeAttributesClass",
        "string",
        "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.",
    ),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
];

const STORAGE_CLASS: &[Column] = &[
    NAME,
    col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
    ),
    col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
    AGE,
];

const RESOURCE_QUOTA: &[Column] = &[
    NAME,
    AGE,
    col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
];

const PDB: &[Column] = &[
    NAME,
    col("Min Available", "string", "The minimum number of pods that must be available."),
    col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE,
];

const ENDPOINT_SLICE: &[Column] = &[
    NAME,
    col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type."),
    col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list."),
    col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints."),
    AGE,
];

// ---------------------------------------------------------------------------------------------------------
// Reading JSON that may lack any field.

/// The string at `pointer`, or "".
fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `pointer`, or 0.
fn int(v: &Value, pointer: &str) -> i64 {
    int_or(v, pointer, 0)
}

fn int_or(v: &Value, pointer: &str, default: i64) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(default)
}

fn flag(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// The value at `pointer` unless absent or null (Go's non-nil pointer).
fn present<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The number of entries of the map or list at `pointer`.
fn count(v: &Value, pointer: &str) -> usize {
    match v.pointer(pointer) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// The timestamp at `pointer`; `None` when absent, malformed or Go's zero time.
fn time(v: &Value, pointer: &str) -> Option<Timestamp> {
    let t: Timestamp = text(v, pointer).parse().ok()?;
    (t.as_second() != GO_ZERO_TIME).then_some(t)
}

/// `0001-01-01T00:00:00Z`, Go's zero `time.Time`, in Unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// How long ago `t` was ("<unknown>" when unset), as AGE and LAST SEEN show.
pub(crate) fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_signed(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// RFC 3339 in UTC to the second, as the default table's "Created At".
fn created_at(t: Option<Timestamp>) -> String {
    let second = t.map_or(GO_ZERO_TIME, Timestamp::as_second);
    Timestamp::from_second(second).map(|t| t.to_string()).unwrap_or_default()
}

/// The comma-joined names and images of the containers at `pointer`.
fn containers(v: &Value, pointer: &str) -> (String, String) {
    let all = list(v, pointer);
    let names: Vec<&str> = all.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = all.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `a=1,b=2` from a label map, "<none>" when empty (apimachinery's `labels.FormatLabels`).
fn format_labels(map: Option<&Value>) -> String {
    let pairs: Vec<String> = match map {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect(),
        _ => Vec::new(),
    };
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// A `LabelSelector` as a selector string (`app=web,tier in (a,b),!canary`), "" when it selects everything
/// or nothing, `None` when malformed.
fn selector_string(selector: Option<&Value>) -> Option<String> {
    let Some(sel) = selector.filter(|s| !s.is_null()) else { return Some(String::new()) };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(m)) = sel.get("matchLabels") {
        for (k, v) in m {
            requirements.push((k.clone(), format!("{k}={}", v.as_str()?)));
        }
    }
    for e in list(sel, "/matchExpressions") {
        let key = text(e, "/key");
        let mut values: Vec<&str> = list(e, "/values").iter().map(|v| v.as_str().unwrap_or("")).collect();
        values.sort_unstable();
        values.dedup();
        let requirement = match (text(e, "/operator"), values.is_empty()) {
            ("In", false) => format!("{key} in ({})", values.join(",")),
            ("NotIn", false) => format!("{key} notin ({})", values.join(",")),
            ("Exists", true) => key.to_string(),
            ("DoesNotExist", true) => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Some(requirements.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

/// apimachinery's `metav1.FormatLabelSelector`: "<none>" for an empty selector, "<error>" for a bad one.
fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
        None => "<error>".to_string(),
    }
}

fn condition_true(v: &Value, pointer: &str, type_: &str) -> bool {
    list(v, pointer).iter().any(|c| text(c, "/type") == type_ && text(c, "/status") == "True")
}

// ---------------------------------------------------------------------------------------------------------
// Pods.

/// READY, STATUS and RESTARTS of a pod, as `kubectl get pods` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodSummary {
    ready: String,
    status: String,
    restarts: String,
}

fn is_sidecar(container: &Value) -> bool {
    text(container, "/restartPolicy") == "Always"
}

/// "Signal:9" or "ExitCode:1" for a container that terminated without a reason.
fn exit_reason(terminated: &Value) -> String {
    match int(terminated, "/signal") {
        0 => format!("ExitCode:{}", int(terminated, "/exitCode")),
        signal => format!("Signal:{signal}"),
    }
}

fn pod_summary(pod: &Value, now: Timestamp) -> PodSummary {
    let init_specs = list(pod, "/spec/initContainers");
    let sidecar = |name: &str| init_specs.iter().any(|c| text(c, "/name") == name && is_sidecar(c));
    let total = list(pod, "/spec/containers").len() + init_specs.iter().filter(|c| is_sidecar(c)).count();
    let mut ready = 0;
    let (mut restarts, mut sidecar_restarts) = (0, 0);
    let (mut last_restart, mut last_sidecar_restart): (Option<Timestamp>, Option<Timestamp>) = (None, None);

    let phase = or(text(pod, "/status/phase"), "Pending");
    let mut status = or(text(pod, "/status/reason"), phase).to_string();
    if list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        status = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, c) in list(pod, "/status/initContainerStatuses").iter().enumerate() {
        let restart_count = int(c, "/restartCount");
        let finished = time(c, "/lastState/terminated/finishedAt");
        restarts += restart_count;
        last_restart = last_restart.max(finished);
        let restartable = sidecar(text(c, "/name"));
        if restartable {
            sidecar_restarts += restart_count;
            last_sidecar_restart = last_sidecar_restart.max(finished);
        }
        let terminated = present(c, "/state/terminated");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if restartable && flag(c, "/started") {
            if flag(c, "/ready") {
                ready += 1;
            }
            continue;
        }
        let waiting = text(c, "/state/waiting/reason");
        status = match terminated {
            Some(t) if text(t, "/reason").is_empty() => format!("Init:{}", exit_reason(t)),
            Some(t) => format!("Init:{}", text(t, "/reason")),
            None if !waiting.is_empty() && waiting != "PodInitializing" => format!("Init:{waiting}"),
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    let initialized = list(pod, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Initialized")
        .is_some_and(|c| text(c, "/status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            last_restart = last_restart.max(time(c, "/lastState/terminated/finishedAt"));
            let waiting = text(c, "/state/waiting/reason");
            if !waiting.is_empty() {
                status = waiting.to_string();
            } else if let Some(t) = present(c, "/state/terminated") {
                status = match text(t, "/reason") {
                    "" => exit_reason(t),
                    reason => reason.to_string(),
                };
            } else if flag(c, "/ready") && present(c, "/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if status == "Completed" && has_running {
            let pod_ready = condition_true(pod, "/status/conditions", "Ready");
            status = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if present(pod, "/metadata/deletionTimestamp").is_some() {
        if text(pod, "/status/reason") == "NodeLost" {
            status = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            status = "Terminating".to_string();
        }
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    PodSummary { ready: format!("{ready}/{total}"), status, restarts }
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = pod_summary(pod, now);
    let ip = list(pod, "/status/podIPs").first().map_or(text(pod, "/status/podIP"), |ip| text(ip, "/ip"));
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(pod, "/status/conditions");
        let passed = gates
            .iter()
            .filter(|g| {
                let wanted = text(g, "/conditionType");
                conditions.iter().find(|c| text(c, "/type") == wanted).is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };
    vec![
        text(pod, "/metadata/name").into(),
        summary.ready.into(),
        summary.status.into(),
        summary.restarts.into(),
        since(time(pod, "/metadata/creationTimestamp"), now).into(),
        or(ip, "<none>").into(),
        or(text(pod, "/spec/nodeName"), "<none>").into(),
        or(text(pod, "/status/nominatedNodeName"), "<none>").into(),
        readiness_gates.into(),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Services and endpoints.

/// PORT(S): `80/TCP,443:30443/TCP`, "<none>" without ports.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let (port, protocol) = (int(p, "/port"), or(text(p, "/protocol"), "TCP"));
            match int(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    }
}

/// EXTERNAL-IP: external IPs, load balancer ingress ("<pending>" until there is one), or the external name.
fn service_external_ip(svc: &Value, type_: &str) -> String {
    let external: Vec<&str> = list(svc, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    match type_ {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| or(text(i, "/ip"), text(i, "/hostname")))
                .filter(|s| !s.is_empty())
                .collect();
            let all: Vec<&str> = ingress.into_iter().chain(external).collect();
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let type_ = or(text(svc, "/spec/type"), "ClusterIP");
    let cluster_ip =
        list(svc, "/spec/clusterIPs").first().and_then(Value::as_str).unwrap_or(text(svc, "/spec/clusterIP"));
    vec![
        text(svc, "/metadata/name").into(),
        type_.into(),
        or(cluster_ip, "<none>").into(),
        service_external_ip(svc, type_).into(),
        service_ports(svc).into(),
        since(time(svc, "/metadata/creationTimestamp"), now).into(),
        format_labels(svc.pointer("/spec/selector")).into(),
    ]
}

/// `host:port` with IPv6 hosts bracketed (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The first three entries joined, with " + N more..." for the rest.
fn first_three(list: &[String], total: usize) -> String {
    let shown = list.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if total > 3 {
        format!("{shown} + {} more...", total - 3)
    } else {
        shown
    }
}

/// ENDPOINTS of an Endpoints object: `10.0.0.1:80,10.0.0.2:80 + 3 more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut all = Vec::new();
    for ss in subsets {
        let addresses = list(ss, "/addresses").iter().map(|a| text(a, "/ip"));
        let ports = list(ss, "/ports");
        if ports.is_empty() {
            all.extend(addresses.map(str::to_string));
        } else {
            for p in ports {
                let port = int(p, "/port");
                all.extend(addresses.clone().map(|ip| join_host_port(ip, port)));
            }
        }
    }
    first_three(&all, all.len())
}

/// PORTS of an EndpointSlice: numbers, else names, else "*"; "<unset>" when none.
fn format_slice_ports(ports: &[Value]) -> String {
    let all: Vec<String> = ports
        .iter()
        .map(|p| match present(p, "/port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => present(p, "/name").and_then(Value::as_str).unwrap_or("*").to_string(),
        })
        .collect();
    or(&first_three(&all, all.len()), "<unset>").to_string()
}

/// ENDPOINTS of an EndpointSlice: `10.0.0.1,10.0.0.2 + 3 more...`; "<unset>" when none.
fn format_slice_endpoints(endpoints: &[Value]) -> String {
    let all: Vec<String> = endpoints
        .iter()
        .flat_map(|e| list(e, "/addresses").iter().filter_map(Value::as_str))
        .map(str::to_string)
        .collect();
    or(&first_three(&all, all.len()), "<unset>").to_string()
}

// ---------------------------------------------------------------------------------------------------------
// Nodes and events.

/// STATUS of a node: `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` when cordoned.
fn node_status(node: &Value) -> String {
    let ready = list(node, "/status/conditions").iter().rev().find(|c| text(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if text(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if flag(node, "/spec/unschedulable") {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// ROLES of a node, from `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>` labels.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(Value::Object(labels)) = node.pointer("/metadata/labels") {
        for (k, v) in labels {
            match k.strip_prefix("node-role.kubernetes.io/") {
                Some(role) if !role.is_empty() => {
                    roles.insert(role);
                }
                Some(_) => {}
                None if k == "kubernetes.io/role" => {
                    roles.extend(v.as_str().filter(|v| !v.is_empty()));
                }
                None => {}
            }
        }
    }
    or(&roles.into_iter().collect::<Vec<_>>().join(","), "<none>").to_string()
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let address = |type_: &str| {
        let found = list(node, "/status/addresses").iter().find(|a| text(a, "/type") == type_);
        found.map_or("<none>", |a| text(a, "/address")).to_string()
    };
    let info = |field: &str| or(text(node, &format!("/status/nodeInfo/{field}")), "<unknown>").to_string();
    vec![
        text(node, "/metadata/name").into(),
        node_status(node).into(),
        node_roles(node).into(),
        since(time(node, "/metadata/creationTimestamp"), now).into(),
        text(node, "/status/nodeInfo/kubeletVersion").into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

fn event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = match time(ev, "/firstTimestamp") {
        Some(t) => since(Some(t), now),
        None => since(time(ev, "/eventTime"), now),
    };
    let mut last = match time(ev, "/lastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, "/count");
    if let Some(series) = present(ev, "/series") {
        last = since(time(series, "/lastObservedTime"), now);
        count = int(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = text(ev, "/involvedObject/kind").to_lowercase();
    let target = match text(ev, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = or(text(ev, "/source/component"), text(ev, "/reportingComponent"));
    let instance = or(text(ev, "/source/host"), text(ev, "/reportingInstance"));
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        last.into(),
        text(ev, "/type").into(),
        text(ev, "/reason").into(),
        target.into(),
        text(ev, "/involvedObject/fieldPath").into(),
        source.into(),
        text(ev, "/message").trim().into(),
        first.into(),
        count.into(),
        text(ev, "/metadata/name").into(),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Workloads.

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = containers(d, "/spec/template/spec/containers");
    let selector = selector_string(d.pointer("/spec/selector")).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        text(d, "/metadata/name").into(),
        format!("{}/{}", int(d, "/status/readyReplicas"), int_or(d, "/spec/replicas", 1)).into(),
        int(d, "/status/updatedReplicas").into(),
        int(d, "/status/availableReplicas").into(),
        since(time(d, "/metadata/creationTimestamp"), now).into(),
        names.into(),
        images.into(),
        selector.into(),
    ]
}

/// CONTROLLER of a ControllerRevision: `daemonset.apps/fluentd`, "<none>" without a controller.
fn controller_of(o: &Value) -> String {
    let Some(owner) = list(o, "/metadata/ownerReferences").iter().find(|r| flag(r, "/controller")) else {
        return "<none>".to_string();
    };
    let api_version = text(owner, "/apiVersion");
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let (kind, name) = (text(owner, "/kind"), text(owner, "/name"));
    match (kind, group) {
        ("", "") => name.to_string(),
        (kind, "") => format!("{}/{name}", kind.to_lowercase()),
        (kind, group) => format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase()),
    }
}

/// The status of the first condition of `type_` is "True".
fn job_condition(job: &Value, type_: &str) -> bool {
    list(job, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == type_)
        .is_some_and(|c| text(c, "/status") == "True")
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(job, "/status/succeeded");
    let completions = match present(job, "/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(job, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (time(job, "/status/startTime"), time(job, "/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start), now),
        (Some(start), Some(end)) => human_signed(end.duration_since(start)),
    };
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if present(job, "/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(job, "/spec/template/spec/containers");
    vec![
        text(job, "/metadata/name").into(),
        status.into(),
        completions.into(),
        duration.into(),
        since(time(job, "/metadata/creationTimestamp"), now).into(),
        names.into(),
        images.into(),
        format_label_selector(job.pointer("/spec/selector")).into(),
    ]
}

fn cron_job_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let suspend = match cj.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        _ => "False",
    };
    let last_schedule = match time(cj, "/status/lastScheduleTime") {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    let (names, images) = containers(cj, "/spec/jobTemplate/spec/template/spec/containers");
    vec![
        text(cj, "/metadata/name").into(),
        text(cj, "/spec/schedule").into(),
        present(cj, "/spec/timeZone").and_then(Value::as_str).unwrap_or("<none>").into(),
        suspend.into(),
        list(cj, "/status/active").len().into(),
        last_schedule.into(),
        since(time(cj, "/metadata/creationTimestamp"), now).into(),
        names.into(),
        images.into(),
        format_label_selector(cj.pointer("/spec/jobTemplate/spec/selector")).into(),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Horizontal pod autoscalers.

/// A quantity as stored, or "<nil>" as Go prints a missing one.
fn quantity(v: Option<&Value>, pointer: &str) -> String {
    v.and_then(|v| present(v, pointer)).and_then(Value::as_str).unwrap_or("<nil>").to_string()
}

/// A percentage, or `missing`.
fn percent(v: Option<&Value>, pointer: &str, missing: &str) -> String {
    match v.and_then(|v| present(v, pointer)).and_then(Value::as_i64) {
        Some(p) => format!("{p}%"),
        None => missing.to_string(),
    }
}

/// One metric of TARGETS: current over target, "<unknown>" before the autoscaler has measured.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let source = |key: &str| (spec.get(key), status.and_then(|s| present(s, &format!("/{key}"))));
    let value_pair = |key: &str| {
        let (spec, current) = source(key);
        let target = spec.and_then(|s| present(s, "/target"));
        if target.and_then(|t| present(t, "/averageValue")).is_some() {
            let current = match current.and_then(|c| present(c, "/current/averageValue")) {
                Some(q) => q.as_str().unwrap_or("<nil>").to_string(),
                None => "<unknown>".to_string(),
            };
            format!("{current}/{} (avg)", quantity(target, "/averageValue"))
        } else {
            let current = if current.is_some() { quantity(current, "/current/value") } else { "<unknown>".into() };
            format!("{current}/{}", quantity(target, "/value"))
        }
    };
    let resource_pair = |key: &str| {
        let (spec, current) = source(key);
        let name = spec.map_or("", |s| text(s, "/name"));
        let target = spec.and_then(|s| present(s, "/target"));
        if target.and_then(|t| present(t, "/averageValue")).is_some() {
            let current =
                if current.is_some() { quantity(current, "/current/averageValue") } else { "<unknown>".into() };
            format!("{name}: {current}/{}", quantity(target, "/averageValue"))
        } else {
            let current = percent(current, "/current/averageUtilization", "<unknown>");
            format!("{name}: {current}/{}", percent(target, "/averageUtilization", "<auto>"))
        }
    };
    match text(spec, "/type") {
        "External" => value_pair("external"),
        "Object" => value_pair("object"),
        "Pods" => {
            let (spec, current) = source("pods");
            let current =
                if current.is_some() { quantity(current, "/current/averageValue") } else { "<unknown>".into() };
            format!("{current}/{}", quantity(spec, "/target/averageValue"))
        }
        "Resource" => resource_pair("resource"),
        "ContainerResource" => resource_pair("containerResource"),
        _ => "<unknown type>".to_string(),
    }
}

/// TARGETS: the first two metrics, `cpu: 40%/80%, memory: 1Gi/2Gi + 1 more...`. Without metrics the
/// autoscaler targets 80% CPU, as Kubernetes defaults it.
fn hpa_targets(hpa: &Value) -> String {
    let default_metric = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}});
    let specs = match list(hpa, "/spec/metrics") {
        [] => std::slice::from_ref(&default_metric),
        specs => specs,
    };
    let statuses = list(hpa, "/status/currentMetrics");
    let all: Vec<String> = specs.iter().enumerate().map(|(i, spec)| hpa_metric(spec, statuses.get(i))).collect();
    let shown = all.iter().take(2).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > 2 {
        format!("{shown} + {} more...", all.len() - 2)
    } else {
        shown
    }
}

fn hpa_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!("{}/{}", text(hpa, "/spec/scaleTargetRef/kind"), text(hpa, "/spec/scaleTargetRef/name"));
    vec![
        text(hpa, "/metadata/name").into(),
        reference.into(),
        hpa_targets(hpa).into(),
        int_or(hpa, "/spec/minReplicas", 1).to_string().into(),
        int(hpa, "/spec/maxReplicas").into(),
        int(hpa, "/status/currentReplicas").into(),
        since(time(hpa, "/metadata/creationTimestamp"), now).into(),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Secrets.

/// DATA of a secret: its keys, counting `stringData` ones that the server merges into `data`.
fn secret_keys(secret: &Value) -> usize {
    let keys = |pointer: &str| match secret.pointer(pointer) {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    keys("/data").union(&keys("/stringData")).count()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KINDS: [&str; 26] = [
        "Namespace",
        "Pod",
        "Service",
        "Endpoints",
        "ConfigMap",
        "Secret",
        "Node",
        "Event",
        "ServiceAccount",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "ControllerRevision",
        "Job",
        "CronJob",
        "Lease",
        "HorizontalPodAutoscaler",
        "EndpointSlice",
        "Ingress",
        "IngressClass",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "CertificateSigningRequest",
    ];

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    /// `now` minus `secs`, as the JSON timestamp Kubernetes stores.
    fn ago(secs: i64) -> String {
        Timestamp::from_second(now().as_second() - secs).unwrap().to_string()
    }

    fn names(kind: &str) -> Vec<&'static str> {
        columns(kind).iter().map(|c| c.name).collect()
    }

    fn row(kind: &str, object: Value) -> Vec<Value> {
        let cells = cells(kind, &object, now());
        assert_eq!(cells.len(), columns(kind).len(), "{kind}");
        cells
    }

    #[test]
    fn every_kind_fills_every_column_even_from_an_empty_object() {
        for kind in KINDS.iter().chain(&["Widget"]) {
            for object in [json!({}), json!(null), json!({"metadata": {"name": "x"}, "spec": null, "status": 3})] {
                assert_eq!(cells(kind, &object, now()).len(), columns(kind).len(), "{kind} {object}");
            }
            assert_eq!(columns(kind)[if *kind == "Event" { 9 } else { 0 }].format, "name", "{kind}");
            let defs = column_definitions(kind);
            assert_eq!(defs.len(), columns(kind).len());
            assert!(defs.iter().all(|d| d["description"].as_str().is_some_and(|s| !s.is_empty())));
        }
    }

    #[test]
    fn column_names_and_priorities_match_kubernetes() {
        assert_eq!(names("Widget"), ["Name", "Created At"]);
        assert_eq!(
            names("Pod"),
            ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(names("Service"), ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
        assert_eq!(
            names("Deployment"),
            ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
        );
        assert_eq!(
            names("Job"),
            ["Name", "Status", "Completions", "Duration", "Age", "Containers", "Images", "Selector"]
        );
        assert_eq!(
            names("CronJob"),
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            names("Event"),
            ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"]
        );
        assert_eq!(
            names("HorizontalPodAutoscaler"),
            ["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"]
        );
        assert_eq!(names("EndpointSlice"), ["Name", "AddressType", "Ports", "Endpoints", "Age"]);
        assert_eq!(names("Role"), ["Name", "Created At"]);
        assert_eq!(names("ClusterRoleBinding"), ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]);
        let binding = serde_json::json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "ops"}, {"kind": "User", "name": "eve"},
                {"kind": "ServiceAccount", "name": "robot", "namespace": "a"}]});
        let row = cells("RoleBinding", &binding, now());
        assert_eq!(row[1], "ClusterRole/view");
        assert_eq!(&row[3..], ["bob, eve", "ops", "a/robot"]);
        let wide: Vec<&str> = columns("Node").iter().filter(|c| c.priority == 1).map(|c| c.name).collect();
        assert_eq!(wide, ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]);
        let shown: Vec<&str> = columns("Event").iter().filter(|c| c.priority == 0).map(|c| c.name).collect();
        assert_eq!(shown, ["Last Seen", "Type", "Reason", "Object", "Message"]);
        assert_eq!(
            column_definitions("Namespace")[1],
            json!({"name": "Status", "type": "string", "format": "", "description": "The status of the namespace", "priority": 0})
        );
    }

    #[test]
    fn human_durations_follow_apimachinery() {
        let h = |s: u64| human_duration(Duration::from_secs(s));
        assert_eq!(h(0), "0s");
        assert_eq!(h(45), "45s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(120), "2m");
        assert_eq!(h(182), "3m2s");
        assert_eq!(h(600), "10m");
        assert_eq!(h(179 * 60 + 59), "179m");
        assert_eq!(h(3 * 3600), "3h");
        assert_eq!(h(5 * 3600 + 7 * 60), "5h7m");
        assert_eq!(h(30 * 3600), "30h");
        assert_eq!(h(51 * 3600), "2d3h");
        assert_eq!(h(3 * 86400), "3d");
        assert_eq!(h(20 * 86400), "20d");
        assert_eq!(h(400 * 86400), "400d");
        assert_eq!(h(3 * 365 * 86400 + 20 * 86400), "3y20d");
        assert_eq!(h(3 * 365 * 86400), "3y");
        assert_eq!(h(9 * 365 * 86400 + 86400), "9y");
        assert_eq!(human_duration(Duration::MAX), human_duration(Duration::from_secs(i64::MAX as u64)));
        assert_eq!(human_signed(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_signed(SignedDuration::from_secs(-2)), "<invalid>");
    }

    #[test]
    fn ages_and_the_default_table() {
        let o = json!({"metadata": {"name": "a", "creationTimestamp": ago(90)}});
        assert_eq!(row("ConfigMap", o.clone())[2], "90s");
        assert_eq!(row("ConfigMap", json!({"metadata": {"name": "a"}}))[2], "<unknown>");
        let future = json!({"metadata": {"creationTimestamp": ago(-60)}});
        assert_eq!(row("Lease", future)[2], "<invalid>");
        assert_eq!(row("Widget", o), [json!("a"), json!("2025-06-01T11:58:30Z")]);
        let precise = json!({"metadata": {"name": "b", "creationTimestamp": "2025-06-01T11:58:30.123456Z"}});
        assert_eq!(row("Widget", precise)[1], "2025-06-01T11:58:30Z");
        assert_eq!(row("Widget", json!({}))[1], "0001-01-01T00:00:00Z");
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": ago(600)}}})
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web-1", "creationTimestamp": ago(3600)}, "spec": spec, "status": status})
    }

    fn two_containers() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}, {"name": "log", "image": "busybox"}]})
    }

    fn summary(p: &Value) -> (String, String, String) {
        let s = pod_summary(p, now());
        (s.ready, s.status, s.restarts)
    }

    fn triple(ready: &str, status: &str, restarts: &str) -> (String, String, String) {
        (ready.to_string(), status.to_string(), restarts.to_string())
    }

    #[test]
    fn pod_ready_status_and_restarts() {
        let p = pod(
            two_containers(),
            json!({"phase": "Running", "podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [running("app", true, 0), running("log", false, 0)]}),
        );
        let cells = row("Pod", p);
        assert_eq!(&cells[..5], [json!("web-1"), json!("1/2"), json!("Running"), json!("0"), json!("60m")]);
        assert_eq!(&cells[5..], [json!("10.1.0.5"), json!("<none>"), json!("<none>"), json!("<none>")]);

        let crash = json!({"name": "app", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(120)}}});
        let p =
            pod(two_containers(), json!({"phase": "Running", "containerStatuses": [crash, running("log", true, 1)]}));
        assert_eq!(summary(&p), triple("1/2", "CrashLoopBackOff", "4 (2m ago)"));

        // Restarts without a recorded termination show no time.
        let p = pod(two_containers(), json!({"phase": "Running", "containerStatuses": [running("app", true, 2)]}));
        assert_eq!(summary(&p).2, "2");

        let done = |code: i64, reason: &str| json!({"name": "app", "state": {"terminated": {"exitCode": code, "reason": reason, "signal": 0}}});
        let p = pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [done(0, "Completed")]}),
        );
        assert_eq!(summary(&p), triple("0/1", "Completed", "0"));
        assert_eq!(row_conditions("Pod", &p)[0]["reason"], "Succeeded");
        assert!(row_conditions("Pod", &pod(json!({}), json!({"phase": "Running"}))).is_empty());
        let p = pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Failed", "containerStatuses": [done(137, "")]}),
        );
        assert_eq!(summary(&p).1, "ExitCode:137");
        let killed = json!({"name": "app", "state": {"terminated": {"exitCode": 0, "signal": 9}}});
        let p =
            pod(json!({"containers": [{"name": "app"}]}), json!({"phase": "Failed", "containerStatuses": [killed]}));
        assert_eq!(summary(&p).1, "Signal:9");

        // One container completed, another still running: Running or NotReady by the pod's Ready condition.
        let statuses = json!([done(0, "Completed"), running("log", true, 0)]);
        let p = pod(two_containers(), json!({"phase": "Running", "containerStatuses": statuses.clone()}));
        assert_eq!(summary(&p).1, "NotReady");
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let p = pod(two_containers(), json!({"phase": "Running", "conditions": ready, "containerStatuses": statuses}));
        assert_eq!(summary(&p), triple("1/2", "Running", "0"));
    }

    #[test]
    fn pod_phases_reasons_and_deletion() {
        let p = pod(json!({"containers": [{"name": "app"}]}), json!({}));
        assert_eq!(summary(&p), triple("0/1", "Pending", "0"));
        let p = pod(
            json!({}),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(summary(&p).1, "SchedulingGated");
        let p = pod(json!({}), json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(summary(&p).1, "Evicted");
        let waiting = json!({"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}});
        let p =
            pod(json!({"containers": [{"name": "app"}]}), json!({"phase": "Pending", "containerStatuses": [waiting]}));
        assert_eq!(summary(&p).1, "ContainerCreating");

        let mut p = pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Running", "containerStatuses": [running("app", true, 0)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(summary(&p), triple("1/1", "Terminating", "0"));
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(summary(&p).1, "Unknown");
        let mut p = pod(json!({}), json!({"phase": "Succeeded"}));
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(summary(&p).1, "Succeeded");
    }

    #[test]
    fn pod_init_containers_and_sidecars() {
        let spec = json!({"initContainers": [{"name": "migrate"}, {"name": "seed"}], "containers": [{"name": "app"}]});
        let init =
            |name: &str, state: Value, restarts: i64| json!({"name": name, "state": state, "restartCount": restarts});
        let done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [init("migrate", done.clone(), 0), init("seed", json!({"running": {}}), 0)],
                   "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        assert_eq!(summary(&p), triple("0/1", "Init:1/2", "0"));
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [init("migrate", json!({"waiting": {"reason": "CrashLoopBackOff"}}), 4)]}),
        );
        assert_eq!(summary(&p), triple("0/1", "Init:CrashLoopBackOff", "4"));
        let failed = json!({"terminated": {"exitCode": 2}});
        let p = pod(spec.clone(), json!({"phase": "Pending", "initContainerStatuses": [init("migrate", failed, 0)]}));
        assert_eq!(summary(&p).1, "Init:ExitCode:2");
        let oom = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
        let p = pod(spec, json!({"phase": "Pending", "initContainerStatuses": [init("migrate", oom, 0)]}));
        assert_eq!(summary(&p).1, "Init:OOMKilled");

        // A started sidecar counts toward READY; its restarts count once initialised.
        let spec =
            json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]});
        let proxy = json!({"name": "proxy", "started": true, "ready": true, "restartCount": 2,
            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}});
        let p = pod(
            spec,
            json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [proxy], "containerStatuses": [running("app", true, 1)]}),
        );
        assert_eq!(summary(&p), triple("2/2", "Running", "3 (5m ago)"));
    }

    #[test]
    fn pod_wide_cells() {
        let mut p = pod(
            json!({"nodeName": "n1", "readinessGates": [{"conditionType": "lb/ready"}, {"conditionType": "x/ok"}]}),
            json!({"phase": "Running", "podIPs": [{"ip": "10.1.0.7"}, {"ip": "fd00::7"}], "podIP": "10.1.0.7",
                   "nominatedNodeName": "n2", "conditions": [{"type": "lb/ready", "status": "True"}]}),
        );
        assert_eq!(&row("Pod", p.clone())[5..], [json!("10.1.0.7"), json!("n1"), json!("n2"), json!("1/2")]);
        p["status"]["podIPs"] = json!([]);
        assert_eq!(row("Pod", p)[5], "10.1.0.7");
    }

    #[test]
    fn services() {
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "web", "creationTimestamp": ago(300)}, "spec": spec, "status": status});
        let s = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"tier": "fe", "app": "web"},
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
            json!({}),
        );
        assert_eq!(
            row("Service", s),
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP,53/UDP"),
                json!("5m"),
                json!("app=web,tier=fe")
            ]
        );
        let s = svc(json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11", "ports": [{"port": 80}]}), json!({}));
        assert_eq!(&row("Service", s)[2..5], [json!("10.96.0.11"), json!("<pending>"), json!("80/TCP")]);
        let s = svc(
            json!({"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.1"}]}}),
        );
        assert_eq!(row("Service", s)[3], "203.0.113.1,203.0.113.9,lb.example.com,1.2.3.4");
        let s = svc(json!({"type": "ExternalName", "externalName": "db.example.com"}), json!({}));
        assert_eq!(
            &row("Service", s)[1..5],
            [json!("ExternalName"), json!("<none>"), json!("db.example.com"), json!("<none>")]
        );
        let s = svc(json!({"clusterIP": "None", "externalIPs": ["1.1.1.1", "2.2.2.2"]}), json!({}));
        assert_eq!(&row("Service", s)[1..4], [json!("ClusterIP"), json!("None"), json!("1.1.1.1,2.2.2.2")]);
        assert_eq!(row("Service", svc(json!({"type": "Weird"}), json!({})))[3], "<unknown>");
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(row("Endpoints", ep)[1], "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...");
        let headless = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}, {"ip": "10.0.0.9"}]}]});
        assert_eq!(row("Endpoints", headless)[1], "fd00::1,10.0.0.9");
        let v6 = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(row("Endpoints", v6)[1], "[fd00::1]:80");
        assert_eq!(row("Endpoints", json!({}))[1], "<none>");

        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "grpc"}, {}, {"port": 9}],
            "endpoints": [{"addresses": ["10.0.0.1", "10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4", "10.0.0.5"]}]});
        assert_eq!(
            &row("EndpointSlice", slice)[1..4],
            [json!("IPv4"), json!("80,grpc,* + 1 more..."), json!("10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...")]
        );
        assert_eq!(&row("EndpointSlice", json!({}))[2..4], [json!("<unset>"), json!("<unset>")]);
    }

    #[test]
    fn nodes() {
        let node = json!({"metadata": {"name": "n1", "creationTimestamp": ago(2 * 86400 + 3 * 3600),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "", "kubernetes.io/role": "master", "zone": "a"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0"}}});
        assert_eq!(
            row("Node", node),
            [
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,master"),
                json!("2d3h"),
                json!("v1.33.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("<unknown>"),
            ]
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(&row("Node", not_ready)[1..3], [json!("NotReady"), json!("<none>")]);
        assert_eq!(row("Node", json!({}))[1], "Unknown");
    }

    #[test]
    fn events() {
        let ev = json!({"metadata": {"name": "web-1.17f"}, "type": "Warning", "reason": "BackOff", "message": " Back-off restarting failed container \n",
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "source": {"component": "kubelet", "host": "n1"}, "count": 7,
            "firstTimestamp": ago(3600), "lastTimestamp": ago(30)});
        assert_eq!(
            row("Event", ev),
            [
                json!("30s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, n1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(7),
                json!("web-1.17f"),
            ]
        );
        // events.k8s.io-style: eventTime, series, reporting component; no counts mean one.
        let ev = json!({"eventTime": "2025-06-01T11:59:00.000000Z", "reportingComponent": "keel-scheduler",
            "involvedObject": {"kind": "Node"}, "series": {"count": 4, "lastObservedTime": "2025-06-01T11:59:50.000000Z"}});
        let cells = row("Event", ev);
        assert_eq!(
            [&cells[0], &cells[3], &cells[5], &cells[7], &cells[8]],
            [&json!("10s"), &json!("node"), &json!("keel-scheduler"), &json!("60s"), &json!(4)]
        );
        let cells = row("Event", json!({}));
        assert_eq!([&cells[0], &cells[7], &cells[8]], [&json!("<unknown>"), &json!("<unknown>"), &json!(1)]);
    }

    fn template() -> Value {
        json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}})
    }

    #[test]
    fn workloads() {
        let selector = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]}, {"key": "canary", "operator": "DoesNotExist"}]});
        let d = json!({"metadata": {"name": "web", "creationTimestamp": ago(86400)},
            "spec": {"replicas": 3, "selector": selector, "template": template()},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            row("Deployment", d),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("24h"),
                json!("app,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web,!canary,tier in (be,fe)")
            ]
        );
        let d = json!({"spec": {"selector": {}}});
        assert_eq!([&row("Deployment", d.clone())[1], &row("Deployment", d)[7]], [&json!("0/1"), &json!("")]);
        let bad = json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        assert_eq!(row("Deployment", bad.clone())[7], "<invalid>");
        assert_eq!(row("ReplicaSet", bad)[7], "<error>");

        let rs = json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(&row("ReplicaSet", rs)[1..4], [json!(2), json!(2), json!(1)]);
        assert_eq!(row("ReplicaSet", json!({}))[7], "<none>");

        let sts = json!({"spec": {"replicas": 3, "template": template()}, "status": {"readyReplicas": 3}});
        assert_eq!(row("StatefulSet", sts)[1], "3/3");

        let ds = json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}, "selector": {"matchLabels": {"k8s-app": "proxy"}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let cells = row("DaemonSet", ds);
        assert_eq!(&cells[1..7], [json!(3), json!(3), json!(2), json!(3), json!(2), json!("kubernetes.io/os=linux")]);
        assert_eq!(cells[10], "k8s-app=proxy");
        assert_eq!(row("DaemonSet", json!({}))[6], "<none>");

        let cr = json!({"metadata": {"name": "proxy-5d8f", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "x"},
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "proxy", "controller": true}]}, "revision": 4});
        assert_eq!(&row("ControllerRevision", cr)[1..3], [json!("daemonset.apps/proxy"), json!(4)]);
        assert_eq!(row("ControllerRevision", json!({}))[1], "<none>");
    }

    #[test]
    fn jobs_and_cron_jobs() {
        let job = |spec: Value, status: Value| json!({"metadata": {"name": "pi"}, "spec": spec, "status": status});
        let j = job(
            json!({"completions": 3, "template": template(), "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}}),
            json!({"succeeded": 3, "startTime": ago(200), "completionTime": ago(18), "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
        );
        let cells = row("Job", j);
        assert_eq!(&cells[1..4], [json!("Complete"), json!("3/3"), json!("3m2s")]);
        assert_eq!(cells[7], "batch.kubernetes.io/controller-uid=u1");
        let j = job(json!({"parallelism": 2}), json!({"succeeded": 1, "startTime": ago(45)}));
        assert_eq!(&row("Job", j)[1..4], [json!("Running"), json!("1/1 of 2"), json!("45s")]);
        let j = job(json!({}), json!({"conditions": [{"type": "Failed", "status": "True"}]}));
        assert_eq!(&row("Job", j)[1..4], [json!("Failed"), json!("0/1"), json!("")]);
        let j = job(json!({}), json!({"conditions": [{"type": "Suspended", "status": "True"}]}));
        assert_eq!(row("Job", j)[1], "Suspended");
        let mut j = job(json!({}), json!({"conditions": [{"type": "FailureTarget", "status": "True"}]}));
        assert_eq!(row("Job", j.clone())[1], "FailureTarget");
        j["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(row("Job", j)[1], "Terminating");

        let cj = json!({"metadata": {"name": "backup", "creationTimestamp": ago(86400 * 3)},
            "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "suspend": true,
                "jobTemplate": {"spec": {"template": template()}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(150)}});
        assert_eq!(
            &row("CronJob", cj)[1..9],
            [
                json!("*/5 * * * *"),
                json!("Etc/UTC"),
                json!("True"),
                json!(1),
                json!("2m30s"),
                json!("3d"),
                json!("app,log"),
                json!("nginx:1.27,busybox")
            ]
        );
        let cells = row("CronJob", json!({"spec": {"schedule": "@daily"}}));
        assert_eq!(&cells[2..6], [json!("<none>"), json!("False"), json!(0), json!("<none>")]);
        assert_eq!(cells[9], "<none>");
    }

    #[test]
    fn autoscalers() {
        let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 10, "minReplicas": 2,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "100"}}}]},
            "status": {"currentReplicas": 3, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "120m"}}}]}});
        assert_eq!(
            row("HorizontalPodAutoscaler", hpa),
            [
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 45%/80%, memory: <unknown>/1Gi + 1 more..."),
                json!("2"),
                json!(10),
                json!(3),
                json!("<unknown>")
            ]
        );
        let fresh = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}, "maxReplicas": 5}});
        assert_eq!(&row("HorizontalPodAutoscaler", fresh)[2..4], [json!("cpu: <unknown>/80%"), json!("1")]);

        let spec = |m: Value| json!({"spec": {"metrics": [m]}});
        let pods = spec(json!({"type": "Pods", "pods": {"target": {"averageValue": "100"}}}));
        assert_eq!(hpa_targets(&pods), "<unknown>/100");
        let mut object = spec(json!({"type": "Object", "object": {"target": {"value": "5"}}}));
        assert_eq!(hpa_targets(&object), "<unknown>/5");
        object["status"] = json!({"currentMetrics": [{"type": "Object", "object": {"current": {"value": "7"}}}]});
        assert_eq!(hpa_targets(&object), "7/5");
        let external = spec(json!({"type": "External", "external": {"target": {"averageValue": "30"}}}));
        assert_eq!(hpa_targets(&external), "<unknown>/30 (avg)");
        let container = spec(
            json!({"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {}}}),
        );
        assert_eq!(hpa_targets(&container), "cpu: <unknown>/<auto>");
        assert_eq!(hpa_targets(&spec(json!({"type": "Magic"}))), "<unknown type>");
    }

    #[test]
    fn small_kinds() {
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Terminating"}});
        assert_eq!(row("Namespace", ns)[1], "Terminating");
        assert_eq!(row("Namespace", json!({}))[1], "Active");
        let cm = json!({"data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(row("ConfigMap", cm)[1], 3);
        let secret = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}, "stringData": {"tls.key": "x", "ca.crt": "y"}});
        assert_eq!(&row("Secret", secret)[1..3], [json!("kubernetes.io/tls"), json!(3)]);
        assert_eq!(&row("Secret", json!({}))[1..3], [json!("Opaque"), json!(0)]);
        assert_eq!(row("ServiceAccount", json!({"secrets": [{"name": "t"}]}))[1], 1);
        let lease = json!({"metadata": {"name": "keel-scheduler"}, "spec": {"holderIdentity": "node-1_abc"}});
        assert_eq!(&row("Lease", lease)[..2], [json!("keel-scheduler"), json!("node-1_abc")]);
        assert_eq!(row("Lease", json!({}))[1], "");
    }

    #[test]
    fn label_selectors_print_as_kubernetes_does() {
        let s = |v: Value| format_label_selector(Some(&v));
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(s(json!(null)), "<none>");
        assert_eq!(s(json!({"matchLabels": {}})), "<none>");
        assert_eq!(
            s(json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod", "dev", "prod"]}]})),
            "env notin (dev,prod)"
        );
        assert_eq!(
            s(json!({"matchExpressions": [{"key": "gpu", "operator": "Exists"}], "matchLabels": {"app": "x"}})),
            "app=x,gpu"
        );
        assert_eq!(s(json!({"matchExpressions": [{"key": "gpu", "operator": "Exists", "values": ["a"]}]})), "<error>");
        assert_eq!(s(json!({"matchExpressions": [{"key": "gpu", "operator": "Near"}]})), "<error>");
        assert_eq!(s(json!({"matchLabels": {"app": 3}})), "<error>");
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
    }
}
