//! Hollow nodes: Node objects with no machine behind them, for tests and benchmarks of the control plane.
//! Each registers its Node (Ready, with the capacity given), renews its Lease in `kube-node-lease` as a
//! kubelet does, reports every pod bound to it Running and Ready at once (no containers), and completes the
//! deletion of its pods as a kubelet does once their containers stop. Like a kubelet, it reports a node Ready
//! again when someone else (the node lifecycle controller) marked it otherwise, and a pod Ready again.
//!
//! A pod annotated [`EXIT_CODE`] runs for [`RUN_SECONDS`] (default 1) and then ends: Succeeded on 0,
//! Failed otherwise (as with restartPolicy Never), so Jobs can be tested without containers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;

/// How often a node renews its Lease (the kubelet's default).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// The Lease duration a node declares (the kubelet's default).
pub const LEASE_SECONDS: i32 = 40;

/// The annotation that makes a hollow pod end, with this exit code.
pub const EXIT_CODE: &str = "hollow.keel.dev/exit-code";
/// The annotation giving how long a pod with [`EXIT_CODE`] runs, in seconds.
pub const RUN_SECONDS: &str = "hollow.keel.dev/run-seconds";

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("cannot register node {node}: {source}")]
    Register { node: String, source: kube::Error },
}

#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// Nodes are named `{prefix}{i}`, i from 0.
    pub prefix: String,
    pub count: usize,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// Spread over this many zones (label topology.kubernetes.io/zone=zone-{i % zones}); 0: no zone label.
    pub zones: usize,
    /// Labels every node carries.
    pub labels: BTreeMap<String, String>,
    /// Leave pods alone (bound, never Running), as kube-scheduler's benchmarks have no kubelets.
    pub ignore_pods: bool,
}

impl Default for HollowConfig {
    fn default() -> HollowConfig {
        HollowConfig {
            prefix: "hollow-".into(),
            count: 3,
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
            zones: 0,
            labels: BTreeMap::new(),
            ignore_pods: false,
        }
    }
}

impl HollowConfig {
    pub fn names(&self) -> Vec<String> {
        (0..self.count).map(|i| format!("{}{i}", self.prefix)).collect()
    }
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn node_object(config: &HollowConfig, i: usize) -> Node {
    let name = format!("{}{i}", config.prefix);
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("keel.dev/hollow".into(), "true".into());
    if config.zones > 0 {
        labels.insert("topology.kubernetes.io/zone".into(), format!("zone-{}", i % config.zones));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": node_status(config),
    }))
    .expect("a hollow node is a valid Node")
}

fn node_status(config: &HollowConfig) -> serde_json::Value {
    let resources = json!({"cpu": config.cpu, "memory": config.memory, "pods": config.pods});
    let t = now();
    json!({
        "capacity": resources, "allocatable": resources,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hollow node is posting ready status",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "hollow",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "hollow",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "hollow",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
        ],
        "addresses": [{"type": "Hostname", "address": "hollow"}],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "hollow",
            "containerRuntimeVersion": "hollow://0", "kubeletVersion": "v1.33.0", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Registers the nodes (creating or re-reporting them Ready), then keeps their Leases and pods until
/// cancelled.
pub async fn run(client: Client, config: HollowConfig) -> Result<(), HollowError> {
    register(&client, &config).await?;
    tracing::info!(nodes = config.count, prefix = %config.prefix, "hollow nodes registered");
    let names: Arc<HashSet<String>> = Arc::new(config.names().into_iter().collect());
    let pods = async {
        if config.ignore_pods {
            std::future::pending().await
        } else {
            run_pods(client.clone(), names.clone()).await
        }
    };
    tokio::select! {
        () = renew_leases(client.clone(), config.names()) => Ok(()),
        () = keep_ready(client.clone(), config.clone(), names.clone()) => Ok(()),
        () = pods => Ok(()),
    }
}

pub async fn register(client: &Client, config: &HollowConfig) -> Result<(), HollowError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let results: Vec<Result<(), HollowError>> = futures::stream::iter(0..config.count)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let node = node_object(config, i);
                let name = node.name_any();
                // Registration is retried, as the kubelet retries it: a master lost or a connection closed
                // while the cluster starts is not a reason for the node to give up.
                let mut wait = Duration::from_millis(200);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let attempt = async {
                        match nodes.create(&PostParams::default(), &node).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(e) => return Err(e),
                        }
                        // Report the status again: a node that comes back is Ready again.
                        let patch = json!({"status": node_status(config)});
                        nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
                    };
                    match attempt.await {
                        Ok(()) => return Ok(()),
                        Err(e) if attempts < 20 && transient(&e) => {
                            tracing::debug!(node = %name, error = %e, "registering: trying again");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(2));
                        }
                        Err(source) => return Err(HollowError::Register { node: name.clone(), source }),
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// An error worth trying again: no answer, or the API's 429 and 5xx.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// Reports a node of ours Ready again when its Ready condition says otherwise, as a kubelet's next status
/// update does.
async fn keep_ready(client: Client, config: HollowConfig, names: Arc<HashSet<String>>) {
    let nodes: Api<Node> = Api::all(client);
    let mut events = watcher::watcher(nodes.clone(), watcher::Config::default()).boxed();
    while let Some(e) = events.next().await {
        let node = match e {
            Ok(Event::Apply(n) | Event::InitApply(n)) => n,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "hollow node watch failed; it retries");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let name = node.name_any();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || !names.contains(&name) {
            continue;
        }
        let patch = json!({"status": node_status(&config)});
        if let Err(e) = nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(node = %name, error = %e, "cannot report a node ready again");
        }
    }
}

