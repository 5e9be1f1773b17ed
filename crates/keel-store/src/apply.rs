//! The state machine's decisions, without IO: how a write changes the key space (etcd's MVCC rules).
//!
//! [`Applier`] reads the store through a [`KvView`] plus the changes it made so far in the same batch, and
//! records what must be written as [`Change`]s and what watchers must see as events. The RocksDB state
//! machine and the in-memory test view both feed it; nothing here touches a disk.

use std::collections::BTreeMap;

use keel_proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
use keel_proto::raftpb::{
    apply_error::Code, write_request, write_response, ApplyError, Empty, PublishMember, WriteRequest, WriteResponse,
};

use crate::keys::{KeyRange, Revision};

/// The revision of an empty store (as etcd: the first write creates revision 2).
pub const INITIAL_REVISION: i64 = 1;

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Read access to the committed key space.
pub trait KvView {
    type Error;
    /// The live value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Self::Error>;
    /// The live key-values in `range`, in key order.
    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, Self::Error>;
    /// The key-values in `range` as they were at revision `rev`, in key order.
    fn scan_at(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>, Self::Error>;
    /// The granted TTL (seconds) of lease `id`, if it exists.
    fn lease(&self, id: i64) -> Result<Option<i64>, Self::Error>;
    /// The keys attached to lease `id`, in key order.
    fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, Self::Error>;
}

/// One thing to persist, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `kv` becomes the live value of its key, written at revision (`kv.mod_revision`, `sub`).
    Put { kv: KeyValue, sub: i64 },
    /// `key` is deleted at `rev` (a tombstone in its history).
    Delete { key: Vec<u8>, rev: Revision },
    /// History before this revision may be dropped.
    Compact(i64),
    /// A member's published name and client URLs.
    PublishMember(PublishMember),
    /// A lease is created with a TTL in seconds.
    LeaseGrant { id: i64, ttl: i64 },
    /// A lease is gone (its keys were deleted by the changes before this one).
    LeaseRevoke { id: i64 },
    /// `key` is attached to lease `lease`.
    Attach { lease: i64, key: Vec<u8> },
    /// `key` no longer belongs to lease `lease`.
    Detach { lease: i64, key: Vec<u8> },
    /// An alarm (etcd's `AlarmType`) is raised (`active`) or cleared for a member.
    Alarm { member: u64, alarm: i32, active: bool },
}

/// The error a refused request gets; it changed nothing.
pub fn apply_error(code: Code, message: impl Into<String>) -> ApplyError {
    ApplyError { code: code as i32, message: message.into() }
}

/// Applies write requests one after the other on top of a view, remembering what changed.
pub struct Applier<'a, V: KvView> {
    view: &'a V,
    /// The revision the view holds (changes after it exist only in this applier).
    base_revision: i64,
    /// Live values changed by this batch (`None`: deleted).
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    /// Leases granted (`Some(ttl)`) or revoked (`None`) by this batch.
    leases: BTreeMap<i64, Option<i64>>,
    /// Keys attached to (`true`) or detached from (`false`) leases by this batch.
    attachments: BTreeMap<(i64, Vec<u8>), bool>,
    /// The store revision after the requests applied so far.
    pub revision: i64,
    /// The compacted revision.
    pub compacted: i64,
    pub changes: Vec<Change>,
    /// Events for watchers, with `prev_kv` filled, in revision order.
    pub events: Vec<Event>,
}

/// The revision counter of one write request.
struct WriteRev {
    main: i64,
    sub: i64,
}

