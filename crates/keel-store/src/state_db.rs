//! The state machine's RocksDB: live key-values, their history, the event log and metadata, all in one
//! database so one WriteBatch changes them together.
//!
//! Column families:
//! - `live`: key → KeyValue (protobuf): the current value of every live key; serves reads at the newest revision.
//! - `history`: encode(key) ++ revision → 0 (put) | 1 (delete): every version of every key, oldest first.
//! - `events`: revision → Event (protobuf, without prev_kv): what happened at each revision, for watchers and
//!   historical reads.
//! - `meta`: the store revision, the compacted revision, the last applied log id and membership, published
//!   member attributes.
//! - `leases`: lease id → granted TTL (seconds); `lease_keys`: lease id ++ key → (): the keys of each lease.
//!   Lease ids are positive, stored big-endian. When a lease expires is not state: the leader decides it.

use std::path::{Path, PathBuf};

use keel_proto::mvccpb::{event::EventType, Event, KeyValue};
use keel_proto::raftpb::PublishMember;
use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch, WriteOptions, DB};

use crate::apply::{Change, KvView, INITIAL_REVISION};
use crate::error::StoreError;
use crate::keys::{encode_key, history_key, split_history_key, KeyRange, Revision};
use crate::types::{LogId, StoredMembership};

const CF_LIVE: &str = "live";
const CF_HISTORY: &str = "history";
const CF_EVENTS: &str = "events";
const CF_META: &str = "meta";
const CF_LEASES: &str = "leases";
const CF_LEASE_KEYS: &str = "lease_keys";
const CFS: [&str; 6] = [CF_LIVE, CF_HISTORY, CF_EVENTS, CF_META, CF_LEASES, CF_LEASE_KEYS];

const META_REVISION: &[u8] = b"revision";
const META_COMPACTED: &[u8] = b"compacted";
const META_COMPACTED_PHYSICAL: &[u8] = b"compacted_physical";
const META_APPLIED: &[u8] = b"applied";
const META_MEMBERSHIP: &[u8] = b"membership";
const META_MEMBER_PREFIX: &[u8] = b"member/";
const META_ALARM_PREFIX: &[u8] = b"alarm/";

const HIST_PUT: u8 = 0;
const HIST_DELETE: u8 = 1;

/// The state machine's persistent state at one moment.
#[derive(Debug, Clone, Default)]
pub struct StateMeta {
    pub revision: i64,
    pub compacted: i64,
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
}

pub struct StateDb {
    db: Option<DB>,
    path: PathBuf,
    /// Set when a newer state replaced this one: the directory is removed once the last reader is gone.
    obsolete: std::sync::atomic::AtomicBool,
}

impl Drop for StateDb {
    fn drop(&mut self) {
        drop(self.db.take());
        if self.obsolete.load(std::sync::atomic::Ordering::Acquire) {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove replaced state");
            }
        }
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o.increase_parallelism(2);
    // Write back flushed and compacted files in small steps: the Raft log's fsync on the same disk must not
    // wait behind a large backlog of dirty pages (seen: 0.5 s fsyncs under `check perf --load=l`).
    o.set_bytes_per_sync(1 << 20);
    o
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| corrupt(format!("{what}: {e}")))
}

