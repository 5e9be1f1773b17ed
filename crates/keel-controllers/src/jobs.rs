//! The Job controller's decision, pure: given a Job and the pods its selector finds, which pods to create
//! (for an Indexed Job, with which completion indexes), which to delete, which orphans to adopt, the status
//! to report, the events worth recording and when to look again; and, apart, when a finished Job's time to
//! live runs out ([`ttl_expired`]).
//!
//! Kubernetes counts a Job's finished pods with a finalizer on each pod; keel does not. It counts the pods
//! it can see and keeps the stored counters as lower bounds, so a finished pod that someone deletes is not
//! forgotten; it never deletes finished pods itself. As in Kubernetes 1.33 a failing Job first gets the
//! `FailureTarget` condition and a succeeding one `SuccessCriteriaMet`; `Failed` or `Complete` follows once
//! none of its pods is still running or terminating.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pods;

pub use crate::events::Note;

/// At most this many pods are created or deleted in one pass (Kubernetes' MaxPodCreateDeletePerSync).
pub const BURST: usize = 500;
/// The annotation and label that carry an Indexed Job's pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable through which an Indexed Job's container reads its completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// `spec.managedBy` of the Jobs this controller manages (or none).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// The delay before replacing a failed pod, doubled for each further failure since the last success...
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// ...up to this (Kubernetes' MaxJobPodFailureBackOff).
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// `spec.backoffLimit` when it is not set.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Pods to create from the template (see [`pod_for`]).
    pub create: usize,
    /// For an Indexed Job, the completion index of each pod to create (`create` of them).
    pub indexes: Vec<i32>,
    /// Pods (names) to delete.
    pub delete: Vec<String>,
    /// Matching pods without a controller, to take over.
    pub adopt: Vec<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<JobStatus>,
    /// Look again after this long even if nothing changes (a deadline, a failure's back-off).
    pub requeue_after: Option<Duration>,
    /// What to record as Events once the status is written.
    pub events: Vec<Note>,
}

/// What a finished Job's `ttlSecondsAfterFinished` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Delete the Job now.
    Expired,
    /// Look again after this long.
    After(Duration),
}

enum Finish {
    Success,
    Failure { reason: String, message: String },
}

