//! Revisions as etcd defines them: every change gets the next revision of the whole store, so revisions must
//! agree with real time and with what reads return.
//!
//! - real time: if A completed before B was invoked, B's header revision is at least A's, and strictly
//!   greater when B changed the store;
//! - uniqueness: no two changes (single-key operations here) share a revision;
//! - reads: a read that returns a value written by a known write reports that write's revision as its
//!   mod revision, and a header revision no lower than it;
//! - serializable reads ([`serializable_reads`]) may be stale, and are exempt from the real-time order, but
//!   must return a state the store really had: the key's value at the header revision, as the watches saw
//!   the history of changes.

use std::collections::HashMap;

use crate::history::{Call, Op, Outcome, Return};
use crate::watch::Stream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionViolation {
    pub what: String,
    pub ops: Vec<Op>,
}

/// Every revision invariant broken in `history` (empty when none).
pub fn check(history: &[Op]) -> Vec<RevisionViolation> {
    let done: Vec<(&Op, &Return)> = history
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Ok(r) => Some((o, r)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    real_time(&done, &mut out);
    unique(&done, &mut out);
    reads(&done, &mut out);
    out
}

fn real_time(done: &[(&Op, &Return)], out: &mut Vec<RevisionViolation>) {
    // Sweep invocations in time order, keeping the op with the highest revision among those completed
    // strictly before the current invocation.
    let mut by_complete: Vec<&(&Op, &Return)> = done.iter().collect();
    by_complete.sort_by_key(|(o, _)| o.complete);
    let mut by_invoke: Vec<&(&Op, &Return)> = done.iter().collect();
    by_invoke.sort_by_key(|(o, _)| o.invoke);
    let mut best: Option<&(&Op, &Return)> = None;
    let mut k = 0;
    for b in by_invoke {
        let stale_allowed = matches!(b.0.call, Call::Get { serializable: true });
        while k < by_complete.len() && by_complete[k].0.complete < b.0.invoke {
            let a = by_complete[k];
            if best.is_none_or(|x| a.1.revision() > x.1.revision()) {
                best = Some(a);
            }
            k += 1;
        }
        let Some(a) = best.filter(|_| !stale_allowed) else { continue };
        let (ra, rb) = (a.1.revision(), b.1.revision());
        let broken = if b.1.modified() { rb <= ra } else { rb < ra };
        if broken {
            out.push(RevisionViolation {
                what: format!(
                    "revision went back in real time: an op completed at revision {ra}, a later {} answered {rb}",
                    if b.1.modified() { "change" } else { "read" }
                ),
                ops: vec![a.0.clone(), b.0.clone()],
            });
        }
    }
}

fn unique(done: &[(&Op, &Return)], out: &mut Vec<RevisionViolation>) {
    let mut seen: HashMap<i64, &Op> = HashMap::new();
    for (op, r) in done.iter().filter(|(_, r)| r.modified()) {
        if let Some(first) = seen.insert(r.revision(), op) {
            out.push(RevisionViolation {
                what: format!("two changes at revision {}", r.revision()),
                ops: vec![first.clone(), (*op).clone()],
            });
        }
    }
}

fn reads(done: &[(&Op, &Return)], out: &mut Vec<RevisionViolation>) {
    let mut writes: HashMap<(&str, &str), (&Op, i64)> = HashMap::new();
    for (op, r) in done.iter().filter(|(_, r)| r.modified()) {
        match &op.call {
            Call::Put { value } | Call::CompareAndSwap { value, .. } => {
                writes.insert((op.key.as_str(), value.as_str()), (op, r.revision()));
            }
            _ => {}
        }
    }
    for (op, r) in done {
        let Return::Get { value: Some(v), mod_revision, revision } = r else { continue };
        if revision < mod_revision {
            out.push(RevisionViolation {
                what: format!("a read at revision {revision} returned a value modified at {mod_revision}"),
                ops: vec![(*op).clone()],
            });
        }
        if let Some((w, rev)) = writes.get(&(op.key.as_str(), v.as_str())) {
            if rev != mod_revision {
                out.push(RevisionViolation {
                    what: format!("a read returned a value written at revision {rev} with mod revision {mod_revision}"),
                    ops: vec![(*w).clone(), (*op).clone()],
                });
            }
        }
    }
}

/// Every serializable read whose value is not the key's value at the read's header revision, as the watch
/// `streams` (which must include one from revision 1) recorded the changes; reads beyond what the watches
/// reached are not judged.
pub fn serializable_reads(history: &[Op], streams: &[Stream]) -> Vec<RevisionViolation> {
    if !streams.iter().any(|s| s.start_revision == 1) {
        return vec![];
    }
    let upto = crate::patch::watched_upto(streams);
    // key → (revision, value after it), in revision order.
    let mut changes: HashMap<&str, Vec<(i64, Option<&str>)>> = HashMap::new();
    for s in streams {
        for r in &s.responses {
            for e in &r.events {
                changes.entry(e.key.as_str()).or_default().push((e.mod_revision, e.value.as_deref()));
            }
        }
    }
    for c in changes.values_mut() {
        c.sort_by_key(|(rev, _)| *rev);
        c.dedup_by_key(|(rev, _)| *rev);
    }
    let mut out = Vec::new();
    for op in history.iter().filter(|o| matches!(o.call, Call::Get { serializable: true })) {
        let Outcome::Ok(Return::Get { value, mod_revision, revision }) = &op.outcome else { continue };
        if *revision > upto {
            continue;
        }
        let c = changes.get(op.key.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let (at, held) = c[..c.partition_point(|(rev, _)| rev <= revision)].last().copied().unwrap_or((0, None));
        let want_mod = if held.is_some() { at } else { 0 };
        if value.as_deref() != held || *mod_revision != want_mod {
            out.push(RevisionViolation {
                what: format!(
                    "a serializable read at revision {revision} returned {value:?} (mod {mod_revision}); the key held \
                     {held:?} (mod {want_mod}) then"
                ),
                ops: vec![op.clone()],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(t0: u64, t1: u64, v: &str, revision: i64) -> Op {
        Op {
            client: 0,
            key: "k".into(),
            call: Call::Put { value: v.into() },
            invoke: t0,
            complete: t1,
            outcome: Outcome::Ok(Return::Put { revision }),
        }
    }
    fn get(t0: u64, t1: u64, v: &str, mod_revision: i64, revision: i64) -> Op {
        Op {
            client: 1,
            key: "k".into(),
            call: Call::Get { serializable: false },
            invoke: t0,
            complete: t1,
            outcome: Outcome::Ok(Return::Get { value: Some(v.into()), mod_revision, revision }),
        }
    }

    #[test]
    fn a_consistent_history_passes() {
        let h = [put(0, 10, "a", 2), put(5, 15, "b", 3), get(20, 30, "b", 3, 3), put(31, 40, "c", 4)];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn concurrent_ops_may_take_revisions_in_either_order() {
        let h = [put(0, 10, "a", 3), put(1, 9, "b", 2)];
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn a_later_change_with_a_lower_revision_is_caught() {
        let v = check(&[put(0, 10, "a", 5), put(20, 30, "b", 4)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("went back"));
    }

    #[test]
    fn a_later_read_behind_a_completed_change_is_caught() {
        let v = check(&[put(0, 10, "a", 5), get(20, 30, "a", 5, 4)]);
        assert!(v.iter().any(|v| v.what.contains("went back")), "{v:?}");
    }

    #[test]
    fn duplicate_revisions_are_caught() {
        let v = check(&[put(0, 10, "a", 5), put(0, 10, "b", 5)]);
        assert!(v.iter().any(|v| v.what.contains("two changes")), "{v:?}");
    }

    fn stale_get(t0: u64, t1: u64, v: Option<&str>, mod_revision: i64, revision: i64) -> Op {
        Op {
            call: Call::Get { serializable: true },
            outcome: Outcome::Ok(Return::Get { value: v.map(str::to_string), mod_revision, revision }),
            ..get(t0, t1, "", 0, 0)
        }
    }

    /// k = a at 2, b at 4, deleted at 6.
    fn watched() -> Vec<Stream> {
        use crate::watch::{Event, Response};
        let ev = |v: Option<&str>, rev| Event {
            key: "k".into(),
            value: v.map(str::to_string),
            mod_revision: rev,
            prev_value: None,
        };
        let events = vec![ev(Some("a"), 2), ev(Some("b"), 4), ev(None, 6)];
        vec![Stream {
            client: 9,
            prefix: "k".into(),
            start_revision: 1,
            prev_kv: false,
            responses: vec![Response { at: 0, revision: 6, events }],
        }]
    }

    #[test]
    fn a_stale_serializable_read_of_a_real_past_state_passes() {
        let h = [put(0, 10, "b", 4), stale_get(20, 30, Some("a"), 2, 3), stale_get(20, 30, None, 0, 1)];
        assert_eq!(check(&h), vec![], "stale reads are exempt from real-time order");
        assert_eq!(serializable_reads(&h, &watched()), vec![]);
        let after_delete = [stale_get(20, 30, None, 0, 6)];
        assert_eq!(serializable_reads(&after_delete, &watched()), vec![]);
    }

    #[test]
    fn a_serializable_read_of_a_state_that_never_was_is_caught() {
        // At revision 5 the key held b (mod 4), not a.
        let v = serializable_reads(&[stale_get(20, 30, Some("a"), 2, 5)], &watched());
        assert_eq!(v.len(), 1, "{v:?}");
        // Absent at revision 4? It held b.
        assert_eq!(serializable_reads(&[stale_get(20, 30, None, 0, 4)], &watched()).len(), 1);
        // A linearizable read may not go back in time.
        assert!(!check(&[put(0, 10, "b", 4), get(20, 30, "a", 2, 3)]).is_empty());
    }

    #[test]
    fn a_wrong_mod_revision_is_caught() {
        let v = check(&[put(0, 10, "a", 5), get(20, 30, "a", 6, 6)]);
        assert!(v.iter().any(|v| v.what.contains("mod revision")), "{v:?}");
    }
}
