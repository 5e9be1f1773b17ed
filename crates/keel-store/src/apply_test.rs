//! Unit tests of the apply rules over an in-memory view (no IO).

use std::collections::BTreeMap;
use std::convert::Infallible;

use keel_proto::etcdserverpb::{compare, request_op, Compare, RangeRequest, RequestOp};
use keel_proto::raftpb::write_request::Request as W;
use keel_proto::raftpb::write_response::Response as R;

use super::*;
use crate::keys::prefix_end;

/// The smallest complete store: live values plus full history, changed only through [`Change`]s.
#[derive(Default)]
struct MemKv {
    live: BTreeMap<Vec<u8>, KeyValue>,
    history: BTreeMap<(Vec<u8>, Revision), Option<KeyValue>>,
    revision: i64,
    compacted: i64,
    leases: BTreeMap<i64, i64>,
    lease_keys: std::collections::BTreeSet<(i64, Vec<u8>)>,
}

impl KvView for MemKv {
    type Error = Infallible;
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Infallible> {
        Ok(self.live.get(key).cloned())
    }
    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, Infallible> {
        Ok(self.live.values().filter(|kv| range.contains(&kv.key)).cloned().collect())
    }
    fn scan_at(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>, Infallible> {
        let mut out: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
        for ((k, r), v) in &self.history {
            if range.contains(k) && r.main <= rev {
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(out.into_values().flatten().collect())
    }
    fn lease(&self, id: i64) -> Result<Option<i64>, Infallible> {
        Ok(self.leases.get(&id).copied())
    }
    fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, Infallible> {
        Ok(self.lease_keys.iter().filter(|(l, _)| *l == id).map(|(_, k)| k.clone()).collect())
    }
}

impl MemKv {
    fn new() -> Self {
        MemKv { revision: INITIAL_REVISION, ..Default::default() }
    }

    fn apply(&mut self, req: W) -> (WriteResponse, Vec<Event>) {
        let (resp, changes, events, revision, compacted) = {
            let mut a = Applier::new(&*self, self.revision, self.compacted);
            let resp = a.apply(&WriteRequest { request: Some(req), ..Default::default() }).unwrap();
            (resp, a.changes, a.events, a.revision, a.compacted)
        };
        for c in changes {
            match c {
                Change::Put { kv, sub } => {
                    self.history.insert((kv.key.clone(), Revision::new(kv.mod_revision, sub)), Some(kv.clone()));
                    self.live.insert(kv.key.clone(), kv);
                }
                Change::Delete { key, rev } => {
                    self.history.insert((key.clone(), rev), None);
                    self.live.remove(&key);
                }
                Change::LeaseGrant { id, ttl } => {
                    self.leases.insert(id, ttl);
                }
                Change::LeaseRevoke { id } => {
                    self.leases.remove(&id);
                    self.lease_keys.retain(|(l, _)| *l != id);
                }
                Change::Attach { lease, key } => {
                    self.lease_keys.insert((lease, key));
                }
                Change::Detach { lease, key } => {
                    self.lease_keys.remove(&(lease, key));
                }
                Change::Compact(_) | Change::PublishMember(_) | Change::Alarm { .. } => {}
            }
        }
        self.revision = revision;
        self.compacted = compacted;
        (resp, events)
    }
}

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest { key: k.into(), value: v.into(), ..Default::default() }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(put(k, v))) }
}

fn cmp_value(k: &str, result: compare::CompareResult, v: &str) -> Compare {
    Compare {
        key: k.into(),
        result: result as i32,
        target: compare::CompareTarget::Value as i32,
        target_union: Some(compare::TargetUnion::Value(v.into())),
        range_end: vec![],
    }
}

#[test]
fn puts_count_revisions_and_versions() {
    let mut s = MemKv::new();
    let (r, ev) = s.apply(W::Put(put("a", "1")));
    assert_eq!(r.revision, 2);
    assert_eq!(ev.len(), 1);
    s.apply(W::Put(put("a", "2")));
    let (r, _) = s.apply(W::Put(PutRequest { prev_kv: true, ..put("a", "3") }));
    let kv = s.live[&b"a".to_vec()].clone();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 3));
    let Some(R::Put(p)) = r.response else { panic!() };
    assert_eq!(p.prev_kv.unwrap().value, b"2");
    assert_eq!(p.header.unwrap().revision, 4);
}