/// One pass over `job`, whose selector found `candidates` in its namespace.
pub fn plan(job: &Job, candidates: &[Pod], now: jiff::Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = job.spec.as_ref() else { return plan };
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) || finished(job).is_some() {
        return plan;
    }
    // The garbage collector removes the pods of a Job being deleted.
    if job.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let now = whole_seconds(now);
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in candidates {
        match pods::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => owned.push(pod),
            Some(_) => {}
            None if pod.metadata.deletion_timestamp.is_none()
                && pods::selects(spec.selector.as_ref(), pod.metadata.labels.as_ref()) =>
            {
                plan.adopt.push(name_of(pod));
                owned.push(pod);
            }
            None => {}
        }
    }

    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.uncounted_terminated_pods.get_or_insert_with(Default::default);
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let suspended = spec.suspend == Some(true);
    let completions = spec.completions;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed") && completions.is_some();

    let resuming = !suspended && condition_is(&conditions, "Suspended", "True");
    if (status.start_time.is_none() && !suspended) || resuming {
        // A resumed Job's deadline counts from its resumption.
        status.start_time = Some(Time(now));
    }

    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| pods::is_active(p)).collect();
    let mut terminating = owned.iter().filter(|p| is_terminating(p)).count();
    let mut completed = BTreeSet::new();
    let succeeded = if indexed {
        let completions = completions.unwrap_or(0);
        completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or_default(), completions);
        for pod in owned.iter().filter(|p| pods::phase(p) == Some("Succeeded")) {
            if let Some(i) = index_of(pod).filter(|i| *i < completions) {
                completed.insert(i);
            }
        }
        completed.len() as i32
    } else {
        let seen = owned.iter().filter(|p| pods::phase(p) == Some("Succeeded")).count() as i32;
        old.succeeded.unwrap_or(0).max(seen)
    };
    let count_failed = |failing: bool| -> i32 {
        let seen = owned
            .iter()
            .filter(|p| match pods::phase(p) {
                Some("Succeeded") => false,
                Some("Failed") if p.metadata.deletion_timestamp.is_none() => true,
                // Once the Job fails, every pod it stops counts as failed, as in Kubernetes.
                _ => failing,
            })
            .count() as i32;
        old.failed.unwrap_or(0).max(seen)
    };

    let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let mut failed = count_failed(false);
    let mut finish = None;
    if find_true(&conditions, "SuccessCriteriaMet").is_some() {
        finish = Some(Finish::Success);
    } else if let Some(c) = find_true(&conditions, "FailureTarget") {
        finish = Some(Finish::Failure {
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    } else if failed > backoff_limit || past_backoff_limit_on_failure(spec, &active, backoff_limit) {
        finish = Some(failure("BackoffLimitExceeded", "Job has reached the specified backoff limit"));
    } else if let (Some(deadline), Some(start), false) =
        (spec.active_deadline_seconds, status.start_time.as_ref(), suspended)
    {
        let due = start.0 + jiff::SignedDuration::from_secs(deadline);
        if now >= due {
            finish = Some(failure("DeadlineExceeded", "Job was active longer than specified deadline"));
        } else {
            plan.requeue_after = Duration::try_from(due.duration_since(now)).ok();
        }
    }
    if matches!(finish, Some(Finish::Failure { .. })) {
        failed = count_failed(true);
    }

    let mut created = 0;
    if finish.is_none() {
        if suspended {
            let victims = take_names(&mut active, usize::MAX);
            terminating += victims.len();
            plan.delete = victims;
        } else {
            created = manage(&mut plan, &owned, &mut active, &mut terminating, &completed, spec, succeeded, now);
        }
        let remaining = active.len() + created;
        let complete = match completions {
            None => succeeded > 0 && remaining == 0,
            Some(c) => succeeded >= c && remaining == 0,
        };
        if complete {
            finish = Some(Finish::Success);
        }
    }

    match &finish {
        Some(end) => {
            // Stop whatever still runs.
            let victims = take_names(&mut active, usize::MAX);
            terminating += victims.len();
            plan.delete.extend(victims);
            let (target, last, reason, message) = match end {
                Finish::Success => (
                    "SuccessCriteriaMet",
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                Finish::Failure { reason, message } => ("FailureTarget", "Failed", reason.as_str(), message.as_str()),
            };
            set_condition(&mut conditions, target, "True", reason, message, now);
            if terminating == 0 {
                set_condition(&mut conditions, last, "True", reason, message, now);
                match end {
                    Finish::Success => {
                        status.completion_time = Some(Time(now));
                        plan.events.push(Note::normal("Completed", "Job completed"));
                    }
                    Finish::Failure { .. } => plan.events.push(Note::warning(reason, message)),
                }
            }
        }
        None if suspended => {
            if set_condition(&mut conditions, "Suspended", "True", "JobSuspended", "Job suspended", now) {
                plan.events.push(Note::normal("Suspended", "Job suspended"));
            }
        }
        None => {
            if set_condition(&mut conditions, "Suspended", "False", "JobResumed", "Job resumed", now) {
                plan.events.push(Note::normal("Resumed", "Job resumed"));
            }
        }
    }

    status.active = nonzero(active.len() as i32 + created as i32);
    status.ready = Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32);
    status.terminating = Some(terminating as i32);
    status.succeeded = nonzero(succeeded);
    status.failed = nonzero(failed);
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed)).filter(|s| !s.is_empty());
    }
    status.conditions = if conditions.is_empty() { None } else { Some(conditions) };
    // Kubernetes writes an empty uncountedTerminatedPods; that alone is no reason for a write.
    let mut compared = status.clone();
    if old.uncounted_terminated_pods.is_none() {
        compared.uncounted_terminated_pods = None;
    }
    if compared != old {
        plan.status = Some(status);
    }
    plan
}

