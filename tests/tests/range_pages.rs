//! Limited ranges (Kubernetes' paged lists) return the first keys with etcd's `count` and `more`, whether
//! the member serves them from the current state (decoding only the page) or from history.

use keel_proto::etcdserverpb::RangeRequest;
use keel_tests::{put, Cluster};

#[tokio::test(flavor = "multi_thread")]
async fn limited_ranges_count_every_key_and_return_the_first() {
    let c = Cluster::start(1).await.unwrap();
    for i in 0..10 {
        put(&c, 0, &format!("/p/{i:02}"), &format!("v{i}")).await.unwrap();
    }
    put(&c, 0, "/q", "outside").await.unwrap();
    let past = put(&c, 0, "/p/10", "v10").await.unwrap() - 1;
    let mut kv = c.kv(0).await.unwrap();
    let prefix =
        |limit: i64| RangeRequest { key: b"/p/".to_vec(), range_end: b"/p0".to_vec(), limit, ..Default::default() };
    let keys = |r: &keel_proto::etcdserverpb::RangeResponse| {
        r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect::<Vec<_>>()
    };

    let page = kv.range(prefix(3)).await.unwrap().into_inner();
    assert_eq!(keys(&page), ["/p/00", "/p/01", "/p/02"]);
    assert_eq!((page.count, page.more), (11, true));
    assert_eq!(page.kvs[1].value, b"v1");

    let all = kv.range(prefix(11)).await.unwrap().into_inner();
    assert_eq!((all.kvs.len(), all.count, all.more), (11, 11, false));
    let more_than_all = kv.range(prefix(50)).await.unwrap().into_inner();
    assert_eq!((more_than_all.kvs.len(), more_than_all.count, more_than_all.more), (11, 11, false));

    let keys_only = kv.range(RangeRequest { keys_only: true, ..prefix(2) }).await.unwrap().into_inner();
    assert_eq!(
        (keys(&keys_only), keys_only.count, keys_only.more),
        (vec!["/p/00".to_string(), "/p/01".into()], 11, true)
    );
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let count_only = kv.range(RangeRequest { count_only: true, ..prefix(2) }).await.unwrap().into_inner();
    assert_eq!((count_only.kvs.len(), count_only.count), (0, 11));

    // From history (before /p/10), and sorted the other way: the general path, the same semantics.
    let old = kv.range(RangeRequest { revision: past, ..prefix(3) }).await.unwrap().into_inner();
    assert_eq!(
        (keys(&old), old.count, old.more),
        (vec!["/p/00".to_string(), "/p/01".into(), "/p/02".into()], 10, true)
    );
    let descending = kv.range(RangeRequest { sort_order: 2, ..prefix(2) }).await.unwrap().into_inner();
    assert_eq!(
        (keys(&descending), descending.count, descending.more),
        (vec!["/p/10".to_string(), "/p/09".into()], 11, true)
    );
    let single =
        kv.range(RangeRequest { key: b"/q".to_vec(), limit: 1, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((single.kvs.len(), single.count, single.more), (1, 1, false));
}
