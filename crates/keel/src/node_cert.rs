//! A node's client certificate, renewed before it expires as the kubelet's certificate manager renews
//! its own: at a random point between 70% and 90% of the certificate's life the agent asks for a new one (a
//! CertificateSigningRequest from the node itself, which the masters approve at once for a node renewing
//! its own name), keeps it in the node's kubeconfig, and sends every new request through a client that
//! presents it; requests under way (long watches) finish on the connections they started on.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use http::{Request, Response};
use kube::client::Body;

/// The first and last point of a certificate's life (a share of it) at which it is renewed.
const RENEW_FROM: f64 = 0.7;
const RENEW_UNTIL: f64 = 0.9;

/// The API client for `config` (read from the kubeconfig at `path`, then perhaps sent through a load
/// balancer): when it holds a node's client certificate, one that renews it for as long as the process runs.
pub async fn client(path: &Path, config: kube::Config) -> anyhow::Result<kube::Client> {
    let first = kube::Client::try_from(config.clone()).context("cannot build an API client")?;
    let Some(certificate) = node_certificate(&config) else { return Ok(first) };
    let current = Arc::new(RwLock::new(first));
    let client = kube::Client::new(Current(current.clone()), config.default_namespace.clone());
    let renewing = Renewal { client: client.clone(), current, path: path.to_path_buf(), config };
    tokio::spawn(renewing.run(certificate));
    Ok(client)
}

/// What a node certificate says: the node's user name and when it is valid (seconds since the epoch).
#[derive(Debug, Clone, PartialEq)]
struct NodeCertificate {
    user: String,
    not_before: i64,
    not_after: i64,
}

/// The node certificate `config` presents, if it presents one (`system:node:<name>`).
fn node_certificate(config: &kube::Config) -> Option<NodeCertificate> {
    let data = config.auth_info.client_certificate_data.as_deref()?;
    let pem = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
    parse(&pem)
}

fn parse(pem: &[u8]) -> Option<NodeCertificate> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let user = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    let validity = cert.validity();
    user.starts_with("system:node:").then(|| NodeCertificate {
        user,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// When to renew a certificate valid from `not_before` to `not_after` (seconds since the epoch): at the
/// share `at` (between [`RENEW_FROM`] and [`RENEW_UNTIL`]) of its life.
fn renewal_time(not_before: i64, not_after: i64, at: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * at.clamp(RENEW_FROM, RENEW_UNTIL)) as i64
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The client of the newest certificate; each request goes to the one current when it is sent.
#[derive(Clone)]
struct Current(Arc<RwLock<kube::Client>>);

impl tower_service::Service<Request<Body>> for Current {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move { client.send(request).await })
    }
}

struct Renewal {
    /// The node's client (through [`Current`]): the renewal is asked for with the certificate it renews.
    client: kube::Client,
    current: Arc<RwLock<kube::Client>>,
    /// The node's kubeconfig, rewritten with each new certificate.
    path: PathBuf,
    /// How the agent reaches the masters (its server perhaps a load balancer's address).
    config: kube::Config,
}

impl Renewal {
    async fn run(self, mut certificate: NodeCertificate) {
        loop {
            let at = renewal_time(
                certificate.not_before,
                certificate.not_after,
                rand::random_range(RENEW_FROM..RENEW_UNTIL),
            );
            let wait = Duration::from_secs((at - now()).max(0) as u64);
            tracing::info!(user = %certificate.user, expires = certificate.not_after, in_seconds = wait.as_secs(),
                "the node's client certificate will be renewed");
            tokio::time::sleep(wait).await;
            let mut backoff = Duration::from_secs(2);
            certificate = loop {
                match self.renew(&certificate.user).await {
                    Ok(renewed) => break renewed,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot renew the node's client certificate");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            };
            tracing::info!(user = %certificate.user, expires = certificate.not_after,
                "renewed the node's client certificate");
        }
    }

    /// Asks for a new certificate, keeps it in the kubeconfig and sends new requests with it.
    async fn renew(&self, user: &str) -> anyhow::Result<NodeCertificate> {
        let request = crate::csr::Request {
            name: format!("node-csr-{}", crate::csr::suffix()),
            common_name: user,
            organization: Some("system:nodes"),
            signer: "kubernetes.io/kube-apiserver-client-kubelet",
            expiration_seconds: None,
            approve: false,
        };
        let (cert, key) = crate::csr::client_certificate(&self.client, request).await?;
        let renewed = parse(cert.as_bytes()).context("the signed certificate is not a node's")?;
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let cluster = kubeconfig.clusters.first().and_then(|c| c.cluster.as_ref()).context("no cluster")?;
        let server = cluster.server.clone().context("no server")?;
        let ca = cluster.certificate_authority_data.as_deref().context("no certificate authority")?;
        let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca)?)?;
        let text = keel_apiserver::tls::client_certificate_kubeconfig("keel", &server, &ca, user, &cert, &key);
        keel_apiserver::server::write_private(&self.path, text.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        let mut config = crate::server::client_config(&self.path).await?;
        config.cluster_url = self.config.cluster_url.clone();
        let client = kube::Client::try_from(config).context("cannot build an API client")?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_seventy_and_ninety_percent_of_the_life() {
        assert_eq!(renewal_time(1000, 2000, 0.7), 1700);
        assert_eq!(renewal_time(1000, 2000, 0.9), 1900);
        assert_eq!(renewal_time(1000, 2000, 0.1), 1700);
        assert_eq!(renewal_time(1000, 2000, 1.0), 1900);
        assert_eq!(renewal_time(2000, 1000, 0.8), 2000);
    }

    #[test]
    fn only_node_certificates_are_renewed() {
        let ca = keel_apiserver::tls::Authority::generate("test-ca").unwrap();
        let (node, _) = ca.issue_client_in("system:node:n1", Some("system:nodes")).unwrap();
        let parsed = parse(node.as_bytes()).unwrap();
        assert_eq!(parsed.user, "system:node:n1");
        assert!(parsed.not_before < now() && now() < parsed.not_after);
        let (user, _) = ca.issue_client("alice").unwrap();
        assert_eq!(parse(user.as_bytes()), None);
    }
}
