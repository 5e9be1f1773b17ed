//! The client-side load balancer to the masters (as k3s's agents run one): a local TCP endpoint that
//! forwards each connection to one healthy master, so a client configured with one address (a kubeconfig's
//! `server`) survives the loss of any master.
//!
//! - It probes every master's `/readyz` over HTTPS (checking its certificate against the cluster CA) a few
//!   times a second; [`pool`] decides from the answers which master new connections go to and when a master
//!   is down.
//! - When a master goes down it closes the connections it carried: their clients reconnect at once, through
//!   a live master, instead of waiting on a dead socket (watches above all, which would otherwise hang until
//!   a TCP timeout on a partition).
//! - The list of masters starts from the addresses it is given and then follows the `kubernetes` Endpoints
//!   in `default` (every master keeps its API address there), so masters that join or leave are picked up.
//! - TLS passes through untouched: clients still check the master's certificate and authenticate to the
//!   master itself (every master's certificate names 127.0.0.1, where the balancer listens).
//! - With a network namespace given, it dials the masters from inside it (a local endpoint on a machine
//!   whose own namespace has no route to the masters, as `deploy/local-cluster.sh` runs them).

pub mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::Empty;
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Endpoints;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

pub use pool::{Health, Pool, Probe, Transition};

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("no master address given")]
    NoServers,
    #[error("bad master address {0:?} (want host:port or https://host:port)")]
    BadServer(String),
    #[error("bad cluster CA certificate: {0}")]
    Ca(String),
}

/// How a balancer runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where clients connect (port 0: any free port; see [`Balancer::local_addr`]).
    pub listen: SocketAddr,
    /// The masters to start from, `host:port` or `https://host:port`.
    pub servers: Vec<String>,
    /// The cluster CA's certificates (DER), to check the masters' certificates when probing.
    pub ca: Vec<Vec<u8>>,
    /// Dial the masters from inside this network namespace (e.g. `/run/netns/NAME`).
    pub netns: Option<PathBuf>,
    /// How often each master is probed.
    pub probe_period: Duration,
    /// How long a probe (connect, TLS, `/readyz`) may take before it counts as no answer.
    pub probe_timeout: Duration,
    /// How long a probe's TCP connect may take: the kernel completes it even when the master's process is
    /// busy, so on a LAN anything slower is a host or link that is gone (a partition is found within two
    /// of these, not two whole probe timeouts).
    pub probe_connect_timeout: Duration,
    /// How long a client's connection waits for one master before the next is tried.
    pub dial_timeout: Duration,
}

impl Settings {
    pub fn new(listen: SocketAddr, servers: Vec<String>, ca: Vec<Vec<u8>>) -> Settings {
        Settings {
            listen,
            servers,
            ca,
            netns: None,
            probe_period: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(800),
            probe_connect_timeout: Duration::from_millis(300),
            dial_timeout: Duration::from_secs(1),
        }
    }
}

/// `host:port` from `https://host:port[/…]` or `host:port`.
pub fn server_address(s: &str) -> Result<String, LbError> {
    let bare = s.trim().trim_start_matches("https://").trim_end_matches('/');
    let bare = bare.split('/').next().unwrap_or_default();
    match bare.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(bare.to_string()),
        _ => Err(LbError::BadServer(s.to_string())),
    }
}

/// The API addresses (`host:port`) the `kubernetes` Endpoints list: every address of every subset with the
/// subset's `https` port (or its only port).
pub fn endpoint_addresses(endpoints: &Endpoints) -> Vec<String> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let port = ports.iter().find(|p| p.name.as_deref() == Some("https")).or(match ports {
            [only] => Some(only),
            _ => None,
        });
        let Some(port) = port else { continue };
        for address in subset.addresses.iter().flatten() {
            let host = if address.ip.contains(':') { format!("[{}]", address.ip) } else { address.ip.clone() };
            let server = format!("{host}:{}", port.port);
            if !out.contains(&server) {
                out.push(server);
            }
        }
    }
    out
}

struct Shared {
    pool: Mutex<Pool>,
    /// Per master, woken when it goes down or leaves: its connections close.
    closers: Mutex<HashMap<String, Arc<Notify>>>,
    settings: Settings,
    tls: Arc<rustls::ClientConfig>,
}

