//! The scheduler's view of the cluster: each node with what the filters and scores read (allocatable,
//! the sum of its pods' requests, pod count, labels, taints, cordon) and the pods placed on it, every pod
//! parsed once (requests, labels, affinity terms) when it is added. Adding, assuming and removing a pod
//! updates its node's sums in place, so a decision never re-reads a quantity.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint};

use crate::resources::{pod_resources, PodResources, Resources};
use crate::selectors::PodSelector;

pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// A pod affinity or anti-affinity term, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// Namespaces named by the term (the owning pod's own when neither these nor a selector are given).
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<PodSelector>,
    pub selector: PodSelector,
    pub topology_key: String,
}

impl AffinityTerm {
    fn compile(owner_namespace: &str, t: &PodAffinityTerm) -> AffinityTerm {
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(owner_namespace.to_string());
        }
        AffinityTerm {
            namespaces,
            namespace_selector: t.namespace_selector.as_ref().map(|s| PodSelector::compile(Some(s))),
            selector: PodSelector::compile(t.label_selector.as_ref()),
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` (with its namespace's labels) is one this term selects.
    pub fn matches(&self, pod: &PodInfo, namespace_labels: &BTreeMap<String, String>) -> bool {
        (self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| s.matches(namespace_labels)))
            && self.selector.matches(&pod.labels)
    }
}

/// A pod as the scheduler keeps it: parsed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub resources: PodResources,
    /// Has a deletionTimestamp (topology spread does not count it).
    pub terminating: bool,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<(i32, AffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i32, AffinityTerm)>,
}

impl PodInfo {
    pub fn new(pod: &Pod) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| {
            terms.into_iter().flatten().map(|t| AffinityTerm::compile(&namespace, t)).collect::<Vec<_>>()
        };
        let preferred = |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|w| (w.weight, AffinityTerm::compile(&namespace, &w.pod_affinity_term)))
                .collect::<Vec<_>>()
        };
        PodInfo {
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            resources: spec.map(pod_resources).unwrap_or_default(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            required_affinity: required(
                pa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
            ),
            required_anti_affinity: required(
                paa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_affinity: preferred(
                pa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            preferred_anti_affinity: preferred(
                paa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            namespace,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// One node and the pods on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub allocatable: Resources,
    /// Allocatable `pods`.
    pub allowed_pods: i64,
    /// The node's taints, plus `node.kubernetes.io/not-ready:NoSchedule` (Ready False) or
    /// `node.kubernetes.io/unreachable:NoSchedule` (Ready Unknown) as Kubernetes' node lifecycle controller
    /// would add them. A node without a Ready condition counts as ready.
    pub taints: Vec<Taint>,
    /// Has PreferNoSchedule taints (the taint score skips other nodes).
    pub prefer_no_schedule: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Sum of the pods' requests (what the fit filter compares).
    pub requested: Resources,
    /// Sum of the pods' requests with defaults for missing CPU/memory (what the scores compare).
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    /// Pods here with any pod (anti-)affinity term, and with a required anti-affinity term (so that the
    /// affinity filter and score only visit the nodes that have some).
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    fn new(node: &Node) -> NodeInfo {
        let mut n = NodeInfo {
            name: String::new(),
            labels: BTreeMap::new(),
            allocatable: Resources::default(),
            allowed_pods: 0,
            taints: Vec::new(),
            prefer_no_schedule: false,
            unschedulable: false,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
        };
        n.set_node(node);
        n
    }

    fn set_node(&mut self, node: &Node) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let status = node.status.as_ref();
        let alloc = status.and_then(|s| s.allocatable.as_ref());
        self.allocatable = alloc.map(Resources::from_list).unwrap_or_default();
        self.allowed_pods = alloc
            .and_then(|a| a.get("pods"))
            .and_then(|q| keel_api::quantity::Quantity::parse(&q.0).ok())
            .map_or(0, |q| q.value());
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let synthetic = match ready {
            Some("False") => Some(TAINT_NOT_READY),
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            _ => None,
        };
        if let Some(key) = synthetic {
            if !self.taints.iter().any(|t| t.key == key && t.effect == "NoSchedule") {
                self.taints.push(Taint {
                    key: key.to_string(),
                    effect: "NoSchedule".to_string(),
                    ..Default::default()
                });
            }
        }
        self.prefer_no_schedule = self.taints.iter().any(|t| t.effect == "PreferNoSchedule");
    }

    fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested = self.requested.plus(&pod.resources.requests);
        self.non_zero_requested = self.non_zero_requested.plus(&pod.resources.non_zero);
        self.pods_with_affinity += usize::from(pod.has_affinity());
        self.pods_with_required_anti_affinity += usize::from(!pod.required_anti_affinity.is_empty());
        self.pods.push(pod);
    }

    fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let (ns, name) = key.split_once('/')?;
        let i = self.pods.iter().position(|p| p.namespace == ns && p.name == name)?;
        let pod = self.pods.swap_remove(i);
        self.requested = self.requested.minus(&pod.resources.requests);
        self.non_zero_requested = self.non_zero_requested.minus(&pod.resources.non_zero);
        self.pods_with_affinity -= usize::from(pod.has_affinity());
        self.pods_with_required_anti_affinity -= usize::from(!pod.required_anti_affinity.is_empty());
        Some(pod)
    }
}

/// The cluster as the scheduler sees it. Feed it nodes and pods as they are listed and watched; `assume` a
/// decision so the next one sees it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    /// Pod key (`namespace/name`) → node name.
    placed: HashMap<String, String>,
    /// Pods placed on nodes the snapshot has not seen (yet), by node name.
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// PersistentVolumeClaims by `namespace/name`, as the VolumeBinding filter needs them.
    claims: HashMap<String, crate::ClaimState>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// The node a pod (`namespace/name`) is placed on.
    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.placed.get(key).map(String::as_str)
    }

    pub fn namespace_labels(&self, namespace: &str) -> &BTreeMap<String, String> {
        self.namespace_labels.get(namespace).unwrap_or(&NO_LABELS)
    }

    /// A claim's state, as last recorded.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&crate::ClaimState> {
        self.claims.get(&format!("{namespace}/{name}"))
    }

    /// The keys (`namespace/name`) of the claims recorded.
    pub fn claim_keys(&self) -> impl Iterator<Item = &String> {
        self.claims.keys()
    }

    /// Records a claim's state (`None`: it is gone).
    pub fn set_claim(&mut self, namespace: &str, name: &str, state: Option<crate::ClaimState>) {
        let key = format!("{namespace}/{name}");
        match state {
            Some(s) => self.claims.insert(key, s),
            None => self.claims.remove(&key),
        };
    }

    /// Records a namespace's labels (read by affinity terms' `namespaceSelector`).
    pub fn set_namespace_labels(&mut self, namespace: &str, labels: BTreeMap<String, String>) {
        self.namespace_labels.insert(namespace.to_string(), labels);
    }

    /// Adds or updates a node, keeping the pods already on it.
    pub fn upsert_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.by_name.get(&name) {
            self.nodes[i].set_node(node);
            return;
        }
        let mut info = NodeInfo::new(node);
        for pod in self.orphans.remove(&name).unwrap_or_default() {
            info.add_pod(pod);
        }
        self.by_name.insert(name, self.nodes.len());
        self.nodes.push(info);
    }

    /// Removes a node; its pods stay known (they come back with the node, or go when they are deleted).
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.by_name.remove(name) else { return };
        let info = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            self.by_name.insert(self.nodes[i].name.clone(), i);
        }
        if !info.pods.is_empty() {
            self.orphans.insert(info.name, info.pods);
        }
    }

    /// Adds, updates or removes a pod as the API reports it: a pod bound to a node (`spec.nodeName`) and not
    /// finished (Succeeded/Failed) takes resources there; any other is forgotten.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let info = PodInfo::new(pod);
        let key = info.key();
        self.remove_pod(&key);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        if let (Some(node), false) = (node, matches!(phase, Some("Succeeded" | "Failed"))) {
            self.place(Arc::new(info), node);
        }
    }

    /// Places a pod on `node` before the API confirms it (after a decision, while binding), so the next
    /// decision sees it. A later `apply_pod` for the same pod replaces it.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let info = PodInfo::new(pod);
        self.remove_pod(&info.key());
        self.place(Arc::new(info), node);
    }

    /// Forgets a pod (`namespace/name`): deleted, finished, or a binding that failed.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(node) = self.placed.remove(key) else { return };
        match self.by_name.get(&node) {
            Some(&i) => {
                self.nodes[i].remove_pod(key);
            }
            None => {
                if let Some(pods) = self.orphans.get_mut(&node) {
                    pods.retain(|p| p.key() != key);
                }
            }
        }
    }

    fn place(&mut self, info: Arc<PodInfo>, node: &str) {
        self.placed.insert(info.key(), node.to_string());
        match self.by_name.get(node) {
            Some(&i) => self.nodes[i].add_pod(info),
            None => self.orphans.entry(node.to_string()).or_default().push(info),
        }
    }
}
