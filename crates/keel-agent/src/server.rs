//! The agent's HTTPS endpoint (the kubelet's port, 10250 by default), which the API server calls for
//! `pods/log` and `pods/exec`: `GET /containerLogs/{namespace}/{pod}/{container}?<PodLogOptions>` streams the
//! container's log as text; `GET /exec/{namespace}/{pod}/{container}?command=…&input&output&error&tty`
//! upgraded to a WebSocket (`v5.channel.k8s.io`) runs a command in the running container ([`crate::exec`]);
//! `GET /stats/summary` and `/metrics/resource` give the node's and its containers' CPU and memory
//! ([`stats_routes`]).
//! [`keel_api::agent_api`] has the contract.
//!
//! TLS both ways: the agent makes its own key and self-signed certificate at every start ([`Identity`]) and
//! publishes the certificate's SHA-256 on its Node (the API server pins it); clients must present a
//! certificate the cluster CA signed for client authentication (the CA comes from the agent's kubeconfig).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use keel_api::agent_api::{self, ExecOptions, LogOptions};
use keel_api::resource_metrics;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::exec::Runner;
use crate::logs::reader::{self, Alive, ReadOptions};
use crate::names::{self, PodRef};
use crate::{logs, worker};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot make the agent's certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the cluster CA cannot verify clients: {0}")]
    ClientCa(String),
}

/// The pods the agent serves logs of.
pub trait Pods: Send + Sync + 'static {
    /// The pod `namespace/name` bound to this node, as the agent last saw it (with its status).
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod>;
}

impl Pods for worker::Shared {
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let pods = self.pods.lock().expect("pods lock");
        pods.values()
            .find(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(name))
            .cloned()
    }
}

#[derive(Clone)]
struct AppState {
    pods: Arc<dyn Pods>,
    log_dir: PathBuf,
    node: String,
    /// None: this endpoint runs no execs (unit tests).
    exec: Option<Runner>,
    /// Where the pods' network namespaces are (`None`: no port-forwards, as in unit tests).
    data_dir: Option<PathBuf>,
}

/// The endpoint's routes.
pub fn app(
    pods: Arc<dyn Pods>,
    exec: Option<Runner>,
    data_dir: Option<PathBuf>,
    log_dir: PathBuf,
    node: String,
) -> Router {
    Router::new()
        .route(agent_api::CONTAINER_LOGS_ROUTE, get(container_logs))
        .route(agent_api::EXEC_ROUTE, get(exec_in_container))
        .route(agent_api::PORT_FORWARD_ROUTE, get(port_forward).post(port_forward))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found".into()) })
        .with_state(AppState { pods, log_dir, node, exec, data_dir })
}

/// The resource figures ([`crate::sampler`]): `GET /stats/summary` (JSON, what the masters' metrics API
/// reads) and `GET /metrics/resource` (the kubelet's Prometheus names; also at `/metrics`, the agent's
/// Prometheus endpoint), from the last sample at once.
pub fn stats_routes(stats: Arc<crate::sampler::Stats>) -> Router {
    let summary = {
        let stats = stats.clone();
        move || async move { axum::Json(stats.summary()).into_response() }
    };
    let exposition = move || async move {
        let text = crate::stats::exposition(&stats.summary());
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
    };
    Router::new()
        .route(resource_metrics::SUMMARY_PATH, get(summary))
        .route(resource_metrics::RESOURCE_METRICS_PATH, get(exposition.clone()))
        .route("/metrics", get(exposition))
}

