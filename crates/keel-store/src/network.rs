//! Raft transport, client side: openraft's RPCs to other members over gRPC (`proto/keel/raft.proto`).
//! openraft's message types travel bincode-encoded inside a protobuf envelope that carries the cluster id.
//!
//! Every call's outcome feeds the peer's [`PeerHealth`]: a peer that cannot take part is answered
//! `Unreachable` (so openraft backs off, [`peer_health::backoff`]), calls to it are let through only once per
//! growing delay, and its state is logged once per change plus a periodic summary (openraft's own line per
//! failed call is dropped by [`QuietOpenraftTransport`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_proto::raftpb::raft_peer_client::RaftPeerClient;
use keel_proto::raftpb::RaftMessage;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::peer_health::{self, Failure, PeerHealth, Report};
use crate::types::{Member, NodeId, TypeConfig};

/// Largest message between members (a batch of log entries or a snapshot chunk).
pub const MAX_PEER_MESSAGE: usize = 256 << 20;

/// Bytes of log entries sent in one append-entries call at most (one entry may be larger).
const MAX_APPEND_BYTES: u64 = 1 << 20;

/// Connections to other members by peer URL, shared by Raft and by request forwarding.
#[derive(Clone)]
pub struct PeerPool {
    cluster_id: u64,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerPool {
    pub fn new(cluster_id: u64) -> Self {
        PeerPool { cluster_id, channels: Default::default() }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// A client for the member at `url` (connected lazily, reconnecting as needed).
    pub fn client(&self, url: &str) -> Option<RaftPeerClient<Channel>> {
        let mut map = self.channels.lock().expect("peer pool lock");
        let channel = match map.get(url) {
            Some(c) => c.clone(),
            None => {
                let ep = Endpoint::from_shared(url.to_string())
                    .ok()?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let c = ep.connect_lazy();
                map.insert(url.to_string(), c.clone());
                c
            }
        };
        Some(
            RaftPeerClient::new(channel)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE),
        )
    }
}

pub struct NetworkFactory {
    pub pool: PeerPool,
    pub health: PeerHealths,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerNetwork {
        let url = node.peer_urls.first().cloned().unwrap_or_default();
        let client = self.pool.client(&url);
        PeerNetwork { target, url, client, cluster_id: self.pool.cluster_id, health: self.health.clone() }
    }
}

/// The health of every peer this member calls, shared by all of openraft's clients of it (replication,
/// read-index rounds and votes each make their own).
#[derive(Clone, Default)]
pub struct PeerHealths(Arc<Mutex<HashMap<(NodeId, String), PeerHealth>>>);

impl PeerHealths {
    fn with<R>(&self, target: NodeId, url: &str, f: impl FnOnce(&mut PeerHealth) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry((target, url.to_string())).or_default())
    }

    fn may_call(&self, target: NodeId, url: &str) -> bool {
        self.with(target, url, |h| h.may_call(Instant::now()))
    }

    fn succeeded(&self, target: NodeId, url: &str) {
        if let Some(r) = self.with(target, url, |h| h.succeeded(Instant::now())) {
            log(target, url, r);
        }
    }

    /// Records a failure; true when the peer is (now) unreachable.
    fn failed(&self, target: NodeId, url: &str, failure: Failure) -> bool {
        let (report, unreachable) = self.with(target, url, |h| {
            let r = h.failed(Instant::now(), failure);
            (r, h.is_unreachable())
        });
        if let Some(r) = report {
            log(target, url, r);
        }
        unreachable
    }
}

fn log(target: NodeId, url: &str, report: Report) {
    let peer = format!("{target:x}");
    match report {
        Report::Unreachable { reason } => {
            tracing::warn!(%peer, url, "peer {peer} unreachable: {reason} (retrying with backoff)")
        }
        Report::StillUnreachable { for_, failed, reason } => tracing::warn!(
            %peer,
            url,
            "peer {peer} still unreachable: {failed} failed calls in {}s; last error: {reason}",
            for_.as_secs()
        ),
        Report::ReachableAgain { after, failed } => tracing::info!(
            %peer,
            url,
            "peer {peer} reachable again after {:.1}s ({failed} failed calls)",
            after.as_secs_f64()
        ),
    }
}

/// A status as a log reason: its code, message and sources ("Unavailable: tcp connect error: Connection
/// refused (os error 111)").
fn describe(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let mut cur = std::error::Error::source(s);
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// A call in flight: when openraft drops it on its own timeout before it ends, that counts as a timeout.
struct Attempt<'a> {
    network: &'a PeerNetwork,
    ended: bool,
}

impl Attempt<'_> {
    fn succeeded(mut self) {
        self.ended = true;
        self.network.health.succeeded(self.network.target, &self.network.url);
    }

    fn failed(mut self, failure: Failure) -> bool {
        self.ended = true;
        self.network.health.failed(self.network.target, &self.network.url, failure)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let failure = Failure::Soft("no answer in time".into());
            self.network.health.failed(self.network.target, &self.network.url, failure);
        }
    }
}

pub struct PeerNetwork {
    target: NodeId,
    url: String,
    client: Option<RaftPeerClient<Channel>>,
    cluster_id: u64,
    health: PeerHealths,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("raft messages serialise")
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |reason: String| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)));
        let Some(mut client) = self.client.clone() else {
            let reason = format!("member has no usable peer URL ({:?})", self.url);
            self.health.failed(self.target, &self.url, Failure::Hard(reason.clone()));
            return Err(unreachable(reason));
        };
        // Votes always go out: an election must not wait for a backoff to expire.
        if rpc != Rpc::Vote && !self.health.may_call(self.target, &self.url) {
            return Err(unreachable(format!("member {:x} is unreachable; waiting before the next try", self.target)));
        }
        let attempt = Attempt { network: self, ended: false };
        let mut request = tonic::Request::new(RaftMessage { cluster_id: self.cluster_id, payload: encode(req) });
        request.set_timeout(ttl);
        let resp = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let msg = match resp {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let reason = describe(&s);
                return Err(if attempt.failed(peer_health::classify(s.code(), reason.clone())) {
                    unreachable(reason)
                } else {
                    RPCError::Network(NetworkError::new(&s))
                });
            }
        };
        let res: Result<Resp, E> = match bincode::deserialize(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("undecodable answer: {e}");
                attempt.failed(Failure::Hard(reason.clone()));
                return Err(unreachable(reason));
            }
        };
        attempt.succeeded();
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        // openraft 0.9 gives an append-entries call one heartbeat interval: keep each call small enough to
        // make it, by asking openraft to send fewer entries at a time.
        let n = rpc.entries.len() as u64;
        if n > 1 {
            let size = bincode::serialized_size(&rpc).unwrap_or(0);
            if size > MAX_APPEND_BYTES {
                let hint = (n * MAX_APPEND_BYTES / size).clamp(1, n - 1);
                return Err(RPCError::PayloadTooLarge(openraft::error::PayloadTooLarge::new_entries_hint(hint)));
            }
        }
        self.call(Rpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(peer_health::backoff())
    }
}
