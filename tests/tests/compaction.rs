//! Automatic compaction bounds the history; reads and watches behind it get etcd's compacted error.

use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{CompactionRequest, RangeRequest};
use keel_tests::{etcdctl, Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_bounds_the_history() {
    let opts = Options { extra_args: vec!["--auto-compaction-retention".into(), "20".into()], ..Default::default() };
    let c = Cluster::start_with(3, opts).await.unwrap();
    let mut last = 0;
    for i in 0..200 {
        last = keel_tests::put_retrying(&c, i % 3, "k", &i.to_string()).await.unwrap();
    }
    // Within a few seconds the leader compacts to within the retention, on every member.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..3 {
        let mut kv = c.kv(i).await.unwrap();
        loop {
            let old = kv
                .range(RangeRequest {
                    key: b"k".to_vec(),
                    revision: last - 100,
                    serializable: true,
                    ..Default::default()
                })
                .await;
            match old {
                Err(e) if e.message().contains("required revision has been compacted") => break,
                _ if Instant::now() > deadline => {
                    panic!("{} did not compact revision {}", c.members[i].name, last - 100)
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        // The most recent revisions stay readable.
        let recent = kv
            .range(RangeRequest { key: b"k".to_vec(), revision: last - 15, serializable: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        // (184 unless an election made a put take effect twice.)
        let value: u32 = String::from_utf8_lossy(&recent.kvs[0].value).parse().unwrap();
        assert!((170..=184).contains(&value), "{value}");
    }
    // etcdctl's watch from a compacted revision is canceled with the compacted error.
    let out = etcdctl(&c.endpoints(), &["watch", "k", "--rev=2"], None).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("required revision has been compacted"), "{text}");
    // A physical compaction answers once the history is gone from the member's disk.
    let mut kv = c.kv(0).await.unwrap();
    kv.compact(CompactionRequest { revision: last - 1, physical: true }).await.unwrap();
    let err =
        kv.range(RangeRequest { key: b"k".to_vec(), revision: last - 2, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
}
