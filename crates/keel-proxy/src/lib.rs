//! keel's Service proxy (kube-proxy's part), run by every node agent: it watches Services and
//! EndpointSlices and keeps an nftables table in the node's network namespace that sends traffic for a
//! cluster IP, a node port or a load-balancer address straight to a ready endpoint, in the kernel (no
//! proxy process in the data path).
//!
//! - [`model`]: the API's objects → the Service ports and the endpoints this node uses (pure);
//! - [`rules`]: that model → the table, and the `nft` transaction that gets there from the last (pure);
//! - [`nft`]: applying a transaction (`nft -f -`), behind the [`nft::Nftables`] trait;
//! - [`ServiceState`]: one watch of Services and one of EndpointSlices, shared with the node's DNS server;
//! - [`run`]: the loop: a sync at most every [`MIN_SYNC_INTERVAL`] after a change, and a full
//!   re-application every [`RESYNC_INTERVAL`] (a table someone flushed comes back).

pub mod conntrack;
pub mod model;
pub mod netns;
pub mod nft;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt as _};
use kube::Api;

pub use rules::{Cidr, NodeNetwork};

/// How long changes are gathered before a sync (a rollout changes many slices at once).
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How often the whole table is applied again even when nothing changed.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nft: {0}")]
    Nft(String),
}

/// What the proxy needs to know about its node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node's name (an endpoint on it is local).
    pub node_name: String,
    pub network: NodeNetwork,
    /// The network namespace the pods' network lives in (the agent's `--cni-netns`), or this process's.
    pub netns: Option<std::path::PathBuf>,
}

/// Keeps the table equal to what the Services and slices want, remembering what it applied last.
pub struct Syncer<N: nft::Nftables> {
    nft: N,
    node: String,
    network: NodeNetwork,
    /// What the last successful transaction made; `None` until the first, and after a failure (the next
    /// replaces the table whole).
    applied: Option<rules::Ruleset>,
    /// The Service ports it was made for (for the UDP conntrack entries a change leaves stale).
    ports: Vec<model::ServicePort>,
}

impl<N: nft::Nftables> Syncer<N> {
    pub fn new(nft: N, node: String, network: NodeNetwork) -> Syncer<N> {
        Syncer { nft, node, network, applied: None, ports: Vec::new() }
    }

    /// Brings the table to what `services` and `slices` want; `force` applies it even if nothing changed.
    /// Returns whether a transaction ran.
    pub fn sync(&mut self, services: &[Service], slices: &[EndpointSlice], force: bool) -> Result<bool, ProxyError> {
        let ports = model::service_ports(services, slices, &self.node);
        let desired = rules::ruleset(&ports, &self.network);
        if !force && self.applied.as_ref() == Some(&desired) {
            return Ok(false);
        }
        let script = match (&self.applied, force) {
            (None, _) => rules::script(&desired, &rules::Ruleset::default(), rules::Mode::Replace),
            (Some(applied), true) => rules::script(&desired, applied, rules::Mode::Refresh),
            (Some(applied), false) => rules::script(&desired, applied, rules::Mode::Update),
        };
        match self.nft.apply(&script) {
            Ok(()) => {
                tracing::debug!(ports = ports.len(), size = desired.size(), "service rules applied");
                self.nft.flush(&conntrack::stale(&self.ports, &ports));
                self.applied = Some(desired);
                self.ports = ports;
                Ok(true)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }
}

/// Owned copies of a store's objects.
pub fn cloned<K: Clone>(items: Vec<Arc<K>>) -> Vec<K> {
    items.iter().map(|k| K::clone(k)).collect()
}

/// A store of every `K` in the cluster that `selected` selects, kept by a watch in its own task that says
/// on `changed` whenever something arrives; ready once the first list is in.
pub async fn follow<K>(
    client: kube::Client,
    selected: watcher::Config,
    changed: tokio::sync::watch::Sender<()>,
) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = watcher(Api::<K>::all(client), selected).default_backoff().reflect(writer).for_each(move |event| {
        if let Err(e) = event {
            tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying");
        }
        changed.send_replace(());
        futures::future::ready(())
    });
    tokio::spawn(events);
    let _ = store.wait_until_ready().await;
    store
}

/// The cluster's Services and EndpointSlices as this node sees them: one watch of each, shared by the
/// proxy and the node's DNS server.
#[derive(Clone)]
pub struct ServiceState {
    services: reflector::Store<Service>,
    slices: reflector::Store<EndpointSlice>,
    changed: tokio::sync::watch::Receiver<()>,
}

impl ServiceState {
    /// Starts the watches; returns once both have listed.
    pub async fn follow(client: kube::Client) -> ServiceState {
        let (changed_tx, changed) = tokio::sync::watch::channel(());
        let services = follow::<Service>(client.clone(), Default::default(), changed_tx.clone()).await;
        let slices = follow::<EndpointSlice>(client, Default::default(), changed_tx).await;
        ServiceState { services, slices, changed }
    }