impl Shared {
    fn closer(&self, server: &str) -> Arc<Notify> {
        self.closers.lock().expect("closers").entry(server.to_string()).or_default().clone()
    }

    fn close(&self, server: &str) {
        if let Some(n) = self.closers.lock().expect("closers").get(server) {
            n.notify_waiters();
        }
    }

    fn apply(&self, transition: Option<Transition>) {
        match transition {
            Some(Transition::Down(server)) => {
                tracing::warn!(%server, "master down: its connections are closed, new ones go to another master");
                self.close(&server);
            }
            Some(Transition::Up(server)) => tracing::info!(%server, "master answers again"),
            None => {}
        }
    }

    async fn dial(&self, server: &str, timeout: Duration) -> std::io::Result<TcpStream> {
        let addr = resolve(server).await?;
        match &self.settings.netns {
            None => tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?,
            Some(netns) => connect_in(netns.clone(), addr, timeout).await,
        }
    }
}

async fn resolve(server: &str) -> std::io::Result<SocketAddr> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    tokio::net::lookup_host(server)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{server} has no address")))
}

/// A TCP connection made from inside the network namespace `netns` (a socket belongs to the namespace it
/// was created in; a short-lived thread enters it, so no runtime thread changes namespace).
pub async fn connect_in(netns: PathBuf, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connected = (|| {
            let ns = std::fs::File::open(&netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(stream)
        })();
        tx.send(connected).ok();
    });
    let stream = rx.await.map_err(|_| std::io::Error::other("the connecting thread died"))??;
    TcpStream::from_std(stream)
}

fn probe_outcome(e: &std::io::Error) -> Probe {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Probe::Refused
    } else {
        Probe::Silent
    }
}

/// One probe: TLS to the master, `GET /readyz`, the status.
async fn probe(shared: &Shared, server: &str) -> Probe {
    let attempt = async {
        let tcp = shared.dial(server, shared.settings.probe_connect_timeout).await.map_err(|e| probe_outcome(&e))?;
        tcp.set_nodelay(true).ok();
        let host = server.rsplit_once(':').map_or(server, |(h, _)| h).trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| Probe::Silent)?;
        let tls = tokio_rustls::TlsConnector::from(shared.tls.clone()).connect(name, tcp).await.map_err(|e| {
            tracing::debug!(%server, error = %e, "probe: TLS failed");
            Probe::Silent
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|_| Probe::Silent)?;
        tokio::spawn(conn);
        let request = http::Request::get("/readyz")
            .header(http::header::HOST, server)
            .body(Empty::new())
            .map_err(|_| Probe::Silent)?;
        let response = sender.send_request(request).await.map_err(|_| Probe::Silent)?;
        Ok::<_, Probe>(Probe::Answered(response.status() == http::StatusCode::OK))
    };
    match tokio::time::timeout(shared.settings.probe_timeout, attempt).await {
        Ok(Ok(p)) | Ok(Err(p)) => p,
        Err(_) => Probe::Silent,
    }
}

