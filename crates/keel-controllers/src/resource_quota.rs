//! kube-controller-manager's resource quota controller: each ResourceQuota's status — `hard` from its
//! spec, `used` counted from every object it covers in its namespace (`keel_api::quota::recalculate`) —
//! written with the resourceVersion it was read at, after the objects were listed, so a charge the API
//! server made meanwhile fails the write and the quota is counted again. The API server charges creates
//! as they happen; this loop gives back what deletions and finished pods free, and takes in a changed
//! spec. A quota is counted again when one of the pods, Services, ConfigMaps, Secrets or claims of its
//! namespace changes, and every 30 s for the rest.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;

use crate::reconciling::{reconciled, retry};
use crate::Error;

/// How often a quota is counted again without a change seen.
const RESYNC: Duration = Duration::from_secs(30);

struct Context {
    client: Client,
}

/// How to list `group`/`plural`: a built-in resource from keel's table, any other from discovery.
async fn api_resource(client: &Client, group: &str, plural: &str) -> Option<ApiResource> {
    if let Some(r) = keel_api::resources::RESOURCES.iter().find(|r| r.group == group && r.plural == plural) {
        return Some(ApiResource {
            group: r.group.into(),
            version: r.version.into(),
            api_version: r.api_version(),
            kind: r.kind.into(),
            plural: r.plural.into(),
        });
    }
    let discovered = kube::discovery::oneshot::group(client, group).await.ok()?;
    discovered.recommended_resources().into_iter().map(|(r, _)| r).find(|r| r.plural == plural)
}

async fn reconcile(seen: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(ns), name) = (seen.namespace(), seen.name_any()) else { return Ok(Action::await_change()) };
    let quotas: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
    // Read again, then list: the status written is of objects listed after this revision of the quota.
    let Some(current) = quotas.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let quota = serde_json::to_value(&current).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut objects = vec![];
    for (group, plural) in keel_api::quota::counted_resources(&quota) {
        let Some(resource) = api_resource(&ctx.client, &group, &plural).await else {
            tracing::debug!(quota = %name, %group, %plural, "a counted resource is not served");
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &resource);
        let listed = api.list(&ListParams::default()).await?;
        let items = listed.items.iter().filter_map(|o| serde_json::to_value(o).ok()).collect::<Vec<Value>>();
        objects.push((group, plural, items));
    }
    let status = keel_api::quota::recalculate(&quota, &objects, jiff::Timestamp::now());
    if quota.get("status") == Some(&status) {
        return Ok(Action::requeue(RESYNC));
    }
    let mut updated = quota.clone();
    updated["status"] = status;
    let body: ResourceQuota = serde_json::from_value(updated).map_err(|e| Error::Invalid(e.to_string()))?;
    match quotas.replace_status(&name, &PostParams::default(), &body).await {
        Ok(_) => {
            tracing::debug!(namespace = %ns, quota = %name, "quota usage recounted");
            Ok(Action::requeue(RESYNC))
        }
        // Charged (or changed) meanwhile: count again.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Action::requeue(Duration::from_millis(100))),
        Err(e) => Err(e.into()),
    }
}

/// Every quota of `object`'s namespace, for a change of that object.
fn quotas_of<K: Resource>(quotas: &Store<ResourceQuota>, object: &K) -> Vec<ObjectRef<ResourceQuota>> {
    let ns = object.meta().namespace.clone();
    quotas.state().iter().filter(|q| q.namespace() == ns).map(|q| ObjectRef::from_obj(q.as_ref())).collect()
}

/// Keeps every ResourceQuota's status counted.
pub async fn run(client: Client) -> Result<(), Error> {
    let ctx = Arc::new(Context { client: client.clone() });
    let controller = Controller::new(Api::<ResourceQuota>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let wc = watcher::Config::default;
    let (s1, s2, s3, s4, s5) = (store.clone(), store.clone(), store.clone(), store.clone(), store);
    controller
        .watches(Api::<Pod>::all(client.clone()), wc(), move |o| quotas_of(&s1, &o))
        .watches(Api::<Service>::all(client.clone()), wc(), move |o| quotas_of(&s2, &o))
        .watches(Api::<ConfigMap>::all(client.clone()), wc(), move |o| quotas_of(&s3, &o))
        .watches(Api::<Secret>::all(client.clone()), wc(), move |o| quotas_of(&s4, &o))
        .watches(Api::<PersistentVolumeClaim>::all(client), wc(), move |o| quotas_of(&s5, &o))
        .run(reconcile, retry, ctx)
        .for_each(reconciled)
        .await;
    Ok(())
}
