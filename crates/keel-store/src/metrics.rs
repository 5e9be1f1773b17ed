//! What an operator watches on a member, under etcd's metric names (so existing etcd dashboards and alert
//! rules work unchanged): leadership, proposals, WAL fsync and backend commit latency, database size. As
//! etcd's, they are the process's (one member per process; several in one test process add up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The member's figures.
pub struct Metrics {
    registry: Registry,
    pub has_leader: Gauge,
    pub is_leader: Gauge,
    pub is_learner: Gauge,
    pub leader_changes: Counter,
    pub proposals_committed: Gauge,
    pub proposals_applied: Gauge,
    pub proposals_pending: Gauge,
    pub proposals_failed: Counter,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub db_total_size: Gauge,
    pub term: Gauge,
    /// The leader last seen, to count changes (0: none).
    last_leader: AtomicU64,
}

fn disk_histogram() -> Histogram {
    // etcd's buckets: 1 ms doubling to about 8 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            is_learner: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            wal_fsync: disk_histogram(),
            backend_commit: disk_histogram(),
            db_total_size: Gauge::default(),
            term: Gauge::default(),
            last_leader: AtomicU64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            m.has_leader.clone(),
        );
        registry.register(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            m.is_leader.clone(),
        );
        registry.register(
            "etcd_server_is_learner",
            "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            m.is_learner.clone(),
        );
        registry.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen.",
            m.leader_changes.clone(),
        );
        registry.register(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            m.proposals_committed.clone(),
        );
        registry.register(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            m.proposals_applied.clone(),
        );
        registry.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            m.proposals_pending.clone(),
        );
        registry.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen.",
            m.proposals_failed.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            m.wal_fsync.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            m.backend_commit.clone(),
        );
        registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            m.db_total_size.clone(),
        );
        registry.register("etcd_server_term", "The current term of this member (keel: its Raft term).", m.term.clone());
        Metrics { registry, ..m }
    }

    /// A leadership observation: counts a change of leader (to another member, or a new one after none).
    pub fn observe_leader(&self, leader: Option<u64>, me: u64, term: u64, learner: bool) {
        let id = leader.unwrap_or(0);
        self.has_leader.set(i64::from(leader.is_some()));
        self.is_leader.set(i64::from(leader == Some(me)));
        self.is_learner.set(i64::from(learner));
        self.term.set(term as i64);
        let before = self.last_leader.swap(id, Ordering::Relaxed);
        if id != 0 && id != before {
            self.leader_changes.inc();
        }
    }

    pub fn observe_fsync(&self, took: Duration) {
        self.wal_fsync.observe(took.as_secs_f64());
    }

    pub fn observe_backend_commit(&self, took: Duration) {
        self.backend_commit.observe(took.as_secs_f64());
    }

    /// The figures in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("encoding metrics to a String cannot fail");
        out
    }
}

/// The process's store metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// A proposal in flight: counted pending while it lives; [`Pending::failed`] counts a failure.
pub struct Pending(());

impl Pending {
    pub fn start() -> Pending {
        METRICS.proposals_pending.inc();
        Pending(())
    }

    pub fn failed(&self) {
        METRICS.proposals_failed.inc();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        METRICS.proposals_pending.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_changes_count_new_leaders_only() {
        let m = Metrics::new();
        m.observe_leader(None, 1, 1, false);
        m.observe_leader(Some(2), 1, 1, false);
        m.observe_leader(Some(2), 1, 1, false);
        m.observe_leader(None, 1, 2, false);
        m.observe_leader(Some(1), 1, 2, false);
        assert_eq!(m.leader_changes.get(), 2);
        assert_eq!((m.has_leader.get(), m.is_leader.get(), m.term.get()), (1, 1, 2));
        let text = m.encode();
        for name in [
            "etcd_server_has_leader 1",
            "etcd_server_leader_changes_seen_total 2",
            "etcd_server_proposals_committed_total 0",
            "etcd_server_proposals_pending 0",
            "etcd_server_proposals_failed_total 0",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0",
            "etcd_mvcc_db_total_size_in_bytes 0",
        ] {
            assert!(text.lines().any(|l| l == name), "{name} missing from:\n{text}");
        }
    }
}
