//! The pod sync decision, pure: from the pod as the API has it, what containerd has for it and what the
//! agent remembers, the actions that move the node towards the pod (sandbox, starts with back-off, kills,
//! removals, finishing a deletion) and the status to report. No IO and no clock (`now` is an argument), so
//! every rule is unit-tested here; the worker carries the actions out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A container's task as containerd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// The container record exists with no task started (an interrupted start).
    Created,
    Running,
    Exited {
        code: i32,
        finished_at: Option<Timestamp>,
    },
    Unknown,
}

/// One containerd container of a pod (one attempt of one of its containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub created_at: Option<Timestamp>,
    pub state: ContainerState,
    /// The kernel's OOM killer ended it (its memory cgroup counted a kill).
    pub oom_killed: bool,
    /// Its probes' results so far (see [`crate::probe`]).
    pub probes: ProbeResults,
}

/// The results of a running container's probes: None = no result yet (or no such probe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeResults {
    pub startup: Option<bool>,
    pub liveness: Option<bool>,
    pub readiness: Option<bool>,
}

impl ObservedContainer {
    fn stopped(&self) -> bool {
        matches!(self.state, ContainerState::Exited { .. } | ContainerState::Created)
    }
}

/// What the node has for a pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The pod's namespaces exist.
    pub sandbox: bool,
    pub containers: Vec<ObservedContainer>,
    /// For each image a container names: its digest when containerd has it.
    pub images: HashMap<String, Option<String>>,
}

/// What the agent remembers about a pod between passes (lost on restart, which costs at most a repeated
/// signal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// Containers being stopped (by id): since when (their preStop hook, then SIGTERM; SIGKILL once the
    /// grace period is over).
    pub stopping: BTreeMap<String, Timestamp>,
    /// Containers whose last start failed (by name): retried with the restart back-off.
    pub start_errors: BTreeMap<String, StartError>,
    /// Images this pod pulled (pull policy Always pulls once per pod and agent run).
    pub pulled: BTreeSet<String>,
    /// Images whose last pull failed (ErrImagePull): retried with the back-off (ImagePullBackOff).
    pub pull_errors: BTreeMap<String, StartError>,
}

/// A start that failed (the image's command does not exist, a bad spec, containerd refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError {
    /// The waiting reason: CreateContainerConfigError (a missing ConfigMap or Secret, a bad volume) or
    /// RunContainerError (containerd or runc refused).
    pub reason: String,
    pub message: String,
    pub at: Timestamp,
    /// Failures in a row.
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The first restart back-off (the kubelet's 10 s), doubled on each restart up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { backoff_base: Duration::from_secs(10), backoff_max: Duration::from_secs(300) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub fn number(self) -> u32 {
        match self {
            Signal::Term => 15,
            Signal::Kill => 9,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make the pod's namespaces.
    EnsureSandbox,
    /// Pull this image (as the pod names it) from its registry.
    PullImage {
        image: String,
    },
    /// Create and start attempt `attempt` of this container of the spec.
    Start {
        container: String,
        attempt: u32,
    },
    /// Stop a running container gracefully: its preStop hook, then SIGTERM (SIGKILL follows as a `Kill`
    /// once `grace` is over).
    Stop {
        id: String,
        container: String,
        grace: Duration,
        reason: StopReason,
    },
    Kill {
        id: String,
        signal: Signal,
    },
    /// Remove a stopped container (task, record, snapshot).
    Remove {
        id: String,
    },
    TeardownSandbox,
    /// Everything is gone: delete the pod object for good (grace 0, uid precondition).
    FinishDeletion,
}

/// Why a container is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The pod is being deleted.
    Deletion,
    /// Its liveness probe failed: it is restarted per the restart policy.
    Liveness,
    /// Its startup probe failed.
    Startup,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: PodStatus,
    pub memory: Memory,
    /// Look again after this long even if nothing happens (a back-off or a grace period ends).
    pub requeue_after: Option<Duration>,
}