impl<'a, V: KvView> Applier<'a, V> {
    pub fn new(view: &'a V, revision: i64, compacted: i64) -> Self {
        Applier {
            view,
            base_revision: revision,
            overlay: BTreeMap::new(),
            leases: BTreeMap::new(),
            attachments: BTreeMap::new(),
            revision,
            compacted,
            changes: Vec::new(),
            events: Vec::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, V::Error> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.view.get(key),
        }
    }

    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, V::Error> {
        if let KeyRange::Single(k) = range {
            return Ok(self.get(k)?.into_iter().collect());
        }
        let mut base = self.view.scan(range)?;
        let touched = self.overlay.iter().any(|(k, _)| range.contains(k));
        if !touched {
            return Ok(base);
        }
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = base.drain(..).map(|kv| (kv.key.clone(), kv)).collect();
        for (k, v) in self.overlay.iter().filter(|(k, _)| range.contains(k)) {
            match v {
                Some(kv) => merged.insert(k.clone(), kv.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_values().collect())
    }

    fn lease_exists(&self, id: i64) -> Result<bool, V::Error> {
        match self.leases.get(&id) {
            Some(ttl) => Ok(ttl.is_some()),
            None => Ok(self.view.lease(id)?.is_some()),
        }
    }

    fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, V::Error> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = match self.leases.get(&id) {
            // Granted in this batch: nothing is in the view.
            Some(Some(_)) => Default::default(),
            _ => self.view.lease_keys(id)?.into_iter().collect(),
        };
        for ((_, k), attached) in self.attachments.range((id, Vec::new())..).take_while(|((l, _), _)| *l == id) {
            if *attached {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Records that `key` moves from lease `from` to lease `to` (0: none).
    fn relink(&mut self, key: &[u8], from: i64, to: i64) {
        if from == to {
            return;
        }
        if from != 0 {
            self.changes.push(Change::Detach { lease: from, key: key.to_vec() });
            self.attachments.insert((from, key.to_vec()), false);
        }
        if to != 0 {
            self.changes.push(Change::Attach { lease: to, key: key.to_vec() });
            self.attachments.insert((to, key.to_vec()), true);
        }
    }

    /// The key-values in `range` as of revision `rev`: the view's history up to the revision it holds, then the
    /// changes this applier made up to `rev` (they are not in the view yet).
    fn scan_at(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>, V::Error> {
        if rev <= self.base_revision {
            return self.view.scan_at(range, rev);
        }
        let mut at: BTreeMap<Vec<u8>, KeyValue> =
            self.view.scan_at(range, self.base_revision)?.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for c in &self.changes {
            match c {
                Change::Put { kv, .. } if kv.mod_revision <= rev && range.contains(&kv.key) => {
                    at.insert(kv.key.clone(), kv.clone());
                }
                Change::Delete { key, rev: r } if r.main <= rev && range.contains(key) => {
                    at.remove(key);
                }
                _ => {}
            }
        }
        Ok(at.into_values().collect())
    }
    /// Applies one write request that arrived in a log entry of Raft term `term`: refused with `FENCED` when
    /// the request is fenced to another term (see `WriteRequest.fence_term`), else as [`Applier::apply`].
    pub fn apply_in_term(&mut self, req: &WriteRequest, term: u64) -> Result<WriteResponse, V::Error> {
        if req.fence_term != 0 && req.fence_term != term {
            let e = apply_error(
                Code::Fenced,
                format!("keel: decided by the leader of term {}, proposed in term {term}", req.fence_term),
            );
            return Ok(WriteResponse { response: Some(write_response::Response::Error(e)), revision: self.revision });
        }
        self.apply(req)
    }

    /// Applies one write request. A refused request returns a response holding an [`ApplyError`] and changes
    /// nothing.
    pub fn apply(&mut self, req: &WriteRequest) -> Result<WriteResponse, V::Error> {
        let response = match &req.request {
            None => write_response::Response::Empty(Empty {}),
            Some(write_request::Request::Put(p)) => match self.check_put(p)? {
                Err(e) => write_response::Response::Error(e),
                Ok(()) => {
                    let mut w = self.begin();
                    let resp = self.put(&mut w, p)?;
                    self.end(w);
                    write_response::Response::Put(resp)
                }
            },
            Some(write_request::Request::DeleteRange(d)) => {
                let mut w = self.begin();
                let resp = self.delete_range(&mut w, d)?;
                self.end(w);
                write_response::Response::DeleteRange(resp)
            }
            Some(write_request::Request::Txn(t)) => match self.txn(t)? {
                Ok(resp) => write_response::Response::Txn(resp),
                Err(e) => write_response::Response::Error(e),
            },
            Some(write_request::Request::Compaction(c)) => match self.compact(c) {
                Ok(resp) => write_response::Response::Compaction(resp),
                Err(e) => write_response::Response::Error(e),
            },
            Some(write_request::Request::LeaseGrant(g)) => match self.lease_grant(g)? {
                Ok(r) => write_response::Response::LeaseGrant(r),
                Err(e) => write_response::Response::Error(e),
            },
            Some(write_request::Request::LeaseRevoke(r)) => match self.lease_revoke(r)? {
                Ok(r) => write_response::Response::LeaseRevoke(r),
                Err(e) => write_response::Response::Error(e),
            },
            Some(write_request::Request::Alarm(a)) => {
                use keel_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmMember, AlarmResponse};
                let active = a.action == AlarmAction::Activate as i32;
                if active || a.action == AlarmAction::Deactivate as i32 {
                    self.changes.push(Change::Alarm { member: a.member_id, alarm: a.alarm, active });
                }
                write_response::Response::Alarm(AlarmResponse {
                    header: None,
                    alarms: vec![AlarmMember { member_id: a.member_id, alarm: a.alarm }],
                })
            }
            Some(write_request::Request::PublishMember(m)) => {
                self.changes.push(Change::PublishMember(m.clone()));
                write_response::Response::Empty(Empty {})
            }
        };
        let mut resp = WriteResponse { response: Some(response), revision: self.revision };
        fill_revision(&mut resp, self.revision);
        Ok(resp)
    }

    fn begin(&self) -> WriteRev {
        WriteRev { main: self.revision + 1, sub: 0 }
    }

    fn end(&mut self, w: WriteRev) {
        if w.sub > 0 {
            self.revision = w.main;
        }
    }

    fn check_put(&self, p: &PutRequest) -> Result<Result<(), ApplyError>, V::Error> {
        if (p.ignore_value || p.ignore_lease) && self.get(&p.key)?.is_none() {
            return Ok(Err(apply_error(Code::KeyNotFound, "etcdserver: key not found")));
        }
        if p.lease != 0 && !p.ignore_lease && !self.lease_exists(p.lease)? {
            return Ok(Err(apply_error(Code::LeaseNotFound, "etcdserver: requested lease not found")));
        }
        Ok(Ok(()))
    }

    fn put(&mut self, w: &mut WriteRev, p: &PutRequest) -> Result<PutResponse, V::Error> {
        let prev = self.get(&p.key)?;
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(w.main, |k| k.create_revision),
            mod_revision: w.main,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        self.changes.push(Change::Put { kv: kv.clone(), sub: w.sub });
        self.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv.clone()), prev_kv: prev.clone() });
        self.relink(&p.key, prev.as_ref().map_or(0, |k| k.lease), lease);
        self.overlay.insert(p.key.clone(), Some(kv));
        w.sub += 1;
        Ok(PutResponse { header: None, prev_kv: if p.prev_kv { prev } else { None } })
    }

    fn delete_range(&mut self, w: &mut WriteRev, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, V::Error> {
        let range = KeyRange::new(&d.key, &d.range_end);
        let victims = if range.is_empty() { Vec::new() } else { self.scan(&range)? };
        self.delete_keys(w, &victims);
        Ok(DeleteRangeResponse {
            header: None,
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        })
    }

    /// Deletes live key-values (each a sub-revision of `w`), detaching them from their leases.
    fn delete_keys(&mut self, w: &mut WriteRev, victims: &[KeyValue]) {
        for prev in victims {
            let rev = Revision::new(w.main, w.sub);
            self.changes.push(Change::Delete { key: prev.key.clone(), rev });
            let tomb = KeyValue { key: prev.key.clone(), mod_revision: w.main, ..Default::default() };
            self.events.push(Event { r#type: EventType::Delete as i32, kv: Some(tomb), prev_kv: Some(prev.clone()) });
            self.relink(&prev.key, prev.lease, 0);
            self.overlay.insert(prev.key.clone(), None);
            w.sub += 1;
        }
    }

    fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Result<Result<LeaseGrantResponse, ApplyError>, V::Error> {
        if g.id <= 0 {
            return Ok(Err(apply_error(Code::Invalid, "etcdserver: lease id must be positive")));
        }
        if self.lease_exists(g.id)? {
            return Ok(Err(apply_error(Code::LeaseExists, "etcdserver: lease already exists")));
        }
        self.changes.push(Change::LeaseGrant { id: g.id, ttl: g.ttl });
        self.leases.insert(g.id, Some(g.ttl));
        Ok(Ok(LeaseGrantResponse { header: None, id: g.id, ttl: g.ttl, error: String::new() }))
    }

    /// Revokes a lease: its keys are deleted in one revision, then the lease is gone.
    fn lease_revoke(&mut self, r: &LeaseRevokeRequest) -> Result<Result<LeaseRevokeResponse, ApplyError>, V::Error> {
        if !self.lease_exists(r.id)? {
            return Ok(Err(apply_error(Code::LeaseNotFound, "etcdserver: requested lease not found")));
        }
        let mut victims = Vec::new();
        for key in self.lease_keys(r.id)? {
            victims.extend(self.get(&key)?);
        }
        let mut w = self.begin();
        self.delete_keys(&mut w, &victims);
        self.end(w);
        self.changes.push(Change::LeaseRevoke { id: r.id });
        self.leases.insert(r.id, None);
        Ok(Ok(LeaseRevokeResponse { header: None }))
    }

    /// A range inside a transaction: sees the transaction's own earlier writes.
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, V::Error> {
        let range = KeyRange::new(&r.key, &r.range_end);
        let kvs = if range.is_empty() {
            Vec::new()
        } else if r.revision > 0 && r.revision < self.revision {
            self.scan_at(&range, r.revision)?
        } else {
            self.scan(&range)?
        };
        Ok(finish_range(kvs, r))
    }

    fn compare(&self, c: &Compare) -> Result<bool, V::Error> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let kvs = if range.is_empty() { Vec::new() } else { self.scan(&range)? };
        if kvs.is_empty() {
            if c.target == compare::CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    /// Decides every branch of a transaction (nested ones too) against the state before it runs, as etcd does.
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<(), V::Error> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let ops = if ok { &t.success } else { &t.failure };
        for op in ops {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.txn_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// Checks the operations a transaction will run before it changes anything.
    fn txn_check(&self, t: &TxnRequest, path: &[bool], at: &mut usize) -> Result<Result<(), ApplyError>, V::Error> {
        let ok = path[*at];
        *at += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    if let Err(e) = self.check_put(p)? {
                        return Ok(Err(e));
                    }
                }
                Some(request_op::Request::RequestRange(r)) => {
                    if let Err(e) = self.check_revision(r.revision) {
                        return Ok(Err(e));
                    }
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    if let Err(e) = self.txn_check(nested, path, at)? {
                        return Ok(Err(e));
                    }
                }
                _ => {}
            }
        }
        Ok(Ok(()))
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<Result<TxnResponse, ApplyError>, V::Error> {
        let mut path = Vec::new();
        self.txn_path(t, &mut path)?;
        if let Err(e) = self.txn_check(t, &path, &mut 0)? {
            return Ok(Err(e));
        }
        let mut w = self.begin();
        let resp = self.txn_run(&mut w, t, &path, &mut 0)?;
        self.end(w);
        Ok(Ok(resp))
    }

    fn txn_run(
        &mut self,
        w: &mut WriteRev,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse, V::Error> {
        let succeeded = path[*at];
        *at += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match &op.request {
                Some(request_op::Request::RequestRange(r)) => response_op::Response::ResponseRange(self.range(r)?),
                Some(request_op::Request::RequestPut(p)) => response_op::Response::ResponsePut(self.put(w, p)?),
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_range(w, d)?)
                }
                Some(request_op::Request::RequestTxn(n)) => {
                    response_op::Response::ResponseTxn(self.txn_run(w, n, path, at)?)
                }
                None => continue,
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }

    fn check_revision(&self, rev: i64) -> Result<(), ApplyError> {
        check_read_revision(rev, self.revision, self.compacted)
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, ApplyError> {
        if c.revision <= self.compacted {
            return Err(apply_error(Code::Compacted, ERR_COMPACTED));
        }
        if c.revision > self.revision {
            return Err(apply_error(Code::FutureRevision, ERR_FUTURE_REV));
        }
        self.compacted = c.revision;
        self.changes.push(Change::Compact(c.revision));
        Ok(CompactionResponse { header: None })
    }
}

pub const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const ERR_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";

/// Whether a read at `rev` (0: the newest) can be served with the store at `current`, compacted at `compacted`.
pub fn check_read_revision(rev: i64, current: i64, compacted: i64) -> Result<(), ApplyError> {
    if rev > 0 && rev < compacted {
        return Err(apply_error(Code::Compacted, ERR_COMPACTED));
    }
    if rev > current {
        return Err(apply_error(Code::FutureRevision, ERR_FUTURE_REV));
    }
    Ok(())
}

/// Sets the revision in every response header of a write's response (the API layer adds the rest).
fn fill_revision(resp: &mut WriteResponse, rev: i64) {
    fn header(h: &mut Option<ResponseHeader>, rev: i64) {
        h.get_or_insert_with(Default::default).revision = rev;
    }
    fn txn(t: &mut TxnResponse, rev: i64) {
        header(&mut t.header, rev);
        for r in &mut t.responses {
            match &mut r.response {
                Some(response_op::Response::ResponsePut(p)) => header(&mut p.header, rev),
                Some(response_op::Response::ResponseDeleteRange(d)) => header(&mut d.header, rev),
                Some(response_op::Response::ResponseRange(r)) => header(&mut r.header, rev),
                Some(response_op::Response::ResponseTxn(n)) => txn(n, rev),
                None => {}
            }
        }
    }
    match &mut resp.response {
        Some(write_response::Response::Put(p)) => header(&mut p.header, rev),
        Some(write_response::Response::DeleteRange(d)) => header(&mut d.header, rev),
        Some(write_response::Response::Txn(t)) => txn(t, rev),
        Some(write_response::Response::Compaction(c)) => header(&mut c.header, rev),
        Some(write_response::Response::LeaseGrant(g)) => header(&mut g.header, rev),
        Some(write_response::Response::LeaseRevoke(r)) => header(&mut r.header, rev),
        _ => {}
    }
}

/// etcd's comparison of one key-value against a `Compare`.
pub fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::TargetUnion as T;
    let ord = match &c.target_union {
        Some(T::Value(v)) => kv.value.as_slice().cmp(v.as_slice()),
        Some(T::Version(v)) => kv.version.cmp(v),
        Some(T::CreateRevision(v)) => kv.create_revision.cmp(v),
        Some(T::ModRevision(v)) => kv.mod_revision.cmp(v),
        Some(T::Lease(v)) => kv.lease.cmp(v),
        // A compare without a value compares against the target's zero value.
        None => match compare::CompareTarget::try_from(c.target) {
            Ok(compare::CompareTarget::Value) => kv.value.as_slice().cmp(&[]),
            Ok(compare::CompareTarget::Version) => kv.version.cmp(&0),
            Ok(compare::CompareTarget::Create) => kv.create_revision.cmp(&0),
            Ok(compare::CompareTarget::Mod) => kv.mod_revision.cmp(&0),
            Ok(compare::CompareTarget::Lease) => kv.lease.cmp(&0),
            Err(_) => return false,
        },
    };
    use std::cmp::Ordering::*;
    match compare::CompareResult::try_from(c.result) {
        Ok(compare::CompareResult::Equal) => ord == Equal,
        Ok(compare::CompareResult::NotEqual) => ord != Equal,
        Ok(compare::CompareResult::Greater) => ord == Greater,
        Ok(compare::CompareResult::Less) => ord == Less,
        Err(_) => false,
    }
}

/// Filters, sorts, counts and limits the key-values of a range as the request asks (etcd's semantics: `count`
/// is the number of keys in the range before filters and limit; `more` says the limit cut the result).
pub fn finish_range(mut kvs: Vec<KeyValue>, r: &RangeRequest) -> RangeResponse {
    use keel_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
    let count = kvs.len() as i64;
    if r.min_mod_revision > 0 || r.max_mod_revision > 0 || r.min_create_revision > 0 || r.max_create_revision > 0 {
        kvs.retain(|kv| {
            (r.min_mod_revision <= 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision <= 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision <= 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision <= 0 || kv.create_revision <= r.max_create_revision)
        });
    }
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    // Keys come in ascending key order already; NONE with a non-key target sorts ascending, as etcd does.
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        match target {
            SortTarget::Key => {}
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.count_only {
        kvs.clear();
    } else if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse { header: None, kvs, more, count }
}

/// Checks a transaction before it is proposed: the number of operations, and that no key is written twice
/// (etcd refuses both with InvalidArgument).
pub fn validate_txn(t: &TxnRequest, max_ops: usize) -> Result<(), ApplyError> {
    if t.success.len() > max_ops || t.failure.len() > max_ops {
        return Err(apply_error(Code::Invalid, "etcdserver: too many operations in txn request"));
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(apply_error(Code::Invalid, "etcdserver: key is not provided"));
        }
    }
    for ops in [&t.success, &t.failure] {
        let mut puts = Vec::new();
        let mut dels = Vec::new();
        collect_writes(ops, &mut puts, &mut dels, max_ops)?;
        puts.sort();
        if puts.windows(2).any(|w| w[0] == w[1]) {
            return Err(apply_error(Code::DuplicateKey, "etcdserver: duplicate key given in txn request"));
        }
        for d in &dels {
            if puts.iter().any(|p| d.contains(p)) {
                return Err(apply_error(Code::DuplicateKey, "etcdserver: duplicate key given in txn request"));
            }
        }
    }
    Ok(())
}

fn collect_writes(
    ops: &[RequestOp],
    puts: &mut Vec<Vec<u8>>,
    dels: &mut Vec<KeyRange>,
    max_ops: usize,
) -> Result<(), ApplyError> {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if p.key.is_empty() {
                    return Err(apply_error(Code::Invalid, "etcdserver: key is not provided"));
                }
                puts.push(p.key.clone());
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                if d.key.is_empty() {
                    return Err(apply_error(Code::Invalid, "etcdserver: key is not provided"));
                }
                dels.push(KeyRange::new(&d.key, &d.range_end));
            }
            Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                return Err(apply_error(Code::Invalid, "etcdserver: key is not provided"));
            }
            Some(request_op::Request::RequestTxn(n)) => {
                if n.success.len() > max_ops || n.failure.len() > max_ops {
                    return Err(apply_error(Code::Invalid, "etcdserver: too many operations in txn request"));
                }
                // Either branch of a nested transaction may run: check both against this level's writes.
                for branch in [&n.success, &n.failure] {
                    let (mut p2, mut d2) = (puts.clone(), dels.clone());
                    collect_writes(branch, &mut p2, &mut d2, max_ops)?;
                    let mut sorted = p2.clone();
                    sorted.sort();
                    if sorted.windows(2).any(|w| w[0] == w[1]) {
                        return Err(apply_error(Code::DuplicateKey, "etcdserver: duplicate key given in txn request"));
                    }
                    if d2.iter().any(|d| p2.iter().any(|p| d.contains(p))) {
                        return Err(apply_error(Code::DuplicateKey, "etcdserver: duplicate key given in txn request"));
                    }
                }
            }
            Some(request_op::Request::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "apply_test.rs"]
mod tests;
