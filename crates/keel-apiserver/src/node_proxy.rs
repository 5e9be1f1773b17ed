//! `GET /api/v1/namespaces/{ns}/pods/{name}/log` proxied to the agent of the pod's node, as kube-apiserver
//! proxies it to the kubelet: the query is Kubernetes' `PodLogOptions` (checked here, as kube-apiserver
//! checks it), the container defaults to the pod's only one (`LogLocation`'s rules and messages), and the
//! agent is found from the pod's `spec.nodeName`: the Node's InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port`. The call is HTTPS with the API server's client certificate
//! (issued from the cluster CA at start) and the agent's certificate pinned by the SHA-256 its Node
//! publishes (`keel.dev/agent-cert-sha256`); the agent's answer is streamed back as `text/plain`, its errors
//! turned into `Status` objects. `pods/exec` goes the same way as a WebSocket upgrade that, once the agent
//! has accepted it, joins the client's connection to the agent's. The contract with the agent is `keel_api::agent_api`; this module never
//! imports the agent.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper::upgrade::OnUpgrade;
use keel_api::agent_api::{self, ExecOptions, LogOptions, LogOptionsError};
use keel_api::resources;
use keel_api::status::{ApiError, GroupResource};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};

use crate::storage::Read;
use crate::tls::TlsError;
use crate::{AppState, Failure};

/// How long reaching an agent (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an agent may take to start answering.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an agent's error body read into a message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The API server's side of its calls to agents: its client certificate (from the cluster CA).
pub struct NodeClient {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient").finish_non_exhaustive()
    }
}

impl NodeClient {
    /// A client presenting the certificate `cert_pem` (leaf first) with its key `key_pem`.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<NodeClient, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        Ok(NodeClient { chain, key, provider: Arc::new(rustls::crypto::ring::default_provider()) })
    }

    /// The TLS configuration for an agent whose certificate has the SHA-256 `pin`.
    fn tls(&self, pin: &str) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let verifier = Pinned { sha256: pin.to_ascii_lowercase(), provider: self.provider.clone() };
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// `GET path_and_query` on `agent`, up to the response's head (its body streams after).
    pub(crate) async fn get(
        &self,
        agent: &Agent,
        path_and_query: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ProxyError> {
        self.send(agent, hyper::Request::get(path_and_query)).await
    }

    /// Sends `request` (its path, method and headers; no body) to `agent`, up to the response's head. The
    /// connection may be upgraded (`hyper::upgrade::on` of the response).
    async fn send(
        &self,
        agent: &Agent,
        request: axum::http::request::Builder,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ProxyError> {
        let unreachable = |e: String| {
            ProxyError::Unavailable(format!(
                "cannot reach the agent of node {:?} at {}: {e}",
                agent.node,
                agent.authority()
            ))
        };
        let tls = self.tls(&agent.fingerprint).map_err(|e| unreachable(e.to_string()))?;
        let server_name = ServerName::try_from(agent.host.clone()).map_err(|e| unreachable(e.to_string()))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((agent.host.as_str(), agent.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp).await.map_err(|e| {
                ProxyError::BadGateway(format!(
                    "TLS with the agent of node {:?} at {} failed (its certificate must be the one the Node \
                     publishes in {}): {e}",
                    agent.node,
                    agent.authority(),
                    agent_api::CERT_ANNOTATION
                ))
            })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))??;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let node = agent.node.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(node, error = %e, "connection to an agent ended");
            }
        });
        let request = request
            .header(header::HOST, agent.authority())
            .body(Body::empty())
            .map_err(|e| ProxyError::Api(ApiError::Internal(format!("request to an agent: {e}"))))?;
        tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {RESPONSE_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned (the agents' certificates are self-signed; the
/// Node object vouches for them), and checks the handshake's signatures with it.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if agent_api::cert_fingerprint(end_entity) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Where a node's agent is, and the certificate it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agent {
    node: String,
    host: String,
    port: u16,
    fingerprint: String,
}

impl Agent {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A failure of a proxied request, answered as a `Status`.
#[derive(Debug)]
pub(crate) enum ProxyError {
    Api(ApiError),
    /// The agent cannot be reached or does not answer (503).
    Unavailable(String),
    /// The agent answered but is not the one the Node publishes (502).
    BadGateway(String),
    /// The agent's own error, passed on with its code and message.
    Agent {
        code: u16,
        reason: &'static str,
        message: String,
    },
}

impl From<ApiError> for ProxyError {
    fn from(e: ApiError) -> Self {
        ProxyError::Api(e)
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        match self {
            ProxyError::Api(e) => Failure(e).into_response(),
            ProxyError::Unavailable(m) => {
                tracing::warn!(message = %m, "node agent unavailable");
                status(503, "ServiceUnavailable", &m)
            }
            ProxyError::BadGateway(m) => {
                tracing::warn!(message = %m, "node agent refused");
                status(502, "ServiceUnavailable", &m)
            }
            ProxyError::Agent { code, reason, message } => status(code, reason, &message),
        }
    }
}

fn pods() -> GroupResource {
    GroupResource { group: String::new(), resource: "pods".into() }
}

fn names(containers: &Value) -> Vec<&str> {
    containers.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
}

/// The container a log request reads: the one asked for, which must be in the pod, or the pod's only one
/// (kube-apiserver's `LogLocation`, with its messages).
pub(crate) fn choose_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let containers = names(&pod["spec"]["containers"]);
    let init = names(&pod["spec"]["initContainers"]);
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) || init.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))),
        None => match containers.as_slice() {
            [only] => Ok(only.to_string()),
            [] => Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}"))),
            many => {
                let mut message =
                    format!("a container name must be specified for pod {name}, choose one of: [{}]", many.join(" "));
                if !init.is_empty() {
                    message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
                }
                Err(ApiError::BadRequest(message))
            }
        },
    }
}

