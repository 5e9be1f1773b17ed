//! Pods and pod templates: the defaults of `SetDefaults_Pod`/`SetDefaults_PodSpec` and their nested
//! types (containers, ports, probes, volumes), `ValidatePodSpec` (shared by every workload's template) and
//! `ValidatePodUpdate`'s rule that a pod's spec is fixed but for images, the active deadline and added
//! tolerations.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::fields::*;
use crate::quantity::Quantity;
use crate::validation::{self, Cause};

// ---------------------------------------------------------------------------------------------- defaults

/// The defaults of a Pod: its spec's, then those only pods get (requests from limits, service links), and
/// those of the API server's admission (the default service account, priority, and the not-ready and
/// unreachable tolerations of [`DEFAULT_TOLERATION_SECONDS`]).
/// Where a pod's service-account token, CA and namespace are mounted in each container.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// kube-apiserver's ServiceAccount admission: unless the pod (or, `account_automounts` false, its
/// service account) opts out, a projected volume `kube-api-access-<suffix>` with a token bound to the pod,
/// the cluster CA (`kube-root-ca.crt`) and the namespace, mounted read-only at [`SERVICE_ACCOUNT_DIR`] in
/// every container that mounts nothing there itself.
pub fn mount_service_account_token(pod: &mut Value, suffix: &str, account_automounts: bool) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let automount = spec.get("automountServiceAccountToken").and_then(Value::as_bool).unwrap_or(account_automounts);
    if !automount {
        return;
    }
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in each_obj_mut(spec, list) {
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else { continue };
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_DIR)) {
                continue;
            }
            mounts.push(json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_DIR}));
            mounted = true;
        }
    }
    if mounted {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(volume);
        }
    }
}

pub fn default_pod(pod: &mut Value) {
    let Some(pod) = pod.as_object_mut() else { return };
    let Some(spec) = ensure_obj(pod, "spec") else { return };
    default_spec(spec);
    for list in ["initContainers", "containers"] {
        for c in each_obj_mut(spec, list) {
            requests_from_limits(c);
        }
    }
    default_to(spec, "enableServiceLinks", json!(true));
    default_str(spec, "serviceAccountName", "default");
    default_str(spec, "serviceAccount", "default");
    if spec.get("priorityClassName").is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
        default_to(spec, "priority", json!(0));
    }
    default_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    default_tolerations(spec);
}

/// The defaults of a pod template (`spec.template` of workloads): its spec's only.
pub fn default_template(template: &mut Value) {
    let Some(template) = template.as_object_mut() else { return };
    if let Some(spec) = ensure_obj(template, "spec") {
        default_spec(spec);
    }
}

/// `SetDefaults_PodSpec` and the defaults of what it holds.
fn default_spec(spec: &mut Map<String, Value>) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_to(spec, "securityContext", json!({}));
    default_to(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    // The deprecated `serviceAccount` mirrors `serviceAccountName`, as conversion keeps them.
    let sa = spec.get("serviceAccountName").and_then(Value::as_str).unwrap_or("").to_string();
    let deprecated = spec.get("serviceAccount").and_then(Value::as_str).unwrap_or("").to_string();
    if sa.is_empty() && !deprecated.is_empty() {
        spec.insert("serviceAccountName".into(), json!(deprecated));
    } else if !sa.is_empty() {
        spec.insert("serviceAccount".into(), json!(sa));
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool).unwrap_or(false);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in each_obj_mut(spec, list) {
            default_container(c, host_network);
        }
    }
    for v in each_obj_mut(spec, "volumes") {
        default_volume(v);
    }
}

