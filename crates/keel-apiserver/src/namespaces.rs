//! What the cluster starts with: the system namespaces and the local APIServices. (The end of a namespace's life is the namespace controller's:
//! a delete marks it Terminating, the controller empties it and removes the `kubernetes` finalizer, and
//! the finalize write that leaves it without finalizers deletes it.)

use keel_api::meta::{self, Fresh};
use keel_api::resources;
use serde_json::{json, Value};

use crate::storage::{Storage, StorageError};

/// The namespaces every Kubernetes cluster has.
pub const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that do not exist yet (every master does this at start; the store's
/// create-if-absent makes it safe to race).
pub async fn ensure_system(storage: &Storage) -> Result<(), StorageError> {
    for name in SYSTEM_NAMESPACES {
        let ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        });
        create_if_absent(storage, "namespaces", ns).await?;
    }
    Ok(())
}

/// Stores `object`, a core/v1 `plural` the masters make themselves, with the metadata a create gives it,
/// unless an object of its name exists (every master does this at start; the store's create-if-absent
/// makes it safe to race).
pub async fn create_if_absent(storage: &Storage, plural: &str, object: Value) -> Result<(), StorageError> {
    let Some(resource) = resources::find("", "v1", plural) else { return Ok(()) };
    create_resource_if_absent(storage, resource, object).await
}

/// The local APIServices of the built-in group versions (`v1.apps`, …), as kube-apiserver's aggregator
/// registers them at start.
pub async fn ensure_local_api_services(storage: &Storage) -> Result<(), StorageError> {
    let Some(resource) = resources::find("apiregistration.k8s.io", "v1", "apiservices") else { return Ok(()) };
    for service in keel_api::kinds::apiregistration::local() {
        create_resource_if_absent(storage, resource, service).await?;
    }
    Ok(())
}

/// Stores `object` of `resource` as [`create_if_absent`] does.
async fn create_resource_if_absent(
    storage: &Storage,
    resource: &resources::Resource,
    mut object: Value,
) -> Result<(), StorageError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    let key = resource.key(&namespace, &name);
    match storage.get(&key).await {
        Ok(_) => return Ok(()),
        Err(StorageError::NotFound) => {}
        Err(e) => return Err(e),
    }
    let fresh = Fresh { now: jiff::Timestamp::now(), uid: uuid::Uuid::new_v4().to_string(), random: 0 };
    let in_namespace = resource.namespaced.then_some(namespace.as_str());
    if meta::prepare_create(resource, &mut object, in_namespace, &fresh).is_err() {
        return Ok(());
    }
    let value = serde_json::to_vec(&object).unwrap_or_default();
    match storage.create(&key, value).await {
        Ok(_) | Err(StorageError::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}
