//! The scheduler's loop around keel-scheduler's pure core. Watches of nodes, pods and namespaces keep a
//! [`Snapshot`] current; pods that name no node (and the default scheduler, or none) wait in a queue; each is
//! placed by [`keel_scheduler::schedule`], assumed on its node at once (so the next decision sees it) and bound
//! through `pods/binding` while the loop goes on. A pod that fits nowhere gets kube-scheduler's
//! FailedScheduling event and `PodScheduled=False` condition, and is parked until a node or pod changes (or
//! for at most [`PARK`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use keel_scheduler::{ClaimState, Config, Snapshot};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{events, Error};

/// The name pods give to choose this scheduler (or leave empty).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// The longest an unschedulable pod waits before it is tried again anyway.
pub const PARK: Duration = Duration::from_secs(30);
/// The annotation by which the scheduler gives a claim its first consumer's node.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Bindings in flight at once.
const MAX_BINDING: usize = 256;

enum Update {
    Node(Box<Event<Node>>),
    Pod(Box<Event<Pod>>),
    Namespace(Box<Event<Namespace>>),
    Claim(Box<Event<PersistentVolumeClaim>>),
    Volume(Box<Event<PersistentVolume>>),
    Class(Box<Event<StorageClass>>),
    /// Try a pod again after a failed binding.
    Retry(String),
}

/// How a binding ended.
struct Bound {
    key: String,
    node: String,
    result: Result<(), kube::Error>,
}

pub async fn run(client: Client, config: Config) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::channel(4096);
    let mut watches = JoinSet::new();
    watches.spawn(forward(Api::<Node>::all(client.clone()), tx.clone(), |e| Update::Node(Box::new(e))));
    watches.spawn(forward(Api::<Pod>::all(client.clone()), tx.clone(), |e| Update::Pod(Box::new(e))));
    watches.spawn(forward(Api::<Namespace>::all(client.clone()), tx.clone(), |e| Update::Namespace(Box::new(e))));
    watches
        .spawn(forward(Api::<PersistentVolumeClaim>::all(client.clone()), tx.clone(), |e| Update::Claim(Box::new(e))));
    watches.spawn(forward(Api::<PersistentVolume>::all(client.clone()), tx.clone(), |e| Update::Volume(Box::new(e))));
    watches.spawn(forward(Api::<StorageClass>::all(client.clone()), tx.clone(), |e| Update::Class(Box::new(e))));
    let mut loop_state = Scheduler::new(client, config, tx);
    let mut binds: JoinSet<Bound> = JoinSet::new();
    let mut park = tokio::time::interval(PARK);
    loop {
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else { return Ok(()) };
                loop_state.observe(update);
                while let Ok(more) = rx.try_recv() {
                    loop_state.observe(more);
                }
            }
            Some(done) = binds.join_next() => {
                if let Ok(done) = done {
                    loop_state.bound(done);
                }
            }
            _ = park.tick() => loop_state.unpark(),
        }
        loop_state.schedule_queued(&mut binds);
    }
}

