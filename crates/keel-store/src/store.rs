//! A running store member: opens its data dir, runs Raft, serves the etcd API and the peer protocol, and
//! offers the same operations as a library (`keel server` embeds a member this way).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Member as PbMember, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, StatusResponse, TxnRequest, TxnResponse,
};
use keel_proto::raftpb::{
    apply_error::Code, write_request, write_response, ApplyError, Proposal, ProposalResult, PublishMember,
    ReadIndexRequest, WriteRequest, WriteResponse,
};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use prost::Message;
use tokio::task::JoinHandle;

use crate::apply::{check_read_revision, finish_range, validate_txn, KvView, MAX_TXN_OPS};
use crate::config::{listen_addr, ClusterState, StoreConfig};
use crate::error::StoreError;
use crate::keys::KeyRange;
use crate::log_store::{Identity, LogDb, LogStore};
use crate::network::{NetworkFactory, PeerPool, MAX_PEER_MESSAGE};
use crate::peer::{PeerService, NOT_LEADER};
use crate::state_machine::{SharedState, StateMachine};
use crate::types::{Command, NodeId, Raft};

/// How long a request waits for a leader, a commit or a read index before it fails.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// The version keel reports in `Maintenance.Status`: the etcd API level it serves.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Why an API request failed, in etcd's words; maps to the gRPC status etcd returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.message)]
    Apply(ApplyError),
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: request is too large")]
    TooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: {0}")]
    Unsupported(String),
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: {0}")]
    Invalid(String),
    #[error("etcdserver: {0}")]
    Precondition(String),
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// What the leader answered a forwarded request.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    #[error("etcdserver: internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    /// The same error for another caller (a batch's failure is every write's failure).
    fn duplicate(&self) -> ApiError {
        match self {
            ApiError::Apply(e) => ApiError::Apply(e.clone()),
            ApiError::EmptyKey => ApiError::EmptyKey,
            ApiError::TooLarge => ApiError::TooLarge,
            ApiError::NoLeader => ApiError::NoLeader,
            ApiError::Timeout => ApiError::Timeout,
            ApiError::LeaderChanged => ApiError::LeaderChanged,
            ApiError::Unsupported(m) => ApiError::Unsupported(m.clone()),
            ApiError::LeaseTtlTooLarge => ApiError::LeaseTtlTooLarge,
            ApiError::Invalid(m) => ApiError::Invalid(m.clone()),
            ApiError::Precondition(m) => ApiError::Precondition(m.clone()),
            ApiError::MemberNotFound => ApiError::MemberNotFound,
            ApiError::Unhealthy => ApiError::Unhealthy,
            ApiError::Remote(s) => ApiError::Remote(s.clone()),
            ApiError::Internal(e) => ApiError::Internal(StoreError::Raft(crate::error_chain(e))),
        }
    }
}
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e)
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic::Code as C;
        if let ApiError::Remote(s) = e {
            return s;
        }
        let code = match &e {
            ApiError::Apply(a) => match Code::try_from(a.code) {
                Ok(Code::Compacted | Code::FutureRevision) => C::OutOfRange,
                Ok(Code::LeaseNotFound) => C::NotFound,
                Ok(Code::LeaseExists) => C::FailedPrecondition,
                Ok(Code::KeyNotFound | Code::DuplicateKey | Code::Invalid) => C::InvalidArgument,
                _ => C::Unknown,
            },
            ApiError::EmptyKey | ApiError::TooLarge | ApiError::Invalid(_) => C::InvalidArgument,
            ApiError::LeaseTtlTooLarge => C::OutOfRange,
            ApiError::Precondition(_) => C::FailedPrecondition,
            ApiError::MemberNotFound => C::NotFound,
            ApiError::Unhealthy => C::Unavailable,
            ApiError::Remote(_) => unreachable!("returned above"),
            ApiError::NoLeader | ApiError::Timeout | ApiError::LeaderChanged => C::Unavailable,
            ApiError::Unsupported(_) => C::Unimplemented,
            ApiError::Internal(inner) => {
                tracing::error!(error = %crate::error_chain(inner), "internal error serving a request");
                C::Internal
            }
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// A write waiting to be proposed, and where its result goes.
type PendingWrite = (WriteRequest, tokio::sync::oneshot::Sender<Result<WriteResponse, ApiError>>);

/// A request for a read index, answered by the batcher (None: no leader could confirm one).
type ReadIndexWaiter = tokio::sync::oneshot::Sender<Option<u64>>;

struct Inner {
    /// Writes are proposed in batches: see [`batch_proposals`].
    proposals: tokio::sync::mpsc::UnboundedSender<PendingWrite>,
    /// Linearizable reads share read-index rounds: see [`batch_read_index`].
    read_batch: tokio::sync::mpsc::UnboundedSender<ReadIndexWaiter>,
    id: NodeId,
    cluster_id: u64,
    raft: Raft,
    shared: Arc<SharedState>,
    pool: PeerPool,
    config: StoreConfig,
    /// Set when this member led when it stopped and so leads again at once on restart (openraft 0.9 restores
    /// a leader whose vote was committed): that term and the last log index found on disk. See
    /// [`Store::read_index`].
    restored_lead: Option<(u64, u64)>,
}

/// A store member. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A member with its listeners running.
pub struct RunningStore {
    pub store: Store,
    tasks: Vec<JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl RunningStore {
    /// Stops serving and shuts Raft down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        let _ = self.store.inner.raft.shutdown().await;
    }
}

/// `(term, last log index)` when the vote on disk is a committed vote for `me`: openraft 0.9 then makes this
/// member leader again at startup, in that term, without a new no-op entry.
async fn restored_leadership(log: &mut LogStore, me: NodeId) -> Result<Option<(u64, u64)>, StoreError> {
    use openraft::storage::RaftLogStorage;
    let err = |e: openraft::StorageError<NodeId>| StoreError::Raft(e.to_string());
    let Some(vote) = log.read_vote().await.map_err(err)? else { return Ok(None) };
    if !vote.is_committed() || vote.leader_id().voted_for() != Some(me) {
        return Ok(None);
    }
    let last = log.get_log_state().await.map_err(err)?.last_log_id.map_or(0, |l| l.index);
    Ok(Some((vote.leader_id().term, last)))
}

fn raft_config(c: &StoreConfig) -> openraft::Config {
    let e = c.election_timeout.as_millis() as u64;
    openraft::Config {
        cluster_name: c.initial_cluster_token.clone(),
        heartbeat_interval: c.heartbeat_interval.as_millis() as u64,
        election_timeout_min: e,
        election_timeout_max: e + e / 2,
        install_snapshot_timeout: 2000,
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(c.snapshot_count),
        snapshot_max_chunk_size: 1 << 20,
        // Entries kept behind a snapshot, so a briefly absent member catches up from the log (etcd keeps
        // 5000 "snapshot catch-up entries").
        max_in_snapshot_log_to_keep: c.snapshot_count.min(5000),
        purge_batch_size: 64,
        ..Default::default()
    }
}

impl Store {
    /// Opens the member's data dir and starts Raft (without listening: see [`Store::start`]).
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        let log_dir = dir.join("raft-log");
        let fresh = match std::fs::read_dir(&dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(StoreError::io(&dir)(e)),
        };
        if !fresh && !log_dir.join("CURRENT").exists() {
            return Err(StoreError::DataDir {
                path: dir,
                message:
                    "it holds files but no keel raft log: not a keel data dir, or a corrupt one (nothing was changed)"
                        .into(),
            });
        }
        // A new member joining a running cluster learns its cluster id from the members it was told about,
        // before anything is written.
        let joined_cluster = if fresh && config.initial_cluster_state == ClusterState::Existing {
            Some(join_cluster(&config).await?)
        } else {
            None
        };
        std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let log = Arc::new(LogDb::open(&log_dir)?);
        let wanted = Identity {
            name: config.name.clone(),
            member_id: config.member_id(),
            cluster_id: config.cluster_id(),
            joined: false,
        };
        let identity = match log.identity()? {
            Some(id) => {
                check_identity(&config, &id)?;
                id
            }
            None if !fresh && log.has_raft_state()? => {
                return Err(StoreError::DataDir {
                    path: dir,
                    message: "the raft log has no member identity: not a keel data dir, or corrupt".into(),
                })
            }
            None => {
                let mut id = wanted;
                if let Some(cluster_id) = joined_cluster {
                    id.cluster_id = cluster_id;
                    id.joined = true;
                }
                log.set_identity(&id)?;
                id
            }
        };
        let bootstrap = !log.has_raft_state()?;
        let shared = SharedState::open(&dir, fresh)?;
        let members: std::collections::BTreeSet<NodeId> =
            shared.current().writer_view().meta()?.membership.membership().nodes().map(|(id, _)| *id).collect();
        check_cluster(&config, &identity, &members)?;
        let sm = StateMachine::new(shared.clone())?;
        let pool = PeerPool::new(identity.cluster_id);
        let mut log_store = LogStore::new(log.clone());
        let restored_lead = restored_leadership(&mut log_store, identity.member_id).await?;
        let raft = Raft::new(
            identity.member_id,
            Arc::new(raft_config(&config).validate().map_err(|e| StoreError::Config(e.to_string()))?),
            NetworkFactory { pool: pool.clone(), health: Default::default() },
            log_store,
            sm,
        )
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        // A new member (or a restored data dir) of a new cluster bootstraps the membership; doing it again after
        // a crash before the first vote is harmless (same membership, empty log).
        if bootstrap && config.initial_cluster_state == ClusterState::New {
            let members: BTreeMap<NodeId, crate::types::Member> = config.initial_members();
            raft.initialize(members).await.map_err(|e| StoreError::Raft(e.to_string()))?;
        }
        let (read_batch, batch_rx) = tokio::sync::mpsc::unbounded_channel();
        let (proposals, proposals_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            proposals,
            read_batch,
            id: identity.member_id,
            cluster_id: identity.cluster_id,
            raft,
            shared,
            pool,
            config,
            restored_lead,
        });
        tokio::spawn(batch_read_index(Arc::downgrade(&inner), batch_rx));
        tokio::spawn(batch_proposals(Arc::downgrade(&inner), proposals_rx));
        Ok(Store { inner })
    }

    /// Opens the member and serves the client API and the peer protocol on the configured URLs.
    pub async fn start(config: StoreConfig) -> Result<RunningStore, StoreError> {
        let store = Store::open(config).await?;
        store.serve().await
    }

    /// Binds the listeners and serves until [`RunningStore::shutdown`].
    pub async fn serve(self) -> Result<RunningStore, StoreError> {
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let c = &self.inner.config;
        for url in &c.listen_peer_urls {
            let listener = bind(url).await?;
            let peer = PeerService { store: self.clone() };
            let svc = keel_proto::raftpb::raft_peer_server::RaftPeerServer::new(peer)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE);
            let router = tonic::transport::Server::builder().tcp_nodelay(true).add_service(svc);
            tasks.push(spawn_server(router, listener, rx.clone(), url.clone(), false));
        }
        for url in &c.listen_client_urls {
            let listener = bind(url).await?;
            let router = crate::etcd_api::router(self.clone());
            tasks.push(spawn_server(router, listener, rx.clone(), url.clone(), true));
        }
        tasks.push(tokio::spawn(publish_member(self.clone(), rx.clone())));
        tasks.push(tokio::spawn(watch_stalls(rx.clone())));
        tasks.push(tokio::spawn(follow_raft_metrics(self.clone(), rx.clone())));
        tasks.push(tokio::spawn(crate::leases::expire_leases(self.clone(), rx.clone())));
        tasks.push(tokio::spawn(crate::auto_compaction::run(self.clone(), rx.clone())));
        let check = self.inner.config.corrupt_check_interval;
        tasks.push(tokio::spawn(crate::maintenance::check_divergence(self.clone(), check, rx.clone())));
        Ok(RunningStore { store: self, tasks, shutdown })
    }

    pub fn member_id(&self) -> NodeId {
        self.inner.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub(crate) fn shared(&self) -> &Arc<SharedState> {
        &self.inner.shared
    }

    pub fn current_revision(&self) -> Result<i64, StoreError> {
        self.inner.shared.current().reader().revision()
    }

    /// A response header for `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.cluster_id,
            member_id: self.inner.id,
            revision,
            raft_term: self.inner.raft.metrics().borrow().current_term,
        }
    }

    fn check_size(&self, m: &impl Message) -> Result<(), ApiError> {
        if m.encoded_len() > self.inner.config.max_request_bytes {
            return Err(ApiError::TooLarge);
        }
        Ok(())
    }

    /// Proposes a write and returns what applying it returned, from whichever member leads. Concurrent writes
    /// are proposed together (see [`batch_proposals`]).
    pub async fn write(&self, req: WriteRequest) -> Result<WriteResponse, ApiError> {
        let pending = crate::metrics::Pending::start();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .proposals
            .send((req, tx))
            .map_err(|_| ApiError::Internal(StoreError::Raft("proposer stopped".into())))?;
        let written = rx.await.map_err(|_| ApiError::Internal(StoreError::Raft("proposer stopped".into())))?;
        // A refused request (a failed compare is not an error) was proposed and applied; these were not.
        if matches!(
            written,
            Err(ApiError::Timeout | ApiError::NoLeader | ApiError::LeaderChanged | ApiError::Internal(_))
        ) {
            pending.failed();
        }
        written
    }

    /// The member's figures under etcd's metric names, in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        let m = &crate::metrics::METRICS;
        if let Ok(size) = self.inner.shared.current().total_size() {
            m.db_total_size.set(size as i64);
        }
        m.encode()
    }

    /// Proposes writes as one log entry, through the leader; retried only while nothing was proposed.
    async fn propose(&self, mut proposal: Proposal) -> Result<ProposalResult, ApiError> {
        proposal.cluster_id = self.inner.cluster_id;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let attempt =
                tokio::time::timeout_at(deadline, self.propose_once(&proposal)).await.map_err(|_| ApiError::Timeout)?;
            match attempt {
                Ok(r) => return Ok(r),
                Err(Retry::Wait) => {
                    if tokio::time::Instant::now() + Duration::from_millis(20) >= deadline {
                        return Err(ApiError::NoLeader);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(Retry::Fail(e)) => return Err(e),
            }
        }
    }

    async fn propose_once(&self, proposal: &Proposal) -> Result<ProposalResult, Retry> {
        match self.leader() {
            Leader::Me => match self.inner.raft.client_write(Command(proposal.clone())).await {
                Ok(r) => Ok(r.data.0),
                // Lost the leadership before proposing: nothing was proposed.
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Retry::Wait),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    Err(Retry::Fail(ApiError::Unsupported(e.to_string())))
                }
                Err(RaftError::Fatal(e)) => Err(Retry::Fail(ApiError::Internal(StoreError::Raft(e.to_string())))),
            },
            Leader::Peer(mut client) => {
                let was = self.known_leader();
                let forwarded = tokio::select! {
                    r = client.propose(proposal.clone()) => r,
                    // The leader it went to was deposed (paused, cut off): it may still apply the writes, or
                    // not; say so now rather than hold the proposal slot until the old leader answers.
                    () = self.leader_moves_from(was) => return Err(Retry::Fail(ApiError::LeaderChanged)),
                };
                match forwarded {
                    Ok(r) => Ok(r.into_inner()),
                    // Nothing was proposed: safe to try again.
                    Err(s) if s.code() == NOT_LEADER => Err(Retry::Wait),
                    Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("connect") => {
                        Err(Retry::Wait)
                    }
                    // The writes may or may not have been applied: the clients must decide.
                    Err(s) => {
                        tracing::debug!(status = %s, "forwarded proposal failed");
                        Err(Retry::Fail(ApiError::LeaderChanged))
                    }
                }
            }
            Leader::Unknown => Err(Retry::Wait),
        }
    }

    /// Waits until this member's state reflects every write acknowledged before the call (read index).
    pub async fn linearize(&self) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let index =
                tokio::time::timeout_at(deadline, self.batched_read_index()).await.map_err(|_| ApiError::Timeout)?;
            match index {
                Some(index) => {
                    let mut rx = self.inner.raft.metrics();
                    let wait = rx.wait_for(|m| m.last_applied.map_or(0, |l| l.index) >= index);
                    return match tokio::time::timeout_at(deadline, wait).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(_)) => Err(ApiError::Internal(StoreError::Raft("raft stopped".into()))),
                        Err(_) => Err(ApiError::Timeout),
                    };
                }
                None => {
                    if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                        return Err(ApiError::NoLeader);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// A read index from a round that started after this call (shared with the other reads waiting for it).
    pub(crate) async fn batched_read_index(&self) -> Option<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.read_batch.send(tx).ok()?;
        rx.await.ok().flatten()
    }

    /// Every member's id and first peer URL, from Raft's membership.
    pub(crate) fn peer_urls(&self) -> Vec<(NodeId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .nodes()
            .filter_map(|(id, n)| n.peer_urls.first().map(|u| (*id, u.clone())))
            .collect()
    }

    pub(crate) fn peer_client(
        &self,
        url: &str,
    ) -> Option<keel_proto::raftpb::raft_peer_client::RaftPeerClient<tonic::transport::Channel>> {
        self.inner.pool.client(url)
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// `Some(term)` while this member leads Raft in `term`, `None` while it does not; it changes when
    /// Raft's state does (for the master that runs the control loops on the Raft leader).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        let leading = |m: &openraft::RaftMetrics<NodeId, crate::types::Member>| {
            (m.state == ServerState::Leader).then_some(m.current_term)
        };
        let mut metrics = self.inner.raft.metrics();
        let (tx, rx) = tokio::sync::watch::channel(leading(&metrics.borrow()));
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let now = leading(&metrics.borrow_and_update());
                tx.send_if_modified(|was| std::mem::replace(was, now) != now);
                if tx.is_closed() {
                    break;
                }
            }
        });
        rx
    }

    /// The leader this member knows of (None while it knows none).
    fn known_leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Resolves once this member no longer sees `leader` as the leader (another was elected, or none is known
    /// any more).
    async fn leader_moves_from(&self, leader: Option<NodeId>) {
        let mut m = self.inner.raft.metrics();
        if m.wait_for(|m| m.current_leader != leader).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Who leads, as this member sees it.
    pub(crate) fn leader(&self) -> Leader {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return Leader::Me;
        }
        let client = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).and_then(|n| n.peer_urls.first().cloned()))
            .and_then(|url| self.inner.pool.client(&url));
        match client {
            Some(c) => Leader::Peer(c),
            None => Leader::Unknown,
        }
    }

    /// The leader's read index: from Raft when this member leads, else asked of the leader. None: no leader.
    ///
    /// A leader restored at startup in its old term (see `restored_lead`) reuses that term's first entry as
    /// its no-op, and its commit index starts from what was on disk, which may be behind entries that were
    /// committed (and read) before it stopped: openraft's read index would then let a read miss them. Until
    /// it leads in another term, its read index is at least the last log index it found on disk — every
    /// committed entry is in a leader's log, and applied implies committed.
    async fn read_index(&self) -> Option<u64> {
        match self.leader() {
            Leader::Me => match self.inner.raft.get_read_log_id().await {
                Ok((read, _)) => {
                    let index = read.map_or(0, |l| l.index);
                    Some(match self.inner.restored_lead {
                        Some((term, last)) if self.term() == term => index.max(last),
                        _ => index,
                    })
                }
                Err(_) => None,
            },
            Leader::Peer(mut client) => {
                let was = self.known_leader();
                let mut req = tonic::Request::new(ReadIndexRequest { cluster_id: self.inner.cluster_id });
                req.set_timeout(Duration::from_secs(2));
                tokio::select! {
                    r = client.read_index(req) => r.ok().map(|r| r.into_inner().index),
                    // A paused or cut-off leader answers late or never: ask the new one.
                    () = self.leader_moves_from(was) => None,
                }
            }
            Leader::Unknown => None,
        }
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ApiError> {
        if req.key.is_empty() {
            return Err(ApiError::EmptyKey);
        }
        self.check_size(&req)?;
        if !req.serializable {
            self.linearize().await?;
        }
        let state = self.inner.shared.current();
        let reader = state.reader();
        let current = reader.revision()?;
        check_read_revision(req.revision, current, reader.compacted()?).map_err(ApiError::Apply)?;
        let range = KeyRange::new(&req.key, &req.range_end);
        let historical = req.revision > 0 && req.revision < current;
        if !historical && is_plain_page(&req) {
            // Kubernetes' paged lists: decode only the page, count the rest.
            let (page, count) = reader.scan_page(&range, req.limit as usize)?;
            let mut resp = finish_range(page, &req);
            resp.more = count > req.limit;
            resp.count = count;
            resp.header = Some(self.header(current));
            return Ok(resp);
        }
        let kvs = if historical { reader.scan_at(&range, req.revision)? } else { reader.scan(&range)? };
        let mut resp = finish_range(kvs, &req);
        resp.header = Some(self.header(current));
        Ok(resp)
    }

    pub(crate) async fn write_checked(
        &self,
        req: write_request::Request,
    ) -> Result<(write_response::Response, i64), ApiError> {
        self.write_fenced(req, 0).await
    }

    /// [`Store::write_checked`] for a write that applies only in a log entry of Raft term `term` (0: any);
    /// otherwise the state machine refuses it with `FENCED`.
    pub(crate) async fn write_fenced(
        &self,
        req: write_request::Request,
        term: u64,
    ) -> Result<(write_response::Response, i64), ApiError> {
        let req = WriteRequest { request: Some(req), cluster_id: self.inner.cluster_id, fence_term: term };
        self.check_size(&req)?;
        let resp = self.write(req).await?;
        match resp.response {
            Some(write_response::Response::Error(e)) => Err(ApiError::Apply(e)),
            Some(r) => Ok((r, resp.revision)),
            None => Err(ApiError::Internal(StoreError::Corrupt("empty write response".into()))),
        }
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, ApiError> {
        if req.key.is_empty() {
            return Err(ApiError::EmptyKey);
        }
        match self.write_checked(write_request::Request::Put(req)).await? {
            (write_response::Response::Put(mut p), rev) => {
                p.header = Some(self.header(rev));
                Ok(p)
            }
            _ => Err(unexpected()),
        }
    }

    pub async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, ApiError> {
        if req.key.is_empty() {
            return Err(ApiError::EmptyKey);
        }
        match self.write_checked(write_request::Request::DeleteRange(req)).await? {
            (write_response::Response::DeleteRange(mut d), rev) => {
                d.header = Some(self.header(rev));
                Ok(d)
            }
            _ => Err(unexpected()),
        }
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ApiError> {
        validate_txn(&req, MAX_TXN_OPS).map_err(|e| {
            if e.message.ends_with("key is not provided") {
                ApiError::EmptyKey
            } else {
                ApiError::Apply(e)
            }
        })?;
        match self.write_checked(write_request::Request::Txn(req)).await? {
            (write_response::Response::Txn(mut t), rev) => {
                let h = self.header(rev);
                set_txn_headers(&mut t, &h);
                Ok(t)
            }
            _ => Err(unexpected()),
        }
    }

    pub async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, ApiError> {
        let (revision, physical) = (req.revision, req.physical);
        let resp = match self.write_checked(write_request::Request::Compaction(req)).await? {
            (write_response::Response::Compaction(mut c), rev) => {
                c.header = Some(self.header(rev));
                c
            }
            _ => return Err(unexpected()),
        };
        if physical {
            // etcd's `physical`: answer once this member's disk no longer holds the compacted history.
            let mut rx = self.inner.shared.physical.subscribe();
            tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|done| *done >= revision))
                .await
                .map_err(|_| ApiError::Timeout)?
                .map_err(|_| ApiError::Internal(StoreError::Raft("compactor stopped".into())))?;
        }
        Ok(resp)
    }

    /// Every member: Raft's membership, with the names and client URLs members published.
    pub fn members(&self) -> Result<Vec<PbMember>, ApiError> {
        let published: BTreeMap<u64, PublishMember> =
            self.inner.shared.current().members()?.into_iter().map(|m| (m.member_id, m)).collect();
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        Ok(membership
            .nodes()
            .map(|(id, node)| {
                let p = published.get(id);
                PbMember {
                    id: *id,
                    name: p.map_or_else(String::new, |p| p.name.clone()),
                    peer_ur_ls: node.peer_urls.clone(),
                    client_ur_ls: p.map_or_else(Vec::new, |p| p.client_urls.clone()),
                    is_learner: !voters.contains(id),
                }
            })
            .collect())
    }

    pub fn status(&self) -> Result<StatusResponse, ApiError> {
        let state = self.inner.shared.current();
        let revision = state.reader().revision()?;
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let db = state.size_on_disk() + crate::state_db::dir_size(&self.inner.config.data_dir.join("raft-log"));
        let mut errors = Vec::new();
        if m.current_leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        for (member, alarm) in state.alarms()? {
            let name = keel_proto::etcdserverpb::AlarmType::try_from(alarm).map_or("UNKNOWN", |a| a.as_str_name());
            errors.push(format!("memberID:{member} alarm:{name} "));
        }
        Ok(StatusResponse {
            header: Some(ResponseHeader {
                cluster_id: self.inner.cluster_id,
                member_id: self.inner.id,
                revision,
                raft_term: m.current_term,
            }),
            version: ETCD_API_VERSION.into(),
            db_size: db as i64,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: db as i64,
            is_learner: !m.membership_config.membership().voter_ids().any(|v| v == self.inner.id),
        })
    }
}

