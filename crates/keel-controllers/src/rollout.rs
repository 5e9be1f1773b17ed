//! The Deployment controller's decisions, pure: given a Deployment, the ReplicaSets it owns and the time,
//! [`plan`] says what one reconcile pass of kube-controller-manager's deployment controller would do — the
//! ReplicaSet to create, the ReplicaSets to scale or re-annotate, the old ones to delete, the Deployment's
//! revision annotation and its new status — as a plain [`Plan`]. The async loop that watches Deployments
//! and ReplicaSets applies the plan through the API and calls [`plan`] again on every change; each pass
//! makes one safe step, and a pass over what the previous one produced changes nothing more.
//!
//! The order of a pass follows `syncDeployment`: paused Deployments and scaling events only scale
//! (proportionally, `sync.go`), otherwise the strategy rolls out (`rolling.go`, `recreate.go`), old
//! ReplicaSets beyond `revisionHistoryLimit` go once a rollout is complete, and the status and its
//! Available/Progressing conditions are computed as `progress.go` does.

pub mod conditions;
pub mod template;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_api::selector;

use conditions::{AVAILABLE, FALSE, PROGRESSING, REPLICA_FAILURE, TRUE, UNKNOWN};
pub use template::{equal_ignore_hash, pod_template_hash, POD_TEMPLATE_HASH};

/// The revision of a ReplicaSet (and, copied, of its Deployment): 1 for the first template, +1 per rollout.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that became new again (a rollback), comma-separated.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last sized (to detect scaling events).
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last sized (for proportional scaling).
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations not copied onto its ReplicaSets (Kubernetes' `skipCopyAnnotation`).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
const MAX_REVISION_HISTORY_CHARS: usize = 2000;
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// What one reconcile pass changes. Apply in field order (create, update, delete, the Deployment's
/// annotation, its status), stop at the first failed write and wait for the next pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The ReplicaSet to create for the current template, complete: `<deployment>-<pod-template-hash>`,
    /// hash in labels, selector and template labels, controller reference, revision and replica annotations.
    pub create: Option<ReplicaSet>,
    /// Changes to existing ReplicaSets: sizes, revision (a rollback makes an old one new again), replica
    /// annotations, minReadySeconds. At most one per ReplicaSet.
    pub update: Vec<ReplicaSetUpdate>,
    /// Old ReplicaSets to delete (beyond `revisionHistoryLimit`, lowest revision first, none with replicas).
    pub delete: Vec<String>,
    /// The Deployment's `deployment.kubernetes.io/revision` annotation, when it must change.
    pub deployment_revision: Option<String>,
    /// The Deployment's whole new status (write it with a replace), or `None` when it would not change.
    pub status: Option<DeploymentStatus>,
    /// Look again after this long even if nothing changes (when the progress deadline would pass).
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.create.is_none()
            && self.update.is_empty()
            && self.delete.is_empty()
            && self.deployment_revision.is_none()
            && self.status.is_none()
    }
}

/// A change to one existing ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetUpdate {
    pub name: String,
    /// The `resourceVersion` the decision was made from, to send as a precondition.
    pub resource_version: Option<String>,
    /// The new `spec.replicas`.
    pub replicas: i32,
    /// The new `spec.minReadySeconds` (the Deployment's).
    pub min_ready_seconds: i32,
    /// Annotations to add or overwrite; none are removed.
    pub annotations: BTreeMap<String, String>,
}

impl ReplicaSetUpdate {
    /// The change as a JSON merge patch, carrying `resourceVersion` when known so a stale decision conflicts.
    pub fn merge_patch(&self) -> serde_json::Value {
        let mut metadata = serde_json::json!({ "annotations": self.annotations });
        if let Some(version) = &self.resource_version {
            metadata["resourceVersion"] = serde_json::Value::String(version.clone());
        }
        serde_json::json!({
            "metadata": metadata,
            "spec": { "replicas": self.replicas, "minReadySeconds": self.min_ready_seconds },
        })
    }

    /// The change applied to a ReplicaSet in memory (what the API server would store).
    pub fn apply(&self, rs: &mut ReplicaSet) {
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.extend(self.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        let spec = rs.spec.get_or_insert_with(ReplicaSetSpec::default);
        spec.replicas = Some(self.replicas);
        spec.min_ready_seconds = Some(self.min_ready_seconds);
    }
}

/// `maxSurge` and `maxUnavailable` of a Deployment, resolved against its `spec.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pods allowed above `spec.replicas` (0 for Recreate).
    pub max_surge: i32,
    /// Pods allowed below `spec.replicas` (0 for Recreate or no replicas; never more than `spec.replicas`).
    pub max_unavailable: i32,
}

/// Kubernetes' `MaxSurge` and `MaxUnavailable` of a Deployment.
pub fn limits(deployment: &Deployment) -> Limits {
    let Some(spec) = deployment.spec.as_ref() else {
        return limits_of(1, false, None);
    };
    limits_of(desired_replicas(spec), is_recreate(spec), spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref()))
}