/// An error as the kubelet answers one: its message as plain text.
fn text(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

async fn container_logs(
    State(state): State<AppState>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let options = match LogOptions::parse(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let pod = match pod_on_node(&state, &namespace, &name) {
        Ok(p) => p,
        Err(message) => return text(StatusCode::NOT_FOUND, message),
    };
    if !logs::has_container(&pod, &container) {
        return text(StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {name:?}"));
    }
    let attempt = match logs::choose_attempt(&pod, &container, options.previous) {
        Ok(a) => a,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_ref = PodRef { namespace: namespace.clone(), name: name.clone(), uid: uid.clone() };
    let path = names::log_path(&state.log_dir, &pod_ref, &container, attempt);
    let read = ReadOptions {
        follow: options.follow,
        tail_lines: options.tail_lines.and_then(|n| u64::try_from(n).ok()),
        since: options.since(jiff::Timestamp::now()),
        timestamps: options.timestamps,
        limit_bytes: options.limit_bytes.and_then(|n| u64::try_from(n).ok()),
    };
    // A follower stops once this attempt no longer runs (or the pod is gone).
    let alive: Option<Alive> = options.follow.then(|| {
        let pods = state.pods.clone();
        Box::new(move || {
            pods.pod(&namespace, &name).is_some_and(|p| {
                p.metadata.uid.as_deref() == Some(uid.as_str())
                    && logs::running_attempt(&p, &container) == Some(attempt)
            })
        }) as Alive
    });
    let stream = reader::read(path, read, alive);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The pod `namespace/name` on this node, or the message of a 404.
fn pod_on_node(state: &AppState, namespace: &str, name: &str) -> Result<Pod, String> {
    state
        .pods
        .pod(namespace, name)
        .ok_or_else(|| format!("pod {name:?} in namespace {namespace:?} is not on node {:?}", state.node))
}

async fn exec_in_container(
    State(state): State<AppState>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let options = match ExecOptions::from_agent_query(query.as_deref().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let pod = match pod_on_node(&state, &namespace, &name) {
        Ok(p) => p,
        Err(message) => return text(StatusCode::NOT_FOUND, message),
    };
    if !logs::has_container(&pod, &container) {
        return text(StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {name:?}"));
    }
    let Some(attempt) = logs::running_attempt(&pod, &container) else {
        return text(StatusCode::BAD_REQUEST, format!("container {container:?} in pod {name:?} is not running"));
    };
    let upgrade = match upgrade {
        Ok(u) => u.protocols([agent_api::EXEC_PROTOCOL]),
        Err(rejection) => return text(StatusCode::BAD_REQUEST, format!("Upgrade request required: {rejection}")),
    };
    if upgrade.selected_protocol().is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("the client must offer the WebSocket subprotocol {}", agent_api::EXEC_PROTOCOL),
        );
    }
    let Some(runner) = state.exec.clone() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "this endpoint runs no execs".into());
    };
    let id = names::container_id(pod.metadata.uid.as_deref().unwrap_or_default(), &container, attempt);
    upgrade.on_upgrade(move |socket| async move { runner.serve(id, options, socket).await })
}

/// `pods/portforward`: a SPDY/3.1 session, tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`) or
/// over the legacy `Upgrade: SPDY/3.1`, whose streams reach the pod's ports ([`crate::portforward`]).
async fn port_forward(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let pod = match pod_on_node(&state, &namespace, &name) {
        Ok(p) => p,
        Err(message) => return text(StatusCode::NOT_FOUND, message),
    };
    let Some(data_dir) = state.data_dir.clone() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "this endpoint forwards no ports".into());
    };
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let netns = crate::pod_network::paths(&data_dir, pod.metadata.uid.as_deref().unwrap_or_default()).net;
    let dial: crate::portforward::Dial = Arc::new(move |port| {
        let netns = netns.clone();
        Box::pin(async move {
            match host_network {
                true => TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await,
                false => crate::portforward::dial_in(netns, port).await,
            }
        })
    });
    let who = format!("{namespace}/{name}");
    let (mut parts, _) = request.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if upgrade == "websocket" {
        use axum::extract::FromRequestParts;
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => ws.protocols([agent_api::PORT_FORWARD_WEBSOCKET_PROTOCOL]),
            Err(rejection) => return text(StatusCode::BAD_REQUEST, format!("Upgrade request required: {rejection}")),
        };
        if ws.selected_protocol().is_none() {
            let wanted = agent_api::PORT_FORWARD_WEBSOCKET_PROTOCOL;
            return text(StatusCode::BAD_REQUEST, format!("the client must offer the WebSocket subprotocol {wanted}"));
        }
        return ws.on_upgrade(move |socket| crate::portforward::over_websocket(socket, dial, who));
    }
    let version = parts.headers.get("x-stream-protocol-version").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !upgrade.starts_with("spdy/3.1") {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required".into());
    }
    if !version.split(',').any(|v| v.trim() == agent_api::PORT_FORWARD_PROTOCOL) {
        let mut refused = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {version:?}, server supports {:?}",
                agent_api::PORT_FORWARD_PROTOCOL
            ),
        );
        refused.headers_mut().insert(
            "x-accepted-stream-protocol-versions",
            header::HeaderValue::from_static(agent_api::PORT_FORWARD_PROTOCOL),
        );
        return refused;
    }
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return text(StatusCode::BAD_REQUEST, "this connection cannot be upgraded".into());
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => crate::portforward::over_spdy(hyper_util::rt::TokioIo::new(upgraded), dial, who).await,
            Err(e) => tracing::debug!(error = %e, "a port-forward connection was not upgraded"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("x-stream-protocol-version", agent_api::PORT_FORWARD_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The agent's serving key and self-signed certificate, and the certificate's fingerprint.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    /// [`agent_api::cert_fingerprint`] of the certificate: what the Node's annotation publishes.
    pub fingerprint: String,
}

impl Identity {
    /// A fresh ECDSA P-256 key and a certificate for `hosts` (addresses or DNS names; others are left
    /// out), valid from yesterday for a year.
    pub fn generate(common_name: &str, hosts: &[String]) -> Result<Identity, ServerError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = hosts
            .iter()
            .filter_map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => Some(SanType::IpAddress(ip)),
                Err(_) => h.clone().try_into().ok().map(SanType::DnsName),
            })
            .collect();
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let ymd = |d: jiff::civil::Date| {
            rcgen::date_time_ymd(d.year().into(), d.month().unsigned_abs(), d.day().unsigned_abs())
        };
        params.not_before = ymd(today.yesterday().unwrap_or(today));
        params.not_after = ymd(today.checked_add(jiff::Span::new().days(365)).unwrap_or(today));
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        let fingerprint = agent_api::cert_fingerprint(&der);
        Ok(Identity { cert: der, key: PrivatePkcs8KeyDer::from(key.serialize_der()), fingerprint })
    }

    /// The TLS configuration serving this identity to clients whose certificate one of `client_cas` (DER)
    /// signed for client authentication.
    pub fn server_config(&self, client_cas: &[Vec<u8>]) -> Result<Arc<rustls::ServerConfig>, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for der in client_cas {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| ServerError::ClientCa(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ServerError::ClientCa("no CA certificate".into()));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ServerError::ClientCa(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Serves `app` over TLS on `tcp` until cancelled (dropped).
pub async fn serve(tcp: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) -> std::io::Result<()> {
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(tls), handshakes: JoinSet::new() };
    axum::serve(listener, app).await
}

/// Accepts TCP connections and completes each TLS handshake in a task of its own (a slow or failing
/// client holds up no one else).
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            let _ = tcp.set_nodelay(true);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "tls handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "tls handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Mutex;

    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::logs::cri::{encode, Stream};
    use crate::names::container_id;

    #[derive(Default)]
    struct FakePods(Mutex<HashMap<(String, String), Pod>>);

    impl Pods for FakePods {
        fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
            self.0.lock().unwrap().get(&(namespace.to_string(), name.to_string())).cloned()
        }
    }

    fn pod(state: serde_json::Value, attempt: u32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}, {"name": "side"}]},
            "status": {"containerStatuses": [
                {"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": attempt,
                 "containerID": format!("containerd://{}", container_id("u1", "app", attempt)), "state": state},
                {"name": "side", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]},
        }))
        .unwrap()
    }

    fn write_log(dir: &std::path::Path, attempt: u32, lines: &[(Stream, &str)]) {
        let pod_ref = PodRef { namespace: "default".into(), name: "web".into(), uid: "u1".into() };
        let path = names::log_path(dir, &pod_ref, "app", attempt);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        for (i, (stream, text)) in lines.iter().enumerate() {
            let mut line = Vec::new();
            let t: jiff::Timestamp = format!("2026-01-01T00:00:0{i}Z").parse().unwrap();
            encode(&mut line, t, *stream, false, text.as_bytes());
            f.write_all(&line).unwrap();
        }
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let code = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    fn setup(running: bool) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 0, &[(Stream::Stdout, "first run")]);
        write_log(dir.path(), 1, &[(Stream::Stdout, "out line"), (Stream::Stderr, "err line")]);
        let pods = FakePods::default();
        let state = if running {
            serde_json::json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
        } else {
            serde_json::json!({"terminated": {"exitCode": 0,
                "containerID": format!("containerd://{}", container_id("u1", "app", 1))}})
        };
        let mut p = pod(state, 1);
        p.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].last_state =
            serde_json::from_value(serde_json::json!({"terminated": {"exitCode": 1,
                "containerID": format!("containerd://{}", container_id("u1", "app", 0))}}))
            .unwrap();
        pods.0.lock().unwrap().insert(("default".into(), "web".into()), p);
        let app = app(Arc::new(pods), None, None, dir.path().to_path_buf(), "n1".into());
        (dir, app)
    }

    #[tokio::test]
    async fn logs_of_the_current_and_previous_attempts() {
        let (_dir, app) = setup(true);
        assert_eq!(get(&app, "/containerLogs/default/web/app").await, (StatusCode::OK, "out line\nerr line\n".into()));
        assert_eq!(get(&app, "/containerLogs/default/web/app?previous=true").await.1, "first run\n");
        assert_eq!(get(&app, "/containerLogs/default/web/app?tailLines=1").await.1, "err line\n");
        assert_eq!(
            get(&app, "/containerLogs/default/web/app?timestamps=true&limitBytes=31").await.1,
            "2026-01-01T00:00:00Z out line\n2"
        );
    }

    #[tokio::test]
    async fn following_a_stopped_container_ends() {
        let (_dir, app) = setup(false);
        let got = tokio::time::timeout(Duration::from_secs(5), get(&app, "/containerLogs/default/web/app?follow=true"))
            .await
            .expect("the follow ended");
        assert_eq!(got, (StatusCode::OK, "out line\nerr line\n".into()));
    }

    #[tokio::test]
    async fn unknown_pods_containers_and_bad_queries() {
        let (_dir, app) = setup(true);
        let (code, body) = get(&app, "/containerLogs/default/nope/app").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body.contains("\"nope\"") && body.contains("\"n1\""), "{body}");
        let (code, body) = get(&app, "/containerLogs/default/web/nope").await;
        assert_eq!((code, body.as_str()), (StatusCode::NOT_FOUND, "container \"nope\" not found in pod \"web\""));
        let (code, body) = get(&app, "/containerLogs/default/web/side").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(body, "container \"side\" in pod \"web\" is waiting to start: ContainerCreating");
        let (code, body) = get(&app, "/containerLogs/default/web/app?tailLines=-1").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains("tailLines"), "{body}");
        assert_eq!(get(&app, "/other").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn execs_need_a_command_a_running_container_and_a_websocket() {
        let (_dir, app) = setup(true);
        let (code, body) = get(&app, "/exec/default/web/app?output=1").await;
        assert_eq!((code, body.as_str()), (StatusCode::BAD_REQUEST, "you must specify at least 1 command"));
        assert_eq!(get(&app, "/exec/default/nope/app?command=ls&output=1").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/exec/default/web/nope?command=ls&output=1").await.0, StatusCode::NOT_FOUND);
        let (code, body) = get(&app, "/exec/default/web/side?command=ls&output=1").await;
        assert_eq!(
            (code, body.as_str()),
            (StatusCode::BAD_REQUEST, "container \"side\" in pod \"web\" is not running")
        );
        let (code, body) = get(&app, "/exec/default/web/app?command=ls&output=1").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.starts_with("Upgrade request required"), "{body}");
    }

    #[tokio::test]
    async fn the_resource_figures_as_json_and_prometheus_text() {
        let stats = Arc::new(crate::sampler::Stats::default());
        let app = stats_routes(stats);
        let (code, body) = get(&app, "/stats/summary").await;
        assert_eq!(code, StatusCode::OK);
        let summary: keel_api::resource_metrics::Summary = serde_json::from_str(&body).unwrap();
        assert_eq!(summary, Default::default());
        for path in ["/metrics/resource", "/metrics"] {
            let (code, body) = get(&app, path).await;
            assert_eq!(code, StatusCode::OK, "{path}");
            assert!(
                body.contains("# TYPE node_cpu_usage_seconds counter") && body.contains("scrape_error 0"),
                "{body}"
            );
        }
    }

    #[test]
    fn the_identity_is_self_signed_for_its_hosts_and_needs_a_ca() {
        let id = Identity::generate("n1", &["127.0.0.1".into(), "n1".into(), "not a name!".into()]).unwrap();
        assert_eq!(id.fingerprint, agent_api::cert_fingerprint(&id.cert));
        assert_eq!(id.fingerprint.len(), 64);
        assert!(matches!(id.server_config(&[]), Err(ServerError::ClientCa(_))));
        let ca = Identity::generate("ca", &[]).unwrap();
        assert!(id.server_config(&[ca.cert.to_vec()]).is_ok());
    }
}
