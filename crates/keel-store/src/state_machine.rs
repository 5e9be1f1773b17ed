//! The Raft state machine: applies committed entries to the MVCC state, builds and installs snapshots.
//!
//! The state lives in `<data-dir>/state-<generation>`; `<data-dir>/STATE` names the current generation. A
//! snapshot received from the leader is imported into a new generation, made durable, and only then does
//! `STATE` (replaced by rename) point at it: a crash at any moment leaves either the old or the new state,
//! never a mix.

use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftLogId, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::apply::Applier;
use crate::apply::Change;
use crate::error::StoreError;
use crate::hub::Hub;
use crate::lessor::Lessor;
use crate::snapshot_data::SnapshotData;
use crate::state_db::{StateDb, StateMeta};
use keel_proto::raftpb::ProposalResult;

use crate::types::{CommandResult, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const STATE_POINTER: &str = "STATE";
/// Applying a batch of entries slower than this is logged.
const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);
const SNAPSHOT_DIR: &str = "snapshots";
const SNAPSHOT_CURRENT: &str = "current.json";

/// The current state database, shared by the state machine (writer) and the read path.
pub struct SharedState {
    current: RwLock<Arc<StateDb>>,
    generation: RwLock<u64>,
    dir: PathBuf,
    pub hub: Hub,
    /// Lease expiry (acted on by the leader only).
    pub lessor: Mutex<Lessor>,
    /// Revision whose history removal is wanted; the compactor thread waits on it.
    compact_tx: tokio::sync::watch::Sender<i64>,
    /// Revision up to which history has been removed from this member's disk.
    pub physical: tokio::sync::watch::Sender<i64>,
    /// The store revision this member has applied.
    applied_revision: tokio::sync::watch::Sender<i64>,
    /// Held while the snapshot dir's record or files change (a build, an export, an install).
    snapshot_files: Mutex<()>,
}

