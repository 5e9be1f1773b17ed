//! Benchmarks of the control loops through the Kubernetes API:
//!
//! - [`scheduler`]: pods created as fast as `clients` concurrent clients can, in a namespace made for the run,
//!   on a cluster whose nodes are already registered (hollow nodes); a watch notes when each pod is bound.
//!   Throughput is pods bound per second, as kube-scheduler's scheduler_perf measures it (pods created while
//!   the scheduler runs), and the time from a pod's creation to its binding.
//! - [`failover_trial`]: kill -9 of the master that leads the control loops, then through another master a
//!   pod created and a Deployment scaled up: the time from the kill until the store takes a write again, until
//!   the new leader's scheduler binds the pod, and until its Deployment and ReplicaSet controllers have created
//!   the new replica.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::BenchError;

pub(crate) fn api_error(what: &str) -> impl Fn(kube::Error) -> BenchError + '_ {
    move |e| BenchError::Other(format!("{what}: {e}"))
}

/// Creates a namespace for one run, named `prefix` and a random suffix; returns its name.
pub(crate) async fn run_namespace(client: &Client, prefix: &str) -> Result<String, BenchError> {
    let namespace = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(api_error("cannot create the namespace"))?;
    Ok(namespace)
}

/// The pods the scheduler benchmark creates: one container asking for a little CPU and memory, as
/// scheduler_perf's default pod does.
fn bench_pod(namespace: &str, name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))
    .expect("a valid pod")
}

/// What one run of [`scheduler`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchedulerRun {
    pub pods: usize,
    pub nodes: usize,
    /// From the first create sent to the last create answered.
    pub create_secs: f64,
    /// From the first create sent to the last pod seen bound.
    pub total_secs: f64,
    /// Pods bound per second over the whole run (pods / total_secs).
    pub bound_per_sec: f64,
    /// Pods bound in each whole second from the first binding (scheduler_perf's samples), and their average.
    pub per_second: Vec<usize>,
    pub per_second_avg: f64,
    /// From a pod's create answered to its binding seen, ms.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// Creates `pods` pods over `clients` concurrent clients and waits (at most `timeout`) until every one is
/// bound; deletes them (grace period 0) and the namespace afterwards.
pub async fn scheduler(
    client: Client,
    pods: usize,
    clients: usize,
    timeout: Duration,
) -> Result<SchedulerRun, BenchError> {
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(api_error("cannot list nodes"))?
        .items
        .len();
    let namespace = run_namespace(&client, "keel-bench-sched").await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    // Bindings as the watch sees them.
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watch_api = api.clone();
    let watching = tokio::spawn(async move {
        let mut bound: HashMap<String, Instant> = HashMap::new();
        let mut synced = Some(synced_tx);
        let mut events = watcher::watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            match e {
                Ok(Event::InitDone) => {
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Apply(p) | Event::InitApply(p))
                    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() =>
                {
                    bound.entry(p.name_any()).or_insert_with(Instant::now);
                    if bound.len() == pods {
                        return bound;
                    }
                }
                _ => {}
            }
        }
        bound
    });
    synced_rx.await.map_err(|_| BenchError::Other("the pod watch ended before it listed".into()))?;

    let start = Instant::now();
    let created: Vec<Result<(String, Instant), kube::Error>> = futures::stream::iter(0..pods)
        .map(|i| {
            let api = api.clone();
            let pod = bench_pod(&namespace, &format!("p-{i}"), json!({"app": "bench"}));
            async move {
                let mut tries = 0;
                loop {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => return Ok((p.name_any(), Instant::now())),
                        Err(e) if tries < 5 => {
                            tries += 1;
                            tracing::debug!(error = %e, "create failed; trying again");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        })
        .buffer_unordered(clients.max(1))
        .collect()
        .await;
    let create_secs = start.elapsed().as_secs_f64();
    let created: HashMap<String, Instant> =
        created.into_iter().collect::<Result<_, _>>().map_err(api_error("cannot create a pod"))?;
    let bound = match tokio::time::timeout(timeout, watching).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(BenchError::Other(format!("the pod watch failed: {e}"))),
        Err(_) => return Err(BenchError::Other(format!("not every pod was bound within {timeout:?}"))),
    };
    let last = bound.values().max().copied().unwrap_or(start);
    let first = bound.values().min().copied().unwrap_or(start);
    let total_secs = last.duration_since(start).as_secs_f64();
    let seconds = last.duration_since(first).as_secs() as usize;
    let mut per_second = vec![0usize; seconds + 1];
    for t in bound.values() {
        per_second[t.duration_since(first).as_secs() as usize] += 1;
    }
    // The last, partial second is left out of the average (unless it is the only one).
    let whole = if per_second.len() > 1 { &per_second[..per_second.len() - 1] } else { &per_second[..] };
    let per_second_avg = whole.iter().sum::<usize>() as f64 / whole.len().max(1) as f64;
    let mut latencies: Vec<f64> = bound
        .iter()
        .filter_map(|(name, at)| created.get(name).map(|c| at.saturating_duration_since(*c).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));

    let _ = api
        .delete_collection(
            &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
            &ListParams::default(),
        )
        .await;
    let _ = Api::<Namespace>::all(client).delete(&namespace, &DeleteParams::default()).await;
    Ok(SchedulerRun {
        pods,
        nodes,
        create_secs,
        total_secs,
        bound_per_sec: pods as f64 / total_secs.max(1e-9),
        per_second,
        per_second_avg,
        latency_p50_ms: pct(0.5).copied().unwrap_or(0.0),
        latency_p99_ms: pct(0.99).copied().unwrap_or(0.0),
    })
}

/// One failover trial's figures, in ms from the kill.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverTrial {
    /// Which master led (and was killed).
    pub killed: usize,
    /// The first write (the probe pod's create) acknowledged.
    pub write_ms: f64,
    /// The probe pod seen bound by the new leader's scheduler.
    pub bind_ms: f64,
    /// The Deployment's new replica seen created (Deployment controller, then ReplicaSet controller).
    pub controllers_ms: f64,
}

