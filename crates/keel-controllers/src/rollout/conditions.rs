//! A Deployment's status conditions as Kubernetes keeps them: types, reasons and messages from
//! `deployment_util.go`, and the rule for replacing one (same status and reason: untouched; same status: the
//! transition time stays).

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Progressing=True: the pass created the new ReplicaSet.
pub const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
/// Progressing=True: a Deployment without a Progressing condition already had its new ReplicaSet.
pub const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
/// Progressing=True: replicas moved from old to new or became ready or available.
pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
/// Progressing=True: the rollout is complete.
pub const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Progressing=False: no progress within `spec.progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// Progressing=Unknown: `spec.paused` is set.
pub const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";
/// Progressing=Unknown: `spec.paused` was cleared.
pub const DEPLOYMENT_RESUMED: &str = "DeploymentResumed";
/// Available=True.
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
/// Available=False.
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

pub fn get<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_deref().unwrap_or_default().iter().find(|c| c.type_ == type_)
}

pub fn reason(condition: Option<&DeploymentCondition>) -> Option<&str> {
    condition.and_then(|c| c.reason.as_deref())
}

pub fn new(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Kubernetes' `SetDeploymentCondition`: a condition with the same status and reason as the current one
/// changes nothing; with the same status it keeps the current transition time; it goes to the end of the list.
pub fn set(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove(status, &condition.type_);
    status.conditions.get_or_insert_with(Vec::new).push(condition);
}

pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}