impl SharedState {
    /// Opens the current state generation under `dir` (creating the first one when `create` is set).
    pub fn open(dir: &Path, create: bool) -> Result<Arc<Self>, StoreError> {
        let pointer = dir.join(STATE_POINTER);
        let generation = match std::fs::read_to_string(&pointer) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("{} is not a generation", pointer.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                write_atomically(&pointer, b"1")?;
                1
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::DataDir {
                    path: dir.to_owned(),
                    message: "the state pointer (STATE) is missing".into(),
                })
            }
            Err(e) => return Err(StoreError::io(&pointer)(e)),
        };
        // Leftovers of an interrupted snapshot install or of replaced generations.
        for entry in std::fs::read_dir(dir).map_err(StoreError::io(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(g) = name.strip_prefix("state-").and_then(|g| g.parse::<u64>().ok()) {
                if g != generation {
                    tracing::info!(dir = %entry.path().display(), "removing stale state generation");
                    std::fs::remove_dir_all(entry.path()).map_err(StoreError::io(entry.path()))?;
                }
            }
        }
        let state = StateDb::open(&dir.join(format!("state-{generation}")), create || generation == 1)?;
        let lessor = Lessor::load(state.reader().leases()?, Instant::now());
        let (compact_tx, compact_rx) = tokio::sync::watch::channel(0);
        let physical = tokio::sync::watch::channel(state.reader().compacted()?).0;
        let applied_revision = tokio::sync::watch::channel(state.reader().revision()?).0;
        let shared = Arc::new(SharedState {
            current: RwLock::new(Arc::new(state)),
            generation: RwLock::new(generation),
            dir: dir.to_owned(),
            hub: Hub::default(),
            lessor: Mutex::new(lessor),
            compact_tx,
            physical,
            applied_revision,
            snapshot_files: Mutex::new(()),
        });
        std::fs::create_dir_all(dir.join(SNAPSHOT_DIR)).map_err(StoreError::io(dir.join(SNAPSHOT_DIR)))?;
        // Leftovers of snapshots being built, exported or received when the member stopped.
        for entry in std::fs::read_dir(dir.join(SNAPSHOT_DIR)).map_err(StoreError::io(dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("building-") {
                let _ = std::fs::remove_dir_all(entry.path());
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Self::spawn_compactor(Arc::downgrade(&shared), compact_rx);
        if let Some(rev) = shared.current().pending_compaction()? {
            shared.compact_tx.send_replace(rev);
        }
        Ok(shared)
    }

    fn update_lessor(&self, changes: &[Change]) {
        let now = Instant::now();
        let mut lessor = None;
        for c in changes {
            match c {
                Change::LeaseGrant { id, ttl } => {
                    lessor.get_or_insert_with(|| self.lessor.lock().expect("lessor")).grant(*id, *ttl, now)
                }
                Change::LeaseRevoke { id } => {
                    lessor.get_or_insert_with(|| self.lessor.lock().expect("lessor")).revoke(*id)
                }
                _ => {}
            }
        }
    }

    /// Follows the store revision this member has applied.
    pub fn hub_revision(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied_revision.subscribe()
    }

    /// The current state database.
    pub fn current(&self) -> Arc<StateDb> {
        self.current.read().expect("state lock").clone()
    }

    /// Removes compacted history in the background, so compaction never stalls writes or reads.
    fn spawn_compactor(weak: std::sync::Weak<SharedState>, mut rx: tokio::sync::watch::Receiver<i64>) {
        std::thread::Builder::new()
            .name("mvcc-compactor".into())
            .spawn(move || loop {
                let wanted = *rx.borrow_and_update();
                if wanted > 0 {
                    let Some(shared) = weak.upgrade() else { return };
                    let state = shared.current();
                    drop(shared);
                    match state.compact_history(wanted) {
                        Ok(n) => {
                            tracing::info!(revision = wanted, removed = n, "compacted history");
                            if let Some(shared) = weak.upgrade() {
                                shared.physical.send_replace(wanted);
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "history compaction failed"),
                    }
                }
                if futures::executor::block_on(rx.changed()).is_err() {
                    return;
                }
            })
            .expect("spawn compactor");
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_DIR)
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(StoreError::io(&tmp))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(StoreError::io(path))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(StoreError::io(parent))?;
    }
    Ok(())
}

/// Whether applying these writes may take long: many of them, or ones that touch a range of keys.
fn may_take_long(requests: &[keel_proto::raftpb::WriteRequest]) -> bool {
    use keel_proto::raftpb::write_request::Request;
    requests.len() > 64
        || requests.iter().any(|r| match &r.request {
            Some(Request::DeleteRange(d)) => !d.range_end.is_empty(),
            Some(Request::Txn(_)) | Some(Request::LeaseRevoke(_)) => true,
            _ => false,
        })
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Arc<SharedState>,
    meta: StateMeta,
    /// The file a snapshot from the leader is being received into (openraft receives one at a time).
    incoming: Option<PathBuf>,
}

impl StateMachine {
    pub fn new(shared: Arc<SharedState>) -> Result<Self, StoreError> {
        let meta = shared.current().writer_view().meta()?;
        Ok(StateMachine { shared, meta, incoming: None })
    }
}

/// `snapshots/current.json`: the snapshot this member would send.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta,
    /// The snapshot stream (the format of [`StateDb::export`]), in the snapshot dir.
    file: String,
    /// A checkpoint of the state the snapshot holds (snapshots built here), in the snapshot dir: `file` is
    /// exported from it the first time a member needs the snapshot.
    #[serde(default)]
    checkpoint: Option<String>,
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(meta: Option<&SnapshotMeta>, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), &e).into()
}

pub struct SnapshotBuilder {
    shared: Arc<SharedState>,
}

/// Records the current snapshot (names in the snapshot dir) and removes older snapshots and checkpoints.
/// The caller holds `snapshot_files`.
fn save_snapshot_record(shared: &SharedState, rec: &SnapshotRecord) -> Result<(), StoreError> {
    let dir = shared.snapshot_dir();
    write_atomically(&dir.join(SNAPSHOT_CURRENT), &serde_json::to_vec(rec).expect("serialisable"))?;
    for e in std::fs::read_dir(&dir).map_err(StoreError::io(&dir))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let kept = name == rec.file || rec.checkpoint.as_deref() == Some(name.as_str());
        if kept {
            continue;
        }
        if name.ends_with(".snap") {
            let _ = std::fs::remove_file(e.path());
        } else if name.ends_with(".ckpt") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

fn read_snapshot_record(dir: &Path) -> Result<Option<SnapshotRecord>, StoreError> {
    let path = dir.join(SNAPSHOT_CURRENT);
    match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).map(Some).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path)(e)),
    }
}

