//! Pod startup latency through the Kubernetes API: pods created in a namespace made for the run, each timed
//! from its create request sent to its watch event with phase `Running` (Kubernetes' pod startup SLI:
//! created → all containers started, as observed through a watch). The image must already be on the node.
//! At most `parallel` pods are starting at once: 1 measures one pod alone, a larger number pods that queue
//! behind each other on the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};

use crate::control::{api_error, run_namespace};
use crate::BenchError;

/// One container that sleeps; the image is never pulled (it must be on the node).
fn startup_pod(namespace: &str, name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "keel-bench-startup"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}],
        },
    }))
    .expect("a valid pod")
}

/// What one run of [`pod_startup`] measured, in ms unless named otherwise.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartupRun {
    pub pods: usize,
    pub parallel: usize,
    /// From the first create sent to the last pod seen Running.
    pub total_secs: f64,
    /// Create sent → the pod seen bound to a node.
    pub bound_p50_ms: f64,
    pub bound_p99_ms: f64,
    /// Create sent → the pod seen Running (the startup latency).
    pub running_p50_ms: f64,
    pub running_p99_ms: f64,
    pub running_max_ms: f64,
}

/// The value at quantile `q` of sorted `v` (nearest rank).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[derive(Default)]
struct Seen {
    sent: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

/// Creates `pods` pods of `image`, at most `parallel` starting at once, and waits (at most `timeout`) until
/// each is Running; then deletes them (grace period 0) and the namespace, and waits until the pods are gone
/// so that the next run starts on an empty node.
pub async fn pod_startup(
    client: Client,
    pods: usize,
    parallel: usize,
    image: &str,
    timeout: Duration,
) -> Result<StartupRun, BenchError> {
    let namespace = run_namespace(&client, "keel-bench-startup").await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let result = measure(&api, &namespace, pods, parallel.max(1), image, timeout).await;

    let _ = api
        .delete_collection(
            &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
            &ListParams::default(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match api.list_metadata(&ListParams::default()).await {
            Ok(l) if l.items.is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let _ = Api::<Namespace>::all(client).delete(&namespace, &DeleteParams::default()).await;
    result
}

async fn measure(
    api: &Api<Pod>,
    namespace: &str,
    pods: usize,
    parallel: usize,
    image: &str,
    timeout: Duration,
) -> Result<StartupRun, BenchError> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let starting = Arc::new(Semaphore::new(parallel));
    // A permit is held from a pod's create until the watch sees it Running.
    let permits: Arc<Mutex<HashMap<String, tokio::sync::OwnedSemaphorePermit>>> = Arc::default();

    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watching = {
        let (api, seen, permits) = (api.clone(), seen.clone(), permits.clone());
        tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(e) = events.next().await {
                let pod = match e {
                    Ok(Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                    _ => continue,
                };
                let now = Instant::now();
                let name = pod.name_any();
                let mut seen = seen.lock().await;
                if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    seen.bound.entry(name.clone()).or_insert(now);
                }
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && !seen.running.contains_key(&name)
                {
                    seen.running.insert(name.clone(), now);
                    permits.lock().await.remove(&name);
                    if seen.running.len() == pods {
                        return;
                    }
                }
            }
        })
    };
    synced_rx.await.map_err(|_| BenchError::Other("the pod watch ended before it listed".into()))?;

    let start = Instant::now();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<kube::Error>();
    let creating = async {
        for i in 0..pods {
            let permit = starting.clone().acquire_owned().await.expect("the semaphore is never closed");
            let name = format!("p-{i}");
            let pod = startup_pod(namespace, &name, image);
            permits.lock().await.insert(name.clone(), permit);
            seen.lock().await.sent.insert(name.clone(), Instant::now());
            let (api, failed) = (api.clone(), failed_tx.clone());
            // Creates run concurrently up to `parallel`; the permit bounds them.
            tokio::spawn(async move {
                if let Err(e) = api.create(&PostParams::default(), &pod).await {
                    let _ = failed.send(e);
                }
            });
        }
    };
    // The watch ends by itself once every pod is Running; on a timeout or a failed create it is stopped.
    let stop_watching = watching.abort_handle();
    let all_running = async {
        creating.await;
        watching.await.map_err(|e| BenchError::Other(format!("the pod watch failed: {e}")))
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, all_running) => r.map_err(|_| {
            BenchError::Other(format!("not every pod was Running within {timeout:?} (is the image on the node?)"))
        }).and_then(|r| r),
        Some(e) = failed_rx.recv() => Err(api_error("cannot create a pod")(e)),
    };
    if outcome.is_err() {
        stop_watching.abort();
    }
    outcome?;
    let total_secs = start.elapsed().as_secs_f64();

    let seen = seen.lock().await;
    let since_sent = |at: &HashMap<String, Instant>| {
        let mut v: Vec<f64> = at
            .iter()
            .filter_map(|(n, t)| seen.sent.get(n).map(|s| t.saturating_duration_since(*s).as_secs_f64() * 1000.0))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let bound = since_sent(&seen.bound);
    let running = since_sent(&seen.running);
    Ok(StartupRun {
        pods,
        parallel,
        total_secs,
        bound_p50_ms: quantile(&bound, 0.5),
        bound_p99_ms: quantile(&bound, 0.99),
        running_p50_ms: quantile(&running, 0.5),
        running_p99_ms: quantile(&running, 0.99),
        running_max_ms: running.last().copied().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
