//! Lease safety: a key attached to a lease vanishes only after the lease expired or was revoked, and does
//! vanish then.
//!
//! What the lease clients record per lease ([`Lease`]): the grant and every keep-alive (invoke and complete
//! times, the TTL the store answered, or nothing when no answer came), the keys put with the lease, and the
//! revoke if one was sent. A store refreshes a lease somewhere between a keep-alive's invoke and its answer,
//! so a lease answered with TTL t for a request invoked at time i lives at least until i + t. From that:
//!
//! - **not early**: a watcher that received the delete of a leased key before the lease could have
//!   expired, and before any revoke of it was sent, saw the key vanish too soon;
//! - **not alive without its keys**: a keep-alive sent after a watcher saw one of the lease's keys deleted
//!   must not find the lease alive (expiry and revocation remove the keys and the lease in one step);
//! - **revoke is done when acknowledged**: the keys of a revoked lease are deleted at or before the revision
//!   the revoke answered with;
//! - **not late, eventually**: after the run, once every lease has had time to expire, no leased key is left
//!   (`leftover`, read by the harness).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::watch::Stream;

/// One answer (or the lack of one) to a grant or keep-alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    pub invoke: u64,
    pub complete: u64,
    /// The TTL answered (0: the lease is gone); `None` when no answer came (it may still have refreshed).
    pub ttl: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    pub invoke: u64,
    pub complete: u64,
    /// The header revision of the answer; `None` when no answer came.
    pub revision: Option<i64>,
}

/// Everything one client did with one lease it was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub client: u32,
    pub id: i64,
    /// The grant first, then the keep-alives.
    pub refreshes: Vec<Refresh>,
    /// Keys put with this lease (whatever the put's outcome).
    pub keys: Vec<String>,
    pub revoke: Option<Revoke>,
}

