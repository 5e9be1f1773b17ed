//! Resource amounts the scheduler adds and compares, parsed from quantities once: a pod's effective
//! requests (Kubernetes' rules: the sum of its containers, at least each init container — with sidecars,
//! restartable init containers, running alongside — plus the pod overhead) and a node's allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use keel_api::quantity::Quantity;

/// CPU a container without a CPU request counts as when scoring (Kubernetes' `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// CPU in millicores, memory and ephemeral storage in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl Resources {
    /// Reads cpu, memory and ephemeral-storage from a resource list; malformed quantities count as 0
    /// (the apiserver refuses them before they get here).
    pub fn from_list(list: &BTreeMap<String, K8sQuantity>) -> Resources {
        let q = |name: &str| list.get(name).and_then(|q| Quantity::parse(&q.0).ok());
        Resources {
            milli_cpu: q("cpu").map_or(0, |q| q.milli_value()),
            memory: q("memory").map_or(0, |q| q.value()),
            ephemeral_storage: q("ephemeral-storage").map_or(0, |q| q.value()),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Resources::default()
    }

    fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
    }

    fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
    }

    pub(crate) fn plus(mut self, o: &Resources) -> Resources {
        self.add(o);
        self
    }

    pub(crate) fn minus(mut self, o: &Resources) -> Resources {
        self.sub(o);
        self
    }
}

/// What a pod asks for: `requests` for the fit filter (no requests = 0, as in Kubernetes) and `non_zero`
/// for scoring (a container without a CPU or memory request counts as 100m / 200Mi, so that many empty pods
/// still spread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodResources {
    pub requests: Resources,
    pub non_zero: Resources,
}

pub fn pod_resources(spec: &PodSpec) -> PodResources {
    PodResources {
        requests: aggregate(spec, |c| container_requests(c, false)),
        non_zero: aggregate(spec, |c| container_requests(c, true)),
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut r = list.map(Resources::from_list).unwrap_or_default();
    if non_zero {
        if !list.is_some_and(|l| l.contains_key("cpu")) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !list.is_some_and(|l| l.contains_key("memory")) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn aggregate(spec: &PodSpec, per_container: impl Fn(&Container) -> Resources) -> Resources {
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&per_container(c));
    }
    // Sidecars (init containers with restartPolicy Always) keep running: they add to the total and to every
    // later init container's needs. A plain init container runs alone (with the sidecars started before it).
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        if c.restart_policy.as_deref() == Some("Always") {
            total.add(&r);
            sidecars.add(&r);
            init_peak.max(&sidecars);
        } else {
            init_peak.max(&r.plus(&sidecars));
        }
    }
    total.max(&init_peak);
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::from_list(overhead));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn containers_sum_init_containers_max_plus_overhead() {
        let s = spec(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "32Mi"}}}],
            "overhead": {"cpu": "10m"}
        }));
        let r = pod_resources(&s).requests;
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 128 << 20);
    }

    #[test]
    fn sidecars_run_alongside() {
        let s = spec(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "init", "resources": {"requests": {"cpu": "500m"}}}
            ]
        }));
        // max(100 + 200, 200 + 500)
        assert_eq!(pod_resources(&s).requests.milli_cpu, 700);
    }

    #[test]
    fn no_requests_is_zero_to_fit_and_defaults_to_score() {
        let s = spec(json!({"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "1"}}}]}));
        let r = pod_resources(&s);
        assert_eq!(r.requests, Resources { milli_cpu: 1000, ..Default::default() });
        assert_eq!(r.non_zero.milli_cpu, 1100);
        assert_eq!(r.non_zero.memory, 2 * DEFAULT_MEMORY_REQUEST);
    }
}
