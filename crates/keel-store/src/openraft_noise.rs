//! A log filter for openraft 0.9's line per failed transport call. openraft logs every failed
//! append-entries, heartbeat, read-index confirmation and vote (up to four lines per call, one call every
//! few milliseconds to a dead peer); keel's transport reports each peer's reachability once per change
//! instead ([`crate::peer_health`]). Only those per-call lines are dropped, matched by openraft's module and
//! message; every other openraft line passes. If a new openraft version words them differently they simply
//! show again (`tests/tests/peer_unreachable.rs` counts a leader's lines).

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Whether an openraft event (its target, level and message) is a per-call transport failure line. (The
/// same "error replication to target=…" at ERROR level is a storage error: it stays.)
pub fn is_transport_noise(target: &str, level: Level, message: &str) -> bool {
    match target {
        "openraft::replication" => {
            (level == Level::WARN && message.starts_with("error replication to target="))
                || message == "RPCError"
                || message.ends_with("backoff mode: drain events without processing them")
        }
        "openraft::engine::handler::replication_handler" => {
            message == "update progress error" || message.starts_with("heartbeat error: ")
        }
        "openraft::core::raft_core" => {
            matches!(
                message,
                "timeout while confirming leadership for read request" | "while requesting vote" | "timeout"
            )
        }
        _ => false,
    }
}

/// A per-layer filter dropping [`is_transport_noise`] lines (add it to the daemon's log layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietOpenraftTransport;

impl<S> Filter<S> for QuietOpenraftTransport {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let target = event.metadata().target();
        if !target.starts_with("openraft::") {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        !is_transport_noise(target, *event.metadata().level(), &message.0)
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    /// Records the messages of the events it sees.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }

    #[test]
    fn openraft_per_call_failures_are_dropped_and_everything_else_passes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Seen(seen.clone()).with_filter(QuietOpenraftTransport));
        tracing::subscriber::with_default(subscriber, || {
            let target = 2u64;
            // As openraft 0.9 words them (replication/mod.rs, core/raft_core.rs).
            tracing::warn!(target: "openraft::replication", error = "x", "error replication to target={}", target);
            tracing::error!(target: "openraft::replication", err = "x", "RPCError");
            tracing::warn!(
                target: "openraft::replication",
                "{} backoff mode: drain events without processing them",
                "openraft::replication::ReplicationCore::backoff_drain_events"
            );
            tracing::error!(target: "openraft::core::raft_core", "timeout while confirming leadership for read request");
            tracing::error!(target: "openraft::core::raft_core", "while requesting vote");
            tracing::warn!(
                target: "openraft::engine::handler::replication_handler",
                request_id = 3,
                result = "Unreachable node",
                "update progress error"
            );
            tracing::warn!(
                target: "openraft::engine::handler::replication_handler",
                "heartbeat error: {}, no update to inflight data",
                "x"
            );
            // Lines that stay.
            tracing::error!(target: "openraft::core::raft_core", "quit RaftCore::main on error");
            tracing::error!(target: "openraft::replication", error = "x", "error replication to target={}", target);
            tracing::warn!(target: "keel_store::network", "RPCError");
        });
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["quit RaftCore::main on error", "error replication to target=2", "RPCError"]);
    }
}
