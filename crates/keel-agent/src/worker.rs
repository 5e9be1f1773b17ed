//! One task per pod: observe (containerd, the pod's namespaces, images), decide ([`crate::sync::plan`]), act,
//! report the status. Woken by the pod watch, by containerd's exit events and by its own timers; a pod that
//! left the API (or that the agent finds only on the node) is cleaned away and its task ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, HostIP, Pod, PodIP, PodStatus, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::env::{self, Sources};
use crate::events::{Recorder, Type};
use crate::names::{self, PodRef};
use crate::pod_network::{self, NetworkError, PodNetwork};
use crate::prober::Probers;
use crate::runtime::{ContainerRuntime, ImageInfo, Registry, RuntimeError};
use crate::spec::{self, SandboxPaths};
use crate::sync::{self, Action, Memory, Observed, StartError, StopReason};
use crate::{handlers, logs, sandbox, volumes, Config};

/// How long a postStart hook may run before it counts as failed (the kubelet sets no bound; a hook that
/// never ends would hold the pod's worker forever).
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// State shared by the pod workers.
pub struct Shared {
    pub client: Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub config: Config,
    /// The pods bound to this node, by uid, as the watch last saw them.
    pub pods: Mutex<HashMap<String, Pod>>,
    /// Each pod worker's wake-up, by pod uid.
    pub workers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Which pod each container belongs to (for containerd's exit events).
    pub containers: Mutex<HashMap<String, String>>,
    /// Images resolved in containerd, by normalized name.
    images: Mutex<HashMap<String, ImageInfo>>,
    /// The pods' namespaces and their place on the pod network.
    network: Arc<dyn PodNetwork>,
    pub events: Recorder,
    pub probers: Probers,
    registry: Registry,
    /// One pull at a time per image (pods sharing an image wait for the first pull).
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Service-account tokens of the pods' projected volumes, by (pod uid, `<volume>/<path>`): the token
    /// and when to ask for a new one.
    tokens: Mutex<HashMap<(String, String), Token>>,
}

/// A service-account token and when to ask for a new one.
type Token = (Vec<u8>, std::time::Instant);

impl Shared {
    pub fn new(
        client: Client,
        runtime: Arc<dyn ContainerRuntime>,
        network: Arc<dyn PodNetwork>,
        config: Config,
    ) -> Shared {
        Shared {
            network,
            events: Recorder::new(client.clone(), config.node_name.clone()),
            probers: Probers::default(),
            registry: Registry::new(config.insecure_registries.clone()),
            pulling: Mutex::default(),
            tokens: Mutex::default(),
            client,
            runtime,
            config,
            pods: Mutex::default(),
            workers: Mutex::default(),
            containers: Mutex::default(),
            images: Mutex::default(),
        }
    }

    /// Wakes the worker of `uid`, starting one if there is none.
    pub fn wake(self: &Arc<Self>, uid: &str) {
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(notify) = workers.get(uid) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(uid.to_string(), notify.clone());
        tokio::spawn(run(self.clone(), uid.to_string(), notify));
    }

    pub fn wake_all(self: &Arc<Self>) {
        let uids: Vec<String> = self.workers.lock().expect("workers lock").keys().cloned().collect();
        for uid in uids {
            self.wake(&uid);
        }
    }

    fn sandbox_paths(&self, uid: &str) -> SandboxPaths {
        pod_network::paths(&self.config.data_dir, uid)
    }

    /// The pod's network namespace file.
    pub fn sandbox_net(&self, uid: &str) -> PathBuf {
        self.sandbox_paths(uid).net
    }

    /// The pod's first address, when it has a pod network address.
    pub fn pod_ip(&self, uid: &str) -> Option<std::net::IpAddr> {
        pod_ips(self, uid).ok().flatten()?.first()?.parse().ok()
    }

