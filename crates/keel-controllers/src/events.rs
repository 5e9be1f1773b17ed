//! core/v1 Events as the control loops record them (`kubectl describe` shows them; `kubectl get events` lists
//! them). A failure to record is logged and otherwise ignored: an event is a report, never a decision.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// Records an event about `object` from `component` (e.g. "default-scheduler", "node-controller"). Events
/// about cluster-scoped objects go to the `default` namespace, as Kubernetes puts them.
pub(crate) async fn record<K>(client: &Client, component: &str, object: &K, type_: &str, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()>,
{
    let involved = object.object_ref(&());
    let namespace = object.namespace().unwrap_or_else(|| "default".to_string());
    let now = Time(jiff::Timestamp::now());
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", object.name_any()), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": type_,
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let event: Event = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(e) => return tracing::warn!(error = %e, "cannot build an event"),
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, "cannot record an event");
    }
}
