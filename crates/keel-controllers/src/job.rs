//! The Job controller's loop: reconciles each Job when it or one of its pods changes. It reads the Job and
//! the pods its selector finds straight from the API (a consistent list, so it never acts twice on a stale
//! cache), applies [`jobs::plan`], records Events as Kubernetes' job-controller does, and deletes a finished
//! Job whose `ttlSecondsAfterFinished` ran out ([`jobs::ttl_expired`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::error::ignore_gone;
use crate::events::{self, reference};
use crate::jobs::{self, Note, Ttl};
use crate::reconciling::{reconciled, retry};
use crate::{pods, Error};

/// The name Kubernetes' Job controller records its Events under.
pub const COMPONENT: &str = "job-controller";

struct Context {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let all: Api<Job> = Api::all(client.clone());
    let owned: Api<Pod> = Api::all(client.clone());
    Controller::new(all, watcher::Config::default())
        .owns(owned, watcher::Config::default())
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let client = &ctx.client;
    let job_api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    // Decide from the stored Job, not the watch's copy: its counters are lower bounds for the next ones,
    // and the status is replaced at its resourceVersion.
    let Some(job) = job_api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let now = jiff::Timestamp::now();
    if jobs::finished(&job).is_some() {
        return expire(&job_api, &job, now).await;
    }
    let Some(selector) = job.spec.as_ref().and_then(|s| pods::selector_query(s.selector.as_ref())) else {
        return Ok(Action::await_change());
    };
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let found = pod_api.list(&ListParams::default().labels(&selector)).await?;
    let plan = jobs::plan(&job, &found.items, now);
    let me = reference("batch/v1", "Job", &job.metadata);

    let owner = pods::controller_reference("batch/v1", "Job", &job.metadata);
    for orphan in &plan.adopt {
        let Some(pod) = found.items.iter().find(|p| p.metadata.name.as_deref() == Some(orphan)) else { continue };
        let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
        refs.push(owner.clone());
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
        ignore_gone(pod_api.patch(orphan, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop))?;
    }

    let new_pods: Vec<Pod> = if plan.indexes.is_empty() {
        (0..plan.create).map(|_| jobs::pod_for(&job, None)).collect()
    } else {
        plan.indexes.iter().map(|i| jobs::pod_for(&job, Some(*i))).collect()
    };
    let results: Vec<_> = futures::stream::iter(new_pods)
        .map(|p| {
            let api = pod_api.clone();
            async move { api.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut failure = None;
    for r in results {
        match r {
            Ok(p) => {
                let note = Note::normal("SuccessfulCreate", format!("Created pod: {}", p.name_any()));
                events::note(client, COMPONENT, &me, &note).await;
            }
            Err(e) => {
                events::note(client, COMPONENT, &me, &Note::warning("FailedCreate", format!("Error creating: {e}")))
                    .await;
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e.into());
    }

    for victim in &plan.delete {
        match pod_api.delete(victim, &DeleteParams::default()).await {
            Ok(_) => {
                let note = Note::normal("SuccessfulDelete", format!("Deleted pod: {victim}"));
                events::note(client, COMPONENT, &me, &note).await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                let note = Note::warning("FailedDelete", format!("Error deleting: {e}"));
                events::note(client, COMPONENT, &me, &note).await;
                return Err(e.into());
            }
        }
    }

    if let Some(status) = &plan.status {
        let mut latest = job.clone();
        latest.status = Some(status.clone());
        match job_api.replace_status(&name, &PostParams::default(), &latest).await {
            Ok(_) => {}
            // Changed (or gone) since it was read: decide again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                return Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    for note in &plan.events {
        events::note(client, COMPONENT, &me, note).await;
    }
    Ok(match plan.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// A finished Job: deleted (with its pods, in the background) once its time to live runs out.
async fn expire(job_api: &Api<Job>, job: &Job, now: jiff::Timestamp) -> Result<Action, Error> {
    match jobs::ttl_expired(job, now) {
        Some(Ttl::After(after)) => Ok(Action::requeue(after)),
        Some(Ttl::Expired) => {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: job.metadata.uid.clone(), resource_version: None }),
                ..DeleteParams::background()
            };
            tracing::debug!(job = %job.name_any(), "time to live after finishing ran out; deleting");
            match job_api.delete(&job.name_any(), &params).await {
                // 409: a new Job of the same name; it has its own time to live.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::await_change()),
                r => ignore_gone(r.map(drop)).map(|()| Action::await_change()),
            }
        }
        None => Ok(Action::await_change()),
    }
}