/// Kubernetes' manageJob for a running Job: delete the pods beyond what it wants (and, for an Indexed Job,
/// pods with a wrong or repeated index), or else create the missing ones unless a failure's back-off holds
/// them. Fills `plan.delete`, `plan.create` and `plan.indexes`; how many pods it creates.
#[allow(clippy::too_many_arguments)]
fn manage(
    plan: &mut Plan,
    owned: &[&Pod],
    active: &mut Vec<&Pod>,
    terminating: &mut usize,
    completed: &BTreeSet<i32>,
    spec: &JobSpec,
    succeeded: i32,
    now: jiff::Timestamp,
) -> usize {
    let completions = spec.completions;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed") && completions.is_some();
    let replace_only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let want = match completions {
        // A work queue: once a pod succeeded, the rest only finish.
        None if succeeded > 0 => active.len(),
        None => parallelism,
        Some(c) => ((c - succeeded).max(0) as usize).min(parallelism),
    };
    let mut victims = Vec::new();
    if indexed {
        victims = take_misplaced(active, completed, completions.unwrap_or(0));
    }
    if active.len() > want {
        let n = (active.len() - want).min(BURST.saturating_sub(victims.len()));
        victims.extend(take_names(active, n));
    }
    if !victims.is_empty() {
        // Deleting takes precedence over creating, as in Kubernetes: the next pass creates.
        *terminating += victims.len();
        plan.delete = victims;
        return 0;
    }
    let in_flight = active.len() + if replace_only_failed { *terminating } else { 0 };
    let missing = want.saturating_sub(in_flight).min(BURST);
    if missing == 0 {
        return 0;
    }
    if let Some(wait) = backoff_remaining(owned, now) {
        plan.requeue_after = earliest(plan.requeue_after, wait);
        return 0;
    }
    if indexed {
        let busy: BTreeSet<i32> = owned
            .iter()
            .filter(|p| pods::is_active(p) || (replace_only_failed && is_terminating(p)))
            .filter_map(|p| index_of(p))
            .collect();
        plan.indexes = (0..completions.unwrap_or(0))
            .filter(|i| !completed.contains(i) && !busy.contains(i))
            .take(missing)
            .collect();
        plan.create = plan.indexes.len();
    } else {
        plan.create = missing;
    }
    plan.create
}

/// Whether a finished Job's time to live ran out, or when it will; `None` for a Job without
/// `ttlSecondsAfterFinished`, not finished, or already being deleted. The time counts from the
/// `Complete` or `Failed` condition's transition.
pub fn ttl_expired(job: &Job, now: jiff::Timestamp) -> Option<Ttl> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let finished_at = finished(job)?.last_transition_time.as_ref()?.0;
    let expires = finished_at + jiff::SignedDuration::from_secs(i64::from(ttl));
    if expires <= now {
        Some(Ttl::Expired)
    } else {
        Some(Duration::try_from(expires.duration_since(now)).map_or(Ttl::Expired, Ttl::After))
    }
}

/// The Job's `Complete` or `Failed` condition, when it is True.
pub fn finished(job: &Job) -> Option<&JobCondition> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// A new pod for `job` (with completion index `index`, for an Indexed Job), named by the server.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let owner = pods::controller_reference("batch/v1", "Job", &job.metadata);
    let generate_name = match index {
        Some(i) => generate_name_with_index(&name, i),
        None => format!("{name}-"),
    };
    let mut pod = pods::pod_from_template(&template, &namespace, &generate_name, owner);
    if let Some(i) = index {
        let value = i.to_string();
        pod.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(COMPLETION_INDEX.into(), value.clone());
        pod.metadata.labels.get_or_insert_with(BTreeMap::new).insert(COMPLETION_INDEX.into(), value);
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(format!("{name}-{i}"));
            let containers = spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut());
            for c in containers {
                let env = c.env.get_or_insert_with(Vec::new);
                if env.iter().all(|e| e.name != COMPLETION_INDEX_ENV) {
                    env.push(EnvVar {
                        name: COMPLETION_INDEX_ENV.into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                            }),
                            ..Default::default()
                        }),
                    });
                }
            }
        }
    }
    pod
}

