//! Authentication and the authorization that stands until RBAC. A request presents
//! `Authorization: Bearer <token>`: a static token (kube-apiserver's token file: the admin's) or a bootstrap
//! token ([`crate::bootstrap_tokens`]) names its user and groups; an unknown one gets 401 whatever the path.
//! A request without credentials may only read the public endpoints anonymous users may read in Kubernetes
//! (`/version`, `/healthz`, `/livez`, `/readyz` and what is under them, and kubeadm's
//! `kube-public/cluster-info`); anything else gets 401. What an authenticated user may then do is
//! [`crate::authz`]'s: 403 with kube-apiserver's wording otherwise.
//!
//! The user (or [`User::anonymous`]) goes into the request's extensions for audit and authorization later,
//! and the `Authorization` header is removed, so that handlers never see a credential.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use keel_api::status::ApiError;

use crate::bootstrap_tokens::{self, Token};
use crate::storage::Storage;
use crate::{authz, Failure};

/// The group of every user with credentials.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of the cluster's administrators (every request allowed), as in Kubernetes.
pub const MASTERS: &str = "system:masters";

/// The user a request was authenticated as; in the request's extensions after [`require_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// Who a request without credentials is (Kubernetes' names for it).
    pub fn anonymous() -> User {
        User { name: "system:anonymous".to_string(), groups: vec!["system:unauthenticated".to_string()] }
    }

    /// A user who presented credentials: `groups` and [`AUTHENTICATED`].
    pub fn authenticated(name: impl Into<String>, groups: impl IntoIterator<Item = String>) -> User {
        let mut groups: Vec<String> = groups.into_iter().collect();
        groups.push(AUTHENTICATED.to_string());
        User { name: name.into(), groups }
    }

    /// A cluster administrator named `name` (in [`MASTERS`]).
    pub fn admin(name: impl Into<String>) -> User {
        User::authenticated(name, [MASTERS.to_string()])
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The known static bearer tokens and the user each stands for.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, User)>,
}

impl std::fmt::Debug for Tokens {
    /// The users only; tokens never go into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(_, user)| &user.name)).finish()
    }
}

impl Tokens {
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Accept `token` as `user` (replacing what `token` meant before). An empty token is ignored: it could
    /// never be presented.
    pub fn insert(&mut self, token: impl Into<String>, user: User) {
        let token = token.into();
        if token.is_empty() {
            return;
        }
        self.entries.retain(|(known, _)| *known != token);
        self.entries.push((token, user));
    }

    /// Builder form of [`Tokens::insert`].
    pub fn with(mut self, token: impl Into<String>, user: User) -> Tokens {
        self.insert(token, user);
        self
    }

    /// The user `token` stands for. Every known token is compared, each in constant time, so the time taken
    /// tells nothing about how much of a guess was right.
    pub fn user(&self, token: &str) -> Option<&User> {
        let mut found = None;
        for (known, user) in &self.entries {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(user);
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths (tokens' lengths are not secret).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// What the `Authorization` header offers.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    /// No header, or a scheme other than bearer (not ours to judge, as in kube-apiserver).
    None,
    Bearer(&'a str),
    /// A bearer header without a token, or one not readable as text.
    Malformed,
}

fn credential(headers: &HeaderMap) -> Credential<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credential::None;
    };
    let Ok(value) = value.to_str() else {
        return Credential::Malformed;
    };
    let mut parts = value.trim().splitn(2, ' ');
    match (parts.next(), parts.next().map(str::trim)) {
        (Some(scheme), token) if scheme.eq_ignore_ascii_case("bearer") => match token {
            Some(token) if !token.is_empty() && !token.contains(' ') => Credential::Bearer(token),
            _ => Credential::Malformed,
        },
        _ => Credential::None,
    }
}

/// Whether anonymous users may make this request: reads of the version and health endpoints, and of
/// `kube-public/cluster-info` (the CA a joiner checks against its pin).
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    let readable = *method == Method::GET || *method == Method::HEAD;
    let cluster_info = format!("/api/v1/namespaces/kube-public/configmaps/{}", bootstrap_tokens::CLUSTER_INFO);
    readable
        && (path == cluster_info
            || ["/version", "/healthz", "/livez", "/readyz"]
                .iter()
                .any(|public| path.strip_prefix(public).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))))
}

/// Who a request is from, as far as its headers alone tell.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    User(User),
    /// A bootstrap token: its Secret decides.
    Bootstrap(Token),
    /// A JWT: a service-account token if this cluster signed it and its service account lives.
    ServiceAccount(String),
    /// 401.
    Refused,
}

