//! The store's membership through the API (for admins; a master's bootstrap token may list and add, see
//! `authz`), so that a new master can join with nothing but an API address and a join token
//! (`keel server --join`), and an
//! operator can list and remove members with kubectl (`kubectl get --raw /keel/v1/members`,
//! `kubectl delete --raw /keel/v1/members/<id>`). Each call is etcd's Cluster service on this master's store;
//! its rules apply (a learner is promoted only once caught up; a removal that would cost the quorum is
//! refused).
//!
//! - `GET /keel/v1/members`: `{"members": [Member]}`
//! - `POST /keel/v1/members` with `{"peerURLs": [...], "isLearner": bool}`: `{"member": Member, "members": [...]}`
//! - `POST /keel/v1/members/{id}/promote`, `DELETE /keel/v1/members/{id}`: `{"members": [...]}`
//!
//! A Member is `{"id": "<16 hex digits>", "name", "peerURLs", "clientURLs", "isLearner"}` (ids in hex, as
//! etcdctl prints them).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_api::status::ApiError;
use keel_proto::etcdserverpb::Member;
use serde_json::{json, Value};

use crate::storage::StorageError;
use crate::{AppState, Failure};

pub const PATH: &str = "/keel/v1/members";

fn member(m: &Member) -> Value {
    json!({
        "id": format!("{:016x}", m.id),
        "name": m.name,
        "peerURLs": m.peer_ur_ls,
        "clientURLs": m.client_ur_ls,
        "isLearner": m.is_learner,
    })
}

fn members(list: &[Member]) -> Value {
    Value::Array(list.iter().map(member).collect())
}

fn failure(e: StorageError) -> Response {
    let error = match e {
        StorageError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            ApiError::Unavailable
        }
        StorageError::Refused { message, .. } => ApiError::StoreRefused(message),
        other => ApiError::Internal(other.to_string()),
    };
    Failure(error).into_response()
}

fn parse_id(id: &str) -> Result<u64, Failure> {
    u64::from_str_radix(id, 16)
        .map_err(|_| Failure(ApiError::BadRequest(format!("{id:?} is not a member id (16 hex digits)"))))
}

pub(crate) async fn list(State(state): State<AppState>) -> Response {
    match state.storage.members().await {
        Ok(list) => Json(json!({"members": members(&list)})).into_response(),
        Err(e) => failure(e),
    }
}

pub(crate) async fn add(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Failure(ApiError::BadRequest(format!("the body is not JSON: {e}"))).into_response(),
    };
    let urls: Vec<String> = request["peerURLs"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if urls.is_empty() {
        return Failure(ApiError::BadRequest("peerURLs: at least one peer URL is required".into())).into_response();
    }
    let learner = request["isLearner"].as_bool().unwrap_or(true);
    match state.storage.add_member(urls.clone(), learner).await {
        Ok((added, list)) => {
            tracing::info!(id = format!("{:016x}", added.id), ?urls, learner, "store member added");
            (StatusCode::CREATED, Json(json!({"member": member(&added), "members": members(&list)}))).into_response()
        }
        Err(e) => failure(e),
    }
}

pub(crate) async fn promote(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(f) => return f.into_response(),
    };
    match state.storage.promote_member(id).await {
        Ok(list) => Json(json!({"members": members(&list)})).into_response(),
        Err(e) => failure(e),
    }
}

pub(crate) async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(f) => return f.into_response(),
    };
    match state.storage.remove_member(id).await {
        Ok(list) => {
            tracing::info!(id = format!("{id:016x}"), "store member removed");
            Json(json!({"members": members(&list)})).into_response()
        }
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_shown_as_etcdctl_shows_them() {
        let m = Member {
            id: 0x580e6699fce1780d,
            name: "m1".into(),
            peer_ur_ls: vec!["http://10.0.0.1:2380".into()],
            client_ur_ls: vec![],
            is_learner: true,
        };
        assert_eq!(
            member(&m),
            json!({"id": "580e6699fce1780d", "name": "m1", "peerURLs": ["http://10.0.0.1:2380"], "clientURLs": [], "isLearner": true})
        );
        assert_eq!(parse_id("580e6699fce1780d").ok(), Some(0x580e6699fce1780d));
        assert!(parse_id("m1").is_err());
    }
}
