//! The etcd v3 gRPC services over a [`Store`]: thin adapters that turn requests into store calls and
//! [`ApiError`]s into the status codes etcd returns.

use std::collections::HashMap;
use std::pin::Pin;

use futures::Stream;
use keel_proto::etcdserverpb::{
    cluster_server::{Cluster, ClusterServer},
    kv_server::{Kv, KvServer},
    lease_server::{Lease, LeaseServer},
    maintenance_server::{Maintenance, MaintenanceServer},
    watch_request::RequestUnion,
    watch_server::{Watch, WatchServer},
    *,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::keys::KeyRange;
use crate::store::{ApiError, Store};
use crate::watch::{self, WatchSpec, Watcher};

type Res<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Room for gRPC framing above the request limit, as etcd allows.
const GRPC_OVERHEAD: usize = 512 * 1024;

/// A router serving KV, Watch, Lease, Cluster and Maintenance for `store`, and gRPC health checking
/// (`grpc.health.v1.Health`, as etcd: the server, service "", is SERVING while it runs).
pub fn router(store: Store) -> tonic::transport::server::Router {
    let max = store.config().max_request_bytes + GRPC_OVERHEAD;
    let api = EtcdApi { store };
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(max).max_encoding_message_size(usize::MAX))
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(max).max_encoding_message_size(usize::MAX))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(max))
        .add_service(MaintenanceServer::new(api).max_decoding_message_size(max).max_encoding_message_size(usize::MAX))
}

#[derive(Clone)]
pub struct EtcdApi {
    store: Store,
}

fn ok<T>(r: Result<T, ApiError>) -> Res<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(&self, req: Request<RangeRequest>) -> Res<RangeResponse> {
        ok(self.store.range(req.into_inner()).await)
    }
    async fn put(&self, req: Request<PutRequest>) -> Res<PutResponse> {
        ok(self.store.put(req.into_inner()).await)
    }
    async fn delete_range(&self, req: Request<DeleteRangeRequest>) -> Res<DeleteRangeResponse> {
        ok(self.store.delete_range(req.into_inner()).await)
    }
    async fn txn(&self, req: Request<TxnRequest>) -> Res<TxnResponse> {
        ok(self.store.txn(req.into_inner()).await)
    }
    async fn compact(&self, req: Request<CompactionRequest>) -> Res<CompactionResponse> {
        ok(self.store.compact(req.into_inner()).await)
    }
}

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = BoxStream<WatchResponse>;

    async fn watch(&self, req: Request<Streaming<WatchRequest>>) -> Res<Self::WatchStream> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel::<WatchResponse>(256);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut session = Session { store, out: tx, watchers: HashMap::new(), next_id: 0 };
            loop {
                tokio::select! {
                    msg = input.message() => match msg {
                        Ok(Some(m)) => if !session.handle(m).await { return },
                        Ok(None) | Err(_) => return,
                    },
                    _ = session.out.closed() => return,
                }
            }
        });
        let stream = ReceiverStream::new(rx).map(Ok::<_, Status>);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One client watch stream: its watchers by id.
struct Session {
    store: Store,
    out: mpsc::Sender<WatchResponse>,
    watchers: HashMap<i64, Watcher>,
    next_id: i64,
}

