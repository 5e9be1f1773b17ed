//! The custom resources this master serves: a [`Catalog`] of the established CustomResourceDefinitions,
//! kept current from a watch of them in the store. A CRD written through this master is served by it at
//! once (the write refreshes the catalog before it answers), and a request for a resource this master does
//! not know yet refreshes it first (a CRD just created through another master), so a client never has to
//! wait for a watch to catch up.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_api::custom::Catalog;
use serde_json::Value;
use tokio::sync::watch;

use crate::storage::{Change, Read, Storage, StorageError, Watched};

const PREFIX: &str = "/registry/customresourcedefinitions/";

/// The catalog and the store revision it was read at.
#[derive(Debug, Default)]
struct Current {
    revision: i64,
    catalog: Arc<Catalog>,
}

/// A master's custom resources (cheap to clone: all clones share one catalog).
#[derive(Clone)]
pub struct CustomResources {
    current: Arc<watch::Sender<Current>>,
}

impl Default for CustomResources {
    fn default() -> Self {
        CustomResources::none()
    }
}

impl CustomResources {
    /// No custom resources until [`CustomResources::refresh`] (for routers without a watch, in tests).
    pub fn none() -> CustomResources {
        CustomResources { current: Arc::new(watch::channel(Current::default()).0) }
    }

    /// Follows the CRDs in the store until `stop`.
    pub fn follow(storage: Storage, stop: watch::Receiver<bool>) -> CustomResources {
        let this = CustomResources::none();
        let shared = this.clone();
        crate::storage::keep_following(
            "custom resource definitions",
            storage,
            (*this.current).clone(),
            stop,
            move |s, _| {
                let shared = shared.clone();
                async move { shared.sync(&s).await }
            },
        );
        this
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.current.borrow().catalog.clone()
    }

    /// Reads every CRD from the store (linearizably) and serves what they say now.
    pub async fn refresh(&self, storage: &Storage) -> Result<(), StorageError> {
        let page = storage.list_read(PREFIX, None, 0, 0, Read::Linearizable).await?;
        let definitions: Vec<Value> = page.items.iter().filter_map(|s| serde_json::from_slice(&s.value).ok()).collect();
        self.publish(page.revision, &definitions);
        Ok(())
    }

    /// Before a 404 for `group`, when the server does not serve it itself: the definitions read again (a CRD
    /// just created through another master); whether they could be.
    pub async fn refresh_before_not_found(&self, storage: &Storage, group: &str) -> bool {
        if keel_api::resources::builtin_group(group) {
            return true;
        }
        match self.refresh(storage).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the custom resource definitions");
                false
            }
        }
    }

    /// Replaces the catalog unless a newer one is in place already.
    fn publish(&self, revision: i64, definitions: &[Value]) {
        self.current.send_if_modified(|current| {
            if revision < current.revision {
                return false;
            }
            *current = Current { revision, catalog: Arc::new(Catalog::new(definitions)) };
            true
        });
    }

    async fn sync(&self, storage: &Storage) -> Result<(), StorageError> {
        let page = storage.list(PREFIX, None, 0, 0).await?;
        let mut definitions: BTreeMap<String, Value> =
            page.items.iter().filter_map(|s| Some((s.key.clone(), serde_json::from_slice(&s.value).ok()?))).collect();
        self.publish(page.revision, &definitions.values().cloned().collect::<Vec<_>>());
        let mut watch = storage.watch(PREFIX, page.revision + 1).await?;
        while let Some(item) = watch.next().await {
            match item? {
                Watched::Changes(changes) => {
                    let mut revision = 0;
                    for change in changes {
                        match change {
                            Change::Put { object, .. } => {
                                revision = revision.max(object.mod_revision);
                                if let Ok(v) = serde_json::from_slice(&object.value) {
                                    definitions.insert(object.key, v);
                                }
                            }
                            Change::Delete { previous, revision: r } => {
                                revision = revision.max(r);
                                definitions.remove(&previous.key);
                            }
                        }
                    }
                    self.publish(revision, &definitions.values().cloned().collect::<Vec<_>>());
                }
                Watched::Progress { .. } => {}
                Watched::Compacted { compacted } => {
                    return Err(StorageError::Unavailable(format!(
                        "the CRD watch fell behind compaction ({compacted})"
                    )));
                }
            }
        }
        Err(StorageError::Unavailable("the CRD watch ended".into()))
    }
}