#[test]
fn delete_then_recreate_starts_a_new_generation() {
    let mut s = MemKv::new();
    s.apply(W::Put(put("a", "1")));
    let (r, ev) = s.apply(W::DeleteRange(DeleteRangeRequest { key: "a".into(), prev_kv: true, ..Default::default() }));
    let Some(R::DeleteRange(d)) = r.response else { panic!() };
    assert_eq!((d.deleted, d.prev_kvs.len(), r.revision), (1, 1, 3));
    assert_eq!(ev[0].r#type, EventType::Delete as i32);
    assert_eq!(ev[0].kv.as_ref().unwrap().mod_revision, 3);
    s.apply(W::Put(put("a", "2")));
    let kv = &s.live[&b"a".to_vec()];
    assert_eq!((kv.create_revision, kv.version), (4, 1));
}

#[test]
fn deleting_nothing_keeps_the_revision() {
    let mut s = MemKv::new();
    s.apply(W::Put(put("a", "1")));
    let (r, ev) = s.apply(W::DeleteRange(DeleteRangeRequest { key: "zz".into(), ..Default::default() }));
    assert_eq!(r.revision, 2);
    assert!(ev.is_empty());
}

#[test]
fn prefix_delete_is_one_revision_with_sub_revisions() {
    let mut s = MemKv::new();
    for k in ["p/a", "p/b", "q"] {
        s.apply(W::Put(put(k, "x")));
    }
    let (r, ev) = s.apply(W::DeleteRange(DeleteRangeRequest {
        key: "p/".into(),
        range_end: prefix_end(b"p/"),
        ..Default::default()
    }));
    assert_eq!(r.revision, 5);
    assert_eq!(ev.len(), 2);
    assert!(s.live.contains_key(b"q".as_slice()));
    assert!(s.history.contains_key(&(b"p/b".to_vec(), Revision::new(5, 1))));
}

#[test]
fn txn_compares_and_runs_one_branch_atomically() {
    let mut s = MemKv::new();
    s.apply(W::Put(put("k", "v1")));
    let txn = TxnRequest {
        compare: vec![cmp_value("k", compare::CompareResult::Equal, "v1")],
        success: vec![op_put("k", "v2"), op_put("other", "x")],
        failure: vec![op_put("failed", "1")],
    };
    let (r, ev) = s.apply(W::Txn(txn.clone()));
    let Some(R::Txn(t)) = r.response else { panic!() };
    assert!(t.succeeded);
    assert_eq!(t.responses.len(), 2);
    assert_eq!(r.revision, 3);
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == 3));
    // The same txn again: the compare now fails.
    let (r, _) = s.apply(W::Txn(txn));
    let Some(R::Txn(t)) = r.response else { panic!() };
    assert!(!t.succeeded);
    assert_eq!(s.live[&b"failed".to_vec()].value, b"1");
}

#[test]
fn compare_on_missing_key() {
    let mut s = MemKv::new();
    // Version of a missing key is 0 (the usual "create if absent").
    let create = TxnRequest {
        compare: vec![Compare {
            key: "new".into(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            target_union: Some(compare::TargetUnion::Version(0)),
            range_end: vec![],
        }],
        success: vec![op_put("new", "1")],
        failure: vec![],
    };
    let (r, _) = s.apply(W::Txn(create.clone()));
    assert!(matches!(r.response, Some(R::Txn(ref t)) if t.succeeded));
    let (r, _) = s.apply(W::Txn(create));
    assert!(matches!(r.response, Some(R::Txn(ref t)) if !t.succeeded));
    // A value compare on a missing key is false, whatever the operator.
    let neq = TxnRequest {
        compare: vec![cmp_value("missing", compare::CompareResult::NotEqual, "x")],
        success: vec![op_put("y", "1")],
        failure: vec![],
    };
    let (r, _) = s.apply(W::Txn(neq));
    assert!(matches!(r.response, Some(R::Txn(ref t)) if !t.succeeded));
}

#[test]
fn txn_reads_see_its_own_writes_and_nested_txns_run() {
    let mut s = MemKv::new();
    let nested = TxnRequest { compare: vec![], success: vec![op_put("n", "1")], failure: vec![] };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: "a".into(),
                    ..Default::default()
                })),
            },
            RequestOp { request: Some(request_op::Request::RequestTxn(nested)) },
        ],
        failure: vec![],
    };
    let (r, _) = s.apply(W::Txn(txn));
    let Some(R::Txn(t)) = r.response else { panic!() };
    let Some(response_op::Response::ResponseRange(rr)) = &t.responses[1].response else { panic!() };
    assert_eq!(rr.kvs[0].value, b"1");
    assert!(s.live.contains_key(b"n".as_slice()));
    assert_eq!(r.revision, 2);
}

