//! The whole-cluster chaos mode's smoke run (issue 22, item 4), as root (CI): `deploy/local-cluster.sh`'s 3
//! masters and 2 agents on containerd, each machine a host of its own; three clients create, scale, update
//! and delete Deployments, StatefulSets and Jobs through `keel lb` while every kind of fault is injected once
//! (masters and the store leader killed, paused and restarted, a minority of masters killed, a master, a node
//! and the two leaders partitioned, an agent and a containerd restarted). The run must find no lost write, no
//! StatefulSet identity running twice, no pod created past maxSurge, every workload converged, and no
//! sample-app pod disturbed by a control-plane fault; and it must leave no process or namespace behind.
//!
//! It takes the launcher's fixed names (hosts `kh*`, 127.0.0.1:6443), so it never runs beside the
//! local-cluster test (one nextest group, .config/nextest.toml).

use std::time::Duration;

use keel_chaos::cluster_faults::{Action, ClusterFault};
use keel_chaos::cluster_run::{run, ClusterRunConfig};
use keel_tests::agent::repo_root;
use keel_tests::keel_bin;

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn a_short_whole_cluster_run_with_every_fault_finds_no_violation() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc_geteuid() }, 0, "the cluster's machines are network namespaces: this needs root");
    if !keel_tests::reserve_port(6443) {
        eprintln!("127.0.0.1:6443 is taken (a local cluster running?): not starting another");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cfg = ClusterRunConfig {
        repo: repo_root(),
        keel: keel_bin(),
        masters: 3,
        nodes: 2,
        external_store: false,
        duration: Duration::from_secs(210),
        faults: ClusterFault::ALL.to_vec(),
        fault_duration: Duration::from_secs(3),
        interval: Duration::from_secs(2),
        clients: 3,
        seed: 7,
        converge_within: Duration::from_secs(180),
        work: work.path().join("run"),
    };
    let report = run(&cfg).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(cfg.work.join("launcher.log")).unwrap_or_default();
        panic!("the run failed: {e}\n{log}")
    });
    let summary = report.summary();
    println!("{summary}");
    assert!(report.ok(), "{summary}");
    assert!(report.acked > 50, "too little traffic: {summary}");
    assert!(report.node_sightings > 0, "nothing seen on the nodes' containerds: {summary}");
    // Every fault was carried out, none skipped for want of a target.
    let done: Vec<ClusterFault> =
        report.rounds.iter().filter(|r| !matches!(r.action, Action::Skip(_))).map(|r| r.fault).collect();
    let missing: Vec<&ClusterFault> = ClusterFault::ALL.iter().filter(|f| !done.contains(f)).collect();
    assert!(missing.is_empty(), "faults not carried out: {missing:?}\n{summary}");
    assert!(report.rounds.iter().all(|r| r.recovered.is_some()), "a fault the cluster did not recover from: {summary}");

    // Nothing left: no host, no process of the run's cluster (restarted ones included).
    let namespaces = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!namespaces.lines().any(|l| l.starts_with("kh")), "{namespaces}");
    let dir = cfg.work.display().to_string();
    let left = keel_tests::processes_mentioning(&dir);
    assert!(left.is_empty(), "processes left: {left:?}");
}
