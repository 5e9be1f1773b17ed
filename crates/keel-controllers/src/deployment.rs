//! The Deployment controller's loop: reconciles each Deployment when it or one of its ReplicaSets changes.
//! It reads the ReplicaSets its selector finds straight from the API and applies [`rollout::plan`] in the
//! plan's order, stopping at the first failed write (the next pass decides again from what is stored).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::error::ignore_gone;
use crate::reconciling::reconciled;
use crate::{pods, rollout, Error};

struct Context {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let owned: Api<ReplicaSet> = Api::all(client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(owned, watcher::Config::default())
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

fn retry(_: Arc<Deployment>, e: &Error, _: Arc<Context>) -> Action {
    tracing::info!(error = %e, "deployment reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    // Decide from the stored Deployment, not the watch's copy, so that a status replace does not conflict
    // on a version the cache has not caught up with.
    let d = match deployments.get_opt(&name).await? {
        Some(d) => d,
        None => return Ok(Action::await_change()),
    };
    let selector = d.spec.as_ref().and_then(|s| pods::selector_query(Some(&s.selector)));
    let owned = match &selector {
        Some(q) => sets.list(&ListParams::default().labels(q)).await?.items,
        None => Vec::new(),
    };
    let plan = rollout::plan(&d, &owned, jiff::Timestamp::now());
    if let Some(rs) = &plan.create {
        match sets.create(&PostParams::default(), rs).await {
            Ok(_) => {}
            // Someone made it already (or a hash collision the next pass resolves): decide again.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        }
    }
    for update in &plan.update {
        sets.patch(&update.name, &PatchParams::default(), &Patch::Merge(&update.merge_patch())).await?;
    }
    for old in &plan.delete {
        ignore_gone(sets.delete(old, &DeleteParams::background()).await.map(drop))?;
    }
    if let Some(revision) = &plan.deployment_revision {
        let patch = json!({"metadata": {"annotations": {rollout::REVISION: revision}}});
        deployments.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    if let Some(status) = &plan.status {
        let mut latest = d.clone();
        if plan.deployment_revision.is_some() {
            // The annotation patch moved its resourceVersion on: replace from the current one.
            latest = deployments.get(&name).await?;
        }
        latest.status = Some(status.clone());
        match deployments.replace_status(&name, &PostParams::default(), &latest).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                return Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match plan.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
