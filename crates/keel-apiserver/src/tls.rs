//! HTTPS for the API server: the cluster CA ([`Authority`]), the serving certificate each master issues itself
//! from it, the rustls configuration ([`server_config`]), a listener that handshakes every connection in its
//! own task ([`TlsListener`], for `axum::serve`), and what an administrator needs to reach the cluster: a
//! bearer token ([`random_token`]) and a kubeconfig ([`kubeconfig`]).
//!
//! The CA is created once per cluster and shared by every master through the store (not this module's
//! concern); it is ECDSA P-256 and valid for about ten years, serving certificates for about one. A stored
//! CA is read back with rcgen's certificate parser (x509-parser), which also gives its public key, so that
//! a key that does not belong to the certificate is refused rather than signing certificates nobody trusts.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jiff::civil::Date;
use jiff::ToSpan as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long the CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a serving certificate is valid.
const SERVING_VALIDITY_DAYS: i64 = 365;
/// The subject of every serving certificate (kubeadm uses `kube-apiserver`).
const SERVING_COMMON_NAME: &str = "keel-apiserver";
/// Names every serving certificate carries, so that local clients always verify.
/// Besides loopback, the names pods reach the API by through the `kubernetes` Service (its cluster IP is
/// the server's to add: it depends on the service range).
const ALWAYS_SERVED: [&str; 7] = [
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];
/// How long a client may take to complete its TLS handshake before its connection is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate, key or TLS configuration could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate error: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("invalid PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("no certificate in the PEM text")]
    NoCertificate,
    #[error("unsupported CA certificate: {0}")]
    UnsupportedCa(&'static str),
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("invalid host name for a certificate: {0:?}")]
    InvalidHost(String),
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the system random number generator failed")]
    Random,
}

