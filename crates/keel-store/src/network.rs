//! Raft transport, client side: openraft's RPCs to other members over gRPC (`proto/keel/raft.proto`).
//! openraft's message types travel bincode-encoded inside a protobuf envelope that carries the cluster id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_proto::raftpb::raft_peer_client::RaftPeerClient;
use keel_proto::raftpb::RaftMessage;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

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
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerNetwork {
        let client = node.peer_urls.first().and_then(|u| self.pool.client(u));
        PeerNetwork { target, client, cluster_id: self.pool.cluster_id }
    }
}

pub struct PeerNetwork {
    target: NodeId,
    client: Option<RaftPeerClient<Channel>>,
    cluster_id: u64,
}

#[derive(Clone, Copy)]
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
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                "member has no usable peer URL",
            ))));
        };
        let mut request = tonic::Request::new(RaftMessage { cluster_id: self.cluster_id, payload: encode(req) });
        request.set_timeout(ttl);
        let resp = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let msg = match resp {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => return Err(RPCError::Unreachable(Unreachable::new(&s))),
            Err(s) => return Err(RPCError::Network(NetworkError::new(&s))),
        };
        let res: Result<Resp, E> =
            bincode::deserialize(&msg.payload).map_err(|e| RPCError::Network(NetworkError::new(&*e)))?;
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
}
