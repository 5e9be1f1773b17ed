//! openraft's storage test suite, run on keel's RocksDB log store and MVCC state machine.

use std::sync::Arc;

use keel_store::log_store::{LogDb, LogStore};
use keel_store::state_machine::{SharedState, StateMachine};
use keel_store::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(LogDb::open(&dir.path().join("raft-log")).expect("open log"));
        let shared = SharedState::open(dir.path(), true).expect("open state");
        let sm = StateMachine::new(shared).expect("state machine");
        Ok((dir, LogStore::new(log), sm))
    }
}

#[test]
fn rocksdb_log_store_and_state_machine_pass_openraft_suite() {
    Suite::test_all(RocksBuilder).unwrap();
}
