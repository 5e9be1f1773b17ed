//! The resource metrics pipeline's contracts, without IO: what a node agent reports
//! ([`Summary`], served at [`SUMMARY_PATH`] on the agent's HTTPS port, shaped like the kubelet's
//! `/stats/summary`: CPU as a rate over the agent's last sampling window and as a cumulative total, memory
//! working set) and the `metrics.k8s.io/v1beta1` objects the masters make of it ([`node_metrics`],
//! [`pod_metrics`]), as metrics-server serves them: `timestamp` (the end of the window), `window`, and
//! `usage` with CPU in nanocores (`123456789n`, canonical Kubernetes quantities) and memory in bytes
//! (`20480Ki`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::resources::Resource;

/// The agent's resource summary (JSON, [`Summary`]).
pub const SUMMARY_PATH: &str = "/stats/summary";
/// The agent's resource figures in the Prometheus text format, under the kubelet's path and metric names.
pub const RESOURCE_METRICS_PATH: &str = "/metrics/resource";

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
pub const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The two resources of `metrics.k8s.io/v1beta1`: read only (get, list), never stored.
pub const RESOURCES: &[Resource] = &[
    Resource { kind: "NodeMetrics", plural: "nodes", namespaced: false, ..METRICS },
    Resource { kind: "PodMetrics", plural: "pods", ..METRICS },
];

/// What both resources share.
const METRICS: Resource = crate::resources::group(GROUP, VERSION);

/// The verbs the metrics resources allow.
pub const VERBS: &[&str] = &["get", "list"];

/// What one node's agent measured, as its last two samples give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU at `time`: the cumulative use, and the rate over the window that ended then (none after a single
/// sample).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// RFC 3339.
    pub time: String,
    pub usage_core_nano_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// The length of the window the rate covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_nano_seconds: Option<u64>,
}

/// Memory at `time`: all the cgroup (or machine) uses, and the working set (that minus inactive file
/// pages, which the kernel reclaims first), what the kubelet reports and evicts by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
}

/// CPU in nanocores as a canonical Kubernetes quantity, as metrics-server writes it
/// (`resource.NewScaledQuantity(n, -9)`): `0`, `1500u`, `250m`, `2`, `123456789n`.
pub fn cpu_quantity(nanocores: u64) -> String {
    decimal_quantity(i128::from(nanocores), -9)
}

/// `mantissa × 10^exponent` as a canonical decimal-SI Kubernetes quantity (`resource.NewScaledQuantity`):
/// the largest exponent that is a multiple of three and keeps the number whole, with its suffix (`n`,
/// `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`): `NewMilliQuantity(250)` is `250m`, of 2000000 is `2k`.
pub fn decimal_quantity(mantissa: i128, exponent: i32) -> String {
    if mantissa == 0 {
        return "0".into();
    }
    let (mut mantissa, mut exponent) = (mantissa, exponent);
    while mantissa % 10 == 0 && exponent < 18 {
        mantissa /= 10;
        exponent += 1;
    }
    while exponent.rem_euclid(3) != 0 || exponent < -9 {
        mantissa *= 10;
        exponent -= 1;
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => "",
    };
    format!("{mantissa}{suffix}")
}

/// Bytes as a canonical binary-SI Kubernetes quantity (`resource.NewQuantity(b, BinarySI)`): the largest
/// power of 1024 that divides it (`20480Ki`, `64Mi`), plain bytes otherwise; below 1024 written decimally
/// (`0`, `512`, `1k`), as Kubernetes does.
pub fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return match bytes {
            b if b > 0 && b % 1000 == 0 => format!("{}k", b / 1000),
            b => b.to_string(),
        };
    }
    let mut value = bytes;
    let mut power = 0;
    while value.is_multiple_of(1024) && power < 6 {
        value /= 1024;
        power += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
    format!("{value}{suffix}")
}

