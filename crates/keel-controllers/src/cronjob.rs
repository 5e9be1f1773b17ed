//! The CronJob controller's loop: reconciles each CronJob when it or one of its Jobs changes, and just after
//! each scheduled time. It reads the CronJob and the Jobs of its namespace straight from the API, applies
//! [`cronjobs::plan`] (deletions, then the new Job, then the status) and records Events as Kubernetes'
//! cronjob-controller does.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::cronjobs;
use crate::events::{self, reference};
use crate::jobs::Note;
use crate::reconciling::{reconciled, retry};
use crate::Error;

/// The name Kubernetes' CronJob controller records its Events under.
pub const COMPONENT: &str = "cronjob-controller";

struct Context {
    client: Client,
}

pub async fn run(client: Client) -> Result<(), Error> {
    let all: Api<CronJob> = Api::all(client.clone());
    let owned: Api<Job> = Api::all(client.clone());
    Controller::new(all, watcher::Config::default())
        .owns(owned, watcher::Config::default())
        .run(reconcile, retry, Arc::new(Context { client }))
        .for_each(reconciled)
        .await;
    Ok(())
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let client = &ctx.client;
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    // The stored CronJob: its lastScheduleTime is what keeps a scheduled time from starting twice.
    let Some(cj) = cron_jobs.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let job_api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let listed = job_api.list(&ListParams::default()).await?;
    let plan = cronjobs::plan(&cj, &listed.items, jiff::Timestamp::now());
    let me = reference("batch/v1", "CronJob", &cj.metadata);

    for victim in &plan.delete {
        match job_api.delete(victim, &DeleteParams::background()).await {
            Ok(_) => {
                events::note(client, COMPONENT, &me, &Note::normal("SuccessfulDelete", format!("Deleted job {victim}")))
                    .await
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                events::note(client, COMPONENT, &me, &Note::warning("FailedDelete", format!("Deleted job: {e}"))).await;
                return Err(e.into());
            }
        }
    }
    let mut status = plan.status.clone();
    if let Some(job) = &plan.create {
        match job_api.create(&PostParams::default(), job).await {
            Ok(created) => {
                let note = Note::normal("SuccessfulCreate", format!("Created job {}", created.name_any()));
                events::note(client, COMPONENT, &me, &note).await;
                if let Some(s) = status.as_mut() {
                    s.active.get_or_insert_with(Vec::new).push(reference("batch/v1", "Job", &created.metadata));
                }
            }
            // Created already (an earlier pass whose status write was lost): the time is taken care of.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                let note = Note::warning("FailedCreate", format!("Error creating job: {e}"));
                events::note(client, COMPONENT, &me, &note).await;
                return Err(e.into());
            }
        }
    }
    if let Some(status) = status {
        let mut latest = cj.clone();
        latest.status = Some(status);
        match cron_jobs.replace_status(&name, &PostParams::default(), &latest).await {
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
