//! Settles what the clients could not know, from what the watchers saw (as etcd's robustness suite does).
//! Every written value is unique, so a put or swap whose outcome is unknown either shows up in a watch event
//! — it took effect, at that revision, before the watcher received it — or, when the watches cover every
//! revision up to the end of the run, it never took effect. A read whose outcome is unknown observed
//! nothing and changes nothing. Without this, each unknown write stays pending until the end of the
//! history, and the linearizability search grows with 2^(unknown writes per key).

use std::collections::HashMap;

use crate::history::{Call, Op, Outcome, Return};
use crate::watch::Stream;

/// `history` with unknown outcomes settled where the watches tell. `covered` says the watches saw every
/// revision up to the store's final one (so a value they never showed was never written).
pub fn settle_unknowns(history: &[Op], streams: &[Stream], covered: bool) -> Vec<Op> {
    // value → (revision, when a watcher first received it)
    let mut seen: HashMap<(&str, &str), (i64, u64)> = HashMap::new();
    for s in streams {
        for r in &s.responses {
            for e in &r.events {
                if let Some(v) = &e.value {
                    let entry = seen.entry((e.key.as_str(), v.as_str())).or_insert((e.mod_revision, r.at));
                    entry.1 = entry.1.min(r.at);
                }
            }
        }
    }
    history
        .iter()
        .map(|op| {
            if op.outcome != Outcome::Unknown {
                return op.clone();
            }
            let mut op = op.clone();
            match &op.call {
                Call::Get { .. } => op.outcome = Outcome::Failed,
                Call::Put { value } | Call::CompareAndSwap { value, .. } => {
                    match seen.get(&(op.key.as_str(), value.as_str())) {
                        Some(&(revision, at)) => {
                            op.complete = at.max(op.invoke);
                            op.outcome = Outcome::Ok(match op.call {
                                Call::Put { .. } => Return::Put { revision },
                                _ => Return::CompareAndSwap { succeeded: true, revision },
                            });
                        }
                        None if covered => op.outcome = Outcome::Failed,
                        None => {}
                    }
                }
                Call::Delete => {}
            }
            op
        })
        .collect()
}

/// The highest revision the watches together are known to have reached.
pub fn watched_upto(streams: &[Stream]) -> i64 {
    streams.iter().map(crate::watch::reached).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Event, Response};

    fn unknown(call: Call) -> Op {
        Op { client: 0, key: "k".into(), call, invoke: 10, complete: 20, outcome: Outcome::Unknown }
    }

    fn streams() -> Vec<Stream> {
        vec![Stream {
            client: 1,
            prefix: String::new(),
            start_revision: 1,
            prev_kv: false,
            responses: vec![Response {
                at: 500,
                revision: 7,
                events: vec![Event { key: "k".into(), value: Some("seen".into()), mod_revision: 7, prev_value: None }],
            }],
        }]
    }

    #[test]
    fn a_write_the_watchers_saw_took_effect_before_they_saw_it() {
        let h = [unknown(Call::Put { value: "seen".into() })];
        let p = settle_unknowns(&h, &streams(), false);
        assert_eq!(p[0].outcome, Outcome::Ok(Return::Put { revision: 7 }));
        assert_eq!(p[0].complete, 500);
    }

    #[test]
    fn a_write_they_never_saw_never_happened_only_if_they_saw_everything() {
        let h = [unknown(Call::Put { value: "lost".into() })];
        assert_eq!(settle_unknowns(&h, &streams(), true)[0].outcome, Outcome::Failed);
        assert_eq!(settle_unknowns(&h, &streams(), false)[0].outcome, Outcome::Unknown);
    }

    #[test]
    fn unknown_reads_are_dropped_and_unknown_deletes_kept() {
        let h = [unknown(Call::Get { serializable: false }), unknown(Call::Delete)];
        let p = settle_unknowns(&h, &streams(), true);
        assert_eq!(p[0].outcome, Outcome::Failed);
        assert_eq!(p[1].outcome, Outcome::Unknown);
    }
}
