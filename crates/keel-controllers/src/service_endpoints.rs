//! The Endpoints and EndpointSlice controllers' loop: reconciles each Service with a selector when it or a
//! pod it selects changes, from a fresh list of the selector's pods, writing [`endpoints::endpoints`] and
//! [`endpoints::slices`] when they differ from what is stored. Both are owned by the Service (Kubernetes'
//! Endpoints are not; here the garbage collector removes them with their Service).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::endpoints::{self, MANAGED_BY, MANAGER, SERVICE_NAME};
use crate::error::ignore_gone;
use crate::reconciling::{reconciled, retry};
use crate::{pods, Error};

struct Context {
    client: Client,
}

fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub async fn run(client: Client) -> Result<(), Error> {
    let controller = Controller::new(Api::<Service>::all(client.clone()), watcher::Config::default());
    let services = controller.store();
    controller
        .watches(Api::<Pod>::all(client.clone()), watcher::Config::default(), move |pod: Pod| {
            let namespace = pod.namespace();
            services
                .state()
                .into_iter()
                .filter(|s| s.namespace() == namespace && selects(s, &pod))
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

/// The owner reference of what the Service's controllers write.
fn owned_by(service: &Service) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    let mut owner = pods::controller_reference("v1", "Service", &service.metadata);
    owner.block_owner_deletion = None;
    owner
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !endpoints::managed(&service) || service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let selector: BTreeMap<String, String> = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let query = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let found = pod_api.list(&ListParams::default().labels(&query)).await?.items;

    let endpoints_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut desired = endpoints::endpoints(&service, &found);
    desired.metadata.owner_references = Some(vec![owned_by(&service)]);
    match endpoints_api.get_opt(&name).await? {
        None => match endpoints_api.create(&PostParams::default(), &desired).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        },
        Some(current) if current.subsets != desired.subsets || current.metadata.labels != desired.metadata.labels => {
            desired.metadata.resource_version = current.metadata.resource_version.clone();
            desired.metadata.owner_references =
                current.metadata.owner_references.clone().or(desired.metadata.owner_references);
            ignore_gone(endpoints_api.replace(&name, &PostParams::default(), &desired).await.map(drop))?;
        }
        Some(_) => {}
    }

    let slice_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let mine = format!("{SERVICE_NAME}={name},{MANAGED_BY}={MANAGER}");
    let existing = slice_api.list(&ListParams::default().labels(&mine)).await?.items;
    let wanted = endpoints::slices(&service, &found);
    for slice in &wanted {
        let slice_name = slice.name_any();
        match existing.iter().find(|s| s.name_any() == slice_name) {
            None => match slice_api.create(&PostParams::default(), slice).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_millis(200))),
                Err(e) => return Err(e.into()),
            },
            Some(current)
                if current.endpoints != slice.endpoints
                    || current.ports != slice.ports
                    || current.metadata.labels != slice.metadata.labels =>
            {
                let mut update = slice.clone();
                update.metadata.resource_version = current.metadata.resource_version.clone();
                ignore_gone(slice_api.replace(&slice_name, &PostParams::default(), &update).await.map(drop))?;
            }
            Some(_) => {}
        }
    }
    for stale in existing.iter().filter(|s| !wanted.iter().any(|w| w.name_any() == s.name_any())) {
        ignore_gone(slice_api.delete(&stale.name_any(), &Default::default()).await.map(drop))?;
    }
    // Pods whose labels stop matching are not mapped to the Service: look again now and then.
    Ok(Action::requeue(Duration::from_secs(300)))
}
