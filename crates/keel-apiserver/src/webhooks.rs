//! Dynamic admission: the webhooks of the Mutating- and ValidatingWebhookConfigurations in the store (kept
//! current by a watch, and refreshed by every write of a configuration through this master), called for
//! every create, update and delete they match — mutating ones first, in order, their JSON patches applied;
//! then the validating ones — over HTTPS with the configuration's `caBundle`, at a URL or at a Service's
//! endpoint, within the webhook's timeout, its failure policy deciding when it cannot be called. The rules
//! are keel-api's `webhooks`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use keel_api::status::ApiError;
use keel_api::webhooks::{self, Attributes, Endpoint, Verdict, Webhook};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::sync::watch;

use crate::storage::{Read, Storage, StorageError, Watched};

const MUTATING: &str = "/registry/mutatingwebhookconfigurations/";
const VALIDATING: &str = "/registry/validatingwebhookconfigurations/";

/// The most an answer may be.
const ANSWER_LIMIT: usize = 3 * 1024 * 1024;

/// A master's webhooks (cheap to clone: all clones share one list).
#[derive(Clone)]
pub struct Webhooks {
    current: Arc<watch::Sender<Arc<Vec<Webhook>>>>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks::none()
    }
}

impl Webhooks {
    /// No webhooks until [`Webhooks::refresh`] (routers without a watch, in tests).
    pub fn none() -> Webhooks {
        Webhooks { current: Arc::new(watch::channel(Arc::new(Vec::new())).0) }
    }

    /// Follows the configurations in the store until `stop`.
    pub fn follow(storage: Storage, stop: watch::Receiver<bool>) -> Webhooks {
        let this = Webhooks::none();
        let shared = this.clone();
        crate::storage::keep_following(
            "webhook configurations",
            storage,
            (*this.current).clone(),
            stop,
            move |s, _| {
                let shared = shared.clone();
                async move { shared.sync(&s).await }
            },
        );
        this
    }

    pub fn all(&self) -> Arc<Vec<Webhook>> {
        self.current.borrow().clone()
    }

    /// Reads the configurations again (linearizably).
    pub async fn refresh(&self, storage: &Storage) -> Result<(), StorageError> {
        let list = |prefix: &'static str| async move {
            let page = storage.list_read(prefix, None, 0, 0, Read::Linearizable).await?;
            Ok::<Vec<Value>, StorageError>(
                page.items.iter().filter_map(|s| serde_json::from_slice(&s.value).ok()).collect(),
            )
        };
        let (mutating, validating) = (list(MUTATING).await?, list(VALIDATING).await?);
        self.current.send_replace(Arc::new(webhooks::webhooks(&mutating, &validating)));
        Ok(())
    }

    async fn sync(&self, storage: &Storage) -> Result<(), StorageError> {
        // The watches start from before the list, so no change falls between them (a change seen twice
        // only reads the configurations once more).
        let revision = storage.list(MUTATING, None, 1, 0).await?.revision;
        self.refresh(storage).await?;
        let mut mutating = storage.watch(MUTATING, revision + 1).await?;
        let mut validating = storage.watch(VALIDATING, revision + 1).await?;
        loop {
            let event = tokio::select! {
                e = mutating.next() => e,
                e = validating.next() => e,
            };
            match event {
                Some(Ok(Watched::Changes(_))) => self.refresh(storage).await?,
                Some(Ok(Watched::Progress { .. })) => {}
                Some(Ok(Watched::Compacted { compacted })) => {
                    return Err(StorageError::Unavailable(format!("the webhook watch fell behind ({compacted})")))
                }
                Some(Err(e)) => return Err(e),
                None => return Err(StorageError::Unavailable("the webhook watch ended".into())),
            }
        }
    }
}

/// Runs the matching webhooks on a request: the mutating ones change `object` (when there is one), those
/// with `reinvocationPolicy: IfNeeded` once more if a later one changed the object after them (as
/// kube-apiserver reinvokes them), then the validating ones see it; the warnings they gave, or the refusal.
pub(crate) async fn admit(
    hooks: &[Webhook],
    storage: &Storage,
    attributes: &Attributes<'_>,
    object: &mut Option<Value>,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    // Each reinvocable webhook that was called, with the object as it left it.
    let mut called = Vec::new();
    for hook in hooks.iter().filter(|h| h.mutating) {
        if run(hook, storage, attributes, object, &mut warnings).await? && hook.reinvoke {
            called.push((hook, object.clone()));
        }
    }
    for (hook, left) in called {
        if left != *object {
            run(hook, storage, attributes, object, &mut warnings).await?;
        }
    }
    for hook in hooks.iter().filter(|h| !h.mutating) {
        run(hook, storage, attributes, object, &mut warnings).await?;
    }
    Ok(warnings)
}

