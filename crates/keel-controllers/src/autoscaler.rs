//! The HorizontalPodAutoscaler controller's loop (kube-controller-manager's `horizontal.go` IO): every sync
//! period (`--horizontal-pod-autoscaler-sync-period`, 15 s) each autoscaler's target is read through its
//! scale subresource (the kind found by discovery, so custom kinds with a scale work too), the pods its
//! selector picks and their PodMetrics from the masters' `metrics.k8s.io` API are read, the decision is
//! [`autoscaling::decide`]'s, the scale is updated when it changes, and the status and events are written.
//! What the rules remember between passes (recommendations, scale events) is kept per autoscaler uid.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::autoscaling::{self, Memory, Target, Tunables};
use crate::events::{self, Note};
use crate::Error;

/// The component the events name.
const COMPONENT: &str = "horizontal-pod-autoscaler";

/// Runs every `period` until cancelled.
pub async fn run(client: Client, period: Duration) -> Result<(), Error> {
    let tunables = Tunables::default();
    let mut memories: HashMap<String, Memory> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let api: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
        let hpas = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list HorizontalPodAutoscalers");
                continue;
            }
        };
        let live: HashSet<String> = hpas.iter().filter_map(|h| h.uid()).collect();
        memories.retain(|uid, _| live.contains(uid));
        for hpa in &hpas {
            let memory = memories.entry(hpa.uid().unwrap_or_default()).or_default();
            if let Err(e) = reconcile(&client, hpa, memory, &tunables).await {
                tracing::warn!(hpa = %format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any()),
                    error = %e, "autoscaler pass failed");
            }
        }
    }
}

/// The API resource of the scale target `apiVersion`/`kind`, through discovery.
async fn resource_of(client: &Client, api_version: &str, kind: &str) -> Result<ApiResource, String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk).await.map(|(r, _)| r).map_err(|e| match e {
        kube::Error::Discovery(_) => format!("no matches for kind \"{kind}\" in group \"{group}\""),
        e => e.to_string(),
    })
}

fn message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        e => e.to_string(),
    }
}

async fn reconcile(
    client: &Client,
    hpa: &HorizontalPodAutoscaler,
    memory: &mut Memory,
    t: &Tunables,
) -> Result<(), Error> {
    let namespace = hpa.namespace().unwrap_or_default();
    let spec = hpa.spec.clone().unwrap_or_default();
    let reference = &spec.scale_target_ref;
    let now = jiff::Timestamp::now();
    let target_api = resource_of(client, reference.api_version.as_deref().unwrap_or("v1"), &reference.kind)
        .await
        .map(|r| Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &r));
    let scale = match &target_api {
        Ok(api) => api.get_scale(&reference.name).await.map_err(message),
        Err(e) => Err(e.clone()),
    };
    let (mut scale, target_api) = match (scale, target_api) {
        (Ok(s), Ok(api)) => (s, api),
        (Err(e), _) | (_, Err(e)) => {
            let (condition, note) = autoscaling::failed_get_scale(&e);
            let before = hpa.status.as_ref();
            let current = before.and_then(|s| s.current_replicas).unwrap_or(0);
            let desired = before.map_or(0, |s| s.desired_replicas);
            let metrics = before.and_then(|s| s.current_metrics.clone()).unwrap_or_default();
            notify(client, hpa, &[note]).await;
            let status = autoscaling::status(before, current, desired, metrics, &[condition], false, now);
            return write_status(client, hpa, status).await;
        }
    };
    let target = Target {
        replicas: scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        selector: scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default(),
    };
    let (pods, list) = if target.selector.is_empty() {
        (vec![], Err("no selector".to_string()))
    } else {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let pods = pods.list(&ListParams::default().labels(&target.selector)).await?.items;
        (pods, pod_metrics(client, &namespace, &target.selector).await)
    };
    let decision = autoscaling::decide(hpa, &target, &pods, list.as_ref().map_err(Clone::clone), memory, now, t);
    let mut conditions = decision.conditions.clone();
    let mut notes = decision.notes.clone();
    let mut rescaled = false;
    if decision.rescale() {
        scale.spec.get_or_insert_with(Default::default).replicas = Some(decision.desired);
        let failure =
            target_api.replace_scale(&reference.name, &PostParams::default(), &scale).await.err().map(message);
        let (condition, note) = autoscaling::rescaled(decision.desired, &decision.reason, failure.as_deref());
        conditions.push(condition);
        notes.push(note);
        if failure.is_none() {
            rescaled = true;
            let behavior = autoscaling::behavior(spec.behavior.as_ref());
            autoscaling::record_rescale(memory, behavior.as_ref(), decision.current, decision.desired, now);
            tracing::info!(hpa = %hpa.name_any(), namespace, from = decision.current, to = decision.desired,
                reason = %decision.reason, "rescaled");
        }
    }
    let desired = if rescaled || !decision.rescale() { decision.desired } else { decision.current };
    notify(client, hpa, &notes).await;
    let status = autoscaling::status(
        hpa.status.as_ref(),
        decision.current,
        desired,
        decision.metrics,
        &conditions,
        rescaled,
        now,
    );
    write_status(client, hpa, status).await
}

/// The pods' metrics, from the masters' resource metrics API.
async fn pod_metrics(client: &Client, namespace: &str, selector: &str) -> Result<Value, String> {
    let query: String = selector
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    let query = format!("labelSelector={query}");
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?{query}");
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    client.request::<Value>(request).await.map_err(message)
}

/// Records the notes as events; warnings only when the autoscaler's conditions do not already carry their
/// reason (so a lasting failure is not an event every pass).
async fn notify(client: &Client, hpa: &HorizontalPodAutoscaler, notes: &[Note]) {
    let known: HashSet<&str> = hpa
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.reason.as_deref())
        .collect();
    let involved = events::reference("autoscaling/v2", "HorizontalPodAutoscaler", &hpa.metadata);
    for note in notes {
        if note.warning && known.contains(note.reason.as_str()) {
            continue;
        }
        events::note(client, COMPONENT, &involved, note).await;
    }
}

async fn write_status(
    client: &Client,
    hpa: &HorizontalPodAutoscaler,
    status: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus,
) -> Result<(), Error> {
    if hpa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &hpa.namespace().unwrap_or_default());
    let mut updated = hpa.clone();
    updated.status = Some(status);
    match api.replace_status(&hpa.name_any(), &PostParams::default(), &updated).await {
        Ok(_) => Ok(()),
        // Changed or gone since the list: the next pass looks again.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
