//! Membership changes (etcd's `Cluster` service) on a [`Store`], carried out by the leader with openraft's
//! joint consensus; a follower forwards them to the leader's client URL.
//!
//! - add: as a learner, or as a voter (added as a learner, promoted by the leader once it has caught up);
//! - promote: refused until the learner has caught up with the leader's log;
//! - remove: refused when the voters left could not form a quorum among the live ones, unless forced;
//! - update: new peer URLs for a member (its id stays).

use std::collections::BTreeSet;
use std::time::Duration;

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use keel_proto::raftpb::ClusterInfoRequest;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use crate::config::member_id;
use crate::store::{ApiError, Store};
use crate::types::{Member, NodeId};

/// A learner may be promoted once its log is within this many entries of the leader's.
const PROMOTE_LAG: u64 = 100;

/// Request metadata that forces a removal etcd would refuse as unsafe.
pub const FORCE_HEADER: &str = "keel-force";

impl Store {
    fn membership_nodes(&self) -> (Vec<(NodeId, Member)>, BTreeSet<NodeId>) {
        let m = self.raft().metrics();
        let m = m.borrow();
        let ms = m.membership_config.membership();
        (ms.nodes().map(|(id, n)| (*id, n.clone())).collect(), ms.voter_ids().collect())
    }

    /// A client of the leader's etcd API, when this member does not lead.
    async fn leader_api(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, ApiError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(7);
        loop {
            let leader = self.raft().metrics().borrow().current_leader;
            if leader == Some(self.member_id()) {
                return Ok(None);
            }
            let url = leader.and_then(|l| {
                let members = self.shared().current().members().ok()?;
                members.into_iter().find(|m| m.member_id == l)?.client_urls.into_iter().next()
            });
            if let Some(url) = url {
                let ch = tonic::transport::Endpoint::from_shared(url)
                    .map_err(|e| ApiError::Invalid(e.to_string()))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(30))
                    .connect_lazy();
                return Ok(Some(ClusterClient::new(ch)));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, ApiError> {
        if let Some(mut leader) = self.leader_api().await? {
            return leader.member_add(req).await.map(|r| r.into_inner()).map_err(ApiError::Remote);
        }
        check_urls(&req.peer_ur_ls)?;
        let id = member_id(&req.peer_ur_ls, &self.config().initial_cluster_token);
        let (nodes, _) = self.membership_nodes();
        if nodes.iter().any(|(n, _)| *n == id) {
            return Err(ApiError::Precondition("member ID already exist".into()));
        }
        if nodes.iter().any(|(_, m)| m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u))) {
            return Err(ApiError::Precondition("Peer URLs already exists".into()));
        }
        let node = Member { name: String::new(), peer_urls: req.peer_ur_ls.clone() };
        self.raft().add_learner(id, node, false).await.map_err(membership_error)?;
        if !req.is_learner {
            // A voter joins as a learner and is promoted once it has caught up: with joint consensus, making it a
            // voter at once would wait for a member the operator starts only after this call returns.
            tokio::spawn(promote_when_ready(self.clone(), id));
        }
        let members = self.members()?;
        let mut member = members.iter().find(|m| m.id == id).cloned();
        if let Some(m) = member.as_mut() {
            m.is_learner = req.is_learner;
        }
        Ok(MemberAddResponse { header: Some(self.header(self.current_revision()?)), member, members })
    }

