//! The agent's resource sampling (cAdvisor's housekeeping, as the kubelet runs it): every period, the
//! node's CPU and memory (`/proc`) and those of every running container of its pods (their cgroups, v1
//! or v2, [`crate::cgroups`]) are read, and the [`Summary`] made from them and the previous tick
//! ([`crate::stats`]) is kept, so that a request is answered at once with CPU rates over the last window.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keel_api::resource_metrics::{PodReference, Summary};

use crate::cgroups::{self, Hierarchies, Hierarchy};
use crate::names;
use crate::stats::{self, Key, Reading, Samples, Target};
use crate::worker;

/// The latest summary, shared with the agent's endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    summary: RwLock<Summary>,
}

impl Stats {
    pub fn summary(&self) -> Summary {
        self.summary.read().expect("summary lock").clone()
    }
}

/// The running containers of `pods` (their statuses' containerd ids), by namespace and name.
pub fn targets<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Target> {
    let mut out = Vec::new();
    for pod in pods {
        let reference = PodReference {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        for status in statuses.into_iter().flatten() {
            let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
            let id = status.container_id.as_deref().and_then(|id| id.strip_prefix("containerd://"));
            if let (true, Some(id)) = (running, id) {
                out.push(Target { pod: reference.clone(), container: status.name.clone(), id: id.to_string() });
            }
        }
    }
    out.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
    out
}

fn read(path: std::path::PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// One cgroup's figures.
fn read_cgroup(hierarchies: &Hierarchies, path: &str) -> Reading {
    let cpu = hierarchies.cpu.as_ref().and_then(|h| {
        let text = read(cgroups::dir(h, path).join(cgroups::cpu_file(h)))?;
        cgroups::cpu_usage(h, &text)
    });
    let memory = hierarchies.memory.as_ref().and_then(|h: &Hierarchy| {
        let dir = cgroups::dir(h, path);
        let (usage, stat) = cgroups::memory_files(h);
        cgroups::memory(h, &read(dir.join(usage))?, &read(dir.join(stat)).unwrap_or_default())
    });
    Reading { cpu, memory }
}

/// Every target's reading now (blocking file reads).
fn read_all(node: &str, hierarchies: &Hierarchies, targets: &[Target]) -> HashMap<Key, Reading> {
    let mut readings = HashMap::new();
    let machine = Reading {
        cpu: read("/proc/stat".into()).and_then(|t| cgroups::node_cpu_usage(&t)),
        memory: read("/proc/meminfo".into()).and_then(|t| cgroups::node_memory(&t)),
    };
    readings.insert(Key::Node, machine);
    for t in targets {
        readings.insert(Key::Container(t.id.clone()), read_cgroup(hierarchies, &names::cgroup_path(node, &t.id)));
    }
    readings
}

/// Samples every `period` until cancelled, keeping `stats` current.
pub async fn run(shared: Arc<worker::Shared>, stats: Arc<Stats>, period: Duration) {
    let node = shared.config.node_name.clone();
    let hierarchies = Hierarchies::from_mountinfo(&read("/proc/self/mountinfo".into()).unwrap_or_default());
    if hierarchies.cpu.is_none() || hierarchies.memory.is_none() {
        tracing::warn!(?hierarchies, "no cgroup hierarchy for CPU or memory: containers' figures will be missing");
    }
    let hierarchies = Arc::new(hierarchies);
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let targets = targets(shared.pods.lock().expect("pods lock").values());
        let (n, h, t) = (node.clone(), hierarchies.clone(), targets.clone());
        let at = jiff::Timestamp::now();
        let readings = match tokio::task::spawn_blocking(move || read_all(&n, &h, &t)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "a resource sample failed");
                continue;
            }
        };
        samples.record(at, readings);
        *stats.summary.write().expect("summary lock") = stats::summary(&node, &targets, &samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_containers_of_the_pods_are_the_targets() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": []},
            "status": {"containerStatuses": [
                {"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
                 "containerID": "containerd://k1-1", "state": {"running": {}}},
                {"name": "done", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "containerID": "containerd://k2-0", "state": {"terminated": {"exitCode": 0}}},
                {"name": "new", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]},
        }))
        .unwrap();
        let t = targets([&pod]);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].container.as_str(), t[0].id.as_str(), t[0].pod.uid.as_str()), ("app", "k1-1", "u1"));
    }
}