/// Completion indexes as Kubernetes writes them in `status.completedIndexes`: "1,3-5,7".
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in indexes {
        run = match run {
            Some((first, last)) if i == last + 1 => Some((first, i)),
            Some(done) => {
                parts.push(interval(done));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    parts.extend(run.map(interval));
    parts.join(",")
}

fn interval((first, last): (i32, i32)) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// The indexes below `completions` that `s` (as [`format_indexes`] writes it) lists; malformed parts are
/// skipped.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(first), Ok(last)) = (first, last) {
            set.extend((first.max(0)..=last.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    set
}

/// The pod's completion index, from its annotation.
pub fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?.parse().ok().filter(|i: &i32| *i >= 0)
}

/// Kubernetes' podGenerateNameWithIndex: "<job>-<index>-", the job's name cut so the whole stays within
/// the 58 characters a generated name may start with.
fn generate_name_with_index(job: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let room = 58usize.saturating_sub(suffix.len());
    let mut prefix = job;
    if prefix.len() > room {
        let mut cut = room;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix = &prefix[..cut];
    }
    format!("{prefix}{suffix}")
}

fn failure(reason: &str, message: &str) -> Finish {
    Finish::Failure { reason: reason.to_string(), message: message.to_string() }
}

fn whole_seconds(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Being deleted but not finished.
fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(pods::phase(pod), Some("Succeeded" | "Failed"))
}

fn find_true<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conditions.iter().find(|c| c.type_ == type_ && c.status == "True")
}

fn condition_is(conditions: &[JobCondition], type_: &str, status: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == status)
}

/// Kubernetes' ensureJobConditionStatus: a new condition only when it is True, an existing one updated when
/// its status, reason or message changes (its transition time only when the status does). Whether the list
/// changed.
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status == status && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
                return false;
            }
            if c.status != status {
                c.last_transition_time = Some(Time(now));
            }
            c.status = status.to_string();
            c.reason = Some(reason.to_string());
            c.message = Some(message.to_string());
            c.last_probe_time = Some(Time(now));
            true
        }
        None if status == "True" => {
            conditions.push(JobCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_probe_time: Some(Time(now)),
                last_transition_time: Some(Time(now)),
            });
            true
        }
        None => false,
    }
}

/// Removes the first `n` pods in Kubernetes' order for giving pods up; their names.
fn take_names(active: &mut Vec<&Pod>, n: usize) -> Vec<String> {
    active.sort_by(|a, b| pods::deletion_order(a, b));
    let n = n.min(active.len()).min(BURST);
    active.drain(..n).map(name_of).collect()
}

/// An Indexed Job's active pods that must go: without a valid index, with an index already completed, or a
/// second pod for an index (the more established one stays). Removed from `active`; their names.
fn take_misplaced(active: &mut Vec<&Pod>, completed: &BTreeSet<i32>, completions: i32) -> Vec<String> {
    // Most established first, so that the first pod seen for an index is the one kept.
    active.sort_by(|a, b| pods::deletion_order(b, a));
    let mut seen = BTreeSet::new();
    let mut victims = Vec::new();
    active.retain(|p| {
        let keep = index_of(p).is_some_and(|i| i < completions && !completed.contains(&i) && seen.insert(i));
        if !keep && victims.len() < BURST {
            victims.push(name_of(p));
            return false;
        }
        true
    });
    victims
}

/// Kubernetes' pastBackoffLimitOnFailure: with restartPolicy OnFailure, the pods restart in place, and their
/// containers' restarts count toward the backoff limit.
fn past_backoff_limit_on_failure(spec: &JobSpec, active: &[&Pod], limit: i32) -> bool {
    let restart_policy = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    if restart_policy != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter(|p| matches!(pods::phase(p), Some("Running" | "Pending")))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// How long to wait before replacing failed pods: 10 s doubled for each failure since the last success, up
/// to 10 minutes, counted from the last failure; `None` when there is nothing to wait for.
fn backoff_remaining(owned: &[&Pod], now: jiff::Timestamp) -> Option<Duration> {
    let last_success =
        owned.iter().filter(|p| pods::phase(p) == Some("Succeeded")).filter_map(|p| finish_time(p)).max();
    let failures: Vec<jiff::Timestamp> = owned
        .iter()
        .filter(|p| pods::phase(p) == Some("Failed"))
        .filter_map(|p| finish_time(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last = failures.iter().max()?;
    let doublings = (failures.len() - 1).min(16) as u32;
    let delay = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    let ready_at = *last + jiff::SignedDuration::try_from(delay).ok()?;
    (ready_at > now).then(|| Duration::try_from(ready_at.duration_since(now)).ok()).flatten()
}

/// When a finished pod finished: its containers' last exit, else its Ready condition turning False, else
/// its deletion or creation.
fn finish_time(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod.status.as_ref();
    let containers = status
        .into_iter()
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    let not_ready = || {
        status?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    };
    containers
        .or_else(not_ready)
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests;
