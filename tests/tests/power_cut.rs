//! A power cut on every member at once (kill -9, and every write not yet fsynced lost, through the chaos
//! harness's LazyFS mount): nothing acknowledged is lost, and the first linearizable reads after the
//! restart see every acknowledged write — also when the old leader comes back as leader in its old term,
//! with a commit index from disk that is behind (found by the chaos harness: reads answered 3 revisions
//! behind writes that watchers had seen committed before the cut).

use std::time::{Duration, Instant};

use keel_chaos::lazyfs::{self, LazyMount};
use keel_proto::etcdserverpb::RangeRequest;
use keel_tests::{put, Cluster, Options};

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_whole_cluster_power_cut_see_every_acknowledged_write() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc_geteuid() }, 0, "mounting the LazyFS test file system needs root");
    let mut c = Cluster::prepare(3, Options::default())?;
    let disks: Vec<LazyMount> = (0..3)
        .map(|i| lazyfs::mount(&c.dir.path().join(format!("disk{i}")), &c.dir.path().join(format!("fs{i}"))))
        .collect::<Result<_, _>>()?;
    for (i, d) in disks.iter().enumerate() {
        c.members[i].data_dir = d.mountpoint().join("data");
    }
    c.start_all().await?;

    for round in 0..5 {
        let mut leader = c.wait_leader(Duration::from_secs(30)).await?;
        // Writes through the leader, the last one acknowledged at `acked`. A write refused because the
        // leader changed under it (right after a restart the old leader may lose an election it did not
        // start) is retried through the new leader, as an etcd client does; only answers count.
        let mut acked = 0;
        for k in 0..200 {
            let mut tries = 0;
            acked = loop {
                match put(&c, leader, &format!("k{}", k % 20), &format!("{round}-{k}")).await {
                    Ok(rev) => break rev,
                    Err(e) if tries < 10 => {
                        tries += 1;
                        eprintln!("round {round}: write {k} failed ({e:#}); retrying through the leader");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        leader = c.wait_leader(Duration::from_secs(30)).await?;
                    }
                    Err(e) => return Err(e),
                }
            };
        }
        for i in 0..3 {
            c.kill(i);
        }
        let lost: u64 = disks.iter().map(|d| d.drop_unsynced().bytes).sum();
        // The old leader first: it comes back as leader at once (its vote is committed), and its commit
        // index is what was on disk.
        c.spawn(leader)?;
        for i in (0..3).filter(|&i| i != leader) {
            c.spawn(i)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let revision = loop {
            let r = async {
                let mut kv = c.kv(leader).await?;
                let resp = kv.range(RangeRequest { key: b"k0".to_vec(), ..Default::default() }).await?.into_inner();
                anyhow::Ok(resp.header.map_or(0, |h| h.revision))
            };
            match tokio::time::timeout(Duration::from_secs(2), r).await {
                Ok(Ok(rev)) => break rev,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => anyhow::bail!("no linearizable read within 30 s after the restart"),
            }
        };
        assert!(
            revision >= acked,
            "round {round}: the first read after the cut answered revision {revision}, but revision {acked} was \
             acknowledged before it ({lost} unsynced bytes dropped); leader log:\n{}",
            c.log_tail(leader)
        );
        c.wait_converged(Duration::from_secs(30)).await?;
    }
    for i in 0..3 {
        c.kill(i);
    }
    drop(disks);
    Ok(())
}
