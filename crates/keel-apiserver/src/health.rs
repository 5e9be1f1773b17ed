//! `/healthz`, `/livez` and `/readyz`, answered as kube-apiserver answers them: `ok` (200) when every check
//! passes, else 500 with one `[+]name ok` / `[-]name failed: reason withheld` line per check; `?verbose`
//! lists the checks when they pass too, `?exclude=name` skips one, and `/readyz/<name>` runs one alone.
//!
//! Checks: `ping` (the server answers) and `etcd` (a linearizable read through this master's store member
//! or endpoints, so a master whose store cannot reach a Raft leader is not ready). `/livez` runs `ping`
//! only: a master waiting for its store to elect a leader is alive and must not be restarted for it.
//! `/readyz` also has `controller-leader`, which never fails and says in its verbose line who runs the
//! control loops (`[+]controller-leader ok: m1 (this master)`), and `node-lifecycle`, which never fails
//! either and says what the node lifecycle controller's zones are in
//! (`[+]node-lifecycle ok: full disruption: evictions stopped in zone ""`), and
//! `poststarthook/rbac/bootstrap-roles`, which fails until the default RBAC roles and bindings are in place
//! and this master's policy shows them.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::leadership::Role;
use crate::storage::{Read, StorageError};
use crate::AppState;

/// How long the store check waits for its read.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A key every cluster has (the bootstrap secrets), read to prove the store answers.
const PROBE_KEY: &str = "/keel/bootstrap";

/// The endpoints and the checks each runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Livez,
    Readyz,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }

    fn checks(self) -> &'static [Check] {
        match self {
            Endpoint::Livez => &[Check::Ping],
            Endpoint::Healthz => &[Check::Ping, Check::Etcd],
            Endpoint::Readyz => {
                &[Check::Ping, Check::Etcd, Check::RbacBootstrap, Check::ControllerLeader, Check::NodeLifecycle]
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Ping,
    Etcd,
    ControllerLeader,
    NodeLifecycle,
    RbacBootstrap,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Ping => "ping",
            Check::Etcd => "etcd",
            Check::ControllerLeader => "controller-leader",
            Check::NodeLifecycle => "node-lifecycle",
            Check::RbacBootstrap => "poststarthook/rbac/bootstrap-roles",
        }
    }

    /// `Ok` with an optional note for the verbose line, or why it failed.
    async fn run(self, state: &AppState) -> Result<Option<String>, String> {
        match self {
            Check::Ping => Ok(None),
            Check::ControllerLeader => Ok(state.leadership.as_ref().map(|l| match &*l.role.borrow() {
                Role::Leader { .. } => format!("{} (this master)", l.identity),
                Role::Follower { leader: Some(other) } if *other == l.identity => {
                    format!("{other} (this master, stepping down)")
                }
                Role::Follower { leader: Some(other) } => other.clone(),
                Role::Follower { leader: None } => "none yet".to_string(),
            })),
            Check::NodeLifecycle => Ok(state.node_lifecycle.as_ref().map(|s| s.borrow().clone())),
            Check::RbacBootstrap => match &state.rbac_bootstrapped {
                Some(done) if !*done.borrow() => Err("the default RBAC roles and bindings are not in place yet".into()),
                _ => Ok(None),
            },
            Check::Etcd => {
                match tokio::time::timeout(STORE_TIMEOUT, state.storage.read(PROBE_KEY, Read::Linearizable)).await {
                    Ok(Ok(_)) | Ok(Err(StorageError::NotFound)) => Ok(None),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer from the store within {STORE_TIMEOUT:?}")),
                }
            }
        }
    }
}

/// What a health request asked for, from its query.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    verbose: bool,
    exclude: Vec<String>,
}

fn options(query: Option<&str>) -> Options {
    let mut o = Options::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "verbose" => o.verbose = v != "false",
            "exclude" => o.exclude.push(v.into_owned()),
            _ => {}
        }
    }
    o
}