    /// Pulls an image (as a pod names it). Pulls of one image take turns: a pod that waited for another's
    /// pull pulls again, which costs the manifests only (layers present are not fetched).
    async fn pull(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        let name = crate::image::normalize_reference(reference);
        let lock = self.pulling.lock().expect("pulling lock").entry(name.clone()).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let info = self.runtime.pull(&self.registry, &name).await?;
        self.images.lock().expect("images lock").insert(name, info.clone());
        Ok(info)
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let name = crate::image::normalize_reference(reference);
        if let Some(info) = self.images.lock().expect("images lock").get(&name) {
            return Ok(Some(info.clone()));
        }
        let info = self.runtime.image(&name).await?;
        if let Some(info) = &info {
            self.images.lock().expect("images lock").insert(name, info.clone());
        }
        Ok(info)
    }
}

async fn run(shared: Arc<Shared>, uid: String, notify: Arc<Notify>) {
    let mut memory = Memory::default();
    let mut reported: Option<PodStatus> = None;
    let mut refreshed = tokio::time::Instant::now();
    loop {
        let pod = shared.pods.lock().expect("pods lock").get(&uid).cloned();
        if let Some(pod) = &pod {
            if refreshed.elapsed() >= shared.config.resync {
                refreshed = tokio::time::Instant::now();
                refresh_volumes(&shared, pod).await;
            }
        }
        let wait = match pod {
            Some(pod) => match sync_pod(&shared, &pod, &mut memory, &mut reported).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(pod = %pod_name(&pod), error = %e, "pod sync failed; retrying");
                    Some(Duration::from_secs(1))
                }
            },
            None => match clean_up(&shared, &uid).await {
                Ok(true) => {
                    // Gone from the API and from the node: the worker ends, unless the pod came back meanwhile.
                    let mut workers = shared.workers.lock().expect("workers lock");
                    if !shared.pods.lock().expect("pods lock").contains_key(&uid) {
                        workers.remove(&uid);
                        return;
                    }
                    None
                }
                Ok(false) => Some(Duration::from_secs(1)),
                Err(e) => {
                    tracing::warn!(pod_uid = %uid, error = %e, "cannot clean up a pod; retrying");
                    Some(Duration::from_secs(1))
                }
            },
        };
        let wait = wait.unwrap_or(shared.config.resync).min(shared.config.resync);
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// The pod's init containers, then its app containers.
fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.into_iter().flat_map(|s| &s.containers))
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Network(#[from] NetworkError),
}

/// The pod's addresses on the pod network (none without one or before the pod is attached).
fn pod_ips(shared: &Shared, uid: &str) -> Result<Option<Vec<String>>, NetworkError> {
    Ok(shared.network.addresses(uid)?.map(|ips| ips.iter().map(|ip| ip.to_string()).collect()))
}

async fn observe(shared: &Arc<Shared>, pod: &Pod) -> Result<(Observed, HashMap<String, ImageInfo>), SyncError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut containers = shared.runtime.containers(Some(&uid)).await?;
    for c in &mut containers {
        if matches!(c.state, sync::ContainerState::Exited { code, .. } if code != 0) {
            c.oom_killed = oom_killed(&names::cgroup_path(&shared.config.node_name, &c.id));
        }
    }
    {
        let mut known = shared.containers.lock().expect("containers lock");
        for c in &containers {
            known.insert(c.id.clone(), uid.clone());
        }
    }
    // The probes of the running app containers run; those of any other container stop.
    let app = |name: &str| pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == name));
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let probed =
        |c: &sync::ObservedContainer| !deleting && c.state == sync::ContainerState::Running && app(&c.name).is_some();
    shared.probers.retain(&uid, |id| containers.iter().any(|c| c.id == id && probed(c)));
    for c in &mut containers {
        if probed(c) {
            let spec = app(&c.name).expect("probed containers are in the spec");
            c.probes = shared.probers.ensure(shared, pod, spec, c);
        }
    }
    let mut images = HashMap::new();
    let mut infos = HashMap::new();
    let references: Vec<String> = all_containers(pod).map(|c| c.image.clone().unwrap_or_default()).collect();
    for reference in references {
        let info = shared.image(&reference).await?;
        images.insert(reference.clone(), info.as_ref().map(|i| i.digest.clone()));
        if let Some(info) = info {
            infos.insert(reference, info);
        }
    }
    // The sandbox is whole once its namespaces exist and, with a pod network, it is attached.
    let sandbox = shared.network.ready(&uid)?;
    Ok((Observed { sandbox, containers, images }, infos))
}