impl StateDb {
    /// Opens (or creates, when `create` is set) the state at `path`.
    pub fn open(path: &Path, create: bool) -> Result<Self, StoreError> {
        if !create && !path.join("CURRENT").exists() {
            return Err(corrupt(format!("state database {} is missing", path.display())));
        }
        let cfs = CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, db_options()));
        let db = DB::open_cf_descriptors(&db_options(), path, cfs)
            .map_err(|e| StoreError::Db { path: path.to_owned(), source: e })?;
        Ok(StateDb { db: Some(db), path: path.to_owned(), obsolete: Default::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, std::sync::atomic::Ordering::Release);
    }

    fn db_err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Db { path: self.path.clone(), source }
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("state db is open until dropped")
    }

    /// Bytes the state takes: its files on disk plus what its memtables hold (etcd's
    /// `etcd_mvcc_db_total_size_in_bytes`).
    pub fn total_size(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for name in CFS {
            for property in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                total +=
                    self.db().property_int_value_cf(self.cf(name), property).map_err(|e| self.db_err(e))?.unwrap_or(0);
            }
        }
        Ok(total)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db().cf_handle(name).expect("column families are created at open")
    }

    /// A consistent read view at the current moment.
    pub fn reader(&self) -> StateReader<'_> {
        StateReader { state: self, snap: Some(self.db().snapshot()) }
    }

    /// A view of the latest writes without a snapshot (for the single writer, the state machine).
    pub fn writer_view(&self) -> StateReader<'_> {
        StateReader { state: self, snap: None }
    }

    /// Writes one applied batch: the changes, and the metadata that goes with them, atomically.
    pub fn commit(
        &self,
        changes: &[Change],
        revision: i64,
        compacted: i64,
        applied: Option<&LogId>,
        membership: Option<&StoredMembership>,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        let (live, hist, events, meta) = (self.cf(CF_LIVE), self.cf(CF_HISTORY), self.cf(CF_EVENTS), self.cf(CF_META));
        for c in changes {
            match c {
                Change::Put { kv, sub } => {
                    let rev = Revision::new(kv.mod_revision, *sub);
                    b.put_cf(live, &kv.key, kv.encode_to_vec());
                    b.put_cf(hist, history_key(&kv.key, rev), [HIST_PUT]);
                    let ev = Event { r#type: EventType::Put as i32, kv: Some(kv.clone()), prev_kv: None };
                    b.put_cf(events, rev.to_bytes(), ev.encode_to_vec());
                }
                Change::Delete { key, rev } => {
                    b.delete_cf(live, key);
                    b.put_cf(hist, history_key(key, *rev), [HIST_DELETE]);
                    let tomb = KeyValue { key: key.clone(), mod_revision: rev.main, ..Default::default() };
                    let ev = Event { r#type: EventType::Delete as i32, kv: Some(tomb), prev_kv: None };
                    b.put_cf(events, rev.to_bytes(), ev.encode_to_vec());
                }
                Change::Compact(_) => {}
                Change::LeaseGrant { id, ttl } => b.put_cf(self.cf(CF_LEASES), id.to_be_bytes(), ttl.to_be_bytes()),
                Change::LeaseRevoke { id } => {
                    b.delete_cf(self.cf(CF_LEASES), id.to_be_bytes());
                    b.delete_range_cf(self.cf(CF_LEASE_KEYS), id.to_be_bytes(), (id + 1).to_be_bytes());
                }
                Change::Alarm { member, alarm, active } => {
                    let mut k = META_ALARM_PREFIX.to_vec();
                    k.extend_from_slice(&member.to_be_bytes());
                    k.extend_from_slice(&alarm.to_be_bytes());
                    if *active {
                        b.put_cf(meta, k, []);
                    } else {
                        b.delete_cf(meta, k);
                    }
                }
                Change::Attach { lease, key } => b.put_cf(self.cf(CF_LEASE_KEYS), lease_key(*lease, key), []),
                Change::Detach { lease, key } => b.delete_cf(self.cf(CF_LEASE_KEYS), lease_key(*lease, key)),
                Change::PublishMember(m) => {
                    let mut k = META_MEMBER_PREFIX.to_vec();
                    k.extend_from_slice(&m.member_id.to_be_bytes());
                    b.put_cf(meta, k, m.encode_to_vec());
                }
            }
        }
        b.put_cf(meta, META_REVISION, revision.to_be_bytes());
        b.put_cf(meta, META_COMPACTED, compacted.to_be_bytes());
        if let Some(a) = applied {
            b.put_cf(meta, META_APPLIED, serde_json::to_vec(a).expect("log id serialises"));
        }
        if let Some(m) = membership {
            b.put_cf(meta, META_MEMBERSHIP, serde_json::to_vec(m).expect("membership serialises"));
        }
        self.write(b, false)
    }

    fn write(&self, b: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let started = std::time::Instant::now();
        let written = self.db().write_opt(b, &wo).map_err(|e| self.db_err(e));
        crate::metrics::METRICS.observe_backend_commit(started.elapsed());
        written
    }

    /// Makes every write so far durable (before a snapshot lets the Raft log be purged behind it).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db().flush_wal(true).map_err(|e| self.db_err(e))
    }

    /// Writes a RocksDB checkpoint of the current state to `path` (a new directory): memtables flushed, SST
    /// files hard-linked, so it costs about one flush whatever the state's size. The checkpoint opens as a
    /// [`StateDb`] of its own.
    pub fn checkpoint(&self, path: &Path) -> Result<(), StoreError> {
        rocksdb::checkpoint::Checkpoint::new(self.db())
            .and_then(|c| c.create_checkpoint(path))
            .map_err(|e| self.db_err(e))
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        dir_size(&self.path)
    }

    /// Drops history that no read may reach any more: for each key, every version older than its newest
    /// version at or before `upto`, and that version too when it is a deletion before `upto`. Resumable: it
    /// records how far it got, and [`StateDb::pending_compaction`] tells what is left after a restart.
    pub fn compact_history(&self, upto: i64) -> Result<u64, StoreError> {
        let hist = self.cf(CF_HISTORY);
        let events = self.cf(CF_EVENTS);
        let mut it = self.db().raw_iterator_cf(hist);
        it.seek_to_first();
        let mut batch = WriteBatch::default();
        let mut removed = 0u64;
        // Entries of the key being walked that are at or before `upto`, oldest first.
        let mut current: Option<Vec<u8>> = None;
        let mut group: Vec<(Vec<u8>, Revision, u8)> = Vec::new();
        let flush_group = |group: &mut Vec<(Vec<u8>, Revision, u8)>, batch: &mut WriteBatch, removed: &mut u64| {
            if let Some((_, last_rev, last_kind)) = group.last().cloned() {
                let keep_last = last_kind == HIST_PUT || last_rev.main >= upto;
                let n = if keep_last { group.len() - 1 } else { group.len() };
                for (hk, rev, _) in group.drain(..).take(n) {
                    batch.delete_cf(hist, hk);
                    batch.delete_cf(events, rev.to_bytes());
                    *removed += 1;
                }
            }
            group.clear();
        };
        while it.valid() {
            let hk = it.key().expect("valid iterator has a key").to_vec();
            let kind = it.value().and_then(|v| v.first().copied()).unwrap_or(HIST_PUT);
            let (key, rev) = split_history_key(&hk).ok_or_else(|| corrupt("history key"))?;
            if current.as_deref() != Some(key.as_slice()) {
                flush_group(&mut group, &mut batch, &mut removed);
                current = Some(key);
            }
            if rev.main <= upto {
                group.push((hk, rev, kind));
            }
            if batch.len() >= 10_000 {
                self.write(std::mem::take(&mut batch), false)?;
            }
            it.next();
        }
        it.status().map_err(|e| self.db_err(e))?;
        flush_group(&mut group, &mut batch, &mut removed);
        batch.put_cf(self.cf(CF_META), META_COMPACTED_PHYSICAL, upto.to_be_bytes());
        self.write(batch, false)?;
        Ok(removed)
    }

    /// The compaction revision whose physical removal has not finished, if any.
    pub fn pending_compaction(&self) -> Result<Option<i64>, StoreError> {
        let r = self.writer_view();
        let done = r.meta_i64(META_COMPACTED_PHYSICAL)?.unwrap_or(0);
        let wanted = r.meta_i64(META_COMPACTED)?.unwrap_or(0);
        Ok((wanted > done).then_some(wanted))
    }

    /// Streams every record of a consistent view into `out` (the snapshot format: see [`SnapshotWriter`]).
    pub fn export(&self, reader: &StateReader<'_>, out: &mut impl std::io::Write) -> Result<(), StoreError> {
        let mut w = SnapshotWriter::new(out)?;
        for (i, name) in CFS.iter().enumerate() {
            let mut it = reader.iter(name);
            it.seek_to_first();
            while it.valid() {
                w.record(i as u8, it.key().expect("key"), it.value().expect("value"))?;
                it.next();
            }
            it.status().map_err(|e| self.db_err(e))?;
        }
        w.finish()
    }

    /// Exports a consistent view into the file at `path` (created, or truncated); returns it written but not
    /// synced.
    pub fn export_file(&self, reader: &StateReader<'_>, path: &Path) -> Result<std::fs::File, StoreError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(StoreError::io(path))?;
        let mut w = std::io::BufWriter::new(f);
        self.export(reader, &mut w)?;
        w.into_inner().map_err(|e| StoreError::io(path)(e.into_error()))
    }

    /// Fills this (new, empty) database from a snapshot stream, then makes it durable.
    pub fn import(&self, input: &mut impl std::io::Read) -> Result<(), StoreError> {
        let mut r = SnapshotReader::new(input)?;
        let mut batch = WriteBatch::default();
        while let Some((cf, k, v)) = r.next_record()? {
            let name = CFS.get(cf as usize).ok_or_else(|| corrupt(format!("snapshot names column family {cf}")))?;
            batch.put_cf(self.cf(name), k, v);
            if batch.size_in_bytes() >= 8 << 20 {
                self.write(std::mem::take(&mut batch), false)?;
            }
        }
        self.write(batch, false)?;
        self.sync()
    }

    /// Drops what belongs to the cluster a backup came from (applied log id, membership, published members,
    /// alarms), keeping the key space, revisions and leases: the first step of a restore.
    pub fn forget_cluster(&self) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        let mut b = WriteBatch::default();
        b.delete_cf(meta, META_APPLIED);
        b.delete_cf(meta, META_MEMBERSHIP);
        for prefix in [META_MEMBER_PREFIX, META_ALARM_PREFIX] {
            let mut end = prefix.to_vec();
            *end.last_mut().expect("non-empty prefix") += 1;
            b.delete_range_cf(meta, prefix, &end[..]);
        }
        self.write(b, true)
    }

    /// Raised alarms: (member id, etcd `AlarmType`).
    pub fn alarms(&self) -> Result<Vec<(u64, i32)>, StoreError> {
        let r = self.writer_view();
        let mut it = r.iter(CF_META);
        it.seek(META_ALARM_PREFIX);
        let mut out = Vec::new();
        while it.valid() {
            let k = it.key().expect("key");
            let Some(rest) = k.strip_prefix(META_ALARM_PREFIX) else { break };
            let bad = || corrupt("alarm key");
            let member = u64::from_be_bytes(rest.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            let alarm = i32::from_be_bytes(rest.get(8..12).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            out.push((member, alarm));
            it.next();
        }
        Ok(out)
    }

    /// Published member attributes (name, client URLs) by member id.
    pub fn members(&self) -> Result<Vec<PublishMember>, StoreError> {
        let r = self.writer_view();
        let mut it = r.iter(CF_META);
        it.seek(META_MEMBER_PREFIX);
        let mut out = Vec::new();
        while it.valid() {
            let k = it.key().expect("key");
            if !k.starts_with(META_MEMBER_PREFIX) {
                break;
            }
            out.push(decode(it.value().expect("value"), "member attributes")?);
            it.next();
        }
        Ok(out)
    }
}

fn lease_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&lease.to_be_bytes());
    k.extend_from_slice(key);
    k
}

