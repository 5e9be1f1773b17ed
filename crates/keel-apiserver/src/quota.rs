//! ResourceQuota admission at the store: what a create (or an update of a Service or a claim) charges the
//! namespace's quotas, decided by `keel_api::quota` and written in the same transaction as the object,
//! each quota compared on its mod revision — so concurrent writes through any masters never take a quota
//! past its limits (a changed quota fails the transaction; the write is decided again). A quota that has
//! not counted its namespace yet is counted here first, so it holds from the moment it exists.

use keel_api::quota::{self, Charged, Refused};
use keel_api::resources::{self, Resource};
use keel_api::status::ApiError;
use serde_json::Value;

use crate::resources::{self as served, encode, store_error};
use crate::storage::{Charge, Read, Storage, StorageError};

const QUOTAS: &str = "resourcequotas";

/// The quota writes that go with writing `new` (a create, or an update of `old`) in `namespace`, or
/// the refusal in kube's words. `fresh`: read the quotas linearizably (after a transaction found one
/// changed); else this master's own member answers, and a stale quota fails the transaction.
pub(crate) async fn charges(
    storage: &Storage,
    resource: &Resource,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
    fresh: bool,
) -> Result<Vec<Charge>, ApiError> {
    if old.is_some() && !quota::charged_on_update(resource.group, resource.plural) {
        return Ok(vec![]);
    }
    let quotas_resource = resources::find("", "v1", QUOTAS).ok_or(ApiError::UnknownPath)?;
    let read = if fresh { Read::Linearizable } else { Read::Serializable };
    let page = storage.list_read(&quotas_resource.prefix(Some(namespace)), None, 0, 0, read).await;
    let listed = page.map_err(|e| store_error(quotas_resource, "", e))?.items;
    if listed.is_empty() {
        return Ok(vec![]);
    }
    let mut quotas = listed.iter().map(served::object).collect::<Result<Vec<_>, _>>()?;
    let now = jiff::Timestamp::now();
    let write = Charged { group: resource.group, plural: resource.plural, object: new, old, now };
    let mut counted = vec![];
    loop {
        match quota::charge(&quotas, &write) {
            Ok(charged) => {
                let mut out = vec![];
                for (i, used) in charged {
                    let mut q = quotas[i].clone();
                    q["status"]["used"] = used;
                    out.push(Charge {
                        key: listed[i].key.clone(),
                        value: encode(&q)?,
                        expected: listed[i].mod_revision,
                    });
                }
                return Ok(out);
            }
            Err(Refused::StatusUnknown(i, _)) if !counted.contains(&i) => {
                counted.push(i);
                quotas[i]["status"] = recount(storage, &quotas[i], namespace, now).await?;
            }
            Err(refused) => {
                let name = keel_api::meta::name(new);
                let resource = keel_api::status::GroupResource::from(resource);
                return Err(ApiError::Forbidden(format!("{resource} {name:?} is forbidden: {}", refused.message())));
            }
        }
    }
}

/// A quota's status counted from the namespace's objects now (what its controller would write).
async fn recount(storage: &Storage, rq: &Value, namespace: &str, now: jiff::Timestamp) -> Result<Value, ApiError> {
    let mut objects = vec![];
    for (group, plural) in quota::counted_resources(rq) {
        let prefix = match resources::RESOURCES.iter().find(|r| r.group == group && r.plural == plural) {
            Some(r) => r.prefix(Some(namespace)),
            None => format!("/registry/{group}/{plural}/{namespace}/"),
        };
        let page = storage.list(&prefix, None, 0, 0).await.map_err(|e| store_error_for(&plural, e))?;
        let items = page.items.iter().map(served::object).collect::<Result<Vec<_>, _>>()?;
        objects.push((group, plural, items));
    }
    Ok(quota::recalculate(rq, &objects, now))
}

fn store_error_for(plural: &str, e: StorageError) -> ApiError {
    match resources::RESOURCES.iter().find(|r| r.plural == plural) {
        Some(r) => store_error(r, "", e),
        None => ApiError::Internal(format!("listing {plural}: {e}")),
    }
}
