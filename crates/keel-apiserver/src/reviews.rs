//! Questions about access, answered at once and never stored: `SelfSubjectAccessReview` (`kubectl auth
//! can-i`), `SubjectAccessReview` (may this user…?), `SelfSubjectRulesReview` (`kubectl auth can-i --list`)
//! and `SelfSubjectReview` (`kubectl auth whoami`), each a POST answered with the object and its status,
//! as kube-apiserver answers them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use keel_api::status::ApiError;
use keel_api::validation::Cause;
use serde_json::{json, Value};

use crate::auth::User;
use crate::authz::{self, Attributes, ResourceAttributes};
use crate::{request, AppState, Failure};

pub const AUTHORIZATION: &str = "/apis/authorization.k8s.io/v1";
pub const AUTHENTICATION: &str = "/apis/authentication.k8s.io/v1";

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The strings of the list at `pointer` (none when there is no list).
fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// A review refused for what its spec says (422).
fn invalid(kind: &str, field: &str, value: &str, detail: &str) -> ApiError {
    ApiError::Invalid {
        kind: kind.into(),
        resource: keel_api::status::GroupResource { group: "authorization.k8s.io".into(), resource: String::new() },
        name: String::new(),
        causes: vec![Cause::invalid(field, value, detail)],
    }
}