fn claim(tokens: &Tokens, method: &Method, path: &str, headers: &HeaderMap) -> Claim {
    match credential(headers) {
        Credential::Bearer(token) => match (tokens.user(token), Token::parse(token)) {
            (Some(user), _) => Claim::User(user.clone()),
            (None, Some(bootstrap)) => Claim::Bootstrap(bootstrap),
            (None, None) if crate::service_accounts::looks_like_jwt(token) => Claim::ServiceAccount(token.to_string()),
            (None, None) => Claim::Refused,
        },
        Credential::None if is_public(method, path) => Claim::User(User::anonymous()),
        Credential::None | Credential::Malformed => Claim::Refused,
    }
}

/// Who may present credentials: the static tokens, and bootstrap tokens when there is a store to find them
/// in.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Tokens,
    storage: Option<Storage>,
    /// RBAC's policy, when the cluster has one (the fixed rules alone otherwise).
    rbac: Option<crate::rbac::Rbac>,
    /// The keys service-account tokens are checked with, when the cluster issues them.
    service_accounts: Option<Arc<crate::service_accounts::ServiceAccountKeys>>,
    /// The pods by node, for the node authorizer (`None`: nodes are RBAC's alone).
    nodes: Option<crate::node_authz::NodeGraph>,
}

impl Authenticator {
    pub fn new(tokens: Tokens, storage: Option<Storage>) -> Authenticator {
        Authenticator { tokens, storage, rbac: None, service_accounts: None, nodes: None }
    }

    /// Authorizes nodes by the pods bound to them first ([`crate::node_authz`]).
    pub fn with_node_authorizer(mut self, nodes: crate::node_authz::NodeGraph) -> Authenticator {
        self.nodes = Some(nodes);
        self
    }

    /// Accepts the service-account tokens `keys` signed.
    pub fn with_service_accounts(mut self, keys: Arc<crate::service_accounts::ServiceAccountKeys>) -> Authenticator {
        self.service_accounts = Some(keys);
        self
    }

    /// Authorizes by `rbac`'s policy too.
    pub fn with_rbac(mut self, rbac: crate::rbac::Rbac) -> Authenticator {
        self.rbac = Some(rbac);
        self
    }

    /// Who the request is from, or `None` for a request to refuse with 401.
    async fn authenticate(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<User> {
        match claim(&self.tokens, method, path, headers) {
            Claim::User(user) => Some(user),
            Claim::Refused => None,
            Claim::ServiceAccount(token) => {
                let (keys, storage) = (self.service_accounts.as_ref()?, self.storage.as_ref()?);
                match crate::service_accounts::authenticate(keys, storage, &token, crate::service_accounts::ISSUER)
                    .await
                {
                    Ok((user, _)) => Some(user),
                    Err(why) => {
                        tracing::info!(%why, "service-account token refused");
                        None
                    }
                }
            }
            Claim::Bootstrap(token) => {
                let storage = self.storage.as_ref()?;
                match bootstrap_tokens::authenticate(storage, &token).await {
                    Ok(user) => Some(user),
                    Err(why) => {
                        tracing::info!(token = ?token, %why, "bootstrap token refused");
                        None
                    }
                }
            }
        }
    }
}

/// `router` behind authentication and authorization (see the module docs); refused requests get
/// kube-apiserver's 401 `Status` (reason `Unauthorized`) or 403 (reason `Forbidden`).
pub fn require_token(router: Router, authenticator: Authenticator) -> Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::new(authenticator), check))
}