async fn forward<K>(api: Api<K>, tx: mpsc::Sender<Update>, wrap: fn(Event<K>) -> Update)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    while let Some(e) = events.next().await {
        match e {
            Ok(e) => {
                if tx.send(wrap(e)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "scheduler watch failed; it retries");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Keys seen during a relist, to forget what vanished while the watch was down.
#[derive(Default)]
struct Relist {
    seen: Option<HashSet<String>>,
    synced: bool,
}

impl Relist {
    fn start(&mut self) {
        self.seen = Some(HashSet::new());
    }
    fn saw(&mut self, key: &str) {
        if let Some(s) = self.seen.as_mut() {
            s.insert(key.to_string());
        }
    }
    /// The keys seen since `start`; the caller drops every other.
    fn done(&mut self) -> HashSet<String> {
        self.synced = true;
        self.seen.take().unwrap_or_default()
    }
}

struct Scheduler {
    client: Client,
    config: Config,
    tx: mpsc::Sender<Update>,
    snapshot: Snapshot,
    nodes: Relist,
    pods: Relist,
    namespaces: Relist,
    node_names: HashSet<String>,
    /// Every pod the watch knows, by key, with its node (empty while unbound).
    known: HashMap<String, String>,
    /// Pods waiting for this scheduler, by key.
    pending: HashMap<String, Pod>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    parked: HashSet<String>,
    /// Pods being bound, or bound and not yet seen bound, with the node chosen.
    assumed: HashMap<String, String>,
    /// The last unschedulable message recorded for a pod (recorded again only when it changes).
    reported: HashMap<String, String>,
    /// What the VolumeBinding filter reads: claims by key, volumes and classes by name.
    storage: Storage,
}

/// Which claims (by key) a change concerns.
type ClaimFilter<'a> = dyn Fn(&str, &PersistentVolumeClaim) -> bool + 'a;

/// The claims, volumes and classes the scheduler has seen (kept whole: relists replace them).
#[derive(Default)]
struct Storage {
    claims: HashMap<String, PersistentVolumeClaim>,
    volumes: HashMap<String, PersistentVolume>,
    /// Classes whose `volumeBindingMode` is `WaitForFirstConsumer`.
    waiting_classes: HashSet<String>,
    /// What a relist of claims or volumes found so far (it replaces the maps when it is done).
    relisted_claims: Option<HashMap<String, PersistentVolumeClaim>>,
    relisted_volumes: Option<HashMap<String, PersistentVolume>>,
}

impl Storage {
    fn state(&self, claim: &PersistentVolumeClaim) -> ClaimState {
        let spec = claim.spec.as_ref();
        let volume = spec.and_then(|s| s.volume_name.as_deref()).and_then(|v| self.volumes.get(v));
        let affinity = volume.and_then(|v| v.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref());
        let class = spec.and_then(|s| s.storage_class_name.as_deref()).unwrap_or("");
        ClaimState::of(claim, affinity, self.waiting_classes.contains(class))
    }
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn key_of_claim(claim: &PersistentVolumeClaim) -> String {
    format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any())
}

fn node_of(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// Whether this scheduler should place `pod`.
fn wants_scheduling(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let ours = spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
    ours && node_of(pod).is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(crate::pods::phase(pod), Some("Succeeded" | "Failed"))
}

impl Scheduler {
    fn new(client: Client, config: Config, tx: mpsc::Sender<Update>) -> Scheduler {
        Scheduler {
            client,
            config,
            tx,
            snapshot: Snapshot::new(),
            nodes: Relist::default(),
            pods: Relist::default(),
            namespaces: Relist::default(),
            node_names: HashSet::new(),
            known: HashMap::new(),
            pending: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            parked: HashSet::new(),
            assumed: HashMap::new(),
            reported: HashMap::new(),
            storage: Storage::default(),
        }
    }

    fn observe(&mut self, update: Update) {
        match update {
            Update::Node(e) => self.observe_node(*e),
            Update::Pod(e) => self.observe_pod(*e),
            Update::Namespace(e) => match *e {
                Event::Init => self.namespaces.start(),
                Event::InitApply(ns) | Event::Apply(ns) => {
                    self.namespaces.saw(&ns.name_any());
                    self.snapshot.set_namespace_labels(&ns.name_any(), ns.metadata.labels.clone().unwrap_or_default());
                }
                Event::Delete(ns) => self.snapshot.set_namespace_labels(&ns.name_any(), Default::default()),
                Event::InitDone => {
                    self.namespaces.done();
                }
            },
            Update::Claim(e) => match *e {
                Event::Init => self.storage.relisted_claims = Some(HashMap::new()),
                Event::InitApply(c) => {
                    let relisted = self.storage.relisted_claims.get_or_insert_with(HashMap::new);
                    relisted.insert(key_of_claim(&c), c);
                }
                Event::InitDone => {
                    self.storage.claims = self.storage.relisted_claims.take().unwrap_or_default();
                    self.refresh_claims(None);
                }
                Event::Apply(c) => {
                    let key = key_of_claim(&c);
                    self.storage.claims.insert(key.clone(), c);
                    self.refresh_claims(Some(&|k: &str, _: &PersistentVolumeClaim| k == key));
                }
                Event::Delete(c) => {
                    let key = key_of_claim(&c);
                    self.storage.claims.remove(&key);
                    self.refresh_claims(Some(&|k: &str, _: &PersistentVolumeClaim| k == key));
                }
            },
            Update::Volume(e) => match *e {
                Event::Init => self.storage.relisted_volumes = Some(HashMap::new()),
                Event::InitApply(v) => {
                    let relisted = self.storage.relisted_volumes.get_or_insert_with(HashMap::new);
                    relisted.insert(v.name_any(), v);
                }
                Event::InitDone => {
                    self.storage.volumes = self.storage.relisted_volumes.take().unwrap_or_default();
                    self.refresh_claims(None);
                }
                Event::Apply(v) => {
                    let name = v.name_any();
                    self.storage.volumes.insert(name.clone(), v);
                    self.refresh_claims_of_volume(&name);
                }
                Event::Delete(v) => {
                    let name = v.name_any();
                    self.storage.volumes.remove(&name);
                    self.refresh_claims_of_volume(&name);
                }
            },
            Update::Class(e) => {
                match *e {
                    Event::Init | Event::InitDone => {}
                    Event::InitApply(c) | Event::Apply(c) => {
                        if c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") {
                            self.storage.waiting_classes.insert(c.name_any());
                        } else {
                            self.storage.waiting_classes.remove(&c.name_any());
                        }
                    }
                    Event::Delete(c) => {
                        self.storage.waiting_classes.remove(&c.name_any());
                    }
                }
                self.refresh_claims(None);
            }
            Update::Retry(key) => self.enqueue(&key),
        }
    }

    /// The claims bound to volume `name`, after a change of it.
    fn refresh_claims_of_volume(&mut self, name: &str) {
        let names_it =
            |_: &str, c: &PersistentVolumeClaim| c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name);
        self.refresh_claims(Some(&names_it));
    }

    /// The snapshot's claims from what the watches say now (only those `which` picks, when given); parked
    /// pods are tried again.
    fn refresh_claims(&mut self, which: Option<&ClaimFilter>) {
        for (key, claim) in &self.storage.claims {
            if which.is_none_or(|w| w(key, claim)) {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                self.snapshot.set_claim(ns, name, Some(self.storage.state(claim)));
            }
        }
        let gone: Vec<String> =
            self.snapshot.claim_keys().filter(|k| !self.storage.claims.contains_key(*k)).cloned().collect();
        for key in gone {
            let (ns, name) = key.split_once('/').unwrap_or(("", &key));
            self.snapshot.set_claim(ns, name, None);
        }
        self.unpark();
    }

    fn observe_node(&mut self, e: Event<Node>) {
        match e {
            Event::Init => self.nodes.start(),
            Event::InitApply(n) | Event::Apply(n) => {
                self.nodes.saw(&n.name_any());
                self.node_names.insert(n.name_any());
                self.snapshot.upsert_node(&n);
                self.unpark();
            }
            Event::Delete(n) => {
                self.node_names.remove(&n.name_any());
                self.snapshot.remove_node(&n.name_any());
            }
            Event::InitDone => {
                let seen = self.nodes.done();
                for gone in self.node_names.iter().filter(|n| !seen.contains(*n)).cloned().collect::<Vec<_>>() {
                    self.node_names.remove(&gone);
                    self.snapshot.remove_node(&gone);
                }
                self.unpark();
            }
        }
    }

    fn observe_pod(&mut self, e: Event<Pod>) {
        match e {
            Event::Init => self.pods.start(),
            Event::InitApply(p) | Event::Apply(p) => {
                let key = key_of(&p);
                self.pods.saw(&key);
                self.apply_pod(key, p);
            }
            Event::Delete(p) => self.forget_pod(&key_of(&p)),
            Event::InitDone => {
                let seen = self.pods.done();
                for gone in self.known.keys().filter(|k| !seen.contains(*k)).cloned().collect::<Vec<_>>() {
                    self.forget_pod(&gone);
                }
            }
        }
    }

    fn apply_pod(&mut self, key: String, pod: Pod) {
        let node = node_of(&pod).to_string();
        let was_placed = self.known.get(&key).is_some_and(|n| !n.is_empty());
        if node.is_empty() && self.assumed.contains_key(&key) && pod.metadata.deletion_timestamp.is_none() {
            // Being bound (or bound, and the watch is behind): keep the assumption.
            self.known.insert(key, node);
            return;
        }
        self.assumed.remove(&key);
        self.snapshot.apply_pod(&pod);
        let finished = matches!(crate::pods::phase(&pod), Some("Succeeded" | "Failed"));
        if was_placed && finished {
            self.unpark();
        }
        self.known.insert(key.clone(), node);
        if wants_scheduling(&pod) {
            self.pending.insert(key.clone(), pod);
            if !self.parked.contains(&key) {
                self.enqueue(&key);
            }
        } else {
            self.drop_pending(&key);
        }
    }

    fn forget_pod(&mut self, key: &str) {
        let was_placed = self.known.remove(key).is_some_and(|n| !n.is_empty()) || self.assumed.contains_key(key);
        self.assumed.remove(key);
        self.snapshot.remove_pod(key);
        self.drop_pending(key);
        if was_placed {
            self.unpark();
        }
    }

    fn drop_pending(&mut self, key: &str) {
        self.pending.remove(key);
        self.parked.remove(key);
        self.queued.remove(key);
        self.reported.remove(key);
    }

    fn enqueue(&mut self, key: &str) {
        if self.pending.contains_key(key) && !self.assumed.contains_key(key) && self.queued.insert(key.to_string()) {
            self.parked.remove(key);
            self.queue.push_back(key.to_string());
        }
    }

    fn unpark(&mut self) {
        for key in std::mem::take(&mut self.parked) {
            self.enqueue(&key);
        }
    }

    /// Places queued pods while bindings have room; waits for both watches' first lists.
    fn schedule_queued(&mut self, binds: &mut JoinSet<Bound>) {
        if !(self.nodes.synced && self.pods.synced) {
            return;
        }
        while binds.len() < MAX_BINDING {
            let Some(key) = self.queue.pop_front() else { return };
            if !self.queued.remove(&key) {
                continue;
            }
            let Some(pod) = self.pending.get(&key) else { continue };
            match keel_scheduler::schedule(&self.snapshot, pod, &self.config) {
                Ok(node) => {
                    self.snapshot.assume(pod, &node);
                    self.assumed.insert(key.clone(), node.clone());
                    self.reported.remove(&key);
                    // Claims that wait for their first consumer are given its node, for their volume.
                    let ns = pod.namespace().unwrap_or_default();
                    let waiting: Vec<String> = keel_scheduler::PodContext::new(pod)
                        .claims()
                        .into_iter()
                        .filter(|c| self.snapshot.claim(&ns, c) == Some(&ClaimState::WaitForFirstConsumer))
                        .collect();
                    binds.spawn(bind(self.client.clone(), pod.clone(), key, node, waiting));
                }
                Err(why) => {
                    let message = why.to_string();
                    self.parked.insert(key.clone());
                    if self.reported.get(&key) != Some(&message) {
                        self.reported.insert(key, message.clone());
                        tokio::spawn(report_unschedulable(self.client.clone(), pod.clone(), message));
                    }
                }
            }
        }
    }

    fn bound(&mut self, done: Bound) {
        match done.result {
            Ok(()) => tracing::debug!(pod = %done.key, node = %done.node, "bound"),
            Err(e) => {
                // Forget the assumption; the watch says what happened. A conflict means the pod is already
                // bound (or gone); anything else is tried again shortly.
                self.assumed.remove(&done.key);
                self.snapshot.remove_pod(&done.key);
                let retry = !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
                tracing::info!(pod = %done.key, node = %done.node, error = %e, retry, "binding failed");
                if retry {
                    let (tx, key) = (self.tx.clone(), done.key);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = tx.send(Update::Retry(key)).await;
                    });
                }
            }
        }
    }
}

