//! A member whose peer port is held by a program that is not keel (here a plain HTTP/2 server that answers
//! 404 to everything, which gRPC reads as `Unimplemented`, as a foreign gRPC server answers "unknown service
//! keel.raft.RaftPeer"): the two real members keep a quorum and serve writes, and the leader logs that
//! peer's state once instead of a line per heartbeat (it once logged ~300 lines a second).

use std::time::Duration;

use axum::http::StatusCode;
use keel_proto::etcdserverpb::PutRequest;
use keel_tests::{Cluster, Options};

fn log_lines(c: &Cluster, i: usize) -> Vec<String> {
    std::fs::read_to_string(&c.members[i].log).unwrap_or_default().lines().map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_server_on_a_peers_port_costs_a_few_log_lines_and_writes_go_on() {
    let mut c = Cluster::prepare(3, Options::default()).unwrap();
    let port = c.members[2].peer_port;
    let foreign = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let app = axum::Router::new().fallback(|| async { StatusCode::NOT_FOUND });
    tokio::spawn(async move { axum::serve(foreign, app).await });
    c.spawn(0).unwrap();
    c.spawn(1).unwrap();
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let mut kv = c.kv(leader).await.unwrap();
    let put = |i: usize| PutRequest { key: format!("k{i}").into_bytes(), value: b"v".to_vec(), ..Default::default() };
    kv.put(put(0)).await.expect("a write with two of three members");

    let before = log_lines(&c, leader).len();
    let start = std::time::Instant::now();
    let mut writes = 0;
    while start.elapsed() < Duration::from_secs(5) {
        kv.put(put(writes)).await.expect("writes go on");
        writes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = log_lines(&c, leader);
    let window = &all[before.min(all.len())..];
    let about: Vec<&String> = window
        .iter()
        .filter(|l| {
            l.contains(&format!(":{port}"))
                || l.contains("replication")
                || l.contains("RPCError")
                || l.contains("progress")
                || l.contains("unreachable")
        })
        .collect();
    assert!(about.len() < 5, "{} lines about the foreign peer in 5 s:\n{}", about.len(), window.join("\n"));
    assert!(window.len() < 40, "{} lines in 5 s:\n{}", window.len(), window.join("\n"));
    let said: Vec<&String> =
        all.iter().filter(|l| l.contains("unreachable: ") && l.contains(&format!(":{port}"))).collect();
    assert_eq!(said.len(), 1, "the leader says once that the peer is unreachable:\n{}", all.join("\n"));
    assert!(said[0].contains("Unimplemented"), "{}", said[0]);
    eprintln!("{writes} writes in 5 s; the lines about the foreign peer:");
    for l in &about {
        eprintln!("  {l}");
    }
}
