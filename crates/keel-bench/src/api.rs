//! Latency of a Kubernetes API server (keel's masters, or any other) over HTTPS with a bearer token: ConfigMaps
//! created, read by name and listed a page at a time in a namespace made for the run, by concurrent clients
//! spread over every server given (client `c` talks to server `c % servers`), each on its own connection, as
//! separate programs would be. HTTP/2 by default, as client-go speaks it; JSON bodies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{drive, object_name, object_to_get, BenchError, Phases, Report};

/// What a kubeconfig says about reaching its cluster: the server URL, the CA certificate (PEM) and the
/// bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: String,
    pub token: String,
}

/// Reads the first `server`, `certificate-authority-data` and `token` of a kubeconfig, which is all a
/// kubeconfig that keel writes holds (one cluster, one user, one context). Not a general kubeconfig reader:
/// no contexts, certificate files or client certificates.
pub fn parse_kubeconfig(text: &str) -> Result<Kubeconfig, BenchError> {
    let field = |name: &str| -> Result<String, BenchError> {
        let raw = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| BenchError::Kubeconfig(format!("no {name}")))?;
        yaml_scalar(raw.trim()).ok_or_else(|| BenchError::Kubeconfig(format!("cannot read the {name} {raw:?}")))
    };
    let ca = field("certificate-authority-data")?;
    let ca_pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| BenchError::Kubeconfig("certificate-authority-data is not base64 of a PEM text".into()))?;
    Ok(Kubeconfig { server: field("server")?, ca_pem, token: field("token")? })
}

/// A YAML scalar as written on one line: plain, single-quoted or double-quoted (keel writes JSON strings).
fn yaml_scalar(s: &str) -> Option<String> {
    if s.starts_with('"') {
        serde_json::from_str(s).ok()
    } else if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner.replace("''", "'"))
    } else if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

/// `https://host:port` (a path after it is ignored) → (host, port); the port defaults to 443.
pub fn parse_server(url: &str) -> Result<(String, u16), BenchError> {
    let bad = || BenchError::Endpoint(url.to_string());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().map_err(|_| bad())?),
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The server (an index into the servers) that client `client` talks to.
pub fn server_for(client: usize, servers: usize) -> usize {
    client % servers.max(1)
}

/// Where the benchmark sends its requests.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    /// (host, port) of each server.
    pub servers: Vec<(String, u16)>,
    pub ca_pem: String,
    pub token: String,
    /// HTTP/1.1 instead of HTTP/2.
    pub http1: bool,
}