/// The cluster CA: its certificate and key, as PEM and as an rcgen issuer.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    /// The certificate only; the key never goes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA named `common_name`: an ECDSA P-256 key and a self-signed certificate valid for ~10 years.
    pub fn generate(common_name: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = ca_key_usages();
        set_validity(&mut params, today(), CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Authority { cert_pem: cert.pem(), key_pem: key.serialize_pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA stored as PEM (its certificate first in `cert_pem`, its private key in `key_pem`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let cert = certificates(cert_pem)?.into_iter().next().ok_or(TlsError::NoCertificate)?;
        let key = KeyPair::from_pem(key_pem)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert).map_err(|_| TlsError::UnsupportedCa("malformed certificate"))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(TlsError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Authority { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    /// A client certificate (PEM) for the PEM certificate request `csr_pem` (its signature checked), with
    /// the subject it asks for, valid for `validity` from now: what the CA signs for an approved
    /// CertificateSigningRequest.
    pub fn sign_client_request(&self, csr_pem: &str, validity: Duration) -> Result<String, TlsError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let params = &mut csr.params;
        params.subject_alt_names.clear();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity_from_now(params, validity);
        Ok(csr.signed_by(&self.issuer)?.pem())
    }

    /// The CA certificate (PEM), for clients to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM), for the caller to store.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A serving certificate for `hosts` (IP addresses become IP SANs, anything else DNS SANs; `localhost`,
    /// `127.0.0.1` and `::1` are always included), valid for ~1 year and signed by this CA, with a fresh
    /// ECDSA P-256 key. Returns (certificate PEM, key PEM).
    pub fn issue_serving(&self, hosts: &[String]) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, SERVING_COMMON_NAME);
        params.subject_alt_names = subject_alt_names(hosts)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, today(), SERVING_VALIDITY_DAYS);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl Authority {
    /// A client certificate for `common_name` (client authentication only), valid for ~1 year and signed by
    /// this CA, with a fresh ECDSA P-256 key: what the API server presents to node agents. Returns
    /// (certificate PEM, key PEM).
    pub fn issue_client(&self, common_name: &str) -> Result<(String, String), TlsError> {
        self.issue_client_in(common_name, None)
    }

    /// [`Authority::issue_client`] for a user in `group` (the certificate's O), if any.
    pub fn issue_client_in(&self, common_name: &str, group: Option<&str>) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if let Some(group) = group {
            params.distinguished_name.push(DnType::OrganizationName, group);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, today(), SERVING_VALIDITY_DAYS);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
}

fn today() -> Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// Valid from the day before `today` (clocks of clients may lag) for `days` days.
fn set_validity(params: &mut CertificateParams, today: Date, days: i64) {
    let ymd = |d: Date| rcgen::date_time_ymd(d.year().into(), d.month().unsigned_abs(), d.day().unsigned_abs());
    let from = today.checked_sub(1.day()).unwrap_or(today);
    let until = today.checked_add(days.days()).unwrap_or(Date::MAX);
    params.not_before = ymd(from);
    params.not_after = ymd(until);
}

/// Valid for `validity` from now, and from a little before now (a tenth of it, at most 5 minutes, as
/// kube-controller-manager's signer backdates) for clients whose clocks lag.
fn set_validity_from_now(params: &mut CertificateParams, validity: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let backdate = (validity / 10).min(Duration::from_secs(300));
    params.not_before = epoch + now.saturating_sub(backdate);
    params.not_after = epoch + now + validity;
}

/// The SANs for `hosts` plus [`ALWAYS_SERVED`], without duplicates: IP addresses (an IPv6 one may be
/// bracketed) as IP SANs, host names as DNS SANs (`*.` wildcards allowed); blank entries are skipped.
fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut sans = Vec::new();
    for host in hosts.iter().map(|h| h.trim()).chain(ALWAYS_SERVED).filter(|h| !h.is_empty()) {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let san = match bare.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_dns_name(host) => SanType::DnsName(
                host.to_ascii_lowercase().try_into().map_err(|_| TlsError::InvalidHost(host.to_string()))?,
            ),
            Err(_) => return Err(TlsError::InvalidHost(host.to_string())),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A DNS name as certificates carry it: dot-separated labels of letters, digits and inner hyphens, at most
/// 253 characters, optionally under a leading `*.` wildcard.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Every certificate in `pem`, in order.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

/// The crypto keel's TLS uses: rustls on ring, named explicitly so that no process-wide default is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration from a certificate chain (leaf first) and its key, offering HTTP/2 and
/// HTTP/1.1 by ALPN.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    serving(cert_pem, key_pem, None)
}

/// The server configuration, asking clients for a certificate `clients` verifies, if given.
fn serving(
    cert_pem: &str,
    key_pem: &str,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(cert_pem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] that also asks clients for a certificate the cluster CA `ca_pem` signed, for client
/// authentication: a client without one still connects (and authenticates otherwise).
pub fn server_config_with_clients(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(ca_pem)? {
        roots.add(ca)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    serving(cert_pem, key_pem, Some(Arc::new(ExpiredLater(verifier))))
}

/// A client verifier that lets a certificate the CA signed through the handshake even when it has expired
/// (or is not yet valid), so that its request gets kube-apiserver's 401 from authentication
/// ([`ClientCertificate::identity`] checks the time on every request) rather than a reset connection.
#[derive(Debug)]
struct ExpiredLater(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for ExpiredLater {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        use rustls::CertificateError::{Expired, ExpiredContext, NotValidYet, NotValidYetContext};
        match self.0.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                Expired | ExpiredContext { .. } | NotValidYet | NotValidYetContext { .. },
            )) => Ok(rustls::server::danger::ClientCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The verified client certificate (DER) of a connection, if its client presented one: the connection
/// info handlers get from a [`TlsListener`] (`into_make_service_with_connect_info::<ClientCertificate>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate(pub Option<Vec<u8>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientCertificate {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, connection) = stream.io().get_ref();
        ClientCertificate(connection.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()))
    }
}

impl ClientCertificate {
    /// The user a client certificate names, as Kubernetes reads it: CN the name, each O a group; `None`
    /// once it has expired (checked on each request, as kube-apiserver does, not only at the handshake, so a
    /// connection outlives its certificate only for the requests it had started).
    pub fn identity(&self) -> Option<(String, Vec<String>)> {
        let der = self.0.as_ref()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        if !cert.validity().is_valid() {
            return None;
        }
        let subject = cert.subject();
        let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
        let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
        Some((name, groups))
    }
}

/// An [`axum::serve::Listener`] that accepts TCP connections and completes each TLS handshake in a task of
/// its own, so a slow, stalled or failing client never holds up anyone else; a handshake that fails or
/// outlasts the timeout only costs that client its connection (logged at debug).
///
/// `axum::serve(TlsListener::new(tcp, server_config(..)?), app)`.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            handshakes: JoinSet::new(),
        }
    }

    /// Drop connections whose handshake takes longer than `timeout` (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsListener {
        self.handshake_timeout = timeout;
        self
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: a pending accept or handshake survives the other finishing.
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        self.handshakes.spawn(handshake(self.acceptor.clone(), tcp, addr, self.handshake_timeout));
                    }
                    Err(e) => accept_failed(e).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => match done {
                    Ok(Some(connection)) => return connection,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "tls handshake task failed"),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY");
    }
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some((tls, addr)),
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%addr, ?timeout, "tls handshake timed out");
            None
        }
    }
}