/// The node the pod is bound to.
pub(crate) fn node_of(pod: &Value) -> Result<String, ApiError> {
    match pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        Some(node) => Ok(node.to_string()),
        None => Err(ApiError::BadRequest(format!(
            "pod {} does not have a host assigned",
            pod["metadata"]["name"].as_str().unwrap_or_default()
        ))),
    }
}

/// Where a Node's agent is: its InternalIP (else ExternalIP), the port in its daemonEndpoints (the
/// kubelet's default when unset) and the certificate fingerprint in its annotation.
pub(crate) fn agent_of(node: &Value) -> Result<Agent, ProxyError> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let addresses = node["status"]["addresses"].as_array().cloned().unwrap_or_default();
    let address = |kind: &str| {
        addresses.iter().find(|a| a["type"] == kind).and_then(|a| a["address"].as_str()).filter(|a| !a.is_empty())
    };
    let host = address("InternalIP")
        .or_else(|| address("ExternalIP"))
        .ok_or_else(|| ProxyError::Unavailable(format!("node {name:?} has no InternalIP or ExternalIP address")))?
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(agent_api::DEFAULT_PORT);
    let fingerprint = node["metadata"]["annotations"][agent_api::CERT_ANNOTATION]
        .as_str()
        .filter(|f| f.len() == 64 && f.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ProxyError::Unavailable(format!(
                "node {name:?} publishes no certificate for its agent (annotation {})",
                agent_api::CERT_ANNOTATION
            ))
        })?
        .to_string();
    Ok(Agent { node: name, host, port, fingerprint })
}

/// The log request's query: the container asked for and the options.
fn parse_query(query: &str, pod_name: &str) -> Result<(Option<String>, LogOptions), ApiError> {
    let container =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "container").map(|(_, v)| v.into_owned());
    let options = LogOptions::parse(query).map_err(|e| match e {
        LogOptionsError::Unreadable(m) => ApiError::BadRequest(m),
        LogOptionsError::Invalid(causes) => {
            ApiError::Invalid { kind: "PodLogOptions".into(), resource: pods(), name: pod_name.to_string(), causes }
        }
    })?;
    Ok((container, options))
}

/// One core object of `plural`, read linearizably.
pub(crate) async fn read_object(
    state: &AppState,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let resource =
        resources::find("", "v1", plural).ok_or_else(|| ApiError::Internal(format!("no resource {plural}")))?;
    let stored = state
        .storage
        .read(&resource.key(namespace, name), Read::Linearizable)
        .await
        .map_err(|e| crate::resources::store_error(resource, name, e))?;
    crate::resources::object(&stored)
}

