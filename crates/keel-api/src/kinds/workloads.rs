//! Workloads: Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs (apps/v1 and batch/v1
//! defaults and validation, their pod templates through [`super::pod`]), HorizontalPodAutoscalers
//! (autoscaling/v2) and ControllerRevisions.

use serde_json::{json, Map, Value};

use super::fields::*;
use super::pod;
use crate::validation::Cause;

// ---------------------------------------------------------------------------------------------- defaults

pub fn default(kind: &str, object: &mut Value) {
    let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(obj) = object.as_object_mut() else { return };
    let Some(spec) = ensure_obj(obj, "spec") else { return };
    match kind {
        "Deployment" => {
            default_to(spec, "replicas", json!(1));
            if let Some(strategy) = ensure_obj(spec, "strategy") {
                default_str(strategy, "type", "RollingUpdate");
                if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    if let Some(ru) = ensure_obj(strategy, "rollingUpdate") {
                        default_to(ru, "maxUnavailable", json!("25%"));
                        default_to(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_to(spec, "revisionHistoryLimit", json!(10));
            default_to(spec, "progressDeadlineSeconds", json!(600));
        }
        "ReplicaSet" => default_to(spec, "replicas", json!(1)),
        "ReplicationController" => {
            default_to(spec, "replicas", json!(1));
            // The selector, and the controller's own labels, default to its template's labels.
            let template_labels = spec
                .get("template")
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"))
                .filter(|l| l.is_object())
                .cloned();
            if let Some(labels) = template_labels {
                if spec.get("selector").and_then(Value::as_object).is_none_or(Map::is_empty) {
                    spec.insert("selector".into(), labels);
                }
            }
            labels_from_template(obj);
            return;
        }
        "DaemonSet" => {
            if let Some(strategy) = ensure_obj(spec, "updateStrategy") {
                default_str(strategy, "type", "RollingUpdate");
                if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    if let Some(ru) = ensure_obj(strategy, "rollingUpdate") {
                        default_to(ru, "maxUnavailable", json!(1));
                        default_to(ru, "maxSurge", json!(0));
                    }
                }
            }
            default_to(spec, "revisionHistoryLimit", json!(10));
        }
        "StatefulSet" => default_stateful_set(spec),
        "Job" => {
            default_job(spec);
            if !uid.is_empty() && spec.get("manualSelector").and_then(Value::as_bool) != Some(true) {
                generate_job_selector(spec, &name, &uid);
            }
            labels_from_template(obj);
            return;
        }
        "CronJob" => {
            default_str(spec, "concurrencyPolicy", "Allow");
            default_to(spec, "suspend", json!(false));
            default_to(spec, "successfulJobsHistoryLimit", json!(3));
            default_to(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(t) =
                spec.get_mut("jobTemplate").and_then(|j| j.get_mut("spec")).and_then(|s| s.get_mut("template"))
            {
                pod::default_template(t);
            }
            return;
        }
        "HorizontalPodAutoscaler" => {
            default_hpa(spec);
            return;
        }
        _ => return,
    }
    if let Some(t) = spec.get_mut("template") {
        pod::default_template(t);
    }
}

/// The object's own labels default to its template's (Jobs, ReplicationControllers), and the template gets
/// a pod template's defaults.
fn labels_from_template(obj: &mut Map<String, Value>) {
    let labels = obj
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let (Some(labels), Some(meta)) = (labels, ensure_obj(obj, "metadata")) {
        if meta.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty) {
            meta.insert("labels".into(), labels);
        }
    }
    if let Some(t) = obj.get_mut("spec").and_then(|s| s.get_mut("template")) {
        pod::default_template(t);
    }
}

fn default_stateful_set(spec: &mut Map<String, Value>) {
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = ensure_obj(spec, "updateStrategy") {
        if strategy.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            strategy.insert("type".into(), json!("RollingUpdate"));
            default_to(strategy, "rollingUpdate", json!({}));
        }
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                default_to(ru, "partition", json!(0));
            }
        }
    }
    if let Some(policy) = ensure_obj(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    default_to(spec, "replicas", json!(1));
    default_to(spec, "revisionHistoryLimit", json!(10));
    for claim in each_obj_mut(spec, "volumeClaimTemplates") {
        if let Some(s) = ensure_obj(claim, "spec") {
            default_str(s, "volumeMode", "Filesystem");
        }
        if let Some(s) = ensure_obj(claim, "status") {
            default_str(s, "phase", "Pending");
        }
    }
}

