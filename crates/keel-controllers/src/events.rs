//! core/v1 Events as the control loops record them (`kubectl describe` shows them; `kubectl get events` lists
//! them). A failure to record is logged and otherwise ignored: an event is a report, never a decision.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client, Resource};
use serde_json::json;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// Something worth an Event on the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &str, message: impl Into<String>) -> Note {
        Note { warning: false, reason: reason.to_string(), message: message.into() }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Note {
        Note { warning: true, reason: reason.to_string(), message: message.into() }
    }

    /// The Event `type`.
    pub fn kind(&self) -> &'static str {
        if self.warning {
            "Warning"
        } else {
            "Normal"
        }
    }
}

/// A reference to an object of `kind` (in `api_version`), as events and statuses name it.
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// Records `note` as an event about the object `involved` from `component`.
pub(crate) async fn note(client: &Client, component: &str, involved: &ObjectReference, note: &Note) {
    post(client, component, involved, note.kind(), &note.reason, &note.message).await
}

/// Records an event about `object` from `component` (e.g. "default-scheduler", "node-controller"). Events
/// about cluster-scoped objects go to the `default` namespace, as Kubernetes puts them.
pub(crate) async fn record<K>(client: &Client, component: &str, object: &K, type_: &str, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()>,
{
    post(client, component, &object.object_ref(&()), type_, reason, message).await
}

async fn post(client: &Client, component: &str, involved: &ObjectReference, type_: &str, reason: &str, message: &str) {
    let name = involved.name.as_deref().unwrap_or_default();
    let namespace = involved.namespace.clone().unwrap_or_else(|| "default".to_string());
    let now = Time(jiff::Timestamp::now());
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": namespace},
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