/// One sync of a pod: up to a few rounds of observe → plan → act, then the status. Returns when to look again.
async fn sync_pod(
    shared: &Arc<Shared>,
    api_pod: &Pod,
    memory: &mut Memory,
    reported: &mut Option<PodStatus>,
) -> Result<Option<Duration>, SyncError> {
    let mut requeue = None;
    let uid = api_pod.metadata.uid.clone().unwrap_or_default();
    let mut pod = api_pod.clone();
    for _round in 0..3 {
        // The pod's IPs come from its attachment (the API may not have them yet): for the status, the
        // downward API and /etc/hosts.
        if let Some(ips) = pod_ips(shared, &uid)? {
            let status = pod.status.get_or_insert_with(Default::default);
            status.pod_ip = ips.first().cloned();
            status.pod_ips = Some(ips.into_iter().map(|ip| PodIP { ip }).collect());
        }
        let pod = &pod;
        let (observed, images) = observe(shared, pod).await?;
        let plan = sync::plan(pod, &observed, memory, &shared.config.settings, jiff::Timestamp::now());
        *memory = plan.memory.clone();
        requeue = plan.requeue_after;
        let mut status = as_stored(plan.status.clone());
        status.host_ip = Some(shared.config.node_ip.clone());
        status.host_ips = Some(vec![HostIP { ip: shared.config.node_ip.clone() }]);
        let finishing = plan.actions.contains(&Action::FinishDeletion);
        if !finishing && reported.as_ref() != Some(&status) && api_pod.status.as_ref() != Some(&status) {
            back_off_events(shared, pod, reported.as_ref(), &status);
            report(shared, pod, &status).await?;
            *reported = Some(status);
        }
        if plan.actions.is_empty() {
            break;
        }
        for action in plan.actions {
            act(shared, pod, &images, memory, action).await?;
        }
        if finishing {
            return Ok(None);
        }
    }
    Ok(requeue)
}

/// A status as the API stores it (times to the second), so that one equal to the stored status compares
/// equal to it and is not sent again.
fn as_stored(status: PodStatus) -> PodStatus {
    serde_json::to_value(&status).and_then(serde_json::from_value).unwrap_or(status)
}

/// A Warning for each container that went into CrashLoopBackOff since the last report.
fn back_off_events(shared: &Shared, pod: &Pod, before: Option<&PodStatus>, now: &PodStatus) {
    let backing_off = |s: &k8s_openapi::api::core::v1::ContainerStatus| {
        s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
            == Some("CrashLoopBackOff")
    };
    for status in now.container_statuses.iter().flatten().filter(|s| backing_off(s)) {
        let was = before
            .and_then(|b| b.container_statuses.as_ref())
            .and_then(|l| l.iter().find(|s| s.name == status.name))
            .is_some_and(|s| backing_off(s) && s.restart_count == status.restart_count);
        if !was {
            let message = format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                status.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.uid.as_deref().unwrap_or_default()
            );
            shared.events.pod(pod, Some(&status.name), Type::Warning, "BackOff", message);
        }
    }
}

