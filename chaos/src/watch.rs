//! Watch guarantees, as etcd's robustness suite states them, checked over what every watcher received:
//!
//! - **ordered**: revisions never go back within a stream, and each response's revisions are above the
//!   previous response's;
//! - **unique**: no (key, revision) event twice in a stream;
//! - **atomic**: the events of one revision arrive in one response;
//! - **resumable**: a watch from revision r starts with the first change at or after r;
//! - **reliable**: no gaps — between where a stream starts and the last revision it reached, it holds every
//!   event any watcher saw for its keys, and every acknowledged change of the KV history;
//! - **prev_kv**: an event's previous value is the value the key had before that revision;
//! - **consistent with the KV history**: every event is a change some client made, at the revision the
//!   client was told (or, for a key put with a lease, its deletion when the lease ended: `lease.rs` checks
//!   when).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{Call, Op, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub key: String,
    /// The value after a put; `None` for a delete.
    pub value: Option<String>,
    pub mod_revision: i64,
    /// The value before (only when the watch asked for prev_kv; `None` if the key was absent).
    pub prev_value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// When the response arrived (same clock as the KV history).
    pub at: u64,
    /// The header revision.
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Everything one watch received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub client: u32,
    /// Keys starting with this prefix.
    pub prefix: String,
    /// The revision the watch asked to start from (0: "from now", which has no resumability to check).
    pub start_revision: i64,
    pub prev_kv: bool,
    pub responses: Vec<Response>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchViolation {
    pub guarantee: &'static str,
    pub client: u32,
    pub detail: String,
}

/// Every broken guarantee, over all `streams` and the KV `history` the same run recorded; `leased` are the
/// keys put with a lease, which may also be deleted by the lease's end.
pub fn check(streams: &[Stream], history: &[Op], leased: &HashSet<String>) -> Vec<WatchViolation> {
    let mut out = Vec::new();
    for s in streams {
        ordered_unique_atomic(s, &mut out);
    }
    // What happened at each revision, as the union of all streams (the first stream to report a revision
    // defines it; disagreement is itself a violation).
    let mut truth: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    let mut told_by: HashMap<i64, u32> = HashMap::new();
    for s in streams {
        for (rev, events) in by_revision(s) {
            match truth.get(&rev) {
                None => {
                    truth.insert(rev, events.iter().map(|e| strip_prev(e)).collect());
                    told_by.insert(rev, s.client);
                }
                Some(known) => {
                    let mine: Vec<Event> = events.iter().map(|e| strip_prev(e)).collect();
                    let theirs: Vec<&Event> = known.iter().filter(|e| e.key.starts_with(&s.prefix)).collect();
                    if mine.iter().collect::<Vec<_>>() != theirs {
                        out.push(WatchViolation {
                            guarantee: "consistent",
                            client: s.client,
                            detail: format!("revision {rev}: got {mine:?}, watcher {} got {known:?}", told_by[&rev]),
                        });
                    }
                }
            }
        }
    }
    for s in streams {
        reliable_and_resumable(s, &truth, history, &mut out);
        if s.prev_kv {
            prev_kv(s, &truth, &mut out);
        }
    }
    consistent_with_history(&truth, history, leased, &mut out);
    out
}

fn strip_prev(e: &Event) -> Event {
    Event { prev_value: None, ..e.clone() }
}

fn by_revision(s: &Stream) -> BTreeMap<i64, Vec<&Event>> {
    let mut m: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for r in &s.responses {
        for e in &r.events {
            m.entry(e.mod_revision).or_default().push(e);
        }
    }
    m
}

fn ordered_unique_atomic(s: &Stream, out: &mut Vec<WatchViolation>) {
    let v = |g, d: String| WatchViolation { guarantee: g, client: s.client, detail: d };
    let mut last_rev = 0;
    let mut seen: HashMap<(&str, i64), ()> = HashMap::new();
    for r in &s.responses {
        let mut first_in_response = true;
        for e in &r.events {
            if e.mod_revision < last_rev || (first_in_response && e.mod_revision == last_rev && last_rev != 0) {
                let g = if e.mod_revision == last_rev { "atomic" } else { "ordered" };
                out.push(v(g, format!("event at revision {} after revision {last_rev}", e.mod_revision)));
            }
            if seen.insert((e.key.as_str(), e.mod_revision), ()).is_some() {
                out.push(v("unique", format!("{} at revision {} twice", e.key, e.mod_revision)));
            }
            if !e.key.starts_with(&s.prefix) {
                out.push(v("consistent", format!("key {} outside the watched prefix {}", e.key, s.prefix)));
            }
            last_rev = last_rev.max(e.mod_revision);
            first_in_response = false;
        }
    }
}

