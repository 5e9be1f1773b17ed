//! The ReplicationController controller. A ReplicationController is a ReplicaSet whose selector is a plain
//! map of labels: each is reconciled as the ReplicaSet it stands for ([`as_replica_set`]) by the
//! ReplicaSet controller's sync, its pods owned by the ReplicationController and its status written to it.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::reconciling::{reconciled, retry};
use crate::{pods, replicaset, Error};

/// The ReplicaSet `rc` stands for: its metadata (and so its uid, which its pods' owner references name),
/// replicas, template and minReadySeconds, its selector as matchLabels.
pub fn as_replica_set(rc: &ReplicationController) -> ReplicaSet {
    let spec = rc.spec.clone().unwrap_or_default();
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(ReplicaSetSpec {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            selector: LabelSelector { match_labels: spec.selector, match_expressions: None },
            template: spec.template,
        }),
        status: rc.status.clone().map(|s| ReplicaSetStatus {
            replicas: s.replicas,
            available_replicas: s.available_replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            observed_generation: s.observed_generation,
            ready_replicas: s.ready_replicas,
            ..Default::default()
        }),
    }
}

async fn reconcile(rc: Arc<ReplicationController>, client: Arc<Client>) -> Result<Action, Error> {
    let owner = pods::controller_reference("v1", "ReplicationController", &rc.metadata);
    let controllers: Api<ReplicationController> =
        Api::namespaced((*client).clone(), &rc.namespace().unwrap_or_default());
    replicaset::sync(&client, &as_replica_set(&rc), owner, &controllers).await
}

pub async fn run(client: Client) -> Result<(), Error> {
    let controllers: Api<ReplicationController> = Api::all(client.clone());
    Controller::new(controllers, watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .run(reconcile, retry, Arc::new(client))
        .for_each(reconciled)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_replication_controller_stands_for_a_replica_set_with_match_labels() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "web", "uid": "u-1"},
            "spec": {"replicas": 2, "selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": 1, "readyReplicas": 1},
        }))
        .unwrap();
        let rs = as_replica_set(&rc);
        assert_eq!(rs.metadata.uid.as_deref(), Some("u-1"));
        let spec = rs.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels.unwrap()["app"], "web");
        assert_eq!(rs.status.unwrap().ready_replicas, Some(1));
    }
}