async fn report(shared: &Shared, pod: &Pod, status: &PodStatus) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let patch = serde_json::json!({"status": status});
    match api
        .patch_status(pod.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: the watch brings the news.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn act(
    shared: &Arc<Shared>,
    pod: &Pod,
    images: &HashMap<String, ImageInfo>,
    memory: &mut Memory,
    action: Action,
) -> Result<(), SyncError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod_name(pod);
    match action {
        Action::EnsureSandbox => {
            shared.network.ensure(&uid, &crate::names::pod_hostname(pod)).await?;
            tracing::debug!(pod = %name, "sandbox made");
        }
        Action::Start { container, attempt } => match start(shared, pod, images, &container, attempt).await {
            Ok(id) => {
                memory.start_errors.remove(&container);
                shared.containers.lock().expect("containers lock").insert(id.clone(), uid.clone());
                tracing::info!(pod = %name, container, attempt, id, "container started");
                let image = all_containers(pod).find(|c| c.name == container).and_then(|c| c.image.clone());
                let image = image.unwrap_or_default();
                let events = &shared.events;
                let normal =
                    |reason: &str, message: String| events.pod(pod, Some(&container), Type::Normal, reason, message);
                if !memory.pulled.contains(&image) {
                    normal("Pulled", format!("Container image \"{image}\" already present on machine"));
                }
                normal("Created", format!("Created container: {container}"));
                normal("Started", format!("Started container {container}"));
                post_start(shared, pod, &container, &id).await;
            }
            Err((reason, message)) => {
                tracing::warn!(pod = %name, container, attempt, reason, error = %message, "cannot start a container");
                shared.events.pod(pod, Some(&container), Type::Warning, "Failed", format!("Error: {message}"));
                let id = names::container_id(&uid, &container, attempt);
                if let Err(e) = shared.runtime.remove(&id).await {
                    tracing::warn!(pod = %name, id, error = %e, "cannot remove a container that failed to start");
                }
                let count = memory.start_errors.get(&container).map_or(0, |e| e.count) + 1;
                memory.start_errors.insert(
                    container,
                    StartError { reason: reason.into(), message, at: jiff::Timestamp::now(), count },
                );
            }
        },
        Action::PullImage { image } => {
            let events = &shared.events;
            events.pod(pod, None, Type::Normal, "Pulling", format!("Pulling image \"{image}\""));
            let began = std::time::Instant::now();
            match shared.pull(&image).await {
                Ok(info) => {
                    memory.pull_errors.remove(&image);
                    memory.pulled.insert(image.clone());
                    let took = began.elapsed().as_secs_f64();
                    tracing::info!(pod = %name, image, digest = info.digest, took, "image pulled");
                    let message = format!("Successfully pulled image \"{image}\" in {took:.3}s");
                    events.pod(pod, None, Type::Normal, "Pulled", message);
                }
                // The agent goes on: the container waits (ErrImagePull, then ImagePullBackOff) and the pull
                // is tried again after the back-off.
                Err(e) => {
                    tracing::warn!(pod = %name, image, error = %e, "cannot pull an image");
                    let count = memory.pull_errors.get(&image).map_or(0, |e| e.count) + 1;
                    let message = e.to_string();
                    events.pod(
                        pod,
                        None,
                        Type::Warning,
                        "Failed",
                        format!("Failed to pull image \"{image}\": {message}"),
                    );
                    let failed =
                        StartError { reason: "ErrImagePull".into(), message, at: jiff::Timestamp::now(), count };
                    memory.pull_errors.insert(image, failed);
                }
            }
        }
        Action::Stop { id, container, grace, reason } => {
            let message = match reason {
                StopReason::Deletion => format!("Stopping container {container}"),
                StopReason::Liveness => format!("Container {container} failed liveness probe, will be restarted"),
                StopReason::Startup => format!("Container {container} failed startup probe, will be restarted"),
            };
            shared.events.pod(pod, Some(&container), Type::Normal, "Killing", message);
            tracing::info!(pod = %name, id, container, ?reason, "stopping a container");
            let hook = all_containers(pod)
                .find(|c| c.name == container)
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.clone());
            match hook {
                None => shared.runtime.kill(&id, sync::Signal::Term.number()).await?,
                // The hook may take (up to) the grace period: the worker goes on meanwhile; SIGKILL still
                // comes when the grace period is over.
                Some(hook) => {
                    let (shared, pod) = (shared.clone(), pod.clone());
                    tokio::spawn(async move { pre_stop_then_term(&shared, &pod, &container, &id, &hook, grace).await });
                }
            }
        }
        Action::Kill { id, signal } => {
            tracing::info!(pod = %name, id, ?signal, "killing a container");
            shared.runtime.kill(&id, signal.number()).await?;
        }
        Action::Remove { id } => {
            shared.runtime.remove(&id).await?;
            shared.containers.lock().expect("containers lock").remove(&id);
            if let Err(e) = logs::remove_attempt(&shared.config.log_dir, pod, &id) {
                tracing::warn!(pod = %name, id, error = %e, "cannot remove a removed container's logs");
            }
        }
        Action::TeardownSandbox => shared.network.remove(&uid).await?,
        Action::FinishDeletion => {
            remove_pod_dirs(shared, &uid)?;
            let api: Api<Pod> =
                Api::namespaced(shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
            let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }
                .preconditions(Preconditions { uid: Some(uid.clone()), resource_version: None });
            match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
                Ok(_) => tracing::info!(pod = %name, "pod deleted"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Runs a container's postStart hook, right after the container started (the worker waits, as the kubelet
/// does: the container is not reported Running before its hook is done). A hook that fails kills the
/// container, which then restarts per the pod's restart policy.
async fn post_start(shared: &Shared, pod: &Pod, container: &str, id: &str) {
    let spec = all_containers(pod).find(|c| c.name == container);
    let Some((spec, hook)) = spec.and_then(|c| Some((c, c.lifecycle.as_ref()?.post_start.as_ref()?))) else {
        return;
    };
    if let Err(message) = handlers::lifecycle(shared, pod, spec, id, hook, POST_START_TIMEOUT).await {
        tracing::warn!(pod = %pod_name(pod), container, error = %message, "postStart hook failed; killing the container");
        // As the kubelet's, the event leaves the handler's output out (it may hold secrets).
        shared.events.pod(pod, Some(container), Type::Warning, "FailedPostStartHook", "PostStartHook failed".into());
        if let Err(e) = shared.runtime.kill(id, sync::Signal::Kill.number()).await {
            tracing::warn!(pod = %pod_name(pod), id, error = %e, "cannot kill a container whose postStart hook failed");
        }
    }
}

/// Runs a container's preStop hook (bounded by the grace period), then sends it SIGTERM.
async fn pre_stop_then_term(
    shared: &Shared,
    pod: &Pod,
    container: &str,
    id: &str,
    hook: &k8s_openapi::api::core::v1::LifecycleHandler,
    grace: Duration,
) {
    let spec = all_containers(pod).find(|c| c.name == container).cloned().unwrap_or_default();
    let grace = grace.max(Duration::from_secs(1));
    if let Err(message) = handlers::lifecycle(shared, pod, &spec, id, hook, grace).await {
        tracing::warn!(pod = %pod_name(pod), container, error = %message, "preStop hook failed");
        // As the kubelet's, the event leaves the handler's output out (it may hold secrets).
        shared.events.pod(pod, Some(container), Type::Warning, "FailedPreStopHook", "PreStopHook failed".into());
    }
    if let Err(e) = shared.runtime.kill(id, sync::Signal::Term.number()).await {
        tracing::warn!(pod = %pod_name(pod), id, error = %e, "cannot signal a container");
    }
}

const CONFIG_ERROR: &str = "CreateContainerConfigError";
const RUN_ERROR: &str = "RunContainerError";

/// Creates and starts one attempt of a container; the error is the waiting reason and message for the
/// container's status.
async fn start(
    shared: &Shared,
    pod: &Pod,
    images: &HashMap<String, ImageInfo>,
    container_name: &str,
    attempt: u32,
) -> Result<String, (&'static str, String)> {
    let config_error = |m: String| (CONFIG_ERROR, m);
    let container = all_containers(pod)
        .find(|c| c.name == container_name)
        .ok_or_else(|| config_error(format!("no container {container_name} in the pod's spec")))?;
    let image = images
        .get(container.image.as_deref().unwrap_or_default())
        .ok_or_else(|| (RUN_ERROR, format!("image {:?} is not present", container.image)))?;
    let pod_ref = pod_ref(pod);
    let pod_dir = names::pod_dir(&shared.config.data_dir, &pod_ref.uid);
    let sources = fetch_sources(shared, pod, container).await.map_err(|e| (RUN_ERROR, e.to_string()))?;
    let pod_ip =
        pod_ips(shared, &pod_ref.uid).map_err(|e| (RUN_ERROR, e.to_string()))?.and_then(|ips| ips.first().cloned());
    // The address is attached by now, though the pod copy may predate it (the downward API needs it).
    let mut pod = pod.clone();
    if let Some(ip) = &pod_ip {
        pod.status.get_or_insert_with(Default::default).pod_ip = Some(ip.clone());
    }
    let pod = &pod;
    volumes::prepare(pod, &pod_dir, &sources, pod_ip.as_deref(), shared.config.dns.as_ref()).map_err(config_error)?;
    let extras = spec::Extras {
        env: env::resolve(pod, container, &sources).map_err(config_error)?,
        mounts: volumes::container_mounts(pod, container, &pod_dir).map_err(config_error)?,
    };
    let id = names::container_id(&pod_ref.uid, container_name, attempt);
    let spec = spec::container_spec(
        pod,
        container,
        &image.config,
        &extras,
        &shared.sandbox_paths(&pod_ref.uid),
        &names::cgroup_path(&shared.config.node_name, &id),
    )
    .map_err(|e| config_error(e.to_string()))?;
    let log = names::log_path(&shared.config.log_dir, &pod_ref, container_name, attempt);
    let run_error = |m: String| (RUN_ERROR, m);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| run_error(format!("cannot make the log directory {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| run_error(format!("cannot open the log file {}: {e}", log.display())))?;
    let stdio = match &shared.config.container_logger {
        Some(program) => logs::writer::binary_uri(
            program,
            &logs::writer::Spec {
                path: log.clone(),
                max_bytes: shared.config.log_max_bytes,
                max_files: shared.config.log_max_files,
            },
        ),
        None => log.display().to_string(),
    };
    let labels = names::container_labels(&pod_ref, container_name, attempt);
    shared.runtime.create_start(&id, labels, image, &spec, &stdio).await.map_err(|e| run_error(e.to_string()))?;
    Ok(id)
}

/// Whether the OOM killer killed a process of the container's cgroup (read while the stopped task still has
/// its cgroup: runc removes it when the task is deleted). cgroup v1's `memory.oom_control`, or v2's
/// `memory.events`.
fn oom_killed(cgroup: &str) -> bool {
    let relative = cgroup.trim_start_matches('/');
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").join(relative).join("memory.oom_control");
    let v2 = std::path::Path::new("/sys/fs/cgroup").join(relative).join("memory.events");
    [v1, v2].iter().filter_map(|p| std::fs::read_to_string(p).ok()).any(|text| {
        text.lines().any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0)))
    })
}

/// The ConfigMaps and Secrets the pod's volumes and `container`'s environment name (those the API has).
async fn fetch_sources(shared: &Shared, pod: &Pod, container: &Container) -> Result<Sources, kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (mut config_maps, mut secrets) = volumes::referenced(pod);
    let (c, s) = env::referenced(container);
    config_maps.extend(c);
    secrets.extend(s);
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    let mut sources = Sources::default();
    if let Some(list) = &shared.config.services {
        sources.services = env::visible_services(pod, &(list.0)());
    }
    sources.tokens = service_account_tokens(shared, pod).await?;
    for claim in volumes::referenced_claims(pod) {
        let path = claim_volume(shared, namespace, &claim).await?;
        sources.claims.insert(claim, path);
    }
    let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
    for name in config_maps {
        if let Some(cm) = api.get_opt(&name).await? {
            let mut data: std::collections::BTreeMap<String, Vec<u8>> =
                cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            sources.config_maps.insert(name, data);
        }
    }
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
    for name in secrets {
        if let Some(secret) = api.get_opt(&name).await? {
            let mut data: std::collections::BTreeMap<String, Vec<u8>> =
                secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            sources.secrets.insert(name, data);
        }
    }
    Ok(sources)
}

/// Where a claim's volume is on this node (its directory made when the agent keeps it), or why the pod
/// cannot mount it yet (the claim missing or not bound, the volume not one this agent mounts).
async fn claim_volume(
    shared: &Shared,
    namespace: &str,
    claim: &str,
) -> Result<Result<std::path::PathBuf, String>, kube::Error> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), namespace);
    let Some(found) = claims.get_opt(claim).await? else {
        return Ok(Err(format!("persistentvolumeclaim {claim:?} not found")));
    };
    let volume = found.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
    let bound = found.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let (Some(volume), true) = (volume, bound) else {
        return Ok(Err(format!("persistentvolumeclaim {claim:?} is not bound yet")));
    };
    let volumes: Api<PersistentVolume> = Api::all(shared.client.clone());
    let Some(pv) = volumes.get_opt(&volume).await? else {
        return Ok(Err(format!("persistentvolume {volume:?} not found")));
    };
    Ok(volumes::persistent_volume_path(&pv, &shared.config.data_dir).and_then(|(path, make)| {
        if make {
            std::fs::create_dir_all(&path).map_err(|e| format!("volume directory {}: {e}", path.display()))?;
        }
        Ok(path)
    }))
}