pub fn dir_size(path: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Reads of the state, optionally pinned to a RocksDB snapshot.
pub struct StateReader<'a> {
    state: &'a StateDb,
    snap: Option<SnapshotWithThreadMode<'a, DB>>,
}

impl<'a> StateReader<'a> {
    fn opts(&self) -> ReadOptions {
        let mut ro = ReadOptions::default();
        if let Some(s) = &self.snap {
            ro.set_snapshot(s);
        }
        ro
    }

    fn iter(&self, cf: &str) -> rocksdb::DBRawIteratorWithThreadMode<'_, DB> {
        self.state.db().raw_iterator_cf_opt(self.state.cf(cf), self.opts())
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.state.db().get_cf_opt(self.state.cf(cf), key, &self.opts()).map_err(|e| self.state.db_err(e))
    }

    fn meta_i64(&self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        match self.get(CF_META, key)? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v.as_slice().try_into().map_err(|_| corrupt(format!("meta {key:?}")))?;
                Ok(Some(i64::from_be_bytes(b)))
            }
        }
    }

    pub fn meta(&self) -> Result<StateMeta, StoreError> {
        let applied = match self.get(CF_META, META_APPLIED)? {
            Some(v) => Some(serde_json::from_slice(&v).map_err(|e| corrupt(format!("applied log id: {e}")))?),
            None => None,
        };
        let membership = match self.get(CF_META, META_MEMBERSHIP)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt(format!("membership: {e}")))?,
            None => StoredMembership::default(),
        };
        Ok(StateMeta {
            revision: self.meta_i64(META_REVISION)?.unwrap_or(INITIAL_REVISION),
            compacted: self.meta_i64(META_COMPACTED)?.unwrap_or(0),
            applied,
            membership,
        })
    }

    /// A hash of the key space's history up to `rev`, and the compacted revision it starts from: the state at
    /// the compacted revision and every event after it. It does not depend on how far this member has
    /// physically removed compacted history, so members at the same revision and compaction agree.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), StoreError> {
        let compacted = self.compacted()?;
        let all = KeyRange::new(&[0], &[0]);
        let mut h = crc32fast::Hasher::new();
        h.update(&compacted.to_be_bytes());
        if compacted > 0 {
            for kv in self.scan_at(&all, compacted)? {
                h.update(&kv.encode_to_vec());
            }
        }
        for ev in self.events(compacted + 1, rev, &all, false)? {
            h.update(&ev.encode_to_vec());
        }
        Ok((h.finalize(), compacted))
    }

    /// A hash of everything a member's state holds at this moment: the key space (as [`Self::hash_kv`] at the
    /// current revision) and the leases.
    pub fn hash(&self) -> Result<u32, StoreError> {
        let (kv, _) = self.hash_kv(self.revision()?)?;
        let mut h = crc32fast::Hasher::new();
        h.update(&kv.to_be_bytes());
        for (id, ttl) in self.leases()? {
            h.update(&id.to_be_bytes());
            h.update(&ttl.to_be_bytes());
        }
        Ok(h.finalize())
    }

    /// Every lease and its granted TTL.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut it = self.iter(CF_LEASES);
        it.seek_to_first();
        let mut out = Vec::new();
        while it.valid() {
            let id = be_i64(it.key().expect("key"), "lease id")?;
            let ttl = be_i64(it.value().expect("value"), "lease ttl")?;
            out.push((id, ttl));
            it.next();
        }
        it.status().map_err(|e| self.state.db_err(e))?;
        Ok(out)
    }

    pub fn revision(&self) -> Result<i64, StoreError> {
        Ok(self.meta_i64(META_REVISION)?.unwrap_or(INITIAL_REVISION))
    }

    pub fn compacted(&self) -> Result<i64, StoreError> {
        Ok(self.meta_i64(META_COMPACTED)?.unwrap_or(0))
    }

    fn event_at(&self, rev: Revision) -> Result<Event, StoreError> {
        let v = self.get(CF_EVENTS, &rev.to_bytes())?.ok_or_else(|| corrupt(format!("event {rev:?} is missing")))?;
        decode(&v, "event")
    }

    /// The version of `key` current at `before` (exclusive), if it was live.
    fn version_before(
        &self,
        it: &mut rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
        key: &[u8],
        before: Revision,
    ) -> Result<Option<KeyValue>, StoreError> {
        let bound = if before.sub > 0 {
            Revision::new(before.main, before.sub - 1)
        } else {
            Revision::new(before.main - 1, i64::MAX)
        };
        it.seek_for_prev(history_key(key, bound));
        if !it.valid() {
            return Ok(None);
        }
        let (k, rev) = split_history_key(it.key().expect("key")).ok_or_else(|| corrupt("history key"))?;
        if k != key || it.value() != Some(&[HIST_PUT][..]) {
            return Ok(None);
        }
        Ok(self.event_at(rev)?.kv)
    }

    /// Events from revision `from` up to `to` (inclusive) in `range`, in revision order, with prev_kv when asked.
    pub fn events(&self, from: i64, to: i64, range: &KeyRange, prev_kv: bool) -> Result<Vec<Event>, StoreError> {
        let mut it = self.iter(CF_EVENTS);
        let mut hist = self.iter(CF_HISTORY);
        it.seek(Revision::new(from, 0).to_bytes());
        let mut out = Vec::new();
        while it.valid() {
            let rev = Revision::from_bytes(it.key().expect("key")).ok_or_else(|| corrupt("event key"))?;
            if rev.main > to {
                break;
            }
            let mut ev: Event = decode(it.value().expect("value"), "event")?;
            let key = ev.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
            if range.contains(&key) {
                if prev_kv {
                    ev.prev_kv = self.version_before(&mut hist, &key, rev)?;
                }
                out.push(ev);
            }
            it.next();
        }
        it.status().map_err(|e| self.state.db_err(e))?;
        Ok(out)
    }
}