    /// Whether learner `id` is within [`PROMOTE_LAG`] entries of this leader's log.
    fn caught_up(&self, id: NodeId) -> bool {
        let m = self.raft().metrics();
        let m = m.borrow();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index);
        matched + PROMOTE_LAG >= last && matched > 0
    }
    pub async fn member_promote(&self, req: MemberPromoteRequest) -> Result<MemberPromoteResponse, ApiError> {
        if let Some(mut leader) = self.leader_api().await? {
            return leader.member_promote(req).await.map(|r| r.into_inner()).map_err(ApiError::Remote);
        }
        let (nodes, voters) = self.membership_nodes();
        if !nodes.iter().any(|(n, _)| *n == req.id) {
            return Err(ApiError::MemberNotFound);
        }
        if voters.contains(&req.id) {
            return Err(ApiError::Precondition("can only promote a learner member".into()));
        }
        if !self.caught_up(req.id) {
            return Err(ApiError::Precondition(
                "can only promote a learner member which is in sync with leader".into(),
            ));
        }
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
            .await
            .map_err(membership_error)?;
        Ok(MemberPromoteResponse { header: Some(self.header(self.current_revision()?)), members: self.members()? })
    }

    pub async fn member_remove(&self, req: MemberRemoveRequest, force: bool) -> Result<MemberRemoveResponse, ApiError> {
        if let Some(mut leader) = self.leader_api().await? {
            let mut r = tonic::Request::new(req);
            if force {
                r.metadata_mut().insert(FORCE_HEADER, "true".parse().expect("ascii"));
            }
            return leader.member_remove(r).await.map(|r| r.into_inner()).map_err(ApiError::Remote);
        }
        let (nodes, voters) = self.membership_nodes();
        if !nodes.iter().any(|(n, _)| *n == req.id) {
            return Err(ApiError::MemberNotFound);
        }
        if voters.contains(&req.id) {
            let remaining: Vec<(NodeId, Member)> =
                nodes.iter().filter(|(n, _)| voters.contains(n) && *n != req.id).cloned().collect();
            let mut live = 0;
            for (id, node) in &remaining {
                if *id == self.member_id() || self.is_alive(node).await {
                    live += 1;
                }
            }
            if live < remaining.len() / 2 + 1 && !force {
                return Err(ApiError::Unhealthy);
            }
            self.raft()
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([req.id])), false)
                .await
                .map_err(membership_error)?;
        } else {
            self.raft()
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([req.id])), false)
                .await
                .map_err(membership_error)?;
        }
        Ok(MemberRemoveResponse { header: Some(self.header(self.current_revision()?)), members: self.members()? })
    }

    pub async fn member_update(&self, req: MemberUpdateRequest) -> Result<MemberUpdateResponse, ApiError> {
        if let Some(mut leader) = self.leader_api().await? {
            return leader.member_update(req).await.map(|r| r.into_inner()).map_err(ApiError::Remote);
        }
        check_urls(&req.peer_ur_ls)?;
        let (nodes, _) = self.membership_nodes();
        let Some((_, node)) = nodes.iter().find(|(n, _)| *n == req.id) else { return Err(ApiError::MemberNotFound) };
        if nodes.iter().any(|(n, m)| *n != req.id && m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u))) {
            return Err(ApiError::Precondition("Peer URLs already exists".into()));
        }
        let updated = Member { name: node.name.clone(), peer_urls: req.peer_ur_ls.clone() };
        self.raft()
            .change_membership(ChangeMembers::SetNodes([(req.id, updated)].into_iter().collect()), false)
            .await
            .map_err(membership_error)?;
        Ok(MemberUpdateResponse { header: Some(self.header(self.current_revision()?)), members: self.members()? })
    }

    /// Whether the member answers its peer port within a second.
    async fn is_alive(&self, node: &Member) -> bool {
        let Some(mut c) = node.peer_urls.first().and_then(|u| self.peer_client(u)) else { return false };
        let mut req = tonic::Request::new(ClusterInfoRequest {});
        req.set_timeout(Duration::from_secs(1));
        c.cluster_info(req).await.is_ok()
    }
}

/// Promotes a member added as a voter once it has caught up (for as long as this member leads, up to an hour).
async fn promote_when_ready(store: Store, id: NodeId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while tokio::time::Instant::now() < deadline && store.is_leader() {
        let (nodes, voters) = store.membership_nodes();
        if voters.contains(&id) || !nodes.iter().any(|(n, _)| *n == id) {
            return;
        }
        if store.caught_up(id) {
            match store.raft().change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await {
                Ok(_) => return tracing::info!(member = format!("{id:x}"), "new member caught up: now a voter"),
                Err(e) => tracing::warn!(member = format!("{id:x}"), error = %e, "cannot promote the new member yet"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
fn check_urls(urls: &[String]) -> Result<(), ApiError> {
    if urls.is_empty() || urls.iter().any(|u| crate::config::listen_addr(u).is_err() && url::Url::parse(u).is_err()) {
        return Err(ApiError::Invalid("given member URLs are invalid".into()));
    }
    Ok(())
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ApiError::LeaderChanged,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ApiError::Precondition(c.to_string()),
        RaftError::Fatal(f) => ApiError::Internal(crate::StoreError::Raft(f.to_string())),
    }
}
