//! Backups (`etcdctl snapshot save`) restore into new clusters with the same keys and values; members'
//! hashes agree, and a member whose state diverges is caught by the leader's check and alarmed.

use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{HashKvRequest, LeaseGrantRequest, PutRequest};
use keel_tests::{etcdctl, ok_stdout, Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_then_restore_gives_the_same_keys_and_values() {
    let a = Cluster::start(3).await.unwrap();
    for i in 0..50 {
        keel_tests::put(&a, i % 3, &format!("k/{i:02}"), &format!("v{i}")).await.unwrap();
    }
    let mut kv = a.kv(0).await.unwrap();

    let ch = a.channel(1).await.unwrap();
    let granted = keel_proto::etcdserverpb::lease_client::LeaseClient::new(ch)
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .unwrap()
        .into_inner();
    kv.put(PutRequest { key: b"leased".to_vec(), value: b"x".to_vec(), lease: granted.id, ..Default::default() })
        .await
        .unwrap();
    let last = keel_tests::put(&a, 2, "k/00", "overwritten").await.unwrap();
    a.wait_converged(Duration::from_secs(20)).await.unwrap();
    let want = a.dump(0).await.unwrap();

    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("backup.db");
    let out =
        ok_stdout(etcdctl(&a.members[1].endpoint(), &["snapshot", "save", file.to_str().unwrap()], None).unwrap())
            .unwrap();
    assert!(out.contains("Snapshot saved"), "{out}");
    drop(a);

    // A new 3-member cluster from the backup.
    let mut b = Cluster::prepare(3, Options::default()).unwrap();
    for i in 0..3 {
        let out = b.restore(i, &file).unwrap();
        assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    b.start_all().await.unwrap();
    b.wait_converged(Duration::from_secs(20)).await.unwrap();
    for i in 0..3 {
        assert_eq!(b.dump(i).await.unwrap(), want, "member {} of the restored cluster", b.members[i].name);
    }
    // History and revisions carry on; the lease came along; the new cluster takes writes.
    let out =
        ok_stdout(etcdctl(&b.endpoints(), &["get", "k/00", &format!("--rev={}", last - 1)], None).unwrap()).unwrap();
    assert_eq!(out, "k/00\nv0\n");
    let list = ok_stdout(etcdctl(&b.endpoints(), &["lease", "list"], None).unwrap()).unwrap();
    assert!(list.contains(&format!("{:x}", granted.id)), "{list}");
    assert!(keel_tests::put(&b, 1, "after", "restore").await.unwrap() > last);
    let members = ok_stdout(etcdctl(&b.endpoints(), &["member", "list"], None).unwrap()).unwrap();
    assert_eq!(members.lines().count(), 3, "{members}");

    // A single member from the same backup.
    let mut one = Cluster::prepare(1, Options::default()).unwrap();
    assert!(one.restore(0, &file).unwrap().status.success());
    one.start_all().await.unwrap();
    assert_eq!(one.dump(0).await.unwrap(), want);
    // Restoring into a used data dir is refused.
    let out = one.restore(0, &file).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_agree_and_a_diverged_member_is_alarmed() {
    let victim = 2;
    let opts = Options {
        extra_args: vec!["--corrupt-check-interval".into(), "1".into()],
        member_env: vec![(victim, "KEEL_FAULT_DIVERGE_KEY".into(), "victim".into())],
        ..Default::default()
    };
    let c = Cluster::start_with(3, opts).await.unwrap();
    let mut rev = 0;
    for i in 0..20 {
        rev = keel_tests::put(&c, i % 3, &format!("k{i}"), "v").await.unwrap();
    }
    c.wait_converged(Duration::from_secs(20)).await.unwrap();
    let mut hashes = Vec::new();
    for i in 0..3 {
        let r = c.maintenance(i).await.unwrap().hash_kv(HashKvRequest { revision: rev }).await.unwrap().into_inner();
        hashes.push(r.hash);
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "members agree before the fault: {hashes:x?}");
    let alarms = ok_stdout(etcdctl(&c.endpoints(), &["alarm", "list"], None).unwrap()).unwrap();
    assert_eq!(alarms, "");

    // Member 3 now applies this put differently.
    keel_tests::put(&c, 0, "victim", "the truth").await.unwrap();
    let victim_id = {
        let s = c.maintenance(victim).await.unwrap().status(keel_proto::etcdserverpb::StatusRequest {}).await.unwrap();
        s.into_inner().header.unwrap().member_id
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alarms = ok_stdout(etcdctl(&c.endpoints(), &["alarm", "list"], None).unwrap()).unwrap();
        if alarms.contains("CORRUPT") {
            assert_eq!(alarms.trim(), format!("memberID:{victim_id} alarm:CORRUPT"));
            break;
        }
        assert!(Instant::now() < deadline, "no CORRUPT alarm was raised");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = ok_stdout(etcdctl(&c.endpoints(), &["endpoint", "status"], None).unwrap()).unwrap();
    assert!(status.contains("alarm:CORRUPT"), "{status}");
    // Clearing it works (it comes back while the member still diverges).
    ok_stdout(etcdctl(&c.endpoints(), &["alarm", "disarm"], None).unwrap()).unwrap();
}