    /// Every Service and EndpointSlice now.
    pub fn snapshot(&self) -> (Vec<Service>, Vec<EndpointSlice>) {
        (cloned(self.services.state()), cloned(self.slices.state()))
    }

    /// Resolves at the next change after the last one seen (after gathering changes for
    /// [`MIN_SYNC_INTERVAL`]); `false` once the watches are gone.
    pub async fn changed(&mut self) -> bool {
        if self.changed.changed().await.is_err() {
            return false;
        }
        tokio::time::sleep(MIN_SYNC_INTERVAL).await;
        self.changed.borrow_and_update();
        true
    }
}

/// Removes the table a proxy left in `netns` (an agent started with the proxy off: a table left behind would
/// keep routing to endpoints nothing updates any more). Nothing to do without nft.
pub fn remove(netns: Option<std::path::PathBuf>) -> Result<(), ProxyError> {
    let nft = nft::Nft { netns };
    if nft.check().is_err() {
        return Ok(());
    }
    nft::Nftables::apply(&nft, &rules::removal())
}

/// Runs the proxy until the process ends, keeping the node's table equal to what `state` says. Fails at
/// once only if nft cannot run.
pub async fn run(mut state: ServiceState, config: Config) -> Result<(), ProxyError> {
    let nft = nft::Nft { netns: config.netns.clone() };
    nft.check()?;
    tracing::info!(node = config.node_name, network = ?config.network, "service proxy running");

    let mut syncer = Syncer::new(nft, config.node_name, config.network);
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_INTERVAL, RESYNC_INTERVAL);
    let mut force = true;
    loop {
        let (s, e) = state.snapshot();
        if let Err(e) = tokio::task::block_in_place(|| syncer.sync(&s, &e, force)) {
            tracing::error!(error = %e, "cannot apply the service rules; trying again in a second");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        force = tokio::select! {
            more = state.changed() => {
                if !more {
                    return Ok(());
                }
                false
            }
            _ = resync.tick() => true,
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    #[derive(Default, Clone)]
    struct Recorder {
        scripts: Arc<Mutex<Vec<String>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl nft::Nftables for Recorder {
        fn apply(&self, script: &str) -> Result<(), ProxyError> {
            if *self.fail.lock().unwrap() {
                return Err(ProxyError::Nft("Error: Could not process rule: No such file or directory".into()));
            }
            self.scripts.lock().unwrap().push(script.to_string());
            Ok(())
        }

        fn flush(&self, _: &[conntrack::Flush]) {}
    }

    #[test]
    fn syncs_apply_changes_only_and_start_over_after_a_failure() {
        let recorder = Recorder::default();
        let mut syncer = Syncer::new(recorder.clone(), "n1".into(), NodeNetwork::default());
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        }))
        .unwrap();
        let scripts = || recorder.scripts.lock().unwrap().clone();
        assert!(syncer.sync(std::slice::from_ref(&svc), &[], false).unwrap());
        assert!(scripts()[0].contains("delete table ip keel-proxy"), "the first replaces the table");
        assert!(!syncer.sync(std::slice::from_ref(&svc), &[], false).unwrap(), "nothing changed");
        assert!(syncer.sync(std::slice::from_ref(&svc), &[], true).unwrap(), "forced");
        assert!(!scripts()[1].contains("delete table"));
        *recorder.fail.lock().unwrap() = true;
        assert!(syncer.sync(&[], &[], false).is_err());
        *recorder.fail.lock().unwrap() = false;
        assert!(syncer.sync(&[], &[], false).unwrap());
        assert!(scripts()[2].contains("delete table ip keel-proxy"), "after a failure the table is replaced whole");
    }
}