fn limits_of(
    replicas: i32,
    recreate: bool,
    rolling: Option<&k8s_openapi::api::apps::v1::RollingUpdateDeployment>,
) -> Limits {
    if recreate {
        return Limits { max_surge: 0, max_unavailable: 0 };
    }
    let (max_surge, max_unavailable) = resolve_fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
    );
    Limits { max_surge, max_unavailable: if replicas == 0 { 0 } else { max_unavailable.min(replicas) } }
}

/// Kubernetes' `ResolveFenceposts`: maxSurge rounded up, maxUnavailable rounded down (absent or invalid:
/// 25%); when both come to 0, maxUnavailable is 1 so that a rollout can proceed.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> (i32, i32) {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true)
        .or_else(|| scaled_value(&quarter, desired, true))
        .unwrap_or(0)
        .max(0);
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false)
        .or_else(|| scaled_value(&quarter, desired, false))
        .unwrap_or(0)
        .max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// An int-or-percent against `total` (Kubernetes' `GetScaledValueFromIntOrPercent`); `None` for a string
/// that is not `<integer>%`.
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let percent: i64 = s.strip_suffix('%')?.parse().ok()?;
            let product = percent * i64::from(total);
            let scaled = if round_up {
                product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
            } else {
                product.div_euclid(100)
            };
            Some(clamp_i32(scaled))
        }
    }
}

/// One reconcile pass: what the deployment controller would do now. See the module documentation.
pub fn plan(deployment: &Deployment, owned: &[ReplicaSet], now: Timestamp) -> Plan {
    if deployment.metadata.deletion_timestamp.is_some() {
        return Plan::default();
    }
    // Status times travel as RFC 3339 with whole seconds; deciding with the same precision keeps a status
    // read back equal to the one written.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let default_spec;
    let spec = match deployment.spec.as_ref() {
        Some(spec) => spec,
        None => {
            default_spec = DeploymentSpec::default();
            &default_spec
        }
    };
    let Some(selector) = compile_selector(&spec.selector) else {
        return observe_only(deployment);
    };
    let mut pass = Pass::new(deployment, spec, owned, &selector, now);
    pass.check_paused_conditions();
    pass.sync_revision();
    let outcome = if pass.paused || pass.is_scaling_event() {
        pass.sync()
    } else if pass.recreate {
        pass.rollout_recreate()
    } else {
        pass.rollout_rolling()
    };
    pass.finish(owned, outcome)
}

/// A Deployment whose selector selects everything (or cannot be understood) owns nothing and gets no
/// ReplicaSets; like Kubernetes, only record that its generation was seen.
fn observe_only(deployment: &Deployment) -> Plan {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let current = deployment.status.clone().unwrap_or_default();
    if current.observed_generation.unwrap_or(0) >= generation {
        return Plan::default();
    }
    Plan { status: Some(DeploymentStatus { observed_generation: Some(generation), ..current }), ..Plan::default() }
}

/// The Deployment's selector as keel-api's; `None` when it selects everything or is invalid.
fn compile_selector(selector: &LabelSelector) -> Option<selector::LabelSelector> {
    selector::LabelSelector::from_api(selector).ok().filter(|s| !s.is_empty())
}

fn desired_replicas(spec: &DeploymentSpec) -> i32 {
    spec.replicas.unwrap_or(1).max(0)
}

fn is_recreate(spec: &DeploymentSpec) -> bool {
    spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

fn clamp_i32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX })
}

/// A ReplicaSet as the pass sees it: what was read, with the sizes and annotations decided so far.
#[derive(Debug, Clone)]
struct Rs {
    /// Index into the ReplicaSets given to [`plan`]; `None` for the one this pass creates.
    source: Option<usize>,
    name: String,
    created: Option<Timestamp>,
    matches_template: bool,
    replicas: i64,
    min_ready_seconds: i32,
    annotations: BTreeMap<String, String>,
    status_replicas: i64,
    terminating: i64,
    ready: i64,
    available: i64,
    generation: i64,
    observed_generation: i64,
    deleting: bool,
    failures: Vec<DeploymentCondition>,
}

