//! Objects in the store, through the etcd v3 API — the same for a stacked master (its own member's client
//! URL, so that reads are served by that member) and an external store. Keys are
//! `keel_api::resources::Resource::key`s; a value is an object's JSON; an object's resourceVersion is its
//! key's mod revision. Writes are compare-and-swap transactions, so a create never overwrites and an update
//! or delete from an old resourceVersion changes nothing.

use keel_proto::etcdserverpb::cluster_client::ClusterClient;
use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::lease_client::LeaseClient;
use keel_proto::etcdserverpb::request_op::Request as Op;
use keel_proto::etcdserverpb::response_op::Response as OpResponse;
use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, Member,
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, TxnResponse, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use keel_proto::mvccpb::event::EventType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// The object changed since the resourceVersion the request named (it holds the current one).
    #[error("the object has been modified (now at {current})")]
    Conflict { current: i64 },
    #[error("revision {requested} has been compacted")]
    Compacted { requested: i64 },
    /// The store cannot serve the request now (no leader, a timeout, a lost connection): a retry may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request for what it is (etcd's InvalidArgument, OutOfRange, FailedPrecondition,
    /// ResourceExhausted…, such as "etcdserver: request is too large"): sent again, it fails again. The
    /// message is the store's own (etcd's fixed words), fit for the client.
    #[error("store refused the request: {message}")]
    Refused { code: tonic::Code, message: String },
    /// The store failed on its side (Internal, DataLoss): for the server's log, not the client.
    #[error("store error: {0}")]
    Internal(String),
    /// A fenced write (see [`Storage::fenced`]) found the leader key moved on: its leader was deposed.
    #[error("fenced: the control-loop leader key is at revision {current}, not {fence}")]
    Fenced { fence: i64, current: i64 },
}

/// A failed store call, by its gRPC code (how etcd's client sorts them: transient or not).
impl From<tonic::Status> for StorageError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code as C;
        match s.code() {
            // Unknown: what tonic makes of a connection that broke mid-call.
            C::Unavailable | C::DeadlineExceeded | C::Cancelled | C::Aborted | C::Unknown => {
                StorageError::Unavailable(format!("{}: {}", s.code(), s.message()))
            }
            C::Internal | C::DataLoss => StorageError::Internal(format!("{}: {}", s.code(), s.message())),
            code => StorageError::Refused { code, message: s.message().to_string() },
        }
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A page of a list, all of it read at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Stored>,
    pub revision: i64,
    /// More objects follow the last item (Kubernetes' `continue`; `remainingItemCount` is `remaining`).
    pub remaining: i64,
}

/// How a read is served: through the leader's read index (the latest state), or from whatever the member
/// this master talks to has applied (`resourceVersion=0`: possibly a little behind, never waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Linearizable,
    Serializable,
}

/// The largest store response read (tonic's default is 4 MiB, less than an unpaged list of a busy
/// namespace; etcd's own client allows 2 GiB).
const MAX_RESPONSE: usize = i32::MAX as usize;

/// The key whose mod revision is the fencing token of the control loops' leader (docs/adr/002).
pub const LEADER_KEY: &str = "/keel/controller-leader";

#[derive(Clone)]
pub struct Storage {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
    cluster: ClusterClient<Channel>,
    /// When set, every write also requires [`LEADER_KEY`] to be at this mod revision.
    fence: Option<i64>,
    /// What fenced writes through this storage (and its clones) came to.
    fenced_writes: FencedWrites,
}

/// The outcomes of fenced writes, for `/metrics`: how many applied or were refused, and the highest store
/// revision at which a write of each fence applied (a deposed leader's stays below its successor's fence).
#[derive(Clone, Debug, Default)]
pub struct FencedWrites {
    pub outcomes: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub last_revision: Family<Vec<(&'static str, String)>, Gauge>,
}

impl FencedWrites {
    fn applied(&self, fence: i64, revision: i64) {
        self.outcomes.get_or_create(&vec![("outcome", "applied")]).inc();
        self.last_revision.get_or_create(&vec![("fence", fence.to_string())]).inner().fetch_max(revision, Relaxed);
    }

    fn refused(&self) {
        self.outcomes.get_or_create(&vec![("outcome", "fenced")]).inc();
    }
}

/// Another key written with an object in one transaction, if it is still at `expected` (its mod revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub value: Vec<u8>,
    pub expected: i64,
}

