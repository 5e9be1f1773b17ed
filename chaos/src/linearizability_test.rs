use super::*;
use crate::history::{Call, Op, Outcome, Return};

fn op(client: u32, invoke: u64, complete: u64, call: Call, outcome: Outcome) -> Op {
    Op { client, key: "k".into(), call, invoke, complete, outcome }
}
fn put(c: u32, t0: u64, t1: u64, v: &str, rev: i64) -> Op {
    op(c, t0, t1, Call::Put { value: v.into() }, Outcome::Ok(Return::Put { revision: rev }))
}
fn put_unknown(c: u32, t0: u64, v: &str) -> Op {
    op(c, t0, t0 + 1, Call::Put { value: v.into() }, Outcome::Unknown)
}
fn get(c: u32, t0: u64, t1: u64, v: Option<&str>) -> Op {
    let value = v.map(str::to_string);
    op(c, t0, t1, Call::Get { serializable: false }, Outcome::Ok(Return::Get { value, mod_revision: 0, revision: 0 }))
}
fn del(c: u32, t0: u64, t1: u64, deleted: bool) -> Op {
    op(c, t0, t1, Call::Delete, Outcome::Ok(Return::Delete { deleted, revision: 0 }))
}
fn cas(c: u32, t0: u64, t1: u64, expect: Option<&str>, v: &str, ok: bool) -> Op {
    op(
        c,
        t0,
        t1,
        Call::CompareAndSwap { expect: expect.map(str::to_string), value: v.into() },
        Outcome::Ok(Return::CompareAndSwap { succeeded: ok, revision: 0 }),
    )
}

fn verdict(h: &[Op]) -> bool {
    let r = check(h, DEFAULT_BUDGET);
    assert!(r.undecided.is_empty());
    r.violations.is_empty()
}

#[test]
fn sequential_history_is_linearizable() {
    let h = [get(0, 0, 1, None), put(0, 2, 3, "a", 2), get(0, 4, 5, Some("a")), del(0, 6, 7, true), get(0, 8, 9, None)];
    assert!(verdict(&h));
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in [None, Some("a")] {
        let h = [put(0, 0, 10, "a", 2), get(1, 1, 9, seen)];
        assert!(verdict(&h), "read saw {seen:?}");
    }
}

#[test]
fn a_stale_read_is_a_violation() {
    // The put completed before the read began, yet the read returned the old value.
    let h = [put(0, 0, 10, "a", 2), put(0, 11, 20, "b", 3), get(1, 21, 30, Some("a"))];
    assert!(!verdict(&h));
}

#[test]
fn a_lost_acknowledged_write_is_a_violation() {
    let h = [put(0, 0, 10, "a", 2), get(1, 20, 30, None)];
    assert!(!verdict(&h));
}

#[test]
fn reading_a_value_nobody_wrote_is_a_violation() {
    let h = [put(0, 0, 10, "a", 2), get(1, 20, 30, Some("z"))];
    assert!(!verdict(&h));
}

#[test]
fn a_write_with_an_unknown_outcome_may_have_happened_or_not() {
    // Observed later: it happened.
    assert!(verdict(&[put_unknown(0, 0, "a"), get(1, 100, 110, Some("a"))]));
    // Never observed: it did not (or not yet).
    assert!(verdict(&[put_unknown(0, 0, "a"), get(1, 100, 110, None)]));
    // Observed, then not observed with nothing in between: a violation even though its outcome is unknown.
    assert!(!verdict(&[put_unknown(0, 0, "a"), get(1, 100, 110, Some("a")), get(1, 120, 130, None)]));
}

#[test]
fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
    let h = [get(1, 0, 10, Some("a")), put_unknown(0, 20, "a")];
    assert!(!verdict(&h));
}

#[test]
fn failed_operations_are_left_out() {
    let mut failed = put(0, 0, 10, "a", 0);
    failed.outcome = Outcome::Failed;
    assert!(verdict(&[failed, get(1, 20, 30, None)]));
}

#[test]
fn two_successful_swaps_from_the_same_value_are_a_violation() {
    let base = put(0, 0, 1, "a", 2);
    let ok = [base.clone(), cas(1, 2, 10, Some("a"), "b", true), cas(2, 2, 10, Some("a"), "c", false)];
    assert!(verdict(&ok));
    let bad = [base, cas(1, 2, 10, Some("a"), "b", true), cas(2, 2, 10, Some("a"), "c", true)];
    assert!(!verdict(&bad));
}

#[test]
fn a_swap_on_an_absent_key() {
    assert!(verdict(&[cas(0, 0, 1, None, "a", true), get(0, 2, 3, Some("a"))]));
    assert!(!verdict(&[put(0, 0, 1, "x", 2), cas(1, 2, 3, None, "a", true)]));
}