/// The response body and status for the checks' results, in kube-apiserver's words.
fn render(
    endpoint: Endpoint,
    results: &[(&str, Result<Option<String>, String>)],
    verbose: bool,
) -> (StatusCode, String) {
    let failed = results.iter().any(|(_, r)| r.is_err());
    if !failed && !verbose {
        return (StatusCode::OK, "ok".into());
    }
    let mut body = String::new();
    for (name, result) in results {
        match result {
            Ok(None) => body.push_str(&format!("[+]{name} ok\n")),
            Ok(Some(note)) => body.push_str(&format!("[+]{name} ok: {note}\n")),
            Err(_) => body.push_str(&format!("[-]{name} failed: reason withheld\n")),
        }
    }
    let name = endpoint.name();
    if failed {
        body.push_str(&format!("{name} check failed\n"));
        (StatusCode::INTERNAL_SERVER_ERROR, body)
    } else {
        body.push_str(&format!("{name} check passed\n"));
        (StatusCode::OK, body)
    }
}

async fn serve(endpoint: Endpoint, state: &AppState, query: Option<&str>) -> Response {
    let o = options(query);
    let mut results = Vec::new();
    for check in endpoint.checks().iter().filter(|c| !o.exclude.iter().any(|e| e == c.name())) {
        let result = check.run(state).await;
        if let Err(reason) = &result {
            tracing::warn!(endpoint = endpoint.name(), check = check.name(), %reason, "health check failed");
        }
        results.push((check.name(), result));
    }
    render(endpoint, &results, o.verbose).into_response()
}

pub async fn healthz(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    serve(Endpoint::Healthz, &state, q.as_deref()).await
}

pub async fn livez(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    serve(Endpoint::Livez, &state, q.as_deref()).await
}

pub async fn readyz(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    serve(Endpoint::Readyz, &state, q.as_deref()).await
}

/// `/readyz/<check>` (and the same under healthz, livez): one check alone, `ok` or 500.
async fn one(endpoint: Endpoint, state: &AppState, name: &str) -> Response {
    let Some(check) = endpoint.checks().iter().find(|c| c.name() == name) else {
        return (StatusCode::NOT_FOUND, format!("no {} check named {name:?}\n", endpoint.name())).into_response();
    };
    match check.run(state).await {
        Ok(None) => (StatusCode::OK, "ok").into_response(),
        Ok(Some(note)) => (StatusCode::OK, format!("ok: {note}")).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, format!("[-]{name} failed: reason withheld\n")).into_response(),
    }
}

pub async fn readyz_one(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    one(Endpoint::Readyz, &state, &name).await
}

pub async fn livez_one(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    one(Endpoint::Livez, &state, &name).await
}

pub async fn healthz_one(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    one(Endpoint::Healthz, &state, &name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_checks_say_ok_unless_verbose() {
        let results = [("ping", Ok(None)), ("etcd", Ok(None)), ("controller-leader", Ok(Some("m1".into())))];
        assert_eq!(render(Endpoint::Readyz, &results, false), (StatusCode::OK, "ok".into()));
        assert_eq!(
            render(Endpoint::Readyz, &results, true),
            (StatusCode::OK, "[+]ping ok\n[+]etcd ok\n[+]controller-leader ok: m1\nreadyz check passed\n".into())
        );
    }

    #[test]
    fn a_failing_check_lists_every_check_with_500() {
        let results = [("ping", Ok(None)), ("etcd", Err("down".to_string()))];
        let (code, body) = render(Endpoint::Healthz, &results, false);
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, "[+]ping ok\n[-]etcd failed: reason withheld\nhealthz check failed\n");
    }

    #[test]
    fn query_options() {
        assert_eq!(options(None), Options::default());
        assert_eq!(
            options(Some("verbose&exclude=etcd&exclude=ping")),
            Options { verbose: true, exclude: vec!["etcd".into(), "ping".into()] }
        );
        assert!(!options(Some("verbose=false")).verbose);
    }

    #[test]
    fn livez_does_not_wait_for_the_store() {
        assert_eq!(Endpoint::Livez.checks(), &[Check::Ping]);
        assert!(Endpoint::Readyz.checks().contains(&Check::Etcd));
    }
}
