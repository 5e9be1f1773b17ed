//! `/metrics` in the Prometheus text format: whether this master leads the control loops
//! (`leader_election_master_status`, as kube-controller-manager reports it, and the fence it leads under)
//! and what the fenced writes made through it came to.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::leadership::Role;
use crate::{AppState, Failure};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut registry = Registry::default();
    let leader = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    let fence = Gauge::<i64>::default();
    if let Some(l) = &state.leadership {
        let leading = match &*l.role.borrow() {
            Role::Leader { fence: f } => {
                fence.set(*f);
                1
            }
            Role::Follower { .. } => 0,
        };
        leader.get_or_create(&vec![("name", "keel-controller-manager")]).set(leading);
    }
    registry.register(
        "leader_election_master_status",
        "1 while this master runs the control loops (scheduler and controllers), else 0",
        leader,
    );
    registry.register(
        "keel_controller_fence",
        "The fence (leader key revision) this master's control loops write under; 0 when it does not lead",
        fence,
    );
    let writes = state.storage.fenced_writes();
    registry.register(
        "keel_fenced_writes",
        "Writes made through this master carrying a fence, by outcome (applied, or fenced: refused because \
         their leader was deposed)",
        writes.outcomes.clone(),
    );
    registry.register(
        "keel_fenced_write_last_revision",
        "The highest store revision at which a write of each fence applied",
        writes.last_revision.clone(),
    );
    let mut body = String::new();
    if let Err(e) = encode(&mut body, &registry) {
        return Failure(keel_api::status::ApiError::Internal(format!("cannot encode metrics: {e}"))).into_response();
    }
    if let Some(extra) = &state.extra_metrics {
        // One exposition: the first one's end-of-file marker goes.
        body.truncate(body.trim_end_matches("# EOF\n").len());
        body.push_str(&(extra.0)());
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

/// More figures for `/metrics` from outside the API server (a stacked master's store member, under etcd's
/// names), as a complete exposition in Prometheus' text format.
#[derive(Clone)]
pub struct ExtraMetrics(pub std::sync::Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}