fn be_i64(b: &[u8], what: &str) -> Result<i64, StoreError> {
    let a: [u8; 8] = b.try_into().map_err(|_| corrupt(what))?;
    Ok(i64::from_be_bytes(a))
}

impl StateReader<'_> {
    /// The first `limit` key-values of `range` in key order, and how many keys the range holds: a limited
    /// range decodes only what it returns (counting the rest by iterating, without decoding them).
    pub fn scan_page(&self, range: &KeyRange, limit: usize) -> Result<(Vec<KeyValue>, i64), StoreError> {
        if matches!(range, KeyRange::Single(_)) || range.is_empty() {
            let all = KvView::scan(self, range)?;
            let count = all.len() as i64;
            return Ok((all.into_iter().take(limit).collect(), count));
        }
        let mut ro = self.opts();
        if let KeyRange::Span { end: Some(e), .. } = range {
            ro.set_iterate_upper_bound(e.clone());
        }
        let mut it = self.state.db().raw_iterator_cf_opt(self.state.cf(CF_LIVE), ro);
        it.seek(range.start());
        let mut page = Vec::with_capacity(limit.min(1024));
        let mut count = 0i64;
        while it.valid() {
            if page.len() < limit {
                page.push(decode(it.value().expect("value"), "key-value")?);
            }
            count += 1;
            it.next();
        }
        it.status().map_err(|e| self.state.db_err(e))?;
        Ok((page, count))
    }
}

