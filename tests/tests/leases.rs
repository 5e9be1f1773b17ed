//! Leases through stock etcdctl: keys attached to a lease vanish on every member when it expires (also across
//! a leader kill), a keep-alive keeps them, a revoke deletes them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_tests::{etcdctl, ok_stdout, Cluster};

/// `etcdctl lease grant` prints "lease 694d7a8e2c1a3f0b granted with TTL(3s)": the id in hex.
fn grant(endpoints: &str, ttl: u32) -> String {
    let out = ok_stdout(etcdctl(endpoints, &["lease", "grant", &ttl.to_string()], None).unwrap()).unwrap();
    let id = out.split_whitespace().nth(1).expect("lease id").to_string();
    assert!(out.contains(&format!("TTL({ttl}s)")), "{out}");
    id
}

fn keep_alive(endpoints: &str, id: &str) -> Child {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoints}"))
        .args(["lease", "keep-alive", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether member `i` has `key` (a local, serializable read).
async fn has(c: &Cluster, i: usize, key: &str) -> bool {
    c.dump(i).await.unwrap().iter().any(|(k, _)| k == key.as_bytes())
}

/// Waits until no running member has `key`; returns how long that took.
async fn wait_gone_everywhere(c: &Cluster, key: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut present = Vec::new();
        for i in c.running() {
            if has(c, i, key).await {
                present.push(c.members[i].name.clone());
            }
        }
        if present.is_empty() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{key} still on {present:?} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_keep_alive_and_revoke() {
    let c = Cluster::start(3).await.unwrap();
    let all = c.endpoints();
    let eps: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();

    // Grant through a member, attach keys through others.
    let short = grant(&eps[0], 3);
    ok_stdout(etcdctl(&eps[1], &["put", "--lease", &short, "short/a", "1"], None).unwrap()).unwrap();
    ok_stdout(etcdctl(&eps[2], &["put", "--lease", &short, "short/b", "1"], None).unwrap()).unwrap();
    ok_stdout(etcdctl(&all, &["put", "plain", "1"], None).unwrap()).unwrap();
    let ttl = ok_stdout(etcdctl(&eps[2], &["lease", "timetolive", &short, "--keys"], None).unwrap()).unwrap();
    assert!(ttl.contains("granted with TTL(3s)") && ttl.contains("short/a") && ttl.contains("short/b"), "{ttl}");
    let list = ok_stdout(etcdctl(&eps[1], &["lease", "list"], None).unwrap()).unwrap();
    assert!(list.contains(&short), "{list}");

    // A kept-alive lease outlives its TTL; the other one expires and its keys vanish on every member.
    let kept = grant(&all, 3);
    ok_stdout(etcdctl(&all, &["put", "--lease", &kept, "kept", "1"], None).unwrap()).unwrap();
    let mut ka = keep_alive(&eps[1], &kept);
    let gone = wait_gone_everywhere(&c, "short/a", Duration::from_secs(15)).await;
    assert!(gone >= Duration::from_secs(1), "keys vanished before their lease's TTL ({gone:?})");
    wait_gone_everywhere(&c, "short/b", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..3 {
        assert!(has(&c, i, "kept").await, "a kept-alive key vanished on {}", c.members[i].name);
        assert!(has(&c, i, "plain").await);
    }
    let ttl = ok_stdout(etcdctl(&eps[0], &["lease", "timetolive", &short], None).unwrap()).unwrap();
    assert!(ttl.contains("already expired"), "{ttl}");
    // Keep-alives stop: the key goes after its TTL.
    let _ = ka.kill();
    let _ = ka.wait();
    wait_gone_everywhere(&c, "kept", Duration::from_secs(15)).await;

    // Revoke deletes the keys at once.
    let rev = grant(&all, 60);
    ok_stdout(etcdctl(&all, &["put", "--lease", &rev, "revoked", "1"], None).unwrap()).unwrap();
    let out = ok_stdout(etcdctl(&eps[2], &["lease", "revoke", &rev], None).unwrap()).unwrap();
    assert!(out.contains("revoked"), "{out}");
    wait_gone_everywhere(&c, "revoked", Duration::from_secs(5)).await;

    // Errors as etcd gives them.
    let out = etcdctl(&all, &["put", "--lease", "1234abcd", "orphan", "1"], None).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("requested lease not found"));
    let out = etcdctl(&all, &["lease", "revoke", "1234abcd"], None).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("requested lease not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_across_a_leader_kill() {
    let mut c = Cluster::start(3).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let follower = (leader + 1) % 3;
    let fep = c.members[follower].endpoint();
    let expiring = grant(&fep, 4);
    let kept = grant(&fep, 4);
    ok_stdout(etcdctl(&fep, &["put", "--lease", &expiring, "expiring", "1"], None).unwrap()).unwrap();
    ok_stdout(etcdctl(&fep, &["put", "--lease", &kept, "kept", "1"], None).unwrap()).unwrap();
    // Keep-alives through a member that survives.
    let mut ka = keep_alive(&fep, &kept);
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill(leader);
    let new_leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    assert_ne!(new_leader, leader);
    // The new leader renewed the lease: the key did not vanish with the old leader's clock ...
    assert!(has(&c, follower, "expiring").await);
    // ... and it expires on the new leader's, on every live member.
    wait_gone_everywhere(&c, "expiring", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in c.running() {
        assert!(has(&c, i, "kept").await, "the kept-alive key vanished on {}", c.members[i].name);
    }
    let _ = ka.kill();
    let _ = ka.wait();
    // The old leader comes back and agrees.
    c.restart(leader).unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    assert!(!has(&c, leader, "expiring").await);
}