/// The highest revision the stream is known to have caught up with: its last event, or a progress
/// notification's header (an event response's header may run ahead of the events sent so far).
pub fn reached(s: &Stream) -> i64 {
    s.responses
        .iter()
        .map(|r| match r.events.last() {
            Some(e) => e.mod_revision,
            None => r.revision,
        })
        .max()
        .unwrap_or(0)
}

fn reliable_and_resumable(
    s: &Stream,
    truth: &BTreeMap<i64, Vec<Event>>,
    history: &[Op],
    out: &mut Vec<WatchViolation>,
) {
    let got = by_revision(s);
    let Some(&first) = got.keys().next() else { return };
    let from = if s.start_revision > 0 { s.start_revision } else { first };
    let upto = reached(s);
    for (rev, events) in truth.range(from..=upto) {
        let expected = events.iter().filter(|e| e.key.starts_with(&s.prefix)).count();
        let has = got.get(rev).map_or(0, |v| v.len());
        if expected > has {
            let g = if s.start_revision > 0 && *rev < first { "resumable" } else { "reliable" };
            out.push(WatchViolation {
                guarantee: g,
                client: s.client,
                detail: format!("missed {} event(s) at revision {rev} (stream covers {from}..={upto})", expected - has),
            });
        }
    }
    // Acknowledged changes the stream should hold, whether or not any watcher saw them.
    for op in history {
        let Outcome::Ok(r) = &op.outcome else { continue };
        if !r.modified() || !op.key.starts_with(&s.prefix) {
            continue;
        }
        let rev = r.revision();
        if (from..=upto).contains(&rev) && !got.get(&rev).is_some_and(|es| es.iter().any(|e| e.key == op.key)) {
            out.push(WatchViolation {
                guarantee: "reliable",
                client: s.client,
                detail: format!("no event for the acknowledged change of {} at revision {rev}", op.key),
            });
        }
    }
}

fn prev_kv(s: &Stream, truth: &BTreeMap<i64, Vec<Event>>, out: &mut Vec<WatchViolation>) {
    // The value before an event is that of the key's latest earlier event, known only if the union of the
    // streams covers everything from the key's first event on (a watcher from revision 1 makes that so).
    let covered_from = truth.keys().next().copied().unwrap_or(0);
    for r in &s.responses {
        for e in &r.events {
            let before = truth.range(..e.mod_revision).rev().flat_map(|(_, es)| es.iter()).find(|x| x.key == e.key);
            let expected = match before {
                Some(x) => x.value.clone(),
                None if covered_from <= 1 => None,
                None => continue,
            };
            if e.prev_value != expected {
                out.push(WatchViolation {
                    guarantee: "prev_kv",
                    client: s.client,
                    detail: format!(
                        "{} at revision {}: prev value {:?}, the key held {expected:?}",
                        e.key, e.mod_revision, e.prev_value
                    ),
                });
            }
        }
    }
}

fn consistent_with_history(
    truth: &BTreeMap<i64, Vec<Event>>,
    history: &[Op],
    leased: &HashSet<String>,
    out: &mut Vec<WatchViolation>,
) {
    // Values are unique per write in the traffic, so a put event names the op that made it.
    let mut writes: HashMap<(&str, &str), &Op> = HashMap::new();
    let mut deletes: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in history.iter().filter(|o| o.outcome != Outcome::Failed) {
        match &op.call {
            Call::Put { value } | Call::CompareAndSwap { value, .. } => {
                writes.insert((op.key.as_str(), value.as_str()), op);
            }
            Call::Delete => deletes.entry(op.key.as_str()).or_default().push(op),
            Call::Get { .. } => {}
        }
    }
    for (rev, events) in truth {
        for e in events {
            let v = |d: String| WatchViolation { guarantee: "consistent", client: u32::MAX, detail: d };
            match &e.value {
                Some(val) => match writes.get(&(e.key.as_str(), val.as_str())) {
                    None => out.push(v(format!("{} = {val:?} at revision {rev}: no client wrote it", e.key))),
                    Some(op) => {
                        if let Outcome::Ok(r) = &op.outcome {
                            if !r.modified() {
                                out.push(v(format!("{} = {val:?} at revision {rev}: its swap failed", e.key)));
                            } else if r.revision() != *rev {
                                out.push(v(format!(
                                    "{} = {val:?} at revision {rev}: the client was told revision {}",
                                    e.key,
                                    r.revision()
                                )));
                            }
                        }
                    }
                },
                None => {
                    let explained = leased.contains(&e.key)
                        || deletes.get(e.key.as_str()).is_some_and(|ds| {
                            ds.iter().any(|d| match &d.outcome {
                                Outcome::Ok(r) => r.modified() && r.revision() == *rev,
                                _ => true,
                            })
                        });
                    if !explained {
                        out.push(v(format!("{} deleted at revision {rev}: no client deleted it then", e.key)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "watch_test.rs"]
mod tests;
