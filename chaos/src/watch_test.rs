use super::*;
use crate::history::{Call, Op, Outcome, Return};
use std::collections::HashSet;

fn put_op(key: &str, v: &str, rev: i64) -> Op {
    Op {
        client: 9,
        key: key.into(),
        call: Call::Put { value: v.into() },
        invoke: 0,
        complete: 1,
        outcome: Outcome::Ok(Return::Put { revision: rev }),
    }
}
fn ev(key: &str, v: Option<&str>, rev: i64, prev: Option<&str>) -> Event {
    Event { key: key.into(), value: v.map(str::to_string), mod_revision: rev, prev_value: prev.map(str::to_string) }
}
fn resp(revision: i64, events: Vec<Event>) -> Response {
    Response { at: 0, revision, events }
}
fn stream(client: u32, start: i64, prev_kv: bool, responses: Vec<Response>) -> Stream {
    Stream { client, prefix: String::new(), start_revision: start, prev_kv, responses }
}

/// Writes a=1 (rev 2), b=1 (rev 3), a=2 (rev 4).
fn history() -> Vec<Op> {
    vec![put_op("a", "a1", 2), put_op("b", "b1", 3), put_op("a", "a2", 4)]
}
fn full(client: u32) -> Stream {
    stream(
        client,
        1,
        true,
        vec![
            resp(2, vec![ev("a", Some("a1"), 2, None)]),
            resp(4, vec![ev("b", Some("b1"), 3, None), ev("a", Some("a2"), 4, Some("a1"))]),
        ],
    )
}

fn none() -> HashSet<String> {
    HashSet::new()
}

fn guarantees(v: &[WatchViolation]) -> Vec<&'static str> {
    v.iter().map(|v| v.guarantee).collect()
}

#[test]
fn correct_streams_pass() {
    let resumed = stream(2, 3, false, vec![resp(4, vec![ev("b", Some("b1"), 3, None), ev("a", Some("a2"), 4, None)])]);
    assert_eq!(check(&[full(1), resumed], &history(), &none()), vec![]);
}

#[test]
fn out_of_order_events_are_caught() {
    let s = stream(
        1,
        1,
        false,
        vec![resp(4, vec![ev("a", Some("a2"), 4, None)]), resp(4, vec![ev("b", Some("b1"), 3, None)])],
    );
    assert!(guarantees(&check(&[full(0), s], &history(), &none())).contains(&"ordered"));
}

#[test]
fn a_duplicate_event_is_caught() {
    let s = stream(1, 1, false, vec![resp(2, vec![ev("a", Some("a1"), 2, None), ev("a", Some("a1"), 2, None)])]);
    assert!(guarantees(&check(&[s], &history(), &none())).contains(&"unique"));
}

#[test]
fn a_revision_split_across_responses_is_caught() {
    let h = vec![put_op("a", "a1", 2), put_op("b", "b1", 2)];
    let s = stream(
        1,
        1,
        false,
        vec![resp(2, vec![ev("a", Some("a1"), 2, None)]), resp(2, vec![ev("b", Some("b1"), 2, None)])],
    );
    // (Two changes at one revision is a txn; the checker of revisions flags that separately.)
    assert!(guarantees(&check(&[s], &h, &none())).contains(&"atomic"));
}

#[test]
fn a_gap_is_caught() {
    let gap = stream(
        2,
        1,
        false,
        vec![resp(2, vec![ev("a", Some("a1"), 2, None)]), resp(4, vec![ev("a", Some("a2"), 4, None)])],
    );
    let v = check(&[full(1), gap], &history(), &none());
    assert!(v.iter().any(|v| v.guarantee == "reliable" && v.client == 2), "{v:?}");
}

#[test]
fn an_acknowledged_change_no_watcher_saw_is_caught() {
    let mut h = history();
    h.push(put_op("c", "c1", 3)); // acknowledged at revision 3, yet no stream has it
    let v = check(&[full(1)], &h, &none());
    assert!(v.iter().any(|v| v.guarantee == "reliable" && v.detail.contains("c at revision 3")), "{v:?}");
}

#[test]
fn a_resumed_watch_that_skips_its_start_is_caught() {
    let late = stream(2, 3, false, vec![resp(4, vec![ev("a", Some("a2"), 4, None)])]);
    let v = check(&[full(1), late], &history(), &none());
    assert!(v.iter().any(|v| v.guarantee == "resumable" && v.client == 2), "{v:?}");
}

#[test]
fn a_wrong_prev_value_is_caught() {
    let mut s = full(1);
    s.responses[1].events[1].prev_value = Some("zz".into());
    assert!(guarantees(&check(&[s], &history(), &none())).contains(&"prev_kv"));
}

#[test]
fn an_event_nobody_wrote_or_at_the_wrong_revision_is_caught() {
    let mut s = full(1);
    s.responses[0].events[0].value = Some("ghost".into());
    assert!(guarantees(&check(&[s], &history(), &none())).contains(&"consistent"));
    let wrong_rev = vec![put_op("a", "a1", 7), put_op("b", "b1", 3), put_op("a", "a2", 4)];
    assert!(guarantees(&check(&[full(1)], &wrong_rev, &none())).contains(&"consistent"));
}

#[test]
fn watchers_that_disagree_are_caught() {
    let mut other = full(2);
    other.responses[1].events[0].value = Some("b-other".into());
    let v = check(&[full(1), other], &history(), &none());
    assert!(v.iter().any(|v| v.guarantee == "consistent" && v.client == 2), "{v:?}");
}
