//! The node lifecycle controller's loop. Reflectors keep nodes, node Leases (`kube-node-lease`) and pods;
//! every [`Settings::node_monitor_period`](crate::Settings) it looks at each node:
//!
//! - a node is heard from when its Lease's renewTime or its Ready heartbeat changes, timed by this
//!   controller's own clock (so clock skew between machines does not matter, and a newly elected leader gives
//!   every node a full grace period before judging it);
//! - [`node_health::plan`] then sets a silent node's conditions Unknown and its `unreachable` / `not-ready`
//!   taints (removed again once its kubelet reports Ready);
//! - pods on a node that is not Ready are marked not Ready (so Services stop sending them traffic), and pods
//!   on a node with NoExecute taints are deleted when [`node_health::eviction`] says so; their owners create
//!   replacements, which the scheduler places elsewhere.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::error::ignore_gone;
use crate::node_health::{self, Eviction};
use crate::{events, Error};

const COMPONENT: &str = "node-controller";

/// What the loop needs from [`crate::Settings`].
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub grace: Duration,
    pub period: Duration,
}

/// When a node was last heard from: what it showed, and when this controller saw that change.
struct Heard {
    mark: (Option<String>, Option<String>),
    at: Instant,
}

pub async fn run(client: Client, timing: Timing) -> Result<(), Error> {
    let nodes = reflect(Api::<Node>::all(client.clone()));
    let leases = reflect(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"));
    let pods = reflect(Api::<Pod>::all(client.clone()));
    for ready in [nodes.0.wait_until_ready().await, leases.0.wait_until_ready().await, pods.0.wait_until_ready().await]
    {
        ready.map_err(|e| Error::Invalid(format!("a reflector stopped before it listed: {e}")))?;
    }
    let ((nodes, _n), (leases, _l), (pods, _p)) = (nodes, leases, pods);
    let mut heard: HashMap<String, Heard> = HashMap::new();
    let mut acted: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(timing.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at = Instant::now();
        let now = jiff::Timestamp::now();
        let all_nodes = nodes.state();
        let by_name: HashMap<String, &Node> = all_nodes.iter().map(|n| (n.name_any(), n.as_ref())).collect();
        heard.retain(|name, _| by_name.contains_key(name));
        for node in &all_nodes {
            let name = node.name_any();
            let renewed = leases
                .get(&reflector::ObjectRef::new(&name).within("kube-node-lease"))
                .and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()));
            let heartbeat = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0.to_string());
            let mark = (renewed, heartbeat);
            let entry = heard.entry(name.clone()).or_insert_with(|| Heard { mark: mark.clone(), at });
            if entry.mark != mark {
                *entry = Heard { mark, at };
            }
            let plan = node_health::plan(node, at - entry.at, timing.grace, now);
            if !plan.is_empty() {
                if let Err(e) = apply(&client, node, plan).await {
                    tracing::warn!(node = %name, error = %e, "cannot update a node's health");
                }
            }
        }
        let all_pods = pods.state();
        if !acted.is_empty() {
            let current: HashSet<String> = all_pods.iter().map(|p| act_key(p)).collect();
            acted.retain(|key| current.contains(key));
        }
        for pod in &all_pods {
            let on = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
            let Some(node) = by_name.get(on) else { continue };
            let key = act_key(pod);
            if acted.contains(&key) {
                continue;
            }
            let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
            if node_health::eviction(pod, taints, now) == Eviction::Now {
                acted.insert(key);
                evict(&client, pod).await;
            } else if node_health::ready_status(node) != "True" && pod_ready(pod) {
                acted.insert(key);
                mark_not_ready(&client, pod, now).await;
            }
        }
    }
}

/// Aborts its task when dropped: a reflector lives only as long as the loop that reads it.
struct Feeding(tokio::task::JoinHandle<()>);

impl Drop for Feeding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A reflector's store, fed by a task of its own for as long as the returned guard lives.
fn reflect<K>(api: Api<K>) -> (Store<K>, Feeding)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| async {});
    (reader, Feeding(tokio::spawn(stream)))
}

/// A pod as of one version: acted on once until it changes.
fn act_key(pod: &Pod) -> String {
    format!("{}@{}", pod.uid().unwrap_or_default(), pod.resource_version().unwrap_or_default())
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn apply(client: &Client, node: &Node, plan: node_health::NodePlan) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let mut version = node.resource_version();
    if let Some(conditions) = plan.conditions {
        let patch = json!({"metadata": {"resourceVersion": version}, "status": {"conditions": conditions}});
        let updated = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        version = updated.resource_version();
        tracing::info!(node = %name, "node stopped reporting: Ready=Unknown");
        let message = format!("Node {name} status is now: NodeNotReady");
        events::record(client, COMPONENT, &updated, events::NORMAL, "NodeNotReady", &message).await;
    }
    if let Some(taints) = plan.taints {
        let patch = json!({"metadata": {"resourceVersion": version}, "spec": {"taints": taints}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!(node = %name, ?taints, "node taints updated");
    }
    Ok(())
}

async fn evict(client: &Client, pod: &Pod) {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params =
        DeleteParams::default().preconditions(kube::api::Preconditions { uid: pod.uid(), resource_version: None });
    match ignore_gone(api.delete(&name, &params).await.map(drop)) {
        Ok(()) => {
            tracing::info!(pod = %name, %namespace, "evicted from a tainted node");
            let message = format!("Marking for deletion Pod {namespace}/{name}");
            events::record(client, "taint-eviction-controller", pod, events::NORMAL, "TaintManagerEviction", &message)
                .await;
        }
        Err(e) => tracing::warn!(pod = %name, error = %e, "cannot evict a pod"),
    }
}

/// Kubernetes' MarkPodsNotReady: the pod's Ready condition goes False while its node is not Ready.
async fn mark_not_ready(client: &Client, pod: &Pod, now: jiff::Timestamp) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let ready = json!({"type": "Ready", "status": "False", "lastTransitionTime": now.to_string(),
                       "reason": "NodeNotReady", "message": "the node this pod runs on is not Ready"});
    let patch = json!({"status": {"conditions": [ready]}});
    if let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
        tracing::debug!(pod = %pod.name_any(), error = %e, "cannot mark a pod not ready");
    }
}
