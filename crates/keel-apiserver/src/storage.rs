//! Objects in the store, through the etcd v3 API — the same for a stacked master (its own member's client
//! URL, so that reads are served by that member) and an external store. Keys are
//! `keel_api::resources::Resource::key`s; a value is an object's JSON; an object's resourceVersion is its
//! key's mod revision. Writes are compare-and-swap transactions, so a create never overwrites and an update
//! or delete from an old resourceVersion changes nothing.

use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::kv_client::KvClient;
use keel_proto::etcdserverpb::request_op::Request as Op;
use keel_proto::etcdserverpb::response_op::Response as OpResponse;
use keel_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// The object changed since the resourceVersion the request named (it holds the current one).
    #[error("the object has been modified (now at {current})")]
    Conflict { current: i64 },
    #[error("revision {requested} has been compacted")]
    Compacted { requested: i64 },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<tonic::Status> for StorageError {
    fn from(s: tonic::Status) -> Self {
        StorageError::Unavailable(format!("{}: {}", s.code(), s.message()))
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// A page of a list, all of it read at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Stored>,
    pub revision: i64,
    /// More objects follow the last item (Kubernetes' `continue`; `remainingItemCount` is `remaining`).
    pub remaining: i64,
}

#[derive(Clone)]
pub struct Storage {
    kv: KvClient<Channel>,
}

/// The key right after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn compare(key: &str, target: CompareTarget, union: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(union),
        range_end: vec![],
    }
}

fn put_op(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest { key: key.as_bytes().to_vec(), value, ..Default::default() })),
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp { request: Some(Op::RequestRange(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })) }
}

fn stored(kv: keel_proto::mvccpb::KeyValue) -> Stored {
    Stored {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value,
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
    }
}

/// The object a failed transaction's `get_op` found (its failure branch), if any.
fn found(resp: &TxnResponse) -> Option<Stored> {
    resp.responses.iter().find_map(|r| match &r.response {
        Some(OpResponse::ResponseRange(range)) => range.kvs.first().cloned().map(stored),
        _ => None,
    })
}

fn revision(resp: &TxnResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

impl Storage {
    pub fn new(channel: Channel) -> Storage {
        Storage { kv: KvClient::new(channel) }
    }

    /// The object at `key`, read linearizably.
    pub async fn get(&self, key: &str) -> Result<Stored, StorageError> {
        let resp = self.kv.clone().range(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() }).await?;
        resp.into_inner().kvs.into_iter().next().map(stored).ok_or(StorageError::NotFound)
    }

    /// Up to `limit` objects (0: all) under `prefix`, from `start` (a key, for a continued list) on, at
    /// `revision` (0: the current one; a continued list passes the first page's).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        revision: i64,
    ) -> Result<Page, StorageError> {
        let req = RangeRequest {
            key: start.unwrap_or(prefix).as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            limit,
            revision,
            ..Default::default()
        };
        let resp = match self.kv.clone().range(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::OutOfRange => {
                return Err(StorageError::Compacted { requested: revision })
            }
            Err(s) => return Err(s.into()),
        };
        let items: Vec<Stored> = resp.kvs.into_iter().map(stored).collect();
        let remaining = resp.count - items.len() as i64;
        // The header names the store's current revision; the page was read at the one asked for, if any.
        let at = if revision > 0 { revision } else { resp.header.map_or(0, |h| h.revision) };
        Ok(Page { items, revision: at, remaining })
    }

    /// Stores a new object; refuses if the key exists. Returns its revision.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError> {
        let txn = TxnRequest {
            compare: vec![compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0))],
            success: vec![put_op(key, value)],
            failure: vec![],
        };
        let resp = self.kv.clone().txn(txn).await?.into_inner();
        if resp.succeeded {
            Ok(revision(&resp))
        } else {
            Err(StorageError::AlreadyExists)
        }
    }

    /// Replaces the object at `key` if it is still at `expected` (its mod revision). Returns the new revision.
    pub async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StorageError> {
        let txn = TxnRequest {
            compare: vec![compare(key, CompareTarget::Mod, TargetUnion::ModRevision(expected))],
            success: vec![put_op(key, value)],
            failure: vec![get_op(key)],
        };
        let resp = self.kv.clone().txn(txn).await?.into_inner();
        if resp.succeeded {
            return Ok(revision(&resp));
        }
        match found(&resp) {
            Some(now) => Err(StorageError::Conflict { current: now.mod_revision }),
            None => Err(StorageError::NotFound),
        }
    }

    /// Deletes the object at `key` if it is still at `expected` (its mod revision; any when `None`). Returns
    /// what was deleted and the revision of the deletion.
    pub async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(Stored, i64), StorageError> {
        let del = RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                prev_kv: true,
                ..Default::default()
            })),
        };
        let txn = TxnRequest {
            compare: expected
                .map(|rev| compare(key, CompareTarget::Mod, TargetUnion::ModRevision(rev)))
                .into_iter()
                .collect(),
            success: vec![del],
            failure: vec![get_op(key)],
        };
        let resp = self.kv.clone().txn(txn).await?.into_inner();
        if !resp.succeeded {
            return match found(&resp) {
                Some(now) => Err(StorageError::Conflict { current: now.mod_revision }),
                None => Err(StorageError::NotFound),
            };
        }
        let deleted = resp.responses.iter().find_map(|r| match &r.response {
            Some(OpResponse::ResponseDeleteRange(d)) => d.prev_kvs.first().cloned().map(stored),
            _ => None,
        });
        deleted.map(|d| (d, revision(&resp))).ok_or(StorageError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