/// The tokens of the pod's projected volumes, by `<volume>/<path>`: each asked for (bound to the pod) when
/// there is none yet or 80% of its life is gone, as the kubelet's token manager does.
async fn service_account_tokens(shared: &Shared, pod: &Pod) -> Result<HashMap<String, Vec<u8>>, kube::Error> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let mut out = HashMap::new();
    for (volume, path, audience, seconds) in volumes::token_sources(pod) {
        let key = format!("{volume}/{path}");
        let cached = shared.tokens.lock().expect("tokens lock").get(&(uid.clone(), key.clone())).cloned();
        if let Some((token, _)) = cached.filter(|(_, renew)| std::time::Instant::now() < *renew) {
            out.insert(key, token);
            continue;
        }
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": seconds,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": uid},
            },
        }))
        .expect("a TokenRequest");
        let api: Api<ServiceAccount> = Api::namespaced(shared.client.clone(), namespace);
        let answer: TokenRequest = api.create_subresource("token", &account, &Default::default(), &request).await?;
        let token = answer.status.map(|s| s.token.into_bytes()).unwrap_or_default();
        let renew = std::time::Instant::now() + Duration::from_secs((seconds.max(600) as u64) * 8 / 10);
        shared.tokens.lock().expect("tokens lock").insert((uid.clone(), key.clone()), (token.clone(), renew));
        out.insert(key, token);
    }
    Ok(out)
}