/// `SetDefaults_Job`.
fn default_job(spec: &mut Map<String, Value>) {
    if !has_value(spec, "completions") && !has_value(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    default_to(spec, "parallelism", json!(1));
    let backoff = if has_value(spec, "backoffLimitPerIndex") { json!(i32::MAX) } else { json!(6) };
    default_to(spec, "backoffLimit", backoff);
    default_str(spec, "completionMode", "NonIndexed");
    default_to(spec, "suspend", json!(false));
    let failure_policy = has_value(spec, "podFailurePolicy");
    if let Some(rules) = spec.get_mut("podFailurePolicy").and_then(|p| p.get_mut("rules")).and_then(Value::as_array_mut)
    {
        for rule in rules {
            for pattern in rule.get_mut("onPodConditions").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = pattern.as_object_mut() {
                    default_str(p, "status", "True");
                }
            }
        }
    }
    default_str(spec, "podReplacementPolicy", if failure_policy { "Failed" } else { "TerminatingOrFailed" });
}

fn has_value(map: &Map<String, Value>, name: &str) -> bool {
    map.get(name).is_some_and(|v| !v.is_null())
}

/// The job controller's labels on the template and its selector on the job's uid, as the job strategy
/// adds them when the selector is not manual.
fn generate_job_selector(spec: &mut Map<String, Value>, name: &str, uid: &str) {
    let template =
        ensure_obj(spec, "template").and_then(|t| ensure_obj(t, "metadata")).and_then(|m| ensure_obj(m, "labels"));
    if let Some(labels) = template {
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("batch.kubernetes.io/job-name", name),
            ("controller-uid", uid),
            ("job-name", name),
        ] {
            labels.entry(k).or_insert_with(|| json!(v));
        }
    }
    if let Some(match_labels) = ensure_obj(spec, "selector").and_then(|s| ensure_obj(s, "matchLabels")) {
        match_labels.entry("batch.kubernetes.io/controller-uid").or_insert_with(|| json!(uid));
    }
}

/// `SetDefaults_HorizontalPodAutoscaler`: one replica at least, 80% CPU, and the scaling rules' gaps.
fn default_hpa(spec: &mut Map<String, Value>) {
    default_to(spec, "minReplicas", json!(1));
    if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else { return };
    let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]});
    let down = json!({"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]});
    for (direction, defaults) in [("scaleUp", up), ("scaleDown", down)] {
        let Some(rules) = ensure_obj(behavior, direction) else { continue };
        for (k, v) in defaults.as_object().into_iter().flatten() {
            default_to(rules, k, v.clone());
        }
    }
}

// -------------------------------------------------------------------------------------------- validation

pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    match kind {
        "Deployment" => deployment(spec),
        "ReplicaSet" => replica_set(spec),
        "ReplicationController" => replication_controller(spec),
        "StatefulSet" => stateful_set(spec),
        "DaemonSet" => daemon_set(spec),
        "Job" => job(spec, "spec"),
        "CronJob" => cron_job(object),
        "HorizontalPodAutoscaler" => hpa(spec),
        "ControllerRevision" => controller_revision(object),
        _ => vec![],
    }
}