impl Rs {
    fn read(index: usize, rs: &ReplicaSet, template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Rs {
        let spec = rs.spec.as_ref();
        let status = rs.status.as_ref();
        let count = |n: Option<i32>| i64::from(n.unwrap_or(0).max(0));
        Rs {
            source: Some(index),
            name: rs.metadata.name.clone().unwrap_or_default(),
            created: rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            matches_template: spec.and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(template, t)),
            replicas: i64::from(spec.and_then(|s| s.replicas).unwrap_or(1).max(0)),
            min_ready_seconds: spec.and_then(|s| s.min_ready_seconds).unwrap_or(0),
            annotations: rs.metadata.annotations.clone().unwrap_or_default(),
            status_replicas: count(status.map(|s| s.replicas)),
            terminating: count(status.and_then(|s| s.terminating_replicas)),
            ready: count(status.and_then(|s| s.ready_replicas)),
            available: count(status.and_then(|s| s.available_replicas)),
            generation: rs.metadata.generation.unwrap_or(0),
            observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
            deleting: rs.metadata.deletion_timestamp.is_some(),
            failures: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.type_ == REPLICA_FAILURE)
                .map(|c| DeploymentCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                })
                .collect(),
        }
    }

    fn revision(&self) -> i64 {
        self.annotations.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
    }

    fn annotated(&self, key: &str) -> Option<i64> {
        self.annotations.get(key).and_then(|v| v.parse().ok())
    }

    /// Available pods it keeps once its controller catches up: never more than it is asked to run (a
    /// scale-down the status does not show yet may take available pods away).
    fn surely_available(&self) -> i64 {
        self.available.min(self.replicas)
    }

    /// Kubernetes sorts ReplicaSets by creation time, then name; the one this pass creates is the newest.
    fn age(&self) -> (Timestamp, &str) {
        (self.created.unwrap_or(Timestamp::MAX), &self.name)
    }
}

/// Which status computation ends the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `syncDeploymentStatus`: counts and Available only (paused, scaling events).
    Sync,
    /// `syncRolloutStatus`: also Progressing and ReplicaFailure.
    Rollout,
    /// The new ReplicaSet's name is taken: only the bumped `collisionCount` is written.
    Collision,
}

struct Pass<'a> {
    deployment: &'a Deployment,
    spec: &'a DeploymentSpec,
    now: Timestamp,
    replicas: i64,
    limits: Limits,
    recreate: bool,
    paused: bool,
    min_ready_seconds: i32,
    /// `progressDeadlineSeconds`; `None` when there is no deadline (MaxInt32).
    deadline: Option<i64>,
    /// `revisionHistoryLimit`; `None` when unlimited (MaxInt32).
    history_limit: Option<i64>,
    generation: i64,
    /// Oldest first.
    rss: Vec<Rs>,
    new: Option<usize>,
    created_hash: Option<String>,
    deleted: Vec<String>,
    /// The status as read, with the conditions this pass has already set (Kubernetes writes those as it
    /// goes and computes the final status from them).
    status: DeploymentStatus,
    revision: Option<String>,
}