/// Exports the snapshot stream of `rec` from its checkpoint, unless it exists already; returns its path.
fn export_snapshot(shared: &SharedState, rec: &SnapshotRecord) -> Result<std::fs::File, StoreError> {
    let dir = shared.snapshot_dir();
    let path = dir.join(&rec.file);
    let _files = shared.snapshot_files.lock().expect("snapshot files lock");
    if path.exists() {
        return std::fs::File::open(&path).map_err(StoreError::io(&path));
    }
    let Some(ckpt) = &rec.checkpoint else {
        return Err(StoreError::Corrupt(format!("snapshot {} is missing", path.display())));
    };
    let started = Instant::now();
    let state = StateDb::open(&dir.join(ckpt), false)?;
    let tmp = dir.join(format!("{}.tmp", rec.meta.snapshot_id));
    let mut f = state.export_file(&state.reader(), &tmp)?;
    f.sync_all().map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    tracing::info!(id = %rec.meta.snapshot_id, bytes, took = ?started.elapsed(), "exported snapshot for a member");
    f.rewind().map_err(StoreError::io(&path))?;
    Ok(f)
}

/// The data of `rec`, exported from its checkpoint when first read.
fn lazy_data(shared: Arc<SharedState>, rec: SnapshotRecord) -> Box<SnapshotData> {
    Box::new(SnapshotData::lazy(Box::new(move || export_snapshot(&shared, &rec).map_err(std::io::Error::other))))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// A snapshot here is a RocksDB checkpoint of the state (about one memtable flush, whatever the state's
    /// size), so snapshots stay cheap under heavy writes; the stream a member receives is exported from the
    /// checkpoint when first read ([`SnapshotData`]).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        let rec = tokio::task::spawn_blocking(move || -> Result<SnapshotRecord, StoreError> {
            let state = shared.current();
            let dir = shared.snapshot_dir();
            let building = dir.join(format!("building-{:x}", rand::random::<u64>()));
            // The checkpoint flushes the memtables: what it holds is on disk before the log is purged behind it.
            state.checkpoint(&building)?;
            let m = StateDb::open(&building, false)?.writer_view().meta()?;
            let id = format!(
                "{}-{}-{}",
                m.applied.map_or(0, |l| l.leader_id.term),
                m.applied.map_or(0, |l| l.index),
                rand::random::<u32>()
            );
            let ckpt = format!("{id}.ckpt");
            let _files = shared.snapshot_files.lock().expect("snapshot files lock");
            std::fs::rename(&building, dir.join(&ckpt)).map_err(StoreError::io(&building))?;
            let meta = SnapshotMeta { last_log_id: m.applied, last_membership: m.membership, snapshot_id: id.clone() };
            let rec = SnapshotRecord { meta, file: format!("{id}.snap"), checkpoint: Some(ckpt) };
            save_snapshot_record(&shared, &rec)?;
            Ok(rec)
        })
        .await
        .map_err(|e| snap_err(None, std::io::Error::other(e.to_string())))?
        .map_err(|e| snap_err(None, e))?;
        tracing::info!(id = %rec.meta.snapshot_id, "built snapshot (checkpoint)");
        Ok(Snapshot { meta: rec.meta.clone(), snapshot: lazy_data(self.shared.clone(), rec) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // One WriteBatch for the whole batch of entries, each entry's writes applied in order.
        let state = self.shared.current();
        let meta = &self.meta;
        let started = Instant::now();
        let entries: Vec<Entry> = entries.into_iter().collect();
        // A batch that may take long (a range delete of 100 000 keys takes seconds) moves off the async worker
        // first; small ones (most) run in place.
        let large = entries.len() > 64
            || entries.iter().any(|e| matches!(&e.payload, EntryPayload::Normal(c) if may_take_long(&c.0.requests)));
        // StorageError is openraft's, and what apply() must return.
        #[allow(clippy::result_large_err)]
        let apply = || -> Result<_, StorageError> {
            let view = state.writer_view();
            let mut applier = Applier::new(&view, meta.revision, meta.compacted);
            let mut results = Vec::new();
            let mut applied = None;
            let mut membership = None;
            for entry in entries {
                applied = Some(*entry.get_log_id());
                match &entry.payload {
                    EntryPayload::Blank => results.push(CommandResult::default()),
                    EntryPayload::Normal(cmd) => {
                        let mut responses = Vec::with_capacity(cmd.0.requests.len());
                        let term = entry.log_id.leader_id.term;
                        for req in &cmd.0.requests {
                            #[cfg(debug_assertions)]
                            let faulty = crate::fault::diverge(req);
                            #[cfg(debug_assertions)]
                            let req = faulty.as_ref().unwrap_or(req);
                            responses.push(applier.apply_in_term(req, term).map_err(io_err)?);
                        }
                        results.push(CommandResult(ProposalResult { responses }));
                    }
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(applied, m.clone()));
                        results.push(CommandResult::default());
                    }
                }
            }
            let (changes, events, revision, compacted) =
                (applier.changes, applier.events, applier.revision, applier.compacted);
            state.commit(&changes, revision, compacted, applied.as_ref(), membership.as_ref()).map_err(io_err)?;
            Ok((results, changes, events, revision, compacted, applied, membership))
        };
        let applied_batch = if large { crate::blocking(apply)? } else { apply()? };
        let (results, changes, events, revision, compacted, applied, membership) = applied_batch;
        if started.elapsed() > SLOW_APPLY {
            tracing::warn!(took = ?started.elapsed(), changes = changes.len(), "slow apply");
        }
        let compacted_before = self.meta.compacted;
        self.meta.revision = revision;
        self.meta.compacted = compacted;
        if applied.is_some() {
            self.meta.applied = applied;
        }
        if let Some(m) = membership {
            self.meta.membership = m;
        }
        self.shared.update_lessor(&changes);
        self.shared.applied_revision.send_replace(revision);
        self.shared.hub.publish(events);
        if compacted > compacted_before {
            self.shared.compact_tx.send_replace(compacted);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let path = self.shared.snapshot_dir().join(format!("incoming-{}.tmp", rand::random::<u64>()));
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| snap_err(None, e))?;
        if let Some(stale) = self.incoming.replace(path) {
            let _ = std::fs::remove_file(stale);
        }
        Ok(Box::new(SnapshotData::file(f)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<SnapshotData>) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let m = meta.clone();
        let mut file = snapshot.into_file().await.map_err(|e| snap_err(Some(meta), e))?.into_std().await;
        let incoming = self.incoming.take();
        let new_meta = tokio::task::spawn_blocking(move || -> Result<StateMeta, StoreError> {
            file.rewind().map_err(StoreError::SnapshotIo)?;
            let generation = *shared.generation.read().expect("lock") + 1;
            let dir = shared.dir.join(format!("state-{generation}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
            }
            let fresh = StateDb::open(&dir, true)?;
            fresh.import(&mut BufReader::new(&mut file))?;
            let got = fresh.writer_view().meta()?;
            if got.applied != m.last_log_id {
                return Err(StoreError::Corrupt(format!(
                    "snapshot {} holds state up to {:?}, its metadata says {:?}",
                    m.snapshot_id, got.applied, m.last_log_id
                )));
            }
            write_atomically(&shared.dir.join(STATE_POINTER), generation.to_string().as_bytes())?;
            // Keep the received snapshot as ours, to send on to members that need it.
            let file_name = format!("{}.snap", m.snapshot_id);
            if let Some(incoming) = incoming.filter(|p| p.exists()) {
                let target = shared.snapshot_dir().join(&file_name);
                let _files = shared.snapshot_files.lock().expect("snapshot files lock");
                std::fs::rename(&incoming, &target).map_err(StoreError::io(&target))?;
                save_snapshot_record(&shared, &SnapshotRecord { meta: m.clone(), file: file_name, checkpoint: None })?;
            }
            let old = {
                let mut cur = shared.current.write().expect("lock");
                std::mem::replace(&mut *cur, Arc::new(fresh))
            };
            *shared.generation.write().expect("lock") = generation;
            old.mark_obsolete();
            tracing::info!(id = %m.snapshot_id, generation, "installed snapshot");
            Ok(got)
        })
        .await
        .map_err(|e| snap_err(Some(meta), std::io::Error::other(e.to_string())))?
        .map_err(|e| snap_err(Some(meta), e))?;
        self.shared.applied_revision.send_replace(new_meta.revision);
        self.meta = new_meta;
        let leases = self.shared.current().reader().leases().map_err(io_err)?;
        *self.shared.lessor.lock().expect("lessor") = Lessor::load(leases, Instant::now());
        self.shared.hub.reset();
        if let Some(rev) = self.shared.current().pending_compaction().map_err(io_err)? {
            self.shared.compact_tx.send_replace(rev);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(rec) = read_snapshot_record(&self.shared.snapshot_dir()).map_err(|e| snap_err(None, e))? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: rec.meta.clone(), snapshot: lazy_data(self.shared.clone(), rec) }))
    }
}
