//! keel's Kubernetes-compatible API server, as an axum [`Router`] built by [`app`]: version, health and
//! discovery today, and [`storage`] for objects in the store; the resource handlers on it come next (issue
//! "Masters"). HTTP is parsed and answered here; the rules (selectors, validation, patches, errors) are
//! `keel-api`'s.

pub mod auth;
mod discovery;
mod failure;
pub mod storage;
pub mod tls;

use axum::routing::get;
use axum::Router;

pub use failure::Failure;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This master's address as clients reach it (`host:port`), for `/api`'s serverAddressByClientCIDRs.
    pub advertise: String,
}

/// The Kubernetes API version keel serves (k8s-openapi's `v1_33`).
pub const KUBERNETES_MINOR: &str = "33";

/// The API server's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .fallback(|| async { Failure(keel_api::status::ApiError::UnknownPath) })
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}
