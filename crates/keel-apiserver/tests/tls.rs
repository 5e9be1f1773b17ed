//! The API server over HTTPS, as clients meet it: a CA-signed serving certificate, bearer tokens, a
//! listener that stalled clients cannot block; with rustls clients, curl and (when installed) kubectl.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keel_apiserver::auth::{require_token, Authenticator, Tokens, User};
use keel_apiserver::tls::{kubeconfig, random_token, server_config, Authority, TlsListener};
use keel_apiserver::{app, AppState};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    ca: Authority,
    token: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real router behind tokens, served over TLS on a free port, with a CA restored from PEM as a second
/// master would restore it.
async fn serve(handshake_timeout: Duration) -> Server {
    let generated = Authority::generate("keel-test-ca").unwrap();
    let ca = Authority::from_pem(generated.cert_pem(), generated.key_pem()).unwrap();
    let (cert, key) = ca.issue_serving(&["127.0.0.1".into()]).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(tcp, server_config(&cert, &key).unwrap()).with_handshake_timeout(handshake_timeout);
    let token = random_token().unwrap();
    let router = require_token(
        app(AppState::new(addr.to_string(), unreachable_store())),
        Authenticator::new(Tokens::new().with(&token, User::admin("admin")), None),
    );
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { addr, ca, token, task }
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 GET over a fresh TLS connection to `server_name`: (status code, JSON body).
async fn get(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut tls = connector(ca_pem).connect(name, tcp).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(parse_response(&response))
}

fn parse_response(response: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body) } else { body.to_string() };
    (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn is_unauthorized_status((code, body): &(u16, Value)) -> bool {
    *code == 401 && body["kind"] == "Status" && body["reason"] == "Unauthorized" && body["code"] == 401
}

#[tokio::test]
async fn https_with_tokens_by_ip_and_by_name() {
    let s = serve(WAIT).await;
    let ca = s.ca.cert_pem();
    for name in ["127.0.0.1", "localhost"] {
        let (code, version) = get(s.addr, ca, name, "/version", None).await.unwrap();
        assert_eq!((code, version["minor"].as_str()), (200, Some("33")), "{name}");
        assert_eq!(get(s.addr, ca, name, "/livez", None).await.unwrap(), (200, Value::String("ok".into())));

        let anonymous = get(s.addr, ca, name, "/api", None).await.unwrap();
        assert!(is_unauthorized_status(&anonymous), "{anonymous:?}");
        let wrong = get(s.addr, ca, name, "/api", Some("not-the-token")).await.unwrap();
        assert!(is_unauthorized_status(&wrong), "{wrong:?}");
        let unknown_path = get(s.addr, ca, name, "/no/such/path", None).await.unwrap();
        assert!(is_unauthorized_status(&unknown_path), "{unknown_path:?}");

        let (code, api) = get(s.addr, ca, name, "/api", Some(&s.token)).await.unwrap();
        assert_eq!((code, api["kind"].as_str()), (200, Some("APIVersions")), "{name}");
        assert_eq!(api["serverAddressByClientCIDRs"][0]["serverAddress"], s.addr.to_string());
    }
}

#[tokio::test]
async fn a_client_trusting_another_ca_cannot_connect() {
    let s = serve(WAIT).await;
    let other = Authority::generate("keel-test-ca").unwrap();
    let err = get(s.addr, other.cert_pem(), "127.0.0.1", "/version", None).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // A name the certificate does not carry fails too, and the server still serves afterwards.
    assert!(get(s.addr, s.ca.cert_pem(), "example.com", "/version", None).await.is_err());
    assert_eq!(get(s.addr, s.ca.cert_pem(), "localhost", "/version", None).await.unwrap().0, 200);
}

#[tokio::test]
async fn a_stalled_client_blocks_nobody_and_is_dropped_after_the_handshake_timeout() {
    let s = serve(Duration::from_millis(500)).await;
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap(); // a ClientHello's record header, no more
    let second = tokio::time::timeout(WAIT, get(s.addr, s.ca.cert_pem(), "localhost", "/version", None)).await;
    assert_eq!(second.expect("a stalled handshake held up another client").unwrap().0, 200);

    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stalled.read(&mut buf)).await.expect("the stalled client was not dropped");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(matches!(tokio::time::timeout(WAIT, half.read(&mut buf)).await, Ok(Ok(0) | Err(_))));
}

#[tokio::test]
async fn curl_verifies_the_certificate_and_speaks_http2() {
    let Ok(version) = tokio::process::Command::new("curl").arg("--version").output().await else {
        eprintln!("curl is not installed; skipping");
        return;
    };
    let http2 = String::from_utf8_lossy(&version.stdout).contains("HTTP2");
    let s = serve(WAIT).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, s.ca.cert_pem()).unwrap();
    let port = s.addr.port();

    let curl = |host: &str, path: &str, token: Option<&str>| {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--cacert"]).arg(&ca_file);
        cmd.args(["-w", "\n%{http_code} %{http_version}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        cmd.arg(format!("https://{host}:{port}{path}"));
        async move {
            let out = cmd.output().await.unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
            let (body, status) = stdout.rsplit_once('\n').unwrap();
            let (code, version) = status.split_once(' ').unwrap();
            (code.to_string(), version.to_string(), serde_json::from_str::<Value>(body).unwrap())
        }
    };
    for host in ["127.0.0.1", "localhost"] {
        let (code, version, api) = curl(host, "/api", Some(&s.token)).await;
        assert_eq!((code.as_str(), api["kind"].as_str()), ("200", Some("APIVersions")));
        if http2 {
            assert_eq!(version, "2", "curl negotiates h2 by ALPN");
        }
        let (code, _, status) = curl(host, "/api", None).await;
        assert_eq!((code.as_str(), status["reason"].as_str()), ("401", Some("Unauthorized")));
    }

    // Without the CA, curl refuses the certificate.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("https://127.0.0.1:{port}/version")])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn kubectl_reads_the_api_with_the_generated_kubeconfig() {
    let s = serve(WAIT).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let url = format!("https://localhost:{}", s.addr.port());
    std::fs::write(&path, kubeconfig("keel", &url, s.ca.cert_pem(), "admin", &s.token)).unwrap();
    let run = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&path).args(args).env("HOME", dir.path()).env_remove("KUBECONFIG");
        async move { tokio::time::timeout(Duration::from_secs(60), cmd.output()).await }
    };
    let out = match run(&["get", "--raw", "/api"]).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            eprintln!("kubectl is not available ({e}); skipping");
            return;
        }
        Err(_) => panic!("kubectl timed out"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl failed: {stderr}");
    let api: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(api["kind"], "APIVersions");

    // With a wrong token, kubectl reports the server's refusal.
    std::fs::write(&path, kubeconfig("keel", &url, s.ca.cert_pem(), "admin", "wrong")).unwrap();
    let out = run(&["get", "--raw", "/api"]).await.unwrap().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}

/// Storage that is never reached: these tests do not touch objects.
fn unreachable_store() -> keel_apiserver::storage::Storage {
    keel_apiserver::storage::Storage::new(tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy())
}