/// The restart back-off before attempt `attempt + 1`, after attempt `attempt` ran from `started` to
/// `finished`: none for the first restart, then base × 2^(n-1) up to the maximum; a container that ran for
/// twice the maximum starts over (the kubelet's shape).
pub fn backoff(settings: &Settings, attempt: u32, ran: Option<Duration>) -> Duration {
    if attempt == 0 || ran.is_some_and(|r| r >= settings.backoff_max * 2) {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    settings.backoff_base.saturating_mul(factor).min(settings.backoff_max)
}

fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// The grace period of a container stopped because `probe` failed: the probe's own, else the pod's.
fn probe_grace(pod: &Pod, probe: Option<&Probe>) -> Duration {
    let seconds = probe
        .and_then(|p| p.termination_grace_period_seconds)
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// One step of stopping container `id` gracefully: `Stop` (preStop, SIGTERM) first, SIGKILL once `grace` is
/// over. Returns when to look again.
fn stop_step(
    id: &str,
    container: &str,
    grace: Duration,
    reason: StopReason,
    memory: &mut Memory,
    now: Timestamp,
    actions: &mut Vec<Action>,
) -> Duration {
    match memory.stopping.get(id).copied() {
        None => {
            memory.stopping.insert(id.to_string(), now);
            actions.push(Action::Stop { id: id.to_string(), container: container.to_string(), grace, reason });
            grace.max(Duration::from_millis(100))
        }
        Some(from) if now >= from + grace => {
            actions.push(Action::Kill { id: id.to_string(), signal: Signal::Kill });
            Duration::from_secs(1)
        }
        Some(from) => since(from + grace, now),
    }
}

fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// What one spec container is doing, for the status and the phase.
struct ContainerView {
    status: ContainerStatus,
    running: bool,
    /// Terminated for good (no restart will come), with this exit code.
    done: Option<i32>,
}

pub fn plan(pod: &Pod, observed: &Observed, memory: &Memory, settings: &Settings, now: Timestamp) -> Plan {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let mut actions = Vec::new();
    let mut memory = memory.clone();
    let mut requeue: Option<Duration> = None;
    let mut wake = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));

    let mut by_name: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
    for c in &observed.containers {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    for attempts in by_name.values_mut() {
        attempts.sort_by_key(|c| std::cmp::Reverse(c.attempt));
    }
    let deleting = pod.metadata.deletion_timestamp.is_some();
    // Stops in progress are remembered only for containers still running.
    memory.stopping.retain(|id, _| observed.containers.iter().any(|c| &c.id == id && !c.stopped()));
    let already_terminal =
        matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"));

    // Containers no longer in the spec, and attempts older than the previous one, go.
    for (name, attempts) in &by_name {
        let in_spec = spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == *name);
        for (i, c) in attempts.iter().enumerate() {
            if in_spec && i < 2 && !deleting {
                continue;
            }
            if deleting {
                continue; // handled below, after the grace period
            }
            if c.stopped() {
                actions.push(Action::Remove { id: c.id.clone() });
            } else {
                actions.push(Action::Kill { id: c.id.clone(), signal: Signal::Kill });
            }
        }
    }

    let frozen = deleting || already_terminal;
    let mut starts = Vec::new();
    let mut pulls = BTreeSet::new();
    // A start waits for its image (a pull, or its back-off) and out the back-off of a failed start;
    // otherwise the decision becomes actions.
    let mut decide = |container: &Container, mut view: (ContainerView, Option<Next>), actions: &mut Vec<Action>| {
        if matches!(view.1, Some(Next::Start(_) | Next::Retry(..))) {
            match image_gate(container, observed, &memory, settings, now) {
                Gate::Go => {}
                Gate::Pull(reason, message) => {
                    view.0.status.state = Some(waiting_state(reason, message));
                    pulls.insert(container.image.clone().unwrap_or_default());
                    view.1 = None;
                }
                Gate::Wait(reason, message, after) => {
                    view.0.status.state = Some(waiting_state(reason, Some(message)));
                    view.1 = Some(Next::WakeIn(after));
                }
            }
        }
        if let (Some(Next::Start(_) | Next::Retry(..)), Some(failed)) =
            (&view.1, memory.start_errors.get(&container.name))
        {
            let retry_at = failed.at + backoff(settings, failed.count, None);
            if now < retry_at {
                view.0.status.state = Some(K8sState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(failed.reason.clone()),
                        message: Some(failed.message.clone()),
                    }),
                    ..Default::default()
                });
                view.1 = Some(Next::WakeIn(since(retry_at, now)));
            }
        }
        match view.1 {
            Some(Next::Start(attempt)) => starts.push(Action::Start { container: container.name.clone(), attempt }),
            Some(Next::Retry(attempt, id)) => {
                actions.push(Action::Remove { id });
                starts.push(Action::Start { container: container.name.clone(), attempt });
            }
            Some(Next::WakeIn(d)) => wake(d),
            Some(Next::Stop { id, reason, grace }) => {
                wake(stop_step(&id, &container.name, grace, reason, &mut memory, now, actions));
            }
            None => {}
        }
        view.0
    };
    let attempts_of = |name: &str| by_name.get(name).cloned().unwrap_or_default();
    let image_of = |c: &Container| observed.images.get(&c.image.clone().unwrap_or_default()).cloned().flatten();

    // Init containers, one at a time, each to a successful exit; once an app container exists they are done.
    let init_policy = if policy == "Never" { "Never" } else { "OnFailure" };
    let past_init = spec.containers.iter().any(|c| by_name.contains_key(c.name.as_str()));
    let mut initialized = true;
    let mut init_failed = false;
    let mut init_views = Vec::new();
    for container in spec.init_containers.iter().flatten() {
        let attempts = attempts_of(&container.name);
        if !initialized {
            init_views.push(waiting_view(container, "PodInitializing"));
            continue;
        }
        let view = view_container(
            pod,
            container,
            &attempts,
            image_of(container),
            init_policy,
            settings,
            now,
            frozen || past_init,
        );
        let mut view = if past_init { view.0 } else { decide(container, view, &mut actions) };
        match view.done {
            Some(0) => view.status.ready = true,
            Some(_) if !past_init => {
                init_failed = true;
                initialized = false;
            }
            Some(_) => {}
            None if past_init => {}
            None => initialized = false,
        }
        init_views.push(view);
    }

    let mut views = Vec::with_capacity(spec.containers.len());
    for container in &spec.containers {
        if !initialized {
            views.push(waiting_view(container, "PodInitializing"));
            continue;
        }
        let view = view_container(
            pod,
            container,
            &attempts_of(&container.name),
            image_of(container),
            &policy,
            settings,
            now,
            frozen,
        );
        views.push(decide(container, view, &mut actions));
    }

    if deleting {
        let live: Vec<&ObservedContainer> = observed.containers.iter().filter(|c| !c.stopped()).collect();
        if !live.is_empty() {
            for c in live {
                wake(stop_step(&c.id, &c.name, grace(pod), StopReason::Deletion, &mut memory, now, &mut actions));
            }
        } else {
            actions.extend(observed.containers.iter().map(|c| Action::Remove { id: c.id.clone() }));
            if observed.sandbox {
                actions.push(Action::TeardownSandbox);
            }
            actions.push(Action::FinishDeletion);
        }
    } else {
        actions.extend(pulls.into_iter().map(|image| Action::PullImage { image }));
        if !starts.is_empty() && !observed.sandbox {
            actions.push(Action::EnsureSandbox);
        }
        actions.extend(starts);
    }

    let init = Init { views: init_views, initialized, failed: init_failed };
    let status = pod_status(pod, &views, &init, now);
    Plan { actions, status, memory, requeue_after: requeue }
}