#[test]
fn refused_requests_change_nothing() {
    let mut s = MemKv::new();
    let (r, ev) = s.apply(W::Put(PutRequest { ignore_value: true, ..put("a", "") }));
    assert!(matches!(r.response, Some(R::Error(ref e)) if e.code == Code::KeyNotFound as i32));
    assert!(ev.is_empty());
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("b", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest { ignore_value: true, ..put("zz", "") })),
            },
        ],
        failure: vec![],
    };
    let (r, _) = s.apply(W::Txn(txn));
    assert!(matches!(r.response, Some(R::Error(_))));
    assert!(s.live.is_empty());
    assert_eq!(s.revision, INITIAL_REVISION);
}

#[test]
fn historical_reads_and_compaction_bounds() {
    let mut s = MemKv::new();
    s.apply(W::Put(put("a", "1"))); // 2
    s.apply(W::Put(put("a", "2"))); // 3
    s.apply(W::DeleteRange(DeleteRangeRequest { key: "a".into(), ..Default::default() })); // 4
    let at = |s: &MemKv, rev| s.scan_at(&KeyRange::new(b"a", b""), rev).unwrap();
    assert_eq!(at(&s, 2)[0].value, b"1");
    assert_eq!(at(&s, 3)[0].value, b"2");
    assert!(at(&s, 4).is_empty());
    let (r, _) = s.apply(W::Compaction(CompactionRequest { revision: 9, physical: false }));
    assert!(matches!(r.response, Some(R::Error(ref e)) if e.code == Code::FutureRevision as i32));
    let (r, _) = s.apply(W::Compaction(CompactionRequest { revision: 3, physical: false }));
    assert!(matches!(r.response, Some(R::Compaction(_))));
    let (r, _) = s.apply(W::Compaction(CompactionRequest { revision: 3, physical: false }));
    assert!(matches!(r.response, Some(R::Error(ref e)) if e.code == Code::Compacted as i32));
    assert!(check_read_revision(2, 4, 3).is_err());
    assert!(check_read_revision(3, 4, 3).is_ok());
    assert!(check_read_revision(5, 4, 3).is_err());
}

#[test]
fn range_options() {
    let kvs: Vec<KeyValue> = (0..5)
        .map(|i| KeyValue {
            key: format!("k{i}").into(),
            value: format!("{}", 4 - i).into(),
            mod_revision: 10 - i,
            ..Default::default()
        })
        .collect();
    let r = finish_range(kvs.clone(), &RangeRequest { limit: 2, ..Default::default() });
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 5, true));
    let r = finish_range(kvs.clone(), &RangeRequest { count_only: true, ..Default::default() });
    assert_eq!((r.kvs.len(), r.count), (0, 5));
    let r = finish_range(kvs.clone(), &RangeRequest { keys_only: true, ..Default::default() });
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let r = finish_range(kvs.clone(), &RangeRequest { sort_order: 2, sort_target: 0, ..Default::default() });
    assert_eq!(r.kvs[0].key, b"k4");
    let r = finish_range(kvs.clone(), &RangeRequest { sort_target: 4, ..Default::default() });
    assert_eq!(r.kvs[0].value, b"0");
    let r = finish_range(kvs, &RangeRequest { min_mod_revision: 8, ..Default::default() });
    assert_eq!((r.kvs.len(), r.count), (3, 5));
}

#[test]
fn txn_validation() {
    let dup = TxnRequest { compare: vec![], success: vec![op_put("a", "1"), op_put("a", "2")], failure: vec![] };
    assert_eq!(validate_txn(&dup, MAX_TXN_OPS).unwrap_err().code, Code::DuplicateKey as i32);
    let del_put = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("p/a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "p/".into(),
                    range_end: prefix_end(b"p/"),
                    prev_kv: false,
                })),
            },
        ],
        failure: vec![],
    };
    assert!(validate_txn(&del_put, MAX_TXN_OPS).is_err());
    let many = TxnRequest {
        compare: vec![],
        success: (0..129).map(|i| op_put(&format!("k{i}"), "v")).collect(),
        failure: vec![],
    };
    assert!(validate_txn(&many, MAX_TXN_OPS).is_err());
    let fine = TxnRequest { compare: vec![], success: vec![op_put("a", "1")], failure: vec![op_put("a", "2")] };
    assert!(validate_txn(&fine, MAX_TXN_OPS).is_ok());
}

fn grant(id: i64, ttl: i64) -> W {
    W::LeaseGrant(keel_proto::etcdserverpb::LeaseGrantRequest { ttl, id })
}

fn revoke(id: i64) -> W {
    W::LeaseRevoke(keel_proto::etcdserverpb::LeaseRevokeRequest { id })
}

