//! Fan-out of applied changes to watchers.
//!
//! The state machine publishes every store revision's events, in order, once they are written. A watcher
//! that falls behind (the channel lags), sees a revision gap, or is told the state was replaced by a snapshot
//! reads the missed revisions from the state database instead, so slow watchers never slow the writers.

use std::sync::Arc;

use keel_proto::mvccpb::Event;
use tokio::sync::broadcast;

#[derive(Debug)]
pub enum Notification {
    /// Every event of one store revision.
    Revision { revision: i64, events: Vec<Event> },
    /// The state was replaced (a snapshot was installed): watchers re-read what they need.
    Reset,
}

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Notification>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { tx: broadcast::channel(4096).0 }
    }
}

impl Hub {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notification>> {
        self.tx.subscribe()
    }

    /// Publishes events (in revision order), one notification per revision.
    pub fn publish(&self, events: Vec<Event>) {
        if self.tx.receiver_count() == 0 || events.is_empty() {
            return;
        }
        let mut group: Vec<Event> = Vec::new();
        let mut rev = 0;
        for ev in events {
            let r = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if r != rev && !group.is_empty() {
                let _ = self
                    .tx
                    .send(Arc::new(Notification::Revision { revision: rev, events: std::mem::take(&mut group) }));
            }
            rev = r;
            group.push(ev);
        }
        let _ = self.tx.send(Arc::new(Notification::Revision { revision: rev, events: group }));
    }

    pub fn reset(&self) {
        let _ = self.tx.send(Arc::new(Notification::Reset));
    }
}