impl Session {
    /// Handles one request; false when the client is gone.
    async fn handle(&mut self, m: WatchRequest) -> bool {
        match m.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                let existed = self.watchers.remove(&c.watch_id).is_some();
                if !existed {
                    return true;
                }
                let resp = WatchResponse {
                    header: Some(self.header()),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                self.out.send(resp).await.is_ok()
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Every watcher has queued all events up to the least revision any has reached.
                let current = self.store.current_revision().unwrap_or(0);
                let rev = self
                    .watchers
                    .values()
                    .map(|w| w.sent.load(std::sync::atomic::Ordering::Acquire))
                    .min()
                    .unwrap_or(current);
                let resp = WatchResponse { header: Some(self.store.header(rev)), watch_id: -1, ..Default::default() };
                self.out.send(resp).await.is_ok()
            }
            None => true,
        }
    }

    fn header(&self) -> ResponseHeader {
        self.store.header(self.store.current_revision().unwrap_or(0))
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let id = if c.watch_id != 0 { c.watch_id } else { self.next_free_id() };
        if self.watchers.contains_key(&id) || id < 0 {
            let resp = WatchResponse {
                header: Some(self.header()),
                watch_id: id,
                created: true,
                canceled: true,
                cancel_reason: "watch id is already in use or invalid".into(),
                ..Default::default()
            };
            return self.out.send(resp).await.is_ok();
        }
        // A watch "from now" starts right after the revision its created response names, read once here:
        // writes applied while the response is on its way are the watch's first events (the chaos harness
        // caught a watch that read the revision twice and missed the writes in between).
        let current = self.store.current_revision().unwrap_or(0);
        let spec = WatchSpec {
            id,
            range: KeyRange::new(&c.key, &c.range_end),
            start_revision: if c.start_revision > 0 { c.start_revision } else { current + 1 },
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            no_put: c.filters.contains(&(watch_create_request::FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(watch_create_request::FilterType::Nodelete as i32)),
        };
        let created = WatchResponse {
            header: Some(self.store.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if self.out.send(created).await.is_err() {
            return false;
        }
        self.watchers.insert(id, watch::spawn(self.store.clone(), spec, self.out.clone()));
        true
    }

    fn next_free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

#[tonic::async_trait]
impl Lease for EtcdApi {
    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> Res<LeaseGrantResponse> {
        ok(self.store.lease_grant(req.into_inner()).await)
    }
    async fn lease_revoke(&self, req: Request<LeaseRevokeRequest>) -> Res<LeaseRevokeResponse> {
        ok(self.store.lease_revoke(req.into_inner()).await)
    }
    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Res<Self::LeaseKeepAliveStream> {
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<LeaseKeepAliveResponse, Status>>(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                let id = tokio::select! {
                    msg = input.message() => match msg {
                        Ok(Some(m)) => m.id,
                        Ok(None) | Err(_) => return,
                    },
                    _ = tx.closed() => return,
                };
                let resp = match store.lease_renew(id).await {
                    Ok(ttl) => {
                        let rev = store.current_revision().unwrap_or(0);
                        Ok(LeaseKeepAliveResponse { header: Some(store.header(rev)), id, ttl })
                    }
                    Err(e) => Err(Status::from(e)),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn lease_time_to_live(&self, req: Request<LeaseTimeToLiveRequest>) -> Res<LeaseTimeToLiveResponse> {
        ok(self.store.lease_time_to_live(req.into_inner()).await)
    }
    async fn lease_leases(&self, _: Request<LeaseLeasesRequest>) -> Res<LeaseLeasesResponse> {
        ok(self.store.lease_leases().await)
    }
}

#[tonic::async_trait]
impl Cluster for EtcdApi {
    async fn member_add(&self, req: Request<MemberAddRequest>) -> Res<MemberAddResponse> {
        ok(self.store.member_add(req.into_inner()).await)
    }
    async fn member_remove(&self, req: Request<MemberRemoveRequest>) -> Res<MemberRemoveResponse> {
        let force = req.metadata().get(crate::membership::FORCE_HEADER).is_some_and(|v| v == "true");
        ok(self.store.member_remove(req.into_inner(), force).await)
    }
    async fn member_update(&self, req: Request<MemberUpdateRequest>) -> Res<MemberUpdateResponse> {
        ok(self.store.member_update(req.into_inner()).await)
    }
    async fn member_promote(&self, req: Request<MemberPromoteRequest>) -> Res<MemberPromoteResponse> {
        ok(self.store.member_promote(req.into_inner()).await)
    }
    async fn member_list(&self, req: Request<MemberListRequest>) -> Res<MemberListResponse> {
        if req.into_inner().linearizable {
            self.store.linearize().await.map_err(Status::from)?;
        }
        let members = self.store.members().map_err(Status::from)?;
        let header = self.store.header(self.store.current_revision().map_err(|e| Status::from(ApiError::from(e)))?);
        Ok(Response::new(MemberListResponse { header: Some(header), members }))
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn alarm(&self, req: Request<AlarmRequest>) -> Res<AlarmResponse> {
        ok(self.store.alarm(req.into_inner()).await)
    }
    async fn status(&self, _: Request<StatusRequest>) -> Res<StatusResponse> {
        ok(self.store.status())
    }
    async fn defragment(&self, _: Request<DefragmentRequest>) -> Res<DefragmentResponse> {
        // RocksDB reclaims space by its own background compaction: there is nothing to defragment.
        let header = self.store.header(self.store.current_revision().map_err(|e| Status::from(ApiError::from(e)))?);
        Ok(Response::new(DefragmentResponse { header: Some(header) }))
    }
    async fn hash(&self, _: Request<HashRequest>) -> Res<HashResponse> {
        ok(self.store.hash().await)
    }
    async fn hash_kv(&self, req: Request<HashKvRequest>) -> Res<HashKvResponse> {
        ok(self.store.hash_kv(req.into_inner()).await)
    }
    /// A consistent point-in-time snapshot of this member's state, in 1 MiB chunks (`etcdctl snapshot save`).
    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Res<Self::SnapshotStream> {
        use tokio::io::AsyncReadExt;
        let (path, rev) = self.store.backup().await.map_err(Status::from)?;
        let total = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let header = self.store.header(rev);
        let (tx, rx) = mpsc::channel::<Result<SnapshotResponse, Status>>(4);
        tokio::spawn(async move {
            let result = async {
                let mut f = tokio::fs::File::open(&path).await?;
                let mut sent = 0u64;
                loop {
                    let mut blob = vec![0u8; 1 << 20];
                    let n = f.read(&mut blob).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    blob.truncate(n);
                    sent += n as u64;
                    let resp =
                        SnapshotResponse { header: Some(header), remaining_bytes: total.saturating_sub(sent), blob };
                    if tx.send(Ok(resp)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "snapshot stream failed");
                let _ = tx.send(Err(Status::internal("etcdserver: snapshot failed"))).await;
            }
            let _ = std::fs::remove_file(&path);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn move_leader(&self, _: Request<MoveLeaderRequest>) -> Res<MoveLeaderResponse> {
        Err(Status::unimplemented("etcdserver: MoveLeader is not supported"))
    }
}
