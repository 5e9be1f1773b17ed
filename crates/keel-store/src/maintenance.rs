//! Operating a store: hashes to detect divergence, alarms, backups (a consistent snapshot streamed to a
//! client) and restoring a new cluster from one.
//!
//! The leader checks divergence on its own: at a fixed interval it asks every member for `HashKV` at its
//! own current revision; members with the same compacted revision must agree. Members outside the majority
//! hash get a `CORRUPT` alarm (raised through the log, visible in `etcdctl endpoint status` and
//! `etcdctl alarm list`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, HashKvRequest, HashKvResponse,
    HashResponse,
};
use keel_proto::raftpb::{write_request, write_response};

use crate::apply::check_read_revision;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::state_db::StateDb;
use crate::store::{unexpected, ApiError, Store};

impl Store {
    /// This member's `HashKV` at `revision` (0: its current one). A member a little behind waits to get there.
    pub async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, ApiError> {
        let mut applied = self.shared().hub_revision();
        if req.revision > 0 {
            let _ = tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|r| *r >= req.revision)).await;
        }
        // A hash reads the whole key space (seconds for a large one): off the async workers, which run Raft.
        let state = self.shared().current();
        let (current, hash, compact_revision) = off_runtime(move || {
            let reader = state.reader();
            let current = reader.revision()?;
            let rev = if req.revision > 0 { req.revision } else { current };
            check_read_revision(rev, current, reader.compacted()?).map_err(ApiError::Apply)?;
            let (hash, compact_revision) = reader.hash_kv(rev)?;
            Ok((current, hash, compact_revision))
        })
        .await?;
        Ok(HashKvResponse { header: Some(self.header(current)), hash, compact_revision })
    }

    pub async fn hash(&self) -> Result<HashResponse, ApiError> {
        let state = self.shared().current();
        let (rev, hash) = off_runtime(move || {
            let reader = state.reader();
            Ok((reader.revision()?, reader.hash()?))
        })
        .await?;
        Ok(HashResponse { header: Some(self.header(rev)), hash })
    }

    /// etcd's `Alarm`: GET lists raised alarms (of one type, or all for NONE); ACTIVATE and DEACTIVATE go
    /// through the log.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, ApiError> {
        if req.action == AlarmAction::Get as i32 {
            let state = self.shared().current();
            let alarms = state
                .alarms()?
                .into_iter()
                .filter(|(_, a)| req.alarm == AlarmType::None as i32 || *a == req.alarm)
                .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect();
            return Ok(AlarmResponse { header: Some(self.header(state.reader().revision()?)), alarms });
        }
        match self.write_checked(write_request::Request::Alarm(req)).await? {
            (write_response::Response::Alarm(mut a), rev) => {
                a.header = Some(self.header(rev));
                Ok(a)
            }
            _ => Err(unexpected()),
        }
    }

    /// Writes a consistent snapshot of this member's state to a new file under the data dir; returns its path
    /// and the revision it holds.
    pub async fn backup(&self) -> Result<(PathBuf, i64), ApiError> {
        let state = self.shared().current();
        let dir = self.config().data_dir.join("snapshots");
        let path = dir.join(format!("backup-{}.tmp", rand::random::<u64>()));
        let p = path.clone();
        let rev = off_runtime(move || -> Result<i64, ApiError> {
            let reader = state.reader();
            let rev = reader.revision()?;
            seal(state.export_file(&reader, &p)?, &p)?;
            Ok(rev)
        })
        .await;
        match rev {
            Ok(rev) => Ok((path, rev)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }
}

/// Runs work that reads or writes the whole state on a blocking thread, off the async workers that run Raft.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(StoreError::Raft(e.to_string())))?
}

const SEAL_BLOCK: u64 = 512;

/// Pads a backup to a multiple of 512 bytes and appends the SHA-256 of it: the shape etcd gives its
/// snapshots, which `etcdctl snapshot save` checks for.
fn seal(mut f: std::fs::File, path: &Path) -> Result<(), StoreError> {
    use sha2::Digest;
    use std::io::{Read, Seek, Write};
    let len = f.metadata().map_err(StoreError::io(path))?.len();
    let pad = (SEAL_BLOCK - len % SEAL_BLOCK) % SEAL_BLOCK;
    f.write_all(&vec![0u8; pad as usize]).map_err(StoreError::io(path))?;
    f.rewind().map_err(StoreError::io(path))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut (&mut f).take(len + pad), &mut hasher).map_err(StoreError::io(path))?;
    f.write_all(&hasher.finalize()).map_err(StoreError::io(path))?;
    f.sync_all().map_err(StoreError::io(path))
}

/// Checks the SHA-256 a sealed backup ends with (backups without one rely on their own CRC).
fn check_seal(path: &Path) -> Result<(), StoreError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(StoreError::io(path))?;
    let len = f.metadata().map_err(StoreError::io(path))?.len();
    if len % SEAL_BLOCK != 32 {
        return Ok(());
    }
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut (&mut f).take(len - 32), &mut hasher).map_err(StoreError::io(path))?;
    let mut want = [0u8; 32];
    f.read_exact(&mut want).map_err(StoreError::io(path))?;
    if hasher.finalize().as_slice() != want {
        return Err(StoreError::Corrupt(format!("{}: SHA-256 checksum mismatch", path.display())));
    }
    Ok(())
}

