//! The RocksDB state machine applies batches exactly as one entry at a time would.

use keel_proto::etcdserverpb::{request_op, response_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use keel_proto::raftpb::{write_request, write_response, Proposal, WriteRequest};
use keel_store::state_machine::{SharedState, StateMachine};
use keel_store::types::{Command, Entry, LogId};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(index: u64, req: write_request::Request) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command(Proposal {
            requests: vec![WriteRequest { request: Some(req), ..Default::default() }],
            cluster_id: 0,
        })),
    }
}

fn put(k: &str, v: &str) -> write_request::Request {
    write_request::Request::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() })
}

#[tokio::test]
async fn a_txn_reading_history_sees_writes_earlier_in_its_own_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::new(SharedState::open(dir.path(), true).unwrap()).unwrap();
    let read_rev2 = write_request::Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: "k".into(),
                revision: 2,
                ..Default::default()
            })),
        }],
        failure: vec![],
    });
    // One batch: k=1 at revision 2, k=2 at revision 3, then a txn reading k at revision 2.
    let results = sm.apply(vec![entry(1, put("k", "1")), entry(2, put("k", "2")), entry(3, read_rev2)]).await.unwrap();
    let Some(write_response::Response::Txn(t)) = &results[2].0.responses[0].response else {
        panic!("{:?}", results[2])
    };
    let Some(response_op::Response::ResponseRange(r)) = &t.responses[0].response else { panic!() };
    assert_eq!(r.kvs[0].value, b"1", "the txn must read k as of revision 2");
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 3);
}

#[tokio::test]
async fn physical_compaction_removes_history_but_keeps_what_reads_need() {
    use keel_proto::etcdserverpb::DeleteRangeRequest;
    use keel_store::apply::KvView;
    use keel_store::keys::KeyRange;
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedState::open(dir.path(), true).unwrap();
    let mut sm = StateMachine::new(shared.clone()).unwrap();
    // k: versions at revisions 2..=11; gone: put at 12, deleted at 13; stays: put at 14.
    let mut entries: Vec<Entry> = (0..10).map(|i| entry(i + 1, put("k", &i.to_string()))).collect();
    entries.push(entry(11, put("gone", "x")));
    entries.push(entry(
        12,
        write_request::Request::DeleteRange(DeleteRangeRequest { key: "gone".into(), ..Default::default() }),
    ));
    entries.push(entry(13, put("stays", "y")));
    sm.apply(entries).await.unwrap();
    let state = shared.current();
    let all = KeyRange::new(&[0], &[0]);
    assert_eq!(state.reader().events(1, 100, &all, false).unwrap().len(), 13);
    let removed = state.compact_history(8).unwrap();
    let events = state.reader().events(1, 100, &all, false).unwrap();
    let revs: Vec<i64> = events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    // Kept: k's newest version at or before 8 (revision 8) and everything after; "gone" is deleted after 8,
    // so its put at 12 and tombstone at 13 stay too.
    assert_eq!(revs, vec![8, 9, 10, 11, 12, 13, 14]);
    assert_eq!(removed, 6);
    let reader = state.reader();
    assert_eq!(reader.scan_at(&KeyRange::new(b"k", b""), 8).unwrap()[0].value, b"6");
    assert_eq!(reader.scan_at(&KeyRange::new(b"k", b""), 10).unwrap()[0].value, b"8");
    assert_eq!(reader.scan(&all).unwrap().len(), 2);
    // Compacting past a deletion drops the dead key's whole history.
    state.compact_history(14).unwrap();
    let keys: Vec<Vec<u8>> =
        state.reader().events(1, 100, &all, false).unwrap().into_iter().map(|e| e.kv.unwrap().key).collect();
    assert_eq!(keys, vec![b"k".to_vec(), b"stays".to_vec()]);
}

#[tokio::test]
async fn a_write_fenced_to_another_term_is_refused_and_changes_nothing() {
    use keel_proto::raftpb::apply_error::Code;
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::new(SharedState::open(dir.path(), true).unwrap()).unwrap();
    let fenced = |index, term, fence, value: &str| Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Command(Proposal {
            requests: vec![WriteRequest { request: Some(put("k", value)), fence_term: fence, ..Default::default() }],
            cluster_id: 0,
        })),
    };
    // Decided in term 3, in an entry of term 4 (a deposed leader's decision, forwarded): refused.
    let results = sm.apply(vec![fenced(1, 4, 3, "stale"), fenced(2, 4, 4, "fresh")]).await.unwrap();
    let Some(write_response::Response::Error(e)) = &results[0].0.responses[0].response else {
        panic!("{:?}", results[0])
    };
    assert_eq!(e.code, Code::Fenced as i32);
    assert_eq!(results[0].0.responses[0].revision, 1, "nothing was written");
    let Some(write_response::Response::Put(_)) = &results[1].0.responses[0].response else {
        panic!("{:?}", results[1])
    };
    assert_eq!(results[1].0.responses[0].revision, 2);
}