#[test]
fn a_delete_must_report_whether_the_key_existed() {
    assert!(verdict(&[del(0, 0, 1, false), put(0, 2, 3, "a", 2), del(0, 4, 5, true)]));
    assert!(!verdict(&[put(0, 0, 1, "a", 2), del(0, 2, 3, false)]));
}

#[test]
fn keys_are_checked_apart_and_a_violation_is_shrunk() {
    let mut h = Vec::new();
    // A busy, correct key "x" ...
    for i in 0..50u64 {
        let mut p = put(0, i * 10, i * 10 + 5, &format!("x{i}"), i as i64 + 2);
        p.key = "x".into();
        let mut g = get(1, i * 10 + 1, i * 10 + 9, Some(&format!("x{i}")));
        g.key = "x".into();
        h.extend([p, g]);
    }
    // ... and key "k" with concurrent noise around one stale read.
    for i in 0..20u64 {
        h.push(put(2, 1000 + i * 10, 1000 + i * 10 + 5, &format!("k{i}"), 100 + i as i64));
    }
    h.push(get(3, 1300, 1310, Some("k3")));
    let r = check(&h, DEFAULT_BUDGET);
    assert_eq!(r.keys, 2);
    assert_eq!(r.violations.len(), 1);
    let v = &r.violations[0];
    assert_eq!(v.key, "k");
    // Shrunk to the read, the value it saw, and one later acknowledged write.
    assert_eq!(v.ops.len(), 3, "{:#?}", v.ops);
    let refs: Vec<&Op> = v.ops.iter().collect();
    assert_eq!(linearizable(&refs, DEFAULT_BUDGET), Some(false));
}

#[test]
fn many_concurrent_clients_stay_within_budget() {
    // 8 clients writing and reading one key with overlapping operations: linearizable by construction
    // (each read returns the latest write that completed before the read began, and no write is concurrent
    // with that read's start).
    let mut h = Vec::new();
    for round in 0..200u64 {
        let t = round * 100;
        for c in 0..4u32 {
            h.push(put(c, t + c as u64, t + 50 + c as u64, &format!("v{round}-{c}"), 0));
        }
        for c in 4..8u32 {
            h.push(get(c, t + 60, t + 99, Some(&format!("v{round}-3"))));
        }
    }
    // Reads at t+60.. happen after all four puts completed; any order of the puts ending with c=3 works.
    assert!(verdict(&h));
}

/// Histories made by a correct register: every op takes effect at one instant inside its interval. Whatever
/// the overlap, unknown outcomes and swaps, the checker must accept them all.
#[test]
fn random_histories_of_a_correct_register_are_accepted() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..200 {
        let mut state: Option<String> = None;
        let mut h = Vec::new();
        let n = 5 + rnd(40);
        for i in 0..n {
            let at = i * 10 + 5; // the instant it takes effect
            let (invoke, complete) = (at - rnd(40).min(at), at + rnd(40));
            let value = format!("v{i}");
            let (call, ret) = match rnd(4) {
                0 => (Call::Put { value: value.clone() }, Return::Put { revision: 0 }),
                1 => (
                    Call::Get { serializable: false },
                    Return::Get { value: state.clone(), mod_revision: 0, revision: 0 },
                ),
                2 => (Call::Delete, Return::Delete { deleted: state.is_some(), revision: 0 }),
                _ => {
                    let expect = if rnd(2) == 0 { state.clone() } else { Some(format!("v{}", rnd(n))) };
                    let ok = expect == state;
                    (
                        Call::CompareAndSwap { expect, value: value.clone() },
                        Return::CompareAndSwap { succeeded: ok, revision: 0 },
                    )
                }
            };
            // Apply it, unless it is one of the unknown outcomes that never took effect.
            let unknown = rnd(6) == 0;
            let applied = !unknown || rnd(2) == 0;
            match (&call, &ret) {
                _ if !applied => {}
                (Call::Put { value }, _) => state = Some(value.clone()),
                (Call::Delete, _) => state = None,
                (Call::CompareAndSwap { value, .. }, Return::CompareAndSwap { succeeded: true, .. }) => {
                    state = Some(value.clone())
                }
                _ => {}
            }
            let outcome = if unknown { Outcome::Unknown } else { Outcome::Ok(ret) };
            h.push(op((i % 5) as u32, invoke, complete, call, outcome));
        }
        let refs: Vec<&Op> = h.iter().collect();
        assert_eq!(linearizable(&refs, DEFAULT_BUDGET), Some(true), "{h:#?}");
    }
}