/// Whether a container's image lets it start.
enum Gate {
    Go,
    /// Pull it first; the container waits with this reason.
    Pull(&'static str, Option<String>),
    /// Wait this long (a pull back-off, or a policy that forbids pulling).
    Wait(&'static str, String, Duration),
}

/// The image rules of a start: `Never` needs the image present; `IfNotPresent` pulls it when absent;
/// `Always` pulls it once per pod and agent run. A failed pull is retried with the back-off.
fn image_gate(
    container: &Container,
    observed: &Observed,
    memory: &Memory,
    settings: &Settings,
    now: Timestamp,
) -> Gate {
    let image = container.image.clone().unwrap_or_default();
    let present = observed.images.get(&image).is_some_and(Option::is_some);
    let policy = container.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
    if policy == "Never" {
        if present {
            return Gate::Go;
        }
        let message = format!("Container image \"{image}\" is not present with pull policy of Never");
        return Gate::Wait("ErrImageNeverPull", message, Duration::from_secs(5));
    }
    if present && (policy != "Always" || memory.pulled.contains(&image)) {
        return Gate::Go;
    }
    match memory.pull_errors.get(&image) {
        None => Gate::Pull("ContainerCreating", None),
        Some(failed) => {
            let retry_at = failed.at + backoff(settings, failed.count, None);
            // Like the kubelet: ErrImagePull right after the failure (until the next sync, here a second),
            // ImagePullBackOff for the rest of the back-off.
            let shown_until = (failed.at + Duration::from_secs(1)).min(retry_at);
            if now < shown_until {
                Gate::Wait("ErrImagePull", failed.message.clone(), since(shown_until, now))
            } else if now < retry_at {
                Gate::Wait(
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\": {}", failed.message),
                    since(retry_at, now),
                )
            } else {
                Gate::Pull("ErrImagePull", Some(failed.message.clone()))
            }
        }
    }
}

fn waiting_state(reason: &str, message: Option<String>) -> K8sState {
    K8sState { waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }), ..Default::default() }
}

enum Next {
    Start(u32),
    /// Stop this running container (a probe failed).
    Stop {
        id: String,
        reason: StopReason,
        grace: Duration,
    },
    /// Remove this half-made attempt and start it again.
    Retry(u32, String),
    WakeIn(Duration),
}