/// The agent of the pod's node, and this API server's client for agents.
async fn agent_for<'s>(state: &'s AppState, pod: &Value) -> Result<(Agent, &'s NodeClient), ProxyError> {
    let node = read_object(state, "nodes", "", &node_of(pod)?).await?;
    let agent = agent_of(&node)?;
    let client = state
        .node_client
        .as_ref()
        .ok_or_else(|| ProxyError::Unavailable("this API server has no client certificate for node agents".into()))?;
    Ok((agent, client))
}

/// `GET …/pods/{name}/log`.
pub(crate) async fn pod_log(state: &AppState, namespace: &str, name: &str, query: Option<&str>) -> Response {
    serve_log(state, namespace, name, query.unwrap_or("")).await.unwrap_or_else(IntoResponse::into_response)
}

async fn serve_log(state: &AppState, namespace: &str, name: &str, query: &str) -> Result<Response, ProxyError> {
    let (requested, options) = parse_query(query, name)?;
    let pod = read_object(state, "pods", namespace, name).await?;
    let container = choose_container(&pod, requested.as_deref())?;
    let (agent, client) = agent_for(state, &pod).await?;
    let query = options.to_query();
    let mut path = agent_api::container_logs_path(namespace, name, &container);
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    proxy(client, &agent, &path).await
}

/// Calls the agent and passes its answer on: a success streams back as `text/plain`; an error becomes a
/// `Status` as kube-apiserver makes one from a kubelet's (`GenericHttpResponseChecker`).
pub(crate) async fn proxy(client: &NodeClient, agent: &Agent, path: &str) -> Result<Response, ProxyError> {
    let response = client.get(agent, path).await?;
    let code = response.status();
    if code.is_success() {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::new(response.into_body()))
            .unwrap_or_else(|e| Failure(ApiError::Internal(e.to_string())).into_response()));
    }
    Err(agent_error(response).await)
}

/// An agent's error answer as a `Status`, as kube-apiserver makes one from a kubelet's
/// (`GenericHttpResponseChecker`).
async fn agent_error(response: hyper::Response<hyper::body::Incoming>) -> ProxyError {
    let code = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim_end().to_string())
        .unwrap_or_else(|e| format!("(the agent's answer could not be read: {e})"));
    match code.as_u16() {
        400 => ProxyError::Api(ApiError::BadRequest(body)),
        404 => ProxyError::Agent { code: 404, reason: "NotFound", message: body },
        500 => ProxyError::Agent {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {body}"),
        },
        other => ProxyError::Agent { code: other, reason: "", message: body },
    }
}

/// The headers of a WebSocket handshake passed between the client and the agent.
const CLIENT_HANDSHAKE: [header::HeaderName; 3] =
    [header::SEC_WEBSOCKET_KEY, header::SEC_WEBSOCKET_VERSION, header::SEC_WEBSOCKET_PROTOCOL];
const AGENT_HANDSHAKE: [header::HeaderName; 5] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_ACCEPT,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// `GET …/pods/{name}/exec` (a WebSocket upgrade; `upgrade` is the client's connection): the agent of the
/// pod's node gets the same handshake, and once it has switched protocols the two connections are joined
/// byte for byte (the agent speaks `v5.channel.k8s.io` with the client).
pub(crate) async fn pod_exec(
    state: &AppState,
    namespace: &str,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
) -> Response {
    serve_exec(state, namespace, name, query.unwrap_or(""), headers, upgrade)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The protocol a request asks to upgrade to, if any.
fn upgrade_protocol(headers: &HeaderMap) -> Option<&str> {
    let connection = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok());
    let upgrading = connection.flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrading.then(|| headers.get(header::UPGRADE).and_then(|v| v.to_str().ok())).flatten()
}

