//! A member refuses, with a clear error and without touching it, a data dir that is not its own or is corrupt.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use keel_tests::{free_port, keel_bin, Cluster};

/// Runs `cmd` expecting it to exit by itself (with an error) within 30 s.
fn run_to_exit(mut cmd: Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let guard = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(guard);
    out
}

fn assert_refused(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the member must refuse to start; stderr:\n{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "a refusal must not be a panic:\n{stderr}");
}

/// Makes a one-member store with some data, then stops it; returns its data dir inside `c`'s temp dir.
async fn stopped_member() -> (Cluster, std::path::PathBuf) {
    let mut c = Cluster::start(1).await.unwrap();
    keel_tests::put(&c, 0, "precious", "data").await.unwrap();
    c.kill(0);
    let dir = c.members[0].data_dir.clone();
    (c, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_is_refused() {
    let (mut c, _dir) = stopped_member().await;
    let mut cmd = c.command(0);
    cmd.args(["--initial-cluster-token", "some-other-cluster"]);
    assert_refused(&run_to_exit(cmd), "belongs to cluster");
    // The refused data dir still holds its data for its own member.
    c.restart(0).unwrap();
    c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let dump = c.dump(0).await.unwrap();
    assert_eq!(dump, vec![(b"precious".to_vec(), b"data".to_vec())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_member_is_refused() {
    let (c, dir) = stopped_member().await;
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(keel_bin());
    cmd.arg("kv")
        .args(["--name", "someone-else", "--data-dir"])
        .arg(&dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", free_port())])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("someone-else={peer}")]);
    assert_refused(&run_to_exit(cmd), "belongs to member \"m1\"");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_dir_is_refused() {
    let (c, dir) = stopped_member().await;
    // The state pointer names a generation that is not there.
    std::fs::write(dir.join("STATE"), "7").unwrap();
    assert_refused(&run_to_exit(c.command(0)), "state database");
    // Garbage instead of the pointer.
    std::fs::write(dir.join("STATE"), "garbage").unwrap();
    assert_refused(&run_to_exit(c.command(0)), "corrupt");
    // The Raft log's RocksDB manifest pointer destroyed.
    std::fs::write(dir.join("STATE"), "1").unwrap();
    std::fs::write(dir.join("raft-log").join("CURRENT"), "MANIFEST-999999\n").unwrap();
    assert_refused(&run_to_exit(c.command(0)), "rocksdb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_not_a_keel_data_dir_is_refused() {
    let (mut c, dir) = stopped_member().await;
    let stranger = c.dir.path().join("stranger");
    std::fs::create_dir_all(stranger.join("raft-log")).unwrap();
    std::fs::write(stranger.join("raft-log").join("notes.txt"), "not rocksdb").unwrap();
    c.members[0].data_dir = stranger.clone();
    let cmd = c.command(0);
    assert_refused(&run_to_exit(cmd), "not a keel data dir");
    // Nothing was written into it.
    let names: Vec<String> = std::fs::read_dir(stranger.join("raft-log"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names, vec!["notes.txt".to_string()]);
    let _ = dir;
}
