//! The Raft log on RocksDB: entries, vote, committed log id, purge point, and the member's identity.
//!
//! Appends are written without a sync and handed to a syncer thread that fsyncs the WAL and then reports them
//! durable to openraft; appends that arrive while a sync runs share the next one (group commit), and the Raft
//! core never waits on the disk. Entries are readable (for replication) as soon as they are written: Raft
//! lets a leader send entries it has not yet made durable itself.

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, RaftLogId, StorageIOError};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::{LogId, NodeId, StorageError, TypeConfig, Vote};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const META_VOTE: &[u8] = b"vote";
const META_COMMITTED: &[u8] = b"committed";
const META_PURGED: &[u8] = b"last_purged";
const META_IDENTITY: &[u8] = b"identity";

/// Log IO slower than this is logged (etcd warns about slow fdatasync the same way).
const SLOW_IO: std::time::Duration = std::time::Duration::from_millis(100);

fn warn_if_slow(started: std::time::Instant, what: &str) {
    if started.elapsed() > SLOW_IO {
        tracing::warn!(took = ?started.elapsed(), "slow raft log {what}");
    }
}

/// Who this data dir belongs to; written once when the member is first created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub member_id: NodeId,
    pub cluster_id: u64,
    /// The member joined an existing cluster (`--initial-cluster-state existing`) rather than founding it.
    #[serde(default)]
    pub joined: bool,
}

pub struct LogDb {
    db: DB,
    path: PathBuf,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogDb {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Write back in small steps, so that a WAL fsync never waits behind a large backlog of dirty pages.
        opts.set_bytes_per_sync(1 << 20);
        opts.set_wal_bytes_per_sync(512 << 10);
        opts.create_missing_column_families(true);
        let cfs = [CF_LOGS, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|e| StoreError::Db { path: path.to_owned(), source: e })?;
        Ok(LogDb { db, path: path.to_owned() })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    fn db_err(&self) -> impl Fn(rocksdb::Error) -> StoreError + '_ {
        move |e| StoreError::Db { path: self.path.clone(), source: e }
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(self.cf(CF_META), key).map_err(self.db_err())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("raft log meta {}: {e}", String::from_utf8_lossy(key)))),
        }
    }

    fn put_json<T: Serialize>(&self, key: &[u8], v: &T, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let bytes = serde_json::to_vec(v).expect("serialisable");
        self.db.put_cf_opt(self.cf(CF_META), key, bytes, &wo).map_err(self.db_err())
    }

    pub fn identity(&self) -> Result<Option<Identity>, StoreError> {
        self.get_json(META_IDENTITY)
    }

    pub fn set_identity(&self, id: &Identity) -> Result<(), StoreError> {
        self.put_json(META_IDENTITY, id, true)
    }

    /// Whether any Raft state (vote or entries) was ever written.
    pub fn has_raft_state(&self) -> Result<bool, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOGS));
        it.seek_to_first();
        Ok(it.valid() || self.get_json::<Vote>(META_VOTE)?.is_some())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOGS));
        it.seek_to_last();
        if !it.valid() {
            it.status().map_err(self.db_err())?;
            return Ok(None);
        }
        let e = decode_entry(it.value().expect("value"))?;
        Ok(Some(*e.get_log_id()))
    }

    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOGS));
        it.seek(start.to_be_bytes());
        let mut out = Vec::new();
        while it.valid() {
            let idx = u64::from_be_bytes(
                it.key().expect("key").try_into().map_err(|_| StoreError::Corrupt("log key".into()))?,
            );
            if end.is_some_and(|e| idx >= e) {
                break;
            }
            out.push(decode_entry(it.value().expect("value"))?);
            it.next();
        }
        it.status().map_err(self.db_err())?;
        Ok(out)
    }
}

fn decode_entry(v: &[u8]) -> Result<Entry<TypeConfig>, StoreError> {
    bincode::deserialize(v).map_err(|e| StoreError::Corrupt(format!("raft log entry: {e}")))
}

/// The log store handed to openraft.
pub struct LogStore {
    db: Arc<LogDb>,
    syncer: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub fn new(db: Arc<LogDb>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let sync_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                // Each turn: wait for one pending append, take all others queued, one fsync for all of them.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let started = std::time::Instant::now();
                    let res = sync_db.db.flush_wal(true);
                    crate::metrics::METRICS.observe_fsync(started.elapsed());
                    warn_if_slow(started, "fsync");
                    for cb in batch {
                        cb.log_io_completed(res.clone().map_err(|e| std::io::Error::other(e.to_string())));
                    }
                }
            })
            .expect("spawn raft log syncer");
        LogStore { db, syncer: tx }
    }

    pub fn db(&self) -> &Arc<LogDb> {
        &self.db
    }
}

fn bounds(range: impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e + 1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for Arc<LogDb> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let (start, end) = bounds(range);
        self.entries(start, end).map_err(read_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.db.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Arc<LogDb>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.db.get_json(META_PURGED).map_err(read_err)?;
        let last = self.db.last_log_id().map_err(read_err)?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.db.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        crate::blocking(|| self.db.put_json(META_VOTE, vote, true)).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db.get_json(META_VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = &committed {
            crate::metrics::METRICS.proposals_committed.set(c.index as i64);
        }
        self.db.put_json(META_COMMITTED, &committed, false).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.db.get_json::<Option<LogId>>(META_COMMITTED).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOGS);
        for e in entries {
            let bytes = bincode::serialize(&e).map_err(|e| write_err(*e))?;
            batch.put_cf(cf, e.get_log_id().index.to_be_bytes(), bytes);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        let started = std::time::Instant::now();
        self.db.db.write_opt(batch, &wo).map_err(write_err)?;
        warn_if_slow(started, "write");
        self.syncer.send(callback).map_err(|_| write_err(std::io::Error::other("log syncer stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.db.cf(CF_LOGS);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.db.db.write(batch).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db.put_json(META_PURGED, &log_id, false).map_err(write_err)?;
        let cf = self.db.cf(CF_LOGS);
        self.db.db.delete_range_cf(cf, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes()).map_err(write_err)
    }
}
