//! Runs the probes of running containers: one task per probe of each container attempt, timed and judged
//! by [`crate::probe::Tracker`]. A result that changes is stored and wakes the pod's worker, which reads
//! the results into [`crate::sync::ProbeResults`]. Liveness and readiness probes start once the startup
//! probe (if any) has succeeded.
//!
//! exec probes run through containerd (`Tasks.Exec`). httpGet and tcpSocket probes connect to the pod's IP
//! (loopback without a pod network) from inside the pod's own network namespace, so they need no route
//! from the agent's namespace to the pod (several nodes on one machine, `--cni-netns`). HTTPS probes accept
//! any server certificate, as the kubelet's do; gRPC probes ask `grpc.health.v1.Health/Check`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::task::AbortHandle;

use crate::events::Type;
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

/// Runs a probe (or a hook's handler) once: Ok, or the failure's message.
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

/// Runs `command` in container `id`; Ok when it exits 0 within `timeout`.
pub(crate) async fn exec_command(
    shared: &Shared,
    id: &str,
    command: Vec<String>,
    timeout: Duration,
) -> Result<(), String> {
    if command.is_empty() {
        return Err("the exec handler has no command".into());
    }
    let scratch = shared.config.data_dir.join("exec");
    let out = shared.runtime.exec_sync(id, command.clone(), timeout, &scratch).await.map_err(|e| e.to_string())?;
    match out.code {
        Some(0) => Ok(()),
        Some(code) => {
            let output = out.output.trim();
            Err(if output.is_empty() {
                format!("command {command:?} exited with {code}")
            } else {
                format!("command {command:?} exited with {code}: {output}")
            })
        }
        None => Err(format!("command {command:?} timed out after {}s", timeout.as_secs())),
    }
}

/// GETs the handler's URL; Ok for a status in 200..400.
pub(crate) async fn http_get(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    http: &HTTPGetAction,
    timeout: Duration,
) -> Result<(), String> {
    let https = http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let addr = address(shared, pod, container, http.host.as_deref(), &http.port)?;
    let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let url = format!("{}://{addr}{path}", if https { "https" } else { "http" });
    let headers: Vec<(&str, &str)> =
        http.http_headers.iter().flatten().map(|h| (h.name.as_str(), h.value.as_str())).collect();
    let request = async {
        let stream = keel_lb::connect_in(netns(shared, pod), addr, timeout)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        if https {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(probe_tls())
                .connect(name, stream)
                .await
                .map_err(|e| format!("Get \"{url}\": tls: {e}"))?;
            get(tls, addr, &path, &headers).await
        } else {
            get(stream, addr, &path, &headers).await
        }
    };
    let status = tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| format!("Get \"{url}\": context deadline exceeded (Client.Timeout exceeded)"))??;
    if (200..400).contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {}", status.as_u16()))
    }
}

/// GET `path` over `stream` (HTTP/1.1, the kubelet's headers, then the handler's); the response's status.
async fn get<S>(stream: S, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<http::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "kube-probe/1.33")
        .header(http::header::ACCEPT, "*/*");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request =
        builder.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| format!("bad request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    Ok(response.status())
}

/// The TLS client of HTTPS probes: like the kubelet's (`InsecureSkipVerify`), it accepts any certificate;
/// the handshake's signatures are still checked against it.
fn probe_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The pod's network namespace file.
fn netns(shared: &Shared, pod: &Pod) -> PathBuf {
    shared.sandbox_net(pod.metadata.uid.as_deref().unwrap_or_default())
}

/// host:port of a handler: the host given, else the pod's IP (loopback without a pod network); the port
/// by number or by the name of one of the container's ports.
fn address(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    host: Option<&str>,
    port: &IntOrString,
) -> Result<SocketAddr, String> {
    let port = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("the container has no port named {name:?}"))?,
        },
    };
    let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {port}"))?;
    let ip: IpAddr = match host.filter(|h| !h.is_empty()) {
        Some(h) => h.parse().map_err(|_| format!("host {h:?} is not an IP address"))?,
        None => shared.pod_ip(pod.metadata.uid.as_deref().unwrap_or_default()).unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    Ok(SocketAddr::new(ip, port))
}
