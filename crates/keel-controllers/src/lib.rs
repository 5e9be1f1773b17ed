//! keel's control loops: the scheduler's binding loop and the workload controllers. They reach cluster
//! state only through the Kubernetes API (kube-rs's watcher and Controller), as any operator does, and run
//! only on the master that leads: [`run`] starts them when this master becomes leader and stops them when it
//! is deposed. Every request they make carries the `keel-fence` header with the leader key's revision, so the
//! store refuses a write from a leader that has since been replaced (ADR 002).
//!
//! Each controller splits into a pure decision (what must change, given the objects: [`replicas`],
//! [`rollout`]) and a thin loop that reads and writes through the API.

pub mod autoscaler;
pub mod autoscaling;
pub mod budget;
pub mod budgets;
pub mod clusterrole_aggregation;
pub mod crd_cleanup;
pub mod cronjob;
pub mod cronjobs;
pub mod daemonset;
pub mod daemonsets;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
mod error;
pub mod events;
pub mod gc;
pub mod history;
pub mod job;
pub mod jobs;
pub mod load_balancers;
pub mod namespace;
pub mod namespaces;
pub mod node_health;
pub mod node_lifecycle;
pub mod pods;
mod reconciling;
pub mod replicas;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resource_quota;
pub mod rollout;
pub mod scheduling;
pub mod service_accounts;
pub mod service_endpoints;
pub mod statefulset;
pub mod statefulsets;
pub mod token_cleaner;
pub mod volume_binder;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use error::Error;

/// The request header that carries the fence (the apiserver's `keel-fence`).
pub const FENCE_HEADER: &str = "keel-fence";

/// How the loops behave.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scheduler: keel_scheduler::Config,
    /// How long a node may be silent (no Lease renewal, no status) before it is deemed unreachable.
    pub node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller looks at every node and its pods.
    pub node_monitor_period: Duration,
    /// Zone disruption and eviction rates (kube-controller-manager's flags).
    pub disruption: disruption::DisruptionSettings,
    /// Where the node lifecycle controller publishes what the zones are in (for `/readyz?verbose`); it says
    /// [`NOT_LEADING`] while this master does not run the loops.
    pub node_lifecycle_status: Option<Arc<watch::Sender<String>>>,
    /// How often every HorizontalPodAutoscaler is looked at (`--horizontal-pod-autoscaler-sync-period`).
    pub horizontal_pod_autoscaler_sync_period: Duration,
}

/// The node lifecycle status of a master that does not run the control loops.
pub const NOT_LEADING: &str = "not run on this master (it does not lead the control loops)";

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            scheduler: keel_scheduler::Config::default(),
            node_monitor_grace_period: Duration::from_secs(20),
            node_monitor_period: Duration::from_secs(1),
            disruption: Default::default(),
            node_lifecycle_status: None,
            horizontal_pod_autoscaler_sync_period: Duration::from_secs(15),
        }
    }
}

/// The credentials the loops reach this master's API with: the scheduler's and the other loops', each the
/// least it needs (the API server's RBAC roles `system:kube-scheduler`, and `system:kube-controller-manager`
/// with `keel:controller-manager`).
#[derive(Clone)]
pub struct Identities {
    pub controllers: kube::Config,
    pub scheduler: kube::Config,
}

/// Runs the control loops whenever `leading` holds `Some(fence)`, and stops them as soon as it changes;
/// returns when the sender is dropped.
pub async fn run(identities: Identities, mut leading: watch::Receiver<Option<i64>>, settings: Settings) {
    loop {
        let fence = match leading.wait_for(Option::is_some).await {
            Ok(f) => f.expect("waited for Some"),
            Err(_) => return,
        };
        let clients = fenced_client(&identities.controllers, fence, "kube-controller-manager")
            .and_then(|c| Ok((c, fenced_client(&identities.scheduler, fence, "kube-scheduler")?)));
        let (client, scheduler) = match clients {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the controllers' API client");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(fence, "leading: control loops starting");
        let mut loops = JoinSet::new();
        loops.spawn(scheduling::run(scheduler, settings.scheduler.clone()));
        loops.spawn(replicaset::run(client.clone()));
        loops.spawn(replicationcontroller::run(client.clone()));
        loops.spawn(deployment::run(client.clone()));
        loops.spawn(gc::run(client.clone()));
        loops.spawn(job::run(client.clone()));
        loops.spawn(cronjob::run(client.clone()));
        loops.spawn(service_endpoints::run(client.clone()));
        loops.spawn(load_balancers::run(client.clone()));
        loops.spawn(daemonset::run(client.clone()));
        loops.spawn(statefulset::run(client.clone()));
        loops.spawn(namespace::run(client.clone()));
        let ca = service_accounts::pem(identities.controllers.root_cert.as_deref().unwrap_or_default());
        loops.spawn(service_accounts::run(client.clone(), ca));
        loops.spawn(clusterrole_aggregation::run(client.clone()));
        loops.spawn(token_cleaner::run(client.clone()));
        loops.spawn(budget::run(client.clone()));
        loops.spawn(crd_cleanup::run(client.clone()));
        loops.spawn(resource_quota::run(client.clone()));
        loops.spawn(volume_binder::run(client.clone()));
        loops.spawn(autoscaler::run(client.clone(), settings.horizontal_pod_autoscaler_sync_period));
        let timing = node_lifecycle::Timing {
            grace: settings.node_monitor_grace_period,
            period: settings.node_monitor_period,
            disruption: settings.disruption,
            status: settings.node_lifecycle_status.clone(),
        };
        loops.spawn(node_lifecycle::run(client.clone(), timing));
        let deposed = tokio::select! {
            r = leading.wait_for(|l| *l != Some(fence)) => { let _ = r; true }
            Some(ended) = loops.join_next() => {
                match ended {
                    Ok(Ok(())) => tracing::warn!("a control loop ended; restarting them"),
                    Ok(Err(e)) => tracing::error!(error = %e, "a control loop failed; restarting them"),
                    Err(e) => tracing::error!(error = %e, "a control loop panicked; restarting them"),
                }
                false
            }
        };
        loops.shutdown().await;
        if let Some(status) = &settings.node_lifecycle_status {
            status.send_replace(NOT_LEADING.to_string());
        }
        if deposed {
            tracing::info!(fence, "no longer leading: control loops stopped");
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A client whose every request carries `fence`.
pub fn fenced_client(base: &kube::Config, fence: i64, agent: &str) -> Result<kube::Client, Error> {
    let mut config = base.clone();
    config.headers.push((HeaderName::from_static(FENCE_HEADER), HeaderValue::from(fence)));
    // The API server names the managers of fields by the User-Agent, as Kubernetes' components send it.
    if let Ok(agent) = HeaderValue::from_str(&format!("{agent}/v1.33.0 (keel)")) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    Ok(kube::Client::try_from(config)?)
}