/// Proposals in flight at once, and the most a proposal carries. Two, because openraft 0.9's core syncs the
/// leader's log for each entry before replicating it: the second entry's leader sync overlaps the first's
/// round trip to the followers, and more entries would only mean more syncs (16 clients: 2 in flight gave
/// ~3100 writes/s, 4 gave ~2000, with forwarded writes joining the leader's queue).
const PROPOSALS_IN_FLIGHT: usize = 2;
const PROPOSAL_MAX_WRITES: usize = 1024;
const PROPOSAL_MAX_BYTES: usize = 1 << 20;

/// Turns concurrent writes into few log entries: each proposal carries every write queued when it was formed
/// (up to a limit), and at most [`PROPOSALS_IN_FLIGHT`] are in flight, so under load writes queue and batch
/// while a single write still goes out at once. openraft 0.9 handles each entry on its own (log append and
/// sync, replication kick), so this is what lets throughput grow with the number of clients. Writes that
/// followers forward join the leader's queue too (`PeerService::propose`).
async fn batch_proposals(inner: std::sync::Weak<Inner>, mut rx: tokio::sync::mpsc::UnboundedReceiver<PendingWrite>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while batch.len() < PROPOSAL_MAX_WRITES && bytes < PROPOSAL_MAX_BYTES {
            match rx.try_recv() {
                Ok(w) => {
                    bytes += w.0.encoded_len();
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let store = Store { inner };
        tokio::spawn(async move {
            let (requests, waiters): (Vec<WriteRequest>, Vec<_>) = batch.into_iter().unzip();
            let n = requests.len();
            let result = store.propose(Proposal { requests, cluster_id: 0 }).await;
            drop(permit);
            match result {
                Ok(r) if r.responses.len() == n => {
                    for (w, resp) in waiters.into_iter().zip(r.responses) {
                        let _ = w.send(Ok(resp));
                    }
                }
                Ok(_) => {
                    for w in waiters {
                        let _ = w.send(Err(unexpected()));
                    }
                }
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.duplicate()));
                    }
                }
            }
        });
    }
}
/// Serves read-index requests in rounds: each round confirms leadership once (a heartbeat to a quorum, or one
/// call to the leader) for every request queued before it started. A request that arrives during a round
/// waits for the next one, so its index is still taken after it arrived: reads stay linearizable, and a
/// thousand concurrent reads cost one round instead of a thousand.
async fn batch_read_index(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ReadIndexWaiter>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let Some(inner) = inner.upgrade() else { return };
        let index = Store { inner }.read_index().await;
        for w in batch {
            let _ = w.send(index);
        }
    }
}

