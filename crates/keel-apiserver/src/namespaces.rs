//! The namespaces the cluster starts with. (The end of a namespace's life is the namespace controller's:
//! a delete marks it Terminating, the controller empties it and removes the `kubernetes` finalizer, and
//! the finalize write that leaves it without finalizers deletes it.)

use keel_api::meta::{self, Fresh};
use keel_api::resources;
use serde_json::json;

use crate::storage::{Storage, StorageError};

/// The namespaces every Kubernetes cluster has.
pub const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that do not exist yet (every master does this at start; the store's
/// create-if-absent makes it safe to race).
pub async fn ensure_system(storage: &Storage) -> Result<(), StorageError> {
    let Some(namespaces) = resources::find("", "v1", "namespaces") else { return Ok(()) };
    for name in SYSTEM_NAMESPACES {
        let key = namespaces.key("", name);
        match storage.get(&key).await {
            Ok(_) => continue,
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let fresh = Fresh { now: jiff::Timestamp::now(), uid: uuid::Uuid::new_v4().to_string(), random: 0 };
        if meta::prepare_create(namespaces, &mut ns, None, &fresh).is_err() {
            continue;
        }
        ns["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": name});
        let value = serde_json::to_vec(&ns).unwrap_or_default();
        match storage.create(&key, value).await {
            Ok(_) | Err(StorageError::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