impl Lease {
    /// The earliest time (run clock, ns) the lease may have expired by itself.
    pub fn alive_until(&self) -> u64 {
        self.refreshes
            .iter()
            .filter_map(|r| r.ttl.filter(|&t| t > 0).map(|t| r.invoke + t as u64 * 1_000_000_000))
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseViolation {
    pub lease: i64,
    pub what: String,
}

/// Every lease-safety violation in what the lease clients and the watchers recorded; `leftover` are leased
/// keys still present after every lease had time to expire.
pub fn check(leases: &[Lease], streams: &[Stream], leftover: &[String]) -> Vec<LeaseViolation> {
    // (key) → (revision, first time a watcher received its delete) of every delete seen.
    let mut deleted: HashMap<&str, Vec<(i64, u64)>> = HashMap::new();
    for s in streams {
        for r in &s.responses {
            for e in r.events.iter().filter(|e| e.value.is_none()) {
                let seen = deleted.entry(e.key.as_str()).or_default();
                match seen.iter_mut().find(|(rev, _)| *rev == e.mod_revision) {
                    Some(x) => x.1 = x.1.min(r.at),
                    None => seen.push((e.mod_revision, r.at)),
                }
            }
        }
    }
    let mut out = Vec::new();
    for l in leases {
        let v = |what: String| LeaseViolation { lease: l.id, what };
        let alive_until = l.alive_until();
        let revoke_sent = l.revoke.as_ref().map(|r| r.invoke);
        let mut first_gone: Option<(u64, &str)> = None;
        for k in &l.keys {
            for &(rev, at) in deleted.get(k.as_str()).into_iter().flatten() {
                if first_gone.is_none_or(|(t, _)| at < t) {
                    first_gone = Some((at, k));
                }
                let revoked_before = revoke_sent.is_some_and(|t| t < at);
                if at < alive_until && !revoked_before {
                    out.push(v(format!(
                        "{k} deleted at revision {rev}, seen {:.3} s before its lease could expire (no revoke sent)",
                        (alive_until - at) as f64 / 1e9
                    )));
                }
                if let Some(Revoke { revision: Some(r), .. }) = &l.revoke {
                    if rev > *r {
                        out.push(v(format!("{k} deleted at revision {rev}, after the revoke was acknowledged at {r}")));
                    }
                }
            }
        }
        if let Some((gone, key)) = first_gone {
            for r in l.refreshes.iter().filter(|r| r.invoke > gone && r.ttl.is_some_and(|t| t > 0)) {
                out.push(v(format!(
                    "a keep-alive sent {:.3} s after {key} was seen deleted found the lease alive (TTL {:?})",
                    (r.invoke - gone) as f64 / 1e9,
                    r.ttl
                )));
            }
        }
        for k in leftover.iter().filter(|k| l.keys.contains(k)) {
            out.push(v(format!("{k} outlived its lease")));
        }
    }
    for k in leftover.iter().filter(|k| !leases.iter().any(|l| l.keys.contains(k))) {
        out.push(LeaseViolation { lease: 0, what: format!("{k} left over, attached to no known lease") });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Event, Response};

    const S: u64 = 1_000_000_000;

    fn lease(refreshes: Vec<(u64, Option<i64>)>, revoke: Option<(u64, Option<i64>)>) -> Lease {
        Lease {
            client: 1,
            id: 7,
            refreshes: refreshes
                .into_iter()
                .map(|(t, ttl)| Refresh { invoke: t, complete: t + S / 100, ttl })
                .collect(),
            keys: vec!["l/a".into(), "l/b".into()],
            revoke: revoke.map(|(t, revision)| Revoke { invoke: t, complete: t + S / 100, revision }),
        }
    }

    fn deletes(at: u64, rev: i64) -> Vec<Stream> {
        let ev = |k: &str| Event { key: k.into(), value: None, mod_revision: rev, prev_value: Some("v".into()) };
        vec![Stream {
            client: 1000,
            prefix: "l/".into(),
            start_revision: 1,
            prev_kv: true,
            responses: vec![Response { at, revision: rev, events: vec![ev("l/a"), ev("l/b")] }],
        }]
    }

    #[test]
    fn expiry_after_the_last_refresh_plus_ttl_is_fine() {
        // Granted at 0 (TTL 2), kept alive at 1 s (TTL 2): may expire from 3 s on.
        let l = lease(vec![(0, Some(2)), (S, Some(2))], None);
        assert_eq!(check(std::slice::from_ref(&l), &deletes(3 * S + 1, 10), &[]), vec![]);
        // An unanswered keep-alive later does not extend what is known.
        let mut l2 = l;
        l2.refreshes.push(Refresh { invoke: 2 * S, complete: 4 * S, ttl: None });
        assert_eq!(check(&[l2], &deletes(3 * S + 1, 10), &[]), vec![]);
    }

    #[test]
    fn a_key_gone_before_its_lease_could_expire_is_a_violation() {
        let l = lease(vec![(0, Some(2)), (S, Some(2))], None);
        let v = check(&[l], &deletes(2 * S, 10), &[]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].what.contains("before its lease could expire"), "{v:?}");
    }

    #[test]
    fn a_revoke_may_delete_at_once_but_not_after_it_was_acknowledged() {
        let ok = lease(vec![(0, Some(5))], Some((S, Some(10))));
        assert_eq!(check(&[ok], &deletes(S + S / 200, 10), &[]), vec![]);
        // Acknowledged at revision 9, yet the keys went at 10.
        let late = lease(vec![(0, Some(5))], Some((S, Some(9))));
        let v = check(&[late], &deletes(S + S / 200, 10), &[]);
        assert!(v.iter().any(|v| v.what.contains("after the revoke was acknowledged")), "{v:?}");
    }

    #[test]
    fn a_lease_alive_after_its_keys_went_is_a_violation() {
        let l = lease(vec![(0, Some(2)), (4 * S, Some(2))], None);
        let v = check(&[l], &deletes(3 * S, 10), &[]);
        assert!(v.iter().any(|v| v.what.contains("found the lease alive")), "{v:?}");
        // Answered "gone" (TTL 0) is right.
        let l = lease(vec![(0, Some(2)), (4 * S, Some(0))], None);
        assert_eq!(check(&[l], &deletes(3 * S, 10), &[]), vec![]);
    }

    #[test]
    fn keys_left_after_every_lease_expired_are_violations() {
        let l = lease(vec![(0, Some(2))], None);
        let v = check(&[l], &[], &["l/a".into(), "x".into()]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].what.contains("outlived"));
    }
}
