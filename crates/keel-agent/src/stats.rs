//! The node's and containers' resource figures between samples, pure: the readings of each sampling tick
//! ([`Samples::record`]), CPU as a rate over the window since the previous tick (cumulative nanoseconds
//! apart over the time apart, as cAdvisor's and so the kubelet summary's `usageNanoCores`), the
//! [`Summary`] the masters fetch, and the same figures in the Prometheus text format under the kubelet's
//! `/metrics/resource` names ([`exposition`]).

use std::collections::HashMap;

use jiff::Timestamp;
use keel_api::resource_metrics::{ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, Summary};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cgroups::Memory;

/// What is measured: the node, or one container by its containerd id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Node,
    Container(String),
}

/// One reading of one target (a figure is `None` when its file could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// Cumulative CPU time, nanoseconds.
    pub cpu: Option<u64>,
    pub memory: Option<Memory>,
}

/// A target's figures at its latest tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub at: Timestamp,
    pub reading: Reading,
    /// Nanocores over the window since the previous tick, and the window in nanoseconds: none on a target's
    /// first tick, or when its counter went back (a new cgroup under the same name).
    pub rate: Option<(u64, u64)>,
}

/// The latest figures of every target.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    latest: HashMap<Key, Figures>,
}

impl Samples {
    /// The readings of one tick at `at`; targets not read this time are forgotten.
    pub fn record(&mut self, at: Timestamp, readings: HashMap<Key, Reading>) {
        let latest = readings
            .into_iter()
            .map(|(key, reading)| {
                let rate = self.latest.get(&key).and_then(|before| rate(before, at, reading.cpu));
                (key, Figures { at, reading, rate })
            })
            .collect();
        self.latest = latest;
    }

    pub fn get(&self, key: &Key) -> Option<&Figures> {
        self.latest.get(key)
    }
}

fn rate(before: &Figures, at: Timestamp, cpu: Option<u64>) -> Option<(u64, u64)> {
    let (was, now) = (before.reading.cpu?, cpu?);
    let window = (at.as_nanosecond() - before.at.as_nanosecond()).try_into().ok().filter(|w: &u64| *w > 0)?;
    let used = now.checked_sub(was)?;
    let nanocores = u128::from(used) * 1_000_000_000 / u128::from(window);
    Some((u64::try_from(nanocores).unwrap_or(u64::MAX), window))
}

/// A running container the agent measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: PodReference,
    pub container: String,
    /// Its containerd id (and cgroup name).
    pub id: String,
}

fn cpu_stats(f: &Figures) -> Option<CpuStats> {
    Some(CpuStats {
        time: f.at.to_string(),
        usage_core_nano_seconds: f.reading.cpu?,
        usage_nano_cores: f.rate.map(|(r, _)| r),
        window_nano_seconds: f.rate.map(|(_, w)| w),
    })
}

fn memory_stats(f: &Figures) -> Option<MemoryStats> {
    let m = f.reading.memory?;
    Some(MemoryStats { time: f.at.to_string(), usage_bytes: m.usage, working_set_bytes: m.working_set })
}

/// The summary of node `node` and of `targets` (grouped by pod, in their order) from `samples`.
pub fn summary(node: &str, targets: &[Target], samples: &Samples) -> Summary {
    let node_figures = samples.get(&Key::Node);
    let mut pods: Vec<PodStats> = Vec::new();
    for t in targets {
        let figures = samples.get(&Key::Container(t.id.clone()));
        let container = ContainerStats {
            name: t.container.clone(),
            cpu: figures.and_then(cpu_stats),
            memory: figures.and_then(memory_stats),
        };
        match pods.iter_mut().find(|p| p.pod_ref == t.pod) {
            Some(p) => p.containers.push(container),
            None => pods.push(PodStats { pod_ref: t.pod.clone(), containers: vec![container] }),
        }
    }
    Summary {
        node: NodeStats {
            node_name: node.to_string(),
            cpu: node_figures.and_then(cpu_stats),
            memory: node_figures.and_then(memory_stats),
        },
        pods,
    }
}