/// The clock of a member's background loops: ticks every period (a late tick is delayed, not repeated) until
/// the member stops.
pub(crate) struct Ticker {
    tick: tokio::time::Interval,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Ticker {
    pub(crate) fn new(period: Duration, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticker { tick, stop }
    }

    /// Waits for the next tick; false once the member stops.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }
}

/// Who leads.
pub(crate) enum Leader {
    Me,
    Peer(keel_proto::raftpb::raft_peer_client::RaftPeerClient<tonic::transport::Channel>),
    Unknown,
}

enum Retry {
    Wait,
    Fail(ApiError),
}

pub(crate) fn unexpected() -> ApiError {
    ApiError::Internal(StoreError::Corrupt("write answered with the wrong response type".into()))
}

fn set_txn_headers(t: &mut TxnResponse, h: &ResponseHeader) {
    use keel_proto::etcdserverpb::response_op::Response as R;
    t.header = Some(*h);
    for r in &mut t.responses {
        match &mut r.response {
            Some(R::ResponsePut(p)) => p.header = Some(*h),
            Some(R::ResponseDeleteRange(d)) => d.header = Some(*h),
            Some(R::ResponseRange(x)) => {
                let rev = x.header.as_ref().map_or(h.revision, |x| x.revision);
                x.header = Some(ResponseHeader { revision: rev, ..*h });
            }
            Some(R::ResponseTxn(n)) => set_txn_headers(n, h),
            None => {}
        }
    }
}

/// Asks the other members of `--initial-cluster` which cluster this member joins; it must have been added
/// (`etcdctl member add`) with the peer URLs it advertises.
async fn join_cluster(config: &StoreConfig) -> Result<u64, StoreError> {
    let me = config.member_id();
    let pool = PeerPool::new(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut not_added = None;
    loop {
        for (name, urls) in &config.initial_cluster {
            if *name == config.name {
                continue;
            }
            for url in urls {
                let Some(mut c) = pool.client(url) else { continue };
                let mut req = tonic::Request::new(keel_proto::raftpb::ClusterInfoRequest {});
                req.set_timeout(Duration::from_secs(2));
                if let Ok(r) = c.cluster_info(req).await {
                    let r = r.into_inner();
                    if r.member_ids.contains(&me) {
                        return Ok(r.cluster_id);
                    }
                    not_added = Some(r.cluster_id);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let message = match not_added {
                Some(cluster) => format!(
                    "cluster {cluster:x} has no member with id {me:x} (peer URLs {}): add it first with `etcdctl member add {} --peer-urls={}`",
                    config.initial_advertise_peer_urls.join(","),
                    config.name,
                    config.initial_advertise_peer_urls.join(",")
                ),
                None => "no other member of --initial-cluster answered: cannot join an existing cluster".into(),
            };
            return Err(StoreError::Config(message));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the Raft log of a member that has none yet, recording who it is (used by restore).
pub(crate) fn create_identity(config: &StoreConfig) -> Result<(), StoreError> {
    let log = LogDb::open(&config.data_dir.join("raft-log"))?;
    log.set_identity(&Identity {
        name: config.name.clone(),
        member_id: config.member_id(),
        cluster_id: config.cluster_id(),
        joined: false,
    })
}

/// A data dir of another cluster: the flags describe a new cluster whose members are none of the data dir's.
/// (Flags updated after membership changes still name some current members, and are fine.)
fn check_cluster(
    config: &StoreConfig,
    id: &Identity,
    members: &std::collections::BTreeSet<NodeId>,
) -> Result<(), StoreError> {
    if config.initial_cluster_state != ClusterState::New || id.joined || id.cluster_id == config.cluster_id() {
        return Ok(());
    }
    if config.initial_members().keys().any(|m| members.contains(m)) {
        return Ok(());
    }
    Err(StoreError::DataDir {
        path: config.data_dir.clone(),
        message: format!(
            "it belongs to cluster {:x}, but --initial-cluster and --initial-cluster-token describe cluster {:x}",
            id.cluster_id,
            config.cluster_id()
        ),
    })
}

fn check_identity(config: &StoreConfig, id: &Identity) -> Result<(), StoreError> {
    let dir = config.data_dir.clone();
    if id.name != config.name {
        return Err(StoreError::DataDir {
            path: dir,
            message: format!("it belongs to member {:?}, but this member is named {:?} (--name)", id.name, config.name),
        });
    }
    Ok(())
}

async fn bind(url: &str) -> Result<tokio::net::TcpListener, StoreError> {
    let addr = listen_addr(url)?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| StoreError::Listen { addr: url.to_string(), source: e })
}

/// Serves `router` on `listener`; with `fix_authority` (client URLs), each connection goes through
/// [`crate::authority::AuthorityFix`] so that etcdctl 3.4's `:authority` with a scheme is taken.
fn spawn_server(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
    url: String,
    fix_authority: bool,
) -> JoinHandle<()> {
    // The server's own tcp_nodelay applies only to listeners it binds: set it on each accepted socket, or
    // Nagle holds back the last frames of a response until the client's delayed ACK (~10-40 ms a call).
    let accepted = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    if fix_authority {
        let fixed = tokio_stream::StreamExt::map(accepted, |conn| conn.map(crate::authority::AuthorityFix::new));
        serve_incoming(router, fixed, stop, url)
    } else {
        serve_incoming(router, accepted, stop, url)
    }
}

fn serve_incoming<IO, S>(
    router: tonic::transport::server::Router,
    incoming: S,
    mut stop: tokio::sync::watch::Receiver<bool>,
    url: String,
) -> JoinHandle<()>
where
    S: tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let res = router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = res {
            tracing::error!(url, error = %e, "server stopped");
        }
    })
}

/// Announces this member's name and client URLs through the log, once it is running.
async fn publish_member(store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    let c = &store.inner.config;
    let me =
        PublishMember { member_id: store.inner.id, name: c.name.clone(), client_urls: c.advertise_client_urls.clone() };
    loop {
        let already = store.inner.shared.current().members().map(|ms| ms.contains(&me)).unwrap_or(false);
        if already {
            return;
        }
        let req =
            WriteRequest { request: Some(write_request::Request::PublishMember(me.clone())), ..Default::default() };
        tokio::select! {
            r = store.write(req) => if r.is_ok() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Logs when this member's async runtime (which runs Raft's timers, heartbeats and votes) or the whole
/// process (starved of CPU) did not run for a while: the usual cause of a spurious election.
async fn watch_stalls(stop: tokio::sync::watch::Receiver<bool>) {
    const PERIOD: Duration = Duration::from_millis(50);
    const STALL: Duration = Duration::from_millis(100);
    let process_late = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let late = process_late.clone();
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread_stopped = stopped.clone();
    let _ = std::thread::Builder::new().name("stall-watch".into()).spawn(move || {
        while !thread_stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let t = std::time::Instant::now();
            std::thread::sleep(PERIOD);
            let over = t.elapsed().saturating_sub(PERIOD);
            late.fetch_max(over.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut tick = Ticker::new(PERIOD, stop);
    let mut last = tokio::time::Instant::now();
    while tick.next().await {
        let now = tokio::time::Instant::now();
        let over = now.duration_since(last).saturating_sub(PERIOD);
        last = now;
        if over > STALL {
            let process = process_late.swap(0, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                runtime_ms = over.as_millis() as u64,
                process_ms = process,
                "member stalled: the async runtime did not run for a while (process_ms: longest a plain thread waited for CPU)"
            );
        }
    }
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A limited range in key order without revision filters: its first `limit` keys are its result.
fn is_plain_page(r: &RangeRequest) -> bool {
    use keel_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
    let key_order = r.sort_target == SortTarget::Key as i32
        && matches!(SortOrder::try_from(r.sort_order), Ok(SortOrder::None | SortOrder::Ascend));
    r.limit > 0
        && key_order
        && r.min_mod_revision <= 0
        && r.max_mod_revision <= 0
        && r.min_create_revision <= 0
        && r.max_create_revision <= 0
}

/// Keeps the leadership and applied figures of [`crate::metrics`] up to date from openraft's metrics.
async fn follow_raft_metrics(store: Store, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut raft = store.raft().metrics();
    loop {
        {
            let m = raft.borrow_and_update();
            let me = store.member_id();
            let learner = m.membership_config.membership().learner_ids().any(|id| id == me);
            crate::metrics::METRICS.observe_leader(m.current_leader, me, m.current_term, learner);
            if let Some(applied) = &m.last_applied {
                crate::metrics::METRICS.proposals_applied.set(applied.index as i64);
            }
        }
        tokio::select! {
            changed = raft.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