impl<'a> Pass<'a> {
    fn new(
        deployment: &'a Deployment,
        spec: &'a DeploymentSpec,
        owned: &[ReplicaSet],
        selector: &selector::LabelSelector,
        now: Timestamp,
    ) -> Pass<'a> {
        let uid = deployment.metadata.uid.as_deref();
        let mut rss: Vec<Rs> = owned
            .iter()
            .enumerate()
            .filter(|(_, rs)| {
                let controller = rs.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
                let other_owner = matches!((controller, uid), (Some(c), Some(uid)) if c.uid != uid);
                let labels = rs.metadata.labels.clone().unwrap_or_default();
                !other_owner && selector.matches(&labels)
            })
            .map(|(i, rs)| Rs::read(i, rs, &spec.template))
            .collect();
        rss.sort_by(|a, b| a.age().cmp(&b.age()));
        let new = rss.iter().position(|rs| rs.matches_template);
        let replicas = desired_replicas(spec);
        let recreate = is_recreate(spec);
        let unlimited = |n: i32| (n != i32::MAX).then_some(i64::from(n.max(0)));
        Pass {
            deployment,
            spec,
            now,
            replicas: i64::from(replicas),
            limits: limits_of(replicas, recreate, spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref())),
            recreate,
            paused: spec.paused.unwrap_or(false),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            deadline: unlimited(spec.progress_deadline_seconds.unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)),
            history_limit: unlimited(spec.revision_history_limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)),
            generation: deployment.metadata.generation.unwrap_or(0),
            rss,
            new,
            created_hash: None,
            deleted: Vec::new(),
            status: deployment.status.clone().unwrap_or_default(),
            revision: deployment.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned(),
        }
    }

    fn name(&self) -> &str {
        self.deployment.metadata.name.as_deref().unwrap_or_default()
    }

    fn olds(&self) -> Vec<usize> {
        (0..self.rss.len()).filter(|&i| Some(i) != self.new).collect()
    }

    fn active_olds(&self) -> Vec<usize> {
        self.olds().into_iter().filter(|&i| self.rss[i].replicas > 0).collect()
    }

    fn max_old_revision(&self) -> i64 {
        self.olds().into_iter().map(|i| self.rss[i].revision()).max().unwrap_or(0)
    }

    fn total_replicas(&self) -> i64 {
        self.rss.iter().map(|rs| rs.replicas).sum()
    }

    fn max_replicas(&self) -> i64 {
        self.replicas + i64::from(self.limits.max_surge)
    }

    fn min_available(&self) -> i64 {
        self.replicas - i64::from(self.limits.max_unavailable)
    }

    fn condition(&mut self, type_: &str, status: &str, reason: &str, message: String) {
        conditions::set(&mut self.status, conditions::new(type_, status, reason, message, self.now));
    }

    /// `checkPausedConditions`: Progressing=Unknown DeploymentPaused while paused, DeploymentResumed after,
    /// so that time spent paused never counts against the progress deadline. A timeout stays reported.
    fn check_paused_conditions(&mut self) {
        if self.deadline.is_none() {
            return;
        }
        let reason = conditions::reason(conditions::get(&self.status, PROGRESSING)).map(str::to_owned);
        if reason.as_deref() == Some(conditions::PROGRESS_DEADLINE_EXCEEDED) {
            return;
        }
        let paused_reported = reason.as_deref() == Some(conditions::DEPLOYMENT_PAUSED);
        if self.paused && !paused_reported {
            self.condition(PROGRESSING, UNKNOWN, conditions::DEPLOYMENT_PAUSED, "Deployment is paused".into());
        } else if !self.paused && paused_reported {
            self.condition(PROGRESSING, UNKNOWN, conditions::DEPLOYMENT_RESUMED, "Deployment is resumed".into());
        }
    }

    /// The existing-new-ReplicaSet half of `getNewReplicaSet`: it gets the next revision if an old one is
    /// newer (a rollback by template), the Deployment's annotations and minReadySeconds; the Deployment
    /// takes its revision.
    fn sync_revision(&mut self) {
        let Some(n) = self.new else { return };
        let next = self.max_old_revision() + 1;
        let deployment_annotations = self.deployment.metadata.annotations.as_ref();
        let rs = &mut self.rss[n];
        set_new_replica_set_annotations(deployment_annotations, &mut rs.annotations, next, None);
        rs.min_ready_seconds = self.min_ready_seconds;
        if let Some(revision) = rs.annotations.get(REVISION) {
            self.revision = Some(revision.clone());
        }
        if self.deadline.is_some() && conditions::get(&self.status, PROGRESSING).is_none() {
            let message = format!("Found new replica set {:?}", self.rss[n].name);
            self.condition(PROGRESSING, TRUE, conditions::FOUND_NEW_REPLICA_SET, message);
        }
    }

    /// The creating half of `getNewReplicaSet`. False when the name is taken by another template of this
    /// Deployment (a hash collision): `collisionCount` goes up so that the next pass hashes differently.
    fn create_new(&mut self) -> bool {
        let hash = pod_template_hash(&self.spec.template, self.status.collision_count);
        let name = format!("{}-{}", self.name(), hash);
        if self.rss.iter().any(|rs| rs.name == name) {
            self.status.collision_count = Some(self.status.collision_count.unwrap_or(0).saturating_add(1));
            return false;
        }
        let next = self.max_old_revision() + 1;
        self.rss.push(Rs {
            source: None,
            name: name.clone(),
            created: None,
            matches_template: true,
            replicas: 0,
            min_ready_seconds: self.min_ready_seconds,
            annotations: BTreeMap::new(),
            status_replicas: 0,
            terminating: 0,
            ready: 0,
            available: 0,
            generation: 0,
            observed_generation: 0,
            deleting: false,
            failures: Vec::new(),
        });
        let n = self.rss.len() - 1;
        self.new = Some(n);
        self.rss[n].replicas = self.new_replica_set_replicas(n);
        let sizes = (self.replicas, self.max_replicas());
        let deployment_annotations = self.deployment.metadata.annotations.as_ref();
        set_new_replica_set_annotations(deployment_annotations, &mut self.rss[n].annotations, next, Some(sizes));
        self.revision = Some(next.to_string());
        self.created_hash = Some(hash);
        if self.deadline.is_some() {
            let message = format!("Created new replica set {name:?}");
            self.condition(PROGRESSING, TRUE, conditions::NEW_REPLICA_SET_CREATED, message);
        }
        true
    }

    /// `NewRSNewReplicas`: how far the new ReplicaSet may grow now.
    fn new_replica_set_replicas(&self, n: usize) -> i64 {
        let current = self.rss[n].replicas;
        if self.recreate {
            return self.replicas;
        }
        let total = self.total_replicas();
        if total >= self.max_replicas() {
            return current;
        }
        current + (self.max_replicas() - total).min(self.replicas - current)
    }

    /// `isScalingEvent`: an active ReplicaSet was sized for another `spec.replicas`.
    fn is_scaling_event(&self) -> bool {
        self.rss.iter().any(|rs| rs.replicas > 0 && rs.annotated(DESIRED_REPLICAS).is_some_and(|d| d != self.replicas))
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`: resize (and re-annotate) when the size differs.
    fn scale_to(&mut self, i: usize, replicas: i64) -> bool {
        if self.rss[i].replicas == replicas {
            return false;
        }
        self.resize(i, replicas)
    }

    /// Kubernetes' `scaleReplicaSet`: the size and the desired/max annotations; true when the size changed.
    fn resize(&mut self, i: usize, replicas: i64) -> bool {
        let (desired, max) = (self.replicas, self.max_replicas());
        let rs = &mut self.rss[i];
        set_replica_annotations(&mut rs.annotations, desired, max);
        let changed = rs.replicas != replicas;
        rs.replicas = replicas;
        changed
    }

    /// `sync`: for paused Deployments and scaling events; no rollout, only (proportional) scaling.
    fn sync(&mut self) -> Outcome {
        self.scale();
        if self.paused {
            self.cleanup();
        }
        Outcome::Sync
    }

    /// `scale`: one active ReplicaSet takes all replicas; a saturated new one leaves old ones none;
    /// otherwise (rolling updates) the difference to `replicas + maxSurge` is spread in proportion to the
    /// sizes the ReplicaSets were given for (their max-replicas annotation), the remainder to the largest.
    fn scale(&mut self) {
        if let Some(i) = self.active_or_latest() {
            self.scale_to(i, self.replicas);
            return;
        }
        if self.new.is_some_and(|n| self.is_saturated(n)) {
            for i in self.active_olds() {
                self.scale_to(i, 0);
            }
            return;
        }
        if self.recreate {
            return;
        }
        let mut active: Vec<usize> = (0..self.rss.len()).filter(|&i| self.rss[i].replicas > 0).collect();
        let allowed = if self.replicas > 0 { self.max_replicas() } else { 0 };
        let to_add = allowed - self.total_replicas();
        // Largest first; among equals, newer first when growing and older first when shrinking.
        match to_add.signum() {
            1 => active.sort_by(|&a, &b| {
                let (a, b) = (&self.rss[a], &self.rss[b]);
                b.replicas.cmp(&a.replicas).then_with(|| b.age().cmp(&a.age()))
            }),
            -1 => active.sort_by(|&a, &b| {
                let (a, b) = (&self.rss[a], &self.rss[b]);
                b.replicas.cmp(&a.replicas).then_with(|| a.age().cmp(&b.age()))
            }),
            _ => {}
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(active.len());
        for &i in &active {
            let proportion = self.proportion(i, to_add, added);
            sizes.push(self.rss[i].replicas + proportion);
            added += proportion;
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (i, size) in active.into_iter().zip(sizes) {
            self.resize(i, size);
        }
    }

    /// `FindActiveOrLatest`: the only active ReplicaSet, or the newest when none is active.
    fn active_or_latest(&self) -> Option<usize> {
        let active: Vec<usize> = (0..self.rss.len()).filter(|&i| self.rss[i].replicas > 0).collect();
        match active.as_slice() {
            [] => self.new.or_else(|| self.olds().last().copied()),
            [only] => Some(*only),
            _ => None,
        }
    }

    fn is_saturated(&self, n: usize) -> bool {
        let rs = &self.rss[n];
        rs.replicas == self.replicas
            && rs.annotated(DESIRED_REPLICAS) == Some(self.replicas)
            && rs.available == self.replicas
    }

    /// `GetProportion`: this ReplicaSet's share of `to_add`, within what is left of it.
    fn proportion(&self, i: usize, to_add: i64, added: i64) -> i64 {
        let rs = &self.rss[i];
        if rs.replicas == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas == 0 {
            -rs.replicas
        } else {
            let annotated = rs
                .annotated(MAX_REPLICAS)
                .unwrap_or_else(|| i64::from(self.deployment.status.as_ref().and_then(|s| s.replicas).unwrap_or(0)));
            if annotated <= 0 {
                0
            } else {
                let target = (rs.replicas as f64 * self.max_replicas() as f64 / annotated as f64).round() as i64;
                target - rs.replicas
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// `rolloutRolling`: create the new ReplicaSet if needed, grow it if the surge allows, otherwise
    /// shrink old ones as availability allows; once complete, clean up history.
    fn rollout_rolling(&mut self) -> Outcome {
        if self.new.is_none() && !self.create_new() {
            return Outcome::Collision;
        }
        let Some(n) = self.new else { return Outcome::Collision };
        if self.reconcile_new(n) || self.reconcile_old(n) {
            return Outcome::Rollout;
        }
        if self.complete(self.deployment.status.as_ref()) {
            self.cleanup();
        }
        Outcome::Rollout
    }

    /// `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, n: usize) -> bool {
        let current = self.rss[n].replicas;
        if current == self.replicas {
            return false;
        }
        if current > self.replicas {
            return self.scale_to(n, self.replicas);
        }
        let target = self.new_replica_set_replicas(n);
        self.scale_to(n, target)
    }

    /// `reconcileOldReplicaSets`: how many old pods may go without dropping below `replicas -
    /// maxUnavailable`, counting the new ReplicaSet's unavailable pods as lost; unhealthy old pods first.
    fn reconcile_old(&mut self, n: usize) -> bool {
        let olds = self.active_olds();
        if olds.iter().map(|&i| self.rss[i].replicas).sum::<i64>() == 0 {
            return false;
        }
        let new_unavailable = self.rss[n].replicas - self.rss[n].surely_available();
        let max_scaled_down = self.total_replicas() - self.min_available() - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(&olds, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling(&olds);
        cleaned + scaled > 0
    }

    /// `cleanupUnhealthyReplicas`: old ReplicaSets give up their unavailable pods (oldest first), which
    /// costs no availability.
    fn cleanup_unhealthy(&mut self, olds: &[usize], max: i64) -> i64 {
        let mut total = 0;
        for &i in olds {
            if total >= max {
                break;
            }
            let rs = &self.rss[i];
            let unhealthy = rs.replicas - rs.surely_available();
            if rs.replicas == 0 || unhealthy <= 0 {
                continue;
            }
            let count = (max - total).min(unhealthy);
            self.scale_to(i, rs.replicas - count);
            total += count;
        }
        total
    }

    /// `scaleDownOldReplicaSetsForRollingUpdate`: old ReplicaSets (oldest first) give up as many pods as
    /// are available beyond `replicas - maxUnavailable`.
    fn scale_down_old_for_rolling(&mut self, olds: &[usize]) -> i64 {
        let available: i64 = self.rss.iter().map(Rs::surely_available).sum();
        let to_scale_down = available - self.min_available();
        let mut total = 0;
        for &i in olds {
            if total >= to_scale_down {
                break;
            }
            let replicas = self.rss[i].replicas;
            if replicas == 0 {
                continue;
            }
            let count = replicas.min(to_scale_down - total);
            self.scale_to(i, replicas - count);
            total += count;
        }
        total.max(0)
    }

    /// `rolloutRecreate`: old ReplicaSets to 0; once none of their pods is left, the new one (created only
    /// then) to `replicas`.
    fn rollout_recreate(&mut self) -> Outcome {
        let mut scaled_down = false;
        for i in self.active_olds() {
            scaled_down |= self.scale_to(i, 0);
        }
        if scaled_down || self.old_pods_running() {
            return Outcome::Rollout;
        }
        if self.new.is_none() && !self.create_new() {
            return Outcome::Collision;
        }
        let Some(n) = self.new else { return Outcome::Collision };
        self.scale_to(n, self.replicas);
        if self.complete(self.deployment.status.as_ref()) {
            self.cleanup();
        }
        Outcome::Rollout
    }

    /// Old pods still exist, running or terminating, as far as the old ReplicaSets' status tells.
    fn old_pods_running(&self) -> bool {
        self.olds().into_iter().any(|i| self.rss[i].status_replicas + self.rss[i].terminating > 0)
    }

    /// `cleanupDeployment`: old ReplicaSets beyond `revisionHistoryLimit`, lowest revision first, skipping
    /// any with replicas (spec or status), not yet observed, or already being deleted.
    fn cleanup(&mut self) {
        let Some(limit) = self.history_limit else { return };
        let mut cleanable: Vec<usize> = self.olds().into_iter().filter(|&i| !self.rss[i].deleting).collect();
        let excess = cleanable.len() as i64 - limit;
        if excess <= 0 {
            return;
        }
        cleanable.sort_by(|&a, &b| {
            let (a, b) = (&self.rss[a], &self.rss[b]);
            a.revision().cmp(&b.revision()).then_with(|| a.age().cmp(&b.age()))
        });
        for &i in cleanable.iter().take(usize::try_from(excess).unwrap_or(usize::MAX)) {
            let rs = &self.rss[i];
            if rs.status_replicas != 0 || rs.replicas != 0 || rs.generation > rs.observed_generation {
                continue;
            }
            self.deleted.push(rs.name.clone());
        }
    }

    /// `DeploymentComplete`: every replica updated and available, and the generation observed.
    fn complete(&self, status: Option<&DeploymentStatus>) -> bool {
        let Some(status) = status else { return false };
        let count = |n: Option<i32>| i64::from(n.unwrap_or(0));
        count(status.updated_replicas) == self.replicas
            && count(status.replicas) == self.replicas
            && count(status.available_replicas) == self.replicas
            && status.observed_generation.unwrap_or(0) >= self.generation
    }

    /// `calculateStatus`: counts from the ReplicaSets' status, and the Available condition.
    fn calculate_status(&self) -> DeploymentStatus {
        let sum = |f: fn(&Rs) -> i64| clamp_i32(self.rss.iter().map(f).sum());
        let available = sum(|rs| rs.available);
        let mut status = DeploymentStatus {
            observed_generation: Some(self.generation),
            replicas: Some(sum(|rs| rs.status_replicas)),
            updated_replicas: Some(self.new.map_or(0, |n| clamp_i32(self.rss[n].status_replicas))),
            ready_replicas: Some(sum(|rs| rs.ready)),
            available_replicas: Some(available),
            unavailable_replicas: Some((sum(|rs| rs.replicas) - available).max(0)),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            terminating_replicas: None,
        };
        let condition = if i64::from(available) >= self.min_available() {
            (TRUE, conditions::MINIMUM_REPLICAS_AVAILABLE, "Deployment has minimum availability.")
        } else {
            (FALSE, conditions::MINIMUM_REPLICAS_UNAVAILABLE, "Deployment does not have minimum availability.")
        };
        conditions::set(
            &mut status,
            conditions::new(AVAILABLE, condition.0, condition.1, condition.2.into(), self.now),
        );
        status
    }

    /// `syncRolloutStatus`: Progressing as the rollout completes, progresses or times out, and the
    /// ReplicaSets' ReplicaFailure (the new one's first).
    fn rollout_status(&self) -> DeploymentStatus {
        let mut status = self.calculate_status();
        if self.deadline.is_none() {
            conditions::remove(&mut status, PROGRESSING);
        }
        let current = conditions::get(&self.status, PROGRESSING).cloned();
        let already_complete = status.replicas == status.updated_replicas
            && conditions::reason(current.as_ref()) == Some(conditions::NEW_REPLICA_SET_AVAILABLE);
        let subject = match self.new {
            Some(n) => format!("ReplicaSet {:?}", self.rss[n].name),
            None => format!("Deployment {:?}", self.name()),
        };
        if self.deadline.is_some() && !already_complete {
            if self.complete(Some(&status)) {
                let message = format!("{subject} has successfully progressed.");
                let condition =
                    conditions::new(PROGRESSING, TRUE, conditions::NEW_REPLICA_SET_AVAILABLE, message, self.now);
                conditions::set(&mut status, condition);
            } else if self.progressed(&status) {
                let message = format!("{subject} is progressing.");
                let mut condition =
                    conditions::new(PROGRESSING, TRUE, conditions::REPLICA_SET_UPDATED, message, self.now);
                // Progress moves lastUpdateTime even when the reason stays; lastTransitionTime only moves
                // when the status does.
                if let Some(current) = &current {
                    if current.status == TRUE {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    conditions::remove(&mut status, PROGRESSING);
                }
                conditions::set(&mut status, condition);
            } else if self.timed_out(&status) {
                let message = format!("{subject} has timed out progressing.");
                let condition =
                    conditions::new(PROGRESSING, FALSE, conditions::PROGRESS_DEADLINE_EXCEEDED, message, self.now);
                conditions::set(&mut status, condition);
            }
        }
        let failure = self
            .new
            .and_then(|n| self.rss[n].failures.first())
            .or_else(|| self.rss.iter().flat_map(|rs| rs.failures.first()).next());
        match failure {
            Some(failure) => conditions::set(&mut status, failure.clone()),
            None => conditions::remove(&mut status, REPLICA_FAILURE),
        }
        status
    }

    /// `DeploymentProgressing`: more updated, fewer old, more ready or more available replicas than the
    /// status as read.
    fn progressed(&self, new: &DeploymentStatus) -> bool {
        let old = self.deployment.status.clone().unwrap_or_default();
        let n = |v: Option<i32>| i64::from(v.unwrap_or(0));
        n(new.updated_replicas) > n(old.updated_replicas)
            || n(new.replicas) - n(new.updated_replicas) < n(old.replicas) - n(old.updated_replicas)
            || n(new.ready_replicas) > n(old.ready_replicas)
            || n(new.available_replicas) > n(old.available_replicas)
    }

    /// `DeploymentTimedOut`: Progressing was last updated more than the deadline ago.
    fn timed_out(&self, status: &DeploymentStatus) -> bool {
        let Some(deadline) = self.deadline else { return false };
        let Some(condition) = conditions::get(status, PROGRESSING) else { return false };
        match conditions::reason(Some(condition)) {
            Some(conditions::NEW_REPLICA_SET_AVAILABLE) => false,
            Some(conditions::PROGRESS_DEADLINE_EXCEEDED) => true,
            _ => condition
                .last_update_time
                .as_ref()
                .is_some_and(|from| from.0.as_second().saturating_add(deadline) < self.now.as_second()),
        }
    }

    /// `requeueStuckDeployment`: when the deadline of an unfinished rollout would pass, one second after.
    fn requeue_after(&self, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = self.deadline?;
        let condition = conditions::get(status, PROGRESSING)?;
        if self.complete(Some(status))
            || conditions::reason(Some(condition)) == Some(conditions::PROGRESS_DEADLINE_EXCEEDED)
        {
            return None;
        }
        let from = condition.last_update_time.as_ref()?.0.as_second();
        let left = from.saturating_add(deadline).saturating_sub(self.now.as_second()).max(0);
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1))
    }

    fn finish(self, owned: &[ReplicaSet], outcome: Outcome) -> Plan {
        let status = match outcome {
            Outcome::Collision => self.status.clone(),
            Outcome::Sync => self.calculate_status(),
            Outcome::Rollout => self.rollout_status(),
        };
        let current = self.deployment.status.clone().unwrap_or_default();
        let current_revision = self.deployment.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
        Plan {
            create: self.created_replica_set(),
            update: self.updates(owned),
            delete: self.deleted.clone(),
            deployment_revision: self.revision.clone().filter(|r| Some(r) != current_revision),
            requeue_after: if outcome == Outcome::Rollout { self.requeue_after(&status) } else { None },
            status: (comparable(&status) != comparable(&current)).then_some(status),
        }
    }

    fn created_replica_set(&self) -> Option<ReplicaSet> {
        let hash = self.created_hash.as_ref()?;
        let rs = self.rss.iter().find(|rs| rs.source.is_none())?;
        let mut template = self.spec.template.clone();
        let labels = template.metadata.get_or_insert_with(ObjectMeta::default).labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = labels.clone();
        let mut selector = self.spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(POD_TEMPLATE_HASH.into(), hash.clone());
        Some(ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs.name.clone()),
                namespace: self.deployment.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: Some(rs.annotations.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: self.name().to_string(),
                    uid: self.deployment.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(clamp_i32(rs.replicas)),
                min_ready_seconds: Some(rs.min_ready_seconds),
                selector,
                template: Some(template),
            }),
            status: None,
        })
    }

    fn updates(&self, owned: &[ReplicaSet]) -> Vec<ReplicaSetUpdate> {
        let mut updates = Vec::new();
        for rs in &self.rss {
            let Some(read) = rs.source.and_then(|i| owned.get(i)) else { continue };
            let spec = read.spec.as_ref();
            let read_annotations = read.metadata.annotations.clone().unwrap_or_default();
            let annotations: BTreeMap<String, String> = rs
                .annotations
                .iter()
                .filter(|(k, v)| read_annotations.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let replicas = clamp_i32(rs.replicas);
            let min_ready_seconds = rs.min_ready_seconds;
            if annotations.is_empty()
                && spec.and_then(|s| s.replicas).unwrap_or(1) == replicas
                && spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) == min_ready_seconds
            {
                continue;
            }
            updates.push(ReplicaSetUpdate {
                name: rs.name.clone(),
                resource_version: read.metadata.resource_version.clone(),
                replicas,
                min_ready_seconds,
                annotations,
            });
        }
        updates
    }
}

