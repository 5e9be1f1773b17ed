//! Watchers: deliver every event of a key range from a start revision on, in order, without gaps, all
//! events of one revision in one response — reading history from the state database to catch up and
//! following the hub once current.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::etcdserverpb::WatchResponse;
use keel_proto::mvccpb::{event::EventType, Event};
use tokio::sync::{broadcast, mpsc};

use crate::hub::Notification;
use crate::keys::KeyRange;
use crate::store::Store;

/// Revisions read from history per step while catching up.
const CATCH_UP_STEP: i64 = 1000;
/// A response carries about this many events at most (a revision is never split).
const EVENTS_PER_RESPONSE: usize = 1000;

#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub id: i64,
    pub range: KeyRange,
    /// First revision to deliver; 0 or less: the revision after the current one.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    fn wants(&self, ev: &Event) -> bool {
        let put = ev.r#type == EventType::Put as i32;
        if (put && self.no_put) || (!put && self.no_delete) {
            return false;
        }
        ev.kv.as_ref().is_some_and(|kv| self.range.contains(&kv.key))
    }
}

/// A running watcher; dropping it stops it.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    /// Every event up to this revision has been queued for the client.
    pub sent: Arc<AtomicI64>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a watcher that queues its responses (not the `created` one) on `out`.
pub fn spawn(store: Store, spec: WatchSpec, out: mpsc::Sender<WatchResponse>) -> Watcher {
    let sent = Arc::new(AtomicI64::new(0));
    let task = tokio::spawn(run(store, spec, out, sent.clone()));
    Watcher { task, sent }
}

enum Stop {
    /// The client is gone, or the watcher was canceled.
    Closed,
    /// The start revision is compacted (the response was sent).
    Compacted,
}

async fn run(store: Store, spec: WatchSpec, out: mpsc::Sender<WatchResponse>, sent: Arc<AtomicI64>) {
    let mut rx = store.shared().hub.subscribe();
    let mut next = spec.start_revision;
    if next <= 0 {
        match store.current_revision() {
            Ok(r) => next = r + 1,
            Err(e) => {
                tracing::error!(error = %e, "watch cannot read the store revision");
                return;
            }
        }
    }
    sent.store(next - 1, Ordering::Release);
    let interval = store.config().progress_notify_interval;
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + interval, interval.max(Duration::from_millis(10)));
    loop {
        match catch_up(&store, &spec, &out, &mut next, &sent).await {
            Ok(()) => {}
            Err(Stop::Closed | Stop::Compacted) => return,
        }
        // Follow the hub until a gap, a lag or a reset sends us back to history.
        loop {
            tokio::select! {
                n = rx.recv() => match n {
                    Ok(n) => match &*n {
                        Notification::Revision { revision, events } => {
                            if *revision < next {
                                continue;
                            }
                            if *revision > next {
                                break;
                            }
                            let mine: Vec<Event> = events.iter().filter(|e| spec.wants(e)).map(|e| strip_prev(e, spec.prev_kv)).collect();
                            if !mine.is_empty() && out.send(events_response(&store, &spec, *revision, mine)).await.is_err() {
                                return;
                            }
                            next = revision + 1;
                            sent.store(*revision, Ordering::Release);
                        }
                        Notification::Reset => break,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if spec.progress_notify => {
                    let resp = WatchResponse { header: Some(store.header(next - 1)), watch_id: spec.id, ..Default::default() };
                    if out.send(resp).await.is_err() {
                        return;
                    }
                }
                _ = out.closed() => return,
            }
        }
    }
}

fn strip_prev(e: &Event, keep: bool) -> Event {
    if keep {
        e.clone()
    } else {
        Event { prev_kv: None, ..e.clone() }
    }
}

fn events_response(store: &Store, spec: &WatchSpec, revision: i64, events: Vec<Event>) -> WatchResponse {
    WatchResponse { header: Some(store.header(revision)), watch_id: spec.id, events, ..Default::default() }
}

/// Sends every event from `next` to the current revision out of the state database.
async fn catch_up(
    store: &Store,
    spec: &WatchSpec,
    out: &mpsc::Sender<WatchResponse>,
    next: &mut i64,
    sent: &AtomicI64,
) -> Result<(), Stop> {
    loop {
        let state = store.shared().current();
        let (batch, current, upto) = {
            let reader = state.reader();
            let (current, compacted) = match (reader.revision(), reader.compacted()) {
                (Ok(r), Ok(c)) => (r, c),
                _ => return Err(Stop::Closed),
            };
            if *next < compacted {
                drop(reader);
                let resp = WatchResponse {
                    header: Some(store.header(current)),
                    watch_id: spec.id,
                    canceled: true,
                    compact_revision: compacted,
                    cancel_reason: crate::apply::ERR_COMPACTED.trim_start_matches("etcdserver: ").to_string(),
                    ..Default::default()
                };
                let _ = out.send(resp).await;
                return Err(Stop::Compacted);
            }
            if *next > current {
                return Ok(());
            }
            let upto = current.min(*next + CATCH_UP_STEP - 1);
            match reader.events(*next, upto, &spec.range, spec.prev_kv) {
                Ok(evs) => (evs, current, upto),
                Err(e) => {
                    tracing::error!(error = %e, "watch cannot read history");
                    return Err(Stop::Closed);
                }
            }
        };
        let filtered: Vec<Event> = batch.into_iter().filter(|e| spec.wants(e)).collect();
        for chunk in split_by_revision(filtered, EVENTS_PER_RESPONSE) {
            let rev = chunk.last().and_then(|e| e.kv.as_ref()).map_or(upto, |kv| kv.mod_revision);
            if out.send(events_response(store, spec, rev, chunk)).await.is_err() {
                return Err(Stop::Closed);
            }
        }
        *next = upto + 1;
        sent.store(upto, Ordering::Release);
        if upto >= current {
            return Ok(());
        }
    }
}

/// Groups events (in revision order) into responses of about `max` events, never splitting a revision.
fn split_by_revision(events: Vec<Event>, max: usize) -> Vec<Vec<Event>> {
    let rev = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut out: Vec<Vec<Event>> = Vec::new();
    let mut cur: Vec<Event> = Vec::new();
    for e in events {
        if cur.len() >= max && cur.last().map(rev) != Some(rev(&e)) {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::mvccpb::KeyValue;

    fn ev(rev: i64) -> Event {
        Event { kv: Some(KeyValue { mod_revision: rev, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn responses_never_split_a_revision() {
        let events = vec![ev(1), ev(1), ev(1), ev(2), ev(3), ev(3)];
        let chunks = split_by_revision(events, 2);
        let revs: Vec<Vec<i64>> =
            chunks.iter().map(|c| c.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect()).collect();
        assert_eq!(revs, vec![vec![1, 1, 1], vec![2, 3, 3]]);
    }
}
