//! Runs the probes of running containers: one task per probe of each container attempt, timed and judged
//! by [`crate::probe::Tracker`]. A result that changes is stored and wakes the pod's worker, which reads
//! the results into [`crate::sync::ProbeResults`]. Liveness and readiness probes start once the startup
//! probe (if any) has succeeded.
//!
//! exec and httpGet probes run [`crate::handlers`]' handlers, which lifecycle hooks share. tcpSocket and gRPC
//! probes connect to the pod's IP from inside the pod's network namespace as httpGet does; gRPC probes ask
//! `grpc.health.v1.Health/Check`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::task::AbortHandle;

use crate::events::Type;
use crate::handlers::{address, exec_command, http_get, netns};
use crate::probe::{Kind, Timing, Tracker};
use crate::sync::{ObservedContainer, ProbeResults};
use crate::worker::Shared;

/// The probes of every running container, by container id.
#[derive(Default)]
pub struct Probers {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    pod_uid: String,
    results: ProbeResults,
    tasks: HashMap<Kind, AbortHandle>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

impl Probers {
    /// Starts the probes of running container `observed` (of `container`'s spec) that are due to run, and
    /// returns its results so far.
    pub fn ensure(
        &self,
        shared: &Arc<Shared>,
        pod: &Pod,
        container: &Container,
        observed: &ObservedContainer,
    ) -> ProbeResults {
        let mut entries = self.entries.lock().expect("probers lock");
        let entry = entries.entry(observed.id.clone()).or_insert_with(|| Entry {
            pod_uid: observed.pod_uid.clone(),
            results: ProbeResults::default(),
            tasks: HashMap::new(),
        });
        let started = container.startup_probe.is_none() || entry.results.startup == Some(true);
        for kind in Kind::ALL {
            if kind.of(container).is_none() || entry.tasks.contains_key(&kind) || (kind != Kind::Startup && !started) {
                continue;
            }
            let task = tokio::spawn(run(
                shared.clone(),
                pod.clone(),
                container.clone(),
                observed.id.clone(),
                kind,
                observed.created_at.unwrap_or_else(jiff::Timestamp::now),
            ));
            entry.tasks.insert(kind, task.abort_handle());
        }
        entry.results
    }

    /// Stops the probes of `pod_uid`'s containers that `keep` rejects (stopped, gone).
    pub fn retain(&self, pod_uid: &str, keep: impl Fn(&str) -> bool) {
        self.entries.lock().expect("probers lock").retain(|id, e| e.pod_uid != pod_uid || keep(id));
    }

    fn set(&self, id: &str, kind: Kind, result: Option<bool>) {
        if let Some(entry) = self.entries.lock().expect("probers lock").get_mut(id) {
            match kind {
                Kind::Startup => entry.results.startup = result,
                Kind::Liveness => entry.results.liveness = result,
                Kind::Readiness => entry.results.readiness = result,
            }
        }
    }
}

/// One probe of one container, until it is finished or aborted.
async fn run(shared: Arc<Shared>, pod: Pod, container: Container, id: String, kind: Kind, started: jiff::Timestamp) {
    let Some(probe) = kind.of(&container).cloned() else { return };
    let timing = Timing::of(&probe);
    let mut tracker = Tracker::new(kind, timing, started);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    loop {
        let wait = tracker.due().duration_since(jiff::Timestamp::now());
        tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await;
        let outcome = check(&shared, &pod, &container, &id, &probe, timing.timeout).await;
        if let Err(message) = &outcome {
            tracing::debug!(pod_uid = %uid, container = %container.name, ?kind, message, "probe failed");
            shared.events.pod(
                &pod,
                Some(&container.name),
                Type::Warning,
                "Unhealthy",
                format!("{} probe failed: {message}", kind.title()),
            );
        }
        if tracker.record(outcome.is_ok(), jiff::Timestamp::now()) {
            tracing::info!(pod_uid = %uid, container = %container.name, ?kind, result = ?tracker.result(), "probe result changed");
            shared.probers.set(&id, kind, tracker.result());
            shared.wake(&uid);
        }
        if tracker.finished() {
            return;
        }
    }
}

/// Runs a probe once: Ok, or the failure's message.
async fn check(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    id: &str,
    probe: &Probe,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        return exec_command(shared, id, exec.command.clone().unwrap_or_default(), timeout).await;
    }
    if let Some(http) = &probe.http_get {
        return http_get(shared, pod, container, http, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let addr = address(shared, pod, container, tcp.host.as_deref(), &tcp.port)?;
        return keel_lb::connect_in(netns(shared, pod), addr, timeout)
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {addr}: {e}"));
    }
    if let Some(grpc) = &probe.grpc {
        return grpc_check(shared, pod, container, grpc, timeout).await;
    }
    Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// gRPC health checking (`grpc.health.v1.Health/Check` of the probe's service) on the pod's IP, over a
/// connection made inside the pod's network namespace; Ok when the answer is SERVING.
async fn grpc_check(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    grpc: &k8s_openapi::api::core::v1::GRPCAction,
    timeout: Duration,
) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let addr = address(shared, pod, container, None, &IntOrString::Int(grpc.port))?;
    let ns = netns(shared, pod);
    let connector = tower::service_fn(move |_: http::Uri| {
        let ns = ns.clone();
        async move { keel_lb::connect_in(ns, addr, timeout).await.map(hyper_util::rt::TokioIo::new) }
    });
    let service = grpc.service.clone().unwrap_or_default();
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("failed to connect service \"{addr}\": {e}"))?;
        let request = tonic_health::pb::HealthCheckRequest { service: service.clone() };
        let response =
            tonic_health::pb::health_client::HealthClient::new(channel).check(request).await.map_err(|e| {
                match e.code() {
                    tonic::Code::Unimplemented => format!(
                        "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                        e.message()
                    ),
                    code => {
                        format!("error: health rpc probe failed: rpc error: code = {code:?} desc = {}", e.message())
                    }
                }
            })?;
        Ok::<_, String>(response.into_inner().status)
    };
    let status = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| format!("timeout: health rpc did not complete within {}s", timeout.as_secs()))??;
    if status == ServingStatus::Serving as i32 {
        return Ok(());
    }
    let name = ServingStatus::try_from(status).map_or_else(|_| status.to_string(), |s| s.as_str_name().to_string());
    Err(format!("service unhealthy (responded with {name:?})"))
}