/// `SetNewReplicaSetAnnotations`: the Deployment's own annotations (but not the controller's), the
/// revision when it goes up (keeping the one it replaces in the revision history: a rollback), and for a
/// ReplicaSet being created, its replica annotations (`sizes`: desired and max replicas).
fn set_new_replica_set_annotations(
    deployment: Option<&BTreeMap<String, String>>,
    annotations: &mut BTreeMap<String, String>,
    revision: i64,
    sizes: Option<(i64, i64)>,
) {
    for (k, v) in deployment.into_iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        // Kubernetes leaves a ReplicaSet with an unreadable revision alone.
        Some(Err(_)) => return,
    };
    if old_revision < revision {
        annotations.insert(REVISION.into(), revision.to_string());
        if let Some(old) = old {
            let history = match annotations.get(REVISION_HISTORY).filter(|h| !h.is_empty()) {
                Some(history) => format!("{history},{old}"),
                None => old,
            };
            let mut history = history.as_str();
            while history.len() > MAX_REVISION_HISTORY_CHARS {
                let Some((_, rest)) = history.split_once(',') else { break };
                history = rest;
            }
            annotations.insert(REVISION_HISTORY.into(), history.to_string());
        }
    }
    if let Some((desired, max)) = sizes {
        set_replica_annotations(annotations, desired, max);
    }
}

fn set_replica_annotations(annotations: &mut BTreeMap<String, String>, desired: i64, max: i64) {
    annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), max.to_string());
}

/// A status as compared for "unchanged": absent and zero counts alike, absent and empty condition lists alike.
fn comparable(status: &DeploymentStatus) -> DeploymentStatus {
    let nonzero = |n: Option<i32>| n.filter(|n| *n != 0);
    DeploymentStatus {
        available_replicas: nonzero(status.available_replicas),
        collision_count: status.collision_count,
        conditions: status.conditions.clone().filter(|c| !c.is_empty()),
        observed_generation: status.observed_generation.filter(|g| *g != 0),
        ready_replicas: nonzero(status.ready_replicas),
        replicas: nonzero(status.replicas),
        terminating_replicas: nonzero(status.terminating_replicas),
        unavailable_replicas: nonzero(status.unavailable_replicas),
        updated_replicas: nonzero(status.updated_replicas),
    }
}