/// A write's own condition and put, with each charge's compare and put added.
fn with_charges(condition: Compare, put: RequestOp, also: Vec<Charge>) -> (Vec<Compare>, Vec<RequestOp>) {
    let mut conditions = vec![condition];
    let mut ops = vec![put];
    for c in also {
        conditions.push(compare(&c.key, CompareTarget::Mod, TargetUnion::ModRevision(c.expected)));
        ops.push(put_op(&c.key, c.value));
    }
    (conditions, ops)
}

/// How a write transaction ended.
enum Written {
    Done(TxnResponse),
    /// Its own compare failed; the object as it is now, if it exists.
    Refused(Option<Stored>),
}

/// Publishes what `sync` derives from the store into `tx` for as long as `stop` allows: `sync` lists, publishes
/// and follows a watch until it breaks; then, a second later, it starts over (`what` names it in the log).
pub fn keep_following<T, F, Fut>(
    what: &'static str,
    storage: Storage,
    tx: tokio::sync::watch::Sender<T>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    sync: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Storage, tokio::sync::watch::Sender<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), StorageError>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = sync(storage.clone(), tx.clone()) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, what, "a watch of the store failed; listing again");
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// One change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or replaced: the new object (its create and mod revisions tell which) and the one before, if any.
    Put { object: Stored, previous: Option<Stored> },
    /// Deleted at `revision`: the object as it was.
    Delete { previous: Stored, revision: i64 },
}

/// What a watch delivers next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    Changes(Vec<Change>),
    /// Nothing under the prefix changed up to `revision` (a progress notification).
    Progress {
        revision: i64,
    },
    /// The start revision was compacted away; the oldest still kept is `compacted`.
    Compacted {
        compacted: i64,
    },
}

/// A running watch of a prefix; dropping it ends the watch.
pub struct Watch {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<keel_proto::etcdserverpb::WatchResponse>,
}

impl Watch {
    /// The next batch, or `None` when the store ended the watch.
    pub async fn next(&mut self) -> Option<Result<Watched, StorageError>> {
        loop {
            let resp = match self.responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(s) => return Some(Err(s.into())),
            };
            if resp.compact_revision > 0 {
                return Some(Ok(Watched::Compacted { compacted: resp.compact_revision }));
            }
            if resp.canceled {
                return Some(Err(StorageError::Unavailable(format!("watch canceled: {}", resp.cancel_reason))));
            }
            if resp.created {
                continue;
            }
            if resp.events.is_empty() {
                let revision = resp.header.map_or(0, |h| h.revision);
                return Some(Ok(Watched::Progress { revision }));
            }
            let changes = resp
                .events
                .into_iter()
                .filter_map(|e| {
                    let kv = e.kv.map(stored)?;
                    Some(if e.r#type == EventType::Delete as i32 {
                        let revision = kv.mod_revision;
                        let previous = e.prev_kv.map(stored).unwrap_or(kv);
                        Change::Delete { previous, revision }
                    } else {
                        Change::Put { object: kv, previous: e.prev_kv.map(stored) }
                    })
                })
                .collect();
            return Some(Ok(Watched::Changes(changes)));
        }
    }

    /// Asks the store for a progress notification (answered as [`Watched::Progress`]).
    pub async fn request_progress(&self) {
        let req = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
        let _ = self.requests.send(req).await;
    }
}

/// The key right after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn compare(key: &str, target: CompareTarget, union: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(union),
        range_end: vec![],
    }
}

fn put_op(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp { request: Some(Op::RequestRange(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })) }
}

fn stored(kv: keel_proto::mvccpb::KeyValue) -> Stored {
    Stored {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value,
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        lease: kv.lease,
    }
}