/// Calls `hook` if the request matches it, applying its patch to `object`; whether it was called.
async fn run(
    hook: &Webhook,
    storage: &Storage,
    attributes: &Attributes<'_>,
    object: &mut Option<Value>,
    warnings: &mut Vec<String>,
) -> Result<bool, ApiError> {
    let current = Attributes { object: object.as_ref(), ..attributes.clone() };
    let Some(version) = hook.matched_version(&current) else {
        return Ok(false);
    };
    if let Some(refused) = hook.refuses_dry_run(&current) {
        return Err(refused);
    }
    // Through an equivalent version (a custom resource's, conversion None): the objects as that version
    // shows them, the patch applied there, the result shown as the request's version again.
    let resource = attributes.resource;
    let as_version = |o: &Value, v: &str| {
        let mut o = o.clone();
        if let Some(m) = o.as_object_mut().filter(|m| m.contains_key("apiVersion")) {
            m.insert("apiVersion".into(), Value::String(resource.api_version_at(v)));
        }
        o
    };
    let mut shown = object.as_ref().map(|o| as_version(o, version));
    let old_shown = attributes.old_object.map(|o| as_version(o, version));
    let sent = Attributes { object: shown.as_ref(), old_object: old_shown.as_ref(), ..attributes.clone() };
    let uid = uuid::Uuid::new_v4().to_string();
    let review = webhooks::review(&sent, version, &uid);
    let answer = match call(hook, storage, &review).await {
        Ok(a) => webhooks::verdict(hook, &a, &uid),
        Err(e) => Err(e),
    };
    match answer {
        Ok(Verdict::Allowed { patch, warnings: w }) => {
            warnings.extend(w);
            if let (Some(patch), Some(o)) = (patch, shown.as_mut()) {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| webhooks::call_failed(hook, &format!("the patch is not a JSON patch: {e}")))?;
                json_patch::patch(o, &ops)
                    .map_err(|e| webhooks::call_failed(hook, &format!("the patch could not be applied: {e}")))?;
                *object = Some(as_version(o, resource.version));
            }
            Ok(true)
        }
        Ok(Verdict::Denied(e)) => Err(e),
        Err(why) if hook.ignore_failures => {
            tracing::info!(webhook = hook.name, why, "a webhook failed; its failure policy ignores that");
            Ok(true)
        }
        Err(why) => Err(webhooks::call_failed(hook, &why)),
    }
}

/// POSTs `review` to the webhook and reads its answer.
async fn call(hook: &Webhook, storage: &Storage, review: &Value) -> Result<Value, String> {
    let (host, port, path, server_name) = match &hook.endpoint {
        Endpoint::Url(u) => {
            let url = url::Url::parse(u).map_err(|e| format!("the URL {u:?} does not parse: {e}"))?;
            let host = url.host_str().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_string();
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            (host.clone(), url.port().unwrap_or(443), path, host)
        }
        Endpoint::Service { namespace, name, path, port } => {
            let (ip, target) = service_endpoint(storage, namespace, name, *port).await?;
            (ip, target, path.clone(), format!("{name}.{namespace}.svc"))
        }
    };
    let tls = tls_config(&hook.ca_bundle)?;
    let server_name = ServerName::try_from(server_name).map_err(|e| e.to_string())?;
    let body = review.to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("dial {host}:{port}: {e}"))?;
        let tls =
            tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::post(&path)
            .header(hyper::header::HOST, &host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(axum::body::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), ANSWER_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the webhook answered {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("the answer is not JSON: {e}"))
    };
    let timeout = Duration::from_secs(hook.timeout_seconds);
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("the webhook did not answer within {}s", hook.timeout_seconds))?
}