/// A duration as Go's `time.Duration.String()` writes it (what `metav1.Duration` serializes to): `15s`,
/// `10.036s`, `1m0.5s`, `1h2m3s`, `0s`.
pub fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / scale` with its fraction's trailing zeros dropped.
fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn labels_of(object: &Value) -> Value {
    object["metadata"]["labels"].as_object().map(|m| Value::Object(m.clone())).unwrap_or_else(|| json!({}))
}

/// `usage` of a CPU and a memory figure, if both are complete (a CPU rate needs two samples).
fn usage<'a>(cpu: Option<&'a CpuStats>, memory: Option<&MemoryStats>) -> Option<(Value, &'a CpuStats)> {
    let cpu = cpu?;
    let nanocores = cpu.usage_nano_cores?;
    let memory = memory?;
    Some((json!({"cpu": cpu_quantity(nanocores), "memory": memory_quantity(memory.working_set_bytes)}), cpu))
}

/// The NodeMetrics of `node` (the Node object, for its name and labels) from its agent's figures, made at
/// `now`; `None` until the agent has a CPU rate.
pub fn node_metrics(node: &Value, stats: &NodeStats, now: &str) -> Option<Value> {
    let (usage, cpu) = usage(stats.cpu.as_ref(), stats.memory.as_ref())?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": {"name": node["metadata"]["name"], "creationTimestamp": now, "labels": labels_of(node)},
        "timestamp": cpu.time,
        "window": go_duration(cpu.window_nano_seconds.unwrap_or_default()),
        "usage": usage,
    }))
}

/// The PodMetrics of `pod` (the Pod object, for its name, namespace and labels) from its node's figures
/// for it, made at `now`; `None` unless every container reported has both figures (metrics-server drops a
/// pod with a container it has no complete figures for).
pub fn pod_metrics(pod: &Value, stats: &PodStats, now: &str) -> Option<Value> {
    let mut containers = Vec::new();
    let mut first: Option<&CpuStats> = None;
    for c in &stats.containers {
        let (usage, cpu) = usage(c.cpu.as_ref(), c.memory.as_ref())?;
        first.get_or_insert(cpu);
        containers.push(json!({"name": c.name, "usage": usage}));
    }
    let cpu = first?;
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "creationTimestamp": now,
            "labels": labels_of(pod),
        },
        "timestamp": cpu.time,
        "window": go_duration(cpu.window_nano_seconds.unwrap_or_default()),
        "containers": containers,
    }))
}

/// A list of metrics objects of `kind` (`NodeMetrics`, `PodMetrics`).
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_written_as_kubernetes_canonical_nanocore_quantities() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(123_456_789), "123456789n");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(20_000_000_000), "20");
        assert_eq!(cpu_quantity(1_000), "1u");
        assert_eq!(cpu_quantity(10), "10n");
        assert_eq!(decimal_quantity(250, -3), "250m");
        assert_eq!(decimal_quantity(2_000_000, -3), "2k");
        assert_eq!(decimal_quantity(1_048_576_000, -3), "1048576");
        assert_eq!(decimal_quantity(-1500, -3), "-1500m");
        for n in [1u64, 999, 1_234_000, 987_654_321_000, 7_000_000] {
            let parsed = crate::quantity::Quantity::parse(&cpu_quantity(n)).unwrap();
            assert_eq!(parsed, crate::quantity::Quantity::parse(&format!("{n}n")).unwrap(), "{n}");
        }
    }

    #[test]
    fn memory_is_written_in_binary_units_when_they_divide_it() {
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(512), "512");
        assert_eq!(memory_quantity(1000), "1k");
        assert_eq!(memory_quantity(20 * 1024 * 1024), "20Mi");
        assert_eq!(memory_quantity(12_345 * 1024), "12345Ki");
        assert_eq!(memory_quantity(1_234_567), "1234567");
        assert_eq!(memory_quantity(3 << 30), "3Gi");
    }

    #[test]
    fn windows_are_go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(15_000_000_000), "15s");
        assert_eq!(go_duration(10_036_000_000), "10.036s");
        assert_eq!(go_duration(60_500_000_000), "1m0.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(999), "999ns");
    }

    fn cpu(rate: Option<u64>) -> CpuStats {
        CpuStats {
            time: "2026-01-01T00:00:10Z".into(),
            usage_core_nano_seconds: 5_000_000_000,
            usage_nano_cores: rate,
            window_nano_seconds: rate.map(|_| 10_000_000_000),
        }
    }

    fn memory(working_set: u64) -> MemoryStats {
        MemoryStats {
            time: "2026-01-01T00:00:10Z".into(),
            usage_bytes: working_set * 2,
            working_set_bytes: working_set,
        }
    }

    #[test]
    fn node_metrics_as_metrics_server_serves_them() {
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}});
        let stats =
            NodeStats { node_name: "n1".into(), cpu: Some(cpu(Some(250_000_000))), memory: Some(memory(1 << 30)) };
        let m = node_metrics(&node, &stats, "2026-01-01T00:00:11Z").unwrap();
        assert_eq!(
            m,
            json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:11Z", "labels": {"zone": "a"}},
                "timestamp": "2026-01-01T00:00:10Z", "window": "10s", "usage": {"cpu": "250m", "memory": "1Gi"}})
        );
        let first_sample = NodeStats { cpu: Some(cpu(None)), ..stats };
        assert_eq!(node_metrics(&node, &first_sample, "now"), None);
    }

    #[test]
    fn a_pod_needs_complete_figures_for_every_container() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}});
        let container = |name: &str, rate| ContainerStats {
            name: name.into(),
            cpu: Some(cpu(rate)),
            memory: Some(memory(8 << 20)),
        };
        let reference = PodReference { name: "web".into(), namespace: "default".into(), uid: "u".into() };
        let stats = PodStats {
            pod_ref: reference.clone(),
            containers: vec![container("app", Some(1_000_000)), container("side", Some(0))],
        };
        let m = pod_metrics(&pod, &stats, "now").unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(m["window"], "10s");
        assert_eq!(
            m["containers"],
            json!([{"name": "app", "usage": {"cpu": "1m", "memory": "8Mi"}},
                   {"name": "side", "usage": {"cpu": "0", "memory": "8Mi"}}])
        );
        let partial = PodStats {
            pod_ref: reference.clone(),
            containers: vec![container("app", Some(1)), container("new", None)],
        };
        assert_eq!(pod_metrics(&pod, &partial, "now"), None);
        assert_eq!(pod_metrics(&pod, &PodStats { pod_ref: reference, containers: vec![] }, "now"), None);
    }

    #[test]
    fn the_summary_reads_back_what_it_writes() {
        let summary = Summary {
            node: NodeStats { node_name: "n1".into(), cpu: Some(cpu(Some(3))), memory: None },
            pods: vec![PodStats { pod_ref: PodReference::default(), containers: vec![] }],
        };
        let text = serde_json::to_string(&summary).unwrap();
        assert!(text.contains("\"usageNanoCores\":3") && text.contains("\"podRef\""), "{text}");
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), summary);
    }
}
