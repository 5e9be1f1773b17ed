//! Benchmarks of a key-value store that speaks the etcd v3 API — keel or etcd itself, so both are measured
//! by the same code. Each workload returns a [`Report`]: throughput and latency percentiles.
//!
//! [`proxy_rules`] times the node Service proxy's rule programming next to kube-proxy's iptables layout;
//! [`service_path`] compares requests through a cluster IP with requests straight to a pod.
//!
//! [`hollow`] runs hollow nodes (Nodes without machines) for tests and benchmarks of the control plane.
//!
//! [`api`] benchmarks a Kubernetes API server over HTTPS (create, get, list of ConfigMaps);
//! [`kube_storage`] performs the store operations a kube-apiserver issues for those requests, through the etcd
//! API, so that an API server's latency can be read next to the floor its store sets.

pub mod api;
pub mod control;
pub mod hollow;
pub mod kube_storage;
pub mod pods;
pub mod proxy_rules;
pub mod service_path;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::{
    watch_request::RequestUnion, PutRequest, RangeRequest, StatusRequest, WatchCreateRequest, WatchRequest,
};
use serde::Serialize;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("request failed: {0}")]
    Request(#[from] tonic::Status),
    #[error("bad kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{0}")]
    Other(String),
}

/// The phases of the create/get/list benchmarks ([`api::run`], [`kube_storage::run`]): `creates` new objects,
/// then `gets` reads of one of them by name, then `lists` reads of the first `list_limit` of them, each phase
/// over `clients` concurrent clients.
#[derive(Debug, Clone)]
pub struct Phases {
    pub clients: usize,
    pub creates: usize,
    pub gets: usize,
    pub lists: usize,
    pub list_limit: usize,
}

/// The name of object `n` of a create phase (zero-padded, so that names sort in creation order).
pub(crate) fn object_name(n: usize) -> String {
    format!("cm-{n:06}")
}

/// The object that get `n` reads, among `objects`: a stride through all of them, so that successive gets
/// of one client are far apart and every object is read.
pub(crate) fn object_to_get(n: usize, objects: usize) -> usize {
    (n * 7919) % objects.max(1)
}

/// What a workload measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub clients: usize,
    pub ops: usize,
    pub errors: usize,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The first failed operation's error, if any failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    pub fn new(
        workload: impl Into<String>,
        clients: usize,
        mut lat: Vec<Duration>,
        errors: usize,
        elapsed: Duration,
    ) -> Self {
        lat.sort();
        let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, ms);
        Report {
            workload: workload.into(),
            clients,
            ops: lat.len(),
            errors,
            seconds: elapsed.as_secs_f64(),
            ops_per_sec: lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            max_ms: lat.last().map_or(0.0, ms),
            first_error: None,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<22} clients {:>4}  {:>9.0} ops/s  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} ops, {} errors)",
            self.workload,
            self.clients,
            self.ops_per_sec,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.ops,
            self.errors
        )?;
        match &self.first_error {
            Some(e) => write!(f, "; first error: {e}"),
            None => Ok(()),
        }
    }
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Connections to a store's client endpoints ("host:port" or URLs).
#[derive(Clone)]
pub struct Target {
    pub endpoints: Vec<String>,
    channels: Vec<Channel>,
}

impl Target {
    /// Opens `conns` connections spread over the endpoints.
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<Self, BenchError> {
        let mut channels = Vec::new();
        for i in 0..conns.max(1) {
            let ep = &endpoints[i % endpoints.len()];
            channels.push(channel(ep).await?);
        }
        Ok(Target { endpoints: endpoints.to_vec(), channels })
    }

    pub(crate) fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channels[i % self.channels.len()].clone()).max_decoding_message_size(64 << 20)
    }
}

fn url(ep: &str) -> String {
    if ep.starts_with("http") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    }
}