/// The namespace and Deployment the failover trials scale.
pub const FAILOVER_NAMESPACE: &str = "keel-bench-failover";
const FAILOVER_DEPLOYMENT: &str = "failover";

/// The master (index into `masters`) whose /metrics say it leads the control loops.
pub async fn control_leader(masters: &[Client]) -> Option<usize> {
    for (i, c) in masters.iter().enumerate() {
        let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
        if let Ok(text) = c.request_text(req).await {
            if text.lines().any(|l| l.starts_with("leader_election_master_status{") && l.trim_end().ends_with(" 1")) {
                return Some(i);
            }
        }
    }
    None
}

/// Makes the namespace and the Deployment the trials scale (idempotent).
async fn prepare_failover(client: &Client) -> Result<(), BenchError> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": FAILOVER_NAMESPACE}})).expect("a namespace");
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(api_error("cannot create the namespace")(e)),
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": FAILOVER_DEPLOYMENT, "namespace": FAILOVER_NAMESPACE},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": FAILOVER_DEPLOYMENT}},
                 "template": {"metadata": {"labels": {"app": FAILOVER_DEPLOYMENT}},
                              "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]}}},
    }))
    .expect("a deployment");
    match Api::<Deployment>::namespaced(client.clone(), FAILOVER_NAMESPACE)
        .create(&PostParams::default(), &deployment)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(api_error("cannot create the deployment")(e)),
    }
}

async fn live_replicas(pods: &Api<Pod>) -> Option<usize> {
    let list = pods.list(&ListParams::default().labels(&format!("app={FAILOVER_DEPLOYMENT}"))).await.ok()?;
    Some(list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count())
}

/// One trial: the leading master (`pids[i]` is master `i`'s process) is killed with SIGKILL; then, through
/// the first other master, a pod is created and the trial Deployment scaled up by one, each retried every
/// 10 ms until accepted, and polled every 5 ms until bound / created.
pub async fn failover_trial(masters: &[Client], pids: &[u32]) -> Result<FailoverTrial, BenchError> {
    let leader = control_leader(masters).await.ok_or_else(|| BenchError::Other("no master leads".into()))?;
    let survivor = masters[(leader + 1) % masters.len()].clone();
    prepare_failover(&survivor).await?;
    let pods: Api<Pod> = Api::namespaced(survivor.clone(), FAILOVER_NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(survivor.clone(), FAILOVER_NAMESPACE);
    // Settled before the kill: as many pods as replicas.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replicas = loop {
        let d = deployments.get(FAILOVER_DEPLOYMENT).await.map_err(api_error("cannot read the deployment"))?;
        let want = d.spec.and_then(|s| s.replicas).unwrap_or(1) as usize;
        if live_replicas(&pods).await == Some(want) {
            break want;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Other("the trial deployment did not settle before the kill".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let probe = format!("probe-{:08x}", rand::random::<u32>());

    let killed = Instant::now();
    let status = std::process::Command::new("kill").args(["-9", &pids[leader].to_string()]).status();
    if !status.map(|s| s.success()).unwrap_or(false) {
        return Err(BenchError::Other(format!("cannot kill pid {}", pids[leader])));
    }
    let ms = |t: Instant| t.duration_since(killed).as_secs_f64() * 1000.0;
    let limit = killed + Duration::from_secs(60);
    let late = |what: &str| BenchError::Other(format!("{what} not within 60 s of the kill"));

    let bind = async {
        let pod = bench_pod(FAILOVER_NAMESPACE, &probe, json!({"app": "probe"}));
        let written = loop {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => break Instant::now(),
                Err(kube::Error::Api(s)) if s.code == 409 => break Instant::now(),
                Err(_) if Instant::now() < limit => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => return Err(late("the probe pod's create")),
            }
        };
        loop {
            if let Ok(p) = pods.get(&probe).await {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    return Ok((written, Instant::now()));
                }
            }
            if Instant::now() > limit {
                return Err(late("the probe pod's binding"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let scale = async {
        let patch = json!({"spec": {"replicas": replicas + 1}});
        loop {
            match deployments.patch(FAILOVER_DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => break,
                Err(_) if Instant::now() < limit => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => return Err(late("the scale")),
            }
        }
        loop {
            if live_replicas(&pods).await == Some(replicas + 1) {
                return Ok(Instant::now());
            }
            if Instant::now() > limit {
                return Err(late("the new replica"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (bound, scaled) = tokio::join!(bind, scale);
    let (written, bound) = bound?;
    let scaled = scaled?;
    let _ = pods.delete(&probe, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    Ok(FailoverTrial { killed: leader, write_ms: ms(written), bind_ms: ms(bound), controllers_ms: ms(scaled) })
}