impl KvView for StateReader<'_> {
    type Error = StoreError;

    fn lease(&self, id: i64) -> Result<Option<i64>, StoreError> {
        match StateReader::get(self, CF_LEASES, &id.to_be_bytes())? {
            Some(v) => Ok(Some(be_i64(&v, "lease ttl")?)),
            None => Ok(None),
        }
    }

    fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut ro = self.opts();
        ro.set_iterate_upper_bound((id + 1).to_be_bytes().to_vec());
        let mut it = self.state.db().raw_iterator_cf_opt(self.state.cf(CF_LEASE_KEYS), ro);
        it.seek(id.to_be_bytes());
        let mut out = Vec::new();
        while it.valid() {
            out.push(it.key().expect("key")[8..].to_vec());
            it.next();
        }
        it.status().map_err(|e| self.state.db_err(e))?;
        Ok(out)
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match StateReader::get(self, CF_LIVE, key)? {
            Some(v) => Ok(Some(decode(&v, "key-value")?)),
            None => Ok(None),
        }
    }

    fn scan(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StoreError> {
        if let KeyRange::Single(k) = range {
            return Ok(KvView::get(self, k)?.into_iter().collect());
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut ro = self.opts();
        if let KeyRange::Span { end: Some(e), .. } = range {
            ro.set_iterate_upper_bound(e.clone());
        }
        let mut it = self.state.db().raw_iterator_cf_opt(self.state.cf(CF_LIVE), ro);
        it.seek(range.start());
        let mut out = Vec::new();
        while it.valid() {
            out.push(decode(it.value().expect("value"), "key-value")?);
            it.next();
        }
        it.status().map_err(|e| self.state.db_err(e))?;
        Ok(out)
    }

    fn scan_at(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        if range.is_empty() {
            return Ok(out);
        }
        let mut it = self.iter(CF_HISTORY);
        let version_at = |it: &mut rocksdb::DBRawIteratorWithThreadMode<'_, DB>, key: &[u8]| {
            self.version_before(it, key, Revision::new(rev + 1, 0))
        };
        match range {
            KeyRange::Single(k) => out.extend(version_at(&mut it, k)?),
            KeyRange::Span { start, .. } => {
                let mut seek = Vec::new();
                encode_key(start, &mut seek);
                it.seek(&seek);
                while it.valid() {
                    let (key, _) = split_history_key(it.key().expect("key")).ok_or_else(|| corrupt("history key"))?;
                    if range.is_past(&key) {
                        break;
                    }
                    out.extend(version_at(&mut it, &key)?);
                    let mut next = Vec::new();
                    encode_key(&key, &mut next);
                    next.extend_from_slice(&[0xFF; 16]);
                    it.seek(&next);
                }
            }
        }
        it.status().map_err(|e| self.state.db_err(e))?;
        Ok(out)
    }
}