type Labels = Vec<(&'static str, String)>;

/// The summary's figures as the kubelet's `/metrics/resource` names them (cumulative CPU seconds and
/// working-set bytes of the node, each pod and each container), in the Prometheus text format.
pub fn exposition(summary: &Summary) -> String {
    let mut registry = Registry::default();
    let seconds = |ns: u64| ns as f64 / 1e9;
    let node_cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    let node_memory = Gauge::<i64>::default();
    if let Some(c) = &summary.node.cpu {
        node_cpu.inc_by(seconds(c.usage_core_nano_seconds));
    }
    if let Some(m) = &summary.node.memory {
        node_memory.set(i64::try_from(m.working_set_bytes).unwrap_or(i64::MAX));
    }
    let container_cpu = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let container_memory = Family::<Labels, Gauge<i64>>::default();
    let pod_cpu = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let pod_memory = Family::<Labels, Gauge<i64>>::default();
    for pod in &summary.pods {
        let pod_labels: Labels = vec![("namespace", pod.pod_ref.namespace.clone()), ("pod", pod.pod_ref.name.clone())];
        for c in &pod.containers {
            let mut labels = vec![("container", c.name.clone())];
            labels.extend(pod_labels.iter().cloned());
            if let Some(cpu) = &c.cpu {
                container_cpu.get_or_create(&labels).inc_by(seconds(cpu.usage_core_nano_seconds));
                pod_cpu.get_or_create(&pod_labels).inc_by(seconds(cpu.usage_core_nano_seconds));
            }
            if let Some(m) = &c.memory {
                let bytes = i64::try_from(m.working_set_bytes).unwrap_or(i64::MAX);
                container_memory.get_or_create(&labels).set(bytes);
                pod_memory.get_or_create(&pod_labels).inc_by(bytes);
            }
        }
    }
    registry.register("node_cpu_usage_seconds", "Cumulative cpu time consumed by the node in core-seconds", node_cpu);
    registry.register("node_memory_working_set_bytes", "Current working set of the node in bytes", node_memory);
    registry.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed by the container in core-seconds",
        container_cpu,
    );
    registry.register(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        container_memory,
    );
    registry.register("pod_cpu_usage_seconds", "Cumulative cpu time consumed by the pod in core-seconds", pod_cpu);
    registry.register("pod_memory_working_set_bytes", "Current working set of the pod in bytes", pod_memory);
    registry.register(
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        Gauge::<i64>::default(),
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + s).unwrap()
    }

    fn reading(cpu: u64, working_set: u64) -> Reading {
        Reading { cpu: Some(cpu), memory: Some(Memory { usage: working_set + 100, working_set }) }
    }

    fn c(id: &str) -> Key {
        Key::Container(id.into())
    }

    #[test]
    fn cpu_is_a_rate_over_the_window_between_two_ticks() {
        let mut s = Samples::default();
        s.record(at(0), HashMap::from([(Key::Node, reading(1_000_000_000, 10)), (c("a"), reading(0, 5))]));
        assert_eq!(s.get(&c("a")).unwrap().rate, None, "one sample gives no rate");
        // 2.5 s of CPU in 10 s: a quarter of a core; the node used 15 s in 10 s: 1.5 cores.
        s.record(
            at(10),
            HashMap::from([
                (Key::Node, reading(16_000_000_000, 10)),
                (c("a"), reading(2_500_000_000, 7)),
                (c("b"), reading(3, 1)),
            ]),
        );
        assert_eq!(s.get(&c("a")).unwrap().rate, Some((250_000_000, 10_000_000_000)));
        assert_eq!(s.get(&Key::Node).unwrap().rate, Some((1_500_000_000, 10_000_000_000)));
        assert_eq!(s.get(&c("b")).unwrap().rate, None, "b is new");
        // a is gone (its container stopped); a counter that went back gives no rate.
        s.record(at(20), HashMap::from([(c("b"), reading(1, 1))]));
        assert_eq!(s.get(&c("a")), None);
        assert_eq!(s.get(&c("b")).unwrap().rate, None);
        // A tick at the same instant (a clock step) gives no rate rather than a division by zero.
        s.record(at(20), HashMap::from([(c("b"), reading(5, 1))]));
        assert_eq!(s.get(&c("b")).unwrap().rate, None);
        // Without a CPU reading there is no rate either.
        s.record(at(30), HashMap::from([(c("b"), Reading { cpu: None, memory: None })]));
        assert_eq!(s.get(&c("b")).unwrap().rate, None);
    }

    fn pod(name: &str) -> PodReference {
        PodReference { name: name.into(), namespace: "default".into(), uid: format!("uid-{name}") }
    }

    fn sampled() -> (Vec<Target>, Samples) {
        let targets = vec![
            Target { pod: pod("web"), container: "app".into(), id: "k1-0".into() },
            Target { pod: pod("db"), container: "db".into(), id: "k2-0".into() },
            Target { pod: pod("web"), container: "side".into(), id: "k3-0".into() },
        ];
        let mut s = Samples::default();
        let all = |cpu: u64| {
            HashMap::from([
                (Key::Node, reading(cpu * 4, 4096)),
                (c("k1-0"), reading(cpu, 1024)),
                (c("k2-0"), reading(cpu * 2, 2048)),
                (c("k3-0"), reading(0, 512)),
            ])
        };
        s.record(at(0), all(0));
        s.record(at(10), all(1_000_000_000));
        (targets, s)
    }

    #[test]
    fn the_summary_groups_containers_by_pod() {
        let (targets, samples) = sampled();
        let summary = summary("n1", &targets, &samples);
        assert_eq!(summary.node.node_name, "n1");
        assert_eq!(summary.node.cpu.as_ref().unwrap().usage_nano_cores, Some(400_000_000));
        assert_eq!(summary.node.memory.as_ref().unwrap().working_set_bytes, 4096);
        let names: Vec<(&str, Vec<&str>)> = summary
            .pods
            .iter()
            .map(|p| (p.pod_ref.name.as_str(), p.containers.iter().map(|c| c.name.as_str()).collect()))
            .collect();
        assert_eq!(names, vec![("web", vec!["app", "side"]), ("db", vec!["db"])]);
        let app = &summary.pods[0].containers[0];
        let cpu = app.cpu.as_ref().unwrap();
        assert_eq!((cpu.usage_nano_cores, cpu.window_nano_seconds), (Some(100_000_000), Some(10_000_000_000)));
        assert_eq!(cpu.time, "2026-01-01T00:00:10Z");
        // A container not sampled yet is listed without figures.
        let late = vec![Target { pod: pod("new"), container: "app".into(), id: "k9-0".into() }];
        let s = summary_of(&late, &samples);
        assert_eq!(s.pods[0].containers[0].cpu, None);
    }

    fn summary_of(targets: &[Target], samples: &Samples) -> Summary {
        summary("n1", targets, samples)
    }

    #[test]
    fn the_exposition_uses_the_kubelets_names() {
        let (targets, samples) = sampled();
        let text = exposition(&summary("n1", &targets, &samples));
        for line in [
            "node_cpu_usage_seconds_total 4.0",
            "node_memory_working_set_bytes 4096",
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 1.0",
            "container_memory_working_set_bytes{container=\"side\",namespace=\"default\",pod=\"web\"} 512",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"db\"} 2.0",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 1536",
            "scrape_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }
}