/// Builds the data dir of one member of a new cluster from a backup (`keel kv restore`): the key space,
/// revisions and leases of the backup; the membership, identity and alarms of the new cluster. The member then
/// starts with `keel kv` and the same flags.
pub fn restore(snapshot: &Path, config: &StoreConfig) -> Result<(), StoreError> {
    config.validate()?;
    let dir = &config.data_dir;
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(StoreError::DataDir {
            path: dir.clone(),
            message: "exists and is not empty: restore needs a new data dir".into(),
        });
    }
    check_seal(snapshot)?;
    let mut input = std::io::BufReader::new(std::fs::File::open(snapshot).map_err(StoreError::io(snapshot))?);
    std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let result = (|| {
        let state = StateDb::open(&dir.join("state-1"), true)?;
        state.import(&mut input)?;
        state.forget_cluster()?;
        drop(state);
        std::fs::write(dir.join("STATE"), b"1").map_err(StoreError::io(dir.join("STATE")))?;
        crate::store::create_identity(config)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// On the leader, every `interval`: compare members' hashes and raise CORRUPT for those that diverge.
pub(crate) async fn check_divergence(store: Store, interval: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    if interval.is_zero() {
        return;
    }
    let mut ticker = crate::store::Ticker::new(interval, stop);
    // The first tick comes at once: skip it, so a member that was just started (and may briefly believe it
    // still leads) does not make every member hash its whole state.
    if !ticker.next().await {
        return;
    }
    while ticker.next().await {
        if !store.is_leader() {
            continue;
        }
        if let Err(e) = check_once(&store).await {
            tracing::debug!(error = %e, "divergence check skipped");
        }
    }
}

async fn check_once(store: &Store) -> Result<(), ApiError> {
    let mine = store.hash_kv(HashKvRequest { revision: 0 }).await?;
    let rev = mine.header.as_ref().map_or(0, |h| h.revision);
    // (member, compacted revision) → hash
    let mut hashes: BTreeMap<u64, (i64, u32)> =
        BTreeMap::from([(store.member_id(), (mine.compact_revision, mine.hash))]);
    for (id, url) in store.peer_urls() {
        if id == store.member_id() {
            continue;
        }
        let Some(mut client) = store.peer_client(&url) else { continue };
        let mut req = tonic::Request::new(HashKvRequest { revision: rev });
        req.set_timeout(Duration::from_secs(5));
        if let Ok(r) = client.hash_kv(req).await {
            let r = r.into_inner();
            hashes.insert(id, (r.compact_revision, r.hash));
        }
    }
    let raised: Vec<(u64, i32)> = store.shared().current().alarms()?;
    for member in diverged(&hashes) {
        if raised.contains(&(member, AlarmType::Corrupt as i32)) {
            continue;
        }
        tracing::error!(member = format!("{member:x}"), revision = rev, "member state diverged: raising CORRUPT alarm");
        store
            .alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: member,
                alarm: AlarmType::Corrupt as i32,
            })
            .await?;
    }
    Ok(())
}

/// Members whose hash differs from the majority of the members compacted alike. No majority: no verdict.
pub fn diverged(hashes: &BTreeMap<u64, (i64, u32)>) -> Vec<u64> {
    let mut by_compaction: BTreeMap<i64, Vec<(u64, u32)>> = BTreeMap::new();
    for (id, (compacted, hash)) in hashes {
        by_compaction.entry(*compacted).or_default().push((*id, *hash));
    }
    let mut out = Vec::new();
    for members in by_compaction.values() {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, h) in members {
            *counts.entry(*h).or_default() += 1;
        }
        let Some((&majority, &n)) = counts.iter().max_by_key(|(_, n)| **n) else { continue };
        if n * 2 <= members.len() {
            continue;
        }
        out.extend(members.iter().filter(|(_, h)| *h != majority).map(|(id, _)| *id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_odd_member_out_diverged() {
        let h = BTreeMap::from([(1, (5, 0xaa)), (2, (5, 0xaa)), (3, (5, 0xbb))]);
        assert_eq!(diverged(&h), vec![3]);
        let even = BTreeMap::from([(1, (5, 0xaa)), (2, (5, 0xbb))]);
        assert!(diverged(&even).is_empty(), "no majority, no verdict");
        let compacted_differently = BTreeMap::from([(1, (5, 0xaa)), (2, (5, 0xaa)), (3, (6, 0xbb))]);
        assert!(diverged(&compacted_differently).is_empty());
        let agree = BTreeMap::from([(1, (5, 0xaa)), (2, (5, 0xaa)), (3, (5, 0xaa))]);
        assert!(diverged(&agree).is_empty());
    }
}
