//! What an operator watches, under etcd's metric names: a `keel kv` member on `--listen-metrics-urls`
//! (`/metrics`, `/health`), and a stacked master's `/metrics` with its member's figures next to its own.

use std::io::{Read, Write};
use std::time::Duration;

use keel_tests::{free_port, wait_for, Cluster, Options};

/// GET `path` from 127.0.0.1:`port` over plain HTTP/1.0: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (String::new(), String::new()) };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The value of the first sample named exactly `name` (no labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_member_serves_etcds_metrics_and_health() {
    let port = free_port();
    let options = Options {
        extra_args: vec!["--listen-metrics-urls".into(), format!("http://127.0.0.1:{port}")],
        ..Default::default()
    };
    let c = Cluster::start_with(1, options).await.unwrap();
    let put = c.etcdctl_at(&c.endpoints(), &["put", "k", "v"], None).unwrap();
    assert!(put.status.success(), "{put:?}");
    let text = wait_for("the member's metrics after a write", Duration::from_secs(20), || {
        let (status, body) = http_get(port, "/metrics");
        let ok = status.contains("200")
            && sample(&body, "etcd_server_has_leader") == Some(1.0)
            && sample(&body, "etcd_server_proposals_applied_total").is_some_and(|v| v >= 1.0);
        (ok, body)
    })
    .await;
    for name in [
        "etcd_server_is_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_pending",
        "etcd_server_proposals_failed_total",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
    ] {
        assert!(sample(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert!(sample(&text, "etcd_server_leader_changes_seen_total") >= Some(1.0), "{text}");
    assert!(sample(&text, "etcd_disk_wal_fsync_duration_seconds_count") >= Some(1.0), "{text}");
    assert!(sample(&text, "etcd_mvcc_db_total_size_in_bytes") > Some(0.0), "{text}");
    let (status, body) = http_get(port, "/health");
    assert!(status.contains("200") && body.contains(r#""health":"true""#), "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stacked_masters_metrics_include_its_members() {
    let c = Cluster::start_with(1, Options { masters: true, ..Default::default() }).await.unwrap();
    let api = c.api(0);
    api.wait_ready(Duration::from_secs(60)).await.unwrap();
    let text = api.ok(&["get", "--raw", "/metrics"], None).unwrap();
    assert!(sample(&text, "etcd_server_has_leader") == Some(1.0), "{text}");
    assert!(sample(&text, "etcd_server_is_leader") == Some(1.0), "{text}");
    assert!(text.contains("leader_election_master_status"), "the master's own figures are still there:\n{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "one exposition:\n{text}");
}