async fn channel(ep: &str) -> Result<Channel, BenchError> {
    Endpoint::from_shared(url(ep))
        .map_err(|_| BenchError::Endpoint(ep.to_string()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|source| BenchError::Connect { endpoint: ep.to_string(), source })
}

/// Runs `total` operations over `clients` concurrent clients; `op(client, n)` performs operation `n`.
/// Only successful operations count in the latencies; failed ones are counted, and the first is kept.
pub(crate) async fn drive<F, Fut, E>(name: &str, clients: usize, total: usize, op: F) -> Report
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return (lat, errors, first_error);
                }
                let t = Instant::now();
                match op(c, n).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        if let Ok((l, e, first)) = t.await {
            lat.extend(l);
            errors += e;
            first_error = first_error.or(first);
        }
    }
    Report { first_error, ..Report::new(name, clients, lat, errors, start.elapsed()) }
}

/// Puts of `value_size` bytes to random keys among `keys`.
pub async fn put(target: &Target, clients: usize, total: usize, keys: usize, value_size: usize) -> Report {
    let t = target.clone();
    let value = vec![b'v'; value_size];
    drive("put", clients, total, move |c, n| {
        let mut kv = t.kv(c);
        let key = format!("bench/{:08}", (n * 7919) % keys.max(1));
        let value = value.clone();
        async move { kv.put(PutRequest { key: key.into(), value, ..Default::default() }).await.map(|_| ()) }
    })
    .await
}

/// Single-key ranges over `keys` (written first), linearizable or serializable.
pub async fn range(
    target: &Target,
    clients: usize,
    total: usize,
    keys: usize,
    serializable: bool,
) -> Result<Report, BenchError> {
    let mut kv = target.kv(0);
    for k in 0..keys {
        kv.put(PutRequest { key: format!("bench/{k:08}").into(), value: b"v".to_vec(), ..Default::default() }).await?;
    }
    let t = target.clone();
    let name = if serializable { "range-serializable" } else { "range-linearizable" };
    Ok(drive(name, clients, total, move |c, n| {
        let mut kv = t.kv(c);
        let key = format!("bench/{:08}", (n * 7919) % keys.max(1));
        async move { kv.range(RangeRequest { key: key.into(), serializable, ..Default::default() }).await.map(|_| ()) }
    })
    .await)
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// `watchers` watchers on one key (spread over the endpoints), then `puts` puts carrying their send time:
/// the latency is from the put being sent to each watcher receiving the event.
pub async fn watch(target: &Target, watchers: usize, puts: usize) -> Result<Report, BenchError> {
    let key = format!("bench/watch/{}", rand::random::<u32>());
    let lat: Arc<Mutex<Vec<Duration>>> = Default::default();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers.max(1));
    // One stream per 100 watchers, as clients multiplex watchers on streams.
    let per_stream = 100;
    let streams = watchers.div_ceil(per_stream);
    for s in 0..streams {
        let n = per_stream.min(watchers - s * per_stream);
        let ch = channel(&target.endpoints[s % target.endpoints.len()]).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(n.max(1));
        for _ in 0..n {
            let create = WatchCreateRequest { key: key.clone().into(), ..Default::default() };
            tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.ok();
        }
        let mut stream =
            WatchClient::new(ch).watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        let (lat, ready_tx) = (lat.clone(), ready_tx.clone());
        tasks.push(tokio::spawn(async move {
            let _keep = tx;
            let mut created = 0;
            let mut seen = 0;
            while let Ok(Some(r)) = stream.message().await {
                if r.created {
                    created += 1;
                    if created == n {
                        let _ = ready_tx.send(()).await;
                    }
                    continue;
                }
                let now = now_micros();
                let mut l = lat.lock().await;
                for e in &r.events {
                    let sent: u64 =
                        e.kv.as_ref().and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok()).unwrap_or(now);
                    l.push(Duration::from_micros(now.saturating_sub(sent)));
                    seen += 1;
                }
                if seen >= n * puts {
                    return;
                }
            }
        }));
    }
    for _ in 0..streams {
        ready_rx.recv().await;
    }
    let start = Instant::now();
    let mut kv = target.kv(0);
    for _ in 0..puts {
        kv.put(PutRequest { key: key.clone().into(), value: now_micros().to_string().into(), ..Default::default() })
            .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks)).await;
    let lat = std::mem::take(&mut *lat.lock().await);
    let expected = watchers * puts;
    let missing = expected.saturating_sub(lat.len());
    Ok(Report::new(format!("watch-delivery x{watchers}"), watchers, lat, missing, start.elapsed()))
}

