//! Is a key-value history linearizable? The Wing–Gong–Lowe search (as in porcupine), one key at a time —
//! sound because every operation in the traffic touches one key, so a history is linearizable exactly when
//! each key's sub-history is (linearizability is local).
//!
//! Each key is a register that starts absent. An operation whose outcome is unknown may take effect at any
//! point after its invocation or never: it gets no return event, so the search may place it anywhere after
//! its call, including after everything observed (which is the same as never). Failed operations (known not
//! to have taken effect) are left out.

use std::collections::{HashMap, HashSet};

use crate::history::{Call, Op, Outcome, Return};

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    pub keys: usize,
    pub ops: usize,
    /// Keys whose history is not linearizable, each with a short history that shows it.
    pub violations: Vec<Violation>,
    /// Keys the search gave up on (the step budget ran out): neither proven nor refuted.
    pub undecided: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

#[derive(Debug)]
pub struct Violation {
    pub key: String,
    /// A sub-history of the key that is itself not linearizable, shrunk (each remaining op is needed).
    pub ops: Vec<Op>,
}

/// The search's step budget per key (each step tries or undoes one operation).
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// Checks every key of `history`.
pub fn check(history: &[Op], budget: u64) -> Report {
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    // Serializable reads may be stale by design: they are checked against revisions, not here.
    let checked = |o: &&Op| o.outcome != Outcome::Failed && !matches!(o.call, Call::Get { serializable: true });
    for op in history.iter().filter(checked) {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let mut report = Report { keys: keys.len(), ops: history.len(), ..Default::default() };
    for (key, ops) in keys {
        match linearizable(&ops, budget) {
            Some(true) => {}
            Some(false) => report.violations.push(Violation { key: key.to_string(), ops: shrink(ops, budget) }),
            None => report.undecided.push(key.to_string()),
        }
    }
    report
}

/// `Some(answer)`, or `None` when the budget ran out. `ops` all concern one key.
pub fn linearizable(ops: &[&Op], budget: u64) -> Option<bool> {
    Search::new(ops).run(budget)
}

/// A smaller history of the same key that is still not linearizable: first the shortest failing prefix (by
/// invocation) that binary search finds, then every op whose removal keeps it failing is removed.
fn shrink(ops: Vec<&Op>, budget: u64) -> Vec<Op> {
    // A shrunk history keeps the writer of every value its reads returned, so that it shows the real
    // problem rather than "read a value nobody wrote".
    let fails = |ops: &[&Op]| explains_reads(ops) && linearizable(ops, budget) == Some(false);
    let mut ops = ops;
    ops.sort_by_key(|o| o.invoke);
    // Prefixes are not monotone (a read may return a value written by an op invoked after it), so every
    // candidate is checked and the full history stays the fallback.
    let (mut lo, mut hi) = (1, ops.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&ops[..mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if hi < ops.len() && fails(&ops[..hi]) {
        ops.truncate(hi);
    }
    const SHRINK_ONE_BY_ONE: usize = 400;
    if ops.len() <= SHRINK_ONE_BY_ONE {
        let mut i = ops.len();
        while i > 0 {
            i -= 1;
            let mut fewer = ops.clone();
            fewer.remove(i);
            if fails(&fewer) {
                ops = fewer;
            }
        }
    }
    ops.into_iter().cloned().collect()
}

fn explains_reads(ops: &[&Op]) -> bool {
    let written: HashSet<&str> = ops
        .iter()
        .filter_map(|o| match &o.call {
            Call::Put { value } | Call::CompareAndSwap { value, .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    ops.iter().all(|o| match &o.outcome {
        Outcome::Ok(Return::Get { value: Some(v), .. }) => written.contains(v.as_str()),
        _ => true,
    })
}

/// A value of the register: `None` is "absent"; `Some(id)` an interned value. A read of a value nobody
/// wrote gets [`UNWRITTEN`], which no state ever equals.
type State = Option<u32>;
const UNWRITTEN: u32 = u32::MAX;

/// One operation as the search sees it: what it does and what it must have returned.
#[derive(Clone, Copy)]
enum Step {
    Put(u32),
    Get { saw: State, known: bool },
    Delete { deleted: Option<bool> },
    Cas { expect: State, value: u32, succeeded: Option<bool> },
}

impl Step {
    /// The state after the op, if the op could have returned what it did in `s`.
    fn apply(self, s: State) -> Option<State> {
        match self {
            Step::Put(v) => Some(Some(v)),
            Step::Get { saw, known } => (!known || saw == s).then_some(s),
            Step::Delete { deleted } => match deleted {
                Some(d) if d != s.is_some() => None,
                _ => Some(None),
            },
            Step::Cas { expect, value, succeeded } => {
                let matches = s == expect;
                if succeeded.is_some_and(|ok| ok != matches) {
                    return None;
                }
                Some(if matches { Some(value) } else { s })
            }
        }
    }
}

const NIL: usize = usize::MAX;

struct Search {
    steps: Vec<Step>,
    /// Linked list of events in time order; node 0 is the head. A call node's `partner` is its return node.
    next: Vec<usize>,
    prev: Vec<usize>,
    op_of: Vec<usize>,
    is_call: Vec<bool>,
    partner: Vec<usize>,
}

impl Search {
    fn new<'a>(ops: &[&'a Op]) -> Search {
        // Written values get ids, so that a read can only name a value some op wrote.
        let mut values: HashMap<&'a str, u32> = HashMap::new();
        for op in ops {
            if let Call::Put { value } | Call::CompareAndSwap { value, .. } = &op.call {
                let n = values.len() as u32;
                values.entry(value.as_str()).or_insert(n);
            }
        }
        let lookup =
            |v: &Option<String>| -> State { v.as_ref().map(|v| values.get(v.as_str()).copied().unwrap_or(UNWRITTEN)) };
        let steps: Vec<Step> = ops
            .iter()
            .map(|op| {
                let ret = match &op.outcome {
                    Outcome::Ok(r) => Some(r),
                    _ => None,
                };
                match &op.call {
                    Call::Put { value } => Step::Put(values[value.as_str()]),
                    Call::Get { .. } => match ret {
                        Some(Return::Get { value, .. }) => Step::Get { saw: lookup(value), known: true },
                        _ => Step::Get { saw: None, known: false },
                    },
                    Call::Delete => Step::Delete {
                        deleted: match ret {
                            Some(Return::Delete { deleted, .. }) => Some(*deleted),
                            _ => None,
                        },
                    },
                    Call::CompareAndSwap { expect, value } => Step::Cas {
                        expect: lookup(expect),
                        value: values[value.as_str()],
                        succeeded: match ret {
                            Some(Return::CompareAndSwap { succeeded, .. }) => Some(*succeeded),
                            _ => None,
                        },
                    },
                }
            })
            .collect();

        // Events: (time, return-after-call at equal times, op, is_call). An unknown op returns "never".
        let mut events: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, 0, i, true));
            let ret = if matches!(op.outcome, Outcome::Ok(_)) { op.complete } else { u64::MAX };
            events.push((ret, 1, i, false));
        }
        events.sort();
        let n = events.len() + 1;
        let mut s = Search {
            steps,
            next: vec![NIL; n],
            prev: vec![NIL; n],
            op_of: vec![NIL; n],
            is_call: vec![false; n],
            partner: vec![NIL; n],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (k, &(_, _, op, is_call)) in events.iter().enumerate() {
            let node = k + 1;
            s.prev[node] = k;
            s.next[k] = node;
            s.op_of[node] = op;
            s.is_call[node] = is_call;
            if is_call {
                call_node[op] = node;
            } else {
                s.partner[call_node[op]] = node;
            }
        }
        s
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn run(mut self, budget: u64) -> Option<bool> {
        let ops = self.steps.len();
        let mut linearized = vec![0u64; ops.div_ceil(64)];
        let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state: State = None;
        let mut entry = self.next[0];
        let mut spent = 0u64;
        while self.next[0] != NIL {
            spent += 1;
            if spent > budget {
                return None;
            }
            if self.is_call[entry] {
                let op = self.op_of[entry];
                if let Some(after) = self.steps[op].apply(state) {
                    let mut with = linearized.clone();
                    with[op / 64] |= 1 << (op % 64);
                    if seen.insert((with.clone(), after)) {
                        stack.push((entry, state));
                        state = after;
                        linearized = with;
                        let ret = self.partner[entry];
                        self.unlink(entry);
                        self.unlink(ret);
                        entry = self.next[0];
                        continue;
                    }
                }
                entry = self.next[entry];
            } else {
                // A return reached: the op it ends could not be linearized before it. Undo the last choice.
                let Some((call, before)) = stack.pop() else { return Some(false) };
                let op = self.op_of[call];
                linearized[op / 64] &= !(1 << (op % 64));
                state = before;
                let ret = self.partner[call];
                self.relink(ret);
                self.relink(call);
                entry = self.next[call];
            }
        }
        Some(true)
    }
}

#[cfg(test)]
#[path = "linearizability_test.rs"]
mod tests;
