//! The DaemonSet controller's loop: reconciles each DaemonSet when it, one of its pods or one of its
//! ControllerRevisions changes, and every DaemonSet when a node appears, goes, or changes in what decides
//! eligibility (labels, taints, cordon, Ready). Each pass lists the nodes, the pods and the revisions its
//! selector finds straight from the API and applies [`daemonsets::plan`]: the revision first, then adoptions,
//! creations, deletions, old revisions, and the status, stopping at the first failed write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::error::ignore_gone;
use crate::history;
use crate::reconciling::{reconciled, retry};
use crate::{daemonsets, events, pods, Error};

const COMPONENT: &str = "daemonset-controller";
/// Writes of one kind in flight at once.
const CONCURRENCY: usize = 16;

struct Context {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .owns(Api::<ControllerRevision>::all(client.clone()), watcher::Config::default())
        .reconcile_all_on(node_changes(Api::all(client.clone())))
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

/// One item per change to the nodes that can change where DaemonSets run: a node added, deleted, or changed
/// in its labels, taints, cordon or Ready status (not its heartbeats), and one after every (re)list.
fn node_changes(api: Api<Node>) -> impl Stream<Item = ()> + Send + 'static {
    let mut seen: HashMap<String, String> = HashMap::new();
    watcher::watcher(api, watcher::Config::default()).default_backoff().filter_map(move |event| {
        let fire = match event {
            Ok(watcher::Event::Apply(node)) => {
                let now = eligibility(&node);
                seen.insert(node.name_any(), now.clone()) != Some(now)
            }
            Ok(watcher::Event::InitApply(node)) => {
                seen.insert(node.name_any(), eligibility(&node));
                false
            }
            Ok(watcher::Event::Delete(node)) => {
                seen.remove(&node.name_any());
                true
            }
            Ok(watcher::Event::Init) => {
                seen.clear();
                false
            }
            Ok(watcher::Event::InitDone) => true,
            Err(e) => {
                tracing::debug!(error = %e, "daemonset node watch failed; it retries");
                false
            }
        };
        futures::future::ready(fire.then_some(()))
    })
}

/// What of a node decides whether a daemon pod runs there.
fn eligibility(node: &Node) -> String {
    let spec = node.spec.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    json!({
        "labels": node.metadata.labels,
        "taints": spec.and_then(|s| s.taints.as_ref()),
        "unschedulable": spec.and_then(|s| s.unschedulable),
        "ready": ready,
    })
    .to_string()
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let client = &ctx.client;
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let Some(spec) = ds.spec.as_ref() else { return Ok(Action::await_change()) };
    let Some(selector) = pods::selector_query(Some(&spec.selector)) else {
        return Ok(Action::await_change());
    };
    let by_selector = ListParams::default().labels(&selector);
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let found = pod_api.list(&by_selector).await?.items;
    let revision_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let revisions = revision_api.list(&by_selector).await?.items;
    let plan = daemonsets::plan(&ds, &nodes, &found, &revisions, jiff::Timestamp::now());

    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    if !store_revision(&revision_api, &plan.revision).await? {
        let count = ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0) + 1;
        let patch = json!({"status": {"collisionCount": count}});
        ignore_gone(sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let owner = pods::controller_reference("apps/v1", "DaemonSet", &ds.metadata);
    adopt(&pod_api, &found, &plan.adopt, &owner).await?;

    let created: Vec<Result<(), kube::Error>> = futures::stream::iter(plan.create.iter().cloned())
        .map(|pod| {
            let (api, client, ds) = (pod_api.clone(), client.clone(), ds.clone());
            async move {
                let made = api.create(&PostParams::default(), &pod).await?;
                let message = format!("Created pod: {}", made.name_any());
                events::record(&client, COMPONENT, ds.as_ref(), events::NORMAL, "SuccessfulCreate", &message).await;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    created.into_iter().collect::<Result<Vec<()>, _>>()?;
    delete_pods(client, COMPONENT, &pod_api, &ds, &plan.delete, |pod| format!("Deleted pod: {pod}")).await?;
    for old in &plan.delete_revisions {
        ignore_gone(revision_api.delete(old, &DeleteParams::default()).await.map(drop))?;
    }
    if let Some(status) = &plan.status {
        let patch = json!({"status": status});
        ignore_gone(sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }
    Ok(match plan.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Creates or renumbers the current revision; `false` when its name is taken by a revision the pass did not
/// see (a collision to count).
pub(crate) async fn store_revision(api: &Api<ControllerRevision>, current: &history::Current) -> Result<bool, Error> {
    if let Some(revision) = &current.create {
        match api.create(&PostParams::default(), revision).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(number) = current.renumber {
        let patch = json!({"revision": number});
        api.patch(&current.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(true)
}

/// Takes the named orphans over, each at the version listed (a pod changed since is decided again later).
pub(crate) async fn adopt(
    api: &Api<Pod>,
    found: &[Pod],
    names: &[String],
    owner: &OwnerReference,
) -> Result<(), Error> {
    for orphan in names {
        let Some(pod) = found.iter().find(|p| p.metadata.name.as_ref() == Some(orphan)) else { continue };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
        ignore_gone(api.patch(orphan, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }
    Ok(())
}

/// Deletes the named pods, recording an event from `component` about `owner` for each.
pub(crate) async fn delete_pods<K>(
    client: &Client,
    component: &'static str,
    api: &Api<Pod>,
    owner: &Arc<K>,
    names: &[String],
    message: impl Fn(&str) -> String,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let deleted: Vec<Result<(), Error>> = futures::stream::iter(names.iter().cloned())
        .map(|victim| {
            let (api, client, owner, message) = (api.clone(), client.clone(), owner.clone(), message(&victim));
            async move {
                match api.delete(&victim, &DeleteParams::default()).await {
                    Ok(_) => {
                        events::record(
                            &client,
                            component,
                            owner.as_ref(),
                            events::NORMAL,
                            "SuccessfulDelete",
                            &message,
                        )
                        .await;
                        Ok(())
                    }
                    Err(e) => ignore_gone(Err(e)),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    deleted.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn heartbeats_do_not_change_eligibility_but_taints_and_readiness_do() {
        let base = json!({"metadata": {"name": "n1", "labels": {"a": "b"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}});
        let mut beat = base.clone();
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2026-01-01T00:00:10Z");
        beat["metadata"]["resourceVersion"] = json!("9");
        assert_eq!(eligibility(&node(base.clone())), eligibility(&node(beat)));
        let mut tainted = base.clone();
        tainted["spec"] = json!({"taints": [{"key": "k", "effect": "NoSchedule"}]});
        assert_ne!(eligibility(&node(base.clone())), eligibility(&node(tainted)));
        let mut down = base.clone();
        down["status"]["conditions"][0]["status"] = json!("Unknown");
        assert_ne!(eligibility(&node(base)), eligibility(&node(down)));
    }
}