/// The member id of the leader, and the endpoint of each member (by member id), from `Status`.
pub async fn leader(endpoints: &[String]) -> Option<(u64, Vec<(u64, String)>)> {
    let mut leader = None;
    let mut ids = Vec::new();
    for ep in endpoints {
        let Ok(ch) = channel(ep).await else { continue };
        let mut m = MaintenanceClient::new(ch);
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        if let Ok(s) = m.status(req).await {
            let s = s.into_inner();
            if s.leader != 0 {
                leader = Some(s.leader);
            }
            if let Some(h) = s.header {
                ids.push((h.member_id, ep.clone()));
            }
        }
    }
    leader.map(|l| (l, ids))
}

/// One failover trial: writes run through every member but the leader; the leader's process (`pids[i]` for
/// `endpoints[i]`) is killed with SIGKILL; returns the time from the kill to the first acknowledged write.
///
/// Writers give each attempt 250 ms and start 50 ms apart, so the first write is seen within ~50 ms of the
/// store accepting writes again, whether the store holds a request across the election (keel forwards it to
/// the new leader) or drops it (etcd: a follower's proposal to a dead leader waits for the client's timeout).
pub async fn failover_trial(endpoints: &[String], pids: &[u32]) -> Result<(Duration, usize), BenchError> {
    let (leader, ids) = leader(endpoints).await.ok_or_else(|| BenchError::Other("no leader".into()))?;
    let idx = ids
        .iter()
        .find(|(id, _)| *id == leader)
        .and_then(|(_, ep)| endpoints.iter().position(|e| e == ep))
        .ok_or_else(|| BenchError::Other("leader endpoint not found".into()))?;
    let others: Vec<String> = endpoints.iter().enumerate().filter(|(i, _)| *i != idx).map(|(_, e)| e.clone()).collect();
    let mut clients = Vec::new();
    for e in &others {
        clients.push(KvClient::new(channel(e).await?));
    }
    // Writes are flowing before the kill.
    for c in clients.iter_mut() {
        c.put(PutRequest { key: b"bench/failover".to_vec(), value: b"before".to_vec(), ..Default::default() }).await?;
    }
    let killed = Instant::now();
    let status = std::process::Command::new("kill").args(["-9", &pids[idx].to_string()]).status();
    if !status.map(|s| s.success()).unwrap_or(false) {
        return Err(BenchError::Other(format!("cannot kill pid {}", pids[idx])));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(16);
    let mut tasks = Vec::new();
    for (w, c) in clients.into_iter().enumerate() {
        for k in 0..5 {
            let (mut c, tx) = (c.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * k as u64)).await;
                loop {
                    let mut req = tonic::Request::new(PutRequest {
                        key: format!("bench/failover/{w}/{k}").into(),
                        value: b"after".to_vec(),
                        ..Default::default()
                    });
                    req.set_timeout(Duration::from_millis(250));
                    if c.put(req).await.is_ok() {
                        let _ = tx.send(Instant::now()).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
    for t in tasks {
        t.abort();
    }
    match first {
        Ok(Some(t)) => Ok((t.duration_since(killed), idx)),
        _ => Err(BenchError::Other("no write acknowledged within 30 s of the kill".into())),
    }
}
