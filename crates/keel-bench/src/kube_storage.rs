//! The store operations a kube-apiserver (1.33, its etcd3 storage) performs for the requests [`crate::api`]
//! sends, issued straight through the etcd v3 API: the floor under the latency of any Kubernetes API server
//! on that store, since the server adds its own work (TLS, authentication, JSON, admission) on top.
//!
//! - create: one transaction, `mod_revision(key) == 0` then put (the apiserver's `notFound(key)` guard);
//!   the namespace check is served from an informer cache, not the store;
//! - get by name: a linearizable range of the one key;
//! - list with `limit`: a linearizable range of the namespace's prefix with that limit (the store counts the
//!   keys beyond it for `remainingItemCount`).
//!
//! Keys are laid out as the apiserver lays them: `/registry/configmaps/<namespace>/<name>`.

use keel_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_proto::etcdserverpb::request_op::Request as Op;
use keel_proto::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::{drive, object_name, object_to_get, BenchError, Phases, Report, Target};

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

/// Runs the three phases in a fresh namespace's prefix with values of `value_size` bytes, then deletes the
/// prefix (untimed). Reports are named `kube-create`, `kube-get`, `kube-list`.
pub async fn run(target: &Target, phases: &Phases, value_size: usize) -> Result<Vec<Report>, BenchError> {
    let prefix = format!("/registry/configmaps/bench-{:08x}/", rand::random::<u32>());
    let value = vec![b'v'; value_size];
    let clients = phases.clients;

    let (t, p, v) = (target.clone(), prefix.clone(), value.clone());
    let create = drive("kube-create", clients, phases.creates, move |c, n| {
        let mut kv = t.kv(c);
        let key = format!("{p}{}", object_name(n)).into_bytes();
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::ModRevision(0)),
                range_end: vec![],
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest { key, value: v.clone(), ..Default::default() })),
            }],
            failure: vec![],
        };
        async move {
            let resp = kv.txn(txn).await.map_err(|s| s.to_string())?.into_inner();
            if resp.succeeded {
                Ok(())
            } else {
                Err("the key exists".to_string())
            }
        }
    })
    .await;

    let objects = phases.creates;
    let (t, p) = (target.clone(), prefix.clone());
    let get = drive("kube-get", clients, phases.gets, move |c, n| {
        let mut kv = t.kv(c);
        let key = format!("{p}{}", object_name(object_to_get(n, objects))).into_bytes();
        async move {
            let resp = kv.range(RangeRequest { key, ..Default::default() }).await.map_err(|s| s.to_string())?;
            match resp.into_inner().kvs.len() {
                1 => Ok(()),
                _ => Err("not found".to_string()),
            }
        }
    })
    .await;

    let (t, p) = (target.clone(), prefix.clone());
    let limit = phases.list_limit;
    let expected = limit.min(objects);
    let list = drive("kube-list", clients, phases.lists, move |c, _| {
        let mut kv = t.kv(c);
        let req = RangeRequest {
            key: p.as_bytes().to_vec(),
            range_end: prefix_end(&p),
            limit: limit as i64,
            ..Default::default()
        };
        async move {
            let resp = kv.range(req).await.map_err(|s| s.to_string())?.into_inner();
            if resp.kvs.len() == expected {
                Ok(())
            } else {
                Err(format!("{} keys listed, {expected} expected", resp.kvs.len()))
            }
        }
    })
    .await;

    let mut kv = target.kv(0);
    kv.delete_range(DeleteRangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(&prefix),
        ..Default::default()
    })
    .await?;
    Ok(vec![create, get, list])
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/registry/configmaps/ns/"), b"/registry/configmaps/ns0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