#[test]
fn leases_attach_keys_and_revoke_deletes_them_in_one_revision() {
    let mut s = MemKv::new();
    let (r, _) = s.apply(grant(7, 10));
    assert!(matches!(r.response, Some(R::LeaseGrant(ref g)) if g.id == 7 && g.ttl == 10));
    assert_eq!(r.revision, INITIAL_REVISION, "a grant changes no key");
    let (r, _) = s.apply(grant(7, 10));
    assert!(matches!(r.response, Some(R::Error(ref e)) if e.code == Code::LeaseExists as i32));
    // Attach two keys; a third key is on no lease.
    s.apply(W::Put(PutRequest { lease: 7, ..put("a", "1") }));
    s.apply(W::Put(PutRequest { lease: 7, ..put("b", "1") }));
    s.apply(W::Put(put("c", "1")));
    // Re-putting "b" without a lease detaches it.
    s.apply(W::Put(put("b", "2")));
    assert_eq!(s.lease_keys(7).unwrap(), vec![b"a".to_vec()]);
    // Putting on a missing lease is refused.
    let (r, _) = s.apply(W::Put(PutRequest { lease: 8, ..put("d", "1") }));
    assert!(matches!(r.response, Some(R::Error(ref e)) if e.code == Code::LeaseNotFound as i32));
    // ignore_lease keeps the key's lease.
    s.apply(W::Put(PutRequest { ignore_lease: true, ..put("a", "2") }));
    assert_eq!(s.live[&b"a".to_vec()].lease, 7);
    let before = s.revision;
    let (r, ev) = s.apply(revoke(7));
    assert!(matches!(r.response, Some(R::LeaseRevoke(_))));
    assert_eq!(r.revision, before + 1);
    assert_eq!(ev.len(), 1);
    assert!(!s.live.contains_key(b"a".as_slice()));
    assert!(s.live.contains_key(b"b".as_slice()) && s.live.contains_key(b"c".as_slice()));
    assert!(s.leases.is_empty() && s.lease_keys.is_empty());
    let (r, _) = s.apply(revoke(7));
    assert!(matches!(r.response, Some(R::Error(ref e)) if e.code == Code::LeaseNotFound as i32));
}

#[test]
fn a_lease_with_no_keys_revokes_without_a_revision() {
    let mut s = MemKv::new();
    s.apply(grant(1, 5));
    let (r, ev) = s.apply(revoke(1));
    assert!(matches!(r.response, Some(R::LeaseRevoke(_))));
    assert_eq!((r.revision, ev.len()), (INITIAL_REVISION, 0));
}

#[test]
fn deleting_a_key_detaches_it() {
    let mut s = MemKv::new();
    s.apply(grant(3, 5));
    s.apply(W::Put(PutRequest { lease: 3, ..put("k", "v") }));
    s.apply(W::DeleteRange(DeleteRangeRequest { key: "k".into(), ..Default::default() }));
    assert!(s.lease_keys(3).unwrap().is_empty());
}

#[test]
fn a_txn_reading_history_inside_the_batch_sees_the_batch_s_own_revisions() {
    let view = MemKv::new();
    let mut a = Applier::new(&view, INITIAL_REVISION, 0);
    let req = |r| WriteRequest { request: Some(r), ..Default::default() };
    a.apply(&req(W::Put(put("k", "1")))).unwrap(); // revision 2, only in the applier
    a.apply(&req(W::Put(put("k", "2")))).unwrap(); // revision 3
    a.apply(&req(W::DeleteRange(DeleteRangeRequest { key: "gone".into(), ..Default::default() }))).unwrap();
    let read_at = |rev| TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: "k".into(),
                revision: rev,
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    for (rev, want) in [(2, Some(&b"1"[..])), (1, None)] {
        let r = a.apply(&req(W::Txn(read_at(rev)))).unwrap();
        let Some(R::Txn(t)) = r.response else { panic!() };
        let Some(response_op::Response::ResponseRange(rr)) = &t.responses[0].response else { panic!() };
        assert_eq!(rr.kvs.first().map(|kv| kv.value.as_slice()), want, "k at revision {rev}");
    }
}

#[test]
fn a_write_fenced_to_another_term_changes_nothing() {
    let s = MemKv::new();
    let mut a = Applier::new(&s, s.revision, s.compacted);
    let req = |fence| WriteRequest { request: Some(W::Put(put("a", "1"))), fence_term: fence, ..Default::default() };
    let r = a.apply_in_term(&req(3), 4).unwrap();
    let Some(R::Error(e)) = r.response else { panic!("{r:?}") };
    assert_eq!(e.code, Code::Fenced as i32);
    assert!(a.changes.is_empty());
    let r = a.apply_in_term(&req(4), 4).unwrap();
    assert!(matches!(r.response, Some(R::Put(_))), "{r:?}");
    let r = a.apply_in_term(&req(0), 9).unwrap();
    assert!(matches!(r.response, Some(R::Put(_))), "unfenced writes apply in any term: {r:?}");
}
