//! keel's robustness harness, after etcd's `tests/robustness` and Jepsen: clients record every operation with
//! its invoke and complete times and its outcome ([`history`]); faults are injected while they run; checkers
//! then decide whether what the clients saw could have come from a correct store — linearizability of the
//! key-value history ([`linearizability`]), revisions that agree with real time and with reads
//! ([`revisions`]), the guarantees of watches ([`watch`]) and lease safety ([`lease`]).
//!
//! The whole-cluster mode ([`cluster_run`], `keel-chaos cluster`) runs against the launcher's cluster with
//! real agents: Deployments, StatefulSets and Jobs driven through `keel lb`, masters, store members, nodes
//! and links broken ([`cluster_faults`]), and checkers for lost API writes, duplicate StatefulSet identities,
//! surge, convergence and pods disturbed by control-plane faults ([`cluster_checks`]).
//!
//! The checkers are pure functions over recorded histories, tested on known-good and known-bad histories so
//! that a checker which accepts everything cannot pass its own tests.

pub mod cluster_checks;
pub mod cluster_faults;
pub mod cluster_run;
pub mod delay;
pub mod history;
pub mod hosts;
pub mod lazyfs;
pub mod lease;
pub mod linearizability;
pub mod members;
pub mod nemesis;
pub mod patch;
pub mod reconfig;
pub mod revisions;
pub mod run;
pub mod traffic;
pub mod watch;
