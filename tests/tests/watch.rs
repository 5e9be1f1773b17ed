//! Watch semantics through the gRPC API: one response per revision's events, prev_kv, filters, progress,
//! cancel, and a watcher that starts in the past on a follower.

use std::time::Duration;

use keel_proto::etcdserverpb::watch_client::WatchClient;
use keel_proto::etcdserverpb::watch_create_request::FilterType;
use keel_proto::etcdserverpb::watch_request::RequestUnion;
use keel_proto::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use keel_proto::mvccpb::event::EventType;
use keel_tests::Cluster;
use tokio::sync::mpsc;
use tonic::Streaming;

struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

impl Stream {
    async fn open(c: &Cluster, member: usize) -> Stream {
        let ch = c.channel(member).await.unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx =
            WatchClient::new(ch).watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: RequestUnion) {
        self.tx.send(WatchRequest { request_union: Some(r) }).await.unwrap();
    }

    async fn create(&mut self, c: WatchCreateRequest) -> i64 {
        self.send(RequestUnion::CreateRequest(c)).await;
        let r = self.next().await;
        assert!(r.created && !r.canceled, "{r:?}");
        r.watch_id
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(15), self.rx.message())
            .await
            .expect("watch response in time")
            .unwrap()
            .unwrap()
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_semantics() {
    let c = Cluster::start(3).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let follower = (leader + 1) % 3;
    let mut s = Stream::open(&c, follower).await;
    let all = s
        .create(WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await;
    let no_put = s
        .create(WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            filters: vec![FilterType::Noput as i32],
            ..Default::default()
        })
        .await;
    assert_ne!(all, no_put);

    // One transaction, three keys: one revision, delivered in one response.
    let mut kv = c.kv(leader).await.unwrap();
    let t = kv
        .txn(TxnRequest {
            compare: vec![],
            success: vec![put_op("w/a", "1"), put_op("w/b", "1"), put_op("other", "x")],
            failure: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let rev = t.header.unwrap().revision;
    let r = s.next().await;
    assert_eq!(r.watch_id, all);
    assert_eq!(r.events.len(), 2, "all events of revision {rev} in one response: {r:?}");
    assert!(r.events.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == rev));
    assert_eq!(r.header.unwrap().revision, rev);

    // prev_kv on an update and on a delete; the NOPUT watcher sees only the delete.
    kv.put(PutRequest { key: b"w/a".to_vec(), value: b"2".to_vec(), ..Default::default() }).await.unwrap();
    let r = s.next().await;
    assert_eq!(r.watch_id, all);
    let e = &r.events[0];
    assert_eq!(
        (e.kv.as_ref().unwrap().value.as_slice(), e.prev_kv.as_ref().unwrap().value.as_slice()),
        (&b"2"[..], &b"1"[..])
    );
    kv.delete_range(DeleteRangeRequest { key: b"w/a".to_vec(), ..Default::default() }).await.unwrap();
    let mut got = vec![s.next().await, s.next().await];
    got.sort_by_key(|r| r.watch_id);
    for r in &got {
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].r#type, EventType::Delete as i32);
    }
    let del = got.iter().find(|r| r.watch_id == all).unwrap();
    assert_eq!(del.events[0].prev_kv.as_ref().unwrap().value, b"2");
    assert!(got.iter().any(|r| r.watch_id == no_put));

    // A progress request answers with a revision every watcher has reached.
    s.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    let p = s.next().await;
    assert_eq!(p.watch_id, -1);
    assert!(p.events.is_empty());
    let now = c.revision(leader).await.unwrap();
    assert!(p.header.unwrap().revision <= now);

    // Cancel: acknowledged, and no more events for that watcher.
    s.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: no_put })).await;
    let r = s.next().await;
    assert!(r.canceled && r.watch_id == no_put);
    kv.delete_range(DeleteRangeRequest { key: b"w/b".to_vec(), ..Default::default() }).await.unwrap();
    let r = s.next().await;
    assert_eq!(r.watch_id, all);

    // A watcher from the past, on another member, replays every revision in order.
    let mut s2 = Stream::open(&c, (leader + 2) % 3).await;
    let id = s2
        .create(WatchCreateRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            start_revision: 1,
            ..Default::default()
        })
        .await;
    let mut revs = Vec::new();
    while revs.len() < 5 {
        let r = s2.next().await;
        assert_eq!(r.watch_id, id);
        revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert!(revs.windows(2).all(|w| w[0] <= w[1]), "{revs:?}");
    assert_eq!(revs.len(), 5, "two puts in one txn, an update, two deletes: {revs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_from_history_without_gaps() {
    let c = Cluster::start(1).await.unwrap();
    let mut s = Stream::open(&c, 0).await;
    let id =
        s.create(WatchCreateRequest { key: b"s/".to_vec(), range_end: b"s0".to_vec(), ..Default::default() }).await;
    // Write far more revisions than the live fan-out buffers while the client reads nothing.
    let mut kv = c.kv(0).await.unwrap();
    let n = 5000;
    let mut first = 0;
    for i in 0..n {
        let r = kv
            .put(PutRequest { key: format!("s/{}", i % 7).into(), value: vec![b'x'; 10], ..Default::default() })
            .await
            .unwrap();
        if i == 0 {
            first = r.into_inner().header.unwrap().revision;
        }
    }
    let mut expect = first;
    while expect < first + n {
        let r = s.next().await;
        assert_eq!(r.watch_id, id);
        for e in r.events {
            assert_eq!(e.kv.unwrap().mod_revision, expect, "events must come in order and without gaps");
            expect += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_report_the_revision_reached() {
    let opts =
        keel_tests::Options { extra_args: vec!["--progress-notify-interval".into(), "1".into()], ..Default::default() };
    let c = Cluster::start_with(1, opts).await.unwrap();
    let rev = keel_tests::put(&c, 0, "elsewhere", "x").await.unwrap();
    let mut s = Stream::open(&c, 0).await;
    let id = s.create(WatchCreateRequest { key: b"quiet".to_vec(), progress_notify: true, ..Default::default() }).await;
    // No event for this key: a progress notification arrives anyway, with the store's revision.
    let r = s.next().await;
    assert_eq!(r.watch_id, id);
    assert!(r.events.is_empty());
    assert!(r.header.unwrap().revision >= rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_starts_right_after_the_revision_its_created_response_names() {
    let c = Cluster::start(1).await.unwrap();
    // Writers keep the revision moving; every revision is a put under n/.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv = c.kv(0).await.unwrap();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let put = PutRequest { key: format!("n/{w}").into(), value: b"x".to_vec(), ..Default::default() };
                kv.put(put).await.unwrap();
            }
        }));
    }
    for _ in 0..50 {
        let mut s = Stream::open(&c, 0).await;
        s.send(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"n/".to_vec(),
            range_end: b"n0".to_vec(),
            ..Default::default()
        }))
        .await;
        let created = s.next().await;
        assert!(created.created);
        let mut expect = created.header.unwrap().revision + 1;
        // The next few revisions, every one of them, in order from the one after the created revision.
        while expect < created.header.unwrap().revision + 20 {
            for e in s.next().await.events {
                assert_eq!(e.kv.unwrap().mod_revision, expect, "a watch from now missed a revision");
                expect += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
}