/// The selector (required, not empty) and the template it must select, at `spec.selector` and
/// `spec.template`; `what` names the kind in "empty selector is invalid for …".
fn selector_and_template(spec: &Value, what: &str, c: &mut Vec<Cause>) {
    let template = spec.get("template").unwrap_or(&Value::Null);
    match obj_of(spec, "selector") {
        None => c.push(required("spec.selector", "")),
        Some(sel) => {
            let errs = label_selector(sel, "spec.selector");
            let valid = errs.is_empty();
            c.extend(errs);
            if selector_is_empty(sel) {
                c.push(invalid_json("spec.selector", sel, &format!("empty selector is invalid for {what}")));
            } else if valid {
                let labels = template.get("metadata").map(|m| str_map(m, "labels")).unwrap_or_default();
                if !selector_matches(sel, &labels) {
                    let shown = template.pointer("/metadata/labels").unwrap_or(&Value::Null);
                    c.push(invalid(
                        "spec.template.metadata.labels",
                        shown,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    // A StatefulSet's claim templates are volumes of its pods (kube validates them so).
    let claims: Vec<&str> =
        arr_of(spec, "volumeClaimTemplates").iter().filter_map(|t| t.pointer("/metadata/name")?.as_str()).collect();
    if claims.is_empty() {
        c.extend(pod::validate_template(template, "spec.template"));
        return;
    }
    let mut with_claims = template.clone();
    if let Some(tspec) = with_claims.get_mut("spec").and_then(Value::as_object_mut) {
        let volumes = tspec.entry("volumes").or_insert_with(|| serde_json::json!([]));
        if let Some(list) = volumes.as_array_mut() {
            for name in claims {
                if !list.iter().any(|v| v.get("name").and_then(Value::as_str) == Some(name)) {
                    list.push(serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
                }
            }
        }
    }
    c.extend(pod::validate_template(&with_claims, "spec.template"));
}

/// Templates of long-running workloads restart always, and have no deadline.
fn always_restarting_template(spec: &Value, kind_name: &str, c: &mut Vec<Cause>) {
    let tspec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
    let policy = str_of(tspec, "restartPolicy");
    if !policy.is_empty() && policy != "Always" {
        c.push(Cause::not_supported("spec.template.spec.restartPolicy", policy, &["Always"]));
    }
    if has(tspec, "activeDeadlineSeconds") {
        c.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {kind_name} is not Supported"),
        ));
    }
}

fn deployment(spec: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for f in ["replicas", "minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds"] {
        non_negative(spec, f, "spec", &mut c);
    }
    selector_and_template(spec, "deployment", &mut c);
    always_restarting_template(spec, "ReplicaSet", &mut c);
    let strategy = spec.get("strategy").unwrap_or(&Value::Null);
    match str_of(strategy, "type") {
        "Recreate" if has(strategy, "rollingUpdate") => {
            c.push(forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"))
        }
        "Recreate" => {}
        "RollingUpdate" => match obj_of(strategy, "rollingUpdate") {
            None => c.push(required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")),
            Some(ru) => rolling_update(ru, "spec.strategy.rollingUpdate", &mut c),
        },
        "" => c.push(required("spec.strategy.type", "")),
        t => c.push(Cause::not_supported("spec.strategy.type", t, &["Recreate", "RollingUpdate"])),
    }
    if let Some(d) = int_of(spec, "progressDeadlineSeconds") {
        if d <= int_of(spec, "minReadySeconds").unwrap_or(0) {
            c.push(invalid_int("spec.progressDeadlineSeconds", d, "must be greater than minReadySeconds"));
        }
    }
    c
}

/// maxUnavailable and maxSurge: ints or percents, not both zero.
fn rolling_update(ru: &Value, path: &str, c: &mut Vec<Cause>) {
    let unavailable = int_or_percent(value_at(ru, "maxUnavailable"), &child(path, "maxUnavailable"), c);
    let surge = int_or_percent(value_at(ru, "maxSurge"), &child(path, "maxSurge"), c);
    if unavailable == Some(0) && surge.unwrap_or(0) == 0 {
        c.push(invalid(
            child(path, "maxUnavailable"),
            value_at(ru, "maxUnavailable"),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

fn replica_set(spec: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for f in ["replicas", "minReadySeconds"] {
        non_negative(spec, f, "spec", &mut c);
    }
    selector_and_template(spec, "deployment", &mut c);
    always_restarting_template(spec, "ReplicaSet", &mut c);
    c
}

/// A ReplicationController's spec: a ReplicaSet's, with its selector a plain map of labels (required).
fn replication_controller(spec: &Value) -> Vec<Cause> {
    let selector = spec.get("selector").and_then(Value::as_object).filter(|m| !m.is_empty());
    let Some(selector) = selector else {
        let mut c = vec![required("spec.selector", "")];
        c.extend(pod::validate_template(spec.get("template").unwrap_or(&Value::Null), "spec.template"));
        return c;
    };
    let mut as_set = spec.clone();
    as_set["selector"] = json!({"matchLabels": selector});
    replica_set(&as_set)
}

fn stateful_set(spec: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for f in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        non_negative(spec, f, "spec", &mut c);
    }
    match str_of(spec, "podManagementPolicy") {
        "" => c.push(required("spec.podManagementPolicy", "")),
        "OrderedReady" | "Parallel" => {}
        p => c.push(Cause::invalid("spec.podManagementPolicy", p, "must be 'OrderedReady' or 'Parallel'")),
    }
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    match str_of(strategy, "type") {
        "" => c.push(required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(ru) = obj_of(strategy, "rollingUpdate") {
                c.push(invalid(
                    "spec.updateStrategy.rollingUpdate",
                    ru,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = obj_of(strategy, "rollingUpdate") {
                non_negative(ru, "partition", "spec.updateStrategy.rollingUpdate", &mut c);
            }
        }
        _ => c.push(invalid("spec.updateStrategy", strategy, "must be 'RollingUpdate' or 'OnDelete'")),
    }
    if let Some(policy) = obj_of(spec, "persistentVolumeClaimRetentionPolicy") {
        for f in ["whenDeleted", "whenScaled"] {
            let v = str_of(policy, f);
            if v != "Retain" && v != "Delete" {
                c.push(Cause::not_supported(
                    format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                    v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    if let Some(ordinals) = obj_of(spec, "ordinals") {
        non_negative(ordinals, "start", "spec.ordinals", &mut c);
    }
    selector_and_template(spec, "statefulset", &mut c);
    always_restarting_template(spec, "StatefulSet", &mut c);
    c
}

fn daemon_set(spec: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    for f in ["minReadySeconds", "revisionHistoryLimit", "templateGeneration"] {
        non_negative(spec, f, "spec", &mut c);
    }
    selector_and_template(spec, "daemonset", &mut c);
    always_restarting_template(spec, "DaemonSet", &mut c);
    let strategy = spec.get("updateStrategy").unwrap_or(&Value::Null);
    match str_of(strategy, "type") {
        "OnDelete" => {}
        "RollingUpdate" => match obj_of(strategy, "rollingUpdate") {
            None => c.push(required("spec.updateStrategy.rollingUpdate", "")),
            Some(ru) => {
                let path = "spec.updateStrategy.rollingUpdate";
                let unavailable =
                    int_or_percent(value_at(ru, "maxUnavailable"), &child(path, "maxUnavailable"), &mut c);
                let surge = int_or_percent(value_at(ru, "maxSurge"), &child(path, "maxSurge"), &mut c);
                match (unavailable.unwrap_or(0), surge.unwrap_or(0)) {
                    (0, 0) => c.push(invalid(
                        child(path, "maxUnavailable"),
                        value_at(ru, "maxUnavailable"),
                        "may not be 0 when `maxSurge` is 0",
                    )),
                    (u, s) if u != 0 && s != 0 => c.push(invalid(
                        child(path, "maxSurge"),
                        value_at(ru, "maxSurge"),
                        "may not be set when maxUnavailable is non-zero",
                    )),
                    _ => {}
                }
            }
        },
        "" => c.push(required("spec.updateStrategy.type", "")),
        t => c.push(Cause::not_supported("spec.updateStrategy.type", t, &["OnDelete", "RollingUpdate"])),
    }
    c
}

/// `ValidateJobSpec` at `path` (`spec`, or a CronJob's `spec.jobTemplate.spec`, whose selector is
/// generated per job and so may not be given).
fn job(spec: &Value, path: &str) -> Vec<Cause> {
    let mut c = Vec::new();
    for f in ["parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"] {
        non_negative(spec, f, path, &mut c);
    }
    match spec.get("completionMode").and_then(Value::as_str) {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if !has(spec, "completions") {
                c.push(required(child(path, "completions"), "when completion mode is Indexed"));
            }
        }
        Some(m) => c.push(Cause::not_supported(child(path, "completionMode"), m, &["NonIndexed", "Indexed"])),
    }
    if let Some(p) = spec.get("podReplacementPolicy").and_then(Value::as_str) {
        if p != "TerminatingOrFailed" && p != "Failed" {
            c.push(Cause::not_supported(child(path, "podReplacementPolicy"), p, &["TerminatingOrFailed", "Failed"]));
        }
    }
    let template_path = child(path, "template");
    let template = spec.get("template").unwrap_or(&Value::Null);
    if path == "spec" {
        match obj_of(spec, "selector") {
            None => c.push(required("spec.selector", "")),
            Some(sel) => {
                let errs = label_selector(sel, "spec.selector");
                let valid = errs.is_empty();
                c.extend(errs);
                let labels = template.get("metadata").map(|m| str_map(m, "labels")).unwrap_or_default();
                if valid && !selector_matches(sel, &labels) {
                    let shown = template.pointer("/metadata/labels").unwrap_or(&Value::Null);
                    c.push(invalid(
                        "spec.template.metadata.labels",
                        shown,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    } else {
        if let Some(sel) = obj_of(spec, "selector") {
            c.push(invalid(child(path, "selector"), sel, "`selector` will be auto-generated"));
        }
        if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
            c.push(Cause::not_supported(child(path, "manualSelector"), "true", &["nil", "false"]));
        }
    }
    c.extend(pod::validate_template(template, &template_path));
    let policy = template.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
    if policy != "OnFailure" && policy != "Never" {
        c.push(Cause::not_supported(format!("{template_path}.spec.restartPolicy"), policy, &["OnFailure", "Never"]));
    }
    c
}

fn cron_job(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if name.len() > 52 {
        c.push(Cause::invalid("metadata.name", name, "must be no more than 52 characters"));
    }
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let schedule = str_of(spec, "schedule");
    if schedule.is_empty() {
        c.push(required("spec.schedule", ""));
    } else {
        if let Err(e) = super::cron::parse(schedule) {
            c.push(Cause::invalid("spec.schedule", schedule, &e));
        }
        if schedule.contains("TZ") {
            c.push(Cause::invalid(
                "spec.schedule",
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    if let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
        let bad_part = tz.split('/').any(|part| {
            part == "."
                || part == ".."
                || part.starts_with('-')
                || part.is_empty()
                || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_+".contains(&b))
        });
        if bad_part || tz.eq_ignore_ascii_case("local") {
            c.push(Cause::invalid(
                "spec.timeZone",
                tz,
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ));
        }
    }
    match str_of(spec, "concurrencyPolicy") {
        "" => c.push(required("spec.concurrencyPolicy", "")),
        "Allow" | "Forbid" | "Replace" => {}
        p => c.push(Cause::not_supported("spec.concurrencyPolicy", p, &["Allow", "Forbid", "Replace"])),
    }
    for f in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        non_negative(spec, f, "spec", &mut c);
    }
    let job_template = spec.get("jobTemplate").unwrap_or(&Value::Null);
    if let Some(meta) = job_template.get("metadata") {
        c.extend(crate::validation::labels(&str_map(meta, "labels"), "spec.jobTemplate.metadata.labels"));
        c.extend(crate::validation::annotations(
            &str_map(meta, "annotations"),
            "spec.jobTemplate.metadata.annotations",
        ));
    }
    c.extend(job(job_template.get("spec").unwrap_or(&Value::Null), "spec.jobTemplate.spec"));
    c
}

const METRIC_TYPES: [&str; 5] = ["ContainerResource", "External", "Object", "Pods", "Resource"];

fn hpa(spec: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    for f in ["kind", "name"] {
        let v = str_of(target, f);
        if v.is_empty() {
            c.push(required(format!("spec.scaleTargetRef.{f}"), ""));
        } else if v.contains('/') || v.contains('%') || v == "." || v == ".." {
            let detail = if v.contains('/') { "may not contain '/'" } else { "may not contain '%'" };
            c.push(Cause::invalid(format!("spec.scaleTargetRef.{f}"), v, detail));
        }
    }
    let min = int_of(spec, "minReplicas");
    if let Some(m) = min.filter(|m| *m < 1) {
        c.push(invalid_int("spec.minReplicas", m, "must be greater than or equal to 1"));
    }
    let max = int_of(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        c.push(invalid_int("spec.maxReplicas", max, "must be greater than 0"));
    }
    if min.is_some_and(|m| max < m) {
        c.push(invalid_int("spec.maxReplicas", max, "must be greater than or equal to `minReplicas`"));
    }
    for (i, metric) in arr_of(spec, "metrics").iter().enumerate() {
        let p = index("spec.metrics", i);
        let t = str_of(metric, "type");
        let source = match t {
            "" => {
                c.push(required(child(&p, "type"), "must specify a metric source type"));
                continue;
            }
            "Object" => "object",
            "Pods" => "pods",
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "External" => "external",
            other => {
                c.push(Cause::not_supported(child(&p, "type"), other, &METRIC_TYPES));
                continue;
            }
        };
        let Some(src) = obj_of(metric, source) else {
            c.push(required(child(&p, source), "must populate information for the given metric source"));
            continue;
        };
        let sp = child(&p, source);
        if matches!(source, "resource" | "containerResource") && str_of(src, "name").is_empty() {
            c.push(required(child(&sp, "name"), "must specify a resource name"));
        }
        metric_target(src.get("target").unwrap_or(&Value::Null), &child(&sp, "target"), &mut c);
    }
    if let Some(behavior) = obj_of(spec, "behavior") {
        for direction in ["scaleUp", "scaleDown"] {
            if let Some(rules) = obj_of(behavior, direction) {
                scaling_rules(rules, &format!("spec.behavior.{direction}"), &mut c);
            }
        }
    }
    c
}

fn metric_target(t: &Value, path: &str, c: &mut Vec<Cause>) {
    match str_of(t, "type") {
        "" => c.push(required(child(path, "type"), "must specify a metric target type")),
        "Utilization" | "Value" | "AverageValue" => {}
        other => c.push(Cause::not_supported(child(path, "type"), other, &["AverageValue", "Utilization", "Value"])),
    }
    if let Some(u) = int_of(t, "averageUtilization").filter(|u| *u <= 0) {
        c.push(invalid_int(child(path, "averageUtilization"), u, "must be greater than 0"));
    }
    for f in ["value", "averageValue"] {
        if let Some(q) = t.get(f).and_then(Value::as_str) {
            if crate::quantity::Quantity::parse(q).is_ok_and(|q| q.is_negative() || q.is_zero()) {
                c.push(Cause::invalid(child(path, f), q, "must be positive"));
            }
        }
    }
}

fn scaling_rules(rules: &Value, path: &str, c: &mut Vec<Cause>) {
    if let Some(w) = int_of(rules, "stabilizationWindowSeconds") {
        if w < 0 {
            c.push(invalid_int(child(path, "stabilizationWindowSeconds"), w, "must be greater than or equal to zero"));
        } else if w > 3600 {
            c.push(invalid_int(child(path, "stabilizationWindowSeconds"), w, "must be less than or equal to 3600"));
        }
    }
    if let Some(p) = rules.get("selectPolicy").and_then(Value::as_str) {
        if !["Disabled", "Max", "Min"].contains(&p) {
            c.push(Cause::not_supported(child(path, "selectPolicy"), p, &["Disabled", "Max", "Min"]));
        }
    }
    let policies = arr_of(rules, "policies");
    if policies.is_empty() {
        c.push(required(child(path, "policies"), "must specify at least one Policy"));
    }
    for (i, policy) in policies.iter().enumerate() {
        let p = index(&child(path, "policies"), i);
        let t = str_of(policy, "type");
        if t != "Pods" && t != "Percent" {
            c.push(Cause::not_supported(child(&p, "type"), t, &["Percent", "Pods"]));
        }
        let value = int_of(policy, "value").unwrap_or(0);
        if value <= 0 {
            c.push(invalid_int(child(&p, "value"), value, "must be greater than zero"));
        }
        let period = int_of(policy, "periodSeconds").unwrap_or(0);
        if period <= 0 {
            c.push(invalid_int(child(&p, "periodSeconds"), period, "must be greater than zero"));
        } else if period > 1800 {
            c.push(invalid_int(child(&p, "periodSeconds"), period, "must be less than or equal to 1800"));
        }
    }
}

fn controller_revision(object: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    if !has(object, "data") {
        c.push(required("data", "data is mandatory"));
    }
    non_negative(object, "revision", "", &mut c);
    c
}

// ---------------------------------------------------------------------------------------------- updates

const STATEFUL_SET_UPDATE: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

pub fn validate_update(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut c = Vec::new();
    let (os, ns) = (old.get("spec").unwrap_or(&Value::Null), new.get("spec").unwrap_or(&Value::Null));
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => immutable(os, ns, "selector", "spec", &mut c),
        // A ReplicationController's selector may change (kube lets it; the controller adopts and releases).
        "ReplicationController" => {}
        "StatefulSet" => {
            let mut rest = pod::without_nulls(ns);
            let mut old_rest = pod::without_nulls(os);
            for m in [&mut rest, &mut old_rest] {
                if let Some(m) = m.as_object_mut() {
                    for f in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                        "revisionHistoryLimit",
                    ] {
                        m.remove(f);
                    }
                }
            }
            if rest != old_rest {
                c.push(forbidden("spec", STATEFUL_SET_UPDATE));
            }
        }
        "Job" => job_update(old, os, ns, &mut c),
        "ControllerRevision" => immutable(old, new, "data", "", &mut c),
        _ => {}
    }
    c
}

/// A job's selector, completion mode, failure policy and template are fixed, but a suspended job that
/// never started may change its template's scheduling directives, labels and annotations.
fn job_update(old: &Value, os: &Value, ns: &Value, c: &mut Vec<Cause>) {
    for f in ["selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex", "manualSelector"] {
        immutable(os, ns, f, "spec", c);
    }
    let elastic = str_of(ns, "completionMode") == "Indexed"
        && int_of(ns, "completions") == int_of(ns, "parallelism")
        && int_of(os, "completions") == int_of(os, "parallelism");
    if !elastic {
        immutable(os, ns, "completions", "spec", c);
    }
    let never_started = old.pointer("/status/startTime").is_none_or(Value::is_null);
    let mutable_scheduling = ns.get("suspend").and_then(Value::as_bool) == Some(true) && never_started;
    let strip = |t: &Value| {
        let mut t = pod::without_nulls(t);
        if mutable_scheduling {
            if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("labels");
                meta.remove("annotations");
            }
            if let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for f in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                    spec.remove(f);
                }
            }
        }
        t
    };
    let (ot, nt) = (value_at(os, "template"), value_at(ns, "template"));
    if strip(ot) != strip(nt) {
        c.push(invalid("spec.template", nt, IMMUTABLE));
    }
}

#[cfg(test)]
#[path = "workloads_test.rs"]
mod tests;
