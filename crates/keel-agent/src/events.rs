//! Kubernetes Events about pods, as the kubelet reports them (`kubectl describe pod` shows them): image
//! present, container created/started/stopped, probe failures, back-off. A repeated event (same pod, reason
//! and message) bumps the count and lastTimestamp of the first one instead of making a new object.
//! Recording never blocks the caller and never fails it: an event that cannot be written is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// The component events come from (kubectl shows it as "From").
const COMPONENT: &str = "kubelet";

/// At most this many distinct events are remembered for aggregation.
const REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

/// (pod uid, reason, message) → the event object's name and its count.
type Seen = HashMap<(String, String, String), (String, i32)>;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    pub fn new(client: Client, node: String) -> Recorder {
        Recorder { client, node, seen: Arc::default() }
    }

    /// Records an event about `pod` (about one of its containers when `container` is given).
    pub fn pod(&self, pod: &Pod, container: Option<&str>, type_: Type, reason: &str, message: String) {
        let recorder = self.clone();
        let involved = involved(pod, container);
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = recorder.write(involved, type_, &reason, &message).await {
                tracing::debug!(reason, message, error = %e, "cannot record an event");
            }
        });
    }

    async fn write(&self, involved: ObjectReference, type_: Type, reason: &str, message: &str) -> kube::Result<()> {
        let namespace = involved.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = jiff::Timestamp::now();
        let key = (involved.uid.clone().unwrap_or_default(), reason.to_string(), message.to_string());
        let previous = {
            let mut seen = self.seen.lock().expect("events lock");
            let previous = seen.get_mut(&key).map(|(name, count)| {
                *count += 1;
                (name.clone(), *count)
            });
            if previous.is_none() && seen.len() >= REMEMBERED {
                seen.clear();
            }
            previous
        };
        if let Some((name, count)) = previous {
            let patch = serde_json::json!({"count": count, "lastTimestamp": Time(now)});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                // Expired or deleted: a new one below.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            involved.name.as_deref().unwrap_or("pod"),
            now.as_nanosecond() as u64 ^ u64::from(rand_suffix())
        );
        let event = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace), ..Default::default() },
            involved_object: involved,
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource { component: Some(COMPONENT.into()), host: Some(self.node.clone()) }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            // Like the kubelet's recorder: no eventTime (with one, validation asks for `action` too).
            event_time: None,
            count: Some(1),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.node.clone()),
            action: None,
            related: None,
            series: None,
        };
        api.create(&PostParams::default(), &event).await?;
        self.seen.lock().expect("events lock").insert(key, (name, 1));
        Ok(())
    }
}

fn rand_suffix() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

/// The pod (or `spec.containers{name}` of it) as the event's subject.
fn involved(pod: &Pod, container: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: container.map(|c| {
            let init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|list| list.iter().any(|i| i.name == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        }),
    }
}
