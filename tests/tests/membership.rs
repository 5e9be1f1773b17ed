//! Membership changes through stock etcdctl under a write load: a learner is added, catches up by snapshot,
//! is promoted, a member is removed, and no acknowledged write is lost.

use std::time::{Duration, Instant};

use keel_tests::{assert_has_all, etcdctl, ok_stdout, urls, write_loop, Cluster, Options};

/// The hex member id etcdctl prints for member `name` in `member list`.
fn member_id(endpoints: &str, name: &str) -> String {
    let list = ok_stdout(etcdctl(endpoints, &["member", "list"], None).unwrap()).unwrap();
    list.lines()
        .find(|l| l.split(", ").nth(2) == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .split(", ")
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_add_promote_and_remove_under_load() {
    let mut c = Cluster::start_with(3, Options { snapshot_count: Some(100), ..Default::default() }).await.unwrap();
    // Enough history that the leader's log no longer starts at the beginning.
    let (pre, w) = write_loop(urls(&c), 8, "pre", Instant::now() + Duration::from_secs(60));
    while pre.lock().unwrap().writes.len() < 600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.abort();
    let _ = w.await;
    let pre = std::mem::take(&mut pre.lock().unwrap().writes);
    let (acked, writers) = write_loop(urls(&c), 4, "load", Instant::now() + Duration::from_secs(600));
    let eps = c.endpoints();

    // Add m4 as a learner, start it: it joins and catches up by snapshot.
    let new = c.add_member();
    let peer = c.members[new].peer_url();
    let out =
        ok_stdout(etcdctl(&eps, &["member", "add", "m4", "--learner", &format!("--peer-urls={peer}")], None).unwrap())
            .unwrap();
    assert!(out.contains("added to cluster") && out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{out}");
    c.spawn(new).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = ok_stdout(etcdctl(&eps, &["member", "list"], None).unwrap()).unwrap();
        if list.contains(&format!("started, m4, {peer}")) {
            assert!(list.lines().any(|l| l.contains(", m4, ") && l.ends_with("true")), "m4 is a learner: {list}");
            break;
        }
        assert!(Instant::now() < deadline, "m4 never started: {list}\n{}", c.log_tail(new));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id4 = member_id(&eps, "m4");

    // Promote it once it is in sync (etcd refuses before).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl(&eps, &["member", "promote", &id4], None).unwrap();
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("promoted"));
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("in sync with leader"), "unexpected refusal: {err}");
        assert!(Instant::now() < deadline, "m4 never caught up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let list = ok_stdout(etcdctl(&eps, &["member", "list"], None).unwrap()).unwrap();
    assert!(list.lines().any(|l| l.contains(", m4, ") && l.ends_with("false")), "m4 is a voter: {list}");
    assert!(
        std::fs::read_to_string(&c.members[new].log).unwrap().contains("installed snapshot"),
        "m4 should catch up by snapshot"
    );

    // Update m4's peer URLs (the same address, listed as localhost too).
    let alt = format!("http://localhost:{}", c.members[new].peer_port);
    let out =
        ok_stdout(etcdctl(&eps, &["member", "update", &id4, &format!("--peer-urls={peer},{alt}")], None).unwrap())
            .unwrap();
    assert!(out.contains("updated"), "{out}");
    let list = ok_stdout(etcdctl(&eps, &["member", "list"], None).unwrap()).unwrap();
    assert!(list.contains(&alt), "{list}");

    // Remove a follower that is not the leader, then stop it.
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_id = member_id(&eps, &c.members[victim].name);
    let out = ok_stdout(etcdctl(&eps, &["member", "remove", &victim_id], None).unwrap()).unwrap();
    assert!(out.contains("removed"), "{out}");
    c.kill(victim);
    let remaining: Vec<usize> = c.running();
    let eps = c.endpoints();
    let list = ok_stdout(etcdctl(&eps, &["member", "list"], None).unwrap()).unwrap();
    assert_eq!(list.lines().count(), 3, "{list}");

    // Unknown members, and removals that would leave no quorum, are refused.
    let out = etcdctl(&eps, &["member", "remove", "1234"], None).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("member not found"));
    let dead = *remaining.iter().find(|i| **i != leader && **i != new).unwrap_or(&new);
    c.kill(dead);
    let other = *remaining.iter().find(|i| **i != leader && **i != dead).unwrap();
    let other_id = member_id(&c.endpoints(), &c.members[other].name);
    let out = etcdctl(&c.endpoints(), &["member", "remove", &other_id], None).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unhealthy cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The operator may insist (keel's `keel-force` request metadata); then the removed member is stopped.
    let id = u64::from_str_radix(&other_id, 16).unwrap();
    let forced_remove = |channel| async move {
        let mut cluster = keel_proto::etcdserverpb::cluster_client::ClusterClient::new(channel);
        let mut req = tonic::Request::new(keel_proto::etcdserverpb::MemberRemoveRequest { id });
        req.metadata_mut().insert("keel-force", "true".parse().unwrap());
        cluster.member_remove(req).await
    };
    // The new configuration commits once it has a quorum again: bring the dead member back meanwhile.
    let removal = tokio::spawn(forced_remove(c.channel(leader).await.unwrap()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart(dead).unwrap();
    let mut result = tokio::time::timeout(Duration::from_secs(30), removal).await.unwrap().unwrap();
    // The returning member may call an election; the request then fails with "leader changed" and the
    // operator asks again, of the new leader (a removal that already committed answers "member not found").
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(status) = &result {
        assert!(
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::NotFound),
            "forced removal failed: {status}"
        );
        if status.code() == tonic::Code::NotFound || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(now) = c.wait_leader(Duration::from_secs(10)).await else { continue };
        let Ok(channel) = c.channel(now).await else { continue };
        result = forced_remove(channel).await;
    }
    // Every member that stays sees the removal (each answers from what it has applied).
    for i in [leader, dead] {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let list = etcdctl(&c.members[i].endpoint(), &["member", "list"], None).unwrap();
            let list = String::from_utf8_lossy(&list.stdout).into_owned();
            if list.lines().count() == 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "member {i} still lists: {list}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Ok(left) = result {
        assert_eq!(left.into_inner().members.len(), 2);
    }
    c.kill(other);

    writers.abort();

    let _ = writers.await;
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    let acked = std::mem::take(&mut acked.lock().unwrap().writes);
    assert!(acked.len() > 50, "the load kept going ({} writes)", acked.len());
    for i in c.running() {
        assert_has_all(&c, i, &pre).await;
        assert_has_all(&c, i, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_was_not_added_cannot_join() {
    let mut c = Cluster::start(1).await.unwrap();
    let new = c.add_member();
    let out = c.command(new).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcdctl member add"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_added_directly_joins_and_takes_writes() {
    let mut c = Cluster::start(1).await.unwrap();
    keel_tests::put(&c, 0, "before", "1").await.unwrap();
    let new = c.add_member();
    let peer = c.members[new].peer_url();
    let out =
        ok_stdout(etcdctl(&c.endpoints(), &["member", "add", "m2", &format!("--peer-urls={peer}")], None).unwrap())
            .unwrap();
    assert!(out.contains("added to cluster"), "{out}");
    c.spawn(new).unwrap();
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    // The leader promotes it once it has caught up.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = ok_stdout(etcdctl(&c.endpoints(), &["member", "list"], None).unwrap()).unwrap();
        if list.lines().count() == 2 && list.lines().all(|l| l.ends_with("false")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "m2 never became a voter: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    keel_tests::put(&c, new, "after", "2").await.unwrap();
    c.wait_converged(Duration::from_secs(30)).await.unwrap();
    for i in 0..2 {
        let keys: Vec<Vec<u8>> = c.dump(i).await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"after".to_vec(), b"before".to_vec()], "member {}", c.members[i].name);
    }
    let list = ok_stdout(etcdctl(&c.endpoints(), &["member", "list"], None).unwrap()).unwrap();
    assert!(list.lines().all(|l| l.ends_with("false")), "both voters: {list}");
}
