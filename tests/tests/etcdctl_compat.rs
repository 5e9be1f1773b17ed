//! Stock etcdctl 3.4 against a 3-member keel store, on every endpoint.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_tests::{etcdctl, ok_stdout, Cluster};

fn json_revision(out: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(out).expect("etcdctl -w json output");
    v["header"]["revision"].as_i64().expect("header.revision")
}

/// Starts `etcdctl watch …`, runs `during`, and returns what the watch printed once `until` holds (or 20 s).
fn watch_output(endpoints: &str, args: &[&str], during: impl FnOnce(), until: impl Fn(&str) -> bool) -> String {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoints}"))
        .arg("watch")
        .args(args)
        .stdout(out_path.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    during();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(out_path.path()).unwrap();
        if until(&text) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_every_member() {
    let c = Cluster::start(3).await.unwrap();
    let all = c.endpoints();
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();

    // put through each member, read everything back through each member (linearizable by default).
    for (i, ep) in eps.iter().enumerate() {
        let out = ok_stdout(etcdctl(ep, &["put", &format!("k/{i}"), &format!("v{i}")], None).unwrap()).unwrap();
        assert_eq!(out.trim(), "OK");
    }
    for ep in &eps {
        let out = ok_stdout(etcdctl(ep, &["get", "--prefix", "k/"], None).unwrap()).unwrap();
        assert_eq!(out, "k/0\nv0\nk/1\nv1\nk/2\nv2\n", "get --prefix via {ep}");
        let out = ok_stdout(etcdctl(ep, &["get", "--prefix", "k/", "--consistency=s"], None).unwrap()).unwrap();
        assert!(out.contains("k/2"), "serializable read via {ep}: {out}");
    }

    // get --rev: an older value is still readable at its revision.
    let out = ok_stdout(etcdctl(&all, &["put", "r", "one", "-w", "json"], None).unwrap()).unwrap();
    let rev1 = json_revision(&out);
    ok_stdout(etcdctl(&all, &["put", "r", "two"], None).unwrap()).unwrap();
    let out = ok_stdout(etcdctl(&eps[1], &["get", "r", &format!("--rev={rev1}")], None).unwrap()).unwrap();
    assert_eq!(out, "r\none\n");
    let out = ok_stdout(etcdctl(&eps[2], &["get", "r"], None).unwrap()).unwrap();
    assert_eq!(out, "r\ntwo\n");

    // del
    let out = ok_stdout(etcdctl(&eps[0], &["del", "k/0"], None).unwrap()).unwrap();
    assert_eq!(out.trim(), "1");
    let out = ok_stdout(etcdctl(&eps[2], &["get", "k/0"], None).unwrap()).unwrap();
    assert_eq!(out, "");
    let out = ok_stdout(etcdctl(&eps[1], &["del", "--prefix", "k/"], None).unwrap()).unwrap();
    assert_eq!(out.trim(), "2");

    // txn: the success branch when the compare holds, the failure branch when it does not.
    let txn = "value(\"r\") = \"two\"\n\nput t ok\nget r\n\nput t failed\n\n";
    let out = ok_stdout(etcdctl(&eps[1], &["txn"], Some(txn)).unwrap()).unwrap();
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert!(out.contains("r\ntwo"), "{out}");
    assert_eq!(ok_stdout(etcdctl(&all, &["get", "t", "--print-value-only"], None).unwrap()).unwrap(), "ok\n");
    let txn = "mod(\"r\") < \"2\"\nversion(\"t\") = \"1\"\n\nput t wrong\n\nput t else\n\n";
    let out = ok_stdout(etcdctl(&eps[2], &["txn"], Some(txn)).unwrap()).unwrap();
    assert!(out.starts_with("FAILURE"), "{out}");
    assert_eq!(ok_stdout(etcdctl(&all, &["get", "t", "--print-value-only"], None).unwrap()).unwrap(), "else\n");

    // watch: live events on a prefix, through a follower and the leader alike.
    for ep in [&eps[0], &eps[2]] {
        let text = watch_output(
            ep,
            &["--prefix", "w/"],
            || {
                for v in ["a", "b"] {
                    ok_stdout(etcdctl(&all, &["put", "w/x", v], None).unwrap()).unwrap();
                }
                ok_stdout(etcdctl(&all, &["del", "w/x"], None).unwrap()).unwrap();
            },
            |t| t.contains("DELETE"),
        );
        // etcdctl prints a delete's (empty) value as an empty line.
        assert_eq!(text, "PUT\nw/x\na\nPUT\nw/x\nb\nDELETE\nw/x\n\n", "watch via {ep}");
    }
    // watch --rev from the past replays history.
    let text = watch_output(&eps[1], &["r", &format!("--rev={rev1}")], || {}, |t| t.matches("PUT").count() >= 2);
    assert_eq!(text, "PUT\nr\none\nPUT\nr\ntwo\n");

    // member list and endpoint status on every endpoint.
    for ep in &eps {
        let out = ok_stdout(etcdctl(ep, &["member", "list"], None).unwrap()).unwrap();
        assert_eq!(out.lines().count(), 3, "{out}");
        for m in &c.members {
            assert!(
                out.contains(&format!("started, {}, {}, {}, false", m.name, m.peer_url(), m.client_url())),
                "{out}"
            );
        }
    }
    let out = ok_stdout(etcdctl(&all, &["endpoint", "status", "-w", "json"], None).unwrap()).unwrap();
    let statuses: serde_json::Value = serde_json::from_str(&out).unwrap();
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 3);
    let leaders: Vec<u64> = statuses.iter().map(|s| s["Status"]["leader"].as_u64().unwrap()).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0] && *l != 0), "{out}");
    let ids: Vec<u64> = statuses.iter().map(|s| s["Status"]["header"]["member_id"].as_u64().unwrap()).collect();
    assert!(ids.contains(&leaders[0]));
    let out = ok_stdout(etcdctl(&all, &["endpoint", "health"], None).unwrap()).unwrap_or_default();
    assert!(!out.contains("unhealthy"), "{out}");

    // Endpoints written as URLs, as etcd's docs write them: etcdctl 3.4's per-endpoint calls then send
    // `http://host:port` as the HTTP/2 :authority (refused as malformed until keel-store's authority.rs).
    let urls = c.members.iter().map(|m| m.client_url()).collect::<Vec<_>>().join(",");
    let out = ok_stdout(etcdctl(&urls, &["endpoint", "status", "-w", "json"], None).unwrap()).unwrap();
    let statuses: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(statuses.as_array().map(Vec::len), Some(3), "{out}");
    let out = ok_stdout(etcdctl(&urls, &["endpoint", "hashkv"], None).unwrap()).unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
    let out = ok_stdout(etcdctl(&urls, &["defrag"], None).unwrap()).unwrap();
    assert_eq!(out.matches("Finished defragmenting").count(), 3, "{out}");
    let out = ok_stdout(etcdctl(&urls, &["put", "via-url", "yes"], None).unwrap()).unwrap();
    assert_eq!(out.trim(), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcds_errors_and_change_nothing() {
    use keel_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
    let c = Cluster::start(3).await.unwrap();
    let mut kv = c.kv(1).await.unwrap();
    let before = c.revision(1).await.unwrap();

    let err = kv.put(PutRequest { key: vec![], value: b"x".to_vec(), ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "etcdserver: key is not provided"));
    let err = kv.range(RangeRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let big = vec![b'x'; 1600 * 1024];
    let err = kv.put(PutRequest { key: b"big".to_vec(), value: big, ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "etcdserver: request is too large"));
    let huge = vec![b'x'; 3 << 20];
    let err = kv.put(PutRequest { key: b"big".to_vec(), value: huge, ..Default::default() }).await.unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);

    let err = kv.put(PutRequest { key: b"a".to_vec(), ignore_value: true, ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "etcdserver: key not found"));
    assert_eq!(c.revision(1).await.unwrap(), before, "refused requests must not change the store");
    let out = etcdctl(&c.endpoints(), &["get", "big"], None).unwrap();
    assert_eq!(ok_stdout(out).unwrap(), "");

    // Reads and watches behind the compacted revision, and reads in the future.
    let mut now = 0;
    for i in 0..5 {
        now = keel_tests::put(&c, 0, "c", &i.to_string()).await.unwrap();
    }
    kv.compact(CompactionRequest { revision: now - 2, physical: true }).await.unwrap();
    let err = kv.range(RangeRequest { key: b"c".to_vec(), revision: now - 3, ..Default::default() }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
    );
    let ok = kv
        .range(RangeRequest { key: b"c".to_vec(), revision: now - 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.kvs[0].value, b"2");
    let err =
        kv.range(RangeRequest { key: b"c".to_vec(), revision: now + 100, ..Default::default() }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
    );
    let err = kv.compact(CompactionRequest { revision: now - 3, physical: false }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    let out = etcdctl(&c.endpoints(), &["get", "c", &format!("--rev={}", now - 4)], None).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"));

    // A watch from a compacted revision is created, then canceled with the compact revision (as etcd does).
    let ch = c.channel(2).await.unwrap();
    let mut w = keel_proto::etcdserverpb::watch_client::WatchClient::new(ch);
    let req =
        WatchRequest {
            request_union: Some(keel_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest { key: b"c".to_vec(), start_revision: 2, ..Default::default() },
            )),
        };
    // Keep the request side open: like etcd, keel ends a watch stream when the client closes its side.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(req).await.unwrap();
    let mut stream = w.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created);
    let compacted = stream.message().await.unwrap().unwrap();
    assert!(compacted.canceled);
    assert_eq!(compacted.compact_revision, now - 2);
}