async fn check(State(authenticator): State<Arc<Authenticator>>, mut request: Request, next: Next) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    // A client certificate the cluster CA signed comes first, as in kube-apiserver (x509 before tokens).
    let certified = request
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::tls::ClientCertificate>>()
        .and_then(|c| c.0.identity())
        .map(|(name, groups)| User::authenticated(name, groups));
    let user = match certified {
        Some(user) => Some(user),
        None => authenticator.authenticate(&method, uri.path(), request.headers()).await,
    };
    let Some(user) = user else {
        tracing::debug!(%method, path = uri.path(), "unauthenticated request");
        return Failure(ApiError::Unauthorized).into_response();
    };
    let policy = authenticator.rbac.as_ref().map(crate::rbac::Rbac::policy);
    let user = match impersonated(&user, request.headers(), policy.as_deref()) {
        Ok(Some(as_user)) => {
            tracing::debug!(user = user.name, as_user = as_user.name, "impersonating");
            as_user
        }
        Ok(None) => user,
        Err(e) => return Failure(e).into_response(),
    };
    let attributes = authz::Attributes::of(&method, uri.path(), uri.query());
    let graph = authenticator.nodes.as_ref().map(crate::node_authz::NodeGraph::graph);
    if authz::authorize(&user, &attributes, uri.query(), graph.as_deref(), policy.as_deref()).is_none() {
        tracing::debug!(%method, path = uri.path(), user = user.name, "forbidden request");
        return Failure(authz::forbidden(&user, &attributes)).into_response();
    }
    let impersonation: Vec<header::HeaderName> =
        request.headers().keys().filter(|k| k.as_str().starts_with("impersonate-")).cloned().collect();
    for name in impersonation {
        request.headers_mut().remove(name);
    }
    request.headers_mut().remove(header::AUTHORIZATION);
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// The user `real` asks to act as (`Impersonate-User`, `Impersonate-Group`, as kubectl's `--as` and
/// `--as-group` send them), once `real` may `impersonate` each of them; `None` without those headers.
/// The impersonated user is exactly who the headers name: a service account's groups when no group is
/// given, and `system:authenticated`.
fn impersonated(
    real: &User,
    headers: &HeaderMap,
    policy: Option<&crate::rbac::Policy>,
) -> Result<Option<User>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    };
    let (users, groups) = (values("impersonate-user"), values("impersonate-group"));
    let Some(name) = users.first() else {
        if !groups.is_empty() {
            return Err(ApiError::Internal(format!("requested groups {groups:?} without impersonating a user")));
        }
        return Ok(None);
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'));
    let mut wanted: Vec<authz::ResourceAttributes> = Vec::new();
    let item = |resource: &str, namespace: Option<&str>, name: &str| authz::ResourceAttributes {
        group: String::new(),
        resource: resource.to_string(),
        subresource: None,
        namespace: namespace.map(str::to_string),
        name: Some(name.to_string()),
    };
    match service_account {
        Some((ns, sa)) => wanted.push(item("serviceaccounts", Some(ns), sa)),
        None => wanted.push(item("users", None, name)),
    }
    wanted.extend(groups.iter().map(|g| item("groups", None, g)));
    for resource in wanted {
        let a = authz::Attributes { verb: "impersonate".into(), path: String::new(), resource: Some(resource) };
        if authz::decide(real, &a, policy).is_none() {
            return Err(authz::forbidden(real, &a));
        }
    }
    let mut as_groups = groups;
    if as_groups.is_empty() {
        if let Some((ns, _)) = service_account {
            as_groups = vec!["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")];
        }
    }
    if name == "system:anonymous" {
        if !as_groups.iter().any(|g| g == "system:unauthenticated") {
            as_groups.push("system:unauthenticated".into());
        }
    } else if !as_groups.iter().any(|g| g == AUTHENTICATED || g == "system:unauthenticated") {
        as_groups.push(AUTHENTICATED.into());
    }
    Ok(Some(User { name: name.clone(), groups: as_groups }))
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Extension;
    use tower::ServiceExt as _;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        h
    }

    #[test]
    fn credentials_are_read_like_kube_apiserver_reads_them() {
        assert_eq!(credential(&HeaderMap::new()), Credential::None);
        assert_eq!(credential(&headers("Bearer abc")), Credential::Bearer("abc"));
        assert_eq!(credential(&headers("bearer  abc ")), Credential::Bearer("abc"));
        assert_eq!(credential(&headers("Basic YTpi")), Credential::None);
        assert_eq!(credential(&headers("Bearer")), Credential::Malformed);
        assert_eq!(credential(&headers("Bearer a b")), Credential::Malformed);
    }

    #[test]
    fn only_reads_of_version_and_health_are_public() {
        for path in [
            "/version",
            "/version/",
            "/healthz",
            "/healthz/etcd",
            "/livez",
            "/readyz/ping",
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        ] {
            assert!(is_public(&Method::GET, path), "{path}");
        }
        assert!(is_public(&Method::HEAD, "/healthz"));
        for path in [
            "/api",
            "/versions",
            "/healthzz",
            "/",
            "/apis/apps/v1",
            "/api/v1/namespaces/kube-public/configmaps",
            "/api/v1/namespaces/kube-system/configmaps/cluster-info",
        ] {
            assert!(!is_public(&Method::GET, path), "{path}");
        }
        assert!(!is_public(&Method::POST, "/version"));
    }

    #[test]
    fn tokens_name_their_users() {
        let tokens = Tokens::new()
            .with("t1", User::admin("admin"))
            .with("t2", User::admin("bob"))
            .with("", User::admin("nobody"))
            .with("t2", User::authenticated("carol", []));
        assert_eq!(tokens.user("t1"), Some(&User::admin("admin")));
        assert_eq!(
            tokens.user("t2").map(|u| (u.name.as_str(), u.groups.clone())),
            Some(("carol", vec![AUTHENTICATED.into()]))
        );
        assert_eq!(tokens.user("t"), None);
        assert_eq!(tokens.user(""), None);
        assert_eq!(format!("{tokens:?}"), r#"["admin", "carol"]"#);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn a_wrong_token_is_refused_even_where_anonymous_may_read() {
        let tokens = Tokens::new().with("t1", User::admin("admin"));
        let get = Method::GET;
        assert_eq!(claim(&tokens, &get, "/version", &HeaderMap::new()), Claim::User(User::anonymous()));
        assert_eq!(claim(&tokens, &get, "/version", &headers("Bearer nope")), Claim::Refused);
        assert_eq!(claim(&tokens, &get, "/version", &headers("Bearer")), Claim::Refused);
        assert_eq!(claim(&tokens, &get, "/api", &HeaderMap::new()), Claim::Refused);
        let admin = Claim::User(User::admin("admin"));
        assert_eq!(claim(&tokens, &Method::DELETE, "/api/v1/x", &headers("Bearer t1")), admin);
        let bootstrap = claim(&tokens, &get, "/api", &headers("Bearer abcdef.0123456789abcdef"));
        assert_eq!(bootstrap, Claim::Bootstrap(Token::parse("abcdef.0123456789abcdef").unwrap()));
    }

    async fn call(router: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if let Some(a) = authorization {
            request = request.header(header::AUTHORIZATION, a);
        }
        let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_layer_refuses_with_a_status_and_passes_the_user_on() {
        let whoami = |Extension(user): Extension<User>, headers: HeaderMap| async move {
            format!("{} {}", user.name, headers.contains_key(header::AUTHORIZATION))
        };
        let router = Router::new().route("/whoami", get(whoami)).route("/healthz", get(whoami));
        let tokens = Tokens::new().with("t1", User::admin("admin")).with("t3", User::authenticated("bob", []));
        let router = require_token(router, Authenticator::new(tokens, None));

        assert_eq!(call(&router, "/whoami", Some("Bearer t1")).await, (StatusCode::OK, "admin false".into()));
        assert_eq!(call(&router, "/healthz", None).await, (StatusCode::OK, "system:anonymous false".into()));
        let (code, body) = call(&router, "/whoami", Some("Bearer t2")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["status"].as_str(), status["reason"].as_str(), status["code"].as_i64()),
            (Some("Status"), Some("Failure"), Some("Unauthorized"), Some(401))
        );
        assert_eq!(status["message"], "Unauthorized");
        assert_eq!(call(&router, "/nowhere", None).await.0, StatusCode::UNAUTHORIZED, "before routing");
        // Without a store, a bootstrap token finds no Secret.
        assert_eq!(call(&router, "/whoami", Some("Bearer abcdef.0123456789abcdef")).await.0, StatusCode::UNAUTHORIZED);
        // Known, but not allowed: kube-apiserver's 403.
        let (code, body) = call(&router, "/whoami", Some("Bearer t3")).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(status["message"], r#"forbidden: User "bob" cannot get path "/whoami""#);
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb_and_names_exactly_the_user() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        let admin = User::admin("admin");
        assert_eq!(impersonated(&admin, &HeaderMap::new(), None), Ok(None));
        let sa = impersonated(&admin, &headers(&[("impersonate-user", "system:serviceaccount:ns:robot")]), None);
        assert_eq!(sa.unwrap().unwrap().groups, ["system:serviceaccounts", "system:serviceaccounts:ns", AUTHENTICATED]);
        let eve = impersonated(
            &admin,
            &headers(&[("impersonate-user", "eve"), ("impersonate-group", "a"), ("impersonate-group", "b")]),
            None,
        );
        assert_eq!(
            eve.unwrap().unwrap(),
            User { name: "eve".into(), groups: vec!["a".into(), "b".into(), AUTHENTICATED.into()] }
        );
        let bob = User::authenticated("bob", []);
        let refused = impersonated(&bob, &headers(&[("impersonate-user", "admin")]), None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            r#"users "admin" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        assert_eq!(impersonated(&admin, &headers(&[("impersonate-group", "a")]), None).unwrap_err().code(), 500);
    }
}