/// A running balancer; dropping it stops it (listener, probes, the Endpoints watch and every connection).
pub struct Balancer {
    local: SocketAddr,
    shared: Arc<Shared>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Balancer {
    /// Binds the listener and starts probing.
    pub async fn start(settings: Settings) -> Result<Balancer, LbError> {
        let servers = settings.servers.iter().map(|s| server_address(s)).collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(LbError::NoServers);
        }
        let mut roots = rustls::RootCertStore::empty();
        for der in &settings.ca {
            roots.add(rustls::pki_types::CertificateDer::from(der.clone())).map_err(|e| LbError::Ca(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LbError::Ca(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| LbError::Listen { addr: settings.listen, source })?;
        let local = listener.local_addr().map_err(|source| LbError::Listen { addr: settings.listen, source })?;
        let shared = Arc::new(Shared {
            pool: Mutex::new(Pool::new(&servers)),
            closers: Mutex::new(HashMap::new()),
            settings,
            tls: Arc::new(tls),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone())).abort_handle();
        let probes = tokio::spawn(probe_loop(shared.clone())).abort_handle();
        tracing::info!(%local, ?servers, "load balancer to the masters listening");
        Ok(Balancer { local, shared, tasks: Mutex::new(vec![accept, probes]) })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Follows the `kubernetes` Endpoints in `default` with `client` (normally a client through this very
    /// balancer) and keeps the list of masters equal to them.
    pub fn follow_endpoints(&self, client: kube::Client) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            let api = Api::<Endpoints>::namespaced(client, "default");
            let config = watcher::Config::default().fields("metadata.name=kubernetes");
            let mut events = watcher(api, config).default_backoff().applied_objects().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(endpoints) => {
                        let servers = endpoint_addresses(&endpoints);
                        if !servers.is_empty() {
                            set_servers(&shared, &servers);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "watching the kubernetes Endpoints"),
                }
            }
        });
        self.tasks.lock().expect("tasks").push(task.abort_handle());
    }
}

fn set_servers(shared: &Shared, servers: &[String]) {
    let (removed, now) = {
        let mut pool = shared.pool.lock().expect("pool");
        let before = pool.servers().to_vec();
        let removed = pool.set_servers(servers);
        let now = pool.servers().to_vec();
        (removed, (before != now).then_some(now))
    };
    if let Some(now) = now {
        tracing::info!(servers = ?now, "the masters changed");
    }
    for server in removed {
        shared.close(&server);
        shared.closers.lock().expect("closers").remove(&server);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
        for closer in self.shared.closers.lock().expect("closers").values() {
            closer.notify_waiters();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(forward(client, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client connection: to the best master that takes it, then bytes both ways until either side closes
/// or that master goes down.
async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    client.set_nodelay(true).ok();
    let candidates = shared.pool.lock().expect("pool").candidates();
    for server in candidates {
        match shared.dial(&server, shared.settings.dial_timeout).await {
            Ok(mut upstream) => {
                upstream.set_nodelay(true).ok();
                let closer = shared.closer(&server);
                let closed = closer.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                shared.pool.lock().expect("pool").connected(&server);
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    _ = closed => tracing::debug!(%server, "closing a connection to a master that went down"),
                }
                return;
            }
            Err(e) => {
                tracing::debug!(%server, error = %e, "dialing a master failed; trying the next");
                let t = shared.pool.lock().expect("pool").dial_failed(&server, probe_outcome(&e));
                shared.apply(t);
            }
        }
    }
    tracing::warn!("no master took a connection");
}

async fn probe_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.probe_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let servers = shared.pool.lock().expect("pool").servers().to_vec();
        for server in servers {
            let shared = shared.clone();
            tokio::spawn(async move {
                let outcome = probe(&shared, &server).await;
                let t = shared.pool.lock().expect("pool").observe(&server, outcome);
                shared.apply(t);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};

    #[test]
    fn server_addresses_are_host_and_port() {
        assert_eq!(server_address("https://10.0.0.1:6443").unwrap(), "10.0.0.1:6443");
        assert_eq!(server_address("https://[fd00::1]:6443/").unwrap(), "[fd00::1]:6443");
        assert_eq!(server_address("m1.example:443").unwrap(), "m1.example:443");
        for bad in ["", "https://10.0.0.1", "10.0.0.1:0", ":6443", "https://m1:http"] {
            assert!(server_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_give_every_address_with_the_https_port() {
        let subset = |ips: &[&str], ports: &[(&str, i32)]| EndpointSubset {
            addresses: Some(
                ips.iter().map(|ip| EndpointAddress { ip: ip.to_string(), ..Default::default() }).collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort { name: Some(n.to_string()), port: *p, ..Default::default() })
                    .collect(),
            ),
            ..Default::default()
        };
        let e = Endpoints {
            subsets: Some(vec![
                subset(&["10.0.0.1", "10.0.0.2"], &[("https", 6443)]),
                subset(&["127.0.0.1"], &[("other", 1), ("https", 26443)]),
                subset(&["fd00::1"], &[("", 443)]),
                subset(&["10.9.9.9"], &[("a", 1), ("b", 2)]),
                subset(&["10.0.0.1"], &[("https", 6443)]),
            ]),
            ..Default::default()
        };
        assert_eq!(
            endpoint_addresses(&e),
            ["10.0.0.1:6443", "10.0.0.2:6443", "127.0.0.1:26443", "[fd00::1]:443"],
            "no port to pick in the fourth subset; duplicates once"
        );
        assert!(endpoint_addresses(&Endpoints::default()).is_empty());
    }
}