/// The TLS configuration trusting `ca_bundle` (PEM).
fn tls_config(ca_bundle: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(BundleVerifier::new(ca_bundle, provider)?))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A webhook's server certificate checked against its caBundle as kube-apiserver (Go's crypto/x509) checks
/// it: a chain to one of the bundle's certificates, or the very certificate the bundle holds. The second is
/// how a self-signed serving certificate (`openssl req -x509`, a CA certificate) is commonly its own
/// caBundle, which webpki alone refuses ("CA used as end entity"); it must still name the server and be
/// within its validity period.
#[derive(Debug)]
struct BundleVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    bundle: Vec<CertificateDer<'static>>,
}

impl BundleVerifier {
    fn new(ca_bundle: &[u8], provider: Arc<rustls::crypto::CryptoProvider>) -> Result<BundleVerifier, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let mut bundle = Vec::new();
        for cert in CertificateDer::pem_slice_iter(ca_bundle) {
            let cert = cert.map_err(|e| format!("the caBundle does not read: {e}"))?;
            roots.add(cert.clone()).map_err(|e| format!("the caBundle holds an unusable certificate: {e}"))?;
            bundle.push(cert);
        }
        if roots.is_empty() {
            return Err("the webhook has no caBundle to verify it with".into());
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(BundleVerifier { webpki, bundle })
    }
}

impl rustls::client::danger::ServerCertVerifier for BundleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verdict {
            Err(e) if self.bundle.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| e.clone())?;
                let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                let validity = cert.validity();
                if now < validity.not_before.timestamp() {
                    return Err(rustls::CertificateError::NotValidYet.into());
                }
                if now > validity.not_after.timestamp() {
                    return Err(rustls::CertificateError::Expired.into());
                }
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A ready endpoint of the Service's port `port`: its address and target port (the masters reach pods
/// directly; the node proxies are for pods).
async fn service_endpoint(storage: &Storage, namespace: &str, name: &str, port: u16) -> Result<(String, u16), String> {
    let read = |key: String| async move {
        let stored = storage.get(&key).await.map_err(|e| format!("{key}: {e}"))?;
        serde_json::from_slice::<Value>(&stored.value).map_err(|e| e.to_string())
    };
    let service = read(format!("/registry/services/{namespace}/{name}")).await?;
    let ports = service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let service_port = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
        .ok_or(format!("service {namespace}/{name} has no port {port}"))?;
    let port_name = service_port.get("name").and_then(Value::as_str).unwrap_or("");
    let endpoints = read(format!("/registry/endpoints/{namespace}/{name}")).await?;
    for subset in endpoints.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let target = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name);
        let address = subset.pointer("/addresses/0/ip").and_then(Value::as_str);
        if let (Some(t), Some(ip)) = (target.and_then(|t| t.get("port").and_then(Value::as_u64)), address) {
            return Ok((ip.to_string(), t as u16));
        }
    }
    Err(format!("service {namespace}/{name} has no ready endpoint"))
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{ServerName, UnixTime};

    use super::*;

    /// A self-signed certificate for `host` (a CA one if `ca`, as `openssl req -x509` makes) valid from
    /// `from` to `to` (years), its DER and PEM.
    fn self_signed(host: &str, ca: bool, (from, to): (i32, i32)) -> (CertificateDer<'static>, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), cert.pem())
    }

    fn verify(bundle: &str, cert: &CertificateDer<'_>, host: &str) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = BundleVerifier::new(bundle.as_bytes(), provider).unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn a_self_signed_serving_certificate_may_be_its_own_ca_bundle() {
        let valid = (2020, 2100);
        let (cert, pem) = self_signed("hook.ns.svc", true, valid);
        verify(&pem, &cert, "hook.ns.svc").expect("the very certificate of the bundle");
        let wrong_name = verify(&pem, &cert, "other.ns.svc").unwrap_err();
        assert!(matches!(wrong_name, rustls::Error::InvalidCertificate(_)), "{wrong_name:?}");
        let (stranger, _) = self_signed("hook.ns.svc", true, valid);
        assert!(verify(&pem, &stranger, "hook.ns.svc").is_err(), "a certificate the bundle does not hold");
        let (old, old_pem) = self_signed("hook.ns.svc", true, (2020, 2021));
        let expired = verify(&old_pem, &old, "hook.ns.svc").unwrap_err();
        assert_eq!(expired, rustls::Error::InvalidCertificate(rustls::CertificateError::Expired));
    }
}
