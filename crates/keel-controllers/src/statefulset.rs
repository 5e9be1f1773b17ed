//! The StatefulSet controller's loop: reconciles each StatefulSet when it, one of its pods or one of its
//! ControllerRevisions changes. Each pass lists the pods and revisions its selector finds straight from the
//! API and applies [`statefulsets::plan`]: the update revision first, then adoptions, identity labels,
//! creations, deletions, old revisions, and the status, stopping at the first failed write.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::daemonset::{adopt, delete_pods, store_revision};
use crate::error::ignore_gone;
use crate::reconciling::{reconciled, retry};
use crate::{events, pods, statefulsets, Error};

const COMPONENT: &str = "statefulset-controller";

struct Context {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .owns(Api::<ControllerRevision>::all(client.clone()), watcher::Config::default())
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let client = &ctx.client;
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let Some(spec) = set.spec.as_ref() else { return Ok(Action::await_change()) };
    let Some(selector) = pods::selector_query(Some(&spec.selector)) else {
        return Ok(Action::await_change());
    };
    let by_selector = ListParams::default().labels(&selector);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let found = pod_api.list(&by_selector).await?.items;
    let revision_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let revisions = revision_api.list(&by_selector).await?.items;
    let plan = statefulsets::plan(&set, &found, &revisions, jiff::Timestamp::now());

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    if !store_revision(&revision_api, &plan.revision).await? {
        let count = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
        let patch = json!({"status": {"collisionCount": count}});
        ignore_gone(sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let owner = pods::controller_reference("apps/v1", "StatefulSet", &set.metadata);
    adopt(&pod_api, &found, &plan.adopt, &owner).await?;
    for (pod, labels) in &plan.relabel {
        let patch = json!({"metadata": {"labels": labels}});
        ignore_gone(pod_api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }
    let mut requeue = plan.requeue_after;
    let created: Vec<Result<bool, kube::Error>> = futures::stream::iter(plan.create.iter().cloned())
        .map(|pod| {
            let (api, client, set, name) = (pod_api.clone(), client.clone(), set.clone(), name.clone());
            async move {
                let member = pod.name_any();
                // Its claims first (kept from an earlier pod if they exist).
                let ordinal = member.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(0);
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
                for claim in statefulsets::member_claims(&set, ordinal) {
                    match claims.create(&PostParams::default(), &claim).await {
                        Ok(_) => {
                            let message =
                                format!("create Claim {} Pod {member} in StatefulSet {name} success", claim.name_any());
                            events::record(
                                &client,
                                COMPONENT,
                                set.as_ref(),
                                events::NORMAL,
                                "SuccessfulCreate",
                                &message,
                            )
                            .await;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {
                        let message = format!("create Pod {member} in StatefulSet {name} successful");
                        events::record(&client, COMPONENT, set.as_ref(), events::NORMAL, "SuccessfulCreate", &message)
                            .await;
                        Ok(true)
                    }
                    // A pod of that name the selector did not find: decide again shortly.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        tracing::info!(pod = %member, statefulset = %name, "a pod of that name exists already");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for made in created {
        if !made? {
            requeue = Some(Duration::from_secs(1));
        }
    }
    delete_pods(client, COMPONENT, &pod_api, &set, &plan.delete, |member| {
        format!("delete Pod {member} in StatefulSet {name} successful")
    })
    .await?;
    for old in &plan.delete_revisions {
        ignore_gone(revision_api.delete(old, &DeleteParams::default()).await.map(drop))?;
    }
    if let Some(status) = &plan.status {
        let patch = json!({"status": status});
        ignore_gone(sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
