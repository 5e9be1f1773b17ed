//! One master's API server from start to stop: the cluster's shared secrets (CA and admin token, created
//! by the first master and kept in the store, so that every master's certificate chains to one CA and one
//! kubeconfig works against any master), this master's serving certificate, the admin kubeconfig in its
//! data dir, the system namespaces and `kube-public/cluster-info`, and HTTPS with bearer tokens until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{require_token, Authenticator, Tokens, User};
use crate::leadership::{self, Campaign, Role};
use crate::storage::{Storage, StorageError};
use crate::tls::{self, Authority, TlsError, TlsListener};
use crate::{app, masters, namespaces, AppState, Leadership};

/// Where the cluster's CA and admin token live in the store. (Encryption at rest comes later: anyone who
/// can read the store can read them, as with Kubernetes' own secrets in etcd.)
pub const BOOTSTRAP_KEY: &str = "/keel/bootstrap";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to serve the API.
    pub listen: SocketAddr,
    /// `host:port` clients reach this master at (the kubeconfig's server).
    pub advertise: String,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Where admin.kubeconfig and the CA certificate are written.
    pub data_dir: PathBuf,
    /// Where Services' cluster IPs come from.
    pub service_cidr: keel_api::services::ServiceCidr,
    /// This master's name (for the control-loop leader key).
    pub identity: String,
    /// How it campaigns to run the control loops.
    pub campaign: Campaign,
    /// More figures for `/metrics` (a stacked master's store member).
    pub extra_metrics: Option<crate::metrics::ExtraMetrics>,
    /// What the node lifecycle controller reports (from `keel-controllers`, wired by the binary), shown by
    /// `/readyz`'s `node-lifecycle` check.
    pub node_lifecycle: Option<tokio::sync::watch::Receiver<String>>,
    /// The longest client certificate the CA signs for a CertificateSigningRequest (nodes renew theirs
    /// before they expire).
    pub cluster_signing_duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the store did not become available: {0}")]
    Store(#[from] StorageError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the cluster's bootstrap record is damaged: {0}")]
    Bootstrap(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// The cluster-wide secrets every master shares.
pub struct ClusterSecrets {
    pub authority: Authority,
    pub admin_token: String,
}

/// Reads the cluster's secrets, creating them if this is the first master (the create is a
/// compare-and-swap, so two masters starting together agree on one set).
pub async fn cluster_secrets(storage: &Storage) -> Result<ClusterSecrets, ServerError> {
    loop {
        match storage.get(BOOTSTRAP_KEY).await {
            Ok(stored) => {
                let v: Value =
                    serde_json::from_slice(&stored.value).map_err(|e| ServerError::Bootstrap(e.to_string()))?;
                let field = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| ServerError::Bootstrap(format!("{k} missing")))
                };
                let authority = Authority::from_pem(&field("caCert")?, &field("caKey")?)?;
                return Ok(ClusterSecrets { authority, admin_token: field("adminToken")? });
            }
            Err(StorageError::NotFound) => {
                let authority = Authority::generate("keel-ca")?;
                let token = tls::random_token()?;
                let record = json!({"caCert": authority.cert_pem(), "caKey": authority.key_pem(), "adminToken": token});
                match storage.create(BOOTSTRAP_KEY, record.to_string().into_bytes()).await {
                    Ok(_) | Err(StorageError::AlreadyExists) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Retries `f` while the store is unavailable (no leader yet), for up to `limit`.
async fn patiently<T, F, Fut>(limit: Duration, mut f: F) -> Result<T, ServerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ServerError>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match f().await {
            Err(ServerError::Store(StorageError::Unavailable(detail))) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%detail, "store not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

fn host_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_matches(['[', ']']).to_string(),
        None => addr.to_string(),
    }
}

/// A master ready to serve: its listener bound, its kubeconfig written and its campaign for the control
/// loops under way.
pub struct Master {
    /// Whether this master leads the control loops, and under which fence.
    pub role: tokio::sync::watch::Receiver<Role>,
    /// True once the default RBAC roles and bindings are in place and this master's policy shows them (the
    /// control loops wait for it).
    pub bootstrapped: tokio::sync::watch::Receiver<bool>,
    /// The admin kubeconfig, reaching this master.
    pub kubeconfig: PathBuf,
    /// Kubeconfigs (YAML) for this master's own clients, each with an identity of its own.
    pub identities: Identities,
    tcp: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    stop_campaign: tokio::sync::watch::Sender<bool>,
}

/// Kubeconfigs (YAML) for the clients a master runs in its own process, reaching it with a client
/// certificate each (issued at start, kept in memory only): the least each needs, as kube-controller-manager
/// and kube-scheduler run with their own users and kube-apiserver with its loopback one.
#[derive(Clone)]
pub struct Identities {
    /// `system:kube-controller-manager`: the control loops (`system:kube-controller-manager` and
    /// `keel:controller-manager` by RBAC).
    pub controller_manager: String,
    /// `system:kube-scheduler`: the scheduler (`system:kube-scheduler` by RBAC).
    pub scheduler: String,
    /// `system:apiserver` in `system:masters`: what the master does to the cluster itself (promoting its store
    /// member when it joins).
    pub loopback: String,
}

impl Identities {
    /// The users named by [`Identities`].
    pub const CONTROLLER_MANAGER: &'static str = "system:kube-controller-manager";
    pub const SCHEDULER: &'static str = "system:kube-scheduler";
    pub const LOOPBACK: &'static str = "system:apiserver";

    fn issue(authority: &Authority, server_url: &str) -> Result<Identities, ServerError> {
        let kubeconfig = |user: &str, group: Option<&str>| -> Result<String, ServerError> {
            let (cert, key) = authority.issue_client_in(user, group)?;
            Ok(tls::client_certificate_kubeconfig("keel", server_url, authority.cert_pem(), user, &cert, &key))
        };
        Ok(Identities {
            controller_manager: kubeconfig(Self::CONTROLLER_MANAGER, None)?,
            scheduler: kubeconfig(Self::SCHEDULER, None)?,
            loopback: kubeconfig(Self::LOOPBACK, Some(crate::auth::MASTERS))?,
        })
    }
}

/// Prepares a master: the cluster's secrets and system namespaces, its certificate and kubeconfig, its
/// listener on `config.listen`, and its campaign.
pub async fn start(config: ServerConfig, storage: Storage) -> Result<Master, ServerError> {
    let wait = Duration::from_secs(60);
    let secrets = patiently(wait, || cluster_secrets(&storage)).await?;
    patiently(wait, || async { namespaces::ensure_system(&storage).await.map_err(ServerError::from) }).await?;
    patiently(wait, || async { namespaces::ensure_local_api_services(&storage).await.map_err(ServerError::from) })
        .await?;
    let server_url = format!("https://{}", config.advertise);
    let ca_pem = secrets.authority.cert_pem();
    patiently(wait, || async {
        crate::bootstrap_tokens::ensure_cluster_info(&storage, &server_url, ca_pem).await.map_err(ServerError::from)
    })
    .await?;

    // In-cluster clients check the certificate against the `kubernetes` Service's address.
    let service_ip = config.service_cidr.nth(0).to_string();
    let mut hosts = vec![host_of(&config.advertise), config.listen.ip().to_string(), service_ip];
    hosts.extend(config.tls_sans.iter().cloned());
    hosts.retain(|h| !h.is_empty() && h != "0.0.0.0" && h != "::");
    let (cert, key) = secrets.authority.issue_serving(&hosts)?;
    let tls = tls::server_config_with_clients(&cert, &key, secrets.authority.cert_pem())?;
    // What this master presents to node agents (they trust the cluster CA for clients).
    let (client_cert, client_key) = secrets.authority.issue_client(keel_api::agent_api::APISERVER_CLIENT_NAME)?;
    let node_client = Arc::new(crate::NodeClient::new(&client_cert, &client_key)?);

    std::fs::create_dir_all(&config.data_dir).map_err(io(format!("cannot create {}", config.data_dir.display())))?;
    let ca_path = config.data_dir.join("ca.crt");
    std::fs::write(&ca_path, secrets.authority.cert_pem())
        .map_err(io(format!("cannot write {}", ca_path.display())))?;
    let kubeconfig = tls::kubeconfig("keel", &server_url, ca_pem, "admin", &secrets.admin_token);
    let identities = Identities::issue(&secrets.authority, &server_url)?;
    let kc_path = config.data_dir.join("admin.kubeconfig");
    write_private(&kc_path, kubeconfig.as_bytes()).map_err(io(format!("cannot write {}", kc_path.display())))?;

    let tcp = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("cannot listen on {}", config.listen)))?;
    let tokens = Tokens::new().with(secrets.admin_token.clone(), User::admin("admin"));
    let (stop_campaign, stop_rx) = tokio::sync::watch::channel(false);
    let rbac = crate::rbac::Rbac::follow(storage.clone(), stop_rx.clone());
    let keys = Arc::new(
        patiently(wait, || async {
            crate::service_accounts::ServiceAccountKeys::load(&storage).await.map_err(|e| match e {
                crate::service_accounts::KeyError::Store(e) => ServerError::Store(e),
                other => ServerError::Bootstrap(other.to_string()),
            })
        })
        .await?,
    );
    let nodes = crate::node_authz::NodeGraph::follow(storage.clone(), stop_rx.clone());
    let authenticator = Authenticator::new(tokens, Some(storage.clone()))
        .with_rbac(rbac.clone())
        .with_service_accounts(keys.clone())
        .with_node_authorizer(nodes.clone());
    let role = leadership::spawn(storage.clone(), config.identity.clone(), config.campaign, stop_rx.clone());
    let (bootstrapped_tx, bootstrapped) = tokio::sync::watch::channel(false);
    let cluster_ip = config.service_cidr.nth(0).to_string();
    let dns_ip = config.service_cidr.nth(9).to_string(); // 10.96.0.10
    let state = AppState {
        service_cidr: config.service_cidr,
        leadership: Some(Leadership { identity: config.identity, role: role.clone() }),
        node_client: Some(node_client),
        extra_metrics: config.extra_metrics,
        node_lifecycle: config.node_lifecycle,
        rbac: Some(rbac.clone()),
        nodes: Some(nodes),
        rbac_bootstrapped: Some(bootstrapped.clone()),
        service_accounts: Some(keys),
        authority: Some(Arc::new(secrets.authority)),
        signing_duration: config.cluster_signing_duration,
        custom: crate::crds::CustomResources::follow(storage.clone(), stop_rx.clone()),
        webhooks: crate::webhooks::Webhooks::follow(storage.clone(), stop_rx.clone()),
        ..AppState::new(config.advertise.clone(), storage.clone())
    };
    // Clients learn every master from the `kubernetes` Endpoints.
    let api_port = config.advertise.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(config.listen.port());
    tokio::spawn(masters::register(storage.clone(), config.advertise.clone(), stop_rx.clone()));
    tokio::spawn(crate::rbac::defaults::bootstrap(app(state.clone()), rbac.clone(), stop_rx.clone(), bootstrapped_tx));
    tokio::spawn(masters::reconcile(storage, app(state.clone()), cluster_ip, dns_ip, api_port, stop_rx));
    let router = require_token(app(state), authenticator);
    tracing::info!(listen = %config.listen, kubeconfig = %kc_path.display(), "API server serving");
    Ok(Master { role, bootstrapped, kubeconfig: kc_path, identities, tcp, tls, router, stop_campaign })
}

impl Master {
    /// Serves the API until `shutdown` resolves, then lets a leader on an external store resign (revoke its
    /// lease) before returning.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let Master { mut role, tcp, tls, router, stop_campaign, .. } = self;
        let router = router.into_make_service_with_connect_info::<tls::ClientCertificate>();
        let served = axum::serve(TlsListener::new(tcp, tls), router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop_campaign.send(true);
            })
            .await
            .map_err(io("the API server failed"));
        let _ =
            tokio::time::timeout(Duration::from_secs(2), role.wait_for(|r| !matches!(r, Role::Leader { .. }))).await;
        served
    }
}

/// Writes a file only its owner can read (the kubeconfig holds the admin token).
/// Writes `data` to `path` readable by its owner only (0600), whole or not at all (a rename).
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:6443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6443"), "::1");
        assert_eq!(host_of("master-1.example:6443"), "master-1.example");
    }
}
