//! Bearer-token authentication, as kube-apiserver's static token file does it: a request presents
//! `Authorization: Bearer <token>`, a known token names its user, an unknown one gets 401 whatever the path.
//! A request without credentials may only read the public endpoints anonymous users may read in Kubernetes
//! (`/version`, `/healthz`, `/livez`, `/readyz` and what is under them); anything else gets 401.
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

use crate::Failure;

/// The user a request was authenticated as; in the request's extensions after [`require_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
}

impl User {
    /// Who a request without credentials is (Kubernetes' name for it).
    pub fn anonymous() -> User {
        User { name: "system:anonymous".to_string() }
    }
}

/// The known bearer tokens and the user each stands for.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, String)>,
}

impl std::fmt::Debug for Tokens {
    /// The users only; tokens never go into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(_, user)| user)).finish()
    }
}

impl Tokens {
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Accept `token` as `user` (replacing what `token` meant before). An empty token is ignored: it could
    /// never be presented.
    pub fn insert(&mut self, token: impl Into<String>, user: impl Into<String>) {
        let (token, user) = (token.into(), user.into());
        if token.is_empty() {
            return;
        }
        self.entries.retain(|(known, _)| *known != token);
        self.entries.push((token, user));
    }

    /// Builder form of [`Tokens::insert`].
    pub fn with(mut self, token: impl Into<String>, user: impl Into<String>) -> Tokens {
        self.insert(token, user);
        self
    }

    /// The user `token` stands for. Every known token is compared, each in constant time, so the time taken
    /// tells nothing about how much of a guess was right.
    pub fn user(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (known, user) in &self.entries {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(user.as_str());
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths (tokens' lengths are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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

/// Whether anonymous users may make this request: reads of the version and health endpoints.
fn is_public(method: &Method, path: &str) -> bool {
    let readable = *method == Method::GET || *method == Method::HEAD;
    readable
        && ["/version", "/healthz", "/livez", "/readyz"]
            .iter()
            .any(|public| path.strip_prefix(public).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// Who the request is from, or `None` for a request to refuse with 401.
fn authenticate(tokens: &Tokens, method: &Method, path: &str, headers: &HeaderMap) -> Option<User> {
    match credential(headers) {
        Credential::Bearer(token) => tokens.user(token).map(|name| User { name: name.to_string() }),
        Credential::None if is_public(method, path) => Some(User::anonymous()),
        Credential::None | Credential::Malformed => None,
    }
}

/// `router` behind bearer-token authentication (see the module docs); refused requests get kube-apiserver's
/// 401 `Status` (reason `Unauthorized`).
pub fn require_token(router: Router, tokens: Tokens) -> Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::new(tokens), check))
}

async fn check(State(tokens): State<Arc<Tokens>>, mut request: Request, next: Next) -> Response {
    let user = authenticate(&tokens, request.method(), request.uri().path(), request.headers());
    let Some(user) = user else {
        tracing::debug!(method = %request.method(), path = request.uri().path(), "unauthenticated request");
        return Failure(ApiError::Unauthorized).into_response();
    };
    request.headers_mut().remove(header::AUTHORIZATION);
    request.extensions_mut().insert(user);
    next.run(request).await
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
        for path in ["/version", "/version/", "/healthz", "/healthz/etcd", "/livez", "/readyz/ping"] {
            assert!(is_public(&Method::GET, path), "{path}");
        }
        assert!(is_public(&Method::HEAD, "/healthz"));
        for path in ["/api", "/versions", "/healthzz", "/", "/apis/apps/v1"] {
            assert!(!is_public(&Method::GET, path), "{path}");
        }
        assert!(!is_public(&Method::POST, "/version"));
    }

    #[test]
    fn tokens_name_their_users() {
        let tokens = Tokens::new().with("t1", "admin").with("t2", "bob").with("", "nobody").with("t2", "carol");
        assert_eq!(tokens.user("t1"), Some("admin"));
        assert_eq!(tokens.user("t2"), Some("carol"));
        assert_eq!(tokens.user("t"), None);
        assert_eq!(tokens.user(""), None);
        assert_eq!(format!("{tokens:?}"), r#"["admin", "carol"]"#);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn a_wrong_token_is_refused_even_where_anonymous_may_read() {
        let tokens = Tokens::new().with("t1", "admin");
        let get = Method::GET;
        assert_eq!(authenticate(&tokens, &get, "/version", &HeaderMap::new()), Some(User::anonymous()));
        assert_eq!(authenticate(&tokens, &get, "/version", &headers("Bearer nope")), None);
        assert_eq!(authenticate(&tokens, &get, "/version", &headers("Bearer")), None);
        assert_eq!(authenticate(&tokens, &get, "/api", &HeaderMap::new()), None);
        let admin = Some(User { name: "admin".into() });
        assert_eq!(authenticate(&tokens, &Method::DELETE, "/api/v1/x", &headers("Bearer t1")), admin);
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
        let router = require_token(router, Tokens::new().with("t1", "admin"));

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
    }
}
