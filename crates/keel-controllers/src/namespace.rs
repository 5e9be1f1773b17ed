//! The namespace controller's loop. A Terminating namespace has everything in it deleted through the API
//! (every namespaced resource discovery finds, with the same deletes a user would make, so pods get their
//! grace period and finalizers hold what they hold); its status conditions say what remains
//! ([`namespaces::conditions`]); once nothing does, the `kubernetes` finalizer is removed through the
//! finalize subresource and the API server deletes the namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::namespaces::{self, Content};
use crate::reconciling::{reconciled, retry};
use crate::Error;

/// How soon a namespace whose content is still going is looked at again (pods may take their grace period).
const RECHECK: Duration = Duration::from_secs(1);

struct Context {
    client: Client,
    /// The namespaced resources, discovered once per leadership (the API serves a fixed set).
    resources: tokio::sync::OnceCell<Vec<(ApiResource, ApiCapabilities)>>,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let all: Api<Namespace> = Api::all(client.clone());
    Controller::new(all, watcher::Config::default())
        .run(reconcile, retry, Arc::new(Context { client, resources: Default::default() }))
        .for_each(reconciled)
        .await;
    Ok(())
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !namespaces::terminating(&ns) {
        return Ok(Action::await_change());
    }
    let Some(finalizers) = namespaces::finalized(&ns) else {
        // Finalized already; what remains is up to other finalizers, and the API server deletes it then.
        return Ok(Action::await_change());
    };
    let name = ns.name_any();
    let content = delete_content(&ctx, &name).await;

    let all: Api<Namespace> = Api::all(ctx.client.clone());
    let existing = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let conditions = namespaces::conditions(&content, &existing, &now);
    let mut version = ns.resource_version();
    if !namespaces::same_conditions(&conditions, &existing) {
        let patch = json!({"status": {"conditions": conditions}});
        match all.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => version = updated.resource_version(),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if !content.is_empty() {
        return Ok(Action::requeue(RECHECK));
    }
    let mut finalize = (*ns).clone();
    finalize.metadata.resource_version = version;
    finalize.metadata.managed_fields = None;
    finalize.spec.get_or_insert_with(Default::default).finalizers = Some(finalizers);
    match all.replace_subresource("finalize", &name, &PostParams::default(), &finalize).await {
        Ok(_) => tracing::info!(namespace = %name, "namespace emptied and finalized"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Asks for every object in namespace `name` to be deleted, then counts what is still there.
async fn delete_content(ctx: &Context, name: &str) -> Content {
    let client = &ctx.client;
    let mut content = Content::default();
    let resources = match ctx.resources.get_or_try_init(|| namespaced_resources(client)).await {
        Ok(r) => r,
        Err(e) => {
            content.discovery_failure = Some(e.to_string());
            return content;
        }
    };
    for (ar, caps) in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, ar);
        let label = namespaces::resource_name(&ar.group, &ar.plural);
        if let Err(e) = delete_all(&api, caps).await {
            content.failures.push(format!("{label}: {e}"));
            continue;
        }
        match api.list_metadata(&ListParams::default()).await {
            Ok(left) => {
                for item in &left.items {
                    content.count(&label, item.metadata.finalizers.as_deref().unwrap_or_default());
                }
            }
            Err(e) => content.failures.push(format!("{label}: {e}")),
        }
    }
    content
}

/// Every namespaced resource the API serves that can be listed and deleted.
async fn namespaced_resources(client: &Client) -> Result<Vec<(ApiResource, ApiCapabilities)>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::DELETE);
            if caps.scope == Scope::Namespaced && usable {
                found.push((ar, caps));
            }
        }
    }
    Ok(found)
}

/// One deletecollection where the resource offers it, else a delete per object.
async fn delete_all(api: &Api<DynamicObject>, caps: &ApiCapabilities) -> Result<(), kube::Error> {
    let background = DeleteParams::background();
    if caps.supports_operation(verbs::DELETE_COLLECTION) {
        return api.delete_collection(&background, &ListParams::default()).await.map(drop);
    }
    for item in api.list_metadata(&ListParams::default()).await?.items {
        match api.delete(&item.name_any(), &background).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