/// `SetDefaults_Container` and its ports, probes, environment and resources.
fn default_container(c: &mut Map<String, Value>, host_network: bool) {
    let policy = if image_tag_is_latest(c.get("image").and_then(Value::as_str).unwrap_or("")) {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_str(c, "imagePullPolicy", policy);
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    default_to(c, "resources", json!({}));
    for p in each_obj_mut(c, "ports") {
        default_str(p, "protocol", "TCP");
        if host_network {
            if let Some(port) = p.get("containerPort").cloned() {
                default_to(p, "hostPort", port);
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default_to(p, "timeoutSeconds", json!(1));
            default_to(p, "periodSeconds", json!(10));
            default_to(p, "successThreshold", json!(1));
            default_to(p, "failureThreshold", json!(3));
            default_http_get(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get_mut(hook).and_then(Value::as_object_mut) {
                default_http_get(h);
            }
        }
    }
    for e in each_obj_mut(c, "env") {
        if let Some(field_ref) =
            e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")).and_then(Value::as_object_mut)
        {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
}

fn default_http_get(handler: &mut Map<String, Value>) {
    if let Some(http) = handler.get_mut("httpGet").and_then(Value::as_object_mut) {
        default_str(http, "path", "/");
        default_str(http, "scheme", "HTTP");
    }
}

/// Whether an image reference has the tag `latest`, written or implied (no tag and no digest).
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// `SetDefaults_Volume` (an emptyDir when no source is given) and the default modes of projected files.
fn default_volume(v: &mut Map<String, Value>) {
    if !v.iter().any(|(k, val)| k != "name" && !val.is_null()) {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
            default_to(s, "defaultMode", json!(0o644));
        }
    }
    if let Some(sources) = v.get_mut("projected").and_then(|p| p.get_mut("sources")).and_then(Value::as_array_mut) {
        for s in sources.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(t) = s.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                default_to(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        default_to(h, "type", json!(""));
    }
}

/// A pod's requests default to its limits (not a template's).
fn requests_from_limits(c: &mut Map<String, Value>) {
    let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) else { return };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else { return };
    let Some(requests) = ensure_obj(resources, "requests") else { return };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

/// How long a pod tolerates a not-ready or unreachable node unless it says otherwise. Kubernetes' default
/// is 300 s; keel's is 30 s, so that the pods of a lost node come back elsewhere within grace (20 s) + 30 s.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 30;

/// The DefaultTolerationSeconds admission: pods tolerate a not-ready or unreachable node for
/// [`DEFAULT_TOLERATION_SECONDS`].
fn default_tolerations(spec: &mut Map<String, Value>) {
    let slot = spec.entry("tolerations").or_insert(Value::Null);
    if slot.is_null() {
        *slot = json!([]);
    }
    let Some(tolerations) = slot.as_array_mut() else { return };
    for taint in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let covered = tolerations.iter().any(|t| {
            let effect = str_of(t, "effect");
            let key = str_of(t, "key");
            (effect.is_empty() || effect == "NoExecute")
                && (key == taint || (key.is_empty() && str_of(t, "operator") == "Exists"))
        });
        if !covered {
            tolerations.push(json!({"key": taint, "operator": "Exists", "effect": "NoExecute",
                                  "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

// -------------------------------------------------------------------------------------------- validation

/// `ValidatePodCreate` beyond metadata.
pub fn validate_pod(pod: &Value) -> Vec<Cause> {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut causes = validate_spec(spec, "spec");
    if !arr_of(spec, "ephemeralContainers").is_empty() {
        causes.push(forbidden("spec.ephemeralContainers", "cannot be set on create"));
    }
    causes
}

/// `ValidatePodTemplateSpec`: the template's labels and annotations, and its spec.
pub fn validate_template(template: &Value, path: &str) -> Vec<Cause> {
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let meta_path = child(path, "metadata");
    let mut causes = validation::labels(&str_map(meta, "labels"), &child(&meta_path, "labels"));
    causes.extend(validation::annotations(&str_map(meta, "annotations"), &child(&meta_path, "annotations")));
    causes.extend(validate_spec(template.get("spec").unwrap_or(&Value::Null), &child(path, "spec")));
    causes
}

const RESTART_POLICIES: [&str; 3] = ["Always", "Never", "OnFailure"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Which list a container is in: init containers may restart as sidecars, others may not say so.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ContainerList {
    Init,
    Regular,
    Ephemeral,
}

/// `ValidatePodSpec` at `path` (`spec`, `spec.template.spec`, `spec.jobTemplate.spec.template.spec`).
pub fn validate_spec(spec: &Value, path: &str) -> Vec<Cause> {
    let mut c = Vec::new();
    let volumes = validate_volumes(arr_of(spec, "volumes"), &child(path, "volumes"), &mut c);
    if arr_of(spec, "containers").is_empty() {
        c.push(required(child(path, "containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (list, kind) in [
        ("initContainers", ContainerList::Init),
        ("containers", ContainerList::Regular),
        ("ephemeralContainers", ContainerList::Ephemeral),
    ] {
        for (i, ctr) in arr_of(spec, list).iter().enumerate() {
            validate_container(ctr, &index(&child(path, list), i), kind, &volumes, &mut names, &mut c);
        }
    }
    host_ports(spec, path, &mut c);
    match str_of(spec, "restartPolicy") {
        "" => c.push(required(child(path, "restartPolicy"), "")),
        p if RESTART_POLICIES.contains(&p) => {}
        p => c.push(Cause::not_supported(child(path, "restartPolicy"), p, &RESTART_POLICIES)),
    }
    match str_of(spec, "dnsPolicy") {
        "" => c.push(required(child(path, "dnsPolicy"), "")),
        "None" if !has(spec, "dnsConfig") => {
            c.push(required(child(path, "dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None"))
        }
        p if DNS_POLICIES.contains(&p) => {}
        p => c.push(Cause::not_supported(child(path, "dnsPolicy"), p, &DNS_POLICIES)),
    }
    c.extend(validation::labels(&str_map(spec, "nodeSelector"), &child(path, "nodeSelector")));
    for (name, check) in [
        ("serviceAccountName", validation::dns1123_subdomain as fn(&str) -> Vec<String>),
        ("nodeName", validation::dns1123_subdomain),
        ("schedulerName", validation::dns1123_subdomain),
        ("hostname", validation::dns1123_label),
        ("subdomain", validation::dns1123_label),
    ] {
        let v = str_of(spec, name);
        if !v.is_empty() {
            c.extend(check(v).iter().map(|e| Cause::invalid(child(path, name), v, e)));
        }
    }
    if let Some(d) = int_of(spec, "activeDeadlineSeconds").filter(|d| !(1..=i64::from(u32::MAX)).contains(d)) {
        c.push(invalid_int(child(path, "activeDeadlineSeconds"), d, "must be between 1 and 4294967295, inclusive"));
    }
    non_negative(spec, "terminationGracePeriodSeconds", path, &mut c);
    tolerations(arr_of(spec, "tolerations"), &child(path, "tolerations"), &mut c);
    if let Some(sc) = obj_of(spec, "securityContext") {
        ids(sc, &child(path, "securityContext"), &["runAsUser", "runAsGroup", "fsGroup"], &mut c);
    }
    topology_spread(arr_of(spec, "topologySpreadConstraints"), &child(path, "topologySpreadConstraints"), &mut c);
    c
}

/// User and group ids: `IsValidUserID`/`IsValidGroupID`.
fn ids(sc: &Value, path: &str, names: &[&str], c: &mut Vec<Cause>) {
    for name in names {
        if let Some(id) = int_of(sc, name).filter(|id| !(0..=i64::from(i32::MAX)).contains(id)) {
            c.push(invalid_int(child(path, name), id, "must be between 0 and 2147483647, inclusive"));
        }
    }
}

fn validate_container(
    ctr: &Value,
    path: &str,
    list: ContainerList,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    c: &mut Vec<Cause>,
) {
    let name = str_of(ctr, "name");
    if name.is_empty() {
        c.push(required(child(path, "name"), ""));
    } else {
        c.extend(validation::dns1123_label(name).iter().map(|e| Cause::invalid(child(path, "name"), name, e)));
        if !names.insert(name.to_string()) {
            c.push(Cause::duplicate(child(path, "name"), name));
        }
    }
    let image = str_of(ctr, "image");
    if image.is_empty() {
        c.push(required(child(path, "image"), ""));
    } else if image.trim() != image {
        c.push(Cause::invalid(child(path, "image"), image, "must not have leading or trailing whitespace"));
    }
    match str_of(ctr, "imagePullPolicy") {
        "" => c.push(required(child(path, "imagePullPolicy"), "")),
        p if PULL_POLICIES.contains(&p) => {}
        p => c.push(Cause::not_supported(child(path, "imagePullPolicy"), p, &PULL_POLICIES)),
    }
    match str_of(ctr, "terminationMessagePolicy") {
        "" => c.push(required(child(path, "terminationMessagePolicy"), "")),
        "File" | "FallbackToLogsOnError" => {}
        p => {
            c.push(Cause::not_supported(child(path, "terminationMessagePolicy"), p, &["File", "FallbackToLogsOnError"]))
        }
    }
    let restart = ctr.get("restartPolicy").and_then(Value::as_str);
    let sidecar = list == ContainerList::Init && restart == Some("Always");
    match (list, restart) {
        (_, None) => {}
        (ContainerList::Init, Some("Always")) => {}
        (ContainerList::Init, Some(p)) => c.push(Cause::not_supported(child(path, "restartPolicy"), p, &["Always"])),
        (_, Some(_)) => c.push(forbidden(child(path, "restartPolicy"), "may not be set for non-init containers")),
    }
    container_ports(arr_of(ctr, "ports"), &child(path, "ports"), c);
    env(arr_of(ctr, "env"), &child(path, "env"), c);
    env_from(arr_of(ctr, "envFrom"), &child(path, "envFrom"), c);
    volume_mounts(arr_of(ctr, "volumeMounts"), &child(path, "volumeMounts"), volumes, c);
    resources(ctr.get("resources").unwrap_or(&Value::Null), &child(path, "resources"), c);
    for (probe, liveness_like) in [("livenessProbe", true), ("readinessProbe", false), ("startupProbe", true)] {
        let Some(p) = obj_of(ctr, probe) else { continue };
        if list == ContainerList::Init && !sidecar {
            c.push(forbidden(child(path, probe), "may not be set for init containers without restartPolicy=Always"));
        } else if list == ContainerList::Ephemeral {
            c.push(forbidden(child(path, probe), "cannot be set for an Ephemeral Container"));
        } else {
            validate_probe(p, &child(path, probe), liveness_like, c);
        }
    }
    if let Some(lifecycle) = obj_of(ctr, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = obj_of(lifecycle, hook) {
                handler(h, &child(&child(path, "lifecycle"), hook), &["exec", "httpGet", "tcpSocket", "sleep"], c);
            }
        }
    }
    if let Some(sc) = obj_of(ctr, "securityContext") {
        ids(sc, &child(path, "securityContext"), &["runAsUser", "runAsGroup"], c);
    }
}

fn container_ports(ports: &[Value], path: &str, c: &mut Vec<Cause>) {
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            c.extend(port_name(name).into_iter().map(|e| Cause::invalid(child(&p, "name"), name, e)));
            if !names.insert(name) {
                c.push(Cause::duplicate(child(&p, "name"), name));
            }
        }
        match int_of(port, "containerPort").unwrap_or(0) {
            0 => c.push(required(child(&p, "containerPort"), "")),
            n => c.extend(port_num(n).map(|e| invalid_int(child(&p, "containerPort"), n, e))),
        }
        if let Some(n) = int_of(port, "hostPort").filter(|n| *n != 0) {
            c.extend(port_num(n).map(|e| invalid_int(child(&p, "hostPort"), n, e)));
        }
        protocol(port, &p, c);
    }
}

/// A port's `protocol`: required (it is defaulted), one of TCP, UDP, SCTP.
pub fn protocol(port: &Value, path: &str, c: &mut Vec<Cause>) {
    match str_of(port, "protocol") {
        "" => c.push(required(child(path, "protocol"), "")),
        p if PROTOCOLS.contains(&p) => {}
        p => c.push(Cause::not_supported(child(path, "protocol"), p, &PROTOCOLS)),
    }
}

/// Host ports are unique per protocol across the pod's containers; with the host's network, each
/// container port is its host port.
fn host_ports(spec: &Value, path: &str, c: &mut Vec<Cause>) {
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool).unwrap_or(false);
    let mut seen = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for (i, ctr) in arr_of(spec, list).iter().enumerate() {
            for (j, port) in arr_of(ctr, "ports").iter().enumerate() {
                let p = index(&child(&index(&child(path, list), i), "ports"), j);
                let host = int_of(port, "hostPort").unwrap_or(0);
                let container = int_of(port, "containerPort").unwrap_or(0);
                if host_network && host != container {
                    c.push(invalid_int(
                        child(&p, "containerPort"),
                        container,
                        "must match `hostPort` when `hostNetwork` is true",
                    ));
                }
                if host != 0 && !seen.insert((host, str_of(port, "protocol").to_string())) {
                    c.push(Cause::duplicate(child(&p, "hostPort"), &format!("{host}/{}", str_of(port, "protocol"))));
                }
            }
        }
    }
}

const RELAXED_ENV_NAME: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";

/// `IsRelaxedEnvVarName` (the RelaxedEnvironmentVariableValidation rule, on by default since 1.32).
fn env_name(name: &str) -> Option<&'static str> {
    name.chars().any(|ch| !(' '..='~').contains(&ch) || ch == '=').then_some(RELAXED_ENV_NAME)
}

const ENV_FIELD_PATHS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn env(vars: &[Value], path: &str, c: &mut Vec<Cause>) {
    for (i, ev) in vars.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(ev, "name");
        if name.is_empty() {
            c.push(required(child(&p, "name"), ""));
        } else if let Some(e) = env_name(name) {
            c.push(Cause::invalid(child(&p, "name"), name, e));
        }
        let Some(from) = obj_of(ev, "valueFrom") else { continue };
        let vp = child(&p, "valueFrom");
        let sources: Vec<&str> = ["fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef"]
            .into_iter()
            .filter(|s| has(from, s))
            .collect();
        if sources.is_empty() {
            c.push(Cause::invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !str_of(ev, "value").is_empty() {
            c.push(Cause::invalid(&vp, "", "may not be specified when `value` is not empty"));
        } else if sources.len() > 1 {
            c.push(Cause::invalid(&vp, "", "may not have more than one field specified at a time"));
        }
        if let Some(f) = obj_of(from, "fieldRef") {
            let fp = child(&vp, "fieldRef");
            let field_path = str_of(f, "fieldPath");
            if str_of(f, "apiVersion").is_empty() {
                c.push(required(child(&fp, "apiVersion"), ""));
            } else if field_path.is_empty() {
                c.push(required(child(&fp, "fieldPath"), ""));
            } else if !(ENV_FIELD_PATHS.contains(&field_path) || subscripted_field(field_path)) {
                c.push(Cause::not_supported(child(&fp, "fieldPath"), field_path, &ENV_FIELD_PATHS));
            }
        }
        if let Some(r) = obj_of(from, "resourceFieldRef") {
            let resource = str_of(r, "resource");
            let rp = child(&child(&vp, "resourceFieldRef"), "resource");
            if resource.is_empty() {
                c.push(required(rp, ""));
            } else if !(RESOURCE_FIELDS.contains(&resource)
                || resource.starts_with("limits.hugepages-")
                || resource.starts_with("requests.hugepages-"))
            {
                c.push(Cause::not_supported(rp, resource, &RESOURCE_FIELDS));
            }
        }
        for sel in ["configMapKeyRef", "secretKeyRef"] {
            let Some(s) = obj_of(from, sel) else { continue };
            let sp = child(&vp, sel);
            if str_of(s, "name").is_empty() {
                c.push(required(child(&sp, "name"), ""));
            }
            let k = str_of(s, "key");
            if k.is_empty() {
                c.push(required(child(&sp, "key"), ""));
            } else {
                c.extend(config_key(k).iter().map(|e| Cause::invalid(child(&sp, "key"), k, e)));
            }
        }
    }
}

/// `metadata.labels['key']` / `metadata.annotations['key']`, with a valid key.
fn subscripted_field(path: &str) -> bool {
    ["metadata.labels['", "metadata.annotations['"].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .is_some_and(|k| validation::qualified_name(k).is_empty())
    })
}

fn env_from(sources: &[Value], path: &str, c: &mut Vec<Cause>) {
    for (i, ef) in sources.iter().enumerate() {
        let p = index(path, i);
        let prefix = str_of(ef, "prefix");
        if let Some(e) = env_name(prefix) {
            c.push(Cause::invalid(child(&p, "prefix"), prefix, e));
        }
        let set: Vec<&str> = ["configMapRef", "secretRef"].into_iter().filter(|s| has(ef, s)).collect();
        match set.len() {
            0 => c.push(Cause::invalid(&p, "", "must specify one of: `configMapRef` or `secretRef`")),
            1 => {}
            _ => c.push(Cause::invalid(&p, "", "may not have more than one field specified at a time")),
        }
        for s in set {
            let name = ef.get(s).map(|r| str_of(r, "name")).unwrap_or("");
            let np = child(&child(&p, s), "name");
            if name.is_empty() {
                c.push(required(np, ""));
            } else {
                c.extend(validation::dns1123_subdomain(name).iter().map(|e| Cause::invalid(&np, name, e)));
            }
        }
    }
}

fn volume_mounts(mounts: &[Value], path: &str, volumes: &BTreeSet<String>, c: &mut Vec<Cause>) {
    let mut paths = BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(m, "name");
        if name.is_empty() {
            c.push(required(child(&p, "name"), ""));
        } else if !volumes.contains(name) {
            c.push(not_found(child(&p, "name"), name));
        }
        let mount_path = str_of(m, "mountPath");
        if mount_path.is_empty() {
            c.push(required(child(&p, "mountPath"), ""));
        } else if !paths.insert(mount_path) {
            c.push(Cause::invalid(child(&p, "mountPath"), mount_path, "must be unique"));
        }
        let sub = str_of(m, "subPath");
        if !sub.is_empty() {
            local_descending_path(sub, &child(&p, "subPath"), c);
        }
        match m.get("mountPropagation").and_then(Value::as_str) {
            None | Some("None" | "HostToContainer" | "Bidirectional") => {}
            Some(v) => c.push(Cause::not_supported(
                child(&p, "mountPropagation"),
                v,
                &["Bidirectional", "HostToContainer", "None"],
            )),
        }
    }
}

/// `validateLocalDescendingPath`: relative, without `..` steps.
fn local_descending_path(target: &str, path: &str, c: &mut Vec<Cause>) {
    if target.starts_with('/') {
        c.push(Cause::invalid(path, target, "must be a relative path"));
    }
    if target.split(['/', '\\']).any(|part| part == "..") {
        c.push(Cause::invalid(path, target, "must not contain '..'"));
    }
}

/// Container resource names: the standard ones without a domain (cpu, memory, ephemeral-storage,
/// hugepages-*), anything qualified with one.
fn resource_name(name: &str, path: &str, c: &mut Vec<Cause>) {
    c.extend(validation::qualified_name(name).iter().map(|e| Cause::invalid(path, name, e)));
    if !name.contains('/') && !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-")
    {
        c.push(Cause::invalid(path, name, "must be a standard resource for containers"));
    }
}

/// Resources the scheduler may overcommit: native ones other than huge pages. Others (extended
/// resources such as `example.com/gpu`) need a limit, and a request equal to it.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

fn quantity_map(resources: &Value, name: &str, path: &str, c: &mut Vec<Cause>) -> BTreeMap<String, (String, Quantity)> {
    let mut out = BTreeMap::new();
    for (k, v) in resources.get(name).and_then(Value::as_object).into_iter().flatten() {
        let p = key(path, k);
        resource_name(k, &p, c);
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match Quantity::parse(&text) {
            Err(e) => c.push(Cause::invalid(&p, &text, &e.to_string())),
            Ok(q) if q.is_negative() => c.push(Cause::invalid(&p, &text, NON_NEGATIVE)),
            Ok(q) => {
                if !overcommit_allowed(k) && q.milli_value() % 1000 != 0 {
                    c.push(Cause::invalid(&p, &text, "must be an integer"));
                }
                out.insert(k.clone(), (text, q));
            }
        }
    }
    out
}

/// `ValidateResourceRequirements`: names, quantities, requests no more than limits.
fn resources(res: &Value, path: &str, c: &mut Vec<Cause>) {
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let limits = quantity_map(res, "limits", &lim_path, c);
    let requests = quantity_map(res, "requests", &req_path, c);
    let huge = limits.keys().any(|k| k.starts_with("hugepages-"));
    if huge && !limits.contains_key("cpu") && !limits.contains_key("memory") {
        c.push(forbidden(&lim_path, "HugePages require cpu or memory"));
    }
    for (name, (text, q)) in &requests {
        match limits.get(name) {
            Some((lt, l)) if q != l && !overcommit_allowed(name) => {
                c.push(Cause::invalid(&req_path, text, &format!("must be equal to {name} limit of {lt}")))
            }
            Some((lt, l)) if q > l => {
                c.push(Cause::invalid(&req_path, text, &format!("must be less than or equal to {name} limit of {lt}")))
            }
            None if !overcommit_allowed(name) => {
                c.push(required(&lim_path, "Limit must be set for non overcommitable resources"))
            }
            _ => {}
        }
    }
}

/// A probe or lifecycle handler: exactly one of `kinds`, each well formed.
fn handler(h: &Value, path: &str, kinds: &[&str], c: &mut Vec<Cause>) {
    let set: Vec<&&str> = kinds.iter().filter(|k| has(h, k)).collect();
    match set.as_slice() {
        [] => c.push(required(path, "must specify a handler type")),
        [_] => {}
        [_, second, ..] => c.push(forbidden(child(path, second), "may not specify more than 1 handler type")),
    }
    if let Some(exec) = obj_of(h, "exec") {
        if arr_of(exec, "command").is_empty() {
            c.push(required(child(&child(path, "exec"), "command"), ""));
        }
    }
    if let Some(http) = obj_of(h, "httpGet") {
        let hp = child(path, "httpGet");
        if str_of(http, "path").is_empty() {
            c.push(required(child(&hp, "path"), ""));
        }
        port_num_or_name(value_at(http, "port"), &child(&hp, "port"), c);
        match str_of(http, "scheme") {
            "HTTP" | "HTTPS" => {}
            s => c.push(Cause::not_supported(child(&hp, "scheme"), s, &["HTTP", "HTTPS"])),
        }
    }
    if let Some(tcp) = obj_of(h, "tcpSocket") {
        port_num_or_name(value_at(tcp, "port"), &child(&child(path, "tcpSocket"), "port"), c);
    }
    if let Some(grpc) = obj_of(h, "grpc") {
        let port = int_of(grpc, "port").unwrap_or(0);
        if let Some(e) = port_num(port) {
            c.push(invalid_int(child(&child(path, "grpc"), "port"), port, e));
        }
    }
    if let Some(sleep) = obj_of(h, "sleep") {
        non_negative(sleep, "seconds", &child(path, "sleep"), c);
    }
}

fn validate_probe(p: &Value, path: &str, liveness_like: bool, c: &mut Vec<Cause>) {
    handler(p, path, &["exec", "httpGet", "tcpSocket", "grpc"], c);
    for f in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        non_negative(p, f, path, c);
    }
    if let Some(t) = int_of(p, "terminationGracePeriodSeconds").filter(|t| *t <= 0) {
        c.push(invalid_int(child(path, "terminationGracePeriodSeconds"), t, "must be greater than 0"));
    }
    if liveness_like {
        if let Some(s) = int_of(p, "successThreshold").filter(|s| *s != 1) {
            c.push(invalid_int(child(path, "successThreshold"), s, "must be 1"));
        }
    }
}

/// `ValidateVolumes`: unique DNS-label names and exactly one source each; the names, for the mounts.
fn validate_volumes(volumes: &[Value], path: &str, c: &mut Vec<Cause>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(vol, "name");
        if name.is_empty() {
            c.push(required(child(&p, "name"), ""));
        } else {
            c.extend(validation::dns1123_label(name).iter().map(|e| Cause::invalid(child(&p, "name"), name, e)));
            if !names.insert(name.to_string()) {
                c.push(Cause::duplicate(child(&p, "name"), name));
            }
        }
        let sources: Vec<&String> = vol
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| *k != "name" && !v.is_null())
            .map(|(k, _)| k)
            .collect();
        match sources.as_slice() {
            [] => c.push(required(&p, "must specify a volume type")),
            [_] => {}
            [_, second, ..] => c.push(forbidden(child(&p, second), "may not specify more than 1 volume type")),
        }
        volume_source(vol, &p, c);
    }
    names
}

const HOST_PATH_TYPES: [&str; 8] =
    ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket"];

fn volume_source(vol: &Value, path: &str, c: &mut Vec<Cause>) {
    let mode = |v: &Value, name: &str, p: &str, c: &mut Vec<Cause>| {
        if let Some(m) = int_of(v, name).filter(|m| !(0..=0o777).contains(m)) {
            c.push(invalid_int(child(p, name), m, "must be a number between 0 and 0777 (octal), both inclusive"));
        }
    };
    let items = |v: &Value, p: &str, c: &mut Vec<Cause>| {
        for (i, item) in arr_of(v, "items").iter().enumerate() {
            let ip = index(&child(p, "items"), i);
            if str_of(item, "key").is_empty() {
                c.push(required(child(&ip, "key"), ""));
            }
            let target = str_of(item, "path");
            if target.is_empty() {
                c.push(required(child(&ip, "path"), ""));
            } else {
                local_descending_path(target, &child(&ip, "path"), c);
                if target.starts_with("..") && !target.starts_with("../") {
                    c.push(Cause::invalid(child(&ip, "path"), target, "must not start with '..'"));
                }
            }
            mode(item, "mode", &ip, c);
        }
    };
    if let Some(s) = obj_of(vol, "secret") {
        let sp = child(path, "secret");
        if str_of(s, "secretName").is_empty() {
            c.push(required(child(&sp, "secretName"), ""));
        }
        mode(s, "defaultMode", &sp, c);
        items(s, &sp, c);
    }
    if let Some(s) = obj_of(vol, "configMap") {
        let sp = child(path, "configMap");
        if str_of(s, "name").is_empty() {
            c.push(required(child(&sp, "name"), ""));
        }
        mode(s, "defaultMode", &sp, c);
        items(s, &sp, c);
    }
    if let Some(h) = obj_of(vol, "hostPath") {
        let hp = child(path, "hostPath");
        let target = str_of(h, "path");
        if target.is_empty() {
            c.push(required(child(&hp, "path"), ""));
        } else if target.split('/').any(|part| part == "..") {
            c.push(Cause::invalid(child(&hp, "path"), target, "must not contain '..'"));
        }
        let t = str_of(h, "type");
        if !HOST_PATH_TYPES.contains(&t) {
            c.push(Cause::not_supported(child(&hp, "type"), t, &HOST_PATH_TYPES));
        }
    }
    if let Some(e) = obj_of(vol, "emptyDir") {
        let medium = str_of(e, "medium");
        if !(medium.is_empty() || medium == "Memory" || medium.starts_with("HugePages")) {
            c.push(Cause::not_supported(
                child(&child(path, "emptyDir"), "medium"),
                medium,
                &["", "Memory", "HugePages"],
            ));
        }
    }
    if let Some(pvc) = obj_of(vol, "persistentVolumeClaim") {
        if str_of(pvc, "claimName").is_empty() {
            c.push(required(child(&child(path, "persistentVolumeClaim"), "claimName"), ""));
        }
    }
}

/// `validateTolerations`.
pub fn tolerations(list: &[Value], path: &str, c: &mut Vec<Cause>) {
    for (i, t) in list.iter().enumerate() {
        let p = index(path, i);
        let k = str_of(t, "key");
        let op = str_of(t, "operator");
        let value = str_of(t, "value");
        let effect = str_of(t, "effect");
        if !k.is_empty() {
            c.extend(validation::qualified_name(k).iter().map(|e| Cause::invalid(child(&p, "key"), k, e)));
        } else if op != "Exists" {
            c.push(Cause::invalid(
                child(&p, "operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if has(t, "tolerationSeconds") && effect != "NoExecute" {
            c.push(Cause::invalid(
                child(&p, "effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let errs = validation::label_value(value);
                if !errs.is_empty() {
                    c.push(Cause::invalid(child(&p, "operator"), value, &errs.join(";")));
                }
            }
            "Exists" if !value.is_empty() => {
                c.push(invalid(child(&p, "operator"), t, "value must be empty when `operator` is 'Exists'"))
            }
            "Exists" => {}
            other => c.push(Cause::not_supported(child(&p, "operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            c.push(Cause::not_supported(child(&p, "effect"), effect, &TAINT_EFFECTS));
        }
    }
}

fn topology_spread(list: &[Value], path: &str, c: &mut Vec<Cause>) {
    let mut seen = BTreeSet::new();
    for (i, t) in list.iter().enumerate() {
        let p = index(path, i);
        let skew = int_of(t, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            c.push(invalid_int(child(&p, "maxSkew"), skew, "must be greater than zero"));
        }
        let k = str_of(t, "topologyKey");
        if k.is_empty() {
            c.push(required(child(&p, "topologyKey"), "can not be empty"));
        } else {
            c.extend(validation::qualified_name(k).iter().map(|e| Cause::invalid(child(&p, "topologyKey"), k, e)));
        }
        let when = str_of(t, "whenUnsatisfiable");
        if !matches!(when, "DoNotSchedule" | "ScheduleAnyway") {
            c.push(Cause::not_supported(child(&p, "whenUnsatisfiable"), when, &["DoNotSchedule", "ScheduleAnyway"]));
        } else if !seen.insert((k, when)) {
            c.push(Cause::duplicate(child(&p, "{topologyKey, whenUnsatisfiable}"), &format!("{{{k}, {when}}}")));
        }
        if let Some(sel) = obj_of(t, "labelSelector") {
            c.extend(label_selector(sel, &child(&p, "labelSelector")));
        }
    }
}

// ---------------------------------------------------------------------------------------------- updates

const POD_UPDATE: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate`'s spec rules: only images, the active deadline (set or lowered), added tolerations
/// (and lowered `tolerationSeconds`), removed scheduling gates may change.
pub fn validate_pod_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let (os, ns) = (old.get("spec").unwrap_or(&Value::Null), new.get("spec").unwrap_or(&Value::Null));
    match (int_of(os, "activeDeadlineSeconds"), int_of(ns, "activeDeadlineSeconds")) {
        (_, Some(n)) if !(0..=i64::from(u32::MAX)).contains(&n) => {
            c.push(invalid_int("spec.activeDeadlineSeconds", n, "must be between 0 and 4294967295, inclusive"))
        }
        (Some(o), Some(n)) if n > o => {
            c.push(invalid_int("spec.activeDeadlineSeconds", n, "must be less than or equal to previous value"))
        }
        (Some(_), None) => c.push(invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    let old_tolerations = arr_of(os, "tolerations");
    let new_tolerations = arr_of(ns, "tolerations");
    let kept = old_tolerations.iter().all(|o| {
        new_tolerations.iter().any(|n| {
            let mut o = o.clone();
            if let (Some(o), Some(s)) = (o.as_object_mut(), n.get("tolerationSeconds")) {
                o.insert("tolerationSeconds".into(), s.clone());
            }
            without_nulls(&o) == without_nulls(n)
        })
    });
    if !kept {
        c.push(forbidden("spec.tolerations", "existing toleration can not be modified except its tolerationSeconds"));
    }
    // The spec with every allowed change undone must be the old one.
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            let olds = arr_of(os, list);
            for (i, ctr) in m.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten().enumerate() {
                if let (Some(ctr), Some(image)) = (ctr.as_object_mut(), olds.get(i).and_then(|o| o.get("image"))) {
                    ctr.insert("image".into(), image.clone());
                }
            }
        }
        for f in ["activeDeadlineSeconds", "tolerations"] {
            match os.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        let old_grace = int_of(os, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0) && int_of(ns, "terminationGracePeriodSeconds") == Some(1) {
            m.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
        let old_gates = arr_of(os, "schedulingGates");
        if arr_of(ns, "schedulingGates").iter().all(|g| old_gates.contains(g)) {
            match os.get("schedulingGates") {
                Some(v) => m.insert("schedulingGates".into(), v.clone()),
                None => m.remove("schedulingGates"),
            };
        }
    }
    let changed = changed_fields(&without_nulls(os), &without_nulls(&munged), "spec");
    if !changed.is_empty() {
        c.push(forbidden("spec", &format!("{POD_UPDATE}\n  changed: {}", changed.join(", "))));
    }
    c
}

/// `v` without null members (absent and null mean the same).
pub fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The paths at which `a` and `b` differ (the leaves of objects; whole arrays when their lengths differ).
fn changed_fields(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        _ if a == b => vec![],
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    changed_fields(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &child(path, k))
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().flat_map(|(i, (x, y))| changed_fields(x, y, &index(path, i))).collect()
        }
        _ => vec![path.to_string()],
    }
}

#[cfg(test)]
#[path = "pod_test.rs"]
mod tests;
