//! Every master's copy of the RBAC objects: one list and one watch of each of the four kinds' store
//! prefixes, decoded into a [`Policy`] that the authorizer reads without touching the store (as
//! kube-apiserver's RBAC authorizer reads its informers). A change takes effect on every master as soon as
//! its watch delivers it; a broken watch lists again.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use tokio::sync::watch;

use super::policy::Policy;
use crate::storage::{Change, Storage, StorageError, Watched};

/// The four kinds' store prefixes, in [`Objects`]' order.
const PREFIXES: [&str; 4] =
    ["/registry/clusterroles/", "/registry/roles/", "/registry/clusterrolebindings/", "/registry/rolebindings/"];

/// The stored objects of each prefix, by key.
type Objects = [BTreeMap<String, Vec<u8>>; 4];

/// The current policy; cheap to clone.
#[derive(Clone)]
pub struct Rbac {
    policy: watch::Receiver<Arc<Policy>>,
}

impl Rbac {
    /// Keeps a policy current from `storage` until `stop` says so.
    pub fn follow(storage: Storage, stop: watch::Receiver<bool>) -> Rbac {
        let (tx, rx) = watch::channel(Arc::new(Policy::default()));
        crate::storage::keep_following(
            "RBAC",
            storage,
            tx,
            stop,
            |storage, tx| async move { sync(&storage, &tx).await },
        );
        Rbac { policy: rx }
    }

    /// A fixed policy (tests).
    pub fn fixed(policy: Policy) -> Rbac {
        // A receiver keeps the last value after its sender is gone.
        let (_, rx) = watch::channel(Arc::new(policy));
        Rbac { policy: rx }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.borrow().clone()
    }
}

fn decode<T: serde::de::DeserializeOwned>(objects: &BTreeMap<String, Vec<u8>>) -> Vec<T> {
    objects
        .iter()
        .filter_map(|(key, bytes)| match serde_json::from_slice(bytes) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(key, error = %e, "an RBAC object that does not decode is left out");
                None
            }
        })
        .collect()
}

fn policy(o: &Objects) -> Policy {
    Policy::new(
        &decode::<ClusterRole>(&o[0]),
        &decode::<Role>(&o[1]),
        &decode::<ClusterRoleBinding>(&o[2]),
        &decode::<RoleBinding>(&o[3]),
    )
}

/// Lists the four prefixes at one revision, publishes the policy, then follows every change.
async fn sync(storage: &Storage, tx: &watch::Sender<Arc<Policy>>) -> Result<(), StorageError> {
    let mut objects: Objects = Default::default();
    let mut revision = 0;
    for (i, prefix) in PREFIXES.iter().enumerate() {
        let page = storage.list(prefix, None, 0, revision).await?;
        revision = page.revision;
        objects[i] = page.items.into_iter().map(|s| (s.key, s.value)).collect();
    }
    tx.send_replace(Arc::new(policy(&objects)));
    let mut watches = Vec::new();
    for (i, prefix) in PREFIXES.iter().enumerate() {
        let watch = storage.watch(prefix, revision + 1).await?;
        watches.push(
            futures::stream::unfold(watch, |mut w| async { w.next().await.map(|item| (item, w)) })
                .map(move |item| (i, item))
                .boxed(),
        );
    }
    let mut events = futures::stream::select_all(watches);
    while let Some((i, item)) = events.next().await {
        match item? {
            Watched::Changes(changes) => {
                for change in changes {
                    match change {
                        Change::Put { object, .. } => {
                            objects[i].insert(object.key, object.value);
                        }
                        Change::Delete { previous, .. } => {
                            objects[i].remove(&previous.key);
                        }
                    }
                }
                tx.send_replace(Arc::new(policy(&objects)));
            }
            Watched::Progress { .. } => {}
            Watched::Compacted { compacted } => {
                return Err(StorageError::Unavailable(format!("the RBAC watch fell behind compaction ({compacted})")));
            }
        }
    }
    Err(StorageError::Unavailable("the RBAC watch ended".into()))
}