async fn serve_exec(
    state: &AppState,
    namespace: &str,
    name: &str,
    query: &str,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
) -> Result<Response, ProxyError> {
    let options = ExecOptions::from_api_query(query).map_err(ApiError::BadRequest)?;
    let requested =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "container").map(|(_, v)| v.into_owned());
    let pod = read_object(state, "pods", namespace, name).await?;
    let container = choose_container(&pod, requested.as_deref())?;
    // A pod not yet on a node is told so before "not running".
    node_of(&pod)?;
    running(&pod, &container)?;
    let (agent, client) = agent_for(state, &pod).await?;
    // Last, so that a client falling back to SPDY after a refused WebSocket (kubectl does) is told why.
    let upgrade = match (upgrade_protocol(headers), upgrade) {
        (Some(p), Some(upgrade)) if p.eq_ignore_ascii_case("websocket") => upgrade,
        (Some(p), _) if !p.eq_ignore_ascii_case("websocket") => {
            return Err(ApiError::BadRequest(format!(
                "keel serves exec over WebSocket ({}) only, not over {p}",
                agent_api::EXEC_PROTOCOL
            ))
            .into())
        }
        _ => return Err(ApiError::BadRequest("Upgrade request required".into()).into()),
    };
    let path = format!("{}?{}", agent_api::exec_path(namespace, name, &container), options.to_agent_query());
    let request = hyper::Request::get(path).header(header::UPGRADE, "websocket");
    upgrade_through(client, &agent, request, headers, &CLIENT_HANDSHAKE, &AGENT_HANDSHAKE, upgrade).await
}

/// Sends the client's upgrade `request` (with the `forwarded` headers of `headers`) to the agent and, once
/// the agent switches protocols, answers the client with the agent's `returned` headers and joins the two
/// upgraded connections.
async fn upgrade_through(
    client: &NodeClient,
    agent: &Agent,
    request: hyper::http::request::Builder,
    headers: &HeaderMap,
    forwarded: &[header::HeaderName],
    returned: &[header::HeaderName],
    upgrade: OnUpgrade,
) -> Result<Response, ProxyError> {
    let mut request = request.header(header::CONNECTION, "Upgrade");
    for name in forwarded {
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    let mut response = client.send(agent, request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_error(response).await);
    }
    let mut switched = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in returned {
        for value in response.headers().get_all(name) {
            switched = switched.header(name, value);
        }
    }
    let agent_side = hyper::upgrade::on(&mut response);
    tokio::spawn(relay(upgrade, agent_side, agent.node.clone()));
    switched.body(Body::empty()).map_err(|e| ProxyError::Api(ApiError::Internal(e.to_string())))
}

/// `…/pods/{name}/portforward`: kubectl's SPDY/3.1 session — tunnelled in a WebSocket (its default) or over
/// the legacy SPDY upgrade — joined to the agent of the pod's node, which reaches the pod's ports.
pub(crate) async fn pod_port_forward(
    state: &AppState,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
) -> Response {
    serve_port_forward(state, namespace, name, headers, upgrade).await.unwrap_or_else(IntoResponse::into_response)
}

/// The header of the legacy SPDY upgrade that names the protocol spoken over it.
const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

async fn serve_port_forward(
    state: &AppState,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
) -> Result<Response, ProxyError> {
    let pod = read_object(state, "pods", namespace, name).await?;
    node_of(&pod)?;
    if pod["status"]["phase"] != "Running" {
        return Err(ApiError::BadRequest(format!("pod {name} is not running")).into());
    }
    let (agent, client) = agent_for(state, &pod).await?;
    let path = agent_api::port_forward_path(namespace, name);
    match (upgrade_protocol(headers).map(str::to_ascii_lowercase), upgrade) {
        (Some(p), Some(upgrade)) if p == "websocket" => {
            let request = hyper::Request::get(path).header(header::UPGRADE, "websocket");
            upgrade_through(client, &agent, request, headers, &CLIENT_HANDSHAKE, &AGENT_HANDSHAKE, upgrade).await
        }
        (Some(p), Some(upgrade)) if p.starts_with("spdy/") => {
            let version = header::HeaderName::from_static(STREAM_PROTOCOL_VERSION);
            let forwarded = [header::UPGRADE, version.clone()];
            let returned = [header::UPGRADE, header::CONNECTION, version];
            let request = hyper::Request::post(path);
            upgrade_through(client, &agent, request, headers, &forwarded, &returned, upgrade).await
        }
        _ => Err(ApiError::BadRequest("Upgrade request required".into()).into()),
    }
}

/// The container must be running (as the pod's status says) for an exec.
pub(crate) fn running(pod: &Value, container: &str) -> Result<(), ApiError> {
    let status = &pod["status"];
    let statuses = status["containerStatuses"].as_array().into_iter().chain(status["initContainerStatuses"].as_array());
    let running = statuses.flatten().any(|s| s["name"] == container && s["state"]["running"].is_object());
    if running {
        return Ok(());
    }
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::BadRequest(format!("container {container:?} in pod {pod_name:?} is not running")))
}

