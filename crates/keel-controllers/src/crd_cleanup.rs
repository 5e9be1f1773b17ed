//! The apiextensions server's finalizing controller: a CustomResourceDefinition being deleted (marked
//! Terminating with `customresourcecleanup.apiextensions.k8s.io` by the API server) has every custom object
//! of it deleted, as a user would delete them (their own finalizers are honoured), and once none is left,
//! loses the finalizer, which lets it go.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::reconciling::{reconciled, retry};
use crate::Error;

pub const FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// How soon a definition whose objects are being deleted is looked at again.
const RECHECK: Duration = Duration::from_secs(2);

/// The resource of a definition's objects, through its storage version.
pub fn storage_resource(crd: &CustomResourceDefinition) -> ApiResource {
    let spec = &crd.spec;
    let version = spec.versions.iter().find(|v| v.storage).or(spec.versions.first());
    let version = version.map(|v| v.name.clone()).unwrap_or_default();
    ApiResource {
        api_version: format!("{}/{version}", spec.group),
        group: spec.group.clone(),
        version,
        kind: spec.names.kind.clone(),
        plural: spec.names.plural.clone(),
    }
}

async fn reconcile(crd: Arc<CustomResourceDefinition>, client: Arc<Client>) -> Result<Action, Error> {
    if crd.metadata.deletion_timestamp.is_none() || !crd.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let resource = storage_resource(&crd);
    let all: Api<DynamicObject> = Api::all_with((*client).clone(), &resource);
    let left = all.list(&ListParams::default()).await?.items;
    if left.is_empty() {
        let remaining: Vec<&String> = crd.finalizers().iter().filter(|f| *f != FINALIZER).collect();
        let crds: Api<CustomResourceDefinition> = Api::all((*client).clone());
        // The resourceVersion makes this a compare-and-swap: a definition changed since is looked at again.
        let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": crd.resource_version()}});
        match crds.patch(&crd.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::info!(definition = crd.name_any(), "custom objects removed; the definition goes"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    for object in left.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with((*client).clone(), &ns, &resource),
            None => Api::all_with((*client).clone(), &resource),
        };
        match api.delete(&object.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(RECHECK))
}

/// Removes the objects of deleted CustomResourceDefinitions, then lets the definitions go.
pub async fn run(client: Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    Controller::new(crds, watcher::Config::default())
        .run(reconcile, retry, Arc::new(client))
        .for_each(reconciled)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_reached_through_the_storage_version() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1beta1", "served": true, "storage": false},
                             {"name": "v1", "served": true, "storage": true}]}
        }))
        .unwrap();
        let r = storage_resource(&crd);
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str(), r.kind.as_str()),
            ("example.com/v1", "widgets", "Widget")
        );
    }
}
