//! The ReplicaSet controller's loop: reconciles each ReplicaSet when it or one of its pods changes. It reads
//! the pods its selector finds straight from the API (a consistent list, so it never acts twice on a stale
//! cache) and applies [`replicas::plan`].

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::error::ignore_gone;
use crate::reconciling::{reconciled, retry};
use crate::{events, pods, replicas, Error};

/// The component whose events a ReplicaSet (or ReplicationController) gets.
const COMPONENT: &str = "replicaset-controller";

struct Context {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let owned: Api<Pod> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(owned, watcher::Config::default())
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let owner = pods::controller_reference("apps/v1", "ReplicaSet", &rs.metadata);
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    sync(&ctx.client, &rs, owner, &sets).await
}

/// Brings the pods of `rs` to its spec ([`replicas::plan`]), creating them with `owner` as their controller,
/// and writes its status through `status` (a ReplicaSet's, or the ReplicationController `rs` stands for).
pub(crate) async fn sync<K>(
    client: &Client,
    rs: &ReplicaSet,
    owner: OwnerReference,
    status: &Api<K>,
) -> Result<Action, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let Some(spec) = rs.spec.as_ref() else { return Ok(Action::await_change()) };
    let Some(selector) = pods::selector_query(Some(&spec.selector)) else {
        return Ok(Action::await_change());
    };
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let found = pod_api.list(&ListParams::default().labels(&selector)).await?;
    let plan = replicas::plan(rs, &found.items, jiff::Timestamp::now());

    for orphan in &plan.adopt {
        let Some(pod) = found.items.iter().find(|p| p.metadata.name.as_deref() == Some(orphan)) else { continue };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
        ignore_gone(pod_api.patch(orphan, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }
    let mut failed: Option<String> = None;
    if plan.create > 0 {
        let template = spec.template.clone().unwrap_or_default();
        let pod = pods::pod_from_template(&template, &namespace, &format!("{name}-"), owner.clone());
        let params = PostParams::default();
        let results: Vec<_> = futures::stream::iter(0..plan.create)
            .map(|_| pod_api.create(&params, &pod))
            .buffer_unordered(16)
            .collect()
            .await;
        // A refused create (a quota, a limit range, a webhook) is kube's FailedCreate: an event, the
        // ReplicaFailure condition, and another try later; anything else fails the pass.
        for r in results {
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) && e.code != 409 => {
                    failed.get_or_insert_with(|| format!("Error creating: {}", e.message));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(message) = &failed {
            let involved = events::reference(&owner.api_version, &owner.kind, &rs.metadata);
            events::note(client, COMPONENT, &involved, &events::Note::warning("FailedCreate", message.clone())).await;
        }
    }
    for victim in &plan.delete {
        ignore_gone(pod_api.delete(victim, &DeleteParams::default()).await.map(drop))?;
    }
    let had_failure = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "ReplicaFailure"));
    let wanted = match (&plan.status, &failed, had_failure) {
        (Some(w), None, false) => Some(json!(w)),
        (w, failure, _) => {
            let mut w = w.as_ref().map(|w| json!(w)).unwrap_or_else(|| json!({}));
            let others = rs.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            let mut conditions: Vec<serde_json::Value> =
                others.iter().filter(|c| c.type_ != "ReplicaFailure").map(|c| json!(c)).collect();
            if let Some(message) = failure {
                conditions.push(json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                    "message": message, "lastTransitionTime": Time(jiff::Timestamp::now())}));
            }
            w["conditions"] = json!(conditions);
            Some(w)
        }
    };
    if let Some(wanted) = wanted {
        let patch = json!({"status": wanted});
        ignore_gone(status.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }
    if failed.is_some() {
        return Ok(Action::requeue(std::time::Duration::from_secs(5)));
    }
    Ok(match plan.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