/// Brings a running pod's configMap and secret volumes up to date with the API (each swapped atomically,
/// only when its content changed), as the kubelet does periodically. A source that is gone or unreadable
/// leaves the files as they are.
async fn refresh_volumes(shared: &Shared, pod: &Pod) {
    let (config_maps, secrets) = volumes::referenced(pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_dir = names::pod_dir(&shared.config.data_dir, &uid);
    let tokens = volumes::token_sources(pod);
    if (config_maps.is_empty() && secrets.is_empty() && tokens.is_empty())
        || pod.metadata.deletion_timestamp.is_some()
        || !pod_dir.exists()
    {
        return;
    }
    let sources = match fetch_sources(shared, pod, &Container::default()).await {
        Ok(sources) => sources,
        Err(e) => {
            tracing::debug!(pod = %pod_name(pod), error = %e, "cannot read the pod's volume sources; files kept");
            return;
        }
    };
    let ip = shared.pod_ip(&uid).map(|ip| ip.to_string());
    if let Err(e) = volumes::prepare(pod, &pod_dir, &sources, ip.as_deref(), shared.config.dns.as_ref()) {
        tracing::debug!(pod = %pod_name(pod), error = %e, "cannot refresh the pod's volumes; files kept");
    }
}

/// The pod's directory and its log directory go once the pod is gone.
fn remove_pod_dirs(shared: &Shared, uid: &str) -> std::io::Result<()> {
    shared.tokens.lock().expect("tokens lock").retain(|(pod, _), _| pod != uid);
    let dir = names::pod_dir(&shared.config.data_dir, uid);
    // Namespace files and tmpfs emptyDirs are mounts: unmounted first.
    sandbox::unmount_under(&dir)?;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for log_dir in pod_log_dirs(&shared.config.log_dir, uid) {
        std::fs::remove_dir_all(log_dir)?;
    }
    Ok(())
}

fn pod_log_dirs(log_dir: &std::path::Path, uid: &str) -> Vec<PathBuf> {
    let suffix = format!("_{uid}");
    std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)))
        .collect()
}

/// Everything of a pod the API no longer has: its containers killed and removed, its namespaces and
/// directories gone. Returns true once nothing is left.
async fn clean_up(shared: &Shared, uid: &str) -> Result<bool, SyncError> {
    shared.probers.retain(uid, |_| false);
    let containers = shared.runtime.containers(Some(uid)).await?;
    let mut left = false;
    for c in &containers {
        match c.state {
            sync::ContainerState::Running | sync::ContainerState::Unknown => {
                shared.runtime.kill(&c.id, sync::Signal::Kill.number()).await?;
                left = true;
            }
            _ => {
                shared.runtime.remove(&c.id).await?;
                shared.containers.lock().expect("containers lock").remove(&c.id);
            }
        }
    }
    if left {
        return Ok(false);
    }
    if !containers.is_empty() {
        tracing::info!(
            pod_uid = uid,
            containers = containers.len(),
            "removed the containers of a pod the API no longer has"
        );
    }
    shared.network.remove(uid).await?;
    remove_pod_dirs(shared, uid)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