/// Joins the client's upgraded connection to the agent's until both ends are done.
async fn relay(client: OnUpgrade, agent: OnUpgrade, node: String) {
    let (client, agent) = match tokio::try_join!(client, agent) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(node, error = %e, "an exec connection was not upgraded");
            return;
        }
    };
    let (mut client, mut agent) = (hyper_util::rt::TokioIo::new(client), hyper_util::rt::TokioIo::new(agent));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
        tracing::debug!(node, error = %e, "an exec connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Authority, TlsListener};

    fn pod(containers: &[&str], init: &[&str], node: Option<&str>) -> Value {
        let list = |names: &[&str]| names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
        json!({"metadata": {"name": "web"},
               "spec": {"containers": list(containers), "initContainers": list(init), "nodeName": node}})
    }

    #[test]
    fn the_container_is_the_one_named_or_the_only_one() {
        assert_eq!(choose_container(&pod(&["app"], &[], None), None).unwrap(), "app");
        assert_eq!(choose_container(&pod(&["app", "side"], &["init"], None), Some("init")).unwrap(), "init");
        let message = |p: &Value, c: Option<&str>| choose_container(p, c).unwrap_err().to_string();
        assert_eq!(
            message(&pod(&["app", "side"], &[], None), None),
            "a container name must be specified for pod web, choose one of: [app side]"
        );
        assert_eq!(
            message(&pod(&["app", "side"], &["init"], None), Some("")),
            "a container name must be specified for pod web, choose one of: [app side] or one of the init containers: [init]"
        );
        assert_eq!(message(&pod(&["app"], &[], None), Some("nope")), "container nope is not valid for pod web");
        assert_eq!(choose_container(&pod(&["app"], &[], None), Some("x")).unwrap_err().code(), 400);
    }

    #[test]
    fn an_exec_needs_a_running_container() {
        let mut p = pod(&["app", "side"], &["init"], Some("n1"));
        p["status"] = json!({
            "containerStatuses": [{"name": "app", "state": {"running": {}}},
                                  {"name": "side", "state": {"waiting": {"reason": "ContainerCreating"}}}],
            "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
        });
        assert!(running(&p, "app").is_ok());
        let e = running(&p, "side").unwrap_err();
        assert_eq!((e.code(), e.to_string()), (400, "container \"side\" in pod \"web\" is not running".to_string()));
        assert!(running(&p, "init").is_err());
    }

    #[test]
    fn upgrades_are_read_from_connection_and_upgrade() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        assert_eq!(
            upgrade_protocol(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")])),
            Some("websocket")
        );
        assert_eq!(upgrade_protocol(&headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")])), Some("SPDY/3.1"));
        assert_eq!(upgrade_protocol(&headers(&[("upgrade", "websocket")])), None);
        assert_eq!(upgrade_protocol(&headers(&[])), None);
    }

    #[test]
    fn an_unscheduled_pod_has_no_host() {
        assert_eq!(node_of(&pod(&["app"], &[], Some("n1"))).unwrap(), "n1");
        let e = node_of(&pod(&["app"], &[], None)).unwrap_err();
        assert_eq!((e.code(), e.to_string()), (400, "pod web does not have a host assigned".to_string()));
    }

    fn node(addresses: Value, port: u64, fingerprint: Option<&str>) -> Value {
        json!({"metadata": {"name": "n1", "annotations": {agent_api::CERT_ANNOTATION: fingerprint}},
               "status": {"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
    }

    #[test]
    fn the_agent_is_at_the_nodes_internal_ip_and_published_port() {
        let fp = "ab".repeat(32);
        let a = agent_of(&node(
            json!([{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}]),
            10250,
            Some(&fp),
        ))
        .unwrap();
        assert_eq!(a, Agent { node: "n1".into(), host: "10.0.0.5".into(), port: 10250, fingerprint: fp.clone() });
        assert_eq!(a.authority(), "10.0.0.5:10250");
        let v6 = agent_of(&node(json!([{"type": "InternalIP", "address": "fd00::5"}]), 0, Some(&fp))).unwrap();
        assert_eq!((v6.port, v6.authority()), (10250, "[fd00::5]:10250".to_string()));
        for bad in [
            node(json!([{"type": "Hostname", "address": "n1"}]), 1, Some(&fp)),
            node(json!([{"type": "InternalIP", "address": "10.0.0.5"}]), 1, None),
            node(json!([{"type": "InternalIP", "address": "10.0.0.5"}]), 1, Some("not hex")),
        ] {
            let response = agent_of(&bad).unwrap_err().into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }

    #[test]
    fn the_query_is_checked_as_kube_apiserver_checks_it() {
        let (container, o) = parse_query("container=app&follow=true&tailLines=5", "web").unwrap();
        assert_eq!(container.as_deref(), Some("app"));
        assert!(o.follow && o.tail_lines == Some(5));
        let e = parse_query("tailLines=-1", "web").unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(e.to_string().starts_with("PodLogOptions \"web\" is invalid: tailLines"), "{e}");
        assert_eq!(parse_query("limitBytes=x", "web").unwrap_err().code(), 400);
    }

    async fn body_of(response: Response) -> (StatusCode, Value, String) {
        let code = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    /// A stand-in agent: a self-signed certificate, clients checked against `ca`, two routes.
    async fn fake_agent(ca: &Authority) -> (Agent, tokio::task::JoinHandle<()>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().self_signed(&key).unwrap();
        let fingerprint = agent_api::cert_fingerprint(cert.der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let router = axum::Router::new()
            .route(
                "/containerLogs/{ns}/{pod}/{container}",
                axum::routing::get(|axum::extract::RawQuery(q): axum::extract::RawQuery| async move {
                    format!("line one\nquery={}\n", q.unwrap_or_default())
                }),
            )
            .route(
                "/containerLogs/default/bad/app",
                axum::routing::get(|| async { (StatusCode::BAD_REQUEST, "no such thing") }),
            );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(TlsListener::new(tcp, Arc::new(config)), router).await;
        });
        (Agent { node: "n1".into(), host: "127.0.0.1".into(), port, fingerprint }, task)
    }

    fn client_of(ca: &Authority) -> NodeClient {
        let (cert, key) = ca.issue_client(agent_api::APISERVER_CLIENT_NAME).unwrap();
        NodeClient::new(&cert, &key).unwrap()
    }

    #[tokio::test]
    async fn logs_stream_from_an_agent_with_the_pinned_certificate() {
        let ca = Authority::generate("keel-ca").unwrap();
        let (agent, task) = fake_agent(&ca).await;
        let client = client_of(&ca);
        let response = proxy(&client, &agent, "/containerLogs/default/web/app?tailLines=1").await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");
        let (code, _, text) = body_of(response).await;
        assert_eq!((code, text.as_str()), (StatusCode::OK, "line one\nquery=tailLines=1\n"));
        // The agent's own refusal keeps its message.
        let (code, status, _) =
            body_of(proxy(&client, &agent, "/containerLogs/default/bad/app").await.unwrap_err().into_response()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(
            (status["reason"].as_str(), status["message"].as_str()),
            (Some("BadRequest"), Some("no such thing"))
        );
        task.abort();
    }

    #[tokio::test]
    async fn another_certificate_or_another_clusters_client_is_refused() {
        let ca = Authority::generate("keel-ca").unwrap();
        let (agent, task) = fake_agent(&ca).await;
        // The agent presents a certificate other than the pinned one: 502.
        let wrong = Agent { fingerprint: "00".repeat(32), ..agent.clone() };
        let (code, status, _) = body_of(
            proxy(&client_of(&ca), &wrong, "/containerLogs/default/web/app").await.unwrap_err().into_response(),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_GATEWAY);
        assert!(status["message"].as_str().unwrap().contains("keel.dev/agent-cert-sha256"), "{status}");
        // A client certificate from another CA: the agent ends the handshake.
        let other = Authority::generate("keel-ca").unwrap();
        let refused = proxy(&client_of(&other), &agent, "/containerLogs/default/web/app").await.unwrap_err();
        assert!(matches!(refused, ProxyError::BadGateway(_) | ProxyError::Unavailable(_)), "{refused:?}");
        task.abort();
        // Nobody listening: 503 naming the node.
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = Agent { port: tcp.local_addr().unwrap().port(), ..agent };
        drop(tcp);
        let (code, status, _) = body_of(proxy(&client_of(&ca), &closed, "/x").await.unwrap_err().into_response()).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(status["message"].as_str().unwrap().contains("node \"n1\""), "{status}");
    }
}
