//! Watches (`?watch=true`): a stream of newline-separated JSON events (ADDED, MODIFIED, DELETED, BOOKMARK,
//! ERROR), from the store's watch of the resource's prefix. Without a resourceVersion (or with "0") the
//! stream starts with an ADDED event per current object; with one, from the change after it (410 Gone, as an
//! ERROR event, when it was compacted). Selectors apply to both the old and the new object, so an object
//! that stops matching is DELETED for the watcher and one that starts matching is ADDED, as Kubernetes does.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_api::paths::Target;
use keel_api::status::ApiError;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::request::{Output, Params};
use crate::resources::{row, selected, served_object, set_resource_version, store_error, table, Call, Printer};
use crate::storage::{Change, Stored, Watched};
use crate::AppState;

/// How often a watch with bookmarks asks the store how far it has got.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// A watch without timeoutSeconds ends after 30 to 60 minutes (kube-apiserver's default), so that clients
/// spread over the masters again.
const DEFAULT_TIMEOUT_SECS: u64 = 1800;

pub(crate) async fn serve(
    state: &AppState,
    target: &Target,
    params: &Params,
    output: Output,
) -> Result<Response, ApiError> {
    let call = Call { state: state.clone(), target: target.clone(), params: clone_params(params), user: None };
    let (initial, start) = match params.revision()? {
        Some(rv) => (vec![], rv),
        None => {
            let (items, revision, _, _) = call.select().await?;
            (items, revision)
        }
    };
    let prefix = target.resource.prefix(target.namespace.as_deref());
    let mut watch = state.storage.watch(&prefix, start + 1).await.map_err(|e| store_error(target.resource, "", e))?;
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(64);
    let timeout = params.timeout.unwrap_or_else(|| {
        Duration::from_secs(DEFAULT_TIMEOUT_SECS + uuid::Uuid::new_v4().as_u64_pair().0 % DEFAULT_TIMEOUT_SECS)
    });
    let bookmarks = params.bookmarks;
    let kind = target.resource.kind;
    let api_version = target.resource.api_version();
    let encoder =
        Encoder { target: target.clone(), printer: Printer::of(target), output, include: params.include_object };
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        for mut item in initial {
            if let Some(m) = item.as_object_mut() {
                m.insert("kind".into(), json!(kind));
                m.insert("apiVersion".into(), json!(api_version));
            }
            if tx.send(Ok(encoder.event("ADDED", &item))).await.is_err() {
                return;
            }
        }
        loop {
            let lines = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => { watch.request_progress().await; continue; }
                next = watch.next() => match next {
                    None => return,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watch ended by the store");
                        return;
                    }
                    Some(Ok(Watched::Compacted { compacted })) => {
                        let status = ApiError::Gone { requested: start, oldest: compacted }.to_status();
                        let v = json!({"type": "ERROR", "object": serde_json::to_value(status).unwrap_or_default()});
                        vec![format!("{v}\n")]
                    }
                    Some(Ok(Watched::Progress { revision })) if bookmarks => {
                        let v = json!({"type": "BOOKMARK", "object": {
                            "kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": revision.to_string()},
                        }});
                        vec![format!("{v}\n")]
                    }
                    Some(Ok(Watched::Progress { .. })) => continue,
                    Some(Ok(Watched::Changes(changes))) => {
                        changes.iter().filter_map(|c| encoder.change(&call.params, c)).collect()
                    }
                },
            };
            for line in lines {
                let last = line.contains("\"type\":\"ERROR\"");
                if tx.send(Ok(line)).await.is_err() || last {
                    return;
                }
            }
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn clone_params(p: &Params) -> Params {
    Params { labels: p.labels.clone(), fields: p.fields.clone(), include_object: p.include_object, ..Params::default() }
}

/// Turns objects into watch event lines.
struct Encoder {
    target: Target,
    printer: Printer,
    output: Output,
    include: crate::request::IncludeObject,
}

impl Encoder {
    fn event(&self, kind: &str, object: &Value) -> String {
        let encoded = match self.output {
            // The object as it is (no copy of it into an event value first).
            Output::Json => object.to_string(),
            Output::Metadata => keel_api::meta::partial(object).to_string(),
            Output::Table => {
                let rv = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
                let r = row(&self.printer, object, self.include, jiff::Timestamp::now());
                table(&self.printer, vec![r], json!({"resourceVersion": rv})).to_string()
            }
        };
        format!("{{\"type\":\"{kind}\",\"object\":{encoded}}}\n")
    }

    /// The event a store change is for this watcher, if any.
    fn change(&self, params: &Params, change: &Change) -> Option<String> {
        let parse = |s: &Stored| served_object(&self.target, s).ok();
        match change {
            Change::Put { object: now, previous } => {
                let new = parse(now)?;
                // Without selectors every object is selected, and the previous one need not be decoded.
                let selecting = params.labels.is_some() || params.fields.is_some();
                let was = match previous {
                    None => false,
                    Some(_) if !selecting => true,
                    Some(p) => parse(p).is_some_and(|o| selected(params, &o)),
                };
                match (was, selected(params, &new)) {
                    (false, true) => Some(self.event("ADDED", &new)),
                    (true, true) => Some(self.event("MODIFIED", &new)),
                    (true, false) => Some(self.event("DELETED", &new)),
                    (false, false) => None,
                }
            }
            Change::Delete { previous, revision } => {
                let mut old = parse(previous)?;
                if !selected(params, &old) {
                    return None;
                }
                set_resource_version(&mut old, *revision);
                Some(self.event("DELETED", &old))
            }
        }
    }
}