/// An error from `accept`: a connection that died before it was accepted is the client's problem; anything
/// else (out of file descriptors, say) is ours, and retrying at once would only spin.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        tracing::debug!(error = %e, "connection lost before accept");
    } else {
        tracing::error!(error = %e, "accept failed; retrying in a second");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A random bearer token: 32 bytes from the system's secure random source as unpadded URL-safe base64
/// (43 characters).
pub fn random_token() -> Result<String, TlsError> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider().secure_random.fill(&mut bytes).map_err(|_| TlsError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// An administrator's kubeconfig (YAML): the cluster `cluster` at `server_url` trusting the CA `ca_pem`, the
/// user `user` with bearer token `token`, and the context `user@cluster` joining them, set as current.
pub fn kubeconfig(cluster: &str, server_url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    user_kubeconfig(cluster, server_url, ca_pem, user, &format!("token: {}", quoted(token)))
}

/// A user's kubeconfig (YAML) with a client certificate and its key instead of a token.
pub fn client_certificate_kubeconfig(
    cluster: &str,
    server_url: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let credentials = format!("client-certificate-data: {}\n    client-key-data: {}", b64(cert_pem), b64(key_pem));
    user_kubeconfig(cluster, server_url, ca_pem, user, &credentials)
}

/// A kubeconfig of one cluster, one user with `credentials` (the YAML lines under `user:`) and the
/// context `user@cluster` joining them, set as current.
fn user_kubeconfig(cluster: &str, server_url: &str, ca_pem: &str, user: &str, credentials: &str) -> String {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let context = format!("{user}@{cluster}");
    let (cluster, server_url, user, context) = (quoted(cluster), quoted(server_url), quoted(user), quoted(&context));
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server_url}
    certificate-authority-data: {ca_data}
users:
- name: {user}
  user:
    {credentials}
contexts:
- name: {context}
  context:
    cluster: {cluster}
    user: {user}
current-context: {context}
preferences: {{}}
"
    )
}

/// The cluster's address and CA as a kubeconfig without users (kubeadm's `cluster-info`), for joiners to
/// learn the CA from.
pub fn cluster_kubeconfig(server_url: &str, ca_pem: &str) -> String {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let server_url = quoted(server_url);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: \"\"
  cluster:
    server: {server_url}
    certificate-authority-data: {ca_data}
contexts: []
current-context: \"\"
users: []
preferences: {{}}
"
    )
}

/// The pin of a CA as kubeadm's `--discovery-token-ca-cert-hash` writes it: `sha256:` and the hex SHA-256
/// of the first certificate's SubjectPublicKeyInfo in `cert_pem`.
pub fn ca_cert_hash(cert_pem: &str) -> Result<String, TlsError> {
    use sha2::Digest as _;
    let cert = certificates(cert_pem)?.into_iter().next().ok_or(TlsError::NoCertificate)?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert).map_err(|_| TlsError::UnsupportedCa("malformed certificate"))?;
    let digest = sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is a subset of it), so that no name can turn
