//! The RocksDB state machine applies batches exactly as one entry at a time would.

use keel_proto::etcdserverpb::{request_op, response_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use keel_proto::raftpb::{write_request, write_response, WriteRequest};
use keel_store::state_machine::{SharedState, StateMachine};
use keel_store::types::{Command, Entry, LogId};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(index: u64, req: write_request::Request) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command(WriteRequest { request: Some(req), cluster_id: 0 })),
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
    let Some(write_response::Response::Txn(t)) = &results[2].0.response else { panic!("{:?}", results[2]) };
    let Some(response_op::Response::ResponseRange(r)) = &t.responses[0].response else { panic!() };
    assert_eq!(r.kvs[0].value, b"1", "the txn must read k as of revision 2");
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 3);
}
