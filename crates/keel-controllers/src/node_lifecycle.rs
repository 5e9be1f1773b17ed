//! The node lifecycle controller's loop. Reflectors keep nodes, node Leases (`kube-node-lease`) and pods;
//! every [`Settings::node_monitor_period`](crate::Settings) it looks at each node:
//!
//! - a node is heard from when its Lease's renewTime or its Ready heartbeat changes, timed by this
//!   controller's own clock (so clock skew between machines does not matter, and a newly elected leader gives
//!   every node a full grace period before judging it);
//! - [`node_health::silent_conditions`] sets a silent node's conditions Unknown;
//! - the zones' states ([`disruption::Zones`]) decide which not-Ready nodes get their NoExecute taint this
//!   pass (rate-limited per zone, none at all when every zone is fully disrupted, which also lifts those
//!   already set), and [`node_health::plan_taints`] sets the `unreachable` / `not-ready` taints (removed
//!   again once the kubelet reports Ready);
//! - pods on a node that is not Ready are marked not Ready (so Services stop sending them traffic), and pods
//!   on a node with NoExecute taints are deleted when [`node_health::eviction`] says so; their owners create
//!   replacements, which the scheduler places elsewhere.
//!
//! What the zones are in is published on a watch channel for the API server's `/readyz` and logged, with an
//! Event on the controllers' Lease, when it changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Taint};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::disruption::{self, DisruptionSettings, Transition, Zones};
use crate::error::ignore_gone;
use crate::node_health::{self, Eviction, NoExecute};
use crate::{events, Error};

const COMPONENT: &str = "node-controller";

/// The Lease the controllers' leader renews (kube-system/keel-controller-manager, kept by the API server):
/// where disruption events go, as they concern no single node.
const CONTROLLERS_LEASE: (&str, &str) = ("kube-system", "keel-controller-manager");