const SNAPSHOT_MAGIC: &[u8; 12] = b"KEELSNAPv01\n";
const RECORD_END: u8 = 0xFF;

/// Writes the snapshot format: a magic line, records (`cf: u8`, `key_len: u32`, key, `value_len: u32`,
/// value), an end record, and a CRC-32 of everything before it.
pub struct SnapshotWriter<'w, W: std::io::Write> {
    out: &'w mut W,
    crc: crc32fast::Hasher,
}

impl<'w, W: std::io::Write> SnapshotWriter<'w, W> {
    pub fn new(out: &'w mut W) -> Result<Self, StoreError> {
        let mut w = SnapshotWriter { out, crc: crc32fast::Hasher::new() };
        w.put(SNAPSHOT_MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), StoreError> {
        self.crc.update(b);
        self.out.write_all(b).map_err(StoreError::SnapshotIo)
    }

    pub fn record(&mut self, cf: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put(&[cf])?;
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_be_bytes())?;
        self.put(value)
    }

    pub fn finish(mut self) -> Result<(), StoreError> {
        self.put(&[RECORD_END])?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes()).map_err(StoreError::SnapshotIo)?;
        self.out.flush().map_err(StoreError::SnapshotIo)
    }
}

/// One record of a snapshot stream: its column family's tag, key and value.
type SnapshotRecord = (u8, Vec<u8>, Vec<u8>);