/// The request a review's spec asks about.
fn attributes(spec: &Value, kind: &str) -> Result<Attributes, ApiError> {
    let invalid = |field: &str, detail: &str| invalid(kind, field, "null", detail);
    match (spec.get("resourceAttributes"), spec.get("nonResourceAttributes")) {
        (Some(r), None) if r.is_object() => Ok(Attributes {
            verb: str_at(r, "/verb").to_string(),
            path: String::new(),
            resource: Some(ResourceAttributes {
                group: str_at(r, "/group").to_string(),
                resource: str_at(r, "/resource").to_string(),
                subresource: Some(str_at(r, "/subresource").to_string()).filter(|s| !s.is_empty()),
                namespace: Some(str_at(r, "/namespace").to_string()).filter(|s| !s.is_empty()),
                name: Some(str_at(r, "/name").to_string()).filter(|s| !s.is_empty()),
            }),
        }),
        (None, Some(n)) if n.is_object() => Ok(Attributes {
            verb: str_at(n, "/verb").to_string(),
            path: str_at(n, "/path").to_string(),
            resource: None,
        }),
        (Some(_), Some(_)) => {
            Err(invalid("spec.nonResourceAttributes", "cannot be specified in combination with resourceAttributes"))
        }
        _ => Err(invalid(
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// The review as sent, with its `status`.
fn answered(mut review: Value, status: Value) -> Response {
    if let Some(map) = review.as_object_mut() {
        map.insert("status".into(), status);
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        meta["creationTimestamp"] = Value::Null;
    }
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

fn access(state: &AppState, user: &User, a: &Attributes) -> Value {
    let policy = state.rbac.as_ref().map(crate::rbac::Rbac::policy);
    let graph = state.nodes.as_ref().map(crate::node_authz::NodeGraph::graph);
    match authz::authorize(user, a, None, graph.as_deref(), policy.as_deref()) {
        Some(reason) if reason.is_empty() => json!({"allowed": true}),
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    }
}

fn requester(user: Option<Extension<User>>) -> User {
    user.map_or_else(User::anonymous, |Extension(u)| u)
}

/// `POST selfsubjectaccessreviews`: may the caller do what the spec says?
pub async fn self_subject_access(
    State(state): State<AppState>,
    user: Option<Extension<User>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Failure> {
    let review = request::object_body(&headers, body).await?;
    let a = attributes(review.get("spec").unwrap_or(&Value::Null), "SelfSubjectAccessReview")?;
    Ok(answered(review.clone(), access(&state, &requester(user), &a)))
}

/// `POST subjectaccessreviews`: may the user and groups the spec names do what it says?
pub async fn subject_access(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Failure> {
    let review = request::object_body(&headers, body).await?;
    let spec = review.get("spec").unwrap_or(&Value::Null);
    let a = attributes(spec, "SubjectAccessReview")?;
    let user = subject(spec, "SubjectAccessReview")?;
    Ok(answered(review.clone(), access(&state, &user, &a)))
}

/// `POST namespaces/<ns>/localsubjectaccessreviews`: [`subject_access`] within one namespace (what a
/// namespace's admins may ask): about resources in it only.
pub async fn local_subject_access(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Failure> {
    const KIND: &str = "LocalSubjectAccessReview";
    let mut review = request::object_body(&headers, body).await?;
    let stated = str_at(&review, "/metadata/namespace").to_string();
    if !stated.is_empty() && stated != namespace {
        let detail = "must match the namespace of the request";
        return Err(invalid(KIND, "metadata.namespace", &stated, detail).into());
    }
    review["metadata"]["namespace"] = json!(namespace);
    let spec = review.get("spec").unwrap_or(&Value::Null);
    if spec.get("nonResourceAttributes").is_some() {
        return Err(invalid(KIND, "spec.nonResourceAttributes", "", "disallowed on this kind of request").into());
    }
    let mut a = attributes(spec, KIND)?;
    if let Some(r) = a.resource.as_mut() {
        match r.namespace.as_deref() {
            None => r.namespace = Some(namespace.clone()),
            Some(ns) if ns == namespace => {}
            Some(ns) => {
                let detail = "must match metadata.namespace";
                return Err(invalid(KIND, "spec.resourceAttributes.namespace", ns, detail).into());
            }
        }
    }
    let user = subject(spec, KIND)?;
    Ok(answered(review.clone(), access(&state, &user, &a)))
}

/// The user and groups a review's spec asks about.
fn subject(spec: &Value, kind: &str) -> Result<User, ApiError> {
    let name = str_at(spec, "/user").to_string();
    let groups = strings_at(spec, "/groups");
    if name.is_empty() && groups.is_empty() {
        let detail = "at least one of user or group must be specified";
        return Err(invalid(kind, "spec.user", "", detail));
    }
    Ok(User { name, groups })
}

/// `POST selfsubjectrulesreviews`: every rule that applies to the caller in the spec's namespace.
pub async fn self_subject_rules(
    State(state): State<AppState>,
    user: Option<Extension<User>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Failure> {
    let review = request::object_body(&headers, body).await?;
    let namespace = str_at(&review, "/spec/namespace");
    if namespace.is_empty() {
        return Err(ApiError::BadRequest("no namespace on request".into()).into());
    }
    let user = requester(user);
    let policy = state.rbac.as_ref().map(crate::rbac::Rbac::policy);
    let rules = policy.map(|p| p.rules_for(&user, Some(namespace))).unwrap_or_default();
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for rule in rules {
        if rule.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        } else {
            let mut r = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups, "resources": rule.resources});
            if let Some(names) = rule.resource_names.filter(|n| !n.is_empty()) {
                r["resourceNames"] = json!(names);
            }
            resource_rules.push(r);
        }
    }
    let status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
    Ok(answered(review.clone(), status))
}

/// `POST selfsubjectreviews`: who the caller is.
pub async fn self_subject(
    user: Option<Extension<User>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Failure> {
    let review = request::object_body(&headers, body).await?;
    let user = requester(user);
    Ok(answered(review, json!({"userInfo": {"username": user.name, "groups": user.groups}})))
}

/// `POST tokenreviews`: who a token authenticates as (for the audiences the spec names, else the API's).
pub async fn token_review(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Failure> {
    let review = request::object_body(&headers, body).await?;
    let token = str_at(&review, "/spec/token");
    let audiences = strings_at(&review, "/spec/audiences");
    let audience = audiences.first().cloned().unwrap_or_else(|| crate::service_accounts::ISSUER.to_string());
    let Some(keys) = state.service_accounts.as_ref() else {
        return Ok(answered(review.clone(), json!({"authenticated": false, "error": "no service-account keys"})));
    };
    let status = match crate::service_accounts::authenticate(keys, &state.storage, token, &audience).await {
        Ok((user, claims)) => {
            let mut extra = serde_json::Map::new();
            if let Some(pod) = &claims.kubernetes.pod {
                extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod.name]));
                extra.insert("authentication.kubernetes.io/pod-uid".into(), json!([pod.uid]));
            }
            json!({
                "authenticated": true,
                "user": {"username": user.name, "uid": claims.kubernetes.serviceaccount.uid, "groups": user.groups, "extra": extra},
                "audiences": claims.aud.iter().filter(|a| **a == audience).collect::<Vec<_>>(),
            })
        }
        Err(why) => json!({"authenticated": false, "error": why}),
    };
    Ok(answered(review.clone(), status))
}

/// `GET /.well-known/openid-configuration`.
pub async fn openid_configuration(State(state): State<AppState>) -> Result<axum::Json<Value>, Failure> {
    let keys = state.service_accounts.as_ref().ok_or(ApiError::UnknownPath)?;
    Ok(axum::Json(keys.openid_configuration(&state.advertise)))
}

/// `GET /openid/v1/jwks`.
pub async fn jwks(State(state): State<AppState>) -> Result<axum::Json<Value>, Failure> {
    let keys = state.service_accounts.as_ref().ok_or(ApiError::UnknownPath)?;
    Ok(axum::Json(keys.jwks()))
}