/// The object a failed transaction's `get_op` found (its failure branch), if any.
fn revision(resp: &TxnResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

impl Storage {
    pub fn new(channel: Channel) -> Storage {
        Storage {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE),
            watch: WatchClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE),
            lease: LeaseClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
            fence: None,
            fenced_writes: FencedWrites::default(),
        }
    }

    /// Puts `value` at `key` if the key is absent or its value sorts before `bound` (bytewise). Returns the
    /// new mod revision, or what is stored when the condition failed.
    pub async fn put_if_below(
        &self,
        key: &str,
        value: Vec<u8>,
        bound: &[u8],
    ) -> Result<Result<i64, Option<Stored>>, StorageError> {
        // etcd fails every value compare on a missing key, so absence is a transaction of its own first.
        let absent = compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0));
        if let Ok(revision) = self.put_if(key, value.clone(), 0, absent).await? {
            return Ok(Ok(revision));
        }
        let below = Compare {
            result: CompareResult::Less as i32,
            target: CompareTarget::Value as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::Value(bound.to_vec())),
            range_end: vec![],
        };
        self.put_if(key, value, 0, below).await
    }

    /// Creates `key` attached to `lease` (it goes when the lease does). Returns the new mod revision, or what
    /// is stored when the key exists.
    pub async fn create_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<Result<i64, Option<Stored>>, StorageError> {
        let absent = compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0));
        self.put_if(key, value, lease, absent).await
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        condition: Compare,
    ) -> Result<Result<i64, Option<Stored>>, StorageError> {
        let put = RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                lease,
                ..Default::default()
            })),
        };
        let txn = TxnRequest { compare: vec![condition], success: vec![put], failure: vec![get_op(key)] };
        let resp = self.kv.clone().txn(txn).await?.into_inner();
        if resp.succeeded {
            return Ok(Ok(revision(&resp)));
        }
        let now = resp.responses.first().and_then(|r| match &r.response {
            Some(OpResponse::ResponseRange(range)) => range.kvs.first().cloned().map(stored),
            _ => None,
        });
        Ok(Err(now))
    }

    /// Puts `value` at `key` attached to `lease`, whatever was there (the key goes when the lease does).
    pub async fn put_leased(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64, StorageError> {
        let put = PutRequest { key: key.as_bytes().to_vec(), value, lease, ..Default::default() };
        let resp = self.kv.clone().put(put).await?.into_inner();
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// The store's members (etcd's Cluster service).
    pub async fn members(&self) -> Result<Vec<Member>, StorageError> {
        Ok(self.cluster.clone().member_list(MemberListRequest { linearizable: true }).await?.into_inner().members)
    }

    /// Adds a member (a learner when `learner`); returns it and the members now.
    pub async fn add_member(
        &self,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<(Member, Vec<Member>), StorageError> {
        let r =
            self.cluster.clone().member_add(MemberAddRequest { peer_ur_ls: peer_urls, is_learner: learner }).await?;
        let r = r.into_inner();
        Ok((r.member.unwrap_or_default(), r.members))
    }

    /// Makes a learner a voter (refused until it has caught up).
    pub async fn promote_member(&self, id: u64) -> Result<Vec<Member>, StorageError> {
        Ok(self.cluster.clone().member_promote(MemberPromoteRequest { id }).await?.into_inner().members)
    }

    /// Removes a member (refused when the voters left could not form a quorum).
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>, StorageError> {
        Ok(self.cluster.clone().member_remove(MemberRemoveRequest { id }).await?.into_inner().members)
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn grant_lease(&self, ttl: i64) -> Result<i64, StorageError> {
        Ok(self.lease.clone().lease_grant(LeaseGrantRequest { ttl, id: 0 }).await?.into_inner().id)
    }

    /// Keeps lease `id` (of `ttl` seconds) alive every `every`; returns only once it is gone or has not been
    /// renewed for nearly its TTL. A keep-alive that fails (the member answering it died or paused, a new
    /// Raft leader being elected) is retried at once, through the client's other members: the lease lives
    /// on meanwhile, so its holder need not give up what it holds and wait out its own key.
    pub async fn keep_alive(&self, id: i64, ttl: i64, every: std::time::Duration) -> StorageError {
        let ttl = std::time::Duration::from_secs(ttl.max(1) as u64);
        let mut renewed = tokio::time::Instant::now();
        loop {
            match tokio::time::timeout(every, self.keep_alive_once(id)).await {
                Ok(Ok(t)) if t > 0 => {
                    renewed = tokio::time::Instant::now();
                    tokio::time::sleep(every).await;
                    continue;
                }
                Ok(Ok(_)) | Ok(Err(StorageError::NotFound)) => return StorageError::NotFound,
                Ok(Err(e)) if renewed.elapsed() + every >= ttl => return e,
                Err(_) if renewed.elapsed() + every >= ttl => {
                    return StorageError::Unavailable("no keep-alive answer for nearly the lease's TTL".into())
                }
                Ok(Err(e)) => tracing::debug!(lease = id, error = %e, "keep-alive failed; trying again"),
                Err(_) => tracing::debug!(lease = id, "keep-alive unanswered; trying again"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// One keep-alive of lease `id`: the TTL it was renewed for (0 or less: the lease is gone).
    pub async fn keep_alive_once(&self, id: i64) -> Result<i64, StorageError> {
        let (tx, rx) = mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id }).await.map_err(|_| StorageError::Unavailable("keep-alive".into()))?;
        let mut responses = self.lease.clone().lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
        let answer = responses.message().await?;
        // The request side stays open until the answer came (a member may end the stream with it).
        drop(tx);
        answer.map(|r| r.ttl).ok_or_else(|| StorageError::Unavailable("keep-alive stream ended".into()))
    }

    /// Revokes `id` (its keys go with it).
    pub async fn revoke_lease(&self, id: i64) -> Result<(), StorageError> {
        self.lease.clone().lease_revoke(LeaseRevokeRequest { id }).await?;
        Ok(())
    }

    /// The same store, whose writes apply only while [`LEADER_KEY`] is still at mod revision `fence`: the
    /// compare is part of each write's transaction, so the store decides it when it applies the write, and
    /// a leader deposed meanwhile (another leader rewrote the key) changes nothing.
    pub fn fenced(&self, fence: i64) -> Storage {
        Storage { fence: Some(fence), ..self.clone() }
    }

    /// What fenced writes came to so far.
    pub fn fenced_writes(&self) -> &FencedWrites {
        &self.fenced_writes
    }

    /// A write transaction: `conditions` (plus the fence), `success`, and on failure a read of `key` (and of
    /// the leader key when fenced), so that the caller can say why it failed.
    async fn write(
        &self,
        key: &str,
        mut conditions: Vec<Compare>,
        success: Vec<RequestOp>,
    ) -> Result<Written, StorageError> {
        let mut failure = vec![get_op(key)];
        if let Some(fence) = self.fence {
            conditions.push(compare(LEADER_KEY, CompareTarget::Mod, TargetUnion::ModRevision(fence)));
            failure.push(get_op(LEADER_KEY));
        }
        let txn = TxnRequest { compare: conditions, success, failure };
        let resp = self.kv.clone().txn(txn).await?.into_inner();
        if resp.succeeded {
            if let Some(fence) = self.fence {
                self.fenced_writes.applied(fence, resp.header.as_ref().map_or(0, |h| h.revision));
            }
            return Ok(Written::Done(resp));
        }
        let current = |i: usize| match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
            Some(OpResponse::ResponseRange(range)) => range.kvs.first().cloned().map(stored),
            _ => None,
        };
        if let Some(fence) = self.fence {
            let leader = current(1).map_or(0, |l| l.mod_revision);
            if leader != fence {
                self.fenced_writes.refused();
                return Err(StorageError::Fenced { fence, current: leader });
            }
        }
        Ok(Written::Refused(current(0)))
    }

    /// The object at `key`, read linearizably.
    pub async fn get(&self, key: &str) -> Result<Stored, StorageError> {
        self.read(key, Read::Linearizable).await
    }

    /// The object at `key`, read as `read` says.
    pub async fn read(&self, key: &str, read: Read) -> Result<Stored, StorageError> {
        let req = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable: read == Read::Serializable,
            ..Default::default()
        };
        let resp = self.kv.clone().range(req).await?;
        resp.into_inner().kvs.into_iter().next().map(stored).ok_or(StorageError::NotFound)
    }

    /// Watches every key under `prefix` from `start_revision` on, with each change's previous value, and
    /// progress notifications.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, StorageError> {
        let (requests, rx) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                start_revision,
                progress_notify: true,
                prev_kv: true,
                ..Default::default()
            })),
        };
        requests.send(create).await.map_err(|_| StorageError::Unavailable("watch request not sent".into()))?;
        let responses = self.watch.clone().watch(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Watch { requests, responses })
    }

    /// Up to `limit` objects (0: all) under `prefix`, from `start` (a key, for a continued list) on, at
    /// `revision` (0: the current one; a continued list passes the first page's).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: i64,
    ) -> Result<Page, StorageError> {
        self.list_read(prefix, start, limit, revision, Read::Linearizable).await
    }

    /// [`Storage::list`], read as `read` says.
    pub async fn list_read(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: i64,
        read: Read,
    ) -> Result<Page, StorageError> {
        let req = RangeRequest {
            key: start.unwrap_or(prefix).as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            limit,
            revision,
            serializable: read == Read::Serializable,
            ..Default::default()
        };
        let resp = match self.kv.clone().range(req).await {
            Ok(r) => r.into_inner(),
            // etcd's words for a compacted revision; other OutOfRange errors (a response over the size limit)
            // are not a compaction.
            Err(s) if s.code() == tonic::Code::OutOfRange && s.message().contains("compacted") => {
                return Err(StorageError::Compacted { requested: revision })
            }
            Err(s) => return Err(s.into()),
        };
        let items: Vec<Stored> = resp.kvs.into_iter().map(stored).collect();
        let remaining = resp.count - items.len() as i64;
        // The header names the store's current revision; the page was read at the one asked for, if any.
        let at = if revision > 0 { revision } else { resp.header.map_or(0, |h| h.revision) };
        Ok(Page { items, revision: at, remaining })
    }

    /// Stores a new object; refuses if the key exists. Returns its revision.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError> {
        let absent = compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0));
        match self.write(key, vec![absent], vec![put_op(key, value)]).await? {
            Written::Done(resp) => Ok(revision(&resp)),
            Written::Refused(_) => Err(StorageError::AlreadyExists),
        }
    }

    /// Stores a new object and, in the same transaction, `also`: other keys' new values, each written only
    /// if that key is still at the mod revision given (the quotas a create charges). Refuses if the key
    /// exists (`AlreadyExists`) or one of `also` changed (`Conflict`).
    pub async fn create_with(&self, key: &str, value: Vec<u8>, also: Vec<Charge>) -> Result<i64, StorageError> {
        let absent = compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0));
        let (conditions, ops) = with_charges(absent, put_op(key, value), also);
        match self.write(key, conditions, ops).await? {
            Written::Done(resp) => Ok(revision(&resp)),
            Written::Refused(Some(_)) => Err(StorageError::AlreadyExists),
            Written::Refused(None) => Err(StorageError::Conflict { current: 0 }),
        }
    }

    /// [`Storage::update`] with `also` written in the same transaction, as [`Storage::create_with`] does. A
    /// `Conflict` names the object's current revision: `expected` itself when only one of `also` changed.
    pub async fn update_with(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        also: Vec<Charge>,
    ) -> Result<i64, StorageError> {
        let unchanged = compare(key, CompareTarget::Mod, TargetUnion::ModRevision(expected));
        let (conditions, ops) = with_charges(unchanged, put_op(key, value), also);
        match self.write(key, conditions, ops).await? {
            Written::Done(resp) => Ok(revision(&resp)),
            Written::Refused(Some(now)) => Err(StorageError::Conflict { current: now.mod_revision }),
            Written::Refused(None) => Err(StorageError::NotFound),
        }
    }

    /// Replaces the object at `key` if it is still at `expected` (its mod revision). Returns the new revision.
    pub async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StorageError> {
        let unchanged = compare(key, CompareTarget::Mod, TargetUnion::ModRevision(expected));
        match self.write(key, vec![unchanged], vec![put_op(key, value)]).await? {
            Written::Done(resp) => Ok(revision(&resp)),
            Written::Refused(Some(now)) => Err(StorageError::Conflict { current: now.mod_revision }),
            Written::Refused(None) => Err(StorageError::NotFound),
        }
    }

    /// Deletes the object at `key` if it is still at `expected` (its mod revision; any when `None`). Returns
    /// what was deleted and the revision of the deletion.
    pub async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(Stored, i64), StorageError> {
        let del = RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                prev_kv: true,
                ..Default::default()
            })),
        };
        let unchanged = expected.map(|rev| compare(key, CompareTarget::Mod, TargetUnion::ModRevision(rev)));
        let resp = match self.write(key, unchanged.into_iter().collect(), vec![del]).await? {
            Written::Done(resp) => resp,
            Written::Refused(Some(now)) => return Err(StorageError::Conflict { current: now.mod_revision }),
            Written::Refused(None) => return Err(StorageError::NotFound),
        };
        let deleted = resp.responses.iter().find_map(|r| match &r.response {
            Some(OpResponse::ResponseDeleteRange(d)) => d.prev_kvs.first().cloned().map(stored),
            _ => None,
        });
        deleted.map(|d| (d, revision(&resp))).ok_or(StorageError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix_end, StorageError};
    use tonic::{Code, Status};

    #[test]
    fn store_errors_by_code() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Aborted, Code::Unknown] {
            let e = StorageError::from(Status::new(code, "etcdserver: no leader"));
            assert!(matches!(e, StorageError::Unavailable(_)), "{code:?}: {e:?}");
        }
        // What keel's store (as etcd) answers a put over --max-request-bytes, and gRPC's own limit above it.
        let e = StorageError::from(Status::invalid_argument("etcdserver: request is too large"));
        assert!(
            matches!(&e, StorageError::Refused { code: Code::InvalidArgument, message } if message == "etcdserver: request is too large"),
            "{e:?}"
        );
        for code in [Code::OutOfRange, Code::ResourceExhausted, Code::FailedPrecondition, Code::PermissionDenied] {
            let e = StorageError::from(Status::new(code, "some etcd words"));
            assert!(
                matches!(&e, StorageError::Refused { code: c, message } if *c == code && message == "some etcd words")
            );
        }
        for code in [Code::Internal, Code::DataLoss] {
            let e = StorageError::from(Status::new(code, "etcdserver: internal error"));
            assert!(matches!(e, StorageError::Internal(_)), "{code:?}: {e:?}");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
