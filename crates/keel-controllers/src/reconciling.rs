//! What every kube-rs `Controller` loop here shares: how a failed reconciliation is retried, and how the
//! stream of reconciliations is drained.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::Error;

/// How long a failed reconciliation waits before it runs again.
pub const RETRY: Duration = Duration::from_secs(2);

/// The error policy of the loops: log, then try the object again after [`RETRY`].
pub(crate) fn retry<K: Resource<DynamicType = ()>, C>(object: Arc<K>, e: &Error, _: Arc<C>) -> Action {
    tracing::warn!(kind = %K::kind(&()), name = %object.name_any(), error = %e, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// One result of a Controller's stream: failures are logged (the error policy already scheduled a retry).
pub(crate) async fn reconciled<T, E: Display>(result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "reconcile");
    }
}
