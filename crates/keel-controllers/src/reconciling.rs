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

/// A cache of every `K` (filled by a watch of `api` spawned here, ready on return) and a signal on each of
/// their changes, for loops that look at all their objects again whenever one `K` changes
/// (`Controller::reconcile_all_on(changes(&signal))`).
pub(crate) async fn store_and_changes<K>(
    api: kube::Api<K>,
) -> (kube::runtime::reflector::Store<K>, tokio::sync::broadcast::Sender<()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    let (store, writer) = kube::runtime::reflector::store::<K>();
    let (tx, _) = tokio::sync::broadcast::channel::<()>(16);
    let signal = tx.clone();
    let events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(move |_| {
            let _ = signal.send(());
            futures::future::ready(())
        });
    tokio::spawn(events);
    let _ = store.wait_until_ready().await;
    (store, tx)
}

/// A stream of [`store_and_changes`]' signals, for `reconcile_all_on`.
pub(crate) fn changes(signal: &tokio::sync::broadcast::Sender<()>) -> impl futures::Stream<Item = ()> + Send + 'static {
    use futures::StreamExt as _;
    tokio_stream::wrappers::BroadcastStream::new(signal.subscribe()).map(|_| ())
}
