//! When leases expire: decided by the leader alone, in memory, without IO.
//!
//! Every member keeps the table (fed by the state machine as grants and revocations are applied) so that a
//! new leader can take over. The rule on a leader change is etcd's (without lease checkpoints): the new
//! leader renews every lease for its full granted TTL, so a failover never makes a lease expire early; a
//! lease may outlive its TTL by up to one TTL plus the failover time. Keep-alives reach the leader only and
//! are not replicated. An expired lease is revoked through the Raft log, so every member deletes its keys at
//! the same revision.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: i64,
    expiry: Instant,
}

#[derive(Debug, Default)]
pub struct Lessor {
    leases: HashMap<i64, Lease>,
    /// The Raft term in which this member last took over as leader and renewed every lease.
    promoted_term: Option<u64>,
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    /// A table of `(id, ttl)` leases, each expiring a full TTL from `now`.
    pub fn load(leases: impl IntoIterator<Item = (i64, i64)>, now: Instant) -> Self {
        let mut l = Lessor::default();
        for (id, ttl) in leases {
            l.grant(id, ttl, now);
        }
        l
    }

    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        self.leases.insert(id, Lease { ttl, expiry: now + secs(ttl) });
    }

    pub fn revoke(&mut self, id: i64) {
        self.leases.remove(&id);
    }

    /// A keep-alive: the lease lives a full TTL from `now`. Returns the TTL, or None for an unknown lease or
    /// one already expired (its revocation is on its way: a keep-alive must not resurrect it).
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        if l.expiry <= now {
            return None;
        }
        l.expiry = now + secs(l.ttl);
        Some(l.ttl)
    }

    /// Called by the leader of `term` before it acts on leases: the first call in a term renews every lease
    /// (see the module doc). Returns true when it did.
    pub fn lead(&mut self, term: u64, now: Instant) -> bool {
        if self.promoted_term == Some(term) {
            return false;
        }
        self.promoted_term = Some(term);
        self.promote(now);
        true
    }

    /// This member no longer leads.
    pub fn demote(&mut self) {
        self.promoted_term = None;
    }

    /// Every lease gets a full TTL from now (see the module doc).
    pub fn promote(&mut self, now: Instant) {
        for l in self.leases.values_mut() {
            l.expiry = now + secs(l.ttl);
        }
    }

    /// Whole seconds left and the granted TTL, or None for an unknown lease.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let l = self.leases.get(&id)?;
        Some((l.expiry.saturating_duration_since(now).as_secs() as i64, l.ttl))
    }

    /// Leases past their expiry at `now`, oldest first.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        let mut v: Vec<(Instant, i64)> =
            self.leases.iter().filter(|(_, l)| l.expiry <= now).map(|(id, l)| (l.expiry, *id)).collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_expire_after_their_ttl_unless_renewed() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.grant(1, 5, t0);
        l.grant(2, 10, t0);
        assert!(l.expired(t0 + secs(4)).is_empty());
        assert_eq!(l.renew(1, t0 + secs(4)), Some(5));
        assert_eq!(l.expired(t0 + secs(8)), Vec::<i64>::new());
        assert_eq!(l.expired(t0 + secs(9)), vec![1]);
        assert_eq!(l.expired(t0 + secs(10)), vec![1, 2]);
        assert_eq!(l.remaining(2, t0 + secs(3)), Some((7, 10)));
        assert_eq!(l.renew(1, t0 + secs(9)), None, "an expired lease is not renewed");
        l.revoke(1);
        assert_eq!(l.renew(1, t0), None);
        assert_eq!(l.remaining(1, t0), None);
    }

    #[test]
    fn a_new_leader_renews_every_lease_for_its_full_ttl() {
        let t0 = Instant::now();
        let mut l = Lessor::load([(1, 5), (2, 60)], t0);
        // The old leader vanished just before lease 1 was due; the new one takes over at t0 + 4.9 s.
        let takeover = t0 + Duration::from_millis(4900);
        assert!(l.lead(2, takeover));
        assert!(!l.lead(2, takeover + secs(1)), "renewed once per term");
        assert!(l.expired(t0 + secs(9)).is_empty(), "no lease may expire early because of a failover");
        assert_eq!(l.expired(takeover + secs(5)), vec![1]);
    }
}
