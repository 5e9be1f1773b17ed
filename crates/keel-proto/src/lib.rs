//! Protocol buffers of keel, compiled from `proto/`: the etcd v3 compatible client API (`etcdserverpb`,
//! `mvccpb`) that stock etcd clients speak, and keel's internal Raft transport (`keel.raft`).
//! Only generated code lives here; behaviour belongs to the crates that use these types.

/// etcd's MVCC types: key-values and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// The etcd v3 client API: KV, Watch, Lease, Cluster, Maintenance.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// keel's own packages (`keel.*`), nested as protobuf packages are.
pub mod keel {
    /// keel's member-to-member protocol: Raft messages, forwarded writes, read index.
    pub mod raft {
        tonic::include_proto!("keel.raft");
    }
}

pub use keel::raft as raftpb;