#[allow(clippy::too_many_arguments)]
fn view_container(
    pod: &Pod,
    container: &Container,
    attempts: &[&ObservedContainer],
    image_digest: Option<String>,
    policy: &str,
    settings: &Settings,
    now: Timestamp,
    frozen: bool,
) -> (ContainerView, Option<Next>) {
    let image = container.image.clone().unwrap_or_default();
    let image_id = image_digest.as_ref().map(|d| format!("{}@{d}", crate::image::normalize_reference(&image)));
    let mut status = ContainerStatus {
        name: container.name.clone(),
        image: image.clone(),
        image_id: image_id.clone().unwrap_or_default(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        ..Default::default()
    };
    let waiting = |reason: &str, message: Option<String>| K8sState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    };
    let Some(latest) = attempts.first() else {
        if frozen {
            status.state = Some(waiting("ContainerCreating", None));
            return (ContainerView { status, running: false, done: None }, None);
        }
        status.state = Some(waiting("ContainerCreating", None));
        return (ContainerView { status, running: false, done: None }, Some(Next::Start(0)));
    };
    let container_id = format!("containerd://{}", latest.id);
    status.container_id = Some(container_id.clone());
    status.restart_count = latest.attempt as i32;
    let terminated = |c: &ObservedContainer| -> Option<K8sState> {
        let ContainerState::Exited { code, finished_at } = &c.state else { return None };
        Some(K8sState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(format!("containerd://{}", c.id)),
                exit_code: *code,
                reason: Some(
                    if c.oom_killed {
                        "OOMKilled"
                    } else if *code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .into(),
                ),
                started_at: c.created_at.map(Time),
                finished_at: finished_at.map(Time),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    if let Some(previous) = attempts.get(1) {
        status.last_state = terminated(previous);
    }
    match &latest.state {
        ContainerState::Running | ContainerState::Unknown => {
            status.state = Some(K8sState {
                running: Some(ContainerStateRunning { started_at: latest.created_at.map(Time) }),
                ..Default::default()
            });
            // A startup probe gates the others; a readiness probe gates Ready.
            let probes = &latest.probes;
            let started = container.startup_probe.is_none() || probes.startup == Some(true);
            status.started = Some(started);
            status.ready = started && (container.readiness_probe.is_none() || probes.readiness == Some(true));
            let failed = if probes.startup == Some(false) {
                Some((StopReason::Startup, container.startup_probe.as_ref()))
            } else if started && probes.liveness == Some(false) {
                Some((StopReason::Liveness, container.liveness_probe.as_ref()))
            } else {
                None
            };
            let next = failed.filter(|_| !frozen).map(|(reason, probe)| Next::Stop {
                id: latest.id.clone(),
                reason,
                grace: probe_grace(pod, probe),
            });
            (ContainerView { status, running: true, done: None }, next)
        }
        ContainerState::Created => {
            status.state = Some(waiting("ContainerCreating", None));
            let next = (!frozen).then(|| Next::Retry(latest.attempt, latest.id.clone()));
            (ContainerView { status, running: false, done: None }, next)
        }
        ContainerState::Exited { code, finished_at } => {
            if frozen || !restarts(policy, *code) {
                status.state = terminated(latest);
                return (ContainerView { status, running: false, done: Some(*code) }, None);
            }
            let finished = finished_at.unwrap_or(now);
            let ran = latest.created_at.map(|s| since(finished, s));
            let delay = backoff(settings, latest.attempt, ran);
            let ready_at = finished + delay;
            status.last_state = terminated(latest);
            if now >= ready_at {
                status.state = Some(waiting("ContainerCreating", None));
                return (ContainerView { status, running: true, done: None }, Some(Next::Start(latest.attempt + 1)));
            }
            let message = format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                humanize(delay),
                container.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.uid.as_deref().unwrap_or_default(),
            );
            status.state = Some(waiting("CrashLoopBackOff", Some(message)));
            (ContainerView { status, running: true, done: None }, Some(Next::WakeIn(since(ready_at, now))))
        }
    }
}

/// A container that cannot start yet (init containers are still running).
fn waiting_view(container: &Container, reason: &str) -> ContainerView {
    let status = ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        started: Some(false),
        state: Some(K8sState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    ContainerView { status, running: false, done: None }
}

/// Where the pod's init containers are.
struct Init {
    views: Vec<ContainerView>,
    initialized: bool,
    /// One failed for good (restartPolicy Never).
    failed: bool,
}

/// A duration as Go prints it for the back-off message ("10s", "1m20s", "5m0s").
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

fn pod_status(pod: &Pod, views: &[ContainerView], init: &Init, now: Timestamp) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let all_done = !views.is_empty() && views.iter().all(|v| v.done.is_some());
    let phase = if matches!(old.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        old.phase.clone().unwrap_or_default()
    } else if init.failed {
        "Failed".into()
    } else if !init.initialized {
        "Pending".into()
    } else if all_done {
        if views.iter().all(|v| v.done == Some(0)) {
            "Succeeded".into()
        } else {
            "Failed".into()
        }
    } else if views.iter().any(|v| v.running) || views.iter().any(|v| v.done.is_some()) {
        "Running".into()
    } else {
        "Pending".into()
    };
    let ready = !views.is_empty() && views.iter().all(|v| v.status.ready) && phase == "Running";
    let condition = |type_: &str, status: bool, reason: Option<&str>| {
        let status = if status { "True" } else { "False" }.to_string();
        let previous = old.conditions.iter().flatten().find(|c| c.type_ == type_);
        let since = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
        PodCondition {
            type_: type_.into(),
            status,
            last_transition_time: since,
            reason: reason.map(Into::into),
            ..Default::default()
        }
    };
    let not_ready = (!ready).then_some(if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    });
    let conditions = vec![
        condition("PodScheduled", true, None),
        condition("Initialized", init.initialized, (!init.initialized).then_some("ContainersNotInitialized")),
        condition("ContainersReady", ready, not_ready),
        condition("Ready", ready, not_ready),
    ];
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        container_statuses: Some(views.iter().map(|v| v.status.clone()).collect()),
        init_container_statuses: (!init.views.is_empty())
            .then(|| init.views.iter().map(|v| v.status.clone()).collect()),
        start_time: old.start_time.clone().or(Some(Time(now))),
        host_ip: old.host_ip.clone(),
        host_ips: old.host_ips.clone(),
        pod_ip: old.pod_ip.clone(),
        pod_ips: old.pod_ips.clone(),
        qos_class: old.qos_class.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "keel.test/busybox:1"}]},
        });
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    fn observed(containers: Vec<ObservedContainer>) -> Observed {
        Observed {
            sandbox: true,
            containers,
            images: HashMap::from([("keel.test/busybox:1".to_string(), Some("sha256:abc".to_string()))]),
        }
    }

    fn c(attempt: u32, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: crate::names::container_id("u1", "app", attempt),
            pod_uid: "u1".into(),
            name: "app".into(),
            attempt,
            image: "keel.test/busybox:1".into(),
            created_at: Some(t(0)),
            state,
            oom_killed: false,
            probes: ProbeResults::default(),
        }
    }

    fn exited(code: i32, at: i64) -> ContainerState {
        ContainerState::Exited { code, finished_at: Some(t(at)) }
    }

    fn state(p: &Plan) -> K8sState {
        p.status.container_statuses.as_ref().unwrap()[0].state.clone().unwrap()
    }

    fn condition(p: &Plan, type_: &str) -> String {
        p.status.conditions.as_ref().unwrap().iter().find(|c| c.type_ == type_).unwrap().status.clone()
    }

    #[test]
    fn a_new_pod_gets_its_sandbox_then_its_container() {
        let mut o = observed(vec![]);
        o.sandbox = false;
        let p = plan(&pod(json!({})), &o, &Memory::default(), &Settings::default(), t(0));
        assert_eq!(p.actions, vec![Action::EnsureSandbox, Action::Start { container: "app".into(), attempt: 0 }]);
        assert_eq!(p.status.phase.as_deref(), Some("Pending"));
        assert_eq!(state(&p).waiting.unwrap().reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(condition(&p, "Ready"), "False");
    }

    #[test]
    fn a_running_container_makes_the_pod_running_and_ready() {
        let p = plan(
            &pod(json!({})),
            &observed(vec![c(0, ContainerState::Running)]),
            &Memory::default(),
            &Settings::default(),
            t(5),
        );
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.status.phase.as_deref(), Some("Running"));
        let s = &p.status.container_statuses.as_ref().unwrap()[0];
        assert!(s.ready && s.started == Some(true));
        assert_eq!(s.image_id, "keel.test/busybox:1@sha256:abc");
        assert_eq!(s.container_id.as_deref(), Some(&*format!("containerd://{}", c(0, ContainerState::Running).id)));
        assert_eq!(condition(&p, "Ready"), "True");
        assert_eq!(condition(&p, "ContainersReady"), "True");
    }

    #[test]
    fn a_missing_image_is_reported_and_nothing_starts() {
        let mut o = observed(vec![]);
        o.images.clear();
        let p = plan(
            &pod(
                json!({"spec": {"containers": [{"name": "app", "image": "keel.test/busybox:1", "imagePullPolicy": "Never"}]}}),
            ),
            &o,
            &Memory::default(),
            &Settings::default(),
            t(0),
        );
        assert!(p.actions.is_empty());
        assert_eq!(state(&p).waiting.unwrap().reason.as_deref(), Some("ErrImageNeverPull"));
    }

    #[test]
    fn absent_images_are_pulled_with_back_off_after_failures() {
        let s = Settings::default();
        let mut absent = observed(vec![]);
        absent.images.insert("keel.test/busybox:1".into(), None);
        let p = pod(json!({}));
        let first = plan(&p, &absent, &Memory::default(), &s, t(0));
        assert_eq!(first.actions, vec![Action::PullImage { image: "keel.test/busybox:1".into() }]);
        assert_eq!(state(&first).waiting.unwrap().reason.as_deref(), Some("ContainerCreating"));
        // A failed pull: ImagePullBackOff until the back-off is over, then another pull (ErrImagePull).
        let failed = StartError { reason: "ErrImagePull".into(), message: "not found".into(), at: t(0), count: 1 };
        let memory =
            Memory { pull_errors: BTreeMap::from([("keel.test/busybox:1".to_string(), failed)]), ..Default::default() };
        let just_failed = plan(&p, &absent, &memory, &s, t(0));
        assert!(just_failed.actions.is_empty());
        assert_eq!(state(&just_failed).waiting.unwrap().reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(just_failed.requeue_after, Some(Duration::from_secs(1)));
        let waiting = plan(&p, &absent, &memory, &s, t(4));
        assert!(waiting.actions.is_empty());
        let w = state(&waiting).waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ImagePullBackOff"));
        assert!(w.message.unwrap().contains("Back-off pulling image \"keel.test/busybox:1\""));
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(6)));
        let again = plan(&p, &absent, &memory, &s, t(10));
        assert_eq!(again.actions, vec![Action::PullImage { image: "keel.test/busybox:1".into() }]);
        assert_eq!(state(&again).waiting.unwrap().reason.as_deref(), Some("ErrImagePull"));
        // Always pulls a present image once per pod; then it starts.
        let always = pod(
            json!({"spec": {"containers": [{"name": "app", "image": "keel.test/busybox:1", "imagePullPolicy": "Always"}]}}),
        );
        let present = observed(vec![]);
        assert_eq!(
            plan(&always, &present, &Memory::default(), &s, t(0)).actions,
            vec![Action::PullImage { image: "keel.test/busybox:1".into() }]
        );
        let pulled = Memory { pulled: BTreeSet::from(["keel.test/busybox:1".to_string()]), ..Default::default() };
        assert_eq!(
            plan(&always, &present, &pulled, &s, t(0)).actions,
            vec![Action::Start { container: "app".into(), attempt: 0 }]
        );
    }

    #[test]
    fn crashes_restart_with_a_growing_back_off() {
        let s = Settings::default();
        assert_eq!(backoff(&s, 0, None), Duration::ZERO);
        assert_eq!(backoff(&s, 1, None), Duration::from_secs(10));
        assert_eq!(backoff(&s, 2, None), Duration::from_secs(20));
        assert_eq!(backoff(&s, 9, None), Duration::from_secs(300));
        assert_eq!(backoff(&s, 5, Some(Duration::from_secs(601))), Duration::ZERO);
        // The first exit restarts at once.
        let p = plan(&pod(json!({})), &observed(vec![c(0, exited(1, 2))]), &Memory::default(), &s, t(2));
        assert_eq!(p.actions, vec![Action::Start { container: "app".into(), attempt: 1 }]);
        // The second waits 10 s: CrashLoopBackOff, with the last exit in lastState.
        let o = observed(vec![c(0, exited(1, 2)), c(1, exited(1, 4))]);
        let p = plan(&pod(json!({})), &o, &Memory::default(), &s, t(5));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(9)));
        let st = &p.status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(st.restart_count, 1);
        let waiting = st.state.clone().unwrap().waiting.unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert!(waiting
            .message
            .unwrap()
            .starts_with("back-off 10s restarting failed container=app pod=web_default(u1)"));
        assert_eq!(st.last_state.clone().unwrap().terminated.unwrap().exit_code, 1);
        assert_eq!(p.status.phase.as_deref(), Some("Running"));
        let p = plan(&pod(json!({})), &o, &Memory::default(), &s, t(14));
        assert_eq!(p.actions, vec![Action::Start { container: "app".into(), attempt: 2 }]);
        // Attempts older than the previous one are removed.
        let o = observed(vec![c(0, exited(1, 2)), c(1, exited(1, 4)), c(2, ContainerState::Running)]);
        let p = plan(&pod(json!({})), &o, &Memory::default(), &s, t(20));
        assert_eq!(p.actions, vec![Action::Remove { id: c(0, exited(1, 2)).id }]);
    }

    #[test]
    fn restart_policies_decide_the_phase() {
        let s = Settings::default();
        let never = pod(json!({"spec": {"restartPolicy": "Never"}}));
        let p = plan(&never, &observed(vec![c(0, exited(0, 3))]), &Memory::default(), &s, t(4));
        assert!(p.actions.is_empty());
        assert_eq!(p.status.phase.as_deref(), Some("Succeeded"));
        assert_eq!(state(&p).terminated.unwrap().reason.as_deref(), Some("Completed"));
        assert_eq!(condition(&p, "Ready"), "False");
        let p = plan(&never, &observed(vec![c(0, exited(2, 3))]), &Memory::default(), &s, t(4));
        assert_eq!(p.status.phase.as_deref(), Some("Failed"));
        assert_eq!(state(&p).terminated.unwrap().reason.as_deref(), Some("Error"));
        let oom = ObservedContainer { oom_killed: true, ..c(0, exited(137, 3)) };
        let p = plan(&never, &observed(vec![oom]), &Memory::default(), &s, t(4));
        assert_eq!(state(&p).terminated.unwrap().reason.as_deref(), Some("OOMKilled"));
        let on_failure = pod(json!({"spec": {"restartPolicy": "OnFailure"}}));
        let p = plan(&on_failure, &observed(vec![c(0, exited(0, 3))]), &Memory::default(), &s, t(4));
        assert_eq!(p.status.phase.as_deref(), Some("Succeeded"));
        let p = plan(&on_failure, &observed(vec![c(0, exited(3, 3))]), &Memory::default(), &s, t(4));
        assert_eq!(p.actions, vec![Action::Start { container: "app".into(), attempt: 1 }]);
    }

    #[test]
    fn a_failed_start_is_retried_with_back_off() {
        let s = Settings::default();
        let mut memory = Memory::default();
        memory.start_errors.insert(
            "app".into(),
            StartError {
                reason: "RunContainerError".into(),
                message: "exec: \"nope\": not found".into(),
                at: t(0),
                count: 1,
            },
        );
        let p = plan(&pod(json!({})), &observed(vec![]), &memory, &s, t(3));
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(7)));
        let w = state(&p).waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("RunContainerError"));
        assert!(w.message.unwrap().contains("not found"));
        let p = plan(&pod(json!({})), &observed(vec![]), &memory, &s, t(10));
        assert_eq!(p.actions, vec![Action::Start { container: "app".into(), attempt: 0 }]);
    }

    fn with_init(extra: serde_json::Value) -> Pod {
        let mut p = json!({"spec": {"initContainers": [
            {"name": "init-a", "image": "keel.test/busybox:1"}, {"name": "init-b", "image": "keel.test/busybox:1"}]}});
        json_patch::merge(&mut p, &extra);
        pod(p)
    }

    fn named(name: &str, attempt: u32, state: ContainerState) -> ObservedContainer {
        ObservedContainer {
            id: crate::names::container_id("u1", name, attempt),
            name: name.into(),
            ..c(attempt, state)
        }
    }

    #[test]
    fn init_containers_run_in_order_before_the_app() {
        let s = Settings::default();
        let p0 = plan(&with_init(json!({})), &observed(vec![]), &Memory::default(), &s, t(0));
        assert_eq!(p0.actions, vec![Action::Start { container: "init-a".into(), attempt: 0 }]);
        assert_eq!(p0.status.phase.as_deref(), Some("Pending"));
        assert_eq!(condition(&p0, "Initialized"), "False");
        let app = &p0.status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(app.state.clone().unwrap().waiting.unwrap().reason.as_deref(), Some("PodInitializing"));
        let inits = p0.status.init_container_statuses.as_ref().unwrap();
        assert_eq!(inits.len(), 2);
        assert_eq!(inits[1].state.clone().unwrap().waiting.unwrap().reason.as_deref(), Some("PodInitializing"));
        // init-a running: nothing else starts.
        let p1 = plan(
            &with_init(json!({})),
            &observed(vec![named("init-a", 0, ContainerState::Running)]),
            &Memory::default(),
            &s,
            t(1),
        );
        assert!(p1.actions.is_empty(), "{:?}", p1.actions);
        // init-a done: init-b starts.
        let done_a = named("init-a", 0, exited(0, 2));
        let p2 = plan(&with_init(json!({})), &observed(vec![done_a.clone()]), &Memory::default(), &s, t(2));
        assert_eq!(p2.actions, vec![Action::Start { container: "init-b".into(), attempt: 0 }]);
        assert!(p2.status.init_container_statuses.as_ref().unwrap()[0].ready);
        // init-b fails: restarted (OnFailure semantics), with back-off after the first.
        let p3 = plan(
            &with_init(json!({})),
            &observed(vec![done_a.clone(), named("init-b", 0, exited(1, 3))]),
            &Memory::default(),
            &s,
            t(3),
        );
        assert_eq!(p3.actions, vec![Action::Start { container: "init-b".into(), attempt: 1 }]);
        // Both done: the app starts and the pod is Initialized.
        let done_b = named("init-b", 0, exited(0, 4));
        let p4 =
            plan(&with_init(json!({})), &observed(vec![done_a.clone(), done_b.clone()]), &Memory::default(), &s, t(4));
        assert_eq!(p4.actions, vec![Action::Start { container: "app".into(), attempt: 0 }]);
        assert_eq!(condition(&p4, "Initialized"), "True");
        // With restartPolicy Never a failed init container fails the pod.
        let never = with_init(json!({"spec": {"restartPolicy": "Never"}}));
        let p5 = plan(&never, &observed(vec![named("init-a", 0, exited(2, 1))]), &Memory::default(), &s, t(2));
        assert!(p5.actions.is_empty(), "{:?}", p5.actions);
        assert_eq!(p5.status.phase.as_deref(), Some("Failed"));
        // Once the app container exists, init containers are not run again.
        let p6 =
            plan(&with_init(json!({})), &observed(vec![c(0, ContainerState::Running)]), &Memory::default(), &s, t(9));
        assert!(p6.actions.is_empty(), "{:?}", p6.actions);
        assert_eq!(p6.status.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn an_interrupted_start_is_redone() {
        let p = plan(
            &pod(json!({})),
            &observed(vec![c(0, ContainerState::Created)]),
            &Memory::default(),
            &Settings::default(),
            t(1),
        );
        assert_eq!(
            p.actions,
            vec![
                Action::Remove { id: c(0, ContainerState::Created).id },
                Action::Start { container: "app".into(), attempt: 0 }
            ]
        );
    }

    #[test]
    fn deletion_terms_then_kills_after_the_grace_period_then_cleans_up() {
        let s = Settings::default();
        let deleting =
            pod(json!({"metadata": {"deletionTimestamp": "2023-11-14T22:13:20Z", "deletionGracePeriodSeconds": 5}}));
        let running = observed(vec![c(0, ContainerState::Running)]);
        let id = c(0, ContainerState::Running).id;
        let p = plan(&deleting, &running, &Memory::default(), &s, t(10));
        assert_eq!(
            p.actions,
            vec![Action::Stop {
                id: id.clone(),
                container: "app".into(),
                grace: Duration::from_secs(5),
                reason: StopReason::Deletion
            }]
        );
        assert_eq!(p.memory.stopping.get(&id), Some(&t(10)));
        assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));
        let p2 = plan(&deleting, &running, &p.memory, &s, t(12));
        assert!(p2.actions.is_empty());
        assert_eq!(p2.requeue_after, Some(Duration::from_secs(3)));
        let p3 = plan(&deleting, &running, &p.memory, &s, t(15));
        assert_eq!(p3.actions, vec![Action::Kill { id: id.clone(), signal: Signal::Kill }]);
        // Nothing restarts while deleting; once stopped, everything goes and the object is deleted.
        let stopped = observed(vec![c(0, exited(137, 15))]);
        let p4 = plan(&deleting, &stopped, &p.memory, &s, t(16));
        assert_eq!(p4.actions, vec![Action::Remove { id }, Action::TeardownSandbox, Action::FinishDeletion]);
        // A pod deleted before it ran only finishes.
        let mut empty = observed(vec![]);
        empty.sandbox = false;
        let p5 = plan(&deleting, &empty, &Memory::default(), &s, t(1));
        assert_eq!(p5.actions, vec![Action::FinishDeletion]);
    }

    fn probed(probes: serde_json::Value) -> Pod {
        pod(json!({"spec": {"terminationGracePeriodSeconds": 7, "containers": [
            serde_json::Value::Object({
                let mut c = json!({"name": "app", "image": "keel.test/busybox:1"});
                json_patch::merge(&mut c, &probes);
                c.as_object().unwrap().clone()
            })
        ]}}))
    }

    fn with_probes(probes: ProbeResults) -> Observed {
        observed(vec![ObservedContainer { probes, ..c(0, ContainerState::Running) }])
    }

    #[test]
    fn readiness_gates_ready_and_startup_gates_started() {
        let s = Settings::default();
        let p = probed(json!({"readinessProbe": {"exec": {"command": ["true"]}}}));
        let not_yet = plan(&p, &with_probes(ProbeResults::default()), &Memory::default(), &s, t(1));
        let status = &not_yet.status.container_statuses.as_ref().unwrap()[0];
        assert!(!status.ready);
        assert_eq!(status.started, Some(true));
        assert_eq!(condition(&not_yet, "Ready"), "False");
        let ready = ProbeResults { readiness: Some(true), ..Default::default() };
        let now_ready = plan(&p, &with_probes(ready), &Memory::default(), &s, t(2));
        assert!(now_ready.status.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(condition(&now_ready, "Ready"), "True");

        let p = probed(json!({"startupProbe": {"exec": {"command": ["true"]}}}));
        let starting = plan(&p, &with_probes(ProbeResults::default()), &Memory::default(), &s, t(1));
        let status = &starting.status.container_statuses.as_ref().unwrap()[0];
        assert_eq!((status.started, status.ready), (Some(false), false));
        // Liveness says nothing while the startup probe has not succeeded.
        let early = ProbeResults { liveness: Some(false), ..Default::default() };
        assert!(plan(&p, &with_probes(early), &Memory::default(), &s, t(1)).actions.is_empty());
        let started = ProbeResults { startup: Some(true), ..Default::default() };
        let status = plan(&p, &with_probes(started), &Memory::default(), &s, t(2)).status;
        assert_eq!(status.container_statuses.unwrap()[0].started, Some(true));
    }

    #[test]
    fn a_failed_liveness_probe_stops_the_container_gracefully() {
        let s = Settings::default();
        let p = probed(json!({"livenessProbe": {"exec": {"command": ["true"]}}}));
        let id = c(0, ContainerState::Running).id;
        let failed = with_probes(ProbeResults { liveness: Some(false), ..Default::default() });
        let first = plan(&p, &failed, &Memory::default(), &s, t(10));
        assert_eq!(
            first.actions,
            vec![Action::Stop {
                id: id.clone(),
                container: "app".into(),
                grace: Duration::from_secs(7),
                reason: StopReason::Liveness
            }]
        );
        assert_eq!(first.requeue_after, Some(Duration::from_secs(7)));
        // Not again while it stops; SIGKILL after the grace period.
        assert!(plan(&p, &failed, &first.memory, &s, t(12)).actions.is_empty());
        let late = plan(&p, &failed, &first.memory, &s, t(17));
        assert_eq!(late.actions, vec![Action::Kill { id: id.clone(), signal: Signal::Kill }]);
        // Once it exited, it is restarted (restartPolicy Always) and the stop is forgotten.
        let exited_ = observed(vec![c(0, exited(137, 18))]);
        let after = plan(&p, &exited_, &late.memory, &s, t(18));
        assert_eq!(after.actions, vec![Action::Start { container: "app".into(), attempt: 1 }]);
        assert!(after.memory.stopping.is_empty());
        // A probe's own grace period wins over the pod's.
        let own = probed(json!({"livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 2}}));
        let stop = plan(&own, &failed, &Memory::default(), &s, t(10));
        assert!(matches!(stop.actions[0], Action::Stop { grace, .. } if grace == Duration::from_secs(2)));
        // A failed startup probe stops it too.
        let startup = probed(json!({"startupProbe": {"exec": {"command": ["true"]}}}));
        let failed = with_probes(ProbeResults { startup: Some(false), ..Default::default() });
        let stop = plan(&startup, &failed, &Memory::default(), &s, t(10));
        assert!(matches!(stop.actions[0], Action::Stop { reason: StopReason::Startup, .. }));
    }

    #[test]
    fn conditions_keep_their_transition_times() {
        let mut running = pod(json!({}));
        let first = plan(
            &running,
            &observed(vec![c(0, ContainerState::Running)]),
            &Memory::default(),
            &Settings::default(),
            t(1),
        );
        running.status = Some(first.status.clone());
        let again = plan(
            &running,
            &observed(vec![c(0, ContainerState::Running)]),
            &Memory::default(),
            &Settings::default(),
            t(9),
        );
        assert_eq!(first.status, again.status);
    }
}