async fn bind(client: Client, pod: Pod, key: String, node: String, waiting_claims: Vec<String>) -> Bound {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    // kube-scheduler's volume binding: the claim names the chosen node; its volume is provisioned there.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    for claim in &waiting_claims {
        let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        if let Err(e) = claims.patch(claim, &PatchParams::default(), &Patch::Merge(&patch)).await {
            return Bound { key, node, result: Err(e) };
        }
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let result = api
        .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
        .await
        .map(drop);
    if result.is_ok() {
        let message = format!("Successfully assigned {namespace}/{name} to {node}");
        events::record(&client, SCHEDULER_NAME, &pod, events::NORMAL, "Scheduled", &message).await;
    }
    Bound { key, node, result }
}

/// kube-scheduler's record of a pod that fits nowhere: a FailedScheduling event and the PodScheduled
/// condition.
async fn report_unschedulable(client: Client, pod: Pod, message: String) {
    tracing::debug!(pod = %key_of(&pod), %message, "unschedulable");
    events::record(&client, SCHEDULER_NAME, &pod, events::WARNING, "FailedScheduling", &message).await;
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let condition = json!({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null, "lastTransitionTime": Time(jiff::Timestamp::now()),
    });
    let patch = json!({"status": {"conditions": [condition]}});
    if let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
        tracing::debug!(error = %e, "cannot set PodScheduled=False");
    }
}