async fn renew_leases(client: Client, names: Vec<String>) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(RENEW_INTERVAL);
    loop {
        tick.tick().await;
        futures::stream::iter(names.iter())
            .for_each_concurrent(32, |name| {
                let leases = leases.clone();
                async move {
                    // Tried again soon after a failure (200 ms, doubling), as the kubelet does.
                    let mut retry = Duration::from_millis(200);
                    for attempt in 1..=5 {
                        match renew(&leases, name).await {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::debug!(node = %name, attempt, error = %e, "lease renewal failed");
                                tokio::time::sleep(retry).await;
                                retry *= 2;
                            }
                        }
                    }
                }
            })
            .await;
    }
}

async fn renew(leases: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now()});
    match leases.patch(node, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": spec,
            }))
            .expect("a node lease is a valid Lease");
            leases.create(&PostParams::default(), &lease).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Watches every pod and acts for those bound to these nodes: Running and Ready once, deleted for good once
/// marked for deletion.
async fn run_pods(client: Client, names: Arc<HashSet<String>>) {
    let limit = Arc::new(Semaphore::new(64));
    let mut started: HashSet<String> = HashSet::new();
    let mut ip = 0u32;
    let mut events = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).boxed();
    while let Some(e) = events.next().await {
        let pod = match e {
            Ok(Event::Apply(p) | Event::InitApply(p)) => p,
            Ok(Event::Delete(p)) => {
                started.remove(&p.uid().unwrap_or_default());
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "hollow pod watch failed; it retries");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if !names.contains(&node) {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let permit = limit.clone().acquire_owned().await.expect("the semaphore stays open");
        if pod.metadata.deletion_timestamp.is_some() {
            tokio::spawn(async move {
                let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }
                    .preconditions(kube::api::Preconditions { uid: Some(uid), resource_version: None });
                if let Err(e) = api.delete(&name, &params).await {
                    tracing::debug!(pod = %name, error = %e, "cannot finish a pod's deletion");
                }
                drop(permit);
            });
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if (phase == "Running" && ready) || matches!(phase, "Succeeded" | "Failed") || !started.insert(uid) {
            continue;
        }
        ip = ip.wrapping_add(1);
        let pod_ip = format!("10.{}.{}.{}", 200 + (ip >> 16) % 50, (ip >> 8) & 255, ip & 255);
        let status = running_status(&pod, &pod_ip);
        let annotations = pod.annotations();
        let exit: Option<i32> = annotations.get(EXIT_CODE).and_then(|c| c.parse().ok());
        let run_for = annotations.get(RUN_SECONDS).and_then(|s| s.parse().ok()).unwrap_or(1.0f64).max(0.0);
        let ended = exit.map(|code| ended_status(&pod, &status, code));
        tokio::spawn(async move {
            report(&api, &name, json!({"status": status}), "running").await;
            drop(permit);
            if let Some(ended) = ended {
                tokio::time::sleep(Duration::from_secs_f64(run_for)).await;
                report(&api, &name, json!({"status": ended}), "ended").await;
            }
        });
    }
}

/// Patches a pod's status, trying again (for a while) when the API refuses or fails it for now (a write
/// that raced others to the end of its retries, a master failing over), as a kubelet's status sync does:
/// a pod reported once and lost would never become ready.
async fn report(api: &Api<Pod>, name: &str, patch: serde_json::Value, what: &str) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=10 {
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => {
                tracing::debug!(pod = %name, attempt, error = %e, "cannot report a pod {what}; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A status per container of `pod`, running (`live`) or not, in the `state` made from its container ID.
fn container_statuses(pod: &Pod, live: bool, state: impl Fn(&str) -> serde_json::Value) -> Vec<serde_json::Value> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .map(|c| {
            let id = format!("hollow://{}", c.name);
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": id, "ready": live, "started": live, "restartCount": 0, "state": state(&id),
            })
        })
        .collect()
}

fn running_status(pod: &Pod, pod_ip: &str) -> serde_json::Value {
    let t = now();
    let containers = container_statuses(pod, true, |_| json!({"running": {"startedAt": t}}));
    let condition =
        |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    json!({
        "phase": "Running",
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"),
                       condition("ContainersReady"), condition("PodScheduled")],
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": t,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    })
}

/// The status of a pod whose containers all exited with `code` (restartPolicy Never).
fn ended_status(pod: &Pod, running: &serde_json::Value, code: i32) -> serde_json::Value {
    let t = now();
    let started = running["startTime"].clone();
    let (phase, reason) = if code == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
    let containers = container_statuses(pod, false, |id| {
        json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": t,
                              "containerID": id}})
    });
    let condition = |type_: &str, status: &str| {
        json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": t,
               "reason": if status == "False" { json!("PodCompleted") } else { serde_json::Value::Null }})
    };
    json!({
        "phase": phase,
        "conditions": [condition("PodReadyToStartContainers", "False"), condition("Initialized", "True"),
                       condition("Ready", "False"), condition("ContainersReady", "False"),
                       condition("PodScheduled", "True")],
        "containerStatuses": containers,
    })
}
