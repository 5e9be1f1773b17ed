//! A store member's configuration, with etcd's names and meanings, and the ids derived from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::StoreError;
use crate::types::{Member, NodeId};

/// Whether the member creates a new cluster or joins an existing one (`--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl std::str::FromStr for ClusterState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            other => Err(format!("initial cluster state must be \"new\" or \"existing\", not {other:?}")),
        }
    }
}

/// Default Raft timings: a heartbeat every 50 ms; election timeout 150 ms (each member draws its timeout once
/// in 150–225 ms). openraft's leader lease (the largest timeout, 225 ms) comes first, so a follower campaigns
/// after 375–450 ms without a leader, and a failover costs about that. Why these, in docs/adr/001: the log's
/// fsync runs off the Raft core, so disk stalls (0.5 s seen under load) do not delay heartbeats; what can
/// still cause an election is a member starved of CPU for longer than that; the benchmark checks an idle
/// cluster holds no election for 10 minutes.
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
pub const DEFAULT_ELECTION_MS: u64 = 150;
/// etcd's default limit of a request's size (`--max-request-bytes`).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url[,name=peer-url…]`, parsed.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub max_request_bytes: usize,
    /// Applied entries between two snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// How often a watcher that asked for progress notifications gets one.
    pub progress_notify_interval: Duration,
    /// What history the leader compacts away on its own.
    pub auto_compaction: crate::auto_compaction::AutoCompaction,
    /// How often the leader compares members' hashes (zero: never).
    pub corrupt_check_interval: Duration,
}

impl StoreConfig {
    /// A single-member store on the given loopback ports, with etcd's defaults otherwise.
    pub fn single(name: &str, data_dir: PathBuf, client_port: u16, peer_port: u16) -> Self {
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        StoreConfig {
            name: name.into(),
            data_dir,
            listen_client_urls: vec![client.clone()],
            advertise_client_urls: vec![client],
            listen_peer_urls: vec![peer.clone()],
            initial_advertise_peer_urls: vec![peer.clone()],
            initial_cluster: BTreeMap::from([(name.to_string(), vec![peer])]),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "keel-cluster".into(),
            heartbeat_interval: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            election_timeout: Duration::from_millis(DEFAULT_ELECTION_MS),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            snapshot_count: 10_000,
            progress_notify_interval: Duration::from_secs(600),
            auto_compaction: crate::auto_compaction::DEFAULT_AUTO_COMPACTION,
            corrupt_check_interval: Duration::from_secs(60),
        }
    }

    /// Checks the configuration before anything is opened.
    pub fn validate(&self) -> Result<(), StoreError> {
        let err = |m: String| Err(StoreError::Config(m));
        if self.name.is_empty() {
            return err("--name must not be empty".into());
        }
        if self.heartbeat_interval.is_zero() || self.election_timeout < self.heartbeat_interval * 3 {
            return err(format!(
                "--election-timeout ({} ms) must be at least 3 times --heartbeat-interval ({} ms)",
                self.election_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            ));
        }
        for u in self.listen_client_urls.iter().chain(&self.listen_peer_urls) {
            listen_addr(u)?;
        }
        if self.initial_cluster_state == ClusterState::New {
            match self.initial_cluster.get(&self.name) {
                None => {
                    return err(format!("--initial-cluster has no member named {:?} (this member's --name)", self.name))
                }
                Some(urls) => {
                    let mut a = urls.clone();
                    let mut b = self.initial_advertise_peer_urls.clone();
                    a.sort();
                    b.sort();
                    if a != b {
                        return err(format!(
                            "--initial-cluster lists {} for {:?}, but --initial-advertise-peer-urls is {}",
                            urls.join(","),
                            self.name,
                            self.initial_advertise_peer_urls.join(",")
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn member_id(&self) -> NodeId {
        member_id(&self.initial_advertise_peer_urls, &self.initial_cluster_token)
    }

    /// The members of `--initial-cluster`, by id.
    pub fn initial_members(&self) -> BTreeMap<NodeId, Member> {
        self.initial_cluster
            .iter()
            .map(|(name, urls)| {
                (member_id(urls, &self.initial_cluster_token), Member { name: name.clone(), peer_urls: urls.clone() })
            })
            .collect()
    }

    /// The cluster id `--initial-cluster` and `--initial-cluster-token` describe.
    pub fn cluster_id(&self) -> u64 {
        let mut h = Fnv::default();
        for id in self.initial_members().keys() {
            h.write(&id.to_be_bytes());
        }
        h.write(self.initial_cluster_token.as_bytes());
        h.finish()
    }
}

/// Parses etcd's `--initial-cluster` syntax: `name=url,name=url` (a name may appear with several URLs).
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| StoreError::Config(format!("--initial-cluster entry {part:?} is not name=peer-url")))?;
        check_url(url)?;
        out.entry(name.to_string()).or_default().push(url.to_string());
    }
    if out.is_empty() {
        return Err(StoreError::Config("--initial-cluster is empty".into()));
    }
    Ok(out)
}

fn check_url(u: &str) -> Result<url::Url, StoreError> {
    let url = url::Url::parse(u).map_err(|e| StoreError::Config(format!("{u:?} is not a URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(StoreError::Config(format!("{u:?}: only http:// URLs are supported so far")));
    }
    if url.host_str().is_none() || url.port().is_none() {
        return Err(StoreError::Config(format!("{u:?} needs a host and a port")));
    }
    Ok(url)
}

/// The socket address to bind for a listen URL (`localhost` means 127.0.0.1).
pub fn listen_addr(u: &str) -> Result<SocketAddr, StoreError> {
    let url = check_url(u)?;
    let host = match url.host_str().expect("checked") {
        "localhost" => "127.0.0.1",
        h => h.trim_start_matches('[').trim_end_matches(']'),
    };
    format!("{host}:{}", url.port().expect("checked"))
        .parse::<SocketAddr>()
        .or_else(|_| format!("[{host}]:{}", url.port().expect("checked")).parse())
        .map_err(|_| StoreError::Config(format!("{u:?}: listen URLs need an IP address (or localhost)")))
}

/// A member's id from its peer URLs and the cluster token, as etcd derives it (stable across restarts).
pub fn member_id(peer_urls: &[String], token: &str) -> NodeId {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Fnv::default();
    for u in &urls {
        h.write(u.as_bytes());
        h.write(b"\n");
    }
    h.write(token.as_bytes());
    h.finish()
}

/// FNV-1a, 64 bit: a stable hash for ids (std's hasher may change between Rust releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_ids_are_stable() {
        let c = parse_initial_cluster("a=http://127.0.0.1:2380,b=http://127.0.0.1:2381").unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=https://x:1").is_err());
        let id = member_id(&["http://127.0.0.1:2380".into()], "t");
        assert_eq!(id, member_id(&["http://127.0.0.1:2380".into()], "t"));
        assert_ne!(id, member_id(&["http://127.0.0.1:2380".into()], "u"));
    }

    #[test]
    fn validation_catches_mismatches() {
        let mut c = StoreConfig::single("a", "/tmp/x".into(), 1, 2);
        assert!(c.validate().is_ok());
        c.initial_advertise_peer_urls = vec!["http://127.0.0.1:9".into()];
        assert!(c.validate().is_err());
        let mut c = StoreConfig::single("a", "/tmp/x".into(), 1, 2);
        c.election_timeout = c.heartbeat_interval;
        assert!(c.validate().is_err());
        assert!(listen_addr("http://localhost:2379").is_ok());
        assert!(listen_addr("http://example.com:2379").is_err());
    }
}