/// What the loop needs from [`crate::Settings`].
#[derive(Debug, Clone)]
pub struct Timing {
    pub grace: Duration,
    pub period: Duration,
    pub disruption: DisruptionSettings,
    /// Where the zones' summary goes (`/readyz`'s `node-lifecycle` line).
    pub status: Option<Arc<watch::Sender<String>>>,
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
    let mut zones = Zones::default();
    let mut tick = tokio::time::interval(timing.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let at = Instant::now();
        let now = jiff::Timestamp::now();
        let mut all_nodes: Vec<Node> = nodes.state().iter().map(|n| n.as_ref().clone()).collect();
        heard.retain(|name, _| all_nodes.iter().any(|n| n.name_any() == *name));

        // Conditions: a node silent too long goes Unknown.
        let mut ready: HashMap<String, String> = HashMap::new();
        for node in all_nodes.iter_mut() {
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
            let mut status = node_health::ready_status(node).to_string();
            if let Some(conditions) = node_health::silent_conditions(node, at - entry.at, timing.grace, now) {
                status = "Unknown".into();
                match set_conditions(&client, node, conditions).await {
                    Ok(updated) => *node = updated,
                    Err(e) => tracing::warn!(node = %name, error = %e, "cannot update a node's conditions"),
                }
            }
            ready.insert(name, status);
        }

        // Zones: their states, and which nodes get their NoExecute taint now.
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for node in all_nodes.iter().filter(|n| disruption::counted(n)) {
            let c = counts.entry(disruption::zone_key(node)).or_default();
            if ready[&node.name_any()] == "True" {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        for transition in zones.observe(&counts, &timing.disruption, at.into_std()) {
            if transition == Transition::ExitedMasterDisruption {
                // As kube-controller-manager: every node gets a fresh grace period.
                heard.values_mut().for_each(|h| h.at = at);
            }
            report(&client, &transition).await;
        }
        let lift = zones.master_disruption();
        let mut wanting: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if !lift {
            for node in &all_nodes {
                let name = node.name_any();
                if node_health::wants_no_execute(node_health::current_taints(node), &ready[&name]) {
                    wanting.entry(disruption::zone_key(node)).or_default().push(name);
                }
            }
        }
        let due = zones.due(&wanting, at.into_std());

        // Taints.
        let mut taints_of: HashMap<String, Vec<Taint>> = HashMap::new();
        for node in &all_nodes {
            let name = node.name_any();
            let mode = if lift {
                NoExecute::Lift
            } else if due.contains(&name) {
                NoExecute::Add
            } else {
                NoExecute::Wait
            };
            let current = node_health::current_taints(node);
            let mut taints = current.to_vec();
            if let Some(planned) = node_health::plan_taints(current, &ready[&name], now, mode) {
                match set_taints(&client, node, &planned).await {
                    Ok(()) => taints = planned,
                    Err(e) => tracing::warn!(node = %name, error = %e, "cannot update a node's taints"),
                }
            }
            taints_of.insert(name, taints);
        }
        if let Some(status) = &timing.status {
            let summary = zones.summary();
            status.send_if_modified(|s| std::mem::replace(s, summary.clone()) != summary);
        }

        // Pods: marked not Ready on a node that is not, evicted as their tolerations say (never while every
        // zone is fully disrupted).
        let all_pods = pods.state();
        if !acted.is_empty() {
            let current: HashSet<String> = all_pods.iter().map(|p| act_key(p)).collect();
            acted.retain(|key| current.contains(key));
        }
        for pod in &all_pods {
            let on = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
            let (Some(taints), Some(status)) = (taints_of.get(on), ready.get(on)) else { continue };
            let key = act_key(pod);
            if acted.contains(&key) {
                continue;
            }
            if !lift && node_health::eviction(pod, taints, now) == Eviction::Now {
                acted.insert(key);
                evict(&client, pod).await;
            } else if status != "True" && pod_ready(pod) {
                acted.insert(key);
                mark_not_ready(&client, pod, now).await;
            }
        }
    }
}

/// Logs a zone transition and records it as an Event on the controllers' Lease.
async fn report(client: &Client, transition: &Transition) {
    let (warning, reason, message) = match transition {
        Transition::EnteredMasterDisruption => (
            true,
            "EnteringMasterDisruptionMode",
            "Controller detected that all Nodes are not-Ready. Entering master disruption mode: \
             NoExecute taints lifted and no pod evicted until a Node is Ready again"
                .to_string(),
        ),
        Transition::ExitedMasterDisruption => (
            false,
            "ExitingMasterDisruptionMode",
            "Controller detected that some Nodes are Ready. Exiting master disruption mode".to_string(),
        ),
        Transition::ZoneChanged { zone, state } => (
            *state == disruption::ZoneState::FullDisruption,
            "ZoneStateChanged",
            format!("Controller detected that zone {} is now in state {state:?}", disruption::zone_name(zone)),
        ),
    };
    if warning {
        tracing::warn!(reason, "{message}");
    } else {
        tracing::info!(reason, "{message}");
    }
    let (namespace, name) = CONTROLLERS_LEASE;
    let lease = ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    };
    let note = if warning { events::Note::warning(reason, message) } else { events::Note::normal(reason, message) };
    events::note(client, COMPONENT, &lease, &note).await;
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

/// Sets a silent node's conditions (Unknown); the node as updated.
async fn set_conditions(
    client: &Client,
    node: &Node,
    conditions: Vec<k8s_openapi::api::core::v1::NodeCondition>,
) -> Result<Node, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "status": {"conditions": conditions}});
    let updated = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(node = %name, "node stopped reporting: Ready=Unknown");
    let message = format!("Node {name} status is now: NodeNotReady");
    events::record(client, COMPONENT, &updated, events::NORMAL, "NodeNotReady", &message).await;
    Ok(updated)
}

async fn set_taints(client: &Client, node: &Node, taints: &[Taint]) -> Result<(), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(node = %name, ?taints, "node taints updated");
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
