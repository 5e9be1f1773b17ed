//! keel's store: a Raft-replicated MVCC key-value store (openraft + RocksDB) that speaks the etcd v3 API.
//!
//! A member ([`Store`]) keeps a Raft log ([`log_store`]) and an MVCC state machine ([`state_machine`],
//! [`state_db`]) whose rules are pure functions ([`apply`]). Members talk over gRPC ([`network`], [`peer`]);
//! clients use etcd's API ([`etcd_api`]) or, when the store is embedded, the same operations on [`Store`].
//! Every member answers every request: writes go to the leader, linearizable reads wait for the leader's
//! read index, serializable reads are local.

pub mod apply;
pub mod authority;
pub mod auto_compaction;
pub mod config;
pub mod error;
pub mod etcd_api;
#[cfg(debug_assertions)]
mod fault;
pub mod hub;
pub mod keys;
pub mod leases;
pub mod lessor;
pub mod log_store;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod openraft_noise;
pub mod peer;
pub mod peer_health;
pub mod snapshot_data;
pub mod state_db;
pub mod state_machine;
pub mod store;
pub mod types;
pub mod watch;

pub use config::{ClusterState, StoreConfig};
pub use error::StoreError;
pub use openraft_noise::QuietOpenraftTransport;
pub use store::{ApiError, RunningStore, Store};

/// An error and its sources on one line ("a: b: c"), for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs blocking storage work (a RocksDB write, an fsync) from async code. On a multi-threaded runtime the
/// worker first hands its other tasks to another thread, so a long apply or a disk stall does not hold up
/// Raft's timers, heartbeats and votes queued behind it (2 cores mean 2 workers).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
