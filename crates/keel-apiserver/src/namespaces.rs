//! Namespaces the cluster starts with, and the end of a namespace's life: once marked Terminating, its
//! contents are deleted and then the namespace itself. (The namespace controller of the control loops takes
//! this over; until then the master that accepted the delete runs it.)

use std::time::Duration;

use keel_api::meta::{self, Fresh};
use keel_api::resources::{self, RESOURCES};
use serde_json::json;

use crate::storage::{Storage, StorageError};
use crate::AppState;

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

/// Deletes everything in namespace `name`, then the namespace, in the background; retried while objects
/// remain (for a while: objects held by finalizers keep it Terminating, as in Kubernetes).
pub fn finalize_later(state: AppState, name: String) {
    tokio::spawn(async move {
        for attempt in 0..120u32 {
            match finalize(&state.storage, &name).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(namespace = %name, error = %e, "namespace cleanup failed; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8) + 1))).await;
        }
        tracing::warn!(namespace = %name, "namespace still has content; left Terminating");
    });
}

/// Objects read per page while a namespace's contents are deleted.
const FINALIZE_PAGE: i64 = 500;

/// One pass: deletes the namespace's objects (those without finalizers), and the namespace once empty.
async fn finalize(storage: &Storage, name: &str) -> Result<bool, StorageError> {
    let mut remaining = 0usize;
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = r.prefix(Some(name));
        let mut start: Option<String> = None;
        loop {
            let page = storage.list(&prefix, start.as_deref(), FINALIZE_PAGE, 0).await?;
            start = (page.remaining > 0).then(|| page.items.last().map(|i| format!("{}\0", i.key))).flatten();
            for item in page.items {
                let held = serde_json::from_slice::<serde_json::Value>(&item.value)
                    .map(|v| !meta::finalizers(&v).is_empty())
                    .unwrap_or(false);
                if held {
                    remaining += 1;
                    continue;
                }
                match storage.delete(&item.key, Some(item.mod_revision)).await {
                    Ok((deleted, _)) if r.kind == "Service" => {
                        if let Ok(v) = serde_json::from_slice(&deleted.value) {
                            crate::allocator::release(storage, &crate::allocator::held(&v)).await;
                        }
                    }
                    Ok(_) | Err(StorageError::NotFound) => {}
                    Err(StorageError::Conflict { .. }) => remaining += 1,
                    Err(e) => return Err(e),
                }
            }
            if start.is_none() {
                break;
            }
        }
    }
    if remaining > 0 {
        return Ok(false);
    }
    let Some(namespaces) = resources::find("", "v1", "namespaces") else { return Ok(true) };
    match storage.delete(&namespaces.key("", name), None).await {
        Ok(_) | Err(StorageError::NotFound) => Ok(true),
        Err(e) => Err(e),
    }
}
