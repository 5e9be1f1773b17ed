//! keel's Kubernetes-compatible API server, as an axum [`Router`] built by [`app`]: version, health,
//! discovery and OpenAPI documents, and the resource endpoints (`resources`, `watch`) over objects in the
//! store ([`storage`]). HTTP is parsed and answered here; the rules (selectors, validation, patches,
//! lifecycle, errors) are `keel-api`'s.

mod allocator;
pub mod auth;
mod authz;
pub mod bootstrap_tokens;
mod certificates;
pub mod crds;
mod discovery;
mod failure;
mod health;
pub mod leadership;
pub mod masters;
mod members;
pub mod metrics;
pub mod namespaces;
mod node_authz;
mod node_proxy;
mod quota;
pub mod rbac;
mod request;
mod resource_metrics;
mod resources;
mod reviews;
pub mod server;
pub mod service_accounts;
pub mod storage;
pub mod tls;
mod watch;
pub mod webhooks;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::Router;

pub use failure::Failure;
/// Where the store's members are listed and added (`keel server --join`).
pub use members::PATH as MEMBERS_PATH;
pub use node_proxy::NodeClient;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// This master's address as clients reach it (`host:port`), for `/api`'s serverAddressByClientCIDRs.
    pub advertise: String,
    /// The objects.
    pub storage: storage::Storage,
    /// Where Services' cluster IPs come from.
    pub service_cidr: keel_api::services::ServiceCidr,
    /// Who runs the control loops, as this master sees it (`None` where nothing campaigns, as in tests of
    /// the router alone).
    pub leadership: Option<Leadership>,
    /// The client certificate for calls to node agents (`pods/log`); `None` where there is no cluster CA
    /// (tests of the router alone), and such calls are answered 503.
    pub node_client: Option<std::sync::Arc<NodeClient>>,
    /// More figures for `/metrics` (a stacked master's store member).
    pub extra_metrics: Option<metrics::ExtraMetrics>,
    /// What the node lifecycle controller says about the zones (`None` where nothing reports it).
    pub node_lifecycle: Option<tokio::sync::watch::Receiver<String>>,
    /// The RBAC policy the escalation check reads (`None`: no check, as in tests of the router alone).
    pub rbac: Option<rbac::Rbac>,
    /// The pods by node, for the node authorizer's part in access reviews (`None`: none).
    pub nodes: Option<node_authz::NodeGraph>,
    /// True once the default RBAC objects are in place and `rbac` shows them (`None`: not checked).
    pub rbac_bootstrapped: Option<tokio::sync::watch::Receiver<bool>>,
    /// The service-account token keys (`None`: no tokens are issued, as in tests of the router alone).
    pub service_accounts: Option<std::sync::Arc<service_accounts::ServiceAccountKeys>>,
    /// The cluster CA, which signs approved client certificate requests (`None`: nothing is signed).
    pub authority: Option<std::sync::Arc<tls::Authority>>,
    /// The longest client certificate the CA signs (`--cluster-signing-duration`).
    pub signing_duration: std::time::Duration,
    /// The custom resources served, from the CustomResourceDefinitions.
    pub custom: crds::CustomResources,
    /// The admission webhooks, from the webhook configurations.
    pub webhooks: webhooks::Webhooks,
}

/// This master's name and its part in running the control loops.
#[derive(Clone)]
pub struct Leadership {
    pub identity: String,
    pub role: tokio::sync::watch::Receiver<leadership::Role>,
}

impl AppState {
    /// A master's state with the default service range.
    pub fn new(advertise: impl Into<String>, storage: storage::Storage) -> AppState {
        let service_cidr = keel_api::services::ServiceCidr::parse(keel_api::services::DEFAULT_SERVICE_CIDR)
            .expect("the default service range parses");
        AppState {
            advertise: advertise.into(),
            storage,
            service_cidr,
            leadership: None,
            node_client: None,
            extra_metrics: None,
            node_lifecycle: None,
            rbac: None,
            nodes: None,
            rbac_bootstrapped: None,
            service_accounts: None,
            authority: None,
            signing_duration: certificates::DEFAULT_SIGNING_DURATION,
            custom: crds::CustomResources::none(),
            webhooks: webhooks::Webhooks::none(),
        }
    }
}

/// The Kubernetes API version keel serves (k8s-openapi's `v1_33`).
pub const KUBERNETES_MINOR: &str = "33";

/// The API server's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/metrics", get(metrics::metrics))
        .route(members::PATH, get(members::list).post(members::add))
        .route("/keel/v1/members/{id}/promote", axum::routing::post(members::promote))
        .route("/keel/v1/members/{id}", axum::routing::delete(members::remove))
        .route("/healthz", get(health::healthz))
        .route("/healthz/{check}", get(health::healthz_one))
        .route("/livez", get(health::livez))
        .route("/livez/{check}", get(health::livez_one))
        .route("/readyz", get(health::readyz))
        .route("/readyz/{check}", get(health::readyz_one))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route(&format!("{}/selfsubjectaccessreviews", reviews::AUTHORIZATION), post(reviews::self_subject_access))
        .route(&format!("{}/subjectaccessreviews", reviews::AUTHORIZATION), post(reviews::subject_access))
        .route(
            &format!("{}/namespaces/{{namespace}}/localsubjectaccessreviews", reviews::AUTHORIZATION),
            post(reviews::local_subject_access),
        )
        .route(&format!("{}/selfsubjectrulesreviews", reviews::AUTHORIZATION), post(reviews::self_subject_rules))
        .route(&format!("{}/selfsubjectreviews", reviews::AUTHENTICATION), post(reviews::self_subject))
        .route(&format!("{}/tokenreviews", reviews::AUTHENTICATION), post(reviews::token_review))
        .route("/.well-known/openid-configuration", get(reviews::openid_configuration))
        .route("/openid/v1/jwks", get(reviews::jwks))
        .route("/apis/metrics.k8s.io/v1beta1/{*rest}", get(resource_metrics::serve))
        .route("/api/v1/{*rest}", any(resources::core))
        .route("/apis/{group}/{version}/{*rest}", any(resources::grouped))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/openapi/v2", get(openapi_v2))
        .fallback(|| async { Failure(keel_api::status::ApiError::UnknownPath) })
        .with_state(state)
}

async fn openapi_index(axum::extract::State(state): axum::extract::State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(keel_api::openapi::index(&state.custom.catalog()))
}

async fn openapi_document(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> axum::response::Response {
    match keel_api::openapi::by_path(&state.custom.catalog(), &path) {
        Some(doc) => axum::Json(doc).into_response(),
        None => Failure(keel_api::status::ApiError::UnknownPath).into_response(),
    }
}

/// kubectl asks for v2 as protobuf only, and needs it for `apply -f` of a List.
async fn openapi_v2() -> axum::response::Response {
    ([(header::CONTENT_TYPE, keel_api::openapi::V2_CONTENT_TYPE)], keel_api::openapi::v2_protobuf()).into_response()
}
