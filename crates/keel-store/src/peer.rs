//! Raft transport, server side: the `RaftPeer` gRPC service other members call.

use keel_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use keel_proto::raftpb::raft_peer_server::RaftPeer;
use keel_proto::raftpb::{Proposal, ProposalResult, RaftMessage, ReadIndexRequest, ReadIndexResponse};
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::network::encode;
use crate::store::{ApiError, Store};

/// Status code meaning "I am not the leader: nothing was proposed, ask the leader".
pub const NOT_LEADER: tonic::Code = tonic::Code::FailedPrecondition;

pub struct PeerService {
    pub store: Store,
}

impl PeerService {
    fn open<T: DeserializeOwned>(&self, m: RaftMessage) -> Result<T, Status> {
        if m.cluster_id != self.store.cluster_id() {
            return Err(Status::permission_denied(format!(
                "message from cluster {:x}, this member belongs to cluster {:x}",
                m.cluster_id,
                self.store.cluster_id()
            )));
        }
        bincode::deserialize(&m.payload).map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
    }

    /// Requests only the leader answers (a follower would answer from stale state).
    fn require_leader(&self) -> Result<(), Status> {
        if self.store.is_leader() {
            Ok(())
        } else {
            Err(Status::new(NOT_LEADER, "not the leader"))
        }
    }

    fn reply<T: serde::Serialize>(&self, v: &T) -> Result<Response<RaftMessage>, Status> {
        Ok(Response::new(RaftMessage { cluster_id: self.store.cluster_id(), payload: encode(v) }))
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.open(req.into_inner())?;
        let res = self.store.raft().append_entries(rpc).await;
        self.reply(&res)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.open(req.into_inner())?;
        let res = self.store.raft().vote(rpc).await;
        self.reply(&res)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.open(req.into_inner())?;
        let res = self.store.raft().install_snapshot(rpc).await;
        self.reply(&res)
    }

    async fn propose(&self, req: Request<Proposal>) -> Result<Response<ProposalResult>, Status> {
        let req = req.into_inner();
        if req.cluster_id != self.store.cluster_id() {
            return Err(Status::permission_denied("proposal from another cluster"));
        }
        self.require_leader()?;
        // Forwarded writes join the leader's own queue: whatever arrives together, from its own clients and
        // from every follower, becomes one log entry (openraft 0.9 syncs the leader's log once per entry).
        let results = futures::future::join_all(req.requests.into_iter().map(|w| self.store.write(w))).await;
        // "Nothing was proposed" (the follower may retry) only if that holds for every write: the writes may have
        // gone out in different log entries.
        if results.iter().all(|r| matches!(r, Err(ApiError::NoLeader))) {
            return Err(Status::new(NOT_LEADER, "not the leader"));
        }
        let mut responses = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(resp) => responses.push(resp),
                Err(e) => return Err(Status::unavailable(format!("proposal failed: {e}"))),
            }
        }
        Ok(Response::new(ProposalResult { responses }))
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        if req.into_inner().cluster_id != self.store.cluster_id() {
            return Err(Status::permission_denied("request from another cluster"));
        }
        self.require_leader()?;
        match self.store.batched_read_index().await {
            Some(index) => Ok(Response::new(ReadIndexResponse { index })),
            None => Err(Status::new(NOT_LEADER, "cannot confirm leadership")),
        }
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        self.require_leader()?;
        let id = req.into_inner().id;
        let ttl = self
            .store
            .renew_here(id)
            .await
            .map_err(|_| Status::new(NOT_LEADER, "cannot confirm leadership"))?
            .unwrap_or(0);
        Ok(Response::new(LeaseKeepAliveResponse { header: None, id, ttl }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.require_leader()?;
        Ok(Response::new(self.store.time_to_live_here(&req.into_inner()).map_err(Status::from)?))
    }

    async fn hash_kv(
        &self,
        req: Request<keel_proto::etcdserverpb::HashKvRequest>,
    ) -> Result<Response<keel_proto::etcdserverpb::HashKvResponse>, Status> {
        Ok(Response::new(self.store.hash_kv(req.into_inner()).await.map_err(Status::from)?))
    }

    async fn cluster_info(
        &self,
        _: Request<keel_proto::raftpb::ClusterInfoRequest>,
    ) -> Result<Response<keel_proto::raftpb::ClusterInfoResponse>, Status> {
        let member_ids = self.store.members().map_err(Status::from)?.into_iter().map(|m| m.id).collect();
        Ok(Response::new(keel_proto::raftpb::ClusterInfoResponse {
            cluster_id: self.store.cluster_id(),
            member_id: self.store.member_id(),
            member_ids,
        }))
    }
}
