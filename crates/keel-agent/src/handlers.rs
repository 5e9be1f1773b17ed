//! The handlers that probes and lifecycle hooks share: a command run in the container (exec) and an HTTP GET
//! of the pod (httpGet), each Ok or the failure's message; and the lifecycle hooks themselves (postStart,
//! preStop), which add `sleep`. HTTP requests connect to the pod's IP (loopback without a pod network) from
//! inside the pod's own network namespace, so they need no route from the agent's namespace to the pod
//! (several nodes on one machine, `--cni-netns`); HTTPS accepts any server certificate, as the kubelet does.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::worker::Shared;

/// Runs a lifecycle hook's handler in container `id` (of `container`'s spec), for at most `timeout`.
pub(crate) async fn lifecycle(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    id: &str,
    hook: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    let ran = async {
        if let Some(exec) = &hook.exec {
            exec_command(shared, id, exec.command.clone().unwrap_or_default(), timeout).await
        } else if let Some(http) = &hook.http_get {
            http_get(shared, pod, container, http, timeout).await
        } else if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            Ok(())
        } else {
            Err("the hook has no handler (exec, httpGet or sleep)".into())
        }
    };
    tokio::time::timeout(timeout, ran).await.unwrap_or_else(|_| Err(format!("timed out after {}s", timeout.as_secs())))
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
pub(crate) fn netns(shared: &Shared, pod: &Pod) -> PathBuf {
    shared.sandbox_net(pod.metadata.uid.as_deref().unwrap_or_default())
}

/// host:port of a handler: the host given, else the pod's IP (loopback without a pod network); the port
/// by number or by the name of one of the container's ports.
pub(crate) fn address(
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