enum Sender {
    H1(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client: one TLS connection to one server.
struct Client {
    sender: Sender,
    authority: String,
    token: String,
}

fn tls_connector(ca_pem: &str, http1: bool) -> Result<TlsConnector, BenchError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| BenchError::Kubeconfig(format!("bad CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| BenchError::Kubeconfig(format!("bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(BenchError::Kubeconfig("no CA certificate".into()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BenchError::Other(format!("TLS client configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if http1 { b"http/1.1".to_vec() } else { b"h2".to_vec() }];
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Client {
    async fn connect(target: &ApiTarget, server: usize, tls: &TlsConnector) -> Result<Client, BenchError> {
        let (host, port) = &target.servers[server];
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let fail = |what: String| BenchError::Other(format!("cannot connect to {authority}: {what}"));
        let tcp = TcpStream::connect((host.as_str(), *port)).await.map_err(|e| fail(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| fail(e.to_string()))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| fail(format!("TLS: {e}")))?;
        let io = TokioIo::new(stream);
        let sender = if target.http1 {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| fail(e.to_string()))?;
            tokio::spawn(conn);
            Sender::H1(tokio::sync::Mutex::new(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(conn);
            Sender::H2(sender)
        };
        Ok(Client { sender, authority, token: target.token.clone() })
    }

    /// Sends one request and reads the whole response: (status, body).
    async fn request(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::builder()
            .method(method.clone())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let body = Full::new(body.unwrap_or_default());
        let fail = |e: String| format!("{method} {path}: {e}");
        let resp = match &self.sender {
            Sender::H1(sender) => {
                let req = req
                    .uri(path)
                    .header(hyper::header::HOST, &self.authority)
                    .body(body)
                    .map_err(|e| fail(e.to_string()))?;
                let mut sender = sender.lock().await;
                sender.ready().await.map_err(|e| fail(e.to_string()))?;
                sender.send_request(req).await.map_err(|e| fail(e.to_string()))?
            }
            Sender::H2(sender) => {
                let req =
                    req.uri(format!("https://{}{path}", self.authority)).body(body).map_err(|e| fail(e.to_string()))?;
                let mut sender = sender.clone();
                sender.ready().await.map_err(|e| fail(e.to_string()))?;
                sender.send_request(req).await.map_err(|e| fail(e.to_string()))?
            }
        };
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        Ok((status, bytes))
    }

    /// [`Client::request`], failing unless the status is `want`.
    async fn expect(&self, want: StatusCode, method: Method, path: &str, body: Option<Bytes>) -> Result<Bytes, String> {
        let (status, bytes) = self.request(method.clone(), path, body).await?;
        if status == want {
            Ok(bytes)
        } else {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            Err(format!("{method} {path}: {status}: {text}"))
        }
    }
}

/// The JSON of ConfigMap `name` holding one value of `data_size` bytes.
fn config_map(name: &str, data_size: usize) -> Bytes {
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "keel-bench"}},
        "data": {"value": "v".repeat(data_size)},
    });
    Bytes::from(body.to_string())
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct ApiRun {
    /// `api-create`, `api-get`, `api-list`.
    pub reports: Vec<Report>,
    /// The size of the first created object as the server returned it (≈ what it stored).
    pub object_bytes: usize,
    pub namespace: String,
}

/// Creates a namespace, runs the three phases in it and (unless `keep`) deletes it and waits until it is gone,
/// untimed.
pub async fn run(target: &ApiTarget, phases: &Phases, data_size: usize, keep: bool) -> Result<ApiRun, BenchError> {
    if target.servers.is_empty() {
        return Err(BenchError::Other("no API server".into()));
    }
    let tls = tls_connector(&target.ca_pem, target.http1)?;
    let mut clients = Vec::with_capacity(phases.clients);
    for c in 0..phases.clients.max(1) {
        clients.push(Client::connect(target, server_for(c, target.servers.len()), &tls).await?);
    }
    let clients = Arc::new(clients);

    let namespace = format!("bench-{:08x}", rand::random::<u32>());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    clients[0]
        .expect(StatusCode::CREATED, Method::POST, "/api/v1/namespaces", Some(Bytes::from(ns.to_string())))
        .await
        .map_err(BenchError::Other)?;
    // A master checks the namespace of a new object in its own member's copy of the store: wait until every
    // server sees it, so that no create fails for a member a few milliseconds behind.
    let seen_path = format!("/api/v1/namespaces/{namespace}?resourceVersion=0");
    for s in 0..target.servers.len().min(clients.len()) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = clients[s].expect(StatusCode::OK, Method::GET, &seen_path, None).await {
            if Instant::now() > deadline {
                return Err(BenchError::Other(format!("namespace {namespace} not seen: {e}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let n_clients = clients.len();
    let object_bytes = Arc::new(AtomicUsize::new(0));
    let (cs, ns, size) = (clients.clone(), namespace.clone(), object_bytes.clone());
    let create = drive("api-create", n_clients, phases.creates, move |c, n| {
        let (cs, size) = (cs.clone(), size.clone());
        let path = format!("/api/v1/namespaces/{ns}/configmaps");
        let body = config_map(&object_name(n), data_size);
        async move {
            let created = cs[c].expect(StatusCode::CREATED, Method::POST, &path, Some(body)).await?;
            if n == 0 {
                size.store(created.len(), Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }
    })
    .await;

    let objects = phases.creates;
    let (cs, ns) = (clients.clone(), namespace.clone());
    let get = drive("api-get", n_clients, phases.gets, move |c, n| {
        let cs = cs.clone();
        let path = format!("/api/v1/namespaces/{ns}/configmaps/{}", object_name(object_to_get(n, objects)));
        async move { cs[c].expect(StatusCode::OK, Method::GET, &path, None).await.map(|_| ()) }
    })
    .await;

    let (cs, ns) = (clients.clone(), namespace.clone());
    let path = format!("/api/v1/namespaces/{ns}/configmaps?limit={}", phases.list_limit);
    let list = drive("api-list", n_clients, phases.lists, move |c, _| {
        let (cs, path) = (cs.clone(), path.clone());
        async move { cs[c].expect(StatusCode::OK, Method::GET, &path, None).await.map(|_| ()) }
    })
    .await;

    if !keep {
        // The objects one by one first: a master lists a namespace's objects in one response to delete them,
        // which fails once they pass 4 MiB (reported in docs/benchmarks.md).
        let (cs, ns) = (clients.clone(), namespace.clone());
        let delete = drive("api-delete", n_clients, objects, move |c, n| {
            let cs = cs.clone();
            let path = format!("/api/v1/namespaces/{ns}/configmaps/{}", object_name(n));
            async move { cs[c].request(Method::DELETE, &path, None).await.map(|_| ()) }
        })
        .await;
        if delete.errors > 0 {
            return Err(BenchError::Other(format!("cleanup: {delete}")));
        }
        // 202 Accepted while the namespace's objects are being deleted, 200 once gone.
        let path = format!("/api/v1/namespaces/{namespace}");
        let (status, body) = clients[0].request(Method::DELETE, &path, None).await.map_err(BenchError::Other)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(BenchError::Other(format!("DELETE {path}: {status}: {text}")));
        }
        // The server deletes the namespace's objects in the background: wait for the end, so that this cleanup
        // does not load the machine while whatever runs next is measured.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (status, _) = clients[0].request(Method::GET, &path, None).await.map_err(BenchError::Other)?;
            if status == StatusCode::NOT_FOUND {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Other(format!(
                    "namespace {namespace} still there 10 minutes after its deletion"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(ApiRun { reports: vec![create, get, list], object_bytes: object_bytes.load(Ordering::Relaxed), namespace })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubeconfig_keel_writes() {
        let text = r#"apiVersion: v1
kind: Config
clusters:
- name: "keel"
  cluster:
    server: "https://127.0.0.1:6443"
    certificate-authority-data: UEVN
users:
- name: "admin"
  user:
    token: "tok\"en"
contexts:
- name: "admin@keel"
  context:
    cluster: "keel"
    user: "admin"
current-context: "admin@keel"
preferences: {}
"#;
        let kc = parse_kubeconfig(text).unwrap();
        assert_eq!(
            kc,
            Kubeconfig { server: "https://127.0.0.1:6443".into(), ca_pem: "PEM".into(), token: "tok\"en".into() }
        );
    }

    #[test]
    fn reads_plain_and_single_quoted_scalars_and_names_what_is_missing() {
        let text = "    server: https://a:1\n    certificate-authority-data: 'UEVN'\n    token: 'it''s'\n";
        let kc = parse_kubeconfig(text).unwrap();
        assert_eq!((kc.server.as_str(), kc.ca_pem.as_str(), kc.token.as_str()), ("https://a:1", "PEM", "it's"));
        let err = parse_kubeconfig("server: https://a:1\ncertificate-authority-data: UEVN\n").unwrap_err();
        assert_eq!(err.to_string(), "bad kubeconfig: no token");
        let err = parse_kubeconfig("server: x\ncertificate-authority-data: '%%'\ntoken: t\n").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }

    #[test]
    fn server_urls() {
        assert_eq!(parse_server("https://127.0.0.1:6443").unwrap(), ("127.0.0.1".into(), 6443));
        assert_eq!(parse_server("https://localhost").unwrap(), ("localhost".into(), 443));
        assert_eq!(parse_server("https://[::1]:6443/").unwrap(), ("::1".into(), 6443));
        assert_eq!(parse_server("https://[::1]").unwrap(), ("::1".into(), 443));
        assert!(parse_server("http://127.0.0.1:6443").is_err());
        assert!(parse_server("https://:6443").is_err());
        assert!(parse_server("https://h:port").is_err());
    }

    #[test]
    fn clients_are_spread_evenly_over_the_servers() {
        let mut per_server = [0; 3];
        for c in 0..50 {
            per_server[server_for(c, 3)] += 1;
        }
        assert_eq!(per_server, [17, 17, 16]);
        assert_eq!(server_for(7, 1), 0);
    }

    #[test]
    fn gets_stride_over_every_object() {
        let objects = 1000;
        let mut seen = vec![false; objects];
        for n in 0..objects {
            seen[object_to_get(n, objects)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(object_name(42), "cm-000042");
    }

    #[test]
    fn config_maps_are_json_of_the_asked_size() {
        let v: serde_json::Value = serde_json::from_slice(&config_map("cm-000001", 100)).unwrap();
        assert_eq!(v["metadata"]["name"], "cm-000001");
        assert_eq!(v["data"]["value"].as_str().unwrap().len(), 100);
    }
}