/// into a number, a boolean or YAML syntax.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::RootCertStore;

    use super::*;

    fn ca() -> Authority {
        Authority::generate("keel-ca").unwrap()
    }

    /// Whether `ca` vouches for `cert_pem` as a server named `name` (webpki's checks, as a client makes them).
    fn verifies(ca: &Authority, cert_pem: &str, name: &str) -> bool {
        let mut roots = RootCertStore::empty();
        roots.add(certificates(ca.cert_pem()).unwrap().remove(0)).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        let leaf = certificates(cert_pem).unwrap().remove(0);
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier.verify_server_cert(&leaf, &[], &name, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn a_ca_round_trips_through_pem_and_still_issues_verifiable_certificates() {
        let original = ca();
        assert!(original.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(original.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        let restored = Authority::from_pem(original.cert_pem(), original.key_pem()).unwrap();
        assert_eq!((restored.cert_pem(), restored.key_pem()), (original.cert_pem(), original.key_pem()));
        let (cert, key) = restored.issue_serving(&["10.0.0.7".into()]).unwrap();
        assert!(verifies(&original, &cert, "10.0.0.7"));
        assert!(server_config(&cert, &key).is_ok());
    }

    #[test]
    fn client_certificates_verify_as_clients_only() {
        let ca = ca();
        let mut roots = RootCertStore::empty();
        roots.add(certificates(ca.cert_pem()).unwrap().remove(0)).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        let (client, _) = ca.issue_client("keel-apiserver").unwrap();
        let leaf = certificates(&client).unwrap().remove(0);
        assert!(verifier.verify_client_cert(&leaf, &[], UnixTime::now()).is_ok());
        assert!(!verifies(&ca, &client, "localhost"), "a client certificate must not serve");
        let (serving, _) = ca.issue_serving(&[]).unwrap();
        let leaf = certificates(&serving).unwrap().remove(0);
        assert!(
            verifier.verify_client_cert(&leaf, &[], UnixTime::now()).is_err(),
            "a serving one must not be a client"
        );
    }

    #[test]
    fn a_key_from_another_ca_is_refused() {
        let (a, b) = (ca(), ca());
        assert!(matches!(Authority::from_pem(a.cert_pem(), b.key_pem()), Err(TlsError::KeyMismatch)));
        assert!(matches!(Authority::from_pem("", a.key_pem()), Err(TlsError::NoCertificate)));
        assert!(Authority::from_pem(a.cert_pem(), "not a key").is_err());
    }

    #[test]
    fn serving_certificates_name_the_hosts_and_localhost() {
        let ca = ca();
        let (cert, _) = ca.issue_serving(&["10.1.2.3".into(), "master-1.example".into(), "fd00::5".into()]).unwrap();
        for name in ["10.1.2.3", "master-1.example", "fd00::5", "localhost", "127.0.0.1", "::1"] {
            assert!(verifies(&ca, &cert, name), "{name}");
        }
        for name in ["10.1.2.4", "master-2.example", "example"] {
            assert!(!verifies(&ca, &cert, name), "{name}");
        }
        assert!(
            !verifies(&Authority::generate("keel-ca").unwrap(), &cert, "localhost"),
            "another CA with the same name"
        );
    }

    #[test]
    fn sans_are_parsed_deduplicated_and_checked() {
        let hosts = ["[fd00::1]", " Node.Example ", "127.0.0.1", "", "*.svc.local"].map(String::from);
        let sans = subject_alt_names(&hosts).unwrap();
        let ip = |s: &str| SanType::IpAddress(s.parse().unwrap());
        let dns = |s: &str| SanType::DnsName(s.try_into().unwrap());
        assert_eq!(
            sans,
            [
                ip("fd00::1"),
                dns("node.example"),
                ip("127.0.0.1"),
                dns("*.svc.local"),
                dns("localhost"),
                ip("::1"),
                dns("kubernetes"),
                dns("kubernetes.default"),
                dns("kubernetes.default.svc"),
                dns("kubernetes.default.svc.cluster.local")
            ]
        );
        for bad in ["bad host", "-x.example", "a..b", "x_y", "ünï"] {
            assert!(matches!(subject_alt_names(&[bad.into()]), Err(TlsError::InvalidHost(_))), "{bad}");
        }
    }

    #[test]
    fn server_config_offers_h2_and_http1_and_needs_a_certificate() {
        let (cert, key) = ca().issue_serving(&[]).unwrap();
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(matches!(server_config("", &key), Err(TlsError::NoCertificate)));
        assert!(server_config(&cert, "").is_err());
    }

    #[test]
    fn validity_starts_the_day_before() {
        let mut params = CertificateParams::default();
        set_validity(&mut params, jiff::civil::date(2025, 3, 1), 365);
        assert_eq!(params.not_before, rcgen::date_time_ymd(2025, 2, 28));
        assert_eq!(params.not_after, rcgen::date_time_ymd(2026, 3, 1));
    }

    /// The pin is what kubeadm's documentation computes with openssl (the public key as DER, hashed).
    #[test]
    fn ca_pins_are_kubeadms() {
        let ca = Authority::generate("pin-test").unwrap();
        let pin = ca_cert_hash(ca.cert_pem()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        let script = format!(
            "openssl x509 -pubkey -in {} | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex",
            path.display()
        );
        let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
        let openssl = String::from_utf8(out.stdout).unwrap();
        let hex = openssl.trim().rsplit(' ').next().unwrap();
        assert_eq!(pin, format!("sha256:{hex}"));
        assert_ne!(pin, ca_cert_hash(Authority::generate("pin-test").unwrap().cert_pem()).unwrap());
        assert!(ca_cert_hash("not pem").is_err());
    }

    #[test]
    fn tokens_are_long_url_safe_and_different() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn kubeconfig_text() {
        let text = kubeconfig("keel", "https://10.0.0.1:6443", "PEM", "admin", "tok");
        assert_eq!(
            text,
            r#"apiVersion: v1
kind: Config
clusters:
- name: "keel"
  cluster:
    server: "https://10.0.0.1:6443"
    certificate-authority-data: UEVN
users:
- name: "admin"
  user:
    token: "tok"
contexts:
- name: "admin@keel"
  context:
    cluster: "keel"
    user: "admin"
current-context: "admin@keel"
preferences: {}
"#
        );
        assert!(kubeconfig("a\"b", "s", "", "yes", "t").contains(r#"- name: "a\"b""#));
    }
}
