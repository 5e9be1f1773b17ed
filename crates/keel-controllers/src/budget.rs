//! The disruption controller's loop: each PodDisruptionBudget's status ([`budgets::status`]) recomputed
//! whenever the budget or a pod of its namespace changes, from a fresh list of the pods it picks and, when it
//! needs one, the scale of their controllers (a Deployment's through its ReplicaSet, a ReplicaSet's, a
//! StatefulSet's). The status is written with the budget's resourceVersion as read, so an eviction that
//! used a disruption in between is never overwritten: the write conflicts and the budget is looked at again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::reconciling::{reconciled, retry};
use crate::{budgets, pods, Error};

async fn reconcile(pdb: Arc<PodDisruptionBudget>, client: Arc<Client>) -> Result<Action, Error> {
    let namespace = pdb.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced((*client).clone(), &namespace);
    // The budget as it is now: its status may have changed (an eviction) since the cache saw it.
    let Some(pdb) = api.get_opt(&pdb.name_any()).await? else { return Ok(Action::await_change()) };
    let spec = pdb.spec.clone().unwrap_or_default();
    let picked = match spec.selector.as_ref() {
        // policy/v1: an empty selector picks every pod of the namespace; none picks nothing.
        Some(s) => pods::selector_query(Some(s)),
        None => None,
    };
    let found = match picked {
        Some(query) => {
            let pod_api: Api<Pod> = Api::namespaced((*client).clone(), &namespace);
            pod_api.list(&ListParams::default().labels(&query)).await?.items
        }
        None => vec![],
    };
    let needs_scale = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_)));
    let scale = if needs_scale { expected_scale(&client, &namespace, &found).await? } else { Err(String::new()) };
    let now = jiff::Timestamp::now();
    let status = budgets::status(&pdb, &found, scale, now);
    let requeue = if status.get("disruptedPods").is_some() { Some(Duration::from_secs(15)) } else { None };
    if budgets::changed(&pdb, &status) {
        let mut updated = pdb.clone();
        updated.status = Some(serde_json::from_value(status).map_err(|e| Error::Invalid(e.to_string()))?);
        match api.replace_status(&pdb.name_any(), &PostParams::default(), &updated).await {
            Ok(_) => {}
            // An eviction (or another write) came first: look again.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_millis(100))),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The summed replicas of the controllers of `found` (kube's `getExpectedScale`): `Ok(Err(why))` when a
/// pod has no controller with a scale.
async fn expected_scale(client: &Client, namespace: &str, found: &[Pod]) -> Result<Result<i32, String>, Error> {
    let mut controllers = BTreeSet::new();
    for pod in found {
        let Some(owner) = pods::controller_of(&pod.metadata) else {
            return Ok(Err(format!("found no controllers for pod {:?}", pod.name_any())));
        };
        controllers.insert((owner.kind.clone(), owner.name.clone()));
    }
    let mut total = 0;
    let mut counted = BTreeSet::new();
    for (kind, name) in controllers {
        let (kind, name, replicas) = match kind.as_str() {
            "ReplicaSet" => {
                let Some(rs) = Api::<ReplicaSet>::namespaced(client.clone(), namespace).get_opt(&name).await? else {
                    continue;
                };
                match pods::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                    Some(d) => {
                        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
                        let Some(d) = deployments.get_opt(&d.name).await? else { continue };
                        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        ("Deployment".to_string(), d.name_any(), replicas)
                    }
                    None => (kind, name, rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
                }
            }
            "StatefulSet" => {
                let sets = Api::<StatefulSet>::namespaced(client.clone(), namespace);
                let Some(set) = sets.get_opt(&name).await? else { continue };
                (kind, name, set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
            }
            other => return Ok(Err(format!("found no scale for {other} {name:?}"))),
        };
        if counted.insert((kind, name)) {
            total += replicas;
        }
    }
    Ok(Ok(total))
}

/// Keeps every PodDisruptionBudget's status current.
pub async fn run(client: Client) -> Result<(), Error> {
    let budgets: Api<PodDisruptionBudget> = Api::all(client.clone());
    let controller = Controller::new(budgets, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(Api::<Pod>::all(client.clone()), watcher::Config::default(), move |pod: Pod| {
            let namespace = pod.namespace();
            store
                .state()
                .into_iter()
                .filter(|b| b.namespace() == namespace)
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .run(reconcile, retry, Arc::new(client))
        .for_each(reconciled)
        .await;
    Ok(())
}
