//! Failures of members: kill -9 of the leader under writes, of every member, of a minority of five; members
//! that were down catch up by log and by snapshot. Nothing acknowledged may be lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::RangeRequest;
use keel_tests::{assert_has_all, urls, write_loop, Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_during_writes_loses_nothing() {
    let mut c = Cluster::start(3).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let stop = Instant::now() + Duration::from_secs(10);
    let (acked, writers) = write_loop(urls(&c), 6, "w", stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acked.lock().unwrap().writes.len();
    assert!(before_kill > 0, "no write was acknowledged before the kill");
    let killed_at = Instant::now();
    c.kill(leader);
    let new_leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    assert_ne!(new_leader, leader, "a new leader must be elected");
    writers.await.unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let after: Vec<&Instant> = acked.times.iter().filter(|t| **t > killed_at).collect();
    assert!(after.len() > 10, "writes did not resume after the leader was killed ({} acknowledged after)", after.len());
    let first_after = after.iter().min().map(|t| t.duration_since(killed_at));
    eprintln!(
        "acknowledged {} writes ({} before the kill); first acknowledged write {:?} after the kill",
        acked.writes.len(),
        before_kill,
        first_after
    );

    // The old leader comes back and catches up; then every member has every acknowledged write.
    c.restart(leader).unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for i in 0..3 {
        assert_has_all(&c, i, &acked.writes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_kill_and_restart_keeps_acknowledged_writes() {
    let mut c = Cluster::start(3).await.unwrap();
    let stop = Instant::now() + Duration::from_secs(3);
    let (acked, writers) = write_loop(urls(&c), 4, "a", stop);
    writers.await.unwrap();
    // Kill while a second burst is in flight: its unacknowledged writes may go either way.
    let (acked2, writers2) = write_loop(urls(&c), 4, "b", Instant::now() + Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(700)).await;
    for i in 0..3 {
        c.kill(i);
    }
    writers2.abort();
    let _ = writers2.await;
    for i in 0..3 {
        c.restart(i).unwrap();
    }
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let mut all = std::mem::take(&mut acked.lock().unwrap().writes);
    all.extend(std::mem::take(&mut acked2.lock().unwrap().writes));
    assert!(!all.is_empty());
    for i in 0..3 {
        assert_has_all(&c, i, &all).await;
    }
}

/// True when member `i`'s log says it installed a snapshot from the leader.
fn installed_snapshot(c: &Cluster, i: usize) -> bool {
    std::fs::read_to_string(&c.members[i].log).unwrap_or_default().contains("installed snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_was_down_catches_up_by_log_and_by_snapshot() {
    // Small snapshots so that a long absence outlives the leader's log.
    let mut c = Cluster::start_with(3, Options { snapshot_count: Some(100), ..Default::default() }).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let follower = (leader + 1) % 3;

    // A short absence: the leader still has every entry the follower missed.
    c.kill(follower);
    let live: Vec<String> = (0..3).filter(|i| *i != follower).map(|i| c.members[i].client_url()).collect();
    let (acked, w) = write_loop(live.clone(), 2, "short", Instant::now() + Duration::from_millis(300));
    w.await.unwrap();
    c.restart(follower).unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let short = std::mem::take(&mut acked.lock().unwrap().writes);
    assert!(!short.is_empty());
    assert_has_all(&c, follower, &short).await;
    assert!(!installed_snapshot(&c, follower), "a short absence should be caught up from the log");
    let mark = keel_tests::put(&c, leader, "mark", "1").await.unwrap();

    // A long absence: hundreds of entries and several snapshots later, the log behind them is purged.
    c.kill(follower);
    let (acked, w) = write_loop(live, 8, "long", Instant::now() + Duration::from_secs(60));
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if acked.lock().unwrap().writes.len() >= 600 {
            break;
        }
    }
    w.abort();
    let _ = w.await;
    let long = std::mem::take(&mut acked.lock().unwrap().writes);
    c.restart(follower).unwrap();
    c.wait_converged(Duration::from_secs(60)).await.unwrap();
    assert!(
        installed_snapshot(&c, follower),
        "the follower should have caught up by snapshot:\n{}",
        c.log_tail(follower)
    );
    assert_has_all(&c, follower, &short).await;
    assert_has_all(&c, follower, &long).await;
    // It serves reads at old revisions too: history travels with the snapshot.
    let mut kv = c.kv(follower).await.unwrap();
    let at = |revision| RangeRequest {
        key: b"short/".to_vec(),
        range_end: b"short0".to_vec(),
        revision,
        serializable: true,
        ..Default::default()
    };
    assert_eq!(kv.range(at(mark)).await.unwrap().into_inner().count, short.len() as i64);
    let mark_before =
        RangeRequest { key: b"mark".to_vec(), revision: mark - 1, serializable: true, ..Default::default() };
    assert_eq!(kv.range(mark_before).await.unwrap().into_inner().count, 0);
    // And it keeps up with new writes afterwards.
    let rev = keel_tests::put(&c, leader, "after", "snapshot").await.unwrap();
    assert!(rev > 0);
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    assert!(c.dump(follower).await.unwrap().iter().any(|(k, _)| k == b"after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_members_keep_serving_with_two_down() {
    let mut c = Cluster::start(5).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    // Down: the leader and one follower.
    let other = (leader + 1) % 5;
    c.kill(leader);
    c.kill(other);
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let live: Vec<usize> = c.running();
    assert_eq!(live.len(), 3);
    let mut acked = BTreeMap::new();
    for (n, &i) in live.iter().cycle().take(30).enumerate() {
        let key = format!("five/{n:03}");
        keel_tests::put(&c, i, &key, "x").await.unwrap_or_else(|e| panic!("put via {}: {e:#}", c.members[i].name));
        acked.insert(key, "x".to_string());
    }
    // Linearizable reads through every live member see every write.
    for &i in &live {
        let mut kv = c.kv(i).await.unwrap();
        let r = kv
            .range(RangeRequest { key: b"five/".to_vec(), range_end: b"five0".to_vec(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.count, 30, "linearizable read via {}", c.members[i].name);
    }
    // A third failure leaves no quorum: writes fail (they do not hang forever, and nothing is half-applied).
    let third = live[0];
    c.kill(third);
    let err = keel_tests::put(&c, live[1], "five/no-quorum", "x").await;
    assert!(err.is_err(), "a write without a quorum must not be acknowledged");
    // Quorum back: the store serves again and has every acknowledged write.
    c.restart(leader).unwrap();
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for i in c.running() {
        assert_has_all(&c, i, &acked).await;
    }
}
