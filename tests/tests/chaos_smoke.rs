//! The chaos harness's smoke run, bounded for CI: three `keel kv` members in network namespaces, rounds of
//! one or two faults of every kind under concurrent KV, lease and watch traffic, then the checkers (see
//! chaos/README.md). Needs root (namespaces, nftables, iptables), as CI has.

use std::time::Duration;

use keel_chaos::members::Server;
use keel_chaos::nemesis::Fault;
use keel_chaos::run::{run, RunConfig};
use keel_tests::keel_bin;

#[test]
fn a_short_run_with_every_fault_finds_no_violation() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc_geteuid() }, 0, "the chaos smoke run needs root (network namespaces, nftables)");
    let work = tempfile::Builder::new().prefix("keel-chaos-smoke-").tempdir().expect("temp dir");
    let cfg = RunConfig {
        server: Server::Keel(keel_bin()),
        members: 3,
        duration: Duration::from_secs(40),
        faults: Fault::ALL.to_vec(),
        together: 2,
        fault_duration: keel_chaos::nemesis::FAULT_DURATION,
        interval: Duration::from_secs(2),
        clients: 6,
        keys: 8,
        seed: 7,
        member_args: Vec::new(),
        work: work.path().to_path_buf(),
    };
    let report = run(&cfg).expect("the run completes");
    let kept = work.keep();
    assert!(report.faults.len() >= 6, "too few faults injected: {report:#?}");
    assert!(report.acknowledged > 300, "too little traffic got through: {report:#?}");
    assert!(report.watch_events > 100, "the watchers saw too little: {report:#?}");
    assert!(report.ok(), "violations (history, logs and report kept in {}): {report:#?}", kept.display());
    let _ = std::fs::remove_dir_all(kept);
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