struct SnapshotReader<'r, R: std::io::Read> {
    input: &'r mut R,
    crc: crc32fast::Hasher,
}

impl<'r, R: std::io::Read> SnapshotReader<'r, R> {
    fn new(input: &'r mut R) -> Result<Self, StoreError> {
        let mut r = SnapshotReader { input, crc: crc32fast::Hasher::new() };
        let magic = r.take(SNAPSHOT_MAGIC.len())?;
        if magic != SNAPSHOT_MAGIC {
            return Err(corrupt("not a keel snapshot (bad magic)"));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; n];
        self.input.read_exact(&mut buf).map_err(|e| corrupt(format!("snapshot is truncated: {e}")))?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
    }

    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, StoreError> {
        let cf = self.take(1)?[0];
        if cf == RECORD_END {
            let expected = self.crc.clone().finalize();
            let mut b = [0u8; 4];
            self.input.read_exact(&mut b).map_err(|e| corrupt(format!("snapshot is truncated: {e}")))?;
            if u32::from_be_bytes(b) != expected {
                return Err(corrupt("snapshot checksum mismatch"));
            }
            return Ok(None);
        }
        let klen = self.len()?;
        let key = self.take(klen)?;
        let vlen = self.len()?;
        let value = self.take(vlen)?;
        Ok(Some((cf, key, value)))
    }
}
